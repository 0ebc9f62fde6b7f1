//! The test-only `sysrq` step: lets a fixture panic the qemu target's guest kernel mid-suite, to
//! prove that the host charges the crash to that case alone and resumes the rest.

use super::observe::Observed;
use super::world::CaseError;
use std::io::Write;

const TRIGGER: &str = "/proc/sysrq-trigger";

pub fn sysrq(key: char) -> Result<Observed, CaseError> {
    if !inside_qemu_guest() {
        return Err(CaseError(format!(
            "the sysrq step runs only inside the qemu target's guest (`gmemconf run --kernel ...`): \
             sysrq `{key}` would act on this host's kernel"
        )));
    }
    let written = std::fs::OpenOptions::new().write(true).open(TRIGGER).and_then(|mut f| f.write_all(&[key as u8]));
    let result = written.map_err(|e| nix::errno::Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO)));
    Ok(Observed::from_result(result, format!("write({TRIGGER}, \"{key}\")")))
}

/// In the qemu target's guest, init (PID 1) is gmemconf itself: the same executable as ours.
fn inside_qemu_guest() -> bool {
    match (std::fs::read_link("/proc/1/exe"), std::env::current_exe()) {
        (Ok(init), Ok(me)) => init == me,
        _ => false,
    }
}

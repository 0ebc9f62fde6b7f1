//! The QEMU command line: which accelerator, the machine, the kernel and initramfs, the serial
//! console on stdout and the second serial port for events.

use crate::probe::{Probe, VirtKind};
use std::path::PathBuf;
use std::process::Command;

pub const QEMU: &str = "qemu-system-x86_64";

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum AccelChoice {
    /// KVM with `-cpu host` where this host's /dev/kvm can run QEMU, else TCG.
    Auto,
    Kvm,
    Tcg,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accel {
    Kvm,
    Tcg,
}

impl Accel {
    pub fn name(self) -> &'static str {
        match self {
            Accel::Kvm => "kvm",
            Accel::Tcg => "tcg",
        }
    }

    /// What case timeouts are multiplied by, beyond what the guest's own probe asks for (it
    /// sees nested virtualization either way, x2). Under TCG every instruction is emulated: the
    /// sealing and memslot-sharing cases took 0.44 s (median) and 1.6 s (slowest) on a busy
    /// 2-core host, against milliseconds on hardware; x6 in all leaves a 10 s case 60 s.
    pub fn timeout_factor(self) -> f64 {
        match self {
            Accel::Kvm => 1.0,
            Accel::Tcg => 3.0,
        }
    }
}

/// The accelerator for `choice`, with why. QEMU needs hardware virtualization under /dev/kvm:
/// a software KVM (no vmx/svm, e.g. kvm_pvm) cannot run `-cpu host` guests.
pub fn choose_accel(choice: AccelChoice, host: &Probe) -> (Accel, String) {
    match choice {
        AccelChoice::Kvm => (Accel::Kvm, "--accel kvm".into()),
        AccelChoice::Tcg => (Accel::Tcg, "--accel tcg".into()),
        AccelChoice::Auto => match (&host.kvm_error, host.virt) {
            (None, VirtKind::Hardware | VirtKind::Nested) => {
                (Accel::Kvm, format!("this host's /dev/kvm has {} virtualization", host.virt))
            }
            (Some(e), _) => (Accel::Tcg, format!("no usable /dev/kvm here ({e})")),
            (None, kind) => {
                (Accel::Tcg, format!("this host's KVM is {kind} ({}): QEMU cannot use it", host.virt_detail))
            }
        },
    }
}

pub struct QemuConfig {
    pub accel: Accel,
    pub cpus: usize,
    pub memory: String,
    pub kernel: PathBuf,
    pub initrd: PathBuf,
    /// The host's listening socket for the guest's events.
    pub socket: PathBuf,
    /// QEMU's monitor socket, asked where the CPUs are when the guest stops responding.
    pub monitor: Option<PathBuf>,
    /// Under TCG, the TSC frequency the guest kernel is told (see `tsc`).
    pub tsc_khz: Option<u64>,
    /// qboot where QEMU ships it: it hands over to `-kernel` in a fraction of SeaBIOS's time
    /// (0.3 s less to the kernel's first line under TCG, measured).
    pub bios: Option<PathBuf>,
}

/// Where Debian and most distributions install QEMU's qboot.
const QBOOT: &[&str] = &["/usr/share/qemu/qboot.rom", "/usr/share/qboot/bios.bin"];

pub fn qboot() -> Option<PathBuf> {
    QBOOT.iter().map(PathBuf::from).find(|p| p.is_file())
}

/// Kernel parameters: console on the first serial port; an oops is a panic and a panic
/// reboots at once, which `-no-reboot` turns into QEMU exiting; no KASLR, so that the addresses
/// in a hang report (monitor.rs) are those of the kernel's System.map.
pub const APPEND: &str = "console=ttyS0 panic=-1 oops=panic nokaslr quiet";

impl QemuConfig {
    pub fn args(&self) -> Vec<String> {
        let cpu = match self.accel {
            Accel::Kvm => "host",
            Accel::Tcg => "max",
        };
        let mut a: Vec<String> = Vec::new();
        let mut push = |items: &[&str]| a.extend(items.iter().map(|s| s.to_string()));
        push(&["-accel", self.accel.name(), "-cpu", cpu]);
        push(&["-smp", &self.cpus.to_string(), "-m", &self.memory]);
        push(&["-nodefaults", "-no-user-config", "-display", "none", "-no-reboot", "-serial", "stdio"]);
        if let Some(bios) = &self.bios {
            push(&["-bios", &bios.to_string_lossy()]);
        }
        push(&["-kernel", &self.kernel.to_string_lossy(), "-initrd", &self.initrd.to_string_lossy()]);
        // tsc=reliable: the TSC TCG passes through is the host's, invariant; without it the
        // clocksource watchdog, starved on a busy host, times out and demotes it.
        let append = match self.tsc_khz {
            Some(khz) => format!("{APPEND} tsc_early_khz={khz} tsc=reliable"),
            None => APPEND.to_string(),
        };
        push(&["-append", &append]);
        // The events: the guest's ttyS1 (see port.rs), connected to the host's socket.
        push(&["-chardev", &format!("socket,id=events,path={}", self.socket.display())]);
        push(&["-serial", "chardev:events"]);
        if let Some(monitor) = &self.monitor {
            push(&["-monitor", &format!("unix:{},server=on,wait=off", monitor.display())]);
        }
        a
    }

    pub fn command(&self) -> Command {
        let mut c = Command::new(QEMU);
        c.args(self.args());
        c
    }

    /// The command as a shell would take it, for the log.
    pub fn command_line(&self) -> String {
        std::iter::once(QEMU.to_string()).chain(self.args().iter().map(|a| shell_word(a))).collect::<Vec<_>>().join(" ")
    }
}

fn shell_word(s: &str) -> String {
    if !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || "-_./=,:+@%".contains(c)) {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(accel: Accel) -> QemuConfig {
        QemuConfig {
            accel,
            cpus: 2,
            memory: "2G".into(),
            kernel: "/k/bzImage".into(),
            initrd: "/r/initrd.cpio".into(),
            socket: "/r/events.sock".into(),
            monitor: (accel == Accel::Tcg).then(|| "/r/monitor.sock".into()),
            tsc_khz: (accel == Accel::Tcg).then_some(2_596_101),
            bios: None,
        }
    }

    #[test]
    fn tcg_command_line() {
        assert_eq!(
            config(Accel::Tcg).command_line(),
            "qemu-system-x86_64 -accel tcg -cpu max -smp 2 -m 2G -nodefaults -no-user-config -display none \
             -no-reboot -serial stdio -kernel /k/bzImage -initrd /r/initrd.cpio \
             -append 'console=ttyS0 panic=-1 oops=panic nokaslr quiet tsc_early_khz=2596101 tsc=reliable' \
             -chardev socket,id=events,path=/r/events.sock -serial chardev:events \
             -monitor unix:/r/monitor.sock,server=on,wait=off"
        );
        let kvm = config(Accel::Kvm).command_line();
        assert!(kvm.starts_with("qemu-system-x86_64 -accel kvm -cpu host ") && !kvm.contains("tsc_early_khz"), "{kvm}");
    }

    #[test]
    fn auto_picks_tcg_on_software_kvm() {
        let mut p = crate::probe::gather();
        p.kvm_error = None;
        p.virt = VirtKind::Software;
        assert_eq!(choose_accel(AccelChoice::Auto, &p).0, Accel::Tcg);
        p.virt = VirtKind::Hardware;
        assert_eq!(choose_accel(AccelChoice::Auto, &p).0, Accel::Kvm);
        p.kvm_error = Some("no /dev/kvm".into());
        assert_eq!(choose_accel(AccelChoice::Auto, &p).0, Accel::Tcg);
        assert_eq!(choose_accel(AccelChoice::Kvm, &p).0, Accel::Kvm);
    }
}

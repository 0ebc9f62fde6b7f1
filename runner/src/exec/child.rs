//! The case process: `gmemconf __case --suite S --id ID`. Loads the suite again, runs one case and
//! reports over fd 3. Started fresh by exec (never a fork of the threaded runner).

use super::interp::run_case;
use super::protocol::{CaseResult, Message, REPORT_FD};
use crate::probe::{self, Probe};
use crate::suite::Source;
use crate::suite::load::{load, load_case};
use std::io::Read;
use std::io::Write;
use std::os::fd::FromRawFd;

pub fn case_main(suite_arg: &str, id: &str, text_on_stdin: bool) -> i32 {
    // SAFETY: fcntl(F_GETFD) only asks whether the descriptor is open.
    if unsafe { libc::fcntl(REPORT_FD, libc::F_GETFD) } < 0 {
        eprintln!("gmemconf: `__case` is internal: `gmemconf run` starts it with a report pipe on fd {REPORT_FD}");
        return i32::from(crate::exit::USAGE);
    }
    // SAFETY: fd 3 is open (checked above): the runner set it up as the write end of our report
    // pipe, and nothing else in this process owns it.
    let mut out = unsafe { std::fs::File::from_raw_fd(REPORT_FD) };
    let send = |m: &Message| {
        if let Ok(line) = serde_json::to_string(m) {
            let _ = writeln!(out, "{line}");
        }
    };
    let send = std::cell::RefCell::new(send);
    let result = match find_and_run(
        suite_arg,
        id,
        text_on_stdin,
        &mut |i| (send.borrow_mut())(&Message::Step { index: i }),
        &mut |text| (send.borrow_mut())(&Message::Note { text }),
    ) {
        Ok(r) => r,
        Err(message) => CaseResult::Error { step: None, message },
    };
    let mut send = send.into_inner();
    send(&Message::Done { result });
    0
}

fn find_and_run(
    suite_arg: &str,
    id: &str,
    text_on_stdin: bool,
    on_step: &mut dyn FnMut(usize),
    on_note: &mut dyn FnMut(String),
) -> Result<CaseResult, String> {
    let source = Source::from_arg(suite_arg);
    let loaded = if text_on_stdin {
        let mut text = String::new();
        std::io::stdin().read_to_string(&mut text).map_err(|e| format!("reading the suite from stdin: {e}"))?;
        load_case(&text, &source, id)
    } else {
        load(&source)
    };
    let suite = loaded.map_err(|errs| errs.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))?;
    let case = suite.cases.iter().find(|c| c.id == id).ok_or_else(|| format!("no case `{id}` in {source}"))?;
    let probe: Probe = probe::from_env().unwrap_or_else(probe::gather);
    Ok(run_case(case, &probe, on_step, on_note))
}

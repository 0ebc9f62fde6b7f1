//! Runs one case in its own process under a deadline: a new exec of this binary, in its own
//! process group, stdin carrying only the suite text, reporting over a pipe. A signal, an exit or
//! a hang of the child is that case's verdict; the run goes on.

use super::protocol::{CaseResult, Message, REPORT_FD};
use super::race::TIMEOUT_SCALE_ENV;
use crate::probe::PROBE_ENV;
use crate::suite::Case;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use std::io::{BufRead, BufReader, Read};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// How a case process ended, before baselines are applied.
#[derive(Debug, Clone, PartialEq)]
pub enum Ending {
    Reported(CaseResult),
    /// Killed at its deadline while running `step`.
    Timeout {
        step: Option<usize>,
        stopped_by: &'static str,
    },
    /// Died of a signal it did not expect while running `step`.
    Crashed {
        signal: String,
        step: Option<usize>,
    },
    /// Exited without reporting a result.
    Vanished {
        status: String,
        step: Option<usize>,
    },
    /// Could not be started at all.
    NotStarted(String),
}

pub struct Supervised {
    pub ending: Ending,
    pub duration: Duration,
    /// What the child printed on stdout and stderr (bounded), for failure reports.
    pub output: String,
    /// What the case's steps said beyond their verdicts (race interleavings).
    pub notes: Vec<String>,
}

const GRACE: Duration = Duration::from_millis(300);
/// How long a SIGKILLed case process may take to go before it is declared stuck in the kernel.
const UNKILLABLE: Duration = Duration::from_secs(5);
const OUTPUT_LIMIT: usize = 64 * 1024;

/// `scale` is the factor the case's timeout already got; the case process uses it for its own
/// waits (a race's grace period).
pub fn run_case_process(exe: &Path, case: &Case, probe_json: &str, timeout: Duration, scale: f64) -> Supervised {
    let start = Instant::now();
    let not_started = |msg: String| Supervised {
        ending: Ending::NotStarted(msg),
        duration: start.elapsed(),
        output: String::new(),
        notes: Vec::new(),
    };
    let (report_r, report_w) = match nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC) {
        Ok(p) => p,
        Err(e) => return not_started(format!("pipe: {e}")),
    };
    let mut cmd = Command::new(exe);
    cmd.arg("__case")
        .arg("--suite")
        .arg(case.source.to_arg())
        .arg("--id")
        .arg(&case.id)
        .arg("--text-on-stdin")
        .env(PROBE_ENV, probe_json)
        .env(TIMEOUT_SCALE_ENV, scale.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    let w_fd = report_w.as_raw_fd();
    // SAFETY: only async-signal-safe calls (dup2, fcntl) between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            if w_fd == REPORT_FD {
                if libc::fcntl(REPORT_FD, libc::F_SETFD, 0) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            } else if libc::dup2(w_fd, REPORT_FD) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => return not_started(format!("cannot start {}: {e}", exe.display())),
    };
    drop(report_w);
    // The case process reads the suite text the run loaded, then sees stdin closed.
    if let Some(mut stdin) = child.stdin.take() {
        let text = case.text.clone();
        std::thread::spawn(move || {
            use std::io::Write;
            let _ = stdin.write_all(text.as_bytes());
        });
    }
    let pgid = Pid::from_raw(child.id() as i32);

    let (tx, rx) = mpsc::channel::<Message>();
    let reader = std::thread::spawn(move || read_messages(report_r, tx));
    let out_reader = child.stdout.take().map(|s| std::thread::spawn(move || read_bounded(s, OUTPUT_LIMIT)));
    let err_reader = child.stderr.take().map(|s| std::thread::spawn(move || read_bounded(s, OUTPUT_LIMIT)));

    let deadline = start + timeout;
    let mut step = None;
    let mut result = None;
    let mut notes = Vec::new();
    let mut timed_out = false;
    loop {
        let now = Instant::now();
        if now >= deadline {
            timed_out = true;
            break;
        }
        match rx.recv_timeout(deadline - now) {
            Ok(Message::Step { index }) => step = Some(index),
            Ok(Message::Note { text }) => notes.push(text),
            Ok(Message::Done { result: r }) => {
                result = Some(r);
                break;
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
    }
    // A case past its deadline gets SIGTERM and a grace period; one that reported gets a moment to
    // exit. Then SIGKILL, and whatever it left running in its group goes too.
    if timed_out {
        let _ = killpg(pgid, Signal::SIGTERM);
    }
    let (status, killed) = reap(&mut child, pgid, Instant::now() + if timed_out { GRACE } else { GRACE * 10 });
    let _ = killpg(pgid, Signal::SIGKILL);
    let Some(status) = status else {
        // A process that survives SIGKILL is stuck inside the kernel: leave it (and the threads
        // reading its pipes, which it still holds open) rather than hang the whole run on it.
        let stopped_by = "nothing: the process is stuck in the kernel (D state) and survives SIGKILL";
        let ending = Ending::Timeout { step, stopped_by };
        return Supervised { ending, duration: start.elapsed(), output: String::new(), notes };
    };
    let _ = reader.join();
    let mut output = String::new();
    for (name, h) in [("stdout", out_reader), ("stderr", err_reader)] {
        if let Some(text) = h.and_then(|h| h.join().ok()).filter(|t| !t.trim().is_empty()) {
            output.push_str(&format!("--- {name} ---\n{text}"));
        }
    }
    let ending = match (timed_out, result) {
        (true, _) => Ending::Timeout { step, stopped_by: if killed { "SIGKILL" } else { "SIGTERM" } },
        (false, Some(r)) => Ending::Reported(r),
        (false, None) => match status.signal() {
            Some(sig) => Ending::Crashed {
                signal: Signal::try_from(sig)
                    .map(|s| s.as_str().to_string())
                    .unwrap_or_else(|_| format!("signal {sig}")),
                step,
            },
            None => Ending::Vanished { status: format!("exit code {}", status.code().unwrap_or(-1)), step },
        },
    };
    // Notes sent just before the result may still be queued.
    notes.extend(rx.try_iter().filter_map(|m| match m {
        Message::Note { text } => Some(text),
        _ => None,
    }));
    Supervised { ending, duration: start.elapsed(), output, notes }
}

/// Waits for the child until `until`, then SIGKILLs its group and waits a little more. Returns
/// its status (None if it will not die: stuck in an uninterruptible kernel wait) and whether it
/// took SIGKILL.
fn reap(child: &mut std::process::Child, pgid: Pid, until: Instant) -> (Option<std::process::ExitStatus>, bool) {
    let mut killed_at: Option<Instant> = None;
    // A case that reported is usually gone within a millisecond: poll fast, then back off.
    let mut pause = Duration::from_micros(100);
    loop {
        match child.try_wait() {
            Ok(Some(st)) => return (Some(st), killed_at.is_some()),
            Ok(None) => {}
            Err(_) => return (None, killed_at.is_some()),
        }
        let now = Instant::now();
        match killed_at {
            None if now >= until => {
                let _ = killpg(pgid, Signal::SIGKILL);
                killed_at = Some(now);
            }
            Some(t) if now >= t + UNKILLABLE => return (None, true),
            _ => {}
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(5));
    }
}

fn read_messages(fd: OwnedFd, tx: mpsc::Sender<Message>) {
    let reader = BufReader::new(std::fs::File::from(fd));
    for line in reader.lines() {
        let Ok(line) = line else { break };
        if let Ok(m) = serde_json::from_str::<Message>(&line)
            && tx.send(m).is_err()
        {
            break;
        }
    }
}

/// Everything `r` says until it closes, keeping the first `limit` bytes (a child that prints
/// without end still gets its pipe drained).
pub fn read_bounded(mut r: impl Read, limit: usize) -> String {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    while let Ok(n) = r.read(&mut chunk) {
        if n == 0 {
            break;
        }
        if buf.len() < limit {
            buf.extend_from_slice(&chunk[..n.min(limit - buf.len())]);
        }
    }
    String::from_utf8_lossy(&buf).into_owned()
}

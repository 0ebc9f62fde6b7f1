//! Runs one command of the recipe with its output going to the build log, keeps the progress line
//! fed with the log's latest line, and turns a failure into an error carrying the log's tail.

use super::error::{CommandFailure, ImageError};
use super::progress::Step;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

/// Turns the log's tail of a failed command into advice, when it recognises the failure.
pub type Hint<'a> = dyn Fn(&str) -> Option<String> + 'a;

/// Lines of the log shown when a command fails.
const TAIL_LINES: usize = 30;

/// Runs `cmd` (built with xshell) appending its stdout and stderr to `log`.
/// `status` turns the log's last line into the progress text; `help` is added to a failure.
pub fn run(
    cmd: xshell::Cmd<'_>,
    what: &str,
    log: &Path,
    step: &Step,
    status: &dyn Fn(&str) -> String,
    help: Option<&Hint<'_>>,
) -> Result<(), ImageError> {
    let command = cmd.to_string();
    let io_err = ImageError::io("write the log", log, "check free space in the cache");
    let mut out = File::options().create(true).append(true).open(log).map_err(io_err)?;
    let _ = writeln!(out, "$ {command}");
    let err = out.try_clone().map_err(ImageError::io("write the log", log, "check free space in the cache"))?;
    let mut child_cmd = Command::from(cmd);
    // SAFETY: prctl is async-signal-safe and touches only the child being started.
    unsafe {
        child_cmd.pre_exec(|| {
            // A make or apt-get orphaned by a killed gmemconf would go on writing into the cache.
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = child_cmd
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .map_err(|e| command_error(what, &command, &format!("could not start: {e}"), log, None))?;
    let status_code = loop {
        match child.try_wait() {
            Ok(Some(s)) => break s,
            Ok(None) => {
                if let Some(line) = last_line(log) {
                    step.detail(&status(&line));
                }
                std::thread::sleep(Duration::from_millis(250));
            }
            Err(e) => return Err(command_error(what, &command, &format!("could not wait: {e}"), log, None)),
        }
    };
    if status_code.success() {
        return Ok(());
    }
    let tail = tail(log, TAIL_LINES);
    let help = help.and_then(|h| h(&tail));
    Err(command_error(what, &command, &status_code.to_string(), log, help))
}

pub fn command_error(what: &str, command: &str, status: &str, log: &Path, help: Option<String>) -> ImageError {
    let tail = tail(log, TAIL_LINES);
    ImageError::Command(Box::new(CommandFailure {
        what: what.into(),
        command: command.into(),
        status: status.into(),
        tail: format!("  last lines of the log:\n{}", indent(&tail)),
        log: log.to_path_buf(),
        help,
    }))
}

fn indent(text: &str) -> String {
    text.lines().map(|l| format!("    | {l}\n")).collect::<String>().trim_end().to_string()
}

/// The last `n` lines of a file (read from its end, so a big log costs nothing).
pub fn tail(path: &Path, n: usize) -> String {
    let text = read_end(path, 64 * 1024);
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

fn last_line(path: &Path) -> Option<String> {
    read_end(path, 4096).lines().rev().find(|l| !l.trim().is_empty()).map(str::to_string)
}

fn read_end(path: &Path, max: u64) -> String {
    let mut buf = Vec::new();
    if let Ok(mut f) = File::open(path) {
        let len = f.metadata().map(|m| m.len()).unwrap_or(0);
        let _ = f.seek(SeekFrom::Start(len.saturating_sub(max)));
        let _ = f.read_to_end(&mut buf);
    }
    String::from_utf8_lossy(&buf).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tail_keeps_the_last_lines() {
        let path = std::env::temp_dir().join(format!("gmemconf-tail-{}", std::process::id()));
        let text: String = (1..=100).map(|i| format!("line {i}\n")).collect();
        std::fs::write(&path, text).ok();
        let t = tail(&path, 3);
        assert_eq!(t, "line 98\nline 99\nline 100");
        assert_eq!(last_line(&path).as_deref(), Some("line 100"));
        std::fs::remove_file(&path).ok();
        assert_eq!(tail(&path, 3), "");
    }

    #[test]
    fn a_failing_command_reports_its_status_and_log_tail() {
        let log = std::env::temp_dir().join(format!("gmemconf-logged-{}", std::process::id()));
        let sh = xshell::Shell::new().unwrap_or_else(|e| panic!("{e}"));
        let step = Step::start(super::super::progress::Mode::Quiet, "test");
        let cmd = xshell::cmd!(sh, "sh -c 'echo first; echo oops >&2; exit 3'");
        let err = run(
            cmd,
            "the test step",
            &log,
            &step,
            &|l| l.into(),
            Some(&|t: &str| t.contains("oops").then(|| "it said oops".into())),
        )
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
        assert!(err.contains("the test step failed (exit status: 3)"), "{err}");
        assert!(err.contains("| oops") && err.contains("help: it said oops"), "{err}");
        assert!(err.contains(&log.display().to_string()), "{err}");
        let ok = run(xshell::cmd!(sh, "true"), "true", &log, &step, &|l| l.into(), None);
        assert!(ok.is_ok());
        std::fs::remove_file(&log).ok();
    }
}

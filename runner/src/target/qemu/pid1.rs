//! gmemconf as the test kernel's init (PID 1). It mounts what the run needs, opens the event
//! port, starts itself again as the guest runner (`__guest`), and reaps every process until the
//! runner ends; then it syncs and reboots, which QEMU's `-no-reboot` turns into QEMU exiting.
//! The runner is a separate process because PID 1 inherits every orphan: only PID 1 may wait for
//! any child, and the runner must wait for its own case processes alone.

use super::port;
use super::protocol::{EVENT_PORT, GuestError, INIT_MS_ENV, uptime_ms};
use nix::mount::{MsFlags, mount};
use nix::unistd::Pid;
use std::io::Write;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

/// The hidden subcommand PID 1 starts the runner with, and its argument.
pub const GUEST_COMMAND: &str = "__guest";
pub const EVENTS_FD_ARG: &str = "--events-fd";

struct Mount {
    fstype: &'static str,
    target: &'static str,
}

const MOUNTS: &[Mount] = &[
    Mount { fstype: "proc", target: "/proc" },
    Mount { fstype: "sysfs", target: "/sys" },
    Mount { fstype: "devtmpfs", target: "/dev" },
    Mount { fstype: "tmpfs", target: "/tmp" },
];

/// The event port, once open: the panic hook reports there too.
static EVENTS: OnceLock<RawFd> = OnceLock::new();

pub fn main() -> ! {
    std::panic::set_hook(Box::new(|info| {
        report(&format!("gmemconf as init panicked: {info}"));
        power_off();
    }));
    if let Err(e) = run() {
        report(&e);
    }
    power_off()
}

fn run() -> Result<(), String> {
    mount_all()?;
    if let Some(exec) = exec_args() {
        return run_on_console(&exec);
    }
    let init_ms = uptime_ms();
    let port = port::open(EVENT_PORT)?;
    let _ = EVENTS.set(port.as_raw_fd());
    let runner = spawn_runner(port.as_raw_fd(), init_ms)?;
    let status = reap_until(runner)?;
    if status != 0 {
        return Err(format!("the guest runner ended with status {status:#x} (wait status)"));
    }
    Ok(())
}

/// The arguments of an `exec` run, if the host asked for one.
fn exec_args() -> Option<Vec<String>> {
    let text = std::fs::read_to_string(super::protocol::ARGS_PATH).ok()?;
    let args: super::protocol::GuestArgs = serde_json::from_str(&text).ok()?;
    (!args.exec.is_empty()).then_some(args.exec)
}

/// Runs gmemconf with `exec` on the console and says how it ended, in a line the host looks for.
fn run_on_console(exec: &[String]) -> Result<(), String> {
    let exe = std::env::current_exe().map_err(|e| format!("cannot find its own executable: {e}"))?;
    let child = Command::new(&exe)
        .args(exec)
        .env("TMPDIR", "/tmp")
        .stdin(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", exe.display()))?;
    let status = reap_until(Pid::from_raw(child.id() as i32))?;
    let code = if libc::WIFEXITED(status) { libc::WEXITSTATUS(status) } else { 128 + libc::WTERMSIG(status) };
    println!("{EXEC_STATUS}{code}");
    Ok(())
}

/// The console line that ends an `exec` run, followed by the exit status.
pub const EXEC_STATUS: &str = "gmemconf-exec-status: ";

fn mount_all() -> Result<(), String> {
    for m in MOUNTS {
        let _ = std::fs::create_dir_all(m.target);
        match mount(Some(m.fstype), m.target, Some(m.fstype), MsFlags::empty(), None::<&str>) {
            Ok(()) | Err(nix::errno::Errno::EBUSY) => {}
            Err(e) => return Err(format!("mount {} on {}: {e}", m.fstype, m.target)),
        }
    }
    Ok(())
}

fn spawn_runner(events_fd: RawFd, init_ms: u64) -> Result<Pid, String> {
    let exe = std::env::current_exe().map_err(|e| format!("cannot find its own executable: {e}"))?;
    let mut cmd = Command::new(&exe);
    cmd.arg(GUEST_COMMAND)
        .arg(EVENTS_FD_ARG)
        .arg(events_fd.to_string())
        .env("TMPDIR", "/tmp")
        .env(INIT_MS_ENV, init_ms.to_string())
        .stdin(Stdio::null());
    // SAFETY: only fcntl, async-signal-safe, between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            if libc::fcntl(events_fd, libc::F_SETFD, 0) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = cmd.spawn().map_err(|e| format!("cannot start the guest runner {}: {e}", exe.display()))?;
    Ok(Pid::from_raw(child.id() as i32))
}

/// Waits for every child (orphans of case processes included) until `runner` ends; its raw
/// wait status.
fn reap_until(runner: Pid) -> Result<i32, String> {
    loop {
        let mut status = 0;
        // SAFETY: plain waitpid for any child; status is ours.
        let pid = unsafe { libc::waitpid(-1, &mut status, 0) };
        if pid == runner.as_raw() {
            return Ok(status);
        }
        if pid < 0 {
            let e = nix::errno::Errno::last();
            if e != nix::errno::Errno::EINTR {
                return Err(format!("waitpid: {e}"));
            }
        }
    }
}

/// Says `message` on the console and, when open, on the event port.
fn report(message: &str) {
    eprintln!("gmemconf (init): {message}");
    if let Some(fd) = EVENTS.get()
        && let Ok(line) = serde_json::to_string(&GuestError { event: "guest_error", message })
    {
        // SAFETY: the port stays open for PID 1's lifetime; ManuallyDrop keeps it open here.
        let mut port =
            std::mem::ManuallyDrop::new(unsafe { <std::fs::File as std::os::fd::FromRawFd>::from_raw_fd(*fd) });
        let _ = port.write_all(format!("{line}\n").as_bytes());
    }
}

fn power_off() -> ! {
    nix::unistd::sync();
    let _ = nix::sys::reboot::reboot(nix::sys::reboot::RebootMode::RB_AUTOBOOT);
    // Only reached if reboot(2) failed: init must not exit, so wait for QEMU to be stopped.
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

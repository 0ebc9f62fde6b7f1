//! `gmemconf <command> --kernel <spec>` for commands that only print (`bench`): one boot in which
//! gmemconf, as init, runs the command on the console; the host streams the console and returns
//! the command's exit status.

use super::command::{Accel, AccelChoice, QemuConfig, choose_accel};
use super::elf::check_static;
use super::initramfs::{self, Payload};
use super::kernel::kernel_image;
use super::pid1::EXEC_STATUS;
use super::protocol::{GuestArgs, SuiteFile};
use crate::exit;
use crate::probe;
use std::io::{BufRead, BufReader, Read};
use std::os::unix::net::UnixListener;
use std::os::unix::process::CommandExt;
use std::process::{ExitCode, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Suite files packed for the command, and the path each has inside the guest.
pub struct Files {
    pub suites: Vec<(String, String)>,
}

/// Boots `kernel`, runs `gmemconf <args>` inside on the console, and streams what it prints.
/// `args` may name the packed suites by the paths `pack` returns.
pub fn run_in_guest(kernel: &str, accel: AccelChoice, args: Vec<String>, files: Files, deadline: Duration) -> ExitCode {
    let kernel = match kernel_image(kernel) {
        Ok(k) => k,
        Err(e) => {
            eprintln!("gmemconf: {e}");
            return ExitCode::from(e.exit_code());
        }
    };
    let broken = super::host::broken;
    let exe = match std::env::current_exe() {
        Ok(e) => e,
        Err(e) => return broken(&format!("cannot find its own executable: {e}")),
    };
    let image = match check_static(&exe) {
        Ok(i) => i,
        Err(e) => return broken(&e),
    };
    let (accel, why) = choose_accel(accel, &probe::gather());
    let run_dir = std::env::temp_dir().join(format!("gmemconf-qemu-exec-{}", std::process::id()));
    if let Err(e) = std::fs::create_dir_all(&run_dir) {
        return broken(&format!("cannot create {}: {e}", run_dir.display()));
    }
    let suites = files.suites.iter().map(|(source, file)| SuiteFile {
        source: source.clone(),
        file: file.clone(),
        name: String::new(),
    });
    let packed: Vec<(String, String)> = files
        .suites
        .iter()
        .filter_map(|(source, file)| std::fs::read_to_string(source).ok().map(|t| (file.clone(), t)))
        .collect();
    let payload = Payload {
        args: GuestArgs {
            suites: suites.collect(),
            baselines: Vec::new(),
            timeout_scale: accel.timeout_factor(),
            seed: None,
            exec: args,
        },
        files: packed,
    };
    let initrd = match initramfs::build(&exe, &image, &initramfs::cache_dir(), &payload, &run_dir.join("initrd.cpio")) {
        Ok(b) => b,
        Err(e) => return broken(&format!("cannot write the initramfs in {}: {e}", run_dir.display())),
    };
    let socket = run_dir.join("events.sock");
    // QEMU connects its event port to this socket; an exec run sends nothing on it.
    let listener = match UnixListener::bind(&socket) {
        Ok(l) => l,
        Err(e) => return broken(&format!("cannot listen on {}: {e}", socket.display())),
    };
    std::thread::spawn(move || {
        for mut conn in listener.incoming().flatten() {
            let _ = std::io::copy(&mut conn, &mut std::io::sink());
        }
    });
    let qemu = QemuConfig {
        accel,
        cpus: 2,
        memory: "2G".into(),
        kernel,
        initrd: initrd.path.clone(),
        socket,
        monitor: None,
        tsc_khz: if accel == Accel::Tcg { super::tsc::host_tsc_khz() } else { None },
        bios: super::command::qboot(),
    };
    eprintln!("gmemconf: accel {} ({why})", accel.name());
    eprintln!("gmemconf: {}", qemu.command_line());
    let mut cmd = qemu.command();
    cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::inherit()).process_group(0);
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => return broken(&format!("cannot start QEMU: {e}")),
    };
    let (tx, rx) = mpsc::channel();
    if let Some(out) = child.stdout.take() {
        std::thread::spawn(move || stream_console(out, tx));
    }
    let code = match rx.recv_timeout(deadline) {
        Ok(code) => ExitCode::from(code),
        Err(_) => {
            eprintln!("gmemconf: no end of the command within {} s: stopping QEMU", deadline.as_secs());
            ExitCode::from(exit::TARGET_BROKEN)
        }
    };
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(5) && matches!(child.try_wait(), Ok(None)) {
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = nix::sys::signal::killpg(nix::unistd::Pid::from_raw(child.id() as i32), nix::sys::signal::SIGKILL);
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&run_dir);
    code
}

/// Copies the console to stdout until the command's status line, which it sends on `tx`.
fn stream_console(out: impl Read, tx: mpsc::Sender<u8>) {
    for line in BufReader::new(out).lines() {
        let Ok(line) = line else { break };
        let clean = line.trim_end_matches('\r');
        if let Some(code) = clean.strip_prefix(EXEC_STATUS) {
            let _ = tx.send(code.trim().parse::<u8>().unwrap_or(exit::TARGET_BROKEN));
            return;
        }
        println!("{clean}");
    }
    let _ = tx.send(exit::TARGET_BROKEN);
}

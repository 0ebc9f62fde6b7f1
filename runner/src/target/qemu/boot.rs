//! One boot of the kernel under test: start QEMU, take the guest's event connection, answer
//! `run_started` with the plan, pass each result on as it arrives, and end the boot when the
//! guest finishes, the kernel panics, the guest falls silent, a case overstays its deadline, or
//! QEMU exits. QEMU is always killed and reaped before `boot` returns.

use super::command::QemuConfig;
use super::console::Console;
use super::protocol::{GuestEvent, GuestUp, Plan};
use crate::exec::supervise::read_bounded;
use crate::report::event::CaseEvent;
use nix::sys::signal::{Signal as UnixSignal, killpg};
use nix::unistd::Pid;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

/// What the boot's reader threads report.
pub enum Signal {
    Line(String),
    EventsClosed,
    Panic(String),
    ConsoleClosed,
}

pub struct Limits {
    /// From QEMU's start to the guest's `run_started`.
    pub boot: Duration,
    /// With no line at all from the guest (it beats every second) for this long, it is hung.
    pub silence: Duration,
    /// A case in flight for twice its own deadline plus this is stuck beyond the guest's own
    /// reach. (Twice: the guest's clock may run slow against the host's when the host is busy.)
    pub case_margin: Duration,
}

#[derive(Debug, Clone, PartialEq)]
pub enum BootEnd {
    /// The guest said `run_finished` and QEMU exited.
    Finished,
    Panic(String),
    Silent(Duration),
    Overdue {
        id: String,
        ran: Duration,
    },
    QemuExited(String),
    /// QEMU could not start, or the guest never said `run_started`.
    NeverStarted(String),
    /// The host refused the guest's `run_started` (e.g. another kernel than the first boot's).
    Refused(String),
}

impl BootEnd {
    pub fn describe(&self) -> String {
        match self {
            BootEnd::Finished => "finished".into(),
            BootEnd::Panic(line) => format!("the guest kernel panicked: {}", strip_timestamp(line)),
            BootEnd::Silent(d) => format!("the guest stopped responding: no heartbeat for {:.0} s", d.as_secs_f64()),
            BootEnd::Overdue { id, ran } => format!(
                "{id} ran {:.0} s, twice its deadline, and the guest did not stop it (a task stuck in the kernel?)",
                ran.as_secs_f64()
            ),
            BootEnd::QemuExited(status) => format!("QEMU exited ({status}) before the guest finished"),
            BootEnd::NeverStarted(why) => format!("the guest did not start: {why}"),
            BootEnd::Refused(why) => why.clone(),
        }
    }
}

fn strip_timestamp(line: &str) -> &str {
    match line.strip_prefix('[').and_then(|r| r.split_once("] ")) {
        Some((_, rest)) => rest,
        None => line,
    }
}

/// The boot's owner decides what to run and records results.
pub trait BootHandler {
    /// The guest is up (its probe); the plan to send it, or why this boot must end.
    fn started(&mut self, up: GuestUp) -> Result<Plan, String>;
    fn case(&mut self, event: CaseEvent);
    /// How long the case `id` may run before the host gives up on the guest.
    fn deadline(&self, id: &str) -> Duration;
}

pub struct BootReport {
    pub end: BootEnd,
    pub started: bool,
    /// Cases started and not reported when the boot ended, with how long they had run.
    pub in_flight: Vec<(String, Duration)>,
    pub cases_done: usize,
    /// From QEMU's start to the first case result.
    pub first_result: Option<Duration>,
    /// From QEMU's start to the first `case_started`.
    pub first_started: Option<Duration>,
    pub guest_errors: Vec<String>,
    /// The guest's own account of its boot: (kernel start to init, to the runner, to the probe
    /// done), by its clock; and when the host saw `run_started`, by the host's, from QEMU's start.
    pub timeline: Option<(Duration, Duration, Duration)>,
    pub run_started: Option<Duration>,
    pub trouble: Vec<String>,
    pub tail: Vec<String>,
    pub qemu_stderr: String,
    /// Where the CPUs were when the guest stopped responding (one line each), or why that is
    /// not known; the monitor's full answer is kept beside the console log.
    pub cpus: Vec<String>,
}

const TICK: Duration = Duration::from_millis(100);
/// QEMU connects to the event socket as it starts.
const CONNECT: Duration = Duration::from_secs(10);
/// After a panic, `run_finished` or QEMU's exit: time for the last lines to arrive.
const WIND_DOWN: Duration = Duration::from_secs(5);

struct Boot<'h> {
    handler: &'h mut dyn BootHandler,
    start: Instant,
    started: bool,
    finished_at: Option<Instant>,
    in_flight: Vec<(String, Instant)>,
    cases_done: usize,
    first_result: Option<Duration>,
    first_started: Option<Duration>,
    guest_errors: Vec<String>,
    timeline: Option<(Duration, Duration, Duration)>,
    run_started: Option<Duration>,
    refused: Option<String>,
    last_line: Instant,
}

pub fn boot(qemu: &QemuConfig, console_log: &Path, limits: &Limits, handler: &mut dyn BootHandler) -> BootReport {
    let start = Instant::now();
    let mut b = Boot {
        handler,
        start,
        started: false,
        finished_at: None,
        in_flight: Vec::new(),
        cases_done: 0,
        first_result: None,
        first_started: None,
        guest_errors: Vec::new(),
        timeline: None,
        run_started: None,
        refused: None,
        last_line: start,
    };
    let never = |why: String| BootReport {
        end: BootEnd::NeverStarted(why),
        started: false,
        in_flight: Vec::new(),
        cases_done: 0,
        first_result: None,
        first_started: None,
        guest_errors: Vec::new(),
        timeline: None,
        run_started: None,
        trouble: Vec::new(),
        tail: Vec::new(),
        qemu_stderr: String::new(),
        cpus: Vec::new(),
    };
    let _ = std::fs::remove_file(&qemu.socket);
    let listener = match UnixListener::bind(&qemu.socket).and_then(|l| l.set_nonblocking(true).map(|_| l)) {
        Ok(l) => l,
        Err(e) => return never(format!("cannot listen on {}: {e}", qemu.socket.display())),
    };
    let log = match std::fs::File::create(console_log) {
        Ok(f) => f,
        Err(e) => return never(format!("cannot write the console log {}: {e}", console_log.display())),
    };
    let mut cmd = qemu.command();
    cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).process_group(0);
    // SAFETY: prctl is async-signal-safe. QEMU dies with the thread that started it, so that it
    // cannot outlive gmemconf (killed by Ctrl-C, say).
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return never(format!(
                "{} is not installed (Debian/Ubuntu: apt-get install qemu-system-x86)",
                super::command::QEMU
            ));
        }
        Err(e) => return never(format!("cannot start {}: {e}", super::command::QEMU)),
    };
    let (tx, rx) = mpsc::channel();
    let (console, console_thread) = match child.stdout.take() {
        Some(out) => {
            let (c, h) = Console::watch(out, log, tx.clone());
            (c, Some(h))
        }
        None => (Default::default(), None),
    };
    let stderr_thread = child.stderr.take().map(|e| std::thread::spawn(move || read_bounded(e, 16 * 1024)));

    let end = match accept(&listener, &mut child) {
        Err(why) => BootEnd::NeverStarted(why),
        Ok(stream) => {
            let reader = stream.try_clone();
            let events_tx = tx.clone();
            std::thread::spawn(move || {
                if let Ok(r) = reader {
                    for line in BufReader::new(r).lines() {
                        let Ok(line) = line else { break };
                        if events_tx.send(Signal::Line(line)).is_err() {
                            return;
                        }
                    }
                }
                let _ = events_tx.send(Signal::EventsClosed);
            });
            b.watch(&rx, stream, &mut child, limits)
        }
    };
    drop(tx);
    let cpus = match (&end, &qemu.monitor) {
        (BootEnd::Silent(_) | BootEnd::Overdue { .. }, Some(monitor)) => {
            where_the_cpus_are(monitor, &qemu.kernel, console_log)
        }
        _ => Vec::new(),
    };
    // Whatever happened, QEMU goes now; lines already sent still count.
    let _ = killpg(Pid::from_raw(child.id() as i32), UnixSignal::SIGKILL);
    let _ = child.wait();
    let drain_until = Instant::now() + WIND_DOWN;
    while let Ok(signal) = rx.recv_timeout(drain_until.saturating_duration_since(Instant::now())) {
        if let Signal::Line(l) = signal {
            b.line(&l, None);
        }
    }
    if let Some(h) = console_thread {
        let _ = h.join();
    }
    let qemu_stderr = stderr_thread.and_then(|h| h.join().ok()).unwrap_or_default();
    let _ = std::fs::remove_file(&qemu.socket);
    // QEMU says why it would not run on its stderr (a bad kernel, a missing accelerator).
    let end = match (end, qemu_stderr.lines().rfind(|l| !l.trim().is_empty())) {
        (BootEnd::NeverStarted(why), Some(said)) => BootEnd::NeverStarted(format!("{why}: {}", said.trim())),
        (BootEnd::QemuExited(why), Some(said)) => BootEnd::QemuExited(format!("{why}: {}", said.trim())),
        (end, _) => end,
    };
    let now = Instant::now();
    BootReport {
        end,
        started: b.started,
        in_flight: b.in_flight.iter().map(|(id, since)| (id.clone(), now - *since)).collect(),
        cases_done: b.cases_done,
        first_result: b.first_result,
        first_started: b.first_started,
        guest_errors: b.guest_errors,
        timeline: b.timeline,
        run_started: b.run_started,
        trouble: console.trouble(),
        tail: console.tail(),
        qemu_stderr,
        cpus,
    }
}

/// Asks QEMU's monitor for every CPU's registers, keeps them beside the console log, and sums
/// them up.
fn where_the_cpus_are(monitor: &Path, kernel: &Path, console_log: &Path) -> Vec<String> {
    match super::monitor::cpu_registers(monitor) {
        Ok(text) => {
            let kept = console_log.with_extension("cpus.txt");
            let _ = std::fs::write(&kept, &text);
            let symbols = super::monitor::Symbols::for_kernel(kernel);
            let mut lines = super::monitor::summarize(&text, &symbols);
            lines.push(format!("(all registers: {})", kept.display()));
            lines
        }
        Err(why) => vec![why],
    }
}

fn accept(listener: &UnixListener, child: &mut Child) -> Result<UnixStream, String> {
    let until = Instant::now() + CONNECT;
    loop {
        match listener.accept() {
            Ok((s, _)) => {
                s.set_nonblocking(false).map_err(|e| format!("event socket: {e}"))?;
                return Ok(s);
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(format!("event socket: {e}")),
        }
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!("QEMU exited at once ({status})"));
        }
        if Instant::now() >= until {
            return Err(format!("QEMU did not connect to the event socket within {CONNECT:?}"));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

impl Boot<'_> {
    /// Follows the guest until the boot must end, and says why.
    fn watch(&mut self, rx: &Receiver<Signal>, mut port: UnixStream, child: &mut Child, limits: &Limits) -> BootEnd {
        let (mut events_open, mut console_open) = (true, true);
        let mut exited: Option<(String, Instant)> = None;
        let mut panic: Option<(String, Instant)> = None;
        loop {
            match rx.recv_timeout(TICK) {
                Ok(Signal::Line(l)) => {
                    self.last_line = Instant::now();
                    self.line(&l, Some(&mut port));
                }
                Ok(Signal::Panic(line)) => {
                    panic.get_or_insert((line, Instant::now()));
                }
                Ok(Signal::EventsClosed) => events_open = false,
                Ok(Signal::ConsoleClosed) => console_open = false,
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => events_open = false,
            }
            let now = Instant::now();
            if let Some(why) = self.refused.take() {
                return BootEnd::Refused(why);
            }
            if exited.is_none()
                && let Ok(Some(status)) = child.try_wait()
            {
                exited = Some((status.to_string(), now));
            }
            if let Some((line, at)) = &panic {
                // The kernel prints its trace and reboots (panic=-1): let QEMU finish saying it.
                if (exited.is_some() && !console_open) || now - *at > WIND_DOWN {
                    return BootEnd::Panic(line.clone());
                }
                continue;
            }
            if let Some((status, at)) = &exited {
                // Take every line QEMU wrote before it went.
                if (!events_open && !console_open) || now - *at > WIND_DOWN {
                    return match self.finished_at {
                        Some(_) => BootEnd::Finished,
                        None if !self.started => BootEnd::NeverStarted(format!("QEMU exited ({status})")),
                        None => BootEnd::QemuExited(status.clone()),
                    };
                }
                continue;
            }
            if let Some(at) = self.finished_at {
                if now - at > WIND_DOWN {
                    // The guest finished but did not power off: nothing is lost by stopping it.
                    return BootEnd::Finished;
                }
                continue;
            }
            if !self.started && now - self.start > limits.boot {
                return BootEnd::NeverStarted(format!(
                    "no run_started from the guest within {:.0} s",
                    limits.boot.as_secs_f64()
                ));
            }
            if self.started && now - self.last_line > limits.silence {
                return BootEnd::Silent(now - self.last_line);
            }
            for (id, since) in &self.in_flight {
                if now - *since > self.handler.deadline(id) * 2 + limits.case_margin {
                    return BootEnd::Overdue { id: id.clone(), ran: now - *since };
                }
            }
        }
    }

    /// One line from the guest. `port` is None once QEMU is gone (nothing can be answered).
    fn line(&mut self, line: &str, port: Option<&mut UnixStream>) {
        let Ok(event) = serde_json::from_str::<GuestEvent>(line) else { return };
        match event {
            GuestEvent::RunStarted(up) => {
                self.started = true;
                self.run_started = Some(self.start.elapsed());
                let Some(port) = port else { return };
                match self.handler.started(*up) {
                    Ok(plan) => {
                        let sent = serde_json::to_string(&plan)
                            .map_err(|e| e.to_string())
                            .and_then(|l| port.write_all(format!("{l}\n").as_bytes()).map_err(|e| e.to_string()));
                        if let Err(e) = sent {
                            self.refused = Some(format!("cannot send the plan to the guest: {e}"));
                        }
                    }
                    Err(why) => self.refused = Some(why),
                }
            }
            GuestEvent::Timeline { init_ms, runner_ms, probed_ms } => {
                let ms = Duration::from_millis;
                self.timeline = Some((ms(init_ms), ms(runner_ms), ms(probed_ms)));
            }
            GuestEvent::CaseStarted { id } => {
                self.first_started.get_or_insert(self.start.elapsed());
                self.in_flight.push((id, Instant::now()));
            }
            GuestEvent::Case(e) => {
                self.in_flight.retain(|(id, _)| *id != e.id);
                self.cases_done += 1;
                self.first_result.get_or_insert(self.start.elapsed());
                self.handler.case(*e);
            }
            GuestEvent::Heartbeat {} => {}
            GuestEvent::RunFinished {} => self.finished_at = Some(Instant::now()),
            GuestEvent::GuestError { message } => self.guest_errors.push(message),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ends_read_plainly() {
        assert_eq!(
            BootEnd::Panic("[    3.1] Kernel panic - not syncing: sysrq triggered crash".into()).describe(),
            "the guest kernel panicked: Kernel panic - not syncing: sysrq triggered crash"
        );
        assert!(BootEnd::Silent(Duration::from_secs(30)).describe().contains("no heartbeat for 30 s"));
    }
}

//! The guest runner (`gmemconf __guest`, started by PID 1): the host target's flow on the guest
//! kernel's /dev/kvm. It probes, says `run_started` on the event port, loads the packed suites the
//! host's plan needs, and runs exactly the cases of the plan (each in its own case process, as on
//! the host), with `case_started` before each, and a heartbeat every second.

use super::protocol::{
    ARGS_PATH, CaseStarted, GuestArgs, GuestError, Heartbeat, INIT_MS_ENV, Plan, Timeline, uptime_ms,
};
use crate::probe;
use crate::run::{EventSink, Runner, Selection, baseline_for};
use crate::suite::baseline;
use crate::suite::load::load_cases;
use crate::suite::{Case, Source, Suite};
use std::collections::{HashMap, HashSet, VecDeque};
use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::os::fd::{AsRawFd, FromRawFd};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const HEARTBEAT: Duration = Duration::from_secs(1);

pub fn guest_main(events_fd: i32) -> i32 {
    // SAFETY: F_GETFD only asks whether the descriptor is open.
    if unsafe { libc::fcntl(events_fd, libc::F_GETFD) } < 0 {
        eprintln!("gmemconf: `__guest` is internal: the qemu target's init starts it with the event port open");
        return i32::from(crate::exit::USAGE);
    }
    // SAFETY: PID 1 passed the open event port at this number; nothing else here owns it.
    let port = unsafe { File::from_raw_fd(events_fd) };
    // Case processes must not inherit the port.
    // SAFETY: fcntl on our own descriptor.
    unsafe { libc::fcntl(port.as_raw_fd(), libc::F_SETFD, libc::FD_CLOEXEC) };
    install_panic_report(&port);
    match run(port) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("gmemconf (guest): {e}");
            1
        }
    }
}

fn run(port: File) -> Result<(), String> {
    let runner_ms = uptime_ms();
    let reader = port.try_clone().map_err(|e| format!("event port: {e}"))?;
    let mut errors = port.try_clone().map_err(|e| format!("event port: {e}"))?;
    let args = match read_args() {
        Ok(a) => a,
        Err(e) => {
            send_error(&mut errors, &e);
            return Err(e);
        }
    };
    let exe = std::env::current_exe().map_err(|e| format!("cannot find its own executable: {e}"))?;
    let sink = EventSink::new(Some(Box::new(BufWriter::new(port))));
    let runner = Arc::new(Runner::new(exe, probe::gather(), args.timeout_scale, sink));
    if let Ok(mut sink) = runner.sink.lock() {
        let init_ms = std::env::var(INIT_MS_ENV).ok().and_then(|v| v.parse().ok()).unwrap_or(0);
        sink.line(&Timeline { event: "timeline", init_ms, runner_ms, probed_ms: uptime_ms() });
    }
    // The probe goes out first: the host plans from it while this waits, and then only the suites
    // the plan needs are parsed (parsing is slow under emulation).
    runner.start_on("qemu-guest", 0);
    let beat = runner.clone();
    std::thread::spawn(move || heartbeat(&beat));
    let plan = read_plan(reader)?;
    let selection = match load_suites(&args, &plan.ids.iter().cloned().collect()) {
        Ok(s) => s,
        Err(e) => {
            send_error(&mut errors, &e);
            return Err(e);
        }
    };
    run_plan(&runner, &selection, &plan, &mut errors);
    runner.finish();
    Ok(())
}

/// The args file the host packed; sets the seed for the case processes.
fn read_args() -> Result<GuestArgs, String> {
    let text = std::fs::read_to_string(ARGS_PATH).map_err(|e| format!("{ARGS_PATH}: {e}"))?;
    let args: GuestArgs = serde_json::from_str(&text).map_err(|e| format!("{ARGS_PATH}: {e}"))?;
    if let Some(seed) = &args.seed {
        // SAFETY: no other thread runs yet; case processes inherit the seed from the environment.
        unsafe { std::env::set_var(crate::exec::race::SEED_ENV, seed) };
    }
    Ok(args)
}

/// The planned cases, from the packed suites the plan draws from (only they are parsed, and only
/// the planned cases expanded), and the baselines, named as the host named them.
fn load_suites(args: &GuestArgs, planned: &HashSet<String>) -> Result<Selection, String> {
    let joined =
        |errs: Vec<crate::suite::LoadError>| errs.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n");
    let needed: HashSet<&str> = planned.iter().filter_map(|id| id.split("::").next()).collect();
    let mut suites: Vec<Suite> = Vec::new();
    for s in args.suites.iter().filter(|s| s.name.is_empty() || needed.contains(s.name.as_str())) {
        let text = std::fs::read_to_string(&s.file).map_err(|e| format!("{}: {e}", s.file))?;
        suites.push(load_cases(&text, &Source::from_arg(&s.source), planned).map_err(joined)?);
    }
    let mut baseline_texts = Vec::new();
    for b in &args.baselines {
        let text = std::fs::read_to_string(&b.file).map_err(|e| format!("{}: {e}", b.file))?;
        baseline_texts.push((PathBuf::from(&b.shown_as), text));
    }
    let baselines = baseline::parse_all(&baseline_texts).map_err(joined)?;
    Ok(Selection { suites, baselines, baseline_texts })
}

fn read_plan(port: File) -> Result<Plan, String> {
    let mut line = String::new();
    BufReader::new(port).read_line(&mut line).map_err(|e| format!("reading the plan from the host: {e}"))?;
    serde_json::from_str(&line).map_err(|e| format!("the host's plan is not understood ({e}): {line:?}"))
}

/// Runs the planned cases in order, `test_threads` at a time.
fn run_plan(runner: &Runner, selection: &Selection, plan: &Plan, errors: &mut File) {
    let by_id: HashMap<&str, &Case> = selection.cases().map(|c| (c.id.as_str(), c)).collect();
    let mut queue = VecDeque::new();
    for id in &plan.ids {
        match by_id.get(id.as_str()) {
            Some(c) => queue.push_back(*c),
            None => send_error(errors, &format!("the plan names `{id}`, which no packed suite has")),
        }
    }
    let queue = Mutex::new(queue);
    std::thread::scope(|s| {
        let threads =
            plan.test_threads.unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get() * 2));
        for _ in 0..threads.max(1) {
            s.spawn(|| {
                while let Some(case) = queue.lock().ok().and_then(|mut q| q.pop_front()) {
                    let announce = || {
                        if let Ok(mut sink) = runner.sink.lock() {
                            sink.line(&CaseStarted { event: "case_started", id: &case.id });
                        }
                    };
                    // A panic here is gmemconf's own bug: the hook reports it, the host sees the
                    // case without a result, and the other cases go on.
                    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        let baseline = baseline_for(case, &selection.baselines, &runner.probe);
                        runner.execute_announced(case, baseline, announce)
                    }));
                }
            });
        }
    });
}

fn heartbeat(runner: &Runner) {
    let start = Instant::now();
    loop {
        std::thread::sleep(HEARTBEAT);
        let beat = Heartbeat { event: "heartbeat", uptime_ms: start.elapsed().as_millis() as u64 };
        match runner.sink.lock() {
            Ok(mut s) => s.line(&beat),
            Err(_) => return,
        }
    }
}

fn send_error(port: &mut File, message: &str) {
    if let Ok(line) = serde_json::to_string(&GuestError { event: "guest_error", message }) {
        let _ = port.write_all(format!("{line}\n").as_bytes());
    }
}

/// A panic anywhere in the runner reaches the host as a `guest_error` and the console.
fn install_panic_report(port: &File) {
    let Ok(port) = port.try_clone() else { return };
    let port = Mutex::new(port);
    std::panic::set_hook(Box::new(move |info| {
        let message = format!("gmemconf panicked in the guest: {info}");
        eprintln!("{message}");
        if let Ok(mut p) = port.lock() {
            send_error(&mut p, &message);
        }
    }));
}

//! `gmemconf run --kernel <spec>`: the host side of the qemu target. It packs the initramfs,
//! starts the boot manager, and, once the first boot's probe is in, drives the same libtest-mimic
//! console as the host target with trials that wait for their case's event from the guest.

use super::board::Board;
use super::boot::Limits;
use super::command::{Accel, AccelChoice, QemuConfig, choose_accel};
use super::elf::check_static;
use super::initramfs::{self, Payload};
use super::kernel::kernel_image;
use super::manager::{FirstBoot, Manager, Setup, Shared, Summary};
use super::protocol::{BaselineFile, GuestArgs, SuiteFile};
use crate::exit;
use crate::probe::{self, Probe};
use crate::report::console;
use crate::report::event::RunStarted;
use crate::run::{EventSink, Selection, baseline_for};
use crate::suite::{Case, excerpt};
use libtest_mimic::{Arguments, Failed, Trial};
use std::io::Write;
use std::path::Path;
use std::process::ExitCode;
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

pub struct QemuOptions {
    pub kernel: String,
    pub accel: AccelChoice,
    /// Cases at once inside the guest (default: twice its CPUs).
    pub test_threads: Option<usize>,
    pub timeout_scale: f64,
    /// `--seed`, passed on to the guest's race steps.
    pub seed: Option<String>,
}

const GUEST_CPUS: usize = 2;
const GUEST_MEMORY: &str = "2G";

pub fn run(
    opts: &QemuOptions,
    selection: Selection,
    mut la: Arguments,
    events: Option<Box<dyn Write + Send>>,
) -> ExitCode {
    let started = Instant::now();
    if !could_match(&selection, &la) {
        eprintln!("gmemconf: no case matched the selection");
        return ExitCode::from(exit::USAGE);
    }
    let kernel = match kernel_image(&opts.kernel) {
        Ok(k) => k,
        Err(e) => {
            eprintln!("gmemconf: {e}");
            return ExitCode::from(e.exit_code());
        }
    };
    let exe = match std::env::current_exe() {
        Ok(e) => e,
        Err(e) => return broken(&format!("cannot find its own executable: {e}")),
    };
    let image = match check_static(&exe) {
        Ok(i) => i,
        Err(e) => {
            return broken(&format!(
                "{e}\n  help: build gmemconf with the project's .cargo/config.toml (static, target x86_64-unknown-linux-gnu)"
            ));
        }
    };
    let (accel, why) = choose_accel(opts.accel, &probe::gather());
    let tsc = std::thread::spawn(move || if accel == Accel::Tcg { super::tsc::host_tsc_khz() } else { None });
    let run_dir = std::env::temp_dir().join(format!("gmemconf-qemu-{}", std::process::id()));
    if let Err(e) = std::fs::create_dir_all(&run_dir) {
        return broken(&format!("cannot create {}: {e}", run_dir.display()));
    }
    let payload = payload(&selection, &la, opts.timeout_scale * accel.timeout_factor(), opts.seed.clone());
    let packing = Instant::now();
    let initrd = match initramfs::build(&exe, &image, &initramfs::cache_dir(), &payload, &run_dir.join("initrd.cpio")) {
        Ok(b) => b,
        Err(e) => return broken(&format!("cannot write the initramfs in {}: {e}", run_dir.display())),
    };
    eprintln!(
        "gmemconf: initramfs {} ({:.1} MB, base archive {}) in {} ms",
        initrd.path.display(),
        initrd.bytes as f64 / 1e6,
        if initrd.base_cached { "cached" } else { "built" },
        packing.elapsed().as_millis()
    );
    let qemu = QemuConfig {
        accel,
        cpus: GUEST_CPUS,
        memory: GUEST_MEMORY.into(),
        kernel,
        initrd: initrd.path.clone(),
        socket: run_dir.join("events.sock"),
        monitor: Some(run_dir.join("monitor.sock")),
        tsc_khz: tsc.join().ok().flatten(),
        bios: super::command::qboot(),
    };
    eprintln!("gmemconf: accel {} ({why})", accel.name());
    eprintln!("gmemconf: {}", qemu.command_line());
    let test_threads = opts.test_threads;
    let setup = Setup {
        qemu,
        limits: limits(accel),
        run_dir: run_dir.clone(),
        kernel_spec: opts.kernel.clone(),
        accel,
        test_threads,
    };
    let shared = Arc::new(Shared { sink: Mutex::new(EventSink::new(events)), board: Board::default() });
    let manager = Manager::new(setup, selection.cases().cloned().collect(), shared.clone());
    let (first_tx, first_rx) = mpsc::channel();
    let (plan_tx, plan_rx) = mpsc::channel();
    let boots = std::thread::spawn(move || manager.run(first_tx, plan_rx));

    let up = match first_rx.recv() {
        Ok(FirstBoot::Up(up)) => up,
        Ok(FirstBoot::Broken { why, console }) => {
            let _ = boots.join();
            let _ = std::fs::remove_file(&initrd.path);
            eprintln!("{console}");
            return broken(&format!("{why}\n  console log kept in {}", run_dir.display()));
        }
        Err(_) => {
            let _ = boots.join();
            return broken("the boot manager stopped before the first boot");
        }
    };
    let fingerprint = up.fingerprint.clone();
    let trials = trials(&selection, &up.probe, &fingerprint, &shared);
    let ids: Vec<String> =
        trials.iter().filter(|t| !la.is_filtered_out(t) && !la.is_ignored(t)).map(|t| t.name().to_string()).collect();
    if let Ok(mut sink) = shared.sink.lock() {
        sink.line(&RunStarted {
            event: "run_started",
            gmemconf: env!("CARGO_PKG_VERSION"),
            target: "qemu",
            fingerprint: fingerprint.clone(),
            probe: &up.probe,
            cases: ids.len(),
            kernel_log_unwatched: up.kernel_log_unwatched.clone(),
            timeout_scale: up.timeout_scale,
        });
    }
    let _ = plan_tx.send(ids);
    // Host-side trials only wait; enough of them that a slow case does not hold up the display.
    la.test_threads = Some(test_threads.unwrap_or(GUEST_CPUS * 2) * 2);
    let _ = libtest_mimic::run(&la, trials);
    let summary = boots.join().unwrap_or(Summary { boots: 0, abnormal_boots: 0, first_result: None, broken: None });
    finish(&shared, &summary, &fingerprint, accel, &opts.kernel, started, &run_dir)
}

fn finish(
    shared: &Shared,
    summary: &Summary,
    fingerprint: &str,
    accel: Accel,
    kernel: &str,
    started: Instant,
    run_dir: &Path,
) -> ExitCode {
    let mut sink = match shared.sink.lock() {
        Ok(s) => s,
        Err(p) => p.into_inner(),
    };
    let counts = sink.counts.clone();
    sink.line(&crate::report::event::RunFinished {
        event: "run_finished",
        counts: counts.clone(),
        duration_ms: started.elapsed().as_millis() as u64,
    });
    let target = format!("{fingerprint} (guest kernel {kernel}, QEMU {})", accel.name());
    eprint!("{}", console::summary(&counts, &sink.events, &target, started.elapsed().as_secs_f64()));
    eprintln!(
        "gmemconf: {} boot(s), {} ended abnormally; boot-to-first-result {}",
        summary.boots,
        summary.abnormal_boots,
        summary.first_result.map_or("- (no result in the first boot)".into(), |d| format!("{:.1} s", d.as_secs_f64()))
    );
    let _ = std::fs::remove_file(run_dir.join("initrd.cpio"));
    if summary.abnormal_boots == 0 && summary.broken.is_none() {
        let _ = std::fs::remove_dir_all(run_dir);
    } else {
        eprintln!("gmemconf: console logs kept in {}", run_dir.display());
    }
    crate::run::exit_status(&counts, summary.broken.as_deref())
}

/// Whether any case can pass the filters, before a boot says which cases are `xfail` there (the
/// kind is part of what libtest-mimic filters on): a typo in `-f` costs no boot.
fn could_match(selection: &Selection, la: &Arguments) -> bool {
    selection.cases().any(|c| may_run(c, la))
}

/// Whether the filters may select `case` (with or without a baseline: its kind is not known
/// before the guest's probe).
fn may_run(case: &Case, la: &Arguments) -> bool {
    ["", "xfail"].iter().any(|kind| {
        let t = Trial::test(case.id.clone(), || Ok(())).with_kind(*kind).with_ignored_flag(case.ignore.is_some());
        !la.is_filtered_out(&t) && !la.is_ignored(&t)
    })
}

/// One trial per case, as the host target has; each waits for its case's final event.
fn trials(selection: &Selection, probe: &Probe, fingerprint: &str, shared: &Arc<Shared>) -> Vec<Trial> {
    selection
        .cases()
        .map(|case| {
            let kind = if baseline_for(case, &selection.baselines, probe).is_some() { "xfail" } else { "" };
            let (shared, id, fingerprint) = (shared.clone(), case.id.clone(), fingerprint.to_string());
            Trial::ignorable_test(case.id.clone(), move || match shared.board.wait(&id) {
                Ok(e) => console::trial_result(e, &fingerprint),
                Err(why) => Err(Failed::from(why)),
            })
            .with_kind(kind)
            .with_ignored_flag(case.ignore.is_some())
        })
        .collect()
}

/// The suite and baseline texts the selection came from, and the args naming them. A suite's text
/// keeps only the cases the filters may select: the guest parses it under emulation, where a
/// large suite costs tenths of a second before the first case can start.
pub(super) fn payload(selection: &Selection, la: &Arguments, timeout_scale: f64, seed: Option<String>) -> Payload {
    let mut files = Vec::new();
    let mut suites = Vec::new();
    for (i, s) in selection.suites.iter().enumerate() {
        let wanted: Vec<&Case> = s.cases.iter().filter(|c| may_run(c, la)).collect();
        if wanted.is_empty() {
            continue;
        }
        let text = if wanted.len() == s.cases.len() {
            s.text.to_string()
        } else {
            excerpt::union(wanted.iter().map(|c| &*c.text))
        };
        let file = format!("/gmemconf/suite-{i}.yaml");
        files.push((file.clone(), text));
        suites.push(SuiteFile { source: s.source.to_arg(), file, name: s.name.clone() });
    }
    let mut baselines = Vec::new();
    for (i, (shown_as, text)) in selection.baseline_texts.iter().enumerate() {
        let file = format!("/gmemconf/baseline-{i}.yaml");
        files.push((file.clone(), text.clone()));
        baselines.push(BaselineFile { shown_as: shown_as.display().to_string(), file });
    }
    Payload { args: GuestArgs { suites, baselines, timeout_scale, seed, exec: Vec::new() }, files }
}

pub(super) fn limits(accel: Accel) -> Limits {
    match accel {
        Accel::Tcg => Limits {
            boot: Duration::from_secs(60),
            silence: Duration::from_secs(30),
            case_margin: Duration::from_secs(30),
        },
        Accel::Kvm => Limits {
            boot: Duration::from_secs(30),
            silence: Duration::from_secs(15),
            case_margin: Duration::from_secs(15),
        },
    }
}

pub(super) fn broken(why: &str) -> ExitCode {
    eprintln!("gmemconf: the qemu target cannot run: {why}");
    ExitCode::from(exit::TARGET_BROKEN)
}

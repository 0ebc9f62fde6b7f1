//! The boot manager: boots the kernel as often as it takes to get a final result for every
//! planned case. A boot that ends abnormally charges the case in flight as crashed; when several
//! were in flight, they are re-run one at a time in boots of their own so that only the culprit is
//! charged; the cases not yet run resume in a fresh boot. Nothing already reported is lost.

use super::board::Board;
use super::boot::{BootEnd, BootHandler, BootReport, Limits, boot};
use super::command::{Accel, QemuConfig};
use super::protocol::{GuestUp, Plan};
use crate::report::event::{CaseEvent, Outcome};
use crate::run::EventSink;
use crate::suite::Case;
use serde::Serialize;
use std::collections::{HashMap, HashSet, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub struct Setup {
    pub qemu: QemuConfig,
    pub limits: Limits,
    pub run_dir: PathBuf,
    /// How the user named the kernel, for rerun hints.
    pub kernel_spec: String,
    pub accel: Accel,
    /// Cases at once in the guest (None: the guest's default).
    pub test_threads: Option<usize>,
}

/// What the host's threads share: the event record and the board the trials wait on.
pub struct Shared {
    pub sink: Mutex<EventSink>,
    pub board: Board,
}

impl Shared {
    fn publish(&self, e: CaseEvent) {
        if let Ok(mut s) = self.sink.lock() {
            s.case(e.clone());
        }
        self.board.post(e);
    }
}

/// The first boot's news for the main thread.
pub enum FirstBoot {
    Up(Box<GuestUp>),
    Broken { why: String, console: String },
}

pub struct Summary {
    pub boots: usize,
    pub abnormal_boots: usize,
    /// From QEMU's start to the first case result of the first boot.
    pub first_result: Option<Duration>,
    /// Why the target stopped booting, if it did.
    pub broken: Option<String>,
}

/// Why a boot ended abnormally, kept for every case it is charged to.
#[derive(Clone)]
struct Crash {
    why: String,
    boot: usize,
    trouble: Vec<String>,
    console: String,
}

/// Cases that were in flight together when a boot ended: re-run one at a time.
struct Suspects {
    members: Vec<String>,
    ran: HashMap<String, Duration>,
    crash: Crash,
    results: HashMap<String, CaseEvent>,
    culprit_found: bool,
}

#[derive(Clone, Copy, PartialEq)]
enum Mode {
    /// The pending cases, `test_threads` at a time.
    Normal,
    /// The first group of suspects, one at a time.
    Alone,
}

pub struct Manager {
    setup: Setup,
    book: Book,
}

/// Which cases are done, pending or suspect, and the results made on the host.
struct Book {
    cases: HashMap<String, Case>,
    shared: Arc<Shared>,
    pending: VecDeque<String>,
    suspects: VecDeque<Suspects>,
    fingerprint: Option<String>,
    timeout_scale: f64,
    kernel_spec: String,
    test_threads: Option<usize>,
}

/// A boot's handler: the book plus what this boot was asked to do.
struct Run<'m> {
    m: &'m mut Book,
    mode: Mode,
    first: Option<(&'m Sender<FirstBoot>, &'m Receiver<Vec<String>>)>,
    planned: Vec<String>,
    done: HashSet<String>,
}

#[derive(Serialize)]
struct BootEvent<'a> {
    event: &'static str,
    boot: usize,
    accel: &'static str,
    end: String,
    results: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    first_result_ms: Option<u64>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    in_flight: Vec<&'a str>,
    console_log: &'a Path,
}

impl Manager {
    pub fn new(setup: Setup, cases: Vec<Case>, shared: Arc<Shared>) -> Manager {
        let cases = cases.into_iter().map(|c| (c.id.clone(), c)).collect();
        let book = Book {
            cases,
            shared,
            pending: VecDeque::new(),
            suspects: VecDeque::new(),
            fingerprint: None,
            timeout_scale: 1.0,
            kernel_spec: setup.kernel_spec.clone(),
            test_threads: setup.test_threads,
        };
        Manager { setup, book }
    }

    /// Boots until every planned case has its result. The first boot's probe goes to `first_tx`;
    /// the ids to run come back on `plan_rx`.
    pub fn run(mut self, first_tx: Sender<FirstBoot>, plan_rx: Receiver<Vec<String>>) -> Summary {
        let mut summary = Summary { boots: 0, abnormal_boots: 0, first_result: None, broken: None };
        let mut barren_in_a_row = 0;
        loop {
            let first = summary.boots == 0;
            let mode = if !self.book.suspects.is_empty() {
                Mode::Alone
            } else if first || !self.book.pending.is_empty() {
                Mode::Normal
            } else {
                break;
            };
            summary.boots += 1;
            let n = summary.boots;
            let log = self.setup.run_dir.join(format!("console-boot-{n}.log"));
            let mut run = Run {
                m: &mut self.book,
                mode,
                first: first.then_some((&first_tx, &plan_rx)),
                planned: Vec::new(),
                done: HashSet::new(),
            };
            let report = boot(&self.setup.qemu, &log, &self.setup.limits, &mut run);
            let (planned, done) = (run.planned, run.done);
            if first {
                summary.first_result = report.first_result;
            }
            self.announce(n, &report, &log);
            if first && !report.started {
                let why = why_it_ended(&report);
                let _ = first_tx.send(FirstBoot::Broken { why: why.clone(), console: console_text(&report, &log) });
                summary.broken = Some(why);
                break;
            }
            if report.end != BootEnd::Finished {
                summary.abnormal_boots += 1;
            }
            let progress = report.cases_done > 0 || !report.in_flight.is_empty();
            barren_in_a_row = if progress { 0 } else { barren_in_a_row + 1 };
            self.book.settle(n, mode, &report, &log, &planned, &done);
            let refused = matches!(report.end, BootEnd::Refused(_));
            if barren_in_a_row >= 2 || refused {
                let why = format!("the target stopped working: {}", why_it_ended(&report));
                self.book.give_up(&why);
                summary.broken = Some(why);
                break;
            }
        }
        self.book.shared.board.close("the boot manager ended without it");
        summary
    }

    fn announce(&self, n: usize, report: &BootReport, log: &Path) {
        let in_flight: Vec<&str> = report.in_flight.iter().map(|(id, _)| id.as_str()).collect();
        let first = report.first_result.map(|d| format!(", first after {:.1} s", d.as_secs_f64())).unwrap_or_default();
        let mut line = format!(
            "gmemconf: boot {n} ({}): {}; {} result(s){first}",
            self.setup.accel.name(),
            report.end.describe(),
            report.cases_done
        );
        if report.end != BootEnd::Finished {
            line.push_str(&format!("; in flight: {}; console: {}", list_or_none(&in_flight), log.display()));
        }
        for cpu in &report.cpus {
            line.push_str(&format!("\n  {cpu}"));
        }
        if let (Some((init, runner, probed)), Some(seen)) = (report.timeline, report.run_started) {
            let s = |d: Duration| format!("{:.2}", d.as_secs_f64());
            line.push_str(&format!(
                "\n  guest clock: init at {} s, runner at {}, probed at {}; host clock: run_started at {} s, \
                 first case started at {}",
                s(init),
                s(runner),
                s(probed),
                s(seen),
                report.first_started.map_or("-".to_string(), s)
            ));
        }
        eprintln!("{line}");
        if let Ok(mut s) = self.book.shared.sink.lock() {
            s.line(&BootEvent {
                event: "boot",
                boot: n,
                accel: self.setup.accel.name(),
                end: report.end.describe(),
                results: report.cases_done,
                first_result_ms: report.first_result.map(|d| d.as_millis() as u64),
                in_flight,
                console_log: log,
            });
        }
    }
}

impl Book {
    /// Charges what the boot left unfinished.
    fn settle(
        &mut self,
        n: usize,
        mode: Mode,
        report: &BootReport,
        log: &Path,
        planned: &[String],
        done: &HashSet<String>,
    ) {
        let in_flight: Vec<&(String, Duration)> =
            report.in_flight.iter().filter(|(id, _)| !done.contains(id)).collect();
        if report.end == BootEnd::Finished {
            let errors = report.guest_errors.join("; ");
            for id in planned.iter().filter(|id| !done.contains(*id)) {
                let why = format!(
                    "the guest finished without a result for this case{}",
                    if errors.is_empty() { String::new() } else { format!(" (gmemconf inside the guest: {errors})") }
                );
                let ran = in_flight.iter().find(|(i, _)| i == id).map_or(Duration::ZERO, |(_, d)| *d);
                let e = self.host_event(id, Outcome::Error, ran, why, None);
                self.record(mode, e);
            }
        } else {
            let why = why_it_ended(report);
            let crash = Crash { why, boot: n, trouble: report.trouble.clone(), console: console_text(report, log) };
            match (mode, in_flight.len()) {
                (_, 0) => {}
                (Mode::Normal, 1) | (Mode::Alone, _) => {
                    for (id, ran) in &in_flight {
                        let e = self.crashed(id, *ran, &crash, None);
                        if let Some(g) = self.suspects.front_mut().filter(|_| mode == Mode::Alone) {
                            g.culprit_found = true;
                        }
                        self.record(mode, e);
                    }
                }
                (Mode::Normal, _) => {
                    let members: Vec<String> = in_flight.iter().map(|(id, _)| id.clone()).collect();
                    self.pending.retain(|id| !members.contains(id));
                    eprintln!(
                        "gmemconf: {} cases were in flight: each runs again alone to find the one that crashes",
                        members.len()
                    );
                    self.suspects.push_back(Suspects {
                        ran: in_flight.iter().map(|(id, d)| (id.clone(), *d)).collect(),
                        members,
                        crash,
                        results: HashMap::new(),
                        culprit_found: false,
                    });
                }
            }
        }
        if mode == Mode::Alone {
            self.resolve_suspects();
        }
    }

    /// A result of this boot: published at once, or held until its suspect group is resolved.
    fn record(&mut self, mode: Mode, e: CaseEvent) {
        self.pending.retain(|id| *id != e.id);
        match (mode, self.suspects.front_mut()) {
            (Mode::Alone, Some(g)) if g.members.contains(&e.id) => {
                g.results.insert(e.id.clone(), e);
            }
            _ => self.shared.publish(e),
        }
    }

    /// Once every suspect of the first group has run alone: if one crashed alone, it alone is
    /// charged and the others keep their own results; if none did, the crash needed them
    /// together, and every one of them is charged with it.
    fn resolve_suspects(&mut self) {
        let Some(g) = self.suspects.front() else { return };
        if g.members.iter().any(|id| !g.results.contains_key(id)) {
            return;
        }
        let Some(mut g) = self.suspects.pop_front() else { return };
        for id in g.members.clone() {
            let Some(alone) = g.results.remove(&id) else { continue };
            if g.culprit_found {
                self.shared.publish(alone);
                continue;
            }
            let others: Vec<&str> = g.members.iter().filter(|m| **m != id).map(String::as_str).collect();
            let note = format!(
                "it ran together with {}; run alone, each of them finished (this one: {})",
                others.join(", "),
                alone.outcome.label()
            );
            let ran = g.ran.get(&id).copied().unwrap_or_default();
            let e = self.crashed(&id, ran, &g.crash, Some(note));
            self.shared.publish(e);
        }
    }

    fn give_up(&mut self, why: &str) {
        let mut left: Vec<String> = self.pending.drain(..).collect();
        for g in self.suspects.drain(..) {
            left.extend(g.members.into_iter().filter(|m| !g.results.contains_key(m)));
            for (_, e) in g.results {
                self.shared.publish(e);
            }
        }
        for id in left {
            let e = self.host_event(&id, Outcome::Error, Duration::ZERO, why.to_string(), None);
            self.shared.publish(e);
        }
    }

    fn crashed(&self, id: &str, ran: Duration, crash: &Crash, note: Option<String>) -> CaseEvent {
        let mut why = format!("{} (boot {}, while this case ran", crash.why, crash.boot);
        match note {
            Some(n) => why.push_str(&format!("; {n})")),
            None => why.push(')'),
        }
        let mut e = self.host_event(id, Outcome::Crashed, ran, why, Some(crash.console.clone()));
        e.kernel_log = crash.trouble.clone();
        e
    }

    /// An event the host makes for a case the guest could not report.
    fn host_event(
        &self,
        id: &str,
        outcome: Outcome,
        ran: Duration,
        reason: String,
        output: Option<String>,
    ) -> CaseEvent {
        let (location, reference) = self.cases.get(id).map(|c| (c.location(), c.reference.clone())).unwrap_or_default();
        CaseEvent {
            event: "case",
            id: id.to_string(),
            outcome,
            duration_ms: ran.as_millis() as u64,
            location,
            reference,
            reason: Some(reason),
            failure: None,
            baseline: None,
            output,
            kernel_log: Vec::new(),
            notes: Vec::new(),
            rerun: self.rerun(id),
            target: self.fingerprint.clone(),
        }
    }

    fn rerun(&self, id: &str) -> String {
        let path = self.cases.get(id).map(|c| c.source.path().display().to_string()).unwrap_or_default();
        format!("gmemconf run --kernel {} {path} --exact -f '{id}'", self.kernel_spec)
    }
}

impl BootHandler for Run<'_> {
    fn started(&mut self, up: GuestUp) -> Result<Plan, String> {
        let fingerprint = up.fingerprint.clone();
        if let Some((tx, rx)) = self.first.take() {
            self.m.fingerprint = Some(fingerprint);
            self.m.timeout_scale = up.timeout_scale;
            tx.send(FirstBoot::Up(Box::new(up))).map_err(|_| "the run was abandoned".to_string())?;
            let ids = rx.recv().map_err(|_| "the run was abandoned".to_string())?;
            self.m.pending = ids.into();
        } else if self.m.fingerprint.as_deref() != Some(fingerprint.as_str()) {
            return Err(format!(
                "the guest kernel changed between boots: first {}, now {fingerprint}",
                self.m.fingerprint.as_deref().unwrap_or("?")
            ));
        }
        let (ids, threads): (Vec<String>, Option<usize>) = match self.mode {
            Mode::Normal => (self.m.pending.iter().cloned().collect(), self.m.test_threads),
            Mode::Alone => {
                let g = self.m.suspects.front().ok_or("no suspects to run")?;
                (g.members.iter().filter(|id| !g.results.contains_key(*id)).cloned().collect(), Some(1))
            }
        };
        self.planned = ids.clone();
        Ok(Plan { ids, test_threads: threads })
    }

    fn case(&mut self, mut e: CaseEvent) {
        e.rerun = self.m.rerun(&e.id);
        self.done.insert(e.id.clone());
        self.m.record(self.mode, e);
    }

    fn deadline(&self, id: &str) -> Duration {
        let timeout = self.m.cases.get(id).map_or(Duration::from_secs(60), |c| c.timeout);
        timeout.mul_f64(self.m.timeout_scale)
    }
}

/// How the boot ended, with what gmemconf inside the guest said about it, if anything.
fn why_it_ended(report: &BootReport) -> String {
    let mut why = report.end.describe();
    if !report.guest_errors.is_empty() {
        why.push_str(&format!(" (gmemconf inside the guest: {})", report.guest_errors.join("; ")));
    }
    why
}

/// The console lines that go with a crash report.
fn console_text(report: &BootReport, log: &Path) -> String {
    let before = if report.trouble.is_empty() { "" } else { " before the trouble" };
    let mut s = format!("--- console: last {} lines{before} (full log: {}) ---\n", report.tail.len(), log.display());
    for l in &report.tail {
        s.push_str(l);
        s.push('\n');
    }
    if !report.cpus.is_empty() {
        s.push_str("--- where the guest's CPUs were (QEMU monitor) ---\n");
        for l in &report.cpus {
            s.push_str(l);
            s.push('\n');
        }
    }
    if !report.qemu_stderr.trim().is_empty() {
        s.push_str("--- QEMU's stderr ---\n");
        s.push_str(&report.qemu_stderr);
    }
    s
}

fn list_or_none(ids: &[&str]) -> String {
    if ids.is_empty() { "none".into() } else { ids.join(", ") }
}

//! One run on the host target: select suites and baselines, gate each case on the probe, execute
//! it in its own process, apply baselines, and record the event.

use crate::exec::protocol::{CaseResult, StepFailure};
use crate::exec::supervise::{Ending, run_case_process};
use crate::probe::Probe;
use crate::report::event::{CaseEvent, Counts, Outcome, RunFinished, RunStarted};
use crate::suite::baseline::{self, Baseline};
use crate::suite::load::load;
use crate::suite::{Case, LoadError, Source, Suite, embedded};
use crate::target::kmsg::{self, KernelLog};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, RwLock};
use std::time::{Duration, Instant};

pub struct Selection {
    pub suites: Vec<Suite>,
    pub baselines: Vec<Baseline>,
    /// The baseline files those came from (path as shown, text), for a target that loads them
    /// again elsewhere (the qemu target's guest).
    pub baseline_texts: Vec<(PathBuf, String)>,
}

impl Selection {
    pub fn cases(&self) -> impl Iterator<Item = &Case> {
        self.suites.iter().flat_map(|s| s.cases.iter())
    }
}

/// Suite files named on the command line (directories mean their `*.yaml`), or the embedded ones.
pub fn suite_sources(paths: &[PathBuf]) -> Result<Vec<Source>, Vec<LoadError>> {
    if paths.is_empty() {
        return Ok(embedded::SUITES.iter().map(|(n, _)| Source::Embedded(n)).collect());
    }
    let mut out = Vec::new();
    for p in paths {
        if p.is_dir() {
            let mut files: Vec<PathBuf> = std::fs::read_dir(p)
                .map_err(|e| vec![io_error(p, &e.to_string())])?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|f| f.extension().is_some_and(|x| x == "yaml") && f.is_file())
                .collect();
            files.sort();
            if files.is_empty() {
                return Err(vec![io_error(p, "the directory has no .yaml suites")]);
            }
            out.extend(files.into_iter().map(Source::File));
        } else if p.exists() {
            out.push(Source::File(p.clone()));
        } else {
            return Err(vec![LoadError {
                file: p.clone(),
                loc: None,
                message: "no such suite file".into(),
                help: Some("give a suite file or directory (e.g. suites/sealing.yaml); run `gmemconf list` for the built-in suites".into()),
            }]);
        }
    }
    Ok(out)
}

fn io_error(p: &Path, msg: &str) -> LoadError {
    LoadError { file: p.to_path_buf(), loc: None, message: msg.to_string(), help: None }
}

pub enum BaselineChoice<'a> {
    None,
    Dir(&'a Path),
    /// Next to the suites given (their `baselines/`), else the embedded ones.
    Auto,
}

pub fn load_selection(paths: &[PathBuf], baselines: BaselineChoice) -> Result<Selection, Vec<LoadError>> {
    let sources = suite_sources(paths)?;
    let mut suites = Vec::new();
    let mut errors = Vec::new();
    for s in &sources {
        match load(s) {
            Ok(suite) => suites.push(suite),
            Err(mut e) => errors.append(&mut e),
        }
    }
    let mut names = std::collections::HashSet::new();
    for s in &suites {
        if !names.insert(s.name.clone()) {
            errors.push(io_error(&s.source.path(), &format!("a second suite named `{}`", s.name)));
        }
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    let baseline_texts = match baselines {
        BaselineChoice::None => Vec::new(),
        BaselineChoice::Dir(d) => baseline::texts(Some(d))?,
        BaselineChoice::Auto => {
            let beside = sources.iter().find_map(|s| match s {
                Source::File(p) => p.parent().map(|d| d.join("baselines")).filter(|d| d.is_dir()),
                Source::Embedded(_) => None,
            });
            baseline::texts(beside.as_deref())?
        }
    };
    let baselines = baseline::parse_all(&baseline_texts)?;
    Ok(Selection { suites, baselines, baseline_texts })
}

/// Why a case cannot run on this target, if it cannot.
pub fn skip_reason(case: &Case, probe: &Probe) -> Option<String> {
    // Facts about the target first: "no sw_protected VM type" says more than a capability that
    // a VM of that type cannot be asked about.
    let (target, per_vm): (Vec<_>, Vec<_>) = case.requires.iter().partition(|n| !n.what.is_per_vm_type());
    target
        .into_iter()
        .chain(per_vm)
        .find_map(|n| probe.meets_on(&n.what, &n.vm_types).err().map(|why| format!("needs {}: {why}", n.what)))
}

pub fn baseline_for<'a>(case: &Case, baselines: &'a [Baseline], probe: &Probe) -> Option<&'a Baseline> {
    baselines.iter().find(|b| b.matches_case(&case.id) && b.applies(probe))
}

/// Where events go as each case ends, and the tally for the summary and exit status.
pub struct EventSink {
    out: Option<Box<dyn Write + Send>>,
    pub counts: Counts,
    pub events: Vec<CaseEvent>,
}

impl EventSink {
    pub fn new(out: Option<Box<dyn Write + Send>>) -> EventSink {
        EventSink { out, counts: Counts::default(), events: Vec::new() }
    }

    pub fn line<T: serde::Serialize>(&mut self, event: &T) {
        if let Some(out) = &mut self.out
            && let Ok(line) = serde_json::to_string(event)
        {
            let _ = writeln!(out, "{line}");
            let _ = out.flush();
        }
    }

    pub fn case(&mut self, e: CaseEvent) {
        self.line(&e);
        self.counts.add(e.outcome);
        self.events.push(e);
    }
}

pub struct Runner {
    pub exe: PathBuf,
    pub probe: Probe,
    probe_json: String,
    pub fingerprint: String,
    pub timeout_scale: f64,
    pub sink: Mutex<EventSink>,
    started: Instant,
    /// Cases hold it shared while they run; a `serial` case holds it alone.
    alone: RwLock<()>,
}

impl Runner {
    /// `timeout_scale` multiplies what the target's kind already asks for (see `VirtKind`).
    pub fn new(exe: PathBuf, probe: Probe, timeout_scale: f64, sink: EventSink) -> Runner {
        let timeout_scale = timeout_scale * probe.virt.timeout_scale();
        let probe_json = serde_json::to_string(&probe).unwrap_or_default();
        let fingerprint = probe.fingerprint();
        Runner {
            exe,
            probe,
            probe_json,
            fingerprint,
            timeout_scale,
            sink: Mutex::new(sink),
            started: Instant::now(),
            alone: RwLock::new(()),
        }
    }

    pub fn start(&self, cases: usize) {
        self.start_on("host", cases);
    }

    /// `run_started` naming the target: `host`, or `qemu-guest` inside the qemu target's kernel.
    pub fn start_on(&self, target: &'static str, cases: usize) {
        let e = RunStarted {
            event: "run_started",
            gmemconf: env!("CARGO_PKG_VERSION"),
            target,
            fingerprint: self.fingerprint.clone(),
            probe: &self.probe,
            cases,
            kernel_log_unwatched: kmsg::Watch::start().finish().unwatched,
            timeout_scale: self.timeout_scale,
        };
        if let Ok(mut s) = self.sink.lock() {
            s.line(&e);
        }
    }

    pub fn finish(&self) -> Counts {
        let mut sink = match self.sink.lock() {
            Ok(s) => s,
            Err(p) => p.into_inner(),
        };
        let counts = sink.counts.clone();
        sink.line(&RunFinished {
            event: "run_finished",
            counts: counts.clone(),
            duration_ms: self.started.elapsed().as_millis() as u64,
        });
        counts
    }

    /// Runs one case (or skips it), records its event, and returns it.
    pub fn execute(&self, case: &Case, baseline: Option<&Baseline>) -> CaseEvent {
        self.execute_announced(case, baseline, || {})
    }

    /// `execute`, calling `started` when the case really starts: after a serial case has the
    /// machine to itself, or a parallel one has waited out a serial one (the qemu target's
    /// guest says `case_started` then, so that a crash is charged to cases that were running).
    pub fn execute_announced(&self, case: &Case, baseline: Option<&Baseline>, started: impl FnOnce()) -> CaseEvent {
        let mut event = CaseEvent {
            event: "case",
            id: case.id.clone(),
            outcome: Outcome::Pass,
            duration_ms: 0,
            location: case.location(),
            reference: case.reference.clone(),
            reason: None,
            failure: None,
            baseline: None,
            output: None,
            kernel_log: Vec::new(),
            notes: Vec::new(),
            rerun: format!("gmemconf run {} --exact -f '{}'", case.source.path().display(), case.id),
            target: Some(self.fingerprint.clone()),
        };
        if let Some(reason) = skip_reason(case, &self.probe) {
            started();
            event.outcome = Outcome::Skip;
            event.reason = Some(reason);
        } else {
            let timeout = Duration::from_secs_f64(case.timeout.as_secs_f64() * self.timeout_scale);
            let (_shared, _alone) = if case.serial {
                (None, Some(self.alone.write().unwrap_or_else(|p| p.into_inner())))
            } else {
                (Some(self.alone.read().unwrap_or_else(|p| p.into_inner())), None)
            };
            started();
            let watch = kmsg::Watch::start();
            let sup = run_case_process(&self.exe, case, &self.probe_json, timeout, self.timeout_scale);
            let klog = watch.finish();
            event.duration_ms = sup.duration.as_millis() as u64;
            event.notes = sup.notes;
            (event.outcome, event.reason, event.failure) = verdict(sup.ending, case, timeout);
            let kernel_alarmed = judge_kernel_log(&mut event, &klog, case.serial);
            if event.outcome != Outcome::Pass && !sup.output.is_empty() {
                event.output = Some(sup.output);
            }
            // A baseline explains a known deviation, never a kernel that warned or oopsed, nor a
            // failure other than the one it names.
            if let Some(b) = baseline.filter(|b| !kernel_alarmed && b.explains(&event.what_went_wrong())) {
                event.outcome = match event.outcome {
                    Outcome::Fail | Outcome::Timeout | Outcome::Crashed => Outcome::Xfail,
                    Outcome::Pass if !b.intermittent => Outcome::Xpass,
                    other => other,
                };
                if matches!(event.outcome, Outcome::Xfail | Outcome::Xpass) {
                    event.baseline = Some(b.clone());
                }
            }
        }
        if let Ok(mut s) = self.sink.lock() {
            s.case(event.clone());
        }
        event
    }
}

/// The outcome of a case process's ending, with its reason or failing step.
fn verdict(ending: Ending, case: &Case, timeout: Duration) -> (Outcome, Option<String>, Option<StepFailure>) {
    let step_text = |step: Option<usize>| match step.and_then(|i| case.steps.get(i - 1).map(|s| (i, s))) {
        Some((i, s)) => format!("step {i} of {} ({}, {}:{})", case.steps.len(), s.op.name(), case.source, s.loc),
        None => "before its first step".to_string(),
    };
    match ending {
        Ending::Reported(CaseResult::Pass) => (Outcome::Pass, None, None),
        Ending::Reported(CaseResult::Fail(f)) => (Outcome::Fail, None, Some(f)),
        Ending::Reported(CaseResult::Error { step, message }) => {
            (Outcome::Error, Some(format!("{message} ({})", step_text(step))), None)
        }
        Ending::Timeout { step, stopped_by } => {
            let why = format!(
                "no result within {:.1} s; was running {}; stopped with {stopped_by}",
                timeout.as_secs_f64(),
                step_text(step)
            );
            (Outcome::Timeout, Some(why), None)
        }
        Ending::Crashed { signal, step } => {
            (Outcome::Crashed, Some(format!("the case process died of {signal} during {}", step_text(step))), None)
        }
        Ending::Vanished { status, step } => {
            let why = format!("the case process ended ({status}) without a result during {}", step_text(step));
            (Outcome::Error, Some(why), None)
        }
        Ending::NotStarted(msg) => (Outcome::Error, Some(msg), None),
    }
}

/// A kernel that warns, oopses or taints itself while a case runs has failed that case, whatever
/// the steps saw. Cases run in parallel, so the message says how to attribute it. True if it did.
fn judge_kernel_log(event: &mut CaseEvent, log: &KernelLog, ran_alone: bool) -> bool {
    event.kernel_log = log.lines.clone();
    let mut alarms: Vec<String> = log.alarms.clone();
    if let Some((before, after)) = log.taint_change {
        alarms.push(format!("kernel taint changed from {before:#x} to {after:#x}"));
    }
    if alarms.is_empty() {
        return false;
    }
    let attribution = if ran_alone {
        "no other case ran meanwhile"
    } else {
        "other cases ran at the same time: rerun alone with --exact to attribute"
    };
    let text = format!("the kernel reported trouble while this case ran: {} ({attribution})", alarms.join("; "));
    if event.outcome == Outcome::Pass {
        event.outcome = Outcome::Fail;
    }
    event.reason = Some(match event.reason.take() {
        Some(r) => format!("{r}; {text}"),
        None => text,
    });
    true
}

/// The exit status of a run that ended with these counts, saying why when it is not 0 or 1:
/// the target was unusable (`broken`), or nothing matched the selection.
pub fn exit_status(counts: &Counts, broken: Option<&str>) -> std::process::ExitCode {
    use crate::exit;
    if let Some(why) = broken {
        eprintln!("gmemconf: the target is not usable: {why}");
        return std::process::ExitCode::from(exit::TARGET_BROKEN);
    }
    if counts.total() == 0 {
        eprintln!("gmemconf: no case matched the selection");
        return std::process::ExitCode::from(exit::USAGE);
    }
    std::process::ExitCode::from(if counts.failed() { exit::CASE_FAILED } else { exit::OK })
}

//! The command line: run, list, validate, probe, and the hidden per-case child entry point.

use crate::exit;
use crate::probe;
use crate::report::console;
use crate::run::{BaselineChoice, EventSink, Runner, Selection, baseline_for, load_selection, skip_reason};
use crate::suite::LoadError;
use crate::target::qemu::{self, AccelChoice, QemuOptions};
use clap::{Args, Parser, Subcommand, ValueEnum};
use std::io::Write;
use std::os::fd::{AsRawFd, FromRawFd};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

#[derive(Parser)]
#[command(name = "gmemconf", version, about = "Conformance suite and test runner for KVM guest_memfd")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run suites against this host's /dev/kvm, or with --kernel inside that kernel booted in QEMU
    /// (all built-in suites when no file is given).
    Run(RunArgs),
    /// List every case, with whether it would run here or why it is skipped.
    List(ListArgs),
    /// Check suite and baseline files without running anything.
    Validate {
        /// Suite files or directories (default: the built-in suites).
        files: Vec<PathBuf>,
    },
    /// Show what this host's KVM can do.
    Probe {
        #[arg(long, value_enum, default_value_t = Format::Human)]
        format: Format,
    },
    /// Measure gmemconf's own cost against direct loops making the same calls, and each suite's
    /// wall time (needs an mmap-able guest_memfd on this host).
    Bench {
        /// VM cycles for the interpreter comparison.
        #[arg(long, default_value_t = 200)]
        iterations: u32,
        /// How long each side of the race comparison runs, in seconds.
        #[arg(long, default_value_t = 3.0)]
        race_seconds: f64,
        /// Suites to time (default: the built-in suites).
        suites: Vec<PathBuf>,
        /// Run the benchmarks inside this kernel, booted in QEMU (as `run --kernel`).
        #[arg(long, value_name = "SPEC")]
        kernel: Option<String>,
        #[arg(long, value_enum, default_value_t = qemu::AccelChoice::Auto, requires = "kernel")]
        accel: qemu::AccelChoice,
    },
    /// Internal: the qemu target's guest runner, started by gmemconf as the test kernel's init.
    #[command(name = "__guest", hide = true)]
    Guest {
        #[arg(long)]
        events_fd: i32,
    },
    /// Build or find the test kernel for the qemu target (guest-images/).
    Image(crate::image::ImageArgs),
    /// Internal: run one case in this process and report on fd 3.
    #[command(name = "__case", hide = true)]
    Case {
        #[arg(long)]
        suite: String,
        #[arg(long)]
        id: String,
        /// Read the suite text from stdin (the runner's copy) instead of the file.
        #[arg(long)]
        text_on_stdin: bool,
    },
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Format {
    Human,
    Json,
}

#[derive(Args)]
struct Selecting {
    /// Suite files or directories (default: the built-in suites).
    suites: Vec<PathBuf>,
    /// Run only cases whose id contains this text (with --exact: equals it).
    #[arg(short = 'f', long)]
    filter: Option<String>,
    #[arg(long)]
    exact: bool,
    /// Leave out cases whose id contains this text (repeatable).
    #[arg(long)]
    skip: Vec<String>,
    /// Baseline directory (default: `baselines/` beside the suites given, else the built-in ones).
    #[arg(long, conflicts_with = "no_baselines")]
    baselines: Option<PathBuf>,
    /// Apply no baselines: every deviation is a plain failure.
    #[arg(long)]
    no_baselines: bool,
}

#[derive(Args)]
struct RunArgs {
    #[command(flatten)]
    select: Selecting,
    /// List the selected cases instead of running them (libtest format, for cargo nextest).
    #[arg(long)]
    list: bool,
    /// Run only the cases marked `ignore:` (slow or disruptive).
    #[arg(long)]
    ignored: bool,
    #[arg(long)]
    include_ignored: bool,
    /// Cases run at once, each in its own process (default: twice the CPUs).
    #[arg(long)]
    test_threads: Option<usize>,
    /// `json`: one event per line on stdout, flushed as each case ends; the console goes to stderr.
    #[arg(long, value_enum, default_value_t = Format::Human)]
    format: Format,
    /// Also write the JSON-lines events to this file.
    #[arg(long)]
    events: Option<PathBuf>,
    /// Multiply every case's timeout, on top of the target's own factor (2 on nested or software
    /// virtualization, 1 on hardware).
    #[arg(long, default_value_t = 1.0)]
    timeout_scale: f64,
    /// Seed for every race step that does not fix its own (replays a reported schedule's random
    /// choices: `--seed 0x5eed`).
    #[arg(long)]
    seed: Option<String>,
    /// Boot this kernel in QEMU and run the cases inside it, on its /dev/kvm (a bzImage path).
    #[arg(long, value_name = "SPEC")]
    kernel: Option<String>,
    /// How QEMU runs the kernel: `auto` uses KVM where this host's /dev/kvm has hardware
    /// virtualization, else TCG (emulation).
    #[arg(long, value_enum, default_value_t = AccelChoice::Auto, requires = "kernel")]
    accel: AccelChoice,
    /// Accepted for libtest compatibility (cargo nextest passes them); no effect.
    #[arg(long, hide = true)]
    nocapture: bool,
    #[arg(long, hide = true)]
    color: Option<String>,
}

#[derive(Args)]
struct ListArgs {
    #[command(flatten)]
    select: Selecting,
    #[arg(long, value_enum, default_value_t = Format::Human)]
    format: Format,
}

pub fn main() -> ExitCode {
    if std::process::id() == 1 {
        // The qemu target's initramfs: gmemconf is the test kernel's init.
        qemu::pid1::main();
    }
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { exit::USAGE } else { exit::OK });
        }
    };
    match cli.cmd {
        Cmd::Run(args) => run(args),
        Cmd::List(args) => list(args),
        Cmd::Validate { files } => validate(&files),
        Cmd::Probe { format } => probe_cmd(format),
        Cmd::Bench { iterations, race_seconds, suites, kernel, accel } => match kernel {
            Some(k) => bench_in_guest(&k, accel, iterations, race_seconds, &suites),
            None => bench(iterations, race_seconds, suites),
        },
        Cmd::Guest { events_fd } => ExitCode::from(qemu::guest::guest_main(events_fd) as u8),
        Cmd::Image(args) => crate::image::image_main(args),
        Cmd::Case { suite, id, text_on_stdin } => {
            ExitCode::from(crate::exec::child::case_main(&suite, &id, text_on_stdin) as u8)
        }
    }
}

fn print_load_errors(errors: &[LoadError]) -> ExitCode {
    for e in errors {
        eprintln!("{e}");
    }
    eprintln!("gmemconf: {} error(s) in suite files", errors.len());
    ExitCode::from(exit::USAGE)
}

fn select(s: &Selecting) -> Result<Selection, ExitCode> {
    let choice = match (&s.baselines, s.no_baselines) {
        (_, true) => BaselineChoice::None,
        (Some(d), _) => BaselineChoice::Dir(d),
        (None, false) => BaselineChoice::Auto,
    };
    let selection = load_selection(&s.suites, choice).map_err(|e| print_load_errors(&e))?;
    Ok(selection)
}

fn libtest_args(s: &Selecting) -> libtest_mimic::Arguments {
    libtest_mimic::Arguments { filter: s.filter.clone(), exact: s.exact, skip: s.skip.clone(), ..Default::default() }
}

fn run(args: RunArgs) -> ExitCode {
    let selection = match select(&args.select) {
        Ok(s) => s,
        Err(code) => return code,
    };
    if !(args.timeout_scale > 0.0 && args.timeout_scale <= 100.0) {
        eprintln!("gmemconf: --timeout-scale must be in (0, 100], got {}", args.timeout_scale);
        return ExitCode::from(exit::USAGE);
    }
    if let Some(seed) = &args.seed {
        if crate::exec::race::parse_seed(seed).is_none() {
            eprintln!("gmemconf: --seed takes a number (decimal or 0x hex), got `{seed}`");
            return ExitCode::from(exit::USAGE);
        }
        // SAFETY: no other thread runs yet; case processes inherit the seed from the environment.
        unsafe { std::env::set_var(crate::exec::race::SEED_ENV, seed) };
    }
    if args.test_threads == Some(0) {
        eprintln!("gmemconf: --test-threads must be at least 1");
        return ExitCode::from(exit::USAGE);
    }
    let mut la = libtest_args(&args.select);
    la.list = args.list;
    la.ignored = args.ignored;
    la.include_ignored = args.include_ignored;
    la.test_threads =
        Some(args.test_threads.unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get() * 2)));
    if args.list {
        la.format = Some(libtest_mimic::FormatSetting::Terse);
        let probe = probe::gather();
        let runner = Arc::new(Runner::new(PathBuf::new(), probe, 1.0, EventSink::new(None)));
        let _ = libtest_mimic::run(&la, console::trials(&runner, &selection));
        return ExitCode::from(exit::OK);
    }
    let sink_out = match event_outputs(&args) {
        Ok(o) => o,
        Err(code) => return code,
    };
    if let Some(kernel) = &args.kernel {
        let opts = QemuOptions {
            kernel: kernel.clone(),
            accel: args.accel,
            test_threads: args.test_threads,
            timeout_scale: args.timeout_scale,
            seed: args.seed.clone(),
        };
        return qemu::run(&opts, selection, la, sink_out);
    }
    let exe = match own_executable("to start case processes") {
        Ok(e) => e,
        Err(code) => return code,
    };
    let started = Instant::now();
    let probe = probe::gather();
    let kvm_broken = probe.kvm_error.clone();
    let runner = Arc::new(Runner::new(exe, probe, args.timeout_scale, EventSink::new(sink_out)));
    let trials = console::trials(&runner, &selection);
    runner.start(trials.len());
    let _ = libtest_mimic::run(&la, trials);
    let counts = runner.finish();
    let sink = match runner.sink.lock() {
        Ok(s) => s,
        Err(p) => p.into_inner(),
    };
    eprint!("{}", console::summary(&counts, &sink.events, &runner.fingerprint, started.elapsed().as_secs_f64()));
    if counts.skip > 0 && !runner.probe.has_private_memory() {
        eprintln!(
            "hint: this host's KVM lacks guest_memfd or private memory; `gmemconf run --kernel debian:7.3` runs \
             the skipped cases inside a test kernel that has them (QEMU; see README.md)"
        );
    }
    crate::run::exit_status(&counts, kvm_broken.as_deref())
}

/// gmemconf's own executable, which case processes run again; exit 3 if it cannot be found.
fn own_executable(purpose: &str) -> Result<PathBuf, ExitCode> {
    std::env::current_exe().map_err(|e| {
        eprintln!("gmemconf: cannot find its own executable {purpose}: {e}");
        ExitCode::from(exit::TARGET_BROKEN)
    })
}

/// Where the JSON events go: stdout with `--format json`, the `--events` file, or both.
fn event_outputs(args: &RunArgs) -> Result<Option<Box<dyn Write + Send>>, ExitCode> {
    let mut outputs: Vec<Box<dyn Write + Send>> = Vec::new();
    if args.format == Format::Json {
        match json_stdout() {
            Ok(f) => outputs.push(Box::new(f)),
            Err(e) => {
                eprintln!("gmemconf: cannot set up JSON output: {e}");
                return Err(ExitCode::from(exit::TARGET_BROKEN));
            }
        }
    }
    if let Some(path) = &args.events {
        match std::fs::File::create(path) {
            Ok(f) => outputs.push(Box::new(f)),
            Err(e) => {
                eprintln!("gmemconf: cannot write events to {}: {e}", path.display());
                return Err(ExitCode::from(exit::USAGE));
            }
        }
    }
    Ok(match outputs.len() {
        0 => None,
        1 => outputs.pop(),
        _ => Some(Box::new(Tee(outputs))),
    })
}

/// Keeps the real stdout for JSON events and points fd 1 at stderr, so that nothing else printed
/// (the libtest console included) can mix into the event stream.
fn json_stdout() -> std::io::Result<std::fs::File> {
    let stdout = std::io::stdout();
    let _guard = stdout.lock();
    // SAFETY: dup of our own stdout gives a new fd we own.
    let fd = unsafe { libc::dup(stdout.as_raw_fd()) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: make fd 1 a copy of fd 2; both are ours.
    if unsafe { libc::dup2(2, 1) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh descriptor nothing else owns.
    Ok(unsafe { std::fs::File::from_raw_fd(fd) })
}

struct Tee(Vec<Box<dyn Write + Send>>);

impl Write for Tee {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        for w in &mut self.0 {
            w.write_all(buf)?;
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.0.iter_mut().try_for_each(|w| w.flush())
    }
}

fn list(args: ListArgs) -> ExitCode {
    let selection = match select(&args.select) {
        Ok(s) => s,
        Err(code) => return code,
    };
    let probe = probe::gather();
    let la = libtest_args(&args.select);
    let mut shown = 0;
    for case in selection.cases() {
        let trial = libtest_mimic::Trial::test(case.id.clone(), || Ok(()));
        if la.is_filtered_out(&trial) {
            continue;
        }
        shown += 1;
        let skip = skip_reason(case, &probe);
        let baseline = baseline_for(case, &selection.baselines, &probe);
        if args.format == Format::Json {
            let v = serde_json::json!({
                "id": case.id,
                "location": case.location(),
                "ref": case.reference,
                "requires": case.requires.iter().map(ToString::to_string).collect::<Vec<_>>(),
                "run": skip.is_none(),
                "skip_reason": skip,
                "ignored": case.ignore,
                "baseline": baseline.map(|b| &b.reason),
                "steps": case.steps.len(),
            });
            println!("{v}");
        } else {
            let state = match (&skip, &case.ignore, baseline) {
                (Some(why), _, _) => format!("skip  ({why})"),
                (None, Some(why), _) => format!("ignored  ({why})"),
                (None, None, Some(b)) => format!("xfail  ({})", b.reason),
                (None, None, None) => "run".to_string(),
            };
            println!("{:<72} {state}", case.id);
        }
    }
    if shown == 0 {
        eprintln!("gmemconf: no case matched the selection");
        return ExitCode::from(exit::USAGE);
    }
    ExitCode::from(exit::OK)
}

fn validate(files: &[PathBuf]) -> ExitCode {
    let selection = match load_selection(files, BaselineChoice::Auto) {
        Ok(s) => s,
        Err(e) => return print_load_errors(&e),
    };
    let mut problems = Vec::new();
    // An entry for a suite that is not being validated is not stale, only out of scope.
    let in_scope = |b: &&crate::suite::baseline::Baseline| {
        selection
            .suites
            .iter()
            .any(|s| b.case.split("::").next().is_some_and(|p| crate::suite::baseline::glob(p, &s.name)))
    };
    for b in selection.baselines.iter().filter(in_scope) {
        if !selection.cases().any(|c| b.matches_case(&c.id)) {
            problems.push(format!(
                "{}:{}: error: baseline `{}` matches no case\n  help: check the id with `gmemconf list`, or remove the stale entry",
                b.file, b.line, b.case
            ));
        }
    }
    for p in &problems {
        eprintln!("{p}");
    }
    if !problems.is_empty() {
        return ExitCode::from(exit::USAGE);
    }
    let cases = selection.cases().count();
    println!(
        "gmemconf: {} suite(s), {cases} cases, {} baseline entries: valid",
        selection.suites.len(),
        selection.baselines.len()
    );
    ExitCode::from(exit::OK)
}

fn bench(iterations: u32, race_seconds: f64, suites: Vec<PathBuf>) -> ExitCode {
    if iterations == 0 || !(0.1..=600.0).contains(&race_seconds) {
        eprintln!("gmemconf: bench needs --iterations of at least 1 and --race-seconds in [0.1, 600]");
        return ExitCode::from(exit::USAGE);
    }
    let exe = match own_executable("to time the suites") {
        Ok(e) => e,
        Err(code) => return code,
    };
    let probe = probe::gather();
    let b = crate::bench::Bench {
        iterations,
        race_duration: std::time::Duration::from_secs_f64(race_seconds),
        suites,
        exe,
    };
    match crate::bench::run_all(&b, &probe) {
        Ok(true) => ExitCode::from(exit::OK),
        Ok(false) => {
            eprintln!("gmemconf: a benchmark missed its target");
            ExitCode::from(exit::CASE_FAILED)
        }
        Err(why) => {
            eprintln!("gmemconf: bench cannot run here: {why}");
            ExitCode::from(exit::TARGET_BROKEN)
        }
    }
}

/// `bench --kernel`: the same benchmarks, inside the kernel under test.
fn bench_in_guest(
    kernel: &str,
    accel: qemu::AccelChoice,
    iterations: u32,
    race_seconds: f64,
    suites: &[PathBuf],
) -> ExitCode {
    let mut files = Vec::new();
    let mut args = vec!["bench".to_string(), "--iterations".into(), iterations.to_string()];
    args.extend(["--race-seconds".into(), race_seconds.to_string()]);
    for (i, s) in suites.iter().enumerate() {
        if !s.is_file() {
            eprintln!(
                "{}: error: no such suite file\n  help: give suite files (directories are not packed)",
                s.display()
            );
            return ExitCode::from(exit::USAGE);
        }
        let inside = format!("/gmemconf/bench-suite-{i}.yaml");
        files.push((s.display().to_string(), inside.clone()));
        args.push(inside);
    }
    let deadline = std::time::Duration::from_secs(3600);
    qemu::exec::run_in_guest(kernel, accel, args, qemu::exec::Files { suites: files }, deadline)
}

fn probe_cmd(format: Format) -> ExitCode {
    let p = probe::gather();
    if format == Format::Json {
        match serde_json::to_string_pretty(&p) {
            Ok(s) => println!("{s}"),
            Err(e) => eprintln!("gmemconf: {e}"),
        }
    } else {
        print!("{}", probe::render(&p));
    }
    ExitCode::from(if p.kvm_error.is_some() { exit::TARGET_BROKEN } else { exit::OK })
}

/// Entry point for the `cargo test`/`cargo nextest` harness: the built-in suites as libtest
/// trials, executed by the `gmemconf` binary at `exe`.
pub fn harness_main(args: libtest_mimic::Arguments, exe: PathBuf) -> ExitCode {
    let selection = match load_selection(&[], BaselineChoice::Auto) {
        Ok(s) => s,
        Err(e) => return print_load_errors(&e),
    };
    let runner = Arc::new(Runner::new(exe, probe::gather(), 1.0, EventSink::new(None)));
    libtest_mimic::run(&args, console::trials(&runner, &selection)).exit_code()
}

//! The race engine: the threads of a `race` step run their steps at once, each step judged as in a
//! sequential case, until the counted threads are done or the race's duration is up. A vCPU that is
//! still in KVM_RUN a grace period after the end is a hang: it is reported, then kicked out with a
//! signal. The seed fixes every thread's random choices (which page, how long to pause between
//! steps), so a failing schedule can be replayed as closely as real concurrency allows.

use super::board::{Board, GUEST_COUNTERS};
use super::interp::{Judged, expects_signal, judge_step, perform_and_judge};
use super::observe::Mismatch;
use super::ops_race::{BoardStep, BoardTargets, clean_observation, is_board_op, perform_board};
use super::world::{CaseError, World};
use crate::suite::Requirement;
use crate::suite::step::{Race, RaceThread, Repeat, Step};
use std::cell::Cell;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long vCPUs get, after the race ends, to notice the board's stop flag and leave KVM_RUN, on
/// hardware virtualization (scaled like case timeouts elsewhere).
const GRACE: Duration = Duration::from_secs(2);
const KICK_EVERY: Duration = Duration::from_millis(100);
/// A kicked thread that still has not returned after this long (scaled) is stuck in the kernel.
const GIVE_UP: Duration = Duration::from_secs(5);

/// The factor case timeouts get on this target, which the runner passes to case processes.
pub const TIMEOUT_SCALE_ENV: &str = "GMEMCONF_TIMEOUT_SCALE";

pub fn grace() -> Duration {
    let scale = std::env::var(TIMEOUT_SCALE_ENV).ok().and_then(|v| v.parse::<f64>().ok()).filter(|s| *s >= 1.0);
    GRACE.mul_f64(scale.unwrap_or(1.0).min(20.0))
}

/// The first thing that went wrong in a race.
pub enum RaceFailure {
    /// A step's observation broke its expectation (or the board's invariants).
    Step { thread: String, iteration: u64, step: Step, mismatch: Mismatch, call: String },
    /// gmemconf could not carry a step out.
    Error { thread: String, message: String },
    /// A vCPU thread did not leave KVM_RUN within the grace period after the race ended; for a
    /// board program, whether its guest was still counting passes while the stop flag was set.
    Hang { thread: String, step: Step, guest: Option<String> },
}

pub struct RaceReport {
    pub failure: Option<RaceFailure>,
    /// What interleavings the race achieved, and its seed.
    pub summary: String,
    pub seed: u64,
}

/// Environment variable through which `gmemconf run --seed` reaches case processes.
pub const SEED_ENV: &str = "GMEMCONF_SEED";

thread_local! {
    static RNG: Cell<u64> = const { Cell::new(0x9e37_79b9_7f4a_7c15) };
}

/// The calling thread's next random number (splitmix64; seeded per thread by the race).
pub fn random() -> u64 {
    RNG.with(|r| {
        let x = r.get().wrapping_add(0x9e37_79b9_7f4a_7c15);
        r.set(x);
        let mut z = x;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    })
}

/// A random index below `n` (n > 0).
pub fn pick(n: u64) -> u64 {
    random() % n.max(1)
}

fn seed_thread(seed: u64, index: usize) {
    RNG.with(|r| r.set(seed ^ (index as u64).wrapping_add(1).wrapping_mul(0xd6e8_feb8_6659_fd93)));
}

fn choose_seed(race: &Race) -> u64 {
    if let Some(s) = race.seed {
        return s;
    }
    if let Some(s) = std::env::var(SEED_ENV).ok().and_then(|v| parse_seed(&v)) {
        return s;
    }
    let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64);
    seed_thread(t ^ u64::from(std::process::id()), 0);
    random()
}

pub fn parse_seed(text: &str) -> Option<u64> {
    let t = text.trim();
    match t.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => t.parse().ok(),
    }
}

/// Decides `if:` conditions of expectations on this target, on the VM types a step acts on.
pub type Met = dyn Fn(&Requirement, &[u64]) -> bool + Send + Sync;

/// What the threads share while the race runs.
struct Shared {
    world: Arc<World>,
    race: Race,
    board: Arc<Board>,
    met: Arc<Met>,
    /// Set when the race must end now: a failure, or the duration is up.
    halt: AtomicBool,
    counted_left: AtomicUsize,
    failure: Mutex<Option<RaceFailure>>,
    iterations: Vec<AtomicU64>,
    /// pthread ids of the threads, for kicking a vCPU out of KVM_RUN.
    pthreads: Vec<AtomicU64>,
    /// Kernel thread ids, for what /proc says of a thread that will not stop.
    tids: Vec<AtomicU64>,
    running: Vec<AtomicBool>,
    /// The step each thread is performing (index into its steps), for hang reports.
    current: Vec<AtomicUsize>,
    /// The watching thread, woken when a thread ends or fails (it sleeps otherwise: a waking
    /// watcher would take the CPU from vCPUs for nothing).
    watcher: std::thread::Thread,
}

impl Shared {
    fn fail(&self, f: RaceFailure) {
        let mut slot = self.failure.lock().unwrap_or_else(|p| p.into_inner());
        if slot.is_none() {
            *slot = Some(f);
        }
        self.end();
    }

    fn end(&self) {
        self.halt.store(true, Ordering::SeqCst);
        self.board.stop();
        self.watcher.unpark();
    }

    fn should_stop(&self, thread: &RaceThread, iteration: u64) -> bool {
        if self.halt.load(Ordering::SeqCst) {
            return true;
        }
        match thread.repeat {
            Repeat::Times(n) => iteration >= n,
            Repeat::UntilDeadline => false,
            Repeat::WhileOthersRun => self.counted_left.load(Ordering::SeqCst) == 0,
        }
    }
}

pub fn run_race(world: &Arc<World>, race: &Race, met: Arc<Met>) -> RaceReport {
    let seed = choose_seed(race);
    let board = match world.board() {
        Ok(b) => b,
        Err(CaseError(message)) => {
            let failure = Some(RaceFailure::Error { thread: "(race)".into(), message });
            return RaceReport { failure, summary: String::new(), seed };
        }
    };
    seed_thread(seed, usize::MAX);
    board.reset(random() as u32);
    install_kick_handler();
    let n = race.threads.len();
    let shared = Arc::new(Shared {
        world: world.clone(),
        race: race.clone(),
        board,
        met,
        halt: AtomicBool::new(false),
        counted_left: AtomicUsize::new(race.threads.iter().filter(|t| t.repeat.ends_race()).count()),
        failure: Mutex::new(None),
        iterations: (0..n).map(|_| AtomicU64::new(0)).collect(),
        pthreads: (0..n).map(|_| AtomicU64::new(0)).collect(),
        tids: (0..n).map(|_| AtomicU64::new(0)).collect(),
        running: (0..n).map(|_| AtomicBool::new(true)).collect(),
        current: (0..n).map(|_| AtomicUsize::new(0)).collect(),
        watcher: std::thread::current(),
    });
    world.set_racing(true);
    let start = Instant::now();
    let mut handles = Vec::new();
    for i in 0..n {
        let mine = shared.clone();
        // Threads are not scoped: one stuck in the kernel must not keep the race from reporting.
        let spawned = std::thread::Builder::new().name(format!("race-{}", race.threads[i].name)).spawn(move || {
            seed_thread(seed, i);
            // SAFETY: pthread_self has no preconditions.
            mine.pthreads[i].store(unsafe { libc::pthread_self() } as u64, Ordering::SeqCst);
            // SAFETY: gettid has no preconditions.
            mine.tids[i].store(unsafe { libc::gettid() } as u64, Ordering::SeqCst);
            let thread = &mine.race.threads[i];
            run_thread(&mine, i, thread);
            mine.running[i].store(false, Ordering::SeqCst);
            if thread.repeat.ends_race() && mine.counted_left.fetch_sub(1, Ordering::SeqCst) == 1 {
                mine.board.stop();
            }
            mine.watcher.unpark();
        });
        match spawned {
            Ok(h) => handles.push(h),
            Err(e) => {
                shared.running[i].store(false, Ordering::SeqCst);
                shared
                    .fail(RaceFailure::Error { thread: race.threads[i].name.clone(), message: format!("spawn: {e}") });
            }
        }
    }
    let all_stopped = watch(&shared, start);
    world.set_racing(false);
    let elapsed = start.elapsed();
    if all_stopped {
        for h in handles {
            let _ = h.join();
        }
    }
    let failure = shared.failure.lock().unwrap_or_else(|p| p.into_inner()).take();
    let summary = summarize(&shared, seed, elapsed);
    RaceReport { failure, summary, seed }
}

fn run_thread(shared: &Shared, index: usize, thread: &RaceThread) {
    let board_step: Vec<bool> = thread.steps.iter().map(|step| is_board_step(shared, step)).collect();
    let mut hot: Vec<HotStep> = thread.steps.iter().map(|_| HotStep::default()).collect();
    let mut world_seen = shared.world.version();
    let mut iteration = 0;
    while !shared.should_stop(thread, iteration) {
        for (s, step) in thread.steps.iter().enumerate() {
            if shared.halt.load(Ordering::SeqCst) {
                return;
            }
            shared.current[index].store(s, Ordering::Relaxed);
            pause();
            let world_now = shared.world.version();
            let is_hot = board_step[s];
            if world_now != world_seen || !is_hot {
                // Objects looked up earlier are let go before anything else happens: a step that
                // closed or unmapped one must find it closed, in this thread and in the others.
                hot.iter_mut().for_each(|h| h.targets = None);
                world_seen = world_now;
            }
            let judged = if is_hot {
                perform_board_step(shared, step, &mut hot[s])
            } else {
                perform_and_judge(&shared.world, step, &*shared.met).map(drop)
            };
            match judged {
                Ok(()) => {}
                Err(Judged::Error(message)) => {
                    shared.fail(RaceFailure::Error { thread: thread.name.clone(), message });
                    return;
                }
                Err(Judged::Mismatch { mismatch, call }) => {
                    shared.fail(RaceFailure::Step {
                        thread: thread.name.clone(),
                        iteration,
                        step: step.clone(),
                        mismatch,
                        call,
                    });
                    return;
                }
            }
        }
        iteration += 1;
        shared.iterations[index].store(iteration, Ordering::Relaxed);
    }
}

/// A board step of a race thread: the objects it uses, kept while the World is unchanged and only
/// other board steps run in between, and the judgement of its `Clean` outcome, made once, since
/// it is the same observation every time.
#[derive(Default)]
struct HotStep {
    targets: Option<BoardTargets>,
    clean: Option<Result<(), Mismatch>>,
}

fn is_board_step(shared: &Shared, step: &Step) -> bool {
    is_board_op(&step.op) && !expects_signal(step, &*shared.met)
}

/// Performs a board step and judges it exactly as `perform_and_judge` would, without building the
/// observation of a clean outcome.
fn perform_board_step(shared: &Shared, step: &Step, hot: &mut HotStep) -> Result<(), Judged> {
    let error = |CaseError(message)| Judged::Error(message);
    let targets = match hot.targets.take() {
        Some(t) => t,
        None => BoardTargets::of(&shared.world, &step.op).map_err(error)?,
    };
    let outcome = perform_board(&targets, &step.op).map_err(error)?;
    if BoardTargets::reusable(&step.op) {
        hot.targets = Some(targets);
    }
    let observed = match outcome {
        BoardStep::Clean => {
            let verdict = hot.clean.get_or_insert_with(|| judge_step(step, &*shared.met, &clean_observation(&step.op)));
            return verdict.clone().map_err(|mismatch| Judged::Mismatch {
                mismatch,
                call: clean_observation(&step.op).call.into_owned(),
            });
        }
        BoardStep::Observed(o) => o,
    };
    judge_step(step, &*shared.met, &observed)
        .map_err(|mismatch| Judged::Mismatch { mismatch, call: observed.call.into_owned() })
}

/// A short random pause between steps, so that a seed gives a different schedule from another.
/// Not PAUSE (spin_loop): under TCG that instruction leaves the translated code, which costs far
/// more than the steps it separates.
fn pause() {
    let mut n = pick(256);
    while std::hint::black_box(n) > 0 {
        n -= 1;
    }
}

/// Ends the race at its duration; reports and kicks threads that do not stop within the grace.
/// Returns false if a thread would not stop even when kicked (it is stuck in the kernel).
fn watch(shared: &Shared, start: Instant) -> bool {
    let running = |i: usize| shared.running[i].load(Ordering::SeqCst);
    let n = shared.race.threads.len();
    let ended_at = loop {
        if (0..n).all(|i| !running(i)) {
            return true;
        }
        if shared.halt.load(Ordering::SeqCst) || shared.counted_left.load(Ordering::SeqCst) == 0 {
            break Instant::now();
        }
        let left = shared.race.duration.saturating_sub(start.elapsed());
        if left.is_zero() {
            shared.end();
            break Instant::now();
        }
        std::thread::park_timeout(left);
    };
    let mut last_kick: Option<Instant> = None;
    let grace = grace();
    while (0..n).any(running) {
        let late = now_since(ended_at);
        if late >= grace + GIVE_UP {
            return false;
        }
        if late >= grace && last_kick.is_none_or(|k| k.elapsed() >= KICK_EVERY) {
            for (i, thread) in shared.race.threads.iter().enumerate().filter(|(i, _)| running(*i)) {
                if let Some(step) = thread.steps.get(shared.current[i].load(Ordering::SeqCst)) {
                    let guest = if last_kick.is_none() {
                        super::hang::whereabouts(
                            &shared.world,
                            &shared.board,
                            step,
                            shared.tids[i].load(Ordering::SeqCst),
                        )
                    } else {
                        None
                    };
                    shared.fail(RaceFailure::Hang { thread: thread.name.clone(), step: step.clone(), guest });
                }
                kick(shared.pthreads[i].load(Ordering::SeqCst));
            }
            last_kick = Some(Instant::now());
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    true
}

fn now_since(t: Instant) -> Duration {
    Instant::now().saturating_duration_since(t)
}

extern "C" fn on_kick(_: libc::c_int) {}

/// SIGUSR1 interrupts KVM_RUN (and other waits) without restarting them.
fn install_kick_handler() {
    // SAFETY: a zeroed sigaction with a handler that does nothing is valid; sigaction only
    // installs it.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = on_kick as extern "C" fn(libc::c_int) as usize;
        libc::sigemptyset(&mut sa.sa_mask);
        libc::sigaction(libc::SIGUSR1, &sa, std::ptr::null_mut());
    }
}

fn kick(pthread: u64) {
    if pthread != 0 {
        // SAFETY: the id is of a thread of this scope that has not been joined (it is running).
        unsafe { libc::pthread_kill(pthread as libc::pthread_t, libc::SIGUSR1) };
    }
}

fn summarize(shared: &Shared, seed: u64, elapsed: Duration) -> String {
    let race = &shared.race;
    let c = &shared.board.counts;
    let get = |a: &AtomicU64| a.load(Ordering::SeqCst);
    let mut parts = vec![format!("seed {seed:#x}"), format!("{:.2} s", elapsed.as_secs_f64())];
    let threads: Vec<String> = race
        .threads
        .iter()
        .enumerate()
        .map(|(i, t)| format!("{} x{}", t.name, shared.iterations[i].load(Ordering::SeqCst)))
        .collect();
    parts.push(format!("threads {}", threads.join(", ")));
    let counters = [
        ("punches", get(&c.punches)),
        ("punches while a vCPU ran", get(&c.punches_while_guest_ran)),
        ("memslot changes while a vCPU ran", get(&c.slot_changes_while_guest_ran)),
        ("host page reads", get(&c.host_reads)),
        ("host reads of a hole", get(&c.host_zero_reads)),
        ("host saw a page freshly punched", get(&c.host_fresh_zero)),
        ("guest writes checked in the file", get(&c.guest_writes_checked)),
    ];
    parts.extend(counters.iter().filter(|(_, v)| *v > 0).map(|(k, v)| format!("{v} {k}")));
    for (vcpu, totals) in shared.board.guest_totals() {
        let named: Vec<String> =
            GUEST_COUNTERS.iter().zip(totals).filter(|(_, v)| *v > 0).map(|(k, v)| format!("{v} {k}")).collect();
        if !named.is_empty() {
            parts.push(format!("vCPU {vcpu}: {}", named.join(", ")));
        }
    }
    let exits = shared.board.exit_counts();
    if !exits.is_empty() {
        let e: Vec<String> = exits.iter().map(|(k, v)| format!("{v} {k}")).collect();
        parts.push(format!("guest exits {}", e.join(", ")));
    }
    parts.join("; ")
}

//! (b) The race engine's punch-while-the-guest-touches cycle rate against a minimal direct loop:
//! one vCPU reads 16 tracked pages in a loop while one host thread punches a page, rewrites it
//! through the mapping and publishes it, as fast as it can.

use super::direct::DirectVm;
use super::report::{Comparison, Target};
use crate::exec::board::{BOARD_GPA, BOARD_SIZE, Board};
use crate::exec::interp::perform;
use crate::exec::race::run_race;
use crate::exec::world::{CODE_GPA, World};
use crate::guest::{BoardPages, Program, run_program};
use crate::kvm::gmem::{FALLOC_FL_KEEP_SIZE, FALLOC_FL_PUNCH_HOLE};
use crate::probe::Probe;
use crate::suite::step::Op;
use crate::suite::{Source, load::load_text};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

const GPA: u64 = 0x10_0000;
const PAGES: u64 = 16;
const SIZE: u64 = PAGES * 4096;

fn engine_case(duration: Duration) -> String {
    format!(
        "
suite: bench
summary: punch while the guest touches
cases:
  - name: race
    ref: gmemconf bench
    steps:
      - vm: {{}}
      - gmem: {{ as: g, size: 64K, flags: [mmap, init_shared] }}
      - mmap: {{ as: m, fd: g, len: 64K }}
      - memslot: {{ slot: 1, gpa: 0x100000, size: 64K, gmem: g, userspace: m }}
      - vcpu: {{ as: cpu0, id: 0 }}
      - race:
          duration: {}ms
          threads:
            vcpu0:
              repeat: while_others_run
              steps:
                - guest: {{ vcpu: cpu0, program: check_loop, gpa: 0x100000, pages: 16 }}
            puncher:
              repeat: 1000000000
              steps:
                - punch_cycle: {{ gmem: g, map: m, pages: 16 }}
",
        duration.as_millis()
    )
}

/// The order of the rounds: engine (E) and direct (D) in ABBA pairs, so that a load that grows or
/// shrinks steadily over the run (other work, the emulator warming up) weighs on both sides alike.
const ORDER: [bool; 8] = [true, false, false, true, true, false, false, true];

/// An unmeasured round of each side before the measured ones. The first round of the run pays
/// for what nothing has touched yet (under TCG: the translation of the kernel's nested-KVM and
/// guest_memfd paths, the first faults of fresh memory), which ABBA does not cancel: it is a step,
/// not a slope, and it would fall on the engine's first round alone (measured: 15-40% below that
/// side's other rounds, in every run).
const WARM_UP: Duration = Duration::from_secs(1);

pub fn compare(duration: Duration, probe: &Probe) -> Result<Comparison, String> {
    let per_side = ORDER.iter().filter(|e| **e).count() as u32;
    let probe = Arc::new(probe.clone());
    engine_rate(WARM_UP, &probe)?;
    direct_rate(WARM_UP)?;
    let (mut engine, mut direct) = (0.0, 0.0);
    for is_engine in ORDER {
        if is_engine {
            engine += engine_rate(duration / per_side, &probe)? / f64::from(per_side);
        } else {
            direct += direct_rate(duration / per_side)? / f64::from(per_side);
        }
    }
    Ok(Comparison {
        what: "(b) punch+rewrite cycles while a vCPU reads",
        unit: "cycles/s",
        gmemconf: engine,
        direct,
        target: Target::RateAtLeast(0.90),
    })
}

fn engine_rate(duration: Duration, probe: &Arc<Probe>) -> Result<f64, String> {
    let suite = load_text(&engine_case(duration), &Source::Embedded("bench")).map_err(|e| format!("{e:?}"))?;
    let case = suite.cases.first().ok_or("the bench suite has no case")?;
    let world = Arc::new(World::new().map_err(|e| e.to_string())?);
    for step in &case.steps {
        match &step.op {
            Op::Race(race) => {
                let met = probe.clone();
                let report =
                    run_race(&world, race, Arc::new(move |r, vm_types: &[u64]| met.meets_on(r, vm_types).is_ok()));
                if report.failure.is_some() {
                    return Err(format!("the benchmark race failed: {}", report.summary));
                }
                let punches = world.board().map_err(|e| e.0)?.counts.punches.load(Ordering::SeqCst);
                // The puncher runs for the race's duration, as the direct loop runs for its own;
                // the time the vCPU then takes to notice the end and leave the guest is not
                // punching time on either side.
                return Ok(punches as f64 / race.duration.as_secs_f64());
            }
            op => {
                let obs = perform(&world, op).map_err(|e| e.0)?;
                if !obs.is_ok() {
                    return Err(format!("benchmark setup step failed: {}", obs.call));
                }
            }
        }
    }
    Err("the benchmark case has no race".into())
}

/// The same work with nothing of the engine: two threads, the board, the syscalls.
fn direct_rate(duration: Duration) -> Result<f64, String> {
    let mut d = DirectVm::new(GPA, SIZE)?;
    let board = Board::new()?;
    board.reset(7);
    d.add_slot(1, BOARD_GPA, BOARD_SIZE as u64, board.host_addr())?;
    let mut vcpu = d.vcpu()?;
    let (code_ptr, host_ptr, gmem) = (d.code_ptr() as usize, d.host.ptr as usize, d.gmem.as_raw_fd());
    let program = Program::CheckLoop(BoardPages { gpa: GPA, first: 0, pages: PAGES, iterations: 0 });
    let cycles = std::thread::scope(|scope| {
        let guest = scope.spawn(|| {
            // SAFETY: the code mapping is ours and mapped at CODE_GPA for this vCPU.
            unsafe { run_program(&mut vcpu, code_ptr as *mut u8, CODE_GPA, 0, &program) }
        });
        let start = Instant::now();
        let mut cycles = 0u64;
        let mut x = 0x2545_f491_4f6c_dd1du64;
        while start.elapsed() < duration {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let page = x % PAGES;
            // SAFETY: plain syscall on our guest_memfd.
            let rc = unsafe {
                libc::fallocate(
                    gmem.as_raw_fd(),
                    FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
                    (page * 4096) as i64,
                    4096,
                )
            };
            if rc != 0 {
                break;
            }
            let generation = board.next_gen(page);
            // SAFETY: the page is inside the host mapping.
            unsafe { Board::write_page((host_ptr + (page * 4096) as usize) as *mut u8, board.tag(page), generation) };
            board.publish(page, generation);
            cycles += 1;
        }
        let rate = cycles as f64 / start.elapsed().as_secs_f64();
        board.stop();
        let report = guest.join();
        match report {
            Ok(Ok(r)) if !r.violation => Ok(rate),
            other => Err(format!("the direct loop's guest failed: {other:?}")),
        }
    })?;
    drop(vcpu);
    Ok(cycles)
}

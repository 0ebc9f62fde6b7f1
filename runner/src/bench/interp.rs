//! (a) The step interpreter against a direct Rust loop making the same calls: create a VM and a
//! guest_memfd, bind it, run a guest to HLT, tear everything down.

use super::direct::DirectVm;
use super::report::{Comparison, Target};
use crate::exec::interp::run_case;
use crate::exec::protocol::CaseResult;
use crate::exec::world::CODE_GPA;
use crate::guest::{Program, run_program};
use crate::kvm::GuestExit;
use crate::suite::{Case, Source, load::load_text};
use std::time::{Duration, Instant};

const GPA: u64 = 0x10_0000;
const SIZE: u64 = 2 << 20;

const CYCLE: &str = "
suite: bench
summary: one VM lifetime
cases:
  - name: cycle
    ref: gmemconf bench
    steps:
      - vm: {}
      - gmem: { as: g, size: 2M, flags: [mmap, init_shared] }
      - mmap: { as: m, fd: g, len: 2M }
      - memslot: { slot: 1, gpa: 0x100000, size: 2M, gmem: g, userspace: m }
      - vcpu: {}
      - guest: { program: write, gpa: 0x100000, byte: 0x5a }
";

pub fn compare(iterations: u32) -> Result<Comparison, String> {
    let suite = load_text(CYCLE, &Source::Embedded("bench")).map_err(|e| format!("{e:?}"))?;
    let case = suite.cases.first().ok_or("the bench suite has no case")?;
    let probe = crate::probe::gather();
    // Warm both paths up, then alternate them so that drift in the machine hits both alike.
    interpreted(case, &probe)?;
    direct()?;
    let (mut t_interp, mut t_direct) = (Duration::ZERO, Duration::ZERO);
    for _ in 0..iterations {
        t_interp += timed(|| interpreted(case, &probe))?;
        t_direct += timed(direct)?;
    }
    let per = |t: Duration| t.as_secs_f64() * 1e3 / f64::from(iterations.max(1));
    Ok(Comparison {
        what: "(a) VM + gmem + bind + guest to HLT, per cycle",
        unit: "ms",
        gmemconf: per(t_interp),
        direct: per(t_direct),
        target: Target::CostAtMost(1.10),
    })
}

fn timed(f: impl FnOnce() -> Result<(), String>) -> Result<Duration, String> {
    let start = Instant::now();
    f()?;
    Ok(start.elapsed())
}

fn interpreted(case: &Case, probe: &crate::probe::Probe) -> Result<(), String> {
    match run_case(case, probe, &mut |_| {}, &mut |_| {}) {
        CaseResult::Pass => Ok(()),
        other => Err(format!("the interpreted cycle did not pass: {other:?}")),
    }
}

/// The same system calls, written out by hand.
fn direct() -> Result<(), String> {
    let mut d = DirectVm::new(GPA, SIZE)?;
    let mut vcpu = d.vcpu()?;
    // SAFETY: the code pages are CODE_SIZE bytes of the DirectVm's own memory, mapped at CODE_GPA.
    let report = unsafe { run_program(&mut vcpu, d.code_ptr(), CODE_GPA, 0, &Program::Write { gpa: GPA, byte: 0x5a }) }
        .map_err(|x| x.to_string())?;
    if report.last_exit != GuestExit::Hlt || !report.done {
        return Err(format!("the direct guest did not halt: {:?}", report.last_exit));
    }
    Ok(())
}

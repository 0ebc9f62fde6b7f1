//! The step interpreter: performs a case's steps in order and judges each against its expectation.

use super::observe::{Mismatch, ObsResult, Observed, judge};
use super::ops_proc::Stop;
use super::protocol::{CaseResult, StepFailure};
use super::race::{Met, RaceFailure, run_race};
use super::world::{CaseError, World};
use super::{ops_attr as attr, ops_file as file, ops_kvm as kvm, ops_mem as mem, ops_race as race_ops};
use crate::probe::Probe;
use crate::suite::expect::ResultExp;
use crate::suite::step::{Op, Step};
use crate::suite::{Case, Requirement};
use nix::sys::wait::{WaitStatus, waitpid};
use nix::unistd::{ForkResult, fork};
use std::sync::Arc;

/// Runs every step of `case`; `on_step` hears of each step before it runs (1-based index), and
/// `on_note` of what a step has to say beyond its verdict (a race's interleavings).
pub fn run_case(
    case: &Case,
    probe: &Probe,
    on_step: &mut dyn FnMut(usize),
    on_note: &mut dyn FnMut(String),
) -> CaseResult {
    let world = match World::new() {
        Ok(w) => Arc::new(w),
        Err(e) => {
            return CaseResult::Error { step: None, message: e.to_string() };
        }
    };
    let shared_probe = Arc::new(probe.clone());
    // A requirement in an `if:` is judged on the VM types the step acts on (see suite::load).
    let met: Arc<Met> = Arc::new(move |r: &Requirement, vm_types: &[u64]| shared_probe.meets_on(r, vm_types).is_ok());
    for (i, step) in case.steps.iter().enumerate() {
        on_step(i + 1);
        let failure = |expected: String, actual: String, call: String, location: String| {
            CaseResult::Fail(StepFailure {
                step: i + 1,
                of: case.steps.len(),
                op: step.op.name().to_string(),
                location,
                expected,
                actual,
                call,
                contract: step.reference.clone().unwrap_or_else(|| case.reference.clone()),
            })
        };
        if let Op::Race(race) = &step.op {
            let report = run_race(&world, race, met.clone());
            on_note(format!("race at {}: {}", location(case, step), report.summary));
            match report.failure {
                None => continue,
                Some(RaceFailure::Step { thread, iteration, step: inner, mismatch, call }) => {
                    let call = format!("thread `{thread}`, iteration {iteration}: {call} (seed {:#x})", report.seed);
                    return failure(mismatch.expected, mismatch.actual, call, location(case, &inner));
                }
                Some(RaceFailure::Hang { thread, step: inner, guest }) => {
                    let mut actual = format!(
                        "thread `{thread}` was still in its step ({}) {:.1} s after the race ended; kicked with SIGUSR1",
                        inner.text,
                        super::race::grace().as_secs_f64()
                    );
                    if let Some(guest) = guest {
                        actual.push_str(&format!("; {guest}"));
                    }
                    let call = format!("race (seed {:#x})", report.seed);
                    return failure(
                        "every thread stops within the grace period (a vCPU leaves KVM_RUN when asked)".into(),
                        actual,
                        call,
                        location(case, &inner),
                    );
                }
                Some(RaceFailure::Error { thread, message }) => {
                    return CaseResult::Error {
                        step: Some(i + 1),
                        message: format!("{message} (thread `{thread}` of the race at {})", location(case, step)),
                    };
                }
            }
        }
        if matches!(step.op, Op::Fork(_) | Op::Repeat(_)) {
            match super::ops_proc::run_step(&world, step, &*met, &case.source.to_string(), &mut |_| {}) {
                Ok(()) => continue,
                Err(Stop::Fail(f)) => {
                    let f = *f;
                    return CaseResult::Fail(StepFailure {
                        step: i + 1,
                        of: case.steps.len(),
                        op: f.path,
                        location: f.location,
                        expected: f.expected,
                        actual: f.actual,
                        call: f.call,
                        contract: f
                            .contract
                            .or_else(|| step.reference.clone())
                            .unwrap_or_else(|| case.reference.clone()),
                    });
                }
                Err(Stop::Error(message)) => return CaseResult::Error { step: Some(i + 1), message },
            }
        }
        let observed = match perform_and_judge(&world, step, &*met) {
            Ok(o) => o,
            Err(Judged::Error(message)) => {
                return CaseResult::Error {
                    step: Some(i + 1),
                    message: format!("{} (at {})", message, location(case, step)),
                };
            }
            Err(Judged::Mismatch { mismatch, call }) => {
                return failure(mismatch.expected, mismatch.actual, call, location(case, step));
            }
        };
        if let Op::MemGrowth { since } = &step.op {
            let grown = super::ops_memstat::summary(&observed);
            on_note(format!("memory growth since `{since}` at {}: {grown}", location(case, step)));
        }
    }
    CaseResult::Pass
}

/// Why a plain step did not meet its expectation.
pub enum Judged {
    Mismatch {
        mismatch: Mismatch,
        call: String,
    },
    /// gmemconf could not carry the step out (not a kernel verdict).
    Error(String),
}

/// Performs one plain step (in a forked copy when it expects a signal) and judges what it
/// observed against its expectation, resolved on this target.
pub fn perform_and_judge(w: &World, step: &Step, met: &Met) -> Result<Observed, Judged> {
    let observed = if expects_signal(step, met) { perform_in_fork(w, &step.op) } else { perform(w, &step.op) }
        .map_err(|CaseError(message)| Judged::Error(message))?;
    match judge_step(step, met, &observed) {
        Ok(()) => Ok(observed),
        Err(mismatch) => Err(Judged::Mismatch { mismatch, call: observed.call.into_owned() }),
    }
}

pub fn expects_signal(step: &Step, met: &Met) -> bool {
    matches!(step.expect.resolve(&|r| met(r, &step.vm_types)).result, ResultExp::Signal(_))
}

/// Judges what a step observed against its expectation, resolved on this target.
pub fn judge_step(step: &Step, met: &Met, observed: &Observed) -> Result<(), Mismatch> {
    let expected = step.expect.resolve(&|r| met(r, &step.vm_types));
    judge(expected, step.op.implied_fields(), step.op.invariant_fields(), observed, step.op.fields())
}

fn location(case: &Case, step: &Step) -> String {
    format!("{}:{}", case.source, step.loc)
}

pub fn perform(w: &World, op: &Op) -> Result<Observed, CaseError> {
    match op {
        Op::Vm { name, vm_type } => Ok(kvm::vm(w, name, *vm_type)),
        Op::Vcpu { name, vm, id } => kvm::vcpu(w, name, vm, *id),
        Op::CheckExtension { on, cap } => kvm::check_extension(w, on, *cap),
        Op::Gmem { name, vm, size, flags, reserved } => kvm::gmem(w, name, vm, *size, *flags, *reserved),
        Op::Memslot { vm, api, slot, flags, gpa, size, userspace, gmem, offset } => {
            kvm::memslot(w, vm, *api, *slot, *flags, *gpa, *size, userspace, gmem.as_ref(), *offset)
        }
        Op::Guest { vcpu, program } => kvm::guest(w, vcpu, program),
        Op::Open { name, path, write } => file::open(w, name, path, *write),
        Op::Memfd { name, size } => file::memfd(w, name, *size),
        Op::Tmpfile { name, size } => file::tmpfile(w, name, *size),
        Op::Close { fd } => file::close(w, fd),
        Op::Read { fd, len } => file::read(w, fd, *len, None),
        Op::Pread { fd, len, offset } => file::read(w, fd, *len, Some(*offset)),
        Op::Write { fd, len, byte } => file::write(w, fd, *len, *byte, None),
        Op::Pwrite { fd, len, offset, byte } => file::write(w, fd, *len, *byte, Some(*offset)),
        Op::Lseek { fd, offset, whence } => file::lseek(w, fd, *offset, *whence),
        Op::Ftruncate { fd, size } => file::ftruncate(w, fd, *size),
        Op::Fchmod { fd, mode } => file::fchmod(w, fd, *mode),
        Op::Fsync { fd } => file::fsync(w, fd, false),
        Op::Fdatasync { fd } => file::fsync(w, fd, true),
        Op::AddSeals { fd, seals } => file::add_seals(w, fd, *seals),
        Op::GetSeals { fd } => file::get_seals(w, fd),
        Op::Ioctl { fd, request, arg } => file::ioctl(w, fd, *request, *arg),
        Op::Splice { fd, dir, len, offset } => file::splice(w, fd, *dir, *len, *offset),
        Op::CopyFileRange { from, to, len, offset_in, offset_out, flags } => {
            file::copy_file_range(w, from, to, *len, *offset_in, *offset_out, *flags)
        }
        Op::Sendfile { from, to, len, offset } => file::sendfile(w, from, to, *len, *offset),
        Op::Fcntl { fd, cmd, arg } => file::fcntl(w, fd, *cmd, *arg),
        Op::Fchown { fd, uid, gid } => file::fchown(w, fd, *uid, *gid),
        Op::Futimens { fd } => file::futimens(w, fd),
        Op::Fallocate { fd, mode, offset, len } => file::fallocate(w, fd, *mode, *offset, *len),
        Op::Fstat { fd } => file::fstat(w, fd),
        Op::Mmap { name, fd, len, offset, prot, flags } => {
            mem::mmap(w, name, fd.as_ref(), *len, *offset, *prot, *flags)
        }
        Op::Munmap { map } => mem::munmap(w, map),
        Op::Mprotect { map, offset, len, prot } => mem::mprotect(w, map, *offset, *len, *prot),
        Op::Madvise { map, offset, len, advice } => mem::madvise(w, map, *offset, *len, *advice),
        Op::MemWrite { map, offset, len, byte } => mem::mem_write(w, map, *offset, *len, *byte),
        Op::MemRead { map, offset, len } => mem::mem_read(w, map, *offset, *len),
        Op::SetAttributes { vm, gpa, size, attributes, flags } => {
            attr::set_attributes(w, vm, *gpa, *size, *attributes, *flags)
        }
        Op::PreFault { vcpu, gpa, size, flags } => attr::pre_fault(w, vcpu, *gpa, *size, *flags),
        Op::EnableCap { vm, cap, flags, args } => attr::enable_cap(w, vm, *cap, *flags, *args),
        Op::PunchCycle { .. } | Op::HostCheck { .. } | Op::PunchVerify { .. } => {
            Ok(race_ops::perform_board(&race_ops::BoardTargets::of(w, op)?, op)?.into_observed(op))
        }
        Op::Sleep { duration } => {
            std::thread::sleep(*duration);
            Ok(Observed::new(ObsResult::Ok(0), format!("sleep {} ms", duration.as_millis())))
        }
        Op::MemSnapshot { name } => super::ops_memstat::mem_snapshot(w, name),
        Op::MemGrowth { since } => super::ops_memstat::mem_growth(w, since),
        Op::Race(_) => Err(CaseError("a race runs only as a step of its own, not inside another step".into())),
        Op::Fork(_) | Op::Repeat(_) => {
            Err(CaseError(format!("`{}` runs only as a step of a case or of another fork or repeat", op.name())))
        }
        Op::Sysrq { key } => super::ops_sysrq::sysrq(*key),
    }
}

/// Performs a step that is expected to die of a signal in a forked copy of this (single-threaded)
/// case process, so that the signal ends only the copy. Writes through shared mappings remain;
/// objects the step would make do not.
fn perform_in_fork(w: &World, op: &Op) -> Result<Observed, CaseError> {
    // SAFETY: the case process is single-threaded here; the child only performs the step and
    // leaves with _exit, running no destructors and touching no lock another thread could hold.
    match unsafe { fork() } {
        Err(e) => Err(CaseError(format!("fork for a signal-expecting step: {e}"))),
        Ok(ForkResult::Child) => {
            let code = match perform(w, op).map(|o| o.result) {
                Ok(ObsResult::Ok(_)) => 0,
                Ok(ObsResult::Errno(e)) => ERRNO_EXIT_BASE + e as i32,
                _ => 2,
            };
            // SAFETY: _exit is async-signal-safe and ends the child at once.
            unsafe { libc::_exit(code) }
        }
        Ok(ForkResult::Parent { child }) => {
            let call = format!("{} (in a forked copy of the case process)", op.name());
            match waitpid(child, None) {
                Ok(WaitStatus::Signaled(_, sig, _)) => Ok(Observed::new(ObsResult::Signal(sig), call)),
                Ok(WaitStatus::Exited(_, 0)) => Ok(Observed::new(ObsResult::Ok(0), call)),
                Ok(WaitStatus::Exited(_, code)) if code >= ERRNO_EXIT_BASE => {
                    Ok(Observed::new(ObsResult::Errno(nix::errno::Errno::from_raw(code - ERRNO_EXIT_BASE)), call))
                }
                Ok(other) => Err(CaseError(format!("forked step ended oddly: {other:?}"))),
                Err(e) => Err(CaseError(format!("waitpid: {e}"))),
            }
        }
    }
}

/// A forked step that fails with an errno exits with this plus the errno.
const ERRNO_EXIT_BASE: i32 = 16;

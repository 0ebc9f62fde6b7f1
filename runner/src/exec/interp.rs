//! The step interpreter: performs a case's steps in order and judges each against its expectation.

use super::observe::{ObsResult, Observed, judge};
use super::protocol::{CaseResult, StepFailure};
use super::world::{CaseError, World};
use super::{ops_attr as attr, ops_file as file, ops_kvm as kvm, ops_mem as mem};
use crate::probe::Probe;
use crate::suite::Case;
use crate::suite::expect::ResultExp;
use crate::suite::step::{Op, Step};
use nix::sys::wait::{WaitStatus, waitpid};
use nix::unistd::{ForkResult, fork};

/// Runs every step of `case`; `on_step` hears of each step before it runs (1-based index).
pub fn run_case(case: &Case, probe: &Probe, on_step: &mut dyn FnMut(usize)) -> CaseResult {
    let mut world = match World::new() {
        Ok(w) => w,
        Err(e) => {
            return CaseResult::Error { step: None, message: e.to_string() };
        }
    };
    for (i, step) in case.steps.iter().enumerate() {
        on_step(i + 1);
        let met = |r: &crate::suite::Requirement| probe.meets_on(r, &step.vm_types).is_ok();
        let expected = step.expect.resolve(&met);
        let observed = if matches!(expected.result, ResultExp::Signal(_)) {
            perform_in_fork(&mut world, &step.op)
        } else {
            perform(&mut world, &step.op)
        };
        let observed = match observed {
            Ok(o) => o,
            Err(CaseError(message)) => {
                return CaseResult::Error {
                    step: Some(i + 1),
                    message: format!("{} (at {})", message, location(case, step)),
                };
            }
        };
        if let Err(m) = judge(expected, &step.op.implied_fields(), &observed, step.op.fields()) {
            return CaseResult::Fail(StepFailure {
                step: i + 1,
                of: case.steps.len(),
                op: step.op.name().to_string(),
                location: location(case, step),
                expected: m.expected,
                actual: m.actual,
                call: observed.call,
                contract: step.reference.clone().unwrap_or_else(|| case.reference.clone()),
            });
        }
    }
    CaseResult::Pass
}

fn location(case: &Case, step: &Step) -> String {
    format!("{}:{}", case.source, step.loc)
}

pub fn perform(w: &mut World, op: &Op) -> Result<Observed, CaseError> {
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
    }
}

/// Performs a step that is expected to die of a signal in a forked copy of this (single-threaded)
/// case process, so that the signal ends only the copy. Writes through shared mappings remain;
/// objects the step would make do not.
fn perform_in_fork(w: &mut World, op: &Op) -> Result<Observed, CaseError> {
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

//! Runs a guest program on a vCPU until it halts or leaves for any other reason.

use super::program::Program;
use super::protocol::*;
use crate::kvm::{GuestExit, KvmError, Vcpu, uapi};

/// What a guest program reported and how its run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestReport {
    /// Values reported on PORT_VALUE, in order.
    pub values: Vec<u64>,
    /// The program reached its end (PORT_DONE) before halting.
    pub done: bool,
    /// `verify`: first differing byte (gpa, byte found).
    pub mismatch: Option<(u64, u8)>,
    /// The exit that ended the run: `Hlt` for a program that finished.
    pub last_exit: GuestExit,
    /// How many KVM_EXIT_HYPERCALL exits the run loop answered.
    pub hypercalls: u32,
    /// `map_gpa`: what its hypercall returned to the guest (RAX as the guest reported it).
    pub hypercall_ret: Option<u64>,
    /// A board program found a page that breaks the race board's rules (details on the board).
    pub violation: bool,
    /// Where the guest was when an exit no program asks for (MMIO, shutdown, ...) ended the run.
    pub stopped: Option<Stopped>,
}

/// The guest's RIP at an exit the program never asks for, and what the code page held there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stopped {
    pub rip: u64,
    /// The offset of `rip` in the program, when it lies within it.
    pub in_program: Option<u64>,
    /// The host's view of the code page still holds the program as it was copied in: if the
    /// guest nevertheless executed something else, it saw another page at the code gpa.
    pub code_intact: bool,
    /// What KVM said of an internal error.
    pub kvm_said: Option<String>,
}

impl std::fmt::Display for Stopped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "guest rip {:#x}", self.rip)?;
        match self.in_program {
            Some(off) => write!(f, " (byte {off} of the program")?,
            None => write!(f, " (outside the program")?,
        }
        if self.code_intact {
            write!(f, "; the host's copy of the program is intact)")?;
        } else {
            write!(f, "; the host's copy of the program has changed)")?;
        }
        match &self.kvm_said {
            Some(said) => write!(f, "; {said}"),
            None => Ok(()),
        }
    }
}

/// Exits that end a program's run as it intends (or as a case may expect of the kernel).
fn expected_end(exit: &GuestExit) -> bool {
    matches!(exit, GuestExit::Hlt | GuestExit::MemoryFault { .. } | GuestExit::Errno(_))
}

/// The VMM's side of a hypercall that KVM forwards to userspace (KVM_EXIT_HYPERCALL): given the
/// hypercall number and arguments, returns what the guest's hypercall returns.
pub type HypercallAnswer<'a> = &'a mut dyn FnMut(u64, &[u64; 6]) -> u64;

#[derive(Debug)]
pub enum RunError {
    Assemble(String),
    Kvm(KvmError),
}

impl std::fmt::Display for RunError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RunError::Assemble(e) => write!(f, "cannot assemble the guest program: {e}"),
            RunError::Kvm(e) => write!(f, "cannot set up the vCPU: {e}"),
        }
    }
}

/// Exits a program may take before it is cut off: every program is straight-line or bounded.
const MAX_EXITS: usize = 100_000;

/// Copies the program into the code page (`code_host` is the host view of `code_gpa`) and runs it
/// on the vCPU whose id is `vcpu_id`; a hypercall that reaches userspace fails with -KVM_ENOSYS.
///
/// # Safety
/// `code_host` must point to at least 4 KiB of writable memory that backs `code_gpa` for this vCPU.
pub unsafe fn run_program(
    vcpu: &mut Vcpu,
    code_host: *mut u8,
    code_gpa: u64,
    vcpu_id: u64,
    program: &Program,
) -> Result<GuestReport, RunError> {
    let mut refuse = |_: u64, _: &[u64; 6]| uapi::KVM_ENOSYS.wrapping_neg();
    // SAFETY: as the caller guarantees.
    unsafe { run_program_answering(vcpu, code_host, code_gpa, vcpu_id, program, &mut refuse) }
}

/// As `run_program`, with `answer` deciding what each hypercall that reaches userspace returns
/// (as a VMM does, e.g. converting memory for KVM_HC_MAP_GPA_RANGE).
///
/// # Safety
/// As for `run_program`.
pub unsafe fn run_program_answering(
    vcpu: &mut Vcpu,
    code_host: *mut u8,
    code_gpa: u64,
    vcpu_id: u64,
    program: &Program,
    answer: HypercallAnswer,
) -> Result<GuestReport, RunError> {
    let code = program.assemble(code_gpa, vcpu_id).map_err(RunError::Assemble)?;
    if code.len() > 4096 {
        return Err(RunError::Assemble(format!("{} bytes do not fit the code page", code.len())));
    }
    // SAFETY: the caller guarantees 4 KiB of writable memory at `code_host`.
    unsafe { std::ptr::copy_nonoverlapping(code.as_ptr(), code_host, code.len()) };
    vcpu.complete_pending_io().map_err(RunError::Kvm)?;
    vcpu.enter_flat32(code_gpa).map_err(RunError::Kvm)?;
    let mut report = GuestReport {
        values: Vec::new(),
        done: false,
        mismatch: None,
        last_exit: GuestExit::Hlt,
        violation: false,
        hypercalls: 0,
        hypercall_ret: None,
        stopped: None,
    };
    let mut mismatch_gpa = None;
    for _ in 0..MAX_EXITS {
        let exit = vcpu.run_once();
        match exit {
            GuestExit::IoOut { port: PORT_VALUE, value } => report.values.push(value),
            GuestExit::IoOut { port: PORT_DONE, .. } => report.done = true,
            GuestExit::IoOut { port: PORT_VIOLATION, .. } => report.violation = true,
            GuestExit::IoOut { port: PORT_MISMATCH_GPA, value } => mismatch_gpa = Some(value),
            GuestExit::IoOut { port: PORT_MISMATCH_BYTE, value } => {
                report.mismatch = Some((mismatch_gpa.unwrap_or(0), value as u8));
            }
            GuestExit::IoOut { port: PORT_HYPERCALL_RET, value } => report.hypercall_ret = Some(value),
            GuestExit::Hypercall { nr, args } => {
                report.hypercalls += 1;
                let ret = answer(nr, &args);
                vcpu.set_hypercall_ret(ret);
            }
            other => {
                if !expected_end(&other) {
                    report.stopped = vcpu.rip().map(|rip| stopped_at(rip, &code, code_host, code_gpa));
                    if other == GuestExit::InternalError
                        && let Some(s) = report.stopped.as_mut()
                    {
                        s.kvm_said = Some(vcpu.internal_error());
                    }
                }
                report.last_exit = other;
                return Ok(report);
            }
        }
    }
    report.last_exit = GuestExit::Other(format!("more than {MAX_EXITS} port exits"));
    Ok(report)
}

fn stopped_at(rip: u64, code: &[u8], code_host: *const u8, code_gpa: u64) -> Stopped {
    let in_program = rip.checked_sub(code_gpa).filter(|off| *off < code.len() as u64);
    // SAFETY: the caller of run_program guarantees 4 KiB at `code_host`; code.len() <= 4096.
    let now = unsafe { std::slice::from_raw_parts(code_host, code.len()) };
    Stopped { rip, in_program, code_intact: now == code, kvm_said: None }
}

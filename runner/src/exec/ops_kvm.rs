//! Steps that talk to KVM: VMs, vCPUs, capabilities, guest_memfd creation, memslots, guests.

use super::board::{BOARD_GPA, BOARD_SIZE, Board};
use super::observe::{ObsResult, Observed};
use super::world::{CODE_GPA, CODE_SIZE, CaseError, CodeRegion, Mapping, Obj, VcpuObj, VmObj, World};
use crate::guest::run::RunError;
use crate::guest::{Program, run_program_answering};
use crate::kvm::uapi::{self, CreateGuestMemfd, MemoryRegion, MemoryRegion2};
use crate::kvm::{GuestExit, Vcpu};
use crate::suite::expect::FieldVal;
use crate::suite::names::{GMEM_FLAGS, MEMSLOT_FLAGS, render_size};
use crate::suite::step::{FdRef, RegionApi, Userspace};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, OnceLock};

pub fn vm(w: &World, name: &str, vm_type: u64) -> Observed {
    let call = format!("KVM_CREATE_VM {{ type: {} }}", uapi::vm_type_name(vm_type));
    match w.kvm.create_vm_raw(vm_type) {
        Ok(vm) => {
            w.insert(name, Obj::Vm(Arc::new(VmObj { vm, code: OnceLock::new(), board_slot: OnceLock::new() })));
            Observed::new(ObsResult::Ok(0), call)
        }
        Err(e) => Observed::new(ObsResult::Errno(e), call),
    }
}

/// Creates a vCPU; the first vCPU of a VM also gets the code memslot its guest programs run from.
pub fn vcpu(w: &World, name: &str, vm_name: &str, id: u64) -> Result<Observed, CaseError> {
    let vm = w.vm(vm_name)?;
    let call = format!("KVM_CREATE_VCPU {{ id: {id} }}");
    let fd = match vm.vm.try_create_vcpu(id) {
        Ok(fd) => fd,
        Err(e) => return Ok(Observed::new(ObsResult::Errno(e.errno), call)),
    };
    let code = match vm.code.get() {
        Some(c) => c.clone(),
        None => {
            let c = Arc::new(add_code_slot(&vm)?);
            let _ = vm.code.set(c.clone());
            c
        }
    };
    let vcpu =
        VcpuObj { vcpu: Mutex::new(Vcpu::new(fd)), code, id, vm: Arc::downgrade(&vm), running_stats: Mutex::new(None) };
    w.insert(name, Obj::Vcpu(Arc::new(vcpu)));
    Ok(Observed::new(ObsResult::Ok(0), call))
}

/// The slot numbers gmemconf keeps for itself: the last for guest code, the one before it for the
/// race board.
fn runtime_slot(vm: &VmObj, from_last: u32) -> u32 {
    let last = match vm.vm.check_extension(uapi::KVM_CAP_NR_MEMSLOTS) {
        Ok(n) if n > 2 => (n - 1) as u32,
        _ => 31,
    };
    last - from_last
}

fn add_slot(vm: &VmObj, slot: u32, gpa: u64, size: usize, addr: u64, what: &str) -> Result<(), String> {
    let region = MemoryRegion2 {
        slot,
        guest_phys_addr: gpa,
        memory_size: size as u64,
        userspace_addr: addr,
        ..Default::default()
    };
    // SAFETY: the code mapping lives in an Arc held by the VM and each vCPU object, the board in the
    // World; both outlive every guest run of the case.
    unsafe { vm.vm.set_memory_region2_raw(&region) }
        .map_err(|e| format!("cannot add the {what} memslot {slot} at {gpa:#x}: {e}"))
}

fn add_code_slot(vm: &VmObj) -> Result<CodeRegion, CaseError> {
    let map =
        Mapping::map(CODE_SIZE, libc::PROT_READ | libc::PROT_WRITE, libc::MAP_PRIVATE | libc::MAP_ANONYMOUS, -1, 0)
            .map_err(|e| CaseError(format!("cannot map the guest code pages: {e}")))?;
    add_slot(vm, runtime_slot(vm, 0), CODE_GPA, CODE_SIZE, map.addr(), "guest code").map_err(CaseError)?;
    Ok(CodeRegion { map, gpa: CODE_GPA })
}

/// Maps the race board into the vCPU's VM, once per VM.
fn ensure_board_slot(w: &World, vcpu: &VcpuObj) -> Result<Arc<Board>, CaseError> {
    let board = w.board()?;
    let vm = vcpu.vm.upgrade().ok_or_else(|| {
        CaseError("a board program needs its VM's fd open (to map the race board) the first time it runs".into())
    })?;
    vm.board_slot
        .get_or_init(|| add_slot(&vm, runtime_slot(&vm, 1), BOARD_GPA, BOARD_SIZE, board.host_addr(), "race board"))
        .clone()
        .map_err(CaseError)?;
    Ok(board)
}

pub fn check_extension(w: &World, on: &str, cap: u32) -> Result<Observed, CaseError> {
    let cap_name = uapi::PROBED_CAPS.iter().find(|(_, c)| *c == cap).map(|(n, _)| *n).unwrap_or("?");
    let call = format!("KVM_CHECK_EXTENSION({cap_name} = {cap}) on {on}");
    let r = if on == "kvm" { w.kvm.check_extension(cap) } else { w.vm(on)?.vm.check_extension(cap) };
    let obs = match r {
        Ok(v) => Observed::new(ObsResult::Ok(v.into()), call).field("value", FieldVal::Int(v.into())),
        Err(e) => Observed::new(ObsResult::Errno(e), call),
    };
    Ok(obs)
}

pub fn gmem(
    w: &World,
    name: &str,
    vm_name: &str,
    size: u64,
    flags: u64,
    reserved: [u64; 6],
) -> Result<Observed, CaseError> {
    let vm = w.vm(vm_name)?;
    let mut call =
        format!("KVM_CREATE_GUEST_MEMFD {{ size: {}, flags: {} ", render_size(size), GMEM_FLAGS.render(flags));
    if reserved != [0; 6] {
        call.push_str(&format!(", reserved: {reserved:#x?} "));
    }
    call.push('}');
    match vm.vm.create_guest_memfd_raw(CreateGuestMemfd { size, flags, reserved }) {
        Ok(fd) => {
            w.insert(name, Obj::File(Arc::new(fd)));
            Ok(Observed::new(ObsResult::Ok(0), call))
        }
        Err(e) => Ok(Observed::new(ObsResult::Errno(e), call)),
    }
}

#[allow(clippy::too_many_arguments)]
pub fn memslot(
    w: &World,
    vm_name: &str,
    api: RegionApi,
    slot: u32,
    flags: u32,
    gpa: u64,
    size: u64,
    userspace: &Userspace,
    gmem: Option<&FdRef>,
    offset: u64,
) -> Result<Observed, CaseError> {
    let vm = w.vm(vm_name)?;
    let userspace_addr = match userspace {
        Userspace::Zero => 0,
        Userspace::Addr(a) => *a,
        Userspace::Map { name, offset } => w.map(name)?.addr() + offset,
    };
    let gmem_held = gmem.map(|g| w.fd(g)).transpose()?;
    let gmem_fd = gmem_held.as_ref().map(|h| h.raw);
    let flags_text = MEMSLOT_FLAGS.render(flags.into());
    let r = match api {
        RegionApi::V2 => {
            let region = MemoryRegion2 {
                slot,
                flags,
                guest_phys_addr: gpa,
                memory_size: size,
                userspace_addr,
                guest_memfd_offset: offset,
                guest_memfd: gmem_fd.unwrap_or(0) as u32,
                ..Default::default()
            };
            let call = format!(
                "KVM_SET_USER_MEMORY_REGION2 {{ slot: {slot}, flags: {flags_text}, gpa: {gpa:#x}, size: {size:#x}, userspace_addr: {userspace_addr:#x}, guest_memfd: {}, offset: {offset:#x} }}",
                gmem_fd.map_or("none".to_string(), |f| f.to_string())
            );
            // SAFETY: userspace_addr is 0, a literal the case chose, or a mapping the World owns;
            // the guest only writes through it while the case runs, and the case's mapping steps
            // decide its lifetime on purpose.
            (unsafe { vm.vm.set_memory_region2_raw(&region) }, call)
        }
        RegionApi::V1 => {
            let region = MemoryRegion { slot, flags, guest_phys_addr: gpa, memory_size: size, userspace_addr };
            let call = format!(
                "KVM_SET_USER_MEMORY_REGION {{ slot: {slot}, flags: {flags_text}, gpa: {gpa:#x}, size: {size:#x}, userspace_addr: {userspace_addr:#x} }}"
            );
            // SAFETY: as above.
            (unsafe { vm.vm.set_memory_region_raw(&region) }, call)
        }
    };
    if r.0.is_ok()
        && let Some(b) = w.board_if_made()
        && b.guest_running()
    {
        b.counts.slot_changes_while_guest_ran.fetch_add(1, Ordering::SeqCst);
    }
    Ok(Observed::from_result(r.0, r.1))
}

pub fn guest(w: &World, vcpu_name: &str, program: &Program) -> Result<Observed, CaseError> {
    let obj = w.vcpu(vcpu_name)?;
    let call = format!("KVM_RUN of guest program {program:?}");
    let board = if program.uses_board() { Some(ensure_board_slot(w, &obj)?) } else { w.board_if_made() };
    if program.uses_board()
        && let Some(b) = &board
    {
        b.clear_guest(obj.id);
    }
    let (code_host, code_gpa) = obj.code_page();
    // The VMM side of the guest's hypercalls: conversions on the VM this vCPU was made from.
    let vm = obj.vm.upgrade();
    let mut vmm = super::ops_attr::Conversions::new(vm.as_ref().map(|v| &v.vm));
    let report = {
        let mut vcpu = obj.lock();
        let _stats = obj.publish_stats(if w.racing() { vcpu.stats().ok() } else { None });
        let _running = board.as_ref().map(|b| GuestRunning::enter(b));
        let mut answer = |nr, args: &[u64; 6]| vmm.answer(nr, args);
        // SAFETY: the code page is CODE_PAGE bytes of our own anonymous memory, this vCPU's alone,
        // mapped at code_gpa.
        match unsafe { run_program_answering(&mut vcpu, code_host, code_gpa, obj.id, program, &mut answer) } {
            Ok(r) => r,
            // A vCPU ioctl the kernel refused while setting up (e.g. EIO from a process that
            // did not create the VM) is the kernel's answer, not gmemconf's failure.
            Err(RunError::Kvm(e)) => {
                return Ok(Observed::new(ObsResult::Errno(e.errno), format!("{} before {call}", e.ioctl)));
            }
            Err(e) => return Err(CaseError(e.to_string())),
        }
    };
    if let Some(b) = &board {
        if program.uses_board() {
            b.add_guest_run(obj.id);
        }
        if report.last_exit != GuestExit::Hlt {
            b.count_exit(report.last_exit.word());
        }
    }
    let mut obs = match &report.last_exit {
        GuestExit::Errno(e) => return Ok(Observed::new(ObsResult::Errno(*e), call)),
        GuestExit::MemoryFault { .. } => {
            Observed::new(ObsResult::Ok(0), call).field("exit", FieldVal::Word("memory_fault".into()))
        }
        other => Observed::new(ObsResult::Ok(0), call).field("exit", FieldVal::Word(other.word().into())),
    };
    obs = obs.field("completed", FieldVal::Bool(report.done));
    obs = obs.field("violation", FieldVal::Word(if report.violation { "found" } else { "none" }.into()));
    if let Some(v) = report.values.first() {
        obs = obs.field("read", FieldVal::Int((*v).into()));
    }
    match report.last_exit {
        GuestExit::MemoryFault { gpa, size, flags } => {
            obs = obs
                .field("gpa", FieldVal::Int(gpa.into()))
                .field("size", FieldVal::Int(size.into()))
                .field("flags", FieldVal::Int(flags.into()));
            obs.note = Some("KVM_RUN returned -1 EFAULT with KVM_EXIT_MEMORY_FAULT".into());
        }
        GuestExit::Mmio { gpa, write } => {
            obs = obs.field("gpa", FieldVal::Int(gpa.into()));
            obs.note = Some(format!("MMIO {} at {gpa:#x}", if write { "write" } else { "read" }));
        }
        GuestExit::IoOut { port, .. } | GuestExit::IoIn { port } => {
            obs = obs.field("port", FieldVal::Int(port.into()));
        }
        GuestExit::Other(ref what) => obs.note = Some(what.clone()),
        _ => {}
    }
    if let Some(stopped) = &report.stopped {
        obs.note = Some(match obs.note.take() {
            Some(note) => format!("{note}; {stopped}"),
            None => stopped.to_string(),
        });
    }
    if let Some((gpa, byte)) = report.mismatch {
        obs.note = Some(format!("the guest read {byte:#04x} at gpa {gpa:#x}"));
    }
    if report.violation
        && let (Some(b), Program::ScanLoop { allowed, .. }) = (&board, program)
    {
        let (gpa, _, byte, _) = b.violation(obj.id);
        obs.note = Some(format!("the guest read {byte:#04x} at gpa {gpa:#x}, none of {allowed:#04x?}"));
    } else if report.violation
        && let Some(b) = &board
    {
        let (page, tag, generation, epoch) = b.violation(obj.id);
        let why = b
            .judge(page, epoch, tag, generation)
            .err()
            .unwrap_or_else(|| format!("tag {tag:#x}, generation {generation}"));
        obs.note = Some(format!("the guest found page {page} wrong (read after epoch {epoch}): {why}"));
    }
    // A hypercall returns to a 32-bit guest in EAX: -22 arrives as 0xffffffea.
    if let Some(ret) = report.hypercall_ret {
        obs = obs.field("ret", FieldVal::Int((ret as u32 as i32).into()));
    }
    obs = obs.field("hypercalls", FieldVal::Int(report.hypercalls.into()));
    if !vmm.log.is_empty() {
        let log = vmm.log.join("; ");
        obs.note = Some(obs.note.map_or(log.clone(), |n| format!("{n}; {log}")));
    }
    Ok(obs)
}

/// Counts a vCPU as inside KVM_RUN for as long as it lives (races report what landed meanwhile).
struct GuestRunning<'a>(&'a Board);

impl<'a> GuestRunning<'a> {
    fn enter(board: &'a Board) -> GuestRunning<'a> {
        board.guests_running.fetch_add(1, Ordering::SeqCst);
        GuestRunning(board)
    }
}

impl Drop for GuestRunning<'_> {
    fn drop(&mut self) {
        self.0.guests_running.fetch_sub(1, Ordering::SeqCst);
    }
}

//! Steps that talk to KVM: VMs, vCPUs, capabilities, guest_memfd creation, memslots, guests.

use super::observe::{ObsResult, Observed};
use super::world::{CODE_GPA, CODE_SIZE, CaseError, CodePage, Mapping, Obj, VcpuObj, VmObj, World};
use crate::guest::{Program, run_program_answering};
use crate::kvm::uapi::{self, CreateGuestMemfd, MemoryRegion, MemoryRegion2};
use crate::kvm::{GuestExit, Vcpu};
use crate::suite::expect::FieldVal;
use crate::suite::names::{GMEM_FLAGS, MEMSLOT_FLAGS, render_size};
use crate::suite::step::{FdRef, RegionApi, Userspace};
use std::rc::Rc;

pub fn vm(w: &mut World, name: &str, vm_type: u64) -> Observed {
    let call = format!("KVM_CREATE_VM {{ type: {} }}", uapi::vm_type_name(vm_type));
    match w.kvm.create_vm_raw(vm_type) {
        Ok(vm) => {
            w.objects.insert(name.to_string(), Obj::Vm(VmObj { vm, code: None }));
            Observed::new(ObsResult::Ok(0), call)
        }
        Err(e) => Observed::new(ObsResult::Errno(e), call),
    }
}

/// Creates a vCPU; the first vCPU of a VM also gets the code memslot its guest programs run from.
pub fn vcpu(w: &mut World, name: &str, vm_name: &str, id: u64) -> Result<Observed, CaseError> {
    let vm = w.vm_mut(vm_name)?;
    let call = format!("KVM_CREATE_VCPU {{ id: {id} }}");
    let fd = match vm.vm.try_create_vcpu(id) {
        Ok(fd) => fd,
        Err(e) => return Ok(Observed::new(ObsResult::Errno(e.errno), call)),
    };
    let code = match &vm.code {
        Some(c) => c.clone(),
        None => {
            let map = Mapping::map(
                CODE_SIZE,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
            .map_err(|e| CaseError(format!("cannot map the guest code page: {e}")))?;
            let slot = match vm.vm.check_extension(uapi::KVM_CAP_NR_MEMSLOTS) {
                Ok(n) if n > 1 => (n - 1) as u32,
                _ => 31,
            };
            let region = MemoryRegion2 {
                slot,
                guest_phys_addr: CODE_GPA,
                memory_size: CODE_SIZE as u64,
                userspace_addr: map.addr(),
                ..Default::default()
            };
            // SAFETY: the code page mapping lives in an Rc held by the VM and each vCPU object,
            // dropped only when the World is.
            unsafe { vm.vm.set_memory_region2_raw(&region) }
                .map_err(|e| CaseError(format!("cannot add the guest code memslot {slot} at {CODE_GPA:#x}: {e}")))?;
            let c = Rc::new(CodePage { map, gpa: CODE_GPA });
            vm.code = Some(c.clone());
            c
        }
    };
    w.objects.insert(name.to_string(), Obj::Vcpu(Box::new(VcpuObj { vcpu: Vcpu::new(fd), code })));
    Ok(Observed::new(ObsResult::Ok(0), call))
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
    w: &mut World,
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
            w.objects.insert(name.to_string(), Obj::File(fd));
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
    let gmem_fd = gmem.map(|g| w.fd(g)).transpose()?;
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
    Ok(Observed::from_result(r.0, r.1))
}

pub fn guest(w: &mut World, vcpu_name: &str, program: &Program) -> Result<Observed, CaseError> {
    let (obj, vm) = super::ops_attr::vcpu_and_its_vm(w, vcpu_name)?;
    let mut vmm = super::ops_attr::Conversions::new(vm);
    let call = format!("KVM_RUN of guest program {program:?}");
    // SAFETY: the code page is CODE_SIZE bytes of our own anonymous memory, mapped at code.gpa.
    let report = unsafe {
        run_program_answering(&mut obj.vcpu, obj.code.map.ptr, obj.code.gpa, program, &mut |nr, args| {
            vmm.answer(nr, args)
        })
    }
    .map_err(|e| CaseError(e.to_string()))?;
    let mut obs = match &report.last_exit {
        GuestExit::Errno(e) => return Ok(Observed::new(ObsResult::Errno(*e), call)),
        GuestExit::MemoryFault { .. } => {
            Observed::new(ObsResult::Ok(0), call).field("exit", FieldVal::Word("memory_fault".into()))
        }
        other => Observed::new(ObsResult::Ok(0), call).field("exit", FieldVal::Word(other.word().into())),
    };
    obs = obs.field("completed", FieldVal::Bool(report.done));
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
    if let Some((gpa, byte)) = report.mismatch {
        obs.note = Some(format!("the guest read {byte:#04x} at gpa {gpa:#x}"));
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

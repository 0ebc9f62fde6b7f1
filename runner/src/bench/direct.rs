//! The VM the benchmarks' direct loops make by hand, with the same system calls the interpreter
//! makes for the equivalent steps: a default VM, an mmap-able guest_memfd bound at `gpa` (the host
//! mapping as userspace_addr), and a vCPU whose code pages sit in the last memslot.

use crate::exec::world::{CODE_GPA, CODE_SIZE, Mapping};
use crate::kvm::uapi::{self, MemoryRegion2};
use crate::kvm::{GuestMemfd, Kvm, Vcpu, Vm};
use std::os::fd::AsRawFd;

/// Fields drop in order: the VM goes before the memory its memslots point at.
pub struct DirectVm {
    pub vm: Vm,
    pub gmem: GuestMemfd,
    pub host: Mapping,
    pub code: Option<Mapping>,
    last_slot: u32,
}

fn text(e: impl std::fmt::Display) -> String {
    e.to_string()
}

impl DirectVm {
    pub fn new(gpa: u64, size: u64) -> Result<DirectVm, String> {
        let vm = Kvm::open().and_then(|k| k.try_create_vm(0)).map_err(text)?;
        let flags = uapi::GUEST_MEMFD_FLAG_MMAP | uapi::GUEST_MEMFD_FLAG_INIT_SHARED;
        let gmem = vm.try_create_guest_memfd(size, flags).map_err(text)?;
        let rw = libc::PROT_READ | libc::PROT_WRITE;
        let host = Mapping::map(size as usize, rw, libc::MAP_SHARED, gmem.as_raw_fd(), 0).map_err(text)?;
        let last_slot = vm.check_extension(uapi::KVM_CAP_NR_MEMSLOTS).map_err(text)? as u32 - 1;
        let d = DirectVm { vm, gmem, host, code: None, last_slot };
        let data = MemoryRegion2 {
            slot: 1,
            flags: uapi::KVM_MEM_GUEST_MEMFD,
            guest_phys_addr: gpa,
            memory_size: size,
            userspace_addr: d.host.addr(),
            guest_memfd: d.gmem.as_raw_fd() as u32,
            ..Default::default()
        };
        d.add(&data)?;
        Ok(d)
    }

    /// vCPU 0, and the code memslot its programs run from.
    pub fn vcpu(&mut self) -> Result<Vcpu, String> {
        let fd = self.vm.try_create_vcpu(0).map_err(text)?;
        let flags = libc::MAP_PRIVATE | libc::MAP_ANONYMOUS;
        let code = Mapping::map(CODE_SIZE, libc::PROT_READ | libc::PROT_WRITE, flags, -1, 0).map_err(text)?;
        self.add_slot(0, CODE_GPA, CODE_SIZE as u64, code.addr())?;
        self.code = Some(code);
        Ok(Vcpu::new(fd))
    }

    /// A plain memslot `from_last` below the last slot number.
    pub fn add_slot(&self, from_last: u32, gpa: u64, size: u64, addr: u64) -> Result<(), String> {
        let slot = self.last_slot - from_last;
        self.add(&MemoryRegion2 {
            slot,
            guest_phys_addr: gpa,
            memory_size: size,
            userspace_addr: addr,
            ..Default::default()
        })
    }

    fn add(&self, region: &MemoryRegion2) -> Result<(), String> {
        // SAFETY: every address given is a mapping the caller keeps for the VM's life: this
        // struct's own, dropped after the VM, or the race board, which outlives it.
        unsafe { self.vm.set_memory_region2_raw(region) }.map_err(text)
    }

    pub fn code_ptr(&self) -> *mut u8 {
        self.code.as_ref().map_or(std::ptr::null_mut(), |c| c.ptr)
    }
}

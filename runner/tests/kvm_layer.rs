//! The kvm layer's wrappers on the real /dev/kvm: a guest_memfd, a memslot on it, and a guest
//! program that fills and verifies its memory, the way the interpreter uses them.

use gmemconf::guest::{Program, run_program};
use gmemconf::kvm::uapi::{self, MemoryAttributes, MemoryRegion2, PreFaultMemory};
use gmemconf::kvm::{GuestExit, Kvm, Vcpu};
use nix::errno::Errno;
use std::os::fd::AsRawFd;

const GPA: u64 = 0x10_0000;
const SIZE: u64 = 2 << 20;
const CODE_GPA: u64 = 0xfff0_0000;

struct Map(*mut u8, usize);

impl Map {
    fn new(fd: i32, len: usize) -> Map {
        let flags = if fd < 0 { libc::MAP_SHARED | libc::MAP_ANONYMOUS } else { libc::MAP_SHARED };
        // SAFETY: a fresh mapping chosen by the kernel.
        let p = unsafe { libc::mmap(std::ptr::null_mut(), len, libc::PROT_READ | libc::PROT_WRITE, flags, fd, 0) };
        assert_ne!(p, libc::MAP_FAILED, "mmap: {}", Errno::last());
        Map(p.cast(), len)
    }
}

impl Drop for Map {
    fn drop(&mut self) {
        // SAFETY: our own mapping.
        unsafe { libc::munmap(self.0.cast(), self.1) };
    }
}

/// Where this host has an mmap-able guest_memfd, a guest fills it and the host sees it until it is
/// punched. Where it has none (the suites then run inside the test kernel, tests/host.rs), the
/// wrapper must report the kernel's refusal: the ioctl's name, and ENOTTY when KVM has no
/// guest_memfd at all (no such VM ioctl), EINVAL when it refuses these flags.
#[test]
fn guest_memfd_wrappers_on_this_host() {
    let kvm = Kvm::open().expect("this test needs a usable /dev/kvm");
    let vm = kvm.try_create_vm(0).expect("KVM_CREATE_VM");
    let flags = uapi::GUEST_MEMFD_FLAG_MMAP | uapi::GUEST_MEMFD_FLAG_INIT_SHARED;
    let supported = vm.check_extension(uapi::KVM_CAP_GUEST_MEMFD_FLAGS).unwrap_or(0) as u64;
    if supported & flags != flags {
        let Err(e) = vm.try_create_guest_memfd(SIZE, flags) else {
            panic!("KVM_CAP_GUEST_MEMFD_FLAGS is {supported:#x}, yet a guest_memfd with MMAP|INIT_SHARED was created");
        };
        assert_eq!(e.ioctl, "KVM_CREATE_GUEST_MEMFD");
        let expected =
            if kvm.check_extension(uapi::KVM_CAP_GUEST_MEMFD) == Ok(0) { Errno::ENOTTY } else { Errno::EINVAL };
        assert_eq!(e.errno, expected, "{e}");
        eprintln!("no mmap-able guest_memfd on this host: checked the refusal ({e})");
        return;
    }
    let gmem = vm.try_create_guest_memfd(SIZE, flags).expect("KVM_CREATE_GUEST_MEMFD");
    assert_eq!((gmem.size, gmem.flags), (SIZE, flags));
    let host = Map::new(gmem.as_raw_fd(), SIZE as usize);
    let code = Map::new(-1, 64 << 10);
    let data_slot = MemoryRegion2 {
        slot: 1,
        flags: uapi::KVM_MEM_GUEST_MEMFD,
        guest_phys_addr: GPA,
        memory_size: SIZE,
        userspace_addr: host.0 as u64,
        guest_memfd: gmem.as_raw_fd() as u32,
        ..Default::default()
    };
    let code_slot = MemoryRegion2 {
        slot: 2,
        guest_phys_addr: CODE_GPA,
        memory_size: code.1 as u64,
        userspace_addr: code.0 as u64,
        ..Default::default()
    };
    // SAFETY: both mappings outlive the VM (dropped after it, at the end of the test).
    unsafe {
        vm.set_memory_region2_raw(&data_slot).expect("guest_memfd memslot");
        vm.set_memory_region2_raw(&code_slot).expect("code memslot");
    }
    let mut vcpu = Vcpu::new(vm.try_create_vcpu(0).expect("KVM_CREATE_VCPU"));
    let mut run = |p: Program| {
        // SAFETY: `code` is 64 KiB of our memory backing CODE_GPA.
        unsafe { run_program(&mut vcpu, code.0, CODE_GPA, 0, &p) }.expect("guest program runs")
    };

    let fill = run(Program::Fill { gpa: GPA, len: 8192, byte: 0x5a });
    assert!(fill.done && fill.last_exit == GuestExit::Hlt, "{fill:?}");
    // SAFETY: within the 2 MiB mapping.
    let seen = unsafe { std::slice::from_raw_parts(host.0, 8192) };
    assert!(seen.iter().all(|b| *b == 0x5a), "the host mapping agrees with the guest");

    gmem.punch_hole_raw(0, 4096).expect("punch the first page");
    let verify = run(Program::Verify { gpa: GPA, len: 4096, byte: 0 });
    assert!(verify.done && verify.mismatch.is_none(), "a punched page reads zero: {verify:?}");
    let verify = run(Program::Verify { gpa: GPA + 4096, len: 4096, byte: 0x5a });
    assert!(verify.done, "the next page keeps its data: {verify:?}");
    let read = run(Program::Read { gpa: GPA + 4096 });
    assert_eq!(read.values, [0x5a]);

    assert_eq!(gmem.allocate_raw(0, SIZE as i64), Ok(()), "fallocate(KEEP_SIZE) over the whole file");
    assert_eq!(gmem.fallocate_raw(0, 0, 4096), Err(Errno::EOPNOTSUPP), "allocation without KEEP_SIZE");
}

#[test]
fn attributes_and_pre_fault_answer_as_the_capabilities_say() {
    let kvm = Kvm::open().expect("this test needs a usable /dev/kvm");
    let vm = kvm.try_create_vm(0).expect("KVM_CREATE_VM");
    let attrs = MemoryAttributes { address: 0, size: 4096, attributes: 0, flags: 0 };
    // At system scope the capability lists every attribute KVM supports (api.rst:
    // KVM_SET_MEMORY_ATTRIBUTES); a VM's answer may be 0 (a default VM next to private VM types)
    // while the ioctl still exists for it.
    let kvm_attributes = kvm.check_extension(uapi::KVM_CAP_MEMORY_ATTRIBUTES);
    match kvm_attributes {
        // KVM supports no attribute at all: the ioctl does not exist.
        Ok(0) => assert_eq!(vm.set_memory_attributes_raw(&attrs), Err(Errno::ENOTTY)),
        // Clearing attributes of an unbacked range is a valid request on any VM.
        _ => assert_eq!(vm.set_memory_attributes_raw(&attrs), Ok(())),
    }
    let bad_flags = MemoryAttributes { flags: 1, ..attrs };
    if kvm_attributes != Ok(0) {
        assert_eq!(vm.set_memory_attributes_raw(&bad_flags), Err(Errno::EINVAL), "flags must be zero");
    }
    let vcpu = Vcpu::new(vm.try_create_vcpu(0).expect("KVM_CREATE_VCPU"));
    let mut range = PreFaultMemory { gpa: GPA, size: 4096, ..Default::default() };
    let r = vcpu.pre_fault_memory_raw(&mut range);
    if vm.check_extension(uapi::KVM_CAP_PRE_FAULT_MEMORY) == Ok(0) {
        // Not advertised: whatever the errno, the kernel must not claim to have pre-faulted.
        assert!(r.is_err(), "KVM_PRE_FAULT_MEMORY succeeded without KVM_CAP_PRE_FAULT_MEMORY");
    } else {
        // No memslot covers the gpa: nothing can be pre-faulted.
        assert!(r.is_err(), "pre-faulted a gpa outside every memslot");
    }
}

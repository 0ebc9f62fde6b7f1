//! A VM fd: guest_memfd creation, memslots, memory attributes, capabilities.

use super::gmem::GuestMemfd;
use super::ioctl::{KvmError, Named, ioctl_int, ioctl_ptr};
use super::uapi::{self, CreateGuestMemfd, EnableCap, MemoryAttributes, MemoryRegion, MemoryRegion2};
use nix::errno::Errno;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

pub struct Vm {
    fd: kvm_ioctls::VmFd,
    pub vm_type: u64,
}

impl Vm {
    pub(super) fn new(fd: kvm_ioctls::VmFd, vm_type: u64) -> Vm {
        Vm { fd, vm_type }
    }

    pub fn check_extension(&self, cap: u32) -> Result<i32, Errno> {
        ioctl_int(self.as_raw_fd(), uapi::KVM_CHECK_EXTENSION, cap.into())
    }

    /// KVM_CREATE_GUEST_MEMFD with every field under the caller's control.
    pub fn create_guest_memfd_raw(&self, arg: CreateGuestMemfd) -> Result<OwnedFd, Errno> {
        let mut arg = arg;
        let fd = ioctl_ptr(self.as_raw_fd(), uapi::KVM_CREATE_GUEST_MEMFD, &mut arg)?;
        // SAFETY: on success the ioctl returned a new fd that nothing else owns.
        Ok(unsafe { OwnedFd::from_raw_fd(fd) })
    }

    pub fn try_create_guest_memfd(&self, size: u64, flags: u64) -> Result<GuestMemfd, KvmError> {
        self.create_guest_memfd_raw(CreateGuestMemfd { size, flags, ..Default::default() })
            .map(|fd| GuestMemfd::new(fd, size, flags))
            .named("KVM_CREATE_GUEST_MEMFD")
    }

    /// KVM_SET_USER_MEMORY_REGION2.
    ///
    /// # Safety
    /// `userspace_addr..+memory_size` must stay mapped in this process, or be unused by the
    /// guest, for as long as the slot exists: the guest writes through it.
    pub unsafe fn set_memory_region2_raw(&self, region: &MemoryRegion2) -> Result<(), Errno> {
        let mut region = *region;
        ioctl_ptr(self.as_raw_fd(), uapi::KVM_SET_USER_MEMORY_REGION2, &mut region).map(drop)
    }

    /// KVM_SET_USER_MEMORY_REGION (v1).
    ///
    /// # Safety
    /// As for `set_memory_region2_raw`.
    pub unsafe fn set_memory_region_raw(&self, region: &MemoryRegion) -> Result<(), Errno> {
        let mut region = *region;
        ioctl_ptr(self.as_raw_fd(), uapi::KVM_SET_USER_MEMORY_REGION, &mut region).map(drop)
    }

    /// KVM_SET_MEMORY_ATTRIBUTES (e.g. PRIVATE over a gpa range).
    pub fn set_memory_attributes_raw(&self, attrs: &MemoryAttributes) -> Result<(), Errno> {
        let mut attrs = *attrs;
        ioctl_ptr(self.as_raw_fd(), uapi::KVM_SET_MEMORY_ATTRIBUTES, &mut attrs).map(drop)
    }

    /// KVM_ENABLE_CAP on the VM (e.g. KVM_CAP_EXIT_HYPERCALL with 1 << KVM_HC_MAP_GPA_RANGE).
    pub fn enable_cap_raw(&self, cap: u32, flags: u32, args: [u64; 4]) -> Result<(), Errno> {
        let mut arg = EnableCap { cap, flags, args, pad: [0; 64] };
        ioctl_ptr(self.as_raw_fd(), uapi::KVM_ENABLE_CAP, &mut arg).map(drop)
    }

    pub fn try_create_vcpu(&self, id: u64) -> Result<kvm_ioctls::VcpuFd, KvmError> {
        self.fd.create_vcpu(id).map_err(|e| Errno::from_raw(e.errno())).named("KVM_CREATE_VCPU")
    }
}

impl AsRawFd for Vm {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

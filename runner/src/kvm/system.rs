//! /dev/kvm: API version, capabilities, VM creation.

use super::ioctl::{KvmError, Named, ioctl_int};
use super::uapi;
use super::vm::Vm;
use nix::errno::Errno;
use std::os::fd::{AsRawFd, IntoRawFd, OwnedFd, RawFd};

pub struct Kvm {
    inner: kvm_ioctls::Kvm,
}

impl Kvm {
    pub fn open() -> Result<Kvm, KvmError> {
        kvm_ioctls::Kvm::new()
            .map(|inner| Kvm { inner })
            .map_err(|e| KvmError { ioctl: "open(/dev/kvm)", errno: Errno::from_raw(e.errno()) })
    }

    pub fn api_version(&self) -> Result<i32, KvmError> {
        ioctl_int(self.as_raw_fd(), uapi::KVM_GET_API_VERSION, 0).named("KVM_GET_API_VERSION")
    }

    /// KVM_CHECK_EXTENSION on /dev/kvm. Prefer `Vm::check_extension`: the VM's answer counts.
    pub fn check_extension(&self, cap: u32) -> Result<i32, Errno> {
        ioctl_int(self.as_raw_fd(), uapi::KVM_CHECK_EXTENSION, cap.into())
    }

    /// KVM_CREATE_VM with the exact errno on failure.
    pub fn create_vm_raw(&self, vm_type: u64) -> Result<Vm, Errno> {
        self.inner.create_vm_with_type(vm_type).map(|fd| Vm::new(fd, vm_type)).map_err(|e| Errno::from_raw(e.errno()))
    }

    /// A VM from a descriptor received from elsewhere (e.g. over SCM_RIGHTS): KVM decides at
    /// each ioctl whether this process may use it.
    pub fn vm_from_fd(&self, fd: OwnedFd, vm_type: u64) -> Result<Vm, KvmError> {
        // Asked first so that the call below, which asks it again, cannot fail after taking `fd`.
        self.inner.get_vcpu_mmap_size().map_err(|e| Errno::from_raw(e.errno())).named("KVM_GET_VCPU_MMAP_SIZE")?;
        // SAFETY: `fd` is an open descriptor we own; the VmFd takes it over and closes it.
        unsafe { self.inner.create_vmfd_from_rawfd(fd.into_raw_fd()) }
            .map(|vm| Vm::new(vm, vm_type))
            .map_err(|e| Errno::from_raw(e.errno()))
            .named("KVM_GET_VCPU_MMAP_SIZE")
    }

    pub fn try_create_vm(&self, vm_type: u64) -> Result<Vm, KvmError> {
        self.create_vm_raw(vm_type).named("KVM_CREATE_VM")
    }
}

impl AsRawFd for Kvm {
    fn as_raw_fd(&self) -> RawFd {
        self.inner.as_raw_fd()
    }
}

//! Every raw ioctl gmemconf issues goes through here: the exact return value or errno,
//! nothing interpreted. Callers that want a Result with the ioctl's name use `KvmError`.

use nix::errno::Errno;
use std::fmt;
use std::os::fd::RawFd;

/// Issues `request` on `fd` with an integer argument.
pub fn ioctl_int(fd: RawFd, request: u64, arg: u64) -> Result<i32, Errno> {
    // SAFETY: the argument is passed by value; the kernel reads no user memory for it.
    let rc = unsafe { libc::ioctl(fd, request as libc::c_ulong, arg as libc::c_ulong) };
    Errno::result(rc)
}

/// Issues `request` on `fd` with a pointer to `arg`, which the kernel may read and write.
pub fn ioctl_ptr<T>(fd: RawFd, request: u64, arg: &mut T) -> Result<i32, Errno> {
    // SAFETY: `arg` is a valid, exclusively borrowed T for the duration of the call, and T is
    // the #[repr(C)] struct whose size is encoded in `request`.
    let rc = unsafe { libc::ioctl(fd, request as libc::c_ulong, arg as *mut T) };
    Errno::result(rc)
}

/// A failed ioctl, rendered the way the kernel's selftests print it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KvmError {
    pub ioctl: &'static str,
    pub errno: Errno,
}

impl fmt::Display for KvmError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} failed, rc: -1 errno: {} ({})",
            self.ioctl,
            self.errno as i32,
            crate::suite::names::errno_name(self.errno)
        )?;
        if self.errno == Errno::EIO {
            write!(f, " (EIO on a VM ioctl can mean KVM killed the VM)")?;
        }
        Ok(())
    }
}

impl std::error::Error for KvmError {}

pub trait Named<T> {
    fn named(self, ioctl: &'static str) -> Result<T, KvmError>;
}

impl<T> Named<T> for Result<T, Errno> {
    fn named(self, ioctl: &'static str) -> Result<T, KvmError> {
        self.map_err(|errno| KvmError { ioctl, errno })
    }
}

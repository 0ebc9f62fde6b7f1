//! A guest_memfd: the fd KVM_CREATE_GUEST_MEMFD returns, owned, with what it was created with.

use nix::errno::Errno;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};

pub const FALLOC_FL_KEEP_SIZE: i32 = 0x01;
pub const FALLOC_FL_PUNCH_HOLE: i32 = 0x02;

pub struct GuestMemfd {
    fd: OwnedFd,
    pub size: u64,
    pub flags: u64,
}

impl GuestMemfd {
    pub fn new(fd: OwnedFd, size: u64, flags: u64) -> GuestMemfd {
        GuestMemfd { fd, size, flags }
    }

    /// fallocate(PUNCH_HOLE | KEEP_SIZE): the range reads zero afterwards, for host and guest.
    pub fn punch_hole_raw(&self, offset: i64, len: i64) -> Result<(), Errno> {
        self.fallocate_raw(FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, offset, len)
    }

    /// fallocate(KEEP_SIZE): allocates backing pages without changing i_size.
    pub fn allocate_raw(&self, offset: i64, len: i64) -> Result<(), Errno> {
        self.fallocate_raw(FALLOC_FL_KEEP_SIZE, offset, len)
    }

    pub fn fallocate_raw(&self, mode: i32, offset: i64, len: i64) -> Result<(), Errno> {
        // SAFETY: plain syscall on our own fd.
        Errno::result(unsafe { libc::fallocate(self.fd.as_raw_fd(), mode, offset, len) }).map(drop)
    }

    pub fn into_owned_fd(self) -> OwnedFd {
        self.fd
    }
}

impl AsRawFd for GuestMemfd {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

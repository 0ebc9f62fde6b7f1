//! A vCPU in flat 32-bit protected mode (no paging: linear address = guest physical address),
//! enough to run gmemconf's small guest programs anywhere below 4 GiB.

use super::ioctl::{KvmError, Named};
use kvm_bindings::kvm_segment;
use kvm_ioctls::{VcpuExit, VcpuFd};
use nix::errno::Errno;

/// Why KVM_RUN returned, reduced to what a suite can state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GuestExit {
    Hlt,
    IoOut {
        port: u16,
        value: u64,
    },
    IoIn {
        port: u16,
    },
    Mmio {
        gpa: u64,
        write: bool,
    },
    Shutdown,
    MemoryFault {
        gpa: u64,
        size: u64,
        flags: u64,
    },
    InternalError,
    /// KVM_EXIT_HYPERCALL: the guest made a hypercall that KVM forwards to userspace, which
    /// answers with `Vcpu::set_hypercall_ret` before the next KVM_RUN.
    Hypercall {
        nr: u64,
        args: [u64; 6],
    },
    FailEntry {
        reason: u64,
    },
    Other(String),
    /// KVM_RUN failed with this errno and no exit information.
    Errno(Errno),
}

impl GuestExit {
    /// The word suites use in `exit:` expectations.
    pub fn word(&self) -> &'static str {
        match self {
            GuestExit::Hlt => "hlt",
            GuestExit::IoOut { .. } | GuestExit::IoIn { .. } => "io",
            GuestExit::Mmio { .. } => "mmio",
            GuestExit::Shutdown => "shutdown",
            GuestExit::MemoryFault { .. } => "memory_fault",
            GuestExit::InternalError => "internal_error",
            GuestExit::Hypercall { .. } => "hypercall",
            GuestExit::FailEntry { .. } => "fail_entry",
            GuestExit::Other(_) => "other",
            GuestExit::Errno(_) => "errno",
        }
    }
}

pub const EXIT_WORDS: &[&str] =
    &["hlt", "io", "mmio", "shutdown", "memory_fault", "internal_error", "fail_entry", "other"];

pub struct Vcpu {
    fd: VcpuFd,
    /// The last KVM_RUN left an I/O or MMIO access for userspace, which KVM completes at the
    /// start of the next KVM_RUN (writing the result to the registers, moving RIP past it).
    io_pending: bool,
}

impl Vcpu {
    pub fn new(fd: VcpuFd) -> Vcpu {
        Vcpu { fd, io_pending: false }
    }

    /// Completes an I/O or MMIO exit still in flight without running guest code: KVM_RUN with
    /// `immediate_exit` set, which KVM answers with EINTR once the access is finished (api.rst
    /// KVM_RUN, "immediate_exit"; the note on completing KVM_EXIT_IO/MMIO). A program that ended
    /// on such an exit would otherwise have its last instruction completed over the registers of
    /// the next program (e.g. an MMIO read's zero landing in the next program's first read).
    pub fn complete_pending_io(&mut self) -> Result<(), KvmError> {
        if !self.io_pending {
            return Ok(());
        }
        self.fd.set_kvm_immediate_exit(1);
        let r = self.fd.run().map(drop).map_err(|e| Errno::from_raw(e.errno()));
        self.fd.set_kvm_immediate_exit(0);
        match r {
            Err(Errno::EINTR) => {
                self.io_pending = false;
                Ok(())
            }
            Ok(()) => Err(KvmError { ioctl: "KVM_RUN (immediate_exit)", errno: Errno::UnknownErrno }),
            Err(e) => Err(e).named("KVM_RUN (immediate_exit)"),
        }
    }

    /// Puts the vCPU in 32-bit protected mode with flat 4 GiB segments, at `rip`.
    pub fn enter_flat32(&mut self, rip: u64) -> Result<(), KvmError> {
        let errno = |e: kvm_ioctls::Error| Errno::from_raw(e.errno());
        let mut sregs = self.fd.get_sregs().map_err(errno).named("KVM_GET_SREGS")?;
        let code = kvm_segment {
            base: 0,
            limit: 0xffff_ffff,
            selector: 0x08,
            type_: 0xb,
            present: 1,
            dpl: 0,
            db: 1,
            s: 1,
            l: 0,
            g: 1,
            avl: 0,
            unusable: 0,
            padding: 0,
        };
        let data = kvm_segment { selector: 0x10, type_: 0x3, ..code };
        sregs.cs = code;
        sregs.ds = data;
        sregs.es = data;
        sregs.fs = data;
        sregs.gs = data;
        sregs.ss = data;
        sregs.cr0 = (sregs.cr0 | 1) & !(1 << 31);
        self.fd.set_sregs(&sregs).map_err(errno).named("KVM_SET_SREGS")?;
        let mut regs = self.fd.get_regs().map_err(errno).named("KVM_GET_REGS")?;
        regs.rip = rip;
        regs.rflags = 0x2;
        self.fd.set_regs(&regs).map_err(errno).named("KVM_SET_REGS")
    }

    /// This vCPU's KVM statistics (KVM_GET_STATS_FD), readable while it runs.
    pub fn stats(&self) -> Result<super::stats::Stats, Errno> {
        use std::os::fd::AsRawFd;
        super::stats::Stats::open(self.fd.as_raw_fd())
    }

    /// KVM_PRE_FAULT_MEMORY: on return `range.gpa`/`range.size` hold what is left to do; the
    /// ioctl's return value (0 when at least one page was processed).
    pub fn pre_fault_memory_raw(&self, range: &mut super::uapi::PreFaultMemory) -> Result<i32, Errno> {
        use std::os::fd::AsRawFd;
        super::ioctl::ioctl_ptr(self.fd.as_raw_fd(), super::uapi::KVM_PRE_FAULT_MEMORY, range)
    }

    /// The value the guest's hypercall returns (kvm_run.hypercall.ret), after a
    /// `GuestExit::Hypercall` and before the next KVM_RUN.
    pub fn set_hypercall_ret(&mut self, ret: u64) {
        // Called only after KVM_RUN returned KVM_EXIT_HYPERCALL: the hypercall member of the
        // union is the live one.
        self.fd.get_kvm_run().__bindgen_anon_1.hypercall.ret = ret;
    }

    /// Where the guest stopped (RIP), read after an exit; None if KVM_GET_REGS fails.
    pub fn rip(&self) -> Option<u64> {
        self.fd.get_regs().ok().map(|r| r.rip)
    }

    /// What KVM said of its last KVM_EXIT_INTERNAL_ERROR: the suberror and its data words.
    pub fn internal_error(&mut self) -> String {
        // SAFETY: called only after KVM_RUN returned KVM_EXIT_INTERNAL_ERROR, so the internal
        // member of the union is the live one (and any bit pattern is a valid u32/u64 array).
        let e = unsafe { self.fd.get_kvm_run().__bindgen_anon_1.internal };
        let name = match e.suberror {
            1 => "EMULATION",
            2 => "SIMUL_EX",
            3 => "DELIVERY_EV",
            4 => "UNEXPECTED_EXIT_REASON",
            _ => "?",
        };
        let n = (e.ndata as usize).min(e.data.len());
        let data: Vec<String> = e.data[..n].iter().map(|d| format!("{d:#x}")).collect();
        format!("KVM_INTERNAL_ERROR_{name} (suberror {}), data [{}]", e.suberror, data.join(", "))
    }

    /// One KVM_RUN.
    pub fn run_once(&mut self) -> GuestExit {
        let exit = self.run_raw();
        self.io_pending = matches!(exit, GuestExit::IoOut { .. } | GuestExit::IoIn { .. } | GuestExit::Mmio { .. });
        exit
    }

    fn run_raw(&mut self) -> GuestExit {
        match self.fd.run() {
            Ok(VcpuExit::Hlt) => GuestExit::Hlt,
            Ok(VcpuExit::IoOut(port, data)) => {
                let mut bytes = [0u8; 8];
                let n = data.len().min(8);
                bytes[..n].copy_from_slice(&data[..n]);
                GuestExit::IoOut { port, value: u64::from_le_bytes(bytes) }
            }
            Ok(VcpuExit::IoIn(port, data)) => {
                data.fill(0);
                GuestExit::IoIn { port }
            }
            Ok(VcpuExit::MmioRead(gpa, data)) => {
                data.fill(0);
                GuestExit::Mmio { gpa, write: false }
            }
            Ok(VcpuExit::MmioWrite(gpa, _)) => GuestExit::Mmio { gpa, write: true },
            Ok(VcpuExit::Shutdown) => GuestExit::Shutdown,
            Ok(VcpuExit::MemoryFault { flags, gpa, size }) => GuestExit::MemoryFault { gpa, size, flags },
            Ok(VcpuExit::InternalError) => GuestExit::InternalError,
            Ok(VcpuExit::Hypercall(h)) => GuestExit::Hypercall { nr: h.nr, args: h.args },
            Ok(VcpuExit::FailEntry(reason, _)) => GuestExit::FailEntry { reason },
            Ok(other) => GuestExit::Other(format!("{other:?}")),
            Err(e) => GuestExit::Errno(Errno::from_raw(e.errno())),
        }
    }
}

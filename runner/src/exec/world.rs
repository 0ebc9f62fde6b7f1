//! The objects a running case has made (VMs, vCPUs, fds, mappings), by the names its steps gave.
//!
//! The threads of a `race` step share one World: objects are reference-counted, so a thread that
//! closes an fd while another is inside a syscall on it closes it when that syscall has returned,
//! as the kernel's own fd table would.

use super::board::Board;
use crate::kvm::stats::Stats;
use crate::kvm::{Kvm, KvmError, Vcpu, Vm};
use crate::suite::step::FdRef;
use std::collections::HashMap;
use std::os::fd::{AsRawFd, IntoRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

/// Guest programs run from anonymous memory in its own memslot, out of the way of the memslots a
/// case makes: the last slot number, just below 4 GiB. Each vCPU has its own 4 KiB page of it.
pub const CODE_GPA: u64 = 0xfff0_0000;
pub const CODE_SIZE: usize = 64 * 1024;
pub const CODE_PAGE: usize = 4096;

/// A mapping in this process, unmapped when dropped.
pub struct Mapping {
    pub ptr: *mut u8,
    pub len: usize,
}

// SAFETY: a Mapping is an address range owned by this process; every access through it is a
// volatile byte access or a syscall, which any thread may make.
unsafe impl Send for Mapping {}
// SAFETY: as above; nothing in Mapping is mutated after creation.
unsafe impl Sync for Mapping {}

impl Mapping {
    /// mmap(2) with the caller's exact arguments; `fd` -1 with MAP_ANONYMOUS for anonymous memory.
    pub fn map(len: usize, prot: i32, flags: i32, fd: RawFd, offset: i64) -> Result<Mapping, nix::errno::Errno> {
        // SAFETY: a fresh mapping chosen by the kernel (no MAP_FIXED) aliases no Rust object.
        let ptr = unsafe { libc::mmap(std::ptr::null_mut(), len, prot, flags, fd, offset) };
        if ptr == libc::MAP_FAILED {
            return Err(nix::errno::Errno::last());
        }
        Ok(Mapping { ptr: ptr.cast(), len })
    }

    pub fn anonymous(len: usize) -> Result<Mapping, nix::errno::Errno> {
        Mapping::map(len, libc::PROT_READ | libc::PROT_WRITE, libc::MAP_SHARED | libc::MAP_ANONYMOUS, -1, 0)
    }

    pub fn addr(&self) -> u64 {
        self.ptr as u64
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: ptr/len came from a successful mmap and nothing borrows the memory.
        unsafe { libc::munmap(self.ptr.cast(), self.len) };
    }
}

/// The code memslot of a VM: CODE_SIZE bytes at CODE_GPA, one page per vCPU.
pub struct CodeRegion {
    pub map: Mapping,
    pub gpa: u64,
}

pub struct VmObj {
    pub vm: Vm,
    /// Made with the VM's first vCPU.
    pub code: OnceLock<Arc<CodeRegion>>,
    /// The race board's memslot, added when a guest first runs a board program.
    pub board_slot: OnceLock<Result<(), String>>,
}

pub struct VcpuObj {
    /// One thread runs a vCPU at a time; the lock is never contended in a well-formed case.
    pub vcpu: Mutex<Vcpu>,
    pub code: Arc<CodeRegion>,
    pub id: u64,
    /// Not an owner: closing the VM's fd must close it, whatever vCPUs remain.
    pub vm: std::sync::Weak<VmObj>,
    /// While a guest step of a race runs: its KVM statistics, for a report on a vCPU that does not
    /// stop.
    /// Opened just before KVM_RUN (it needs the vCPU's lock) and closed after it.
    pub running_stats: Mutex<Option<Arc<Stats>>>,
}

/// Withdraws a running guest step's statistics when the step ends.
pub struct RunningStats<'a>(&'a VcpuObj);

impl Drop for RunningStats<'_> {
    fn drop(&mut self) {
        self.0.stats_slot().take();
    }
}

impl VcpuObj {
    /// This vCPU's own code page: host address and guest-physical address.
    pub fn code_page(&self) -> (*mut u8, u64) {
        let offset = (self.id as usize % (CODE_SIZE / CODE_PAGE)) * CODE_PAGE;
        // SAFETY: offset < CODE_SIZE, within the code mapping.
        (unsafe { self.code.map.ptr.add(offset) }, self.code.gpa + offset as u64)
    }

    pub fn lock(&self) -> MutexGuard<'_, Vcpu> {
        self.vcpu.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn stats_slot(&self) -> MutexGuard<'_, Option<Arc<Stats>>> {
        self.running_stats.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Keeps `stats` readable by other threads until the returned guard drops.
    pub fn publish_stats(&self, stats: Option<Stats>) -> RunningStats<'_> {
        *self.stats_slot() = stats.map(Arc::new);
        RunningStats(self)
    }

    pub fn running_stats(&self) -> Option<Arc<Stats>> {
        self.stats_slot().clone()
    }
}

#[derive(Clone)]
pub enum Obj {
    Vm(Arc<VmObj>),
    Vcpu(Arc<VcpuObj>),
    File(Arc<OwnedFd>),
    Map(Arc<Mapping>),
    Snapshot(Arc<super::ops_memstat::MemSnapshot>),
}

impl Obj {
    pub fn kind(&self) -> &'static str {
        match self {
            Obj::Vm(_) => "a VM",
            Obj::Vcpu(_) => "a vCPU",
            Obj::File(_) => "a file",
            Obj::Map(_) => "a mapping",
            Obj::Snapshot(_) => "a memory snapshot",
        }
    }
}

pub struct World {
    pub kvm: Kvm,
    objects: Mutex<HashMap<String, Obj>>,
    /// Counts changes to `objects`: whoever keeps objects it looked up may keep them only while
    /// this is unchanged (a race thread's board steps, see exec::race).
    version: AtomicU64,
    /// A race is running: guest steps then keep their vCPU's statistics readable for a hang
    /// report (exec::hang), which nothing outside a race makes.
    racing: AtomicBool,
    /// The race control memory shared by host threads and guests; made on first use.
    board: OnceLock<Result<Arc<Board>, String>>,
}

/// A problem in the case itself at run time (an object of the wrong kind): not a kernel verdict.
#[derive(Debug)]
pub struct CaseError(pub String);

impl From<KvmError> for CaseError {
    fn from(e: KvmError) -> Self {
        CaseError(e.to_string())
    }
}

/// A descriptor number, with the object that owns it kept open while the number is in use.
pub struct HeldFd {
    pub raw: RawFd,
    _owner: Option<Obj>,
}

impl World {
    pub fn new() -> Result<World, KvmError> {
        Ok(World {
            kvm: Kvm::open()?,
            objects: Mutex::new(HashMap::new()),
            version: AtomicU64::new(0),
            racing: AtomicBool::new(false),
            board: OnceLock::new(),
        })
    }

    fn objects(&self) -> MutexGuard<'_, HashMap<String, Obj>> {
        self.objects.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn insert(&self, name: &str, obj: Obj) {
        let old = {
            let mut objects = self.objects();
            self.version.fetch_add(1, Ordering::SeqCst);
            objects.insert(name.to_string(), obj)
        };
        drop(old);
    }

    /// Takes the object out; it is closed or unmapped when the last user lets go of it.
    pub fn remove(&self, name: &str) -> Option<Obj> {
        let mut objects = self.objects();
        self.version.fetch_add(1, Ordering::SeqCst);
        objects.remove(name)
    }

    pub fn version(&self) -> u64 {
        self.version.load(Ordering::SeqCst)
    }

    pub fn set_racing(&self, racing: bool) {
        self.racing.store(racing, Ordering::SeqCst);
    }

    pub fn racing(&self) -> bool {
        self.racing.load(Ordering::SeqCst)
    }

    pub fn get(&self, name: &str) -> Option<Obj> {
        self.objects().get(name).cloned()
    }

    pub fn vm(&self, name: &str) -> Result<Arc<VmObj>, CaseError> {
        match self.get(name) {
            Some(Obj::Vm(v)) => Ok(v),
            other => Err(not_a(name, other.as_ref(), "a VM")),
        }
    }

    pub fn vcpu(&self, name: &str) -> Result<Arc<VcpuObj>, CaseError> {
        match self.get(name) {
            Some(Obj::Vcpu(v)) => Ok(v),
            other => Err(not_a(name, other.as_ref(), "a vCPU")),
        }
    }

    pub fn map(&self, name: &str) -> Result<Arc<Mapping>, CaseError> {
        match self.get(name) {
            Some(Obj::Map(m)) => Ok(m),
            other => Err(not_a(name, other.as_ref(), "a mapping")),
        }
    }

    /// The descriptor number a step names, held open for as long as the result lives.
    pub fn fd(&self, r: &FdRef) -> Result<HeldFd, CaseError> {
        let raw = |raw| Ok(HeldFd { raw, _owner: None });
        match r {
            FdRef::Raw(n) => raw(*n),
            FdRef::Closed => raw(closed_fd()?),
            FdRef::Named(n) if n == "kvm" => raw(self.kvm.as_raw_fd()),
            FdRef::Named(n) => match self.get(n) {
                Some(o @ Obj::File(_)) | Some(o @ Obj::Vm(_)) => {
                    let fd = match &o {
                        Obj::File(f) => f.as_raw_fd(),
                        Obj::Vm(v) => v.vm.as_raw_fd(),
                        _ => unreachable!("matched above"),
                    };
                    Ok(HeldFd { raw: fd, _owner: Some(o) })
                }
                Some(o) => Err(CaseError(format!("`{n}` is {}, which has no fd to use here", o.kind()))),
                None => Err(not_a(n, None, "an fd")),
            },
        }
    }

    pub fn board(&self) -> Result<Arc<Board>, CaseError> {
        self.board.get_or_init(|| Board::new().map(Arc::new)).clone().map_err(CaseError)
    }

    /// The board if a step has already made it (guests map it into their VM when it exists).
    pub fn board_if_made(&self) -> Option<Arc<Board>> {
        self.board.get().and_then(|b| b.as_ref().ok().cloned())
    }
}

/// Why `name` cannot be used as `wanted`: it is something else, or it is gone.
fn not_a(name: &str, found: Option<&Obj>, wanted: &str) -> CaseError {
    match found {
        Some(o) => CaseError(format!("`{name}` is {}, not {wanted}", o.kind())),
        None => CaseError(format!("`{name}` does not exist (closed or unmapped earlier?)")),
    }
}

/// A descriptor number that is not open: the lowest free one, opened and closed again.
fn closed_fd() -> Result<RawFd, CaseError> {
    let f = std::fs::File::open("/dev/null").map_err(|e| CaseError(format!("open /dev/null: {e}")))?;
    let fd = f.into_raw_fd();
    // SAFETY: fd was just opened by us and is owned by nothing else.
    unsafe { libc::close(fd) };
    Ok(fd)
}

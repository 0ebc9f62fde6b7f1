//! The objects a running case has made (VMs, vCPUs, fds, mappings), by the names its steps gave.

use crate::kvm::{Kvm, KvmError, Vcpu, Vm};
use crate::suite::step::FdRef;
use std::collections::HashMap;
use std::os::fd::{AsRawFd, IntoRawFd, OwnedFd, RawFd};
use std::rc::Rc;

/// Guest programs run from a page of anonymous memory in its own memslot, out of the way of
/// the memslots a case makes: the last slot number, just below 4 GiB.
pub const CODE_GPA: u64 = 0xfff0_0000;
pub const CODE_SIZE: usize = 64 * 1024;

/// A mapping in this process, unmapped when dropped.
pub struct Mapping {
    pub ptr: *mut u8,
    pub len: usize,
}

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

pub struct CodePage {
    pub map: Mapping,
    pub gpa: u64,
}

pub struct VmObj {
    pub vm: Vm,
    pub code: Option<Rc<CodePage>>,
}

pub struct VcpuObj {
    pub vcpu: Vcpu,
    pub code: Rc<CodePage>,
}

pub enum Obj {
    Vm(VmObj),
    Vcpu(Box<VcpuObj>),
    File(OwnedFd),
    Map(Mapping),
}

impl Obj {
    pub fn kind(&self) -> &'static str {
        match self {
            Obj::Vm(_) => "a VM",
            Obj::Vcpu(_) => "a vCPU",
            Obj::File(_) => "a file",
            Obj::Map(_) => "a mapping",
        }
    }
}

pub struct World {
    pub kvm: Kvm,
    pub objects: HashMap<String, Obj>,
}

/// A problem in the case itself at run time (an object of the wrong kind): not a kernel verdict.
#[derive(Debug)]
pub struct CaseError(pub String);

impl From<KvmError> for CaseError {
    fn from(e: KvmError) -> Self {
        CaseError(e.to_string())
    }
}

impl World {
    pub fn new() -> Result<World, KvmError> {
        Ok(World { kvm: Kvm::open()?, objects: HashMap::new() })
    }

    pub fn vm(&self, name: &str) -> Result<&VmObj, CaseError> {
        match self.objects.get(name) {
            Some(Obj::Vm(v)) => Ok(v),
            other => Err(not_a(name, other, "a VM")),
        }
    }

    pub fn vm_mut(&mut self, name: &str) -> Result<&mut VmObj, CaseError> {
        match self.objects.get_mut(name) {
            Some(Obj::Vm(v)) => Ok(v),
            other => Err(not_a(name, other.map(|o| &*o), "a VM")),
        }
    }

    pub fn vcpu_mut(&mut self, name: &str) -> Result<&mut VcpuObj, CaseError> {
        match self.objects.get_mut(name) {
            Some(Obj::Vcpu(v)) => Ok(v),
            other => Err(not_a(name, other.map(|o| &*o), "a vCPU")),
        }
    }

    pub fn map(&self, name: &str) -> Result<&Mapping, CaseError> {
        match self.objects.get(name) {
            Some(Obj::Map(m)) => Ok(m),
            other => Err(not_a(name, other, "a mapping")),
        }
    }

    /// The descriptor number a step names.
    pub fn fd(&self, r: &FdRef) -> Result<RawFd, CaseError> {
        match r {
            FdRef::Raw(n) => Ok(*n),
            FdRef::Closed => closed_fd(),
            FdRef::Named(n) if n == "kvm" => Ok(self.kvm.as_raw_fd()),
            FdRef::Named(n) => match self.objects.get(n) {
                Some(Obj::File(f)) => Ok(f.as_raw_fd()),
                Some(Obj::Vm(v)) => Ok(v.vm.as_raw_fd()),
                Some(o) => Err(CaseError(format!("`{n}` is {}, which has no fd to use here", o.kind()))),
                None => Err(not_a(n, None, "an fd")),
            },
        }
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

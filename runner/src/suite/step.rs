//! The steps a case is made of: one operation each, with typed arguments.

use super::args::Args;
use super::error::{NResult, NodeError, unknown_name_help};
use super::expect::{FieldKind, FieldSpec};
use super::names::{self, *};
use super::node::{Loc, Node};
use crate::guest::Program;
use crate::guest::program::PROGRAM_NAMES;
use crate::kvm::uapi::{self, PROBED_CAPS, VM_TYPES};

/// A file descriptor named by a step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FdRef {
    /// An object made by an earlier step (`as:`), or `kvm` for /dev/kvm.
    Named(String),
    /// A descriptor number that is certainly closed.
    Closed,
    /// A literal number (e.g. -1).
    Raw(i32),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Userspace {
    /// userspace_addr = 0.
    Zero,
    /// A mapping made by an `mmap` step, plus an offset into it.
    Map { name: String, offset: u64 },
    /// A literal address.
    Addr(u64),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RegionApi {
    V1,
    V2,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpliceDir {
    /// From the file into a pipe.
    Out,
    /// From a filled pipe into the file.
    In,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    Vm {
        name: String,
        vm_type: u64,
    },
    Vcpu {
        name: String,
        vm: String,
        id: u64,
    },
    CheckExtension {
        on: String,
        cap: u32,
    },
    Gmem {
        name: String,
        vm: String,
        size: u64,
        flags: u64,
        reserved: [u64; 6],
    },
    Memslot {
        vm: String,
        api: RegionApi,
        slot: u32,
        flags: u32,
        gpa: u64,
        size: u64,
        userspace: Userspace,
        gmem: Option<FdRef>,
        offset: u64,
    },
    Open {
        name: String,
        path: String,
        write: bool,
    },
    Memfd {
        name: String,
        size: u64,
    },
    Tmpfile {
        name: String,
        size: u64,
    },
    Close {
        fd: FdRef,
    },
    Read {
        fd: FdRef,
        len: u64,
    },
    Write {
        fd: FdRef,
        len: u64,
        byte: u8,
    },
    Pread {
        fd: FdRef,
        len: u64,
        offset: i64,
    },
    Pwrite {
        fd: FdRef,
        len: u64,
        offset: i64,
        byte: u8,
    },
    Lseek {
        fd: FdRef,
        offset: i64,
        whence: u64,
    },
    Ftruncate {
        fd: FdRef,
        size: i64,
    },
    Fchmod {
        fd: FdRef,
        mode: u32,
    },
    Fsync {
        fd: FdRef,
    },
    Fdatasync {
        fd: FdRef,
    },
    AddSeals {
        fd: FdRef,
        seals: u64,
    },
    GetSeals {
        fd: FdRef,
    },
    Ioctl {
        fd: FdRef,
        request: u64,
        arg: u64,
    },
    /// `offset` None passes a NULL offset pointer (use and move the file position).
    Splice {
        fd: FdRef,
        dir: SpliceDir,
        len: u64,
        offset: Option<i64>,
    },
    CopyFileRange {
        from: FdRef,
        to: FdRef,
        len: u64,
        offset_in: Option<i64>,
        offset_out: Option<i64>,
        flags: u32,
    },
    Sendfile {
        from: FdRef,
        to: FdRef,
        len: u64,
        offset: Option<i64>,
    },
    Fcntl {
        fd: FdRef,
        cmd: u64,
        arg: u64,
    },
    Fchown {
        fd: FdRef,
        uid: u32,
        gid: u32,
    },
    Futimens {
        fd: FdRef,
    },
    Fallocate {
        fd: FdRef,
        mode: u64,
        offset: i64,
        len: i64,
    },
    Fstat {
        fd: FdRef,
    },
    Mmap {
        name: String,
        fd: Option<FdRef>,
        len: u64,
        offset: i64,
        prot: u64,
        flags: u64,
    },
    Munmap {
        map: String,
    },
    Mprotect {
        map: String,
        offset: u64,
        len: Option<u64>,
        prot: u64,
    },
    Madvise {
        map: String,
        offset: u64,
        len: Option<u64>,
        advice: u64,
    },
    MemWrite {
        map: String,
        offset: u64,
        len: u64,
        byte: u8,
    },
    MemRead {
        map: String,
        offset: u64,
        len: u64,
    },
    Guest {
        vcpu: String,
        program: Program,
    },
}

/// Every step name, for "unknown step" help.
pub const STEP_NAMES: &[&str] = &[
    "vm",
    "vcpu",
    "check_extension",
    "gmem",
    "memslot",
    "delete_memslot",
    "open",
    "memfd",
    "tmpfile",
    "close",
    "read",
    "write",
    "pread",
    "pwrite",
    "lseek",
    "ftruncate",
    "fchmod",
    "fsync",
    "fdatasync",
    "add_seals",
    "get_seals",
    "ioctl",
    "splice",
    "copy_file_range",
    "sendfile",
    "fcntl",
    "fchown",
    "futimens",
    "fallocate",
    "fstat",
    "mmap",
    "munmap",
    "mprotect",
    "madvise",
    "mem_write",
    "mem_read",
    "guest",
];

/// Keys a step may carry beside its operation.
pub const STEP_KEYS: &[&str] = &["expect", "ref"];

pub fn parse_fd(node: &Node) -> NResult<FdRef> {
    match &node.value {
        super::node::Value::Int(i) => {
            i32::try_from(*i).map(FdRef::Raw).map_err(|_| NodeError::at(node, "a literal fd must fit in an int"))
        }
        super::node::Value::Str(s) if s == "closed" => Ok(FdRef::Closed),
        super::node::Value::Str(s) => Ok(FdRef::Named(s.clone())),
        _ => Err(NodeError::at(node, format!("an fd is a name or a number, found {}", node.kind()))
            .help("name an object made by an earlier step's `as:`, `kvm`, `closed`, or a number")),
    }
}

fn fd(a: &Args, key: &str) -> NResult<FdRef> {
    parse_fd(a.req(key)?)
}

fn vm_type(a: &Args) -> NResult<u64> {
    match a.get("type") {
        None => Ok(0),
        Some(n) => match n.as_str() {
            Some(s) => VM_TYPES.iter().find(|(name, _)| *name == s).map(|(_, v)| *v).ok_or_else(|| {
                let known: Vec<&str> = VM_TYPES.iter().map(|(n, _)| *n).collect();
                NodeError::at(n, format!("unknown VM type `{s}`")).help(unknown_name_help(s, &known))
            }),
            None => names::parse_u64(n),
        },
    }
}

fn cap(a: &Args) -> NResult<u32> {
    let n = a.req("cap")?;
    match n.as_str() {
        Some(s) => PROBED_CAPS.iter().find(|(name, _)| *name == s).map(|(_, v)| *v).ok_or_else(|| {
            let known: Vec<&str> = PROBED_CAPS.iter().map(|(n, _)| *n).collect();
            NodeError::at(n, format!("unknown capability `{s}`")).help(unknown_name_help(s, &known))
        }),
        None => a.u32_or("cap", 0),
    }
}

fn program(a: &Args, node: &Node) -> NResult<Program> {
    let name = a.string_req("program")?;
    let gpa = a.u64_req("gpa")?;
    Ok(match name.as_str() {
        "read" => Program::Read { gpa },
        "write" => Program::Write { gpa, byte: a.u8_or("byte", 0)? },
        "fill" => Program::Fill { gpa, len: a.u64_req("len")?, byte: a.u8_or("byte", 0)? },
        "verify" => Program::Verify { gpa, len: a.u64_req("len")?, byte: a.u8_or("byte", 0)? },
        "read_loop" => {
            let len = a.u64_req("len")?;
            if len == 0 {
                return Err(NodeError::at(a.req("len")?, "read_loop needs a non-empty range"));
            }
            Program::ReadLoop { gpa, len, iterations: a.u64_or("iterations", 1)? }
        }
        other => {
            let at = a.get("program").unwrap_or(node);
            return Err(NodeError::at(at, format!("unknown guest program `{other}`"))
                .help(unknown_name_help(other, PROGRAM_NAMES)));
        }
    })
}

/// A file offset that may be `none` (a NULL pointer: the file position is used).
fn optional_offset(a: &Args, key: &str, default: Option<i64>) -> NResult<Option<i64>> {
    match a.get(key) {
        None => Ok(default),
        Some(n) if n.as_str() == Some("none") => Ok(None),
        Some(n) => names::parse_i64(n).map(Some),
    }
}

fn optional_u64(a: &Args, key: &str) -> NResult<Option<u64>> {
    a.get(key).map(names::parse_u64).transpose()
}

/// Parses the operation `op` with arguments `node`.
pub fn parse_op(op: &str, op_node: &Node, node: &Node) -> NResult<Op> {
    let args = |known: &[&str]| Args::new(op, node, known);
    Ok(match op {
        "vm" => {
            let a = args(&["as", "type"])?;
            Op::Vm { name: a.string_or("as", "vm")?, vm_type: vm_type(&a)? }
        }
        "vcpu" => {
            let a = args(&["as", "vm", "id"])?;
            Op::Vcpu { name: a.string_or("as", "cpu")?, vm: a.string_or("vm", "vm")?, id: a.u64_or("id", 0)? }
        }
        "check_extension" => {
            let a = args(&["on", "cap"])?;
            Op::CheckExtension { on: a.string_or("on", "vm")?, cap: cap(&a)? }
        }
        "gmem" => {
            let a = args(&["as", "vm", "size", "flags", "reserved"])?;
            let mut reserved = [0u64; 6];
            if let Some(r) = a.get("reserved") {
                let items = r.as_seq().ok_or_else(|| NodeError::at(r, "`reserved` is a list of up to 6 numbers"))?;
                if items.len() > 6 {
                    return Err(NodeError::at(r, "`reserved` has 6 fields"));
                }
                for (slot, item) in reserved.iter_mut().zip(items) {
                    *slot = names::parse_u64(item)?;
                }
            }
            Op::Gmem {
                name: a.string_req("as")?,
                vm: a.string_or("vm", "vm")?,
                size: a.u64_req("size")?,
                flags: a.flags_or("flags", &GMEM_FLAGS, 0)?,
                reserved,
            }
        }
        "memslot" | "delete_memslot" => {
            let deleting = op == "delete_memslot";
            let known: &[&str] = if deleting {
                &["vm", "slot", "api", "gpa", "flags", "gmem", "offset", "userspace"]
            } else {
                &["vm", "slot", "api", "gpa", "size", "flags", "gmem", "offset", "userspace", "userspace_offset"]
            };
            let a = args(known)?;
            let api = match a.string_or("api", "v2")?.as_str() {
                "v2" => RegionApi::V2,
                "v1" => RegionApi::V1,
                other => {
                    return Err(NodeError::at(a.req("api")?, format!("unknown memslot api `{other}`")).help(
                        "`api: v1` is KVM_SET_USER_MEMORY_REGION, `api: v2` (default) KVM_SET_USER_MEMORY_REGION2",
                    ));
                }
            };
            let gmem = a.get("gmem").map(parse_fd).transpose()?;
            let default_flags = if gmem.is_some() { uapi::KVM_MEM_GUEST_MEMFD as u64 } else { 0 };
            let flags = a.flags_or("flags", &MEMSLOT_FLAGS, default_flags)?;
            let userspace = match a.get("userspace") {
                None => Userspace::Zero,
                Some(n) => match n.as_str().filter(|s| !s.starts_with("0x")) {
                    Some(name) => Userspace::Map { name: name.to_string(), offset: a.u64_or("userspace_offset", 0)? },
                    None => Userspace::Addr(names::parse_u64(n)?),
                },
            };
            Op::Memslot {
                vm: a.string_or("vm", "vm")?,
                api,
                slot: a.u32_or("slot", 0)?,
                flags: u32::try_from(flags).map_err(|_| NodeError::at(node, "memslot flags are 32-bit"))?,
                gpa: a.u64_or("gpa", 0)?,
                size: if deleting { 0 } else { a.u64_req("size")? },
                userspace,
                gmem,
                offset: a.u64_or("offset", 0)?,
            }
        }
        "open" => {
            let a = args(&["as", "path", "write"])?;
            Op::Open { name: a.string_req("as")?, path: a.string_req("path")?, write: a.bool_or("write", false)? }
        }
        "memfd" | "tmpfile" => {
            let a = args(&["as", "size"])?;
            let (name, size) = (a.string_req("as")?, a.u64_or("size", 0)?);
            if op == "memfd" { Op::Memfd { name, size } } else { Op::Tmpfile { name, size } }
        }
        "close" => Op::Close { fd: fd(&args(&["fd"])?, "fd")? },
        "read" => {
            let a = args(&["fd", "len"])?;
            Op::Read { fd: fd(&a, "fd")?, len: a.u64_or("len", 64)? }
        }
        "write" => {
            let a = args(&["fd", "len", "byte"])?;
            Op::Write { fd: fd(&a, "fd")?, len: a.u64_or("len", 64)?, byte: a.u8_or("byte", 0xaa)? }
        }
        "pread" => {
            let a = args(&["fd", "len", "offset"])?;
            Op::Pread { fd: fd(&a, "fd")?, len: a.u64_or("len", 64)?, offset: a.i64_or("offset", 0)? }
        }
        "pwrite" => {
            let a = args(&["fd", "len", "offset", "byte"])?;
            Op::Pwrite {
                fd: fd(&a, "fd")?,
                len: a.u64_or("len", 64)?,
                offset: a.i64_or("offset", 0)?,
                byte: a.u8_or("byte", 0xaa)?,
            }
        }
        "lseek" => {
            let a = args(&["fd", "offset", "whence"])?;
            Op::Lseek {
                fd: fd(&a, "fd")?,
                offset: a.i64_or("offset", 0)?,
                whence: a.word_or("whence", &WHENCE, "set")?,
            }
        }
        "ftruncate" => {
            let a = args(&["fd", "size"])?;
            Op::Ftruncate { fd: fd(&a, "fd")?, size: names::parse_i64(a.req("size")?)? }
        }
        "fchmod" => {
            let a = args(&["fd", "mode"])?;
            Op::Fchmod { fd: fd(&a, "fd")?, mode: a.u32_or("mode", 0o600)? }
        }
        "fsync" => Op::Fsync { fd: fd(&args(&["fd"])?, "fd")? },
        "fdatasync" => Op::Fdatasync { fd: fd(&args(&["fd"])?, "fd")? },
        "add_seals" => {
            let a = args(&["fd", "seals"])?;
            Op::AddSeals { fd: fd(&a, "fd")?, seals: SEALS.parse(a.req("seals")?)? }
        }
        "get_seals" => Op::GetSeals { fd: fd(&args(&["fd"])?, "fd")? },
        "ioctl" => {
            let a = args(&["fd", "request", "arg"])?;
            Op::Ioctl { fd: fd(&a, "fd")?, request: a.u64_req("request")?, arg: a.u64_or("arg", 0)? }
        }
        "splice" => {
            let a = args(&["fd", "dir", "len", "offset"])?;
            let dir = match a.string_req("dir")?.as_str() {
                "out" => SpliceDir::Out,
                "in" => SpliceDir::In,
                other => {
                    return Err(NodeError::at(a.req("dir")?, format!("unknown splice direction `{other}`"))
                        .help("`dir: out` splices from the fd into a pipe, `dir: in` from a pipe into the fd"));
                }
            };
            Op::Splice {
                fd: fd(&a, "fd")?,
                dir,
                len: a.u64_or("len", 4096)?,
                offset: optional_offset(&a, "offset", Some(0))?,
            }
        }
        "copy_file_range" => {
            let a = args(&["from", "to", "len", "offset_in", "offset_out", "flags"])?;
            Op::CopyFileRange {
                from: fd(&a, "from")?,
                to: fd(&a, "to")?,
                len: a.u64_or("len", 4096)?,
                offset_in: optional_offset(&a, "offset_in", None)?,
                offset_out: optional_offset(&a, "offset_out", None)?,
                flags: a.u32_or("flags", 0)?,
            }
        }
        "sendfile" => {
            let a = args(&["from", "to", "len", "offset"])?;
            Op::Sendfile {
                from: fd(&a, "from")?,
                to: fd(&a, "to")?,
                len: a.u64_or("len", 4096)?,
                offset: optional_offset(&a, "offset", None)?,
            }
        }
        "fcntl" => {
            let a = args(&["fd", "cmd", "arg"])?;
            Op::Fcntl { fd: fd(&a, "fd")?, cmd: a.word_or("cmd", &FCNTL_CMDS, "getfd")?, arg: a.u64_or("arg", 0)? }
        }
        "fchown" => {
            let a = args(&["fd", "uid", "gid"])?;
            Op::Fchown { fd: fd(&a, "fd")?, uid: a.u32_or("uid", 0)?, gid: a.u32_or("gid", 0)? }
        }
        "futimens" => Op::Futimens { fd: fd(&args(&["fd"])?, "fd")? },
        "fallocate" => {
            let a = args(&["fd", "mode", "offset", "len"])?;
            Op::Fallocate {
                fd: fd(&a, "fd")?,
                mode: a.flags_or("mode", &FALLOC_MODES, 0)?,
                offset: a.i64_or("offset", 0)?,
                len: names::parse_i64(a.req("len")?)?,
            }
        }
        "fstat" => Op::Fstat { fd: fd(&args(&["fd"])?, "fd")? },
        "mmap" => {
            let a = args(&["as", "fd", "len", "offset", "prot", "flags"])?;
            let fd = match a.get("fd") {
                Some(n) if n.as_str() == Some("anon") => None,
                Some(n) => Some(parse_fd(n)?),
                None => {
                    return Err(NodeError::at(node, "step `mmap` needs `fd`").help("name the fd to map, or `fd: anon`"));
                }
            };
            Op::Mmap {
                name: a.string_req("as")?,
                fd,
                len: a.u64_req("len")?,
                offset: a.i64_or("offset", 0)?,
                prot: a.flags_or("prot", &PROT, 3)?,
                flags: a.flags_or("flags", &MAP_FLAGS, libc::MAP_SHARED as u64)?,
            }
        }
        "munmap" => Op::Munmap { map: args(&["map"])?.string_req("map")? },
        "mprotect" => {
            let a = args(&["map", "offset", "len", "prot"])?;
            Op::Mprotect {
                map: a.string_req("map")?,
                offset: a.u64_or("offset", 0)?,
                len: optional_u64(&a, "len")?,
                prot: PROT.parse(a.req("prot")?)?,
            }
        }
        "madvise" => {
            let a = args(&["map", "offset", "len", "advice"])?;
            Op::Madvise {
                map: a.string_req("map")?,
                offset: a.u64_or("offset", 0)?,
                len: optional_u64(&a, "len")?,
                advice: a.word_or("advice", &MADVISE, "normal")?,
            }
        }
        "mem_write" => {
            let a = args(&["map", "offset", "len", "byte"])?;
            Op::MemWrite {
                map: a.string_req("map")?,
                offset: a.u64_or("offset", 0)?,
                len: a.u64_or("len", 1)?,
                byte: a.u8_or("byte", 0xaa)?,
            }
        }
        "mem_read" => {
            let a = args(&["map", "offset", "len"])?;
            Op::MemRead { map: a.string_req("map")?, offset: a.u64_or("offset", 0)?, len: a.u64_or("len", 1)? }
        }
        "guest" => {
            let a = args(&["vcpu", "program", "gpa", "len", "byte", "iterations"])?;
            Op::Guest { vcpu: a.string_or("vcpu", "cpu")?, program: program(&a, node)? }
        }
        other => {
            return Err(
                NodeError::at(op_node, format!("unknown step `{other}`")).help(unknown_name_help(other, STEP_NAMES))
            );
        }
    })
}

impl Op {
    /// The name the step was written with.
    pub fn name(&self) -> &'static str {
        match self {
            Op::Vm { .. } => "vm",
            Op::Vcpu { .. } => "vcpu",
            Op::CheckExtension { .. } => "check_extension",
            Op::Gmem { .. } => "gmem",
            Op::Memslot { size: 0, .. } => "delete_memslot",
            Op::Memslot { .. } => "memslot",
            Op::Open { .. } => "open",
            Op::Memfd { .. } => "memfd",
            Op::Tmpfile { .. } => "tmpfile",
            Op::Close { .. } => "close",
            Op::Read { .. } => "read",
            Op::Write { .. } => "write",
            Op::Pread { .. } => "pread",
            Op::Pwrite { .. } => "pwrite",
            Op::Lseek { .. } => "lseek",
            Op::Ftruncate { .. } => "ftruncate",
            Op::Fchmod { .. } => "fchmod",
            Op::Fsync { .. } => "fsync",
            Op::Fdatasync { .. } => "fdatasync",
            Op::AddSeals { .. } => "add_seals",
            Op::GetSeals { .. } => "get_seals",
            Op::Ioctl { .. } => "ioctl",
            Op::Splice { .. } => "splice",
            Op::CopyFileRange { .. } => "copy_file_range",
            Op::Sendfile { .. } => "sendfile",
            Op::Fcntl { .. } => "fcntl",
            Op::Fchown { .. } => "fchown",
            Op::Futimens { .. } => "futimens",
            Op::Fallocate { .. } => "fallocate",
            Op::Fstat { .. } => "fstat",
            Op::Mmap { .. } => "mmap",
            Op::Munmap { .. } => "munmap",
            Op::Mprotect { .. } => "mprotect",
            Op::Madvise { .. } => "madvise",
            Op::MemWrite { .. } => "mem_write",
            Op::MemRead { .. } => "mem_read",
            Op::Guest { .. } => "guest",
        }
    }

    /// The object name this step defines, if any.
    pub fn defines(&self) -> Option<&str> {
        match self {
            Op::Vm { name, .. }
            | Op::Vcpu { name, .. }
            | Op::Gmem { name, .. }
            | Op::Open { name, .. }
            | Op::Memfd { name, .. }
            | Op::Tmpfile { name, .. }
            | Op::Mmap { name, .. } => Some(name),
            _ => None,
        }
    }

    /// Object names this step uses.
    pub fn uses(&self) -> Vec<&str> {
        fn fd(f: &FdRef) -> Option<&str> {
            match f {
                FdRef::Named(n) => Some(n.as_str()),
                _ => None,
            }
        }
        match self {
            Op::Vcpu { vm, .. } | Op::Gmem { vm, .. } => vec![vm],
            Op::CheckExtension { on, .. } => vec![on],
            Op::Memslot { vm, gmem, userspace, .. } => {
                let mut names = vec![vm.as_str()];
                names.extend(gmem.as_ref().and_then(fd));
                if let Userspace::Map { name, .. } = userspace {
                    names.push(name);
                }
                names
            }
            Op::Close { fd: f }
            | Op::Read { fd: f, .. }
            | Op::Write { fd: f, .. }
            | Op::Pread { fd: f, .. }
            | Op::Pwrite { fd: f, .. }
            | Op::Lseek { fd: f, .. }
            | Op::Ftruncate { fd: f, .. }
            | Op::Fchmod { fd: f, .. }
            | Op::Fsync { fd: f }
            | Op::Fdatasync { fd: f }
            | Op::AddSeals { fd: f, .. }
            | Op::GetSeals { fd: f }
            | Op::Ioctl { fd: f, .. }
            | Op::Splice { fd: f, .. }
            | Op::Fallocate { fd: f, .. }
            | Op::Fstat { fd: f }
            | Op::Fcntl { fd: f, .. }
            | Op::Fchown { fd: f, .. }
            | Op::Futimens { fd: f }
            | Op::Mmap { fd: Some(f), .. } => fd(f).into_iter().collect(),
            Op::CopyFileRange { from, to, .. } | Op::Sendfile { from, to, .. } => {
                fd(from).into_iter().chain(fd(to)).collect()
            }
            Op::Munmap { map }
            | Op::Mprotect { map, .. }
            | Op::Madvise { map, .. }
            | Op::MemWrite { map, .. }
            | Op::MemRead { map, .. } => vec![map],
            Op::Guest { vcpu, .. } => vec![vcpu],
            _ => Vec::new(),
        }
    }

    /// The fields this step's observation has, which `expect:` may check.
    pub fn fields(&self) -> &'static [FieldSpec] {
        match self {
            Op::Fstat { .. } => FSTAT_FIELDS,
            Op::GetSeals { .. } => SEALS_FIELDS,
            Op::MemRead { .. } => MEM_READ_FIELDS,
            Op::Guest { .. } => GUEST_FIELDS,
            _ => VALUE_FIELDS,
        }
    }

    /// Requirements implied by this step succeeding: a VM of a type, guest_memfd flags.
    pub fn implied_requirements(&self) -> Vec<super::Requirement> {
        use super::Requirement;
        match self {
            Op::Vm { vm_type, .. } if *vm_type != 0 => vec![Requirement::VmType(*vm_type)],
            Op::Gmem { flags, .. } => GMEM_FLAGS
                .bits
                .iter()
                .filter(|(_, bit)| flags & bit != 0)
                .map(|(_, bit)| Requirement::GmemFlags(*bit))
                .collect(),
            _ => Vec::new(),
        }
    }
}

static VALUE_FIELDS: &[FieldSpec] = &[FieldSpec { name: "value", kind: FieldKind::Int }];
static FSTAT_FIELDS: &[FieldSpec] = &[
    FieldSpec { name: "value", kind: FieldKind::Int },
    FieldSpec { name: "size", kind: FieldKind::Int },
    FieldSpec { name: "blocks", kind: FieldKind::Int },
    FieldSpec { name: "blksize", kind: FieldKind::Int },
    FieldSpec { name: "nlink", kind: FieldKind::Int },
    FieldSpec { name: "perm", kind: FieldKind::Mode },
    FieldSpec { name: "type", kind: FieldKind::Word(FILE_TYPES) },
    FieldSpec { name: "ino", kind: FieldKind::Int },
];
static SEALS_FIELDS: &[FieldSpec] =
    &[FieldSpec { name: "value", kind: FieldKind::Int }, FieldSpec { name: "seals", kind: FieldKind::Flags(&SEALS) }];
static MEM_READ_FIELDS: &[FieldSpec] = &[FieldSpec { name: "bytes", kind: FieldKind::Byte }];
static GUEST_FIELDS: &[FieldSpec] = &[
    FieldSpec { name: "exit", kind: FieldKind::Word(crate::kvm::vcpu::EXIT_WORDS) },
    FieldSpec { name: "completed", kind: FieldKind::Bool },
    FieldSpec { name: "read", kind: FieldKind::Byte },
    FieldSpec { name: "gpa", kind: FieldKind::Int },
    FieldSpec { name: "size", kind: FieldKind::Int },
    FieldSpec { name: "flags", kind: FieldKind::Flags(&MEMORY_FAULT_FLAGS) },
    FieldSpec { name: "port", kind: FieldKind::Int },
];

pub const FILE_TYPES: &[&str] = &["regular", "directory", "char", "block", "fifo", "socket", "symlink"];

/// One step of a case.
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    pub op: Op,
    pub expect: super::expect::Expect,
    pub loc: Loc,
    /// The step as written, compact, for messages.
    pub text: String,
    pub reference: Option<String>,
}

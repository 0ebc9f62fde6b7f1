//! Parses one step's operation and arguments into an `Op`.

use super::args::Args;
use super::error::{NResult, NodeError, unknown_name_help};
use super::names::{self, *};
use super::node::Node;
use super::step::{FdRef, Op, RegionApi, STEP_NAMES, SpliceDir, Tracked, Userspace};
use crate::guest::program::PROGRAM_NAMES;
use crate::guest::{BoardPages, Program};
use crate::kvm::uapi::{self, PROBED_CAPS, VM_TYPES};

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
        "map_gpa" => {
            let len = a.u64_req("len")?;
            if !len.is_multiple_of(4096) {
                return Err(NodeError::at(a.req("len")?, "map_gpa converts whole 4 KiB pages")
                    .help("give `len` as a multiple of 4K (0 asks for no page at all)"));
            }
            let private = match a.string_req("to")?.as_str() {
                "private" => true,
                "shared" => false,
                other => {
                    return Err(NodeError::at(a.req("to")?, format!("cannot convert to `{other}`"))
                        .help("write `to: private` or `to: shared`"));
                }
            };
            Program::MapGpa { gpa, len, private }
        }
        "read_loop" => {
            let len = a.u64_req("len")?;
            if len == 0 {
                return Err(NodeError::at(a.req("len")?, "read_loop needs a non-empty range"));
            }
            Program::ReadLoop { gpa, len, iterations: a.u64_or("iterations", 1)? }
        }
        "scan_loop" => {
            let len = a.u64_req("len")?;
            let node = a.req("allowed")?;
            let items = node.as_seq().filter(|i| (1..=4).contains(&i.len())).ok_or_else(|| {
                NodeError::at(node, "`allowed` lists 1 to 4 byte values").help("write `allowed: [0x11, 0x22]`")
            })?;
            let allowed = items
                .iter()
                .map(|i| u8::try_from(names::parse_u64(i)?).map_err(|_| NodeError::at(i, "an allowed value is a byte")))
                .collect::<NResult<Vec<u8>>>()?;
            if len == 0 {
                return Err(NodeError::at(a.req("len")?, "scan_loop needs a non-empty range"));
            }
            Program::ScanLoop { gpa, len, allowed, iterations: a.u64_or("iterations", 0)? }
        }
        "check_loop" | "write_loop" => {
            let (first, pages) = tracked_range(a)?;
            let b = BoardPages { gpa, first, pages, iterations: a.u64_or("iterations", 0)? };
            if name == "check_loop" { Program::CheckLoop(b) } else { Program::WriteLoop(b) }
        }
        other => {
            let at = a.get("program").unwrap_or(node);
            return Err(NodeError::at(at, format!("unknown guest program `{other}`"))
                .help(unknown_name_help(other, PROGRAM_NAMES)));
        }
    })
}

/// Which tracked pages of the race board a step covers (see exec::board): `first` and `pages`.
fn tracked_range(a: &Args) -> NResult<(u64, u64)> {
    let node = a.req("pages")?;
    let (first, pages) = (a.u64_or("first", 0)?, names::parse_u64(node)?);
    let max = crate::exec::board::MAX_PAGES;
    if pages == 0 || first.checked_add(pages).is_none_or(|end| end > max) {
        return Err(NodeError::at(node, format!("tracked pages {first}..{first}+{pages} are not on the race board"))
            .help(format!(
                "the board tracks pages 0 to {}: give `pages` of at least 1 and `first + pages` at most {max}",
                max - 1
            )));
    }
    Ok((first, pages))
}

fn tracked(a: &Args) -> NResult<Tracked> {
    let (first, pages) = tracked_range(a)?;
    Ok(Tracked { map: a.string_req("map")?, offset: a.u64_or("offset", 0)?, first, pages })
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
            let a = args(&["vcpu", "program", "gpa", "len", "byte", "iterations", "first", "pages", "allowed", "to"])?;
            Op::Guest { vcpu: a.string_or("vcpu", "cpu")?, program: program(&a, node)? }
        }
        "race" => Op::Race(Box::new(super::parse_race::parse(node)?)),
        "sleep" => Op::Sleep { duration: super::load::parse_duration(args(&["for"])?.req("for")?)? },
        "punch_cycle" | "punch_verify" => {
            let a = args(&["gmem", "map", "offset", "first", "pages"])?;
            let (gmem, pages) = (fd(&a, "gmem")?, tracked(&a)?);
            if op == "punch_cycle" { Op::PunchCycle { gmem, pages } } else { Op::PunchVerify { gmem, pages } }
        }
        "fork" => Op::Fork(Box::new(super::parse_proc::fork(node)?)),
        "repeat" => Op::Repeat(Box::new(super::parse_proc::repeat(node)?)),
        "mem_snapshot" => super::parse_proc::mem_snapshot(node)?,
        "mem_growth" => super::parse_proc::mem_growth(node)?,
        "host_check" => Op::HostCheck { pages: tracked(&args(&["map", "offset", "first", "pages"])?)? },
        "sysrq" => {
            let a = args(&["key"])?;
            let key = a.string_req("key")?;
            let mut chars = key.chars();
            match (chars.next(), chars.next()) {
                (Some(k), None) if k.is_ascii_alphanumeric() => Op::Sysrq { key: k },
                _ => {
                    return Err(NodeError::at(a.req("key")?, format!("`{key}` is not a sysrq key"))
                        .help("one letter or digit, as in Documentation/admin-guide/sysrq.rst (e.g. `key: c`)"));
                }
            }
        }
        "set_attributes" => {
            let a = args(&["vm", "gpa", "size", "attributes", "flags"])?;
            Op::SetAttributes {
                vm: a.string_or("vm", "vm")?,
                gpa: a.u64_req("gpa")?,
                size: a.u64_req("size")?,
                attributes: a.flags_or("attributes", &MEMORY_ATTRIBUTES, 0)?,
                flags: a.u64_or("flags", 0)?,
            }
        }
        "pre_fault" => {
            let a = args(&["vcpu", "gpa", "size", "flags"])?;
            Op::PreFault {
                vcpu: a.string_or("vcpu", "cpu")?,
                gpa: a.u64_req("gpa")?,
                size: a.u64_req("size")?,
                flags: a.u64_or("flags", 0)?,
            }
        }
        "enable_cap" => {
            let a = args(&["vm", "cap", "flags", "args"])?;
            let cap = cap(&a)?;
            let mut values = [0u64; 4];
            if let Some(list) = a.get("args") {
                let items = list.as_seq().ok_or_else(|| NodeError::at(list, "`args` is a list of up to 4 numbers"))?;
                if items.len() > 4 {
                    return Err(NodeError::at(list, "KVM_ENABLE_CAP takes 4 args"));
                }
                for (slot, item) in values.iter_mut().zip(items) {
                    // The hypercalls KVM_CAP_EXIT_HYPERCALL forwards may be named.
                    *slot = if cap == uapi::KVM_CAP_EXIT_HYPERCALL {
                        EXIT_HYPERCALLS.parse(item)?
                    } else {
                        names::parse_u64(item)?
                    };
                }
            }
            Op::EnableCap { vm: a.string_or("vm", "vm")?, cap, flags: a.u32_or("flags", 0)?, args: values }
        }
        other => {
            return Err(
                NodeError::at(op_node, format!("unknown step `{other}`")).help(unknown_name_help(other, STEP_NAMES))
            );
        }
    })
}

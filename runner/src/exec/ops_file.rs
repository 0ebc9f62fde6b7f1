//! Steps that are file syscalls on a descriptor: each returns the kernel's exact answer.

use super::observe::{ObsResult, Observed, sys};
use super::world::{CaseError, Obj, World};
use crate::suite::expect::FieldVal;
use crate::suite::names::{FALLOC_MODES, SEALS, WHENCE, render_size};
use crate::suite::step::{FdRef, SpliceDir};
use nix::errno::Errno;
use std::ffi::CString;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::sync::Arc;

/// Longest buffer a read/write step uses; longer requests are a case error, not a kernel verdict.
const MAX_IO: u64 = 16 << 20;

fn io_len(len: u64) -> Result<usize, CaseError> {
    if len > MAX_IO {
        return Err(CaseError(format!("I/O length {len:#x} exceeds gmemconf's {MAX_IO:#x} buffer")));
    }
    Ok(len as usize)
}

fn name(r: &FdRef) -> String {
    match r {
        FdRef::Named(n) => n.clone(),
        FdRef::Closed => "<closed fd>".into(),
        FdRef::Raw(n) => n.to_string(),
    }
}

pub fn open(w: &World, as_: &str, path: &str, write: bool) -> Result<Observed, CaseError> {
    let c = CString::new(path).map_err(|_| CaseError(format!("path `{path}` has a NUL byte")))?;
    let flags = libc::O_CLOEXEC | if write { libc::O_RDWR } else { libc::O_RDONLY };
    // SAFETY: c is a valid NUL-terminated path.
    let fd = unsafe { libc::open(c.as_ptr(), flags) };
    let obs = Observed::from_rc(sys(fd.into()), format!("open(\"{path}\")"));
    if fd >= 0 {
        // SAFETY: fd was just returned by open and is owned by nothing else.
        w.insert(as_, Obj::File(Arc::new(unsafe { OwnedFd::from_raw_fd(fd) })));
    }
    Ok(obs)
}

fn sized_file(fd: RawFd, size: u64, what: &str) -> Result<OwnedFd, CaseError> {
    if fd < 0 {
        return Err(CaseError(format!("cannot make {what}: {}", nix::errno::Errno::last())));
    }
    // SAFETY: fd was just created and is owned by nothing else.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: plain syscall on our own fd.
    if unsafe { libc::ftruncate(fd, size as i64) } < 0 {
        return Err(CaseError(format!("cannot size {what}: {}", nix::errno::Errno::last())));
    }
    Ok(owned)
}

pub fn memfd(w: &World, as_: &str, size: u64) -> Result<Observed, CaseError> {
    // SAFETY: static NUL-terminated name.
    let fd = unsafe { libc::memfd_create(c"gmemconf".as_ptr(), libc::MFD_CLOEXEC) };
    w.insert(as_, Obj::File(Arc::new(sized_file(fd, size, "a memfd")?)));
    Ok(Observed::new(ObsResult::Ok(0), format!("memfd_create, ftruncate to {}", render_size(size))))
}

pub fn tmpfile(w: &World, as_: &str, size: u64) -> Result<Observed, CaseError> {
    let dir = CString::new(std::env::temp_dir().to_string_lossy().as_bytes())
        .map_err(|_| CaseError("bad temp dir".into()))?;
    // SAFETY: valid path; O_TMPFILE makes an unnamed regular file.
    let fd = unsafe { libc::open(dir.as_ptr(), libc::O_TMPFILE | libc::O_RDWR | libc::O_CLOEXEC, 0o600) };
    w.insert(as_, Obj::File(Arc::new(sized_file(fd, size, "a regular temporary file")?)));
    Ok(Observed::new(ObsResult::Ok(0), format!("open(O_TMPFILE), ftruncate to {}", render_size(size))))
}

pub fn close(w: &World, fd: &FdRef) -> Result<Observed, CaseError> {
    match fd {
        FdRef::Named(n) if n != "kvm" => match w.get(n) {
            Some(Obj::Map(_)) => Err(CaseError(format!("`{n}` is a mapping: use `munmap`"))),
            Some(_) => {
                // Dropping the object closes its fd (a VM's vCPUs keep the VM alive in the kernel).
                w.remove(n);
                Ok(Observed::new(ObsResult::Ok(0), format!("close({n})")))
            }
            None => Err(CaseError(format!("`{n}` does not exist (closed twice?)"))),
        },
        other => {
            let raw = w.fd(other)?.raw;
            // SAFETY: closing a number that no live OwnedFd of ours owns (closed or literal).
            let rc = sys(unsafe { libc::close(raw) } as i64);
            Ok(Observed::from_rc(rc, format!("close({})", name(other))))
        }
    }
}

pub fn read(w: &World, fd: &FdRef, len: u64, offset: Option<i64>) -> Result<Observed, CaseError> {
    let held = w.fd(fd)?;
    let raw = held.raw;
    let mut buf = vec![0u8; io_len(len)?];
    // SAFETY: buf has len writable bytes.
    let rc = sys(unsafe {
        match offset {
            None => libc::read(raw, buf.as_mut_ptr().cast(), buf.len()),
            Some(off) => libc::pread(raw, buf.as_mut_ptr().cast(), buf.len(), off),
        }
    } as i64);
    let call = match offset {
        None => format!("read({}, {len})", name(fd)),
        Some(off) => format!("pread({}, {len}, offset {off:#x})", name(fd)),
    };
    Ok(with_value(rc, call))
}

pub fn write(w: &World, fd: &FdRef, len: u64, byte: u8, offset: Option<i64>) -> Result<Observed, CaseError> {
    let held = w.fd(fd)?;
    let raw = held.raw;
    let buf = vec![byte; io_len(len)?];
    // SAFETY: buf has len readable bytes.
    let rc = sys(unsafe {
        match offset {
            None => libc::write(raw, buf.as_ptr().cast(), buf.len()),
            Some(off) => libc::pwrite(raw, buf.as_ptr().cast(), buf.len(), off),
        }
    } as i64);
    let call = match offset {
        None => format!("write({}, {len} bytes of {byte:#04x})", name(fd)),
        Some(off) => format!("pwrite({}, {len} bytes of {byte:#04x}, offset {off:#x})", name(fd)),
    };
    Ok(with_value(rc, call))
}

fn with_value(rc: Result<i64, Errno>, call: String) -> Observed {
    let obs = Observed::from_rc(rc, call);
    match rc {
        Ok(v) => obs.field("value", FieldVal::Int(v.into())),
        Err(_) => obs,
    }
}

pub fn lseek(w: &World, fd: &FdRef, offset: i64, whence: u64) -> Result<Observed, CaseError> {
    let held = w.fd(fd)?;
    let raw = held.raw;
    // SAFETY: plain syscall.
    let rc = sys(unsafe { libc::lseek(raw, offset, whence as i32) } as i64);
    Ok(with_value(rc, format!("lseek({}, {offset:#x}, SEEK_{})", name(fd), WHENCE.render(whence).to_uppercase())))
}

pub fn ftruncate(w: &World, fd: &FdRef, size: i64) -> Result<Observed, CaseError> {
    let held = w.fd(fd)?;
    let raw = held.raw;
    // SAFETY: plain syscall.
    let rc = sys(unsafe { libc::ftruncate(raw, size) } as i64);
    Ok(with_value(rc, format!("ftruncate({}, {size:#x})", name(fd))))
}

pub fn fchmod(w: &World, fd: &FdRef, mode: u32) -> Result<Observed, CaseError> {
    let held = w.fd(fd)?;
    let raw = held.raw;
    // SAFETY: plain syscall.
    let rc = sys(unsafe { libc::fchmod(raw, mode) } as i64);
    Ok(with_value(rc, format!("fchmod({}, {mode:#o})", name(fd))))
}

pub fn fsync(w: &World, fd: &FdRef, data_only: bool) -> Result<Observed, CaseError> {
    let held = w.fd(fd)?;
    let raw = held.raw;
    // SAFETY: plain syscalls.
    let rc = sys(unsafe { if data_only { libc::fdatasync(raw) } else { libc::fsync(raw) } } as i64);
    Ok(with_value(rc, format!("{}({})", if data_only { "fdatasync" } else { "fsync" }, name(fd))))
}

pub fn add_seals(w: &World, fd: &FdRef, seals: u64) -> Result<Observed, CaseError> {
    let held = w.fd(fd)?;
    let raw = held.raw;
    // SAFETY: plain syscall.
    let rc = sys(unsafe { libc::fcntl(raw, libc::F_ADD_SEALS, seals as libc::c_int) } as i64);
    Ok(with_value(rc, format!("fcntl({}, F_ADD_SEALS, {})", name(fd), SEALS.render(seals))))
}

pub fn get_seals(w: &World, fd: &FdRef) -> Result<Observed, CaseError> {
    let held = w.fd(fd)?;
    let raw = held.raw;
    // SAFETY: plain syscall.
    let rc = sys(unsafe { libc::fcntl(raw, libc::F_GET_SEALS) } as i64);
    let obs = with_value(rc, format!("fcntl({}, F_GET_SEALS)", name(fd)));
    Ok(match rc {
        Ok(v) => obs.field("seals", FieldVal::Int(v.into())),
        Err(_) => obs,
    })
}

pub fn ioctl(w: &World, fd: &FdRef, request: u64, arg: u64) -> Result<Observed, CaseError> {
    let held = w.fd(fd)?;
    let raw = held.raw;
    // SAFETY: the request and integer argument are the case's; the kernel validates both, and an
    // unknown request on these files reads no user memory.
    let rc = sys(unsafe { libc::ioctl(raw, request as libc::c_ulong, arg as libc::c_ulong) } as i64);
    Ok(with_value(rc, format!("ioctl({}, {request:#x}, {arg:#x})", name(fd))))
}

fn pipe() -> Result<(OwnedFd, OwnedFd), CaseError> {
    nix::unistd::pipe().map_err(|e| CaseError(format!("pipe: {e}")))
}

fn offset_ptr(off: &mut Option<i64>) -> *mut i64 {
    match off {
        Some(o) => o,
        None => std::ptr::null_mut(),
    }
}

fn offset_text(off: Option<i64>) -> String {
    off.map_or("NULL".to_string(), |o| format!("{o:#x}"))
}

pub fn splice(w: &World, fd: &FdRef, dir: SpliceDir, len: u64, offset: Option<i64>) -> Result<Observed, CaseError> {
    use std::os::fd::AsRawFd;
    let held = w.fd(fd)?;
    let raw = held.raw;
    let (r, wr) = pipe()?;
    let mut off = offset;
    let len = len.min(4096) as usize;
    let rc = sys(match dir {
        SpliceDir::Out => {
            // SAFETY: the offset pointer is NULL or points at a live i64; the pipe is ours.
            unsafe { libc::splice(raw, offset_ptr(&mut off), wr.as_raw_fd(), std::ptr::null_mut(), len, 0) }
        }
        SpliceDir::In => {
            let data = vec![0xaau8; len];
            // SAFETY: data is readable for len bytes; a fresh pipe holds 4096 bytes without blocking.
            unsafe { libc::write(wr.as_raw_fd(), data.as_ptr().cast(), len) };
            // SAFETY: as above.
            unsafe { libc::splice(r.as_raw_fd(), std::ptr::null_mut(), raw, offset_ptr(&mut off), len, 0) }
        }
    } as i64);
    let what = match dir {
        SpliceDir::Out => format!("splice({} @ {} -> pipe, {len})", name(fd), offset_text(offset)),
        SpliceDir::In => format!("splice(pipe -> {} @ {}, {len})", name(fd), offset_text(offset)),
    };
    Ok(with_value(rc, what))
}

pub fn copy_file_range(
    w: &World,
    from: &FdRef,
    to: &FdRef,
    len: u64,
    offset_in: Option<i64>,
    offset_out: Option<i64>,
    flags: u32,
) -> Result<Observed, CaseError> {
    let (from_fd, to_fd) = (w.fd(from)?, w.fd(to)?);
    let (f, t) = (from_fd.raw, to_fd.raw);
    let (mut oi, mut oo) = (offset_in, offset_out);
    // SAFETY: each offset pointer is NULL or points at a live i64.
    let rc =
        sys(unsafe { libc::copy_file_range(f, offset_ptr(&mut oi), t, offset_ptr(&mut oo), len as usize, flags) }
            as i64);
    let call = format!(
        "copy_file_range({} @ {} -> {} @ {}, {len}, flags {flags:#x})",
        name(from),
        offset_text(offset_in),
        name(to),
        offset_text(offset_out)
    );
    Ok(with_value(rc, call))
}

pub fn sendfile(w: &World, from: &FdRef, to: &FdRef, len: u64, offset: Option<i64>) -> Result<Observed, CaseError> {
    let (from_fd, to_fd) = (w.fd(from)?, w.fd(to)?);
    let (f, t) = (from_fd.raw, to_fd.raw);
    let mut off = offset;
    // SAFETY: the offset pointer is NULL or points at a live i64.
    let rc = sys(unsafe { libc::sendfile(t, f, offset_ptr(&mut off), len as usize) } as i64);
    Ok(with_value(rc, format!("sendfile({} @ {} -> {}, {len})", name(from), offset_text(offset), name(to))))
}

pub fn fcntl(w: &World, fd: &FdRef, cmd: u64, arg: u64) -> Result<Observed, CaseError> {
    let held = w.fd(fd)?;
    let raw = held.raw;
    // SAFETY: the commands in FCNTL_CMDS take an integer argument or none.
    let rc = sys(unsafe { libc::fcntl(raw, cmd as libc::c_int, arg as libc::c_long) } as i64);
    let cmd_name = crate::suite::names::FCNTL_CMDS.render(cmd).to_uppercase();
    Ok(with_value(rc, format!("fcntl({}, F_{cmd_name}, {arg:#x})", name(fd))))
}

pub fn fchown(w: &World, fd: &FdRef, uid: u32, gid: u32) -> Result<Observed, CaseError> {
    let held = w.fd(fd)?;
    let raw = held.raw;
    // SAFETY: plain syscall.
    let rc = sys(unsafe { libc::fchown(raw, uid, gid) } as i64);
    Ok(with_value(rc, format!("fchown({}, {uid}, {gid})", name(fd))))
}

pub fn futimens(w: &World, fd: &FdRef) -> Result<Observed, CaseError> {
    let held = w.fd(fd)?;
    let raw = held.raw;
    // SAFETY: a NULL times pointer sets both timestamps to now.
    let rc = sys(unsafe { libc::futimens(raw, std::ptr::null()) } as i64);
    Ok(with_value(rc, format!("futimens({}, now)", name(fd))))
}

pub fn fallocate(w: &World, fd: &FdRef, mode: u64, offset: i64, len: i64) -> Result<Observed, CaseError> {
    let held = w.fd(fd)?;
    let raw = held.raw;
    // SAFETY: plain syscall.
    let rc = sys(unsafe { libc::fallocate(raw, mode as libc::c_int, offset, len) } as i64);
    if rc.is_ok()
        && mode & libc::FALLOC_FL_PUNCH_HOLE as u64 != 0
        && let Some(b) = w.board_if_made()
    {
        b.counts.punches.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        if b.guest_running() {
            b.counts.punches_while_guest_ran.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
    }
    Ok(with_value(
        rc,
        format!("fallocate({}, {}, offset {offset:#x}, len {len:#x})", name(fd), FALLOC_MODES.render(mode)),
    ))
}

pub fn fstat(w: &World, fd: &FdRef) -> Result<Observed, CaseError> {
    let held = w.fd(fd)?;
    let raw = held.raw;
    // SAFETY: st is plain old data the kernel fills.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: st is a valid, writable struct stat.
    let rc = sys(unsafe { libc::fstat(raw, &mut st) } as i64);
    let obs = Observed::from_rc(rc, format!("fstat({})", name(fd)));
    if rc.is_err() {
        return Ok(obs);
    }
    let kind = match st.st_mode & libc::S_IFMT {
        libc::S_IFREG => "regular",
        libc::S_IFDIR => "directory",
        libc::S_IFCHR => "char",
        libc::S_IFBLK => "block",
        libc::S_IFIFO => "fifo",
        libc::S_IFSOCK => "socket",
        libc::S_IFLNK => "symlink",
        _ => "unknown",
    };
    Ok(obs
        .field("value", FieldVal::Int(0))
        .field("size", FieldVal::Int(st.st_size.into()))
        .field("blocks", FieldVal::Int(st.st_blocks.into()))
        .field("blksize", FieldVal::Int(st.st_blksize.into()))
        .field("nlink", FieldVal::Int(st.st_nlink.into()))
        .field("perm", FieldVal::Int((st.st_mode & 0o7777).into()))
        .field("type", FieldVal::Word(kind.into()))
        .field("ino", FieldVal::Int(st.st_ino.into())))
}

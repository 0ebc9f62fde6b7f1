//! Steps on this process's mappings: mmap, mprotect, madvise, and byte access through them.

use super::observe::{ObsResult, Observed, sys};
use super::world::{CaseError, Mapping, Obj, World};
use crate::suite::expect::FieldVal;
use crate::suite::names::{MADVISE, MAP_FLAGS, PROT, render_size};
use crate::suite::step::FdRef;
use std::sync::Arc;

pub fn mmap(
    w: &World,
    as_: &str,
    fd: Option<&FdRef>,
    len: u64,
    offset: i64,
    prot: u64,
    flags: u64,
) -> Result<Observed, CaseError> {
    let (raw, flags, what) = match fd {
        Some(f) => (Some(w.fd(f)?), flags as i32, format!("{f:?}")),
        None => (None, flags as i32 | libc::MAP_ANONYMOUS, "anonymous".to_string()),
    };
    let call = format!(
        "mmap({what}, len {}, offset {offset:#x}, {}, {})",
        render_size(len),
        PROT.render(prot),
        MAP_FLAGS.render(flags as u64 & !(libc::MAP_ANONYMOUS as u64))
    );
    match Mapping::map(len as usize, prot as i32, flags, raw.as_ref().map_or(-1, |h| h.raw), offset) {
        Ok(m) => {
            w.insert(as_, Obj::Map(Arc::new(m)));
            Ok(Observed::new(ObsResult::Ok(0), call))
        }
        Err(e) => Ok(Observed::new(ObsResult::Errno(e), call)),
    }
}

pub fn munmap(w: &World, map: &str) -> Result<Observed, CaseError> {
    w.map(map)?;
    w.remove(map);
    Ok(Observed::new(ObsResult::Ok(0), format!("munmap({map})")))
}

/// The sub-range of a mapping a step names; outside the mapping is a case error.
fn range(m: &Mapping, map: &str, offset: u64, len: Option<u64>) -> Result<(*mut u8, usize), CaseError> {
    let len = len.unwrap_or((m.len as u64).saturating_sub(offset));
    if offset.checked_add(len).is_none_or(|end| end > m.len as u64) {
        return Err(CaseError(format!("range {offset:#x}+{len:#x} is outside mapping `{map}` ({:#x} bytes)", m.len)));
    }
    // SAFETY: offset is within the mapping, checked above.
    Ok((unsafe { m.ptr.add(offset as usize) }, len as usize))
}

pub fn mprotect(w: &World, map: &str, offset: u64, len: Option<u64>, prot: u64) -> Result<Observed, CaseError> {
    let m = w.map(map)?;
    let (ptr, len) = range(&m, map, offset, len)?;
    // SAFETY: the range lies in a mapping we own; no Rust reference points into it.
    let rc = sys(unsafe { libc::mprotect(ptr.cast(), len, prot as i32) } as i64);
    Ok(Observed::from_rc(rc, format!("mprotect({map}+{offset:#x}, {len:#x}, {})", PROT.render(prot))))
}

pub fn madvise(w: &World, map: &str, offset: u64, len: Option<u64>, advice: u64) -> Result<Observed, CaseError> {
    let m = w.map(map)?;
    let (ptr, len) = range(&m, map, offset, len)?;
    // SAFETY: as for mprotect.
    let rc = sys(unsafe { libc::madvise(ptr.cast(), len, advice as i32) } as i64);
    Ok(Observed::from_rc(
        rc,
        format!("madvise({map}+{offset:#x}, {len:#x}, MADV_{})", MADVISE.render(advice).to_uppercase()),
    ))
}

pub fn mem_write(w: &World, map: &str, offset: u64, len: u64, byte: u8) -> Result<Observed, CaseError> {
    let m = w.map(map)?;
    let (ptr, len) = range(&m, map, offset, Some(len))?;
    for i in 0..len {
        // SAFETY: within the mapping (checked); volatile so that each byte really is touched
        // and a fault lands on the byte that causes it.
        unsafe { ptr.add(i).write_volatile(byte) };
    }
    Ok(Observed::new(ObsResult::Ok(0), format!("write {len:#x} bytes of {byte:#04x} at {map}+{offset:#x}")))
}

pub fn mem_read(w: &World, map: &str, offset: u64, len: u64) -> Result<Observed, CaseError> {
    let m = w.map(map)?;
    let (ptr, len) = range(&m, map, offset, Some(len))?;
    let mut seen = [false; 256];
    let mut first_other: Option<(usize, u8)> = None;
    let mut first: Option<u8> = None;
    for i in 0..len {
        // SAFETY: within the mapping (checked); volatile for the same reason as mem_write.
        let b = unsafe { ptr.add(i).read_volatile() };
        seen[b as usize] = true;
        match first {
            None => first = Some(b),
            Some(f) if f != b && first_other.is_none() => first_other = Some((i, b)),
            _ => {}
        }
    }
    let mut obs = Observed::new(ObsResult::Ok(0), format!("read {len:#x} bytes at {map}+{offset:#x}"));
    match (first, first_other) {
        (Some(f), None) => obs = obs.field("bytes", FieldVal::Int(f.into())),
        (Some(f), Some((at, b))) => {
            let members = (0..256).filter(|v| seen[*v as usize]).collect();
            obs = obs.field("bytes", FieldVal::Set(members));
            obs.note = Some(format!("bytes differ: {f:#04x} at +{offset:#x}, {b:#04x} at +{:#x}", offset + at as u64));
        }
        _ => {}
    }
    Ok(obs)
}

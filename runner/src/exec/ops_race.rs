//! Steps on the race board's tracked pages (see exec::board): punch and rewrite, check through the
//! host mapping, and check that guest writes landed in the file.

use super::board::{Board, Seen};
use super::observe::{ObsResult, Observed, sys};
use super::race::pick;
use super::world::{CaseError, Mapping, World};
use crate::kvm::gmem::{FALLOC_FL_KEEP_SIZE, FALLOC_FL_PUNCH_HOLE};
use crate::suite::expect::FieldVal;
use crate::suite::step::{FdRef, Tracked};
use std::sync::atomic::Ordering;

const PAGE: u64 = 4096;

/// A random tracked page: its board index, its offset in the mapping and file, and the host
/// address of its first byte.
fn page_of(map: &Mapping, t: &Tracked) -> Result<(u64, u64, *mut u8), CaseError> {
    let i = pick(t.pages);
    let (page, offset) = (t.first + i, t.offset + i * PAGE);
    if offset + PAGE > map.len as u64 {
        return Err(CaseError(format!(
            "tracked page {page} (offset {offset:#x}) is outside mapping `{}` ({:#x} bytes)",
            t.map, map.len
        )));
    }
    // SAFETY: offset + 4K is within the mapping (checked).
    Ok((page, offset, unsafe { map.ptr.add(offset as usize) }))
}

fn punch(board: &Board, fd: i32, offset: u64) -> Result<i64, nix::errno::Errno> {
    // SAFETY: plain syscall on a descriptor the caller holds.
    let rc =
        sys(unsafe { libc::fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, offset as i64, PAGE as i64) }
            as i64);
    if rc.is_ok() {
        board.counts.punches.fetch_add(1, Ordering::SeqCst);
        if board.guest_running() {
            board.counts.punches_while_guest_ran.fetch_add(1, Ordering::SeqCst);
        }
    }
    rc
}

fn with_verdict(obs: Observed, verdict: Result<(), String>) -> Observed {
    static NONE: std::sync::LazyLock<FieldVal> = std::sync::LazyLock::new(|| FieldVal::Word("none".into()));
    match verdict {
        Ok(()) => obs.field("violation", NONE.clone()),
        Err(why) => {
            let mut obs = obs.field("violation", FieldVal::Word("found".into()));
            obs.note = Some(why);
            obs
        }
    }
}

pub fn punch_cycle(w: &World, gmem: &FdRef, t: &Tracked) -> Result<Observed, CaseError> {
    let board = w.board()?;
    let map = w.map(&t.map)?;
    let fd = w.fd(gmem)?;
    let (page, offset, at) = page_of(&map, t)?;
    if let Err(e) = punch(&board, fd.raw, offset) {
        let call = format!("punch page {page} (offset {offset:#x}) of the guest_memfd");
        return Ok(Observed::new(ObsResult::Errno(e), call));
    }
    let generation = board.next_gen(page);
    // SAFETY: `at` is the first byte of a tracked page inside the mapping (page_of).
    unsafe { Board::write_page(at, board.tag(page), generation) };
    board.publish(page, generation);
    // The hot path of every race: nothing here can fail past the punch, so no arguments to format.
    Ok(with_verdict(Observed::new(ObsResult::Ok(0), "punch_cycle: punch, rewrite and publish a page"), Ok(())))
}

pub fn host_check(w: &World, t: &Tracked) -> Result<Observed, CaseError> {
    let board = w.board()?;
    let map = w.map(&t.map)?;
    let (page, offset, at) = page_of(&map, t)?;
    let epoch = board.epoch(page);
    // SAFETY: as in punch_cycle.
    let (tag, generation) = unsafe { Board::read_page(at) };
    let c = &board.counts;
    c.host_reads.fetch_add(1, Ordering::SeqCst);
    let verdict = board.judge(page, epoch, tag, generation);
    if let Ok(seen) = verdict {
        if seen == Seen::Hole {
            c.host_zero_reads.fetch_add(1, Ordering::SeqCst);
        }
        if board.host_saw(page, seen) {
            c.host_fresh_zero.fetch_add(1, Ordering::SeqCst);
        }
    }
    let obs = Observed::new(
        ObsResult::Ok(0),
        format!(
            "read page {page} (offset {offset:#x}) through `{}` after epoch {epoch}: tag {tag:#x}, generation {generation}",
            t.map
        ),
    );
    Ok(with_verdict(obs, verdict.map(drop)))
}

/// First checks the page against what a guest `write_loop` published since this step last
/// punched it, then punches it again.
pub fn punch_verify(w: &World, gmem: &FdRef, t: &Tracked) -> Result<Observed, CaseError> {
    let board = w.board()?;
    let map = w.map(&t.map)?;
    let fd = w.fd(gmem)?;
    let (page, offset, at) = page_of(&map, t)?;
    let punched_at = board.punched_at(page);
    let done = board.guest_done(page);
    // SAFETY: as in punch_cycle.
    let (tag, generation) = unsafe { Board::read_page(at) };
    let started = board.guest_start(page);
    let verdict = if done > punched_at {
        // A guest write that began after the last punch had completed has finished: it is in the
        // file, or a newer one is.
        board.counts.guest_writes_checked.fetch_add(1, Ordering::SeqCst);
        if tag == 0 || generation == 0 {
            Err(format!(
                "the guest finished writing generation {done} to page {page} after its punch, but the file has a hole there: the write went to a page the punch had freed"
            ))
        } else if tag != board.tag(page) {
            Err(format!(
                "page {page} carries tag {tag:#x}, not its own {:#x}: another page's or VM's data",
                board.tag(page)
            ))
        } else if generation < done || generation > started {
            Err(format!(
                "page {page} holds generation {generation} in the file, but the guest had finished writing {done} (and begun at most {started}): the file and the guest's view disagree"
            ))
        } else {
            Ok(())
        }
    } else {
        Ok(())
    };
    let call = format!(
        "page {page} (offset {offset:#x}) through `{}`: tag {tag:#x}, generation {generation}; guest done {done}, last punch after start {punched_at}; then punch it",
        t.map
    );
    if verdict.is_err() {
        return Ok(with_verdict(Observed::new(ObsResult::Ok(0), call), verdict));
    }
    if let Err(e) = punch(&board, fd.raw, offset) {
        return Ok(Observed::new(ObsResult::Errno(e), call));
    }
    board.note_punch(page);
    Ok(with_verdict(Observed::new(ObsResult::Ok(0), call), Ok(())))
}

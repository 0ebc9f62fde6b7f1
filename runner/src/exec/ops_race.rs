//! Steps on the race board's tracked pages (see exec::board): punch and rewrite, check through the
//! host mapping, and check that guest writes landed in the file.
//!
//! Races run these steps millions of times, so they are split in two: the objects a step uses are
//! looked up once (`BoardTargets`), which a race thread may keep while the World is unchanged, and
//! the common outcome, success with the board's rules kept, is `Clean` and builds nothing; the
//! observation it stands for is `clean_observation`, judged like any other.

use super::board::{Board, Seen};
use super::observe::{ObsResult, Observed, sys};
use super::race::pick;
use super::world::{CaseError, HeldFd, Mapping, World};
use crate::kvm::gmem::{FALLOC_FL_KEEP_SIZE, FALLOC_FL_PUNCH_HOLE};
use crate::suite::expect::FieldVal;
use crate::suite::step::{FdRef, Op, Tracked};
use std::sync::Arc;
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
        board.counts.punches.fetch_add(1, Ordering::Relaxed);
        if board.guest_running() {
            board.counts.punches_while_guest_ran.fetch_add(1, Ordering::Relaxed);
        }
    }
    rc
}

/// The objects a board step uses.
pub struct BoardTargets {
    board: Arc<Board>,
    map: Arc<Mapping>,
    fd: Option<HeldFd>,
}

/// Whether `op` is one of the board steps (PunchCycle, HostCheck, PunchVerify).
pub fn is_board_op(op: &Op) -> bool {
    matches!(op, Op::PunchCycle { .. } | Op::HostCheck { .. } | Op::PunchVerify { .. })
}

impl BoardTargets {
    /// Looks up what a board step uses.
    pub fn of(w: &World, op: &Op) -> Result<BoardTargets, CaseError> {
        let (gmem, tracked) = match op {
            Op::PunchCycle { gmem, pages } | Op::PunchVerify { gmem, pages } => (Some(gmem), pages),
            Op::HostCheck { pages } => (None, pages),
            _ => return Err(CaseError(format!("`{}` is not a board step", op.name()))),
        };
        let fd = gmem.map(|g| w.fd(g)).transpose()?;
        Ok(BoardTargets { board: w.board()?, map: w.map(&tracked.map)?, fd })
    }

    /// Whether these may be kept from one step to the next while the World is unchanged: not when
    /// the step names a descriptor by number, which stands for whatever is open there now.
    pub fn reusable(op: &Op) -> bool {
        match op {
            Op::PunchCycle { gmem, .. } | Op::PunchVerify { gmem, .. } => matches!(gmem, FdRef::Named(_)),
            _ => true,
        }
    }
}

/// How a board step went.
pub enum BoardStep {
    /// It succeeded and the page kept the board's rules: `clean_observation` is what it observed.
    Clean,
    Observed(Observed),
}

impl BoardStep {
    pub fn into_observed(self, op: &Op) -> Observed {
        match self {
            BoardStep::Clean => clean_observation(op),
            BoardStep::Observed(o) => o,
        }
    }
}

/// What a board step that went `Clean` observed.
pub fn clean_observation(op: &Op) -> Observed {
    let call = match op {
        Op::PunchCycle { .. } => "punch_cycle: punch, rewrite and publish a page",
        Op::HostCheck { .. } => "host_check: read a page through the mapping",
        _ => "punch_verify: check a page the guest wrote, then punch it",
    };
    Observed::new(ObsResult::Ok(0), call).field("violation", FieldVal::Word("none".into()))
}

/// Performs a board step (PunchCycle, HostCheck or PunchVerify) on its targets.
pub fn perform_board(t: &BoardTargets, op: &Op) -> Result<BoardStep, CaseError> {
    match (op, &t.fd) {
        (Op::PunchCycle { pages, .. }, Some(fd)) => punch_cycle(t, fd.raw, pages),
        (Op::PunchVerify { pages, .. }, Some(fd)) => punch_verify(t, fd.raw, pages),
        (Op::HostCheck { pages }, _) => host_check(t, pages),
        _ => Err(CaseError(format!("`{}` is not a board step with its targets", op.name()))),
    }
}

fn violation(obs: Observed, why: String) -> BoardStep {
    let mut obs = obs.field("violation", FieldVal::Word("found".into()));
    obs.note = Some(why);
    BoardStep::Observed(obs)
}

fn punch_cycle(t: &BoardTargets, fd: i32, tracked: &Tracked) -> Result<BoardStep, CaseError> {
    let (page, offset, at) = page_of(&t.map, tracked)?;
    if let Err(e) = punch(&t.board, fd, offset) {
        let call = format!("punch page {page} (offset {offset:#x}) of the guest_memfd");
        return Ok(BoardStep::Observed(Observed::new(ObsResult::Errno(e), call)));
    }
    let generation = t.board.next_gen(page);
    // SAFETY: `at` is the first byte of a tracked page inside the mapping (page_of).
    unsafe { Board::write_page(at, t.board.tag(page), generation) };
    t.board.publish(page, generation);
    Ok(BoardStep::Clean)
}

fn host_check(t: &BoardTargets, tracked: &Tracked) -> Result<BoardStep, CaseError> {
    let board = &t.board;
    let (page, offset, at) = page_of(&t.map, tracked)?;
    let epoch = board.epoch(page);
    // SAFETY: as in punch_cycle.
    let (tag, generation) = unsafe { Board::read_page(at) };
    let c = &board.counts;
    c.host_reads.fetch_add(1, Ordering::Relaxed);
    match board.judge(page, epoch, tag, generation) {
        Ok(seen) => {
            if seen == Seen::Hole {
                c.host_zero_reads.fetch_add(1, Ordering::Relaxed);
            }
            if board.host_saw(page, seen) {
                c.host_fresh_zero.fetch_add(1, Ordering::Relaxed);
            }
            Ok(BoardStep::Clean)
        }
        Err(why) => {
            let call = format!(
                "read page {page} (offset {offset:#x}) through `{}` after epoch {epoch}: tag {tag:#x}, generation {generation}",
                tracked.map
            );
            Ok(violation(Observed::new(ObsResult::Ok(0), call), why))
        }
    }
}

/// First checks the page against what a guest `write_loop` published since this step last
/// punched it, then punches it again.
fn punch_verify(t: &BoardTargets, fd: i32, tracked: &Tracked) -> Result<BoardStep, CaseError> {
    let board = &t.board;
    let (page, offset, at) = page_of(&t.map, tracked)?;
    let punched_at = board.punched_at(page);
    let done = board.guest_done(page);
    // SAFETY: as in punch_cycle.
    let (tag, generation) = unsafe { Board::read_page(at) };
    let started = board.guest_start(page);
    let verdict = if done > punched_at {
        // A guest write that began after the last punch had completed has finished: it is in the
        // file, or a newer one is.
        board.counts.guest_writes_checked.fetch_add(1, Ordering::Relaxed);
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
    let call = || {
        format!(
            "page {page} (offset {offset:#x}) through `{}`: tag {tag:#x}, generation {generation}; guest done {done}, last punch after start {punched_at}; then punch it",
            tracked.map
        )
    };
    if let Err(why) = verdict {
        return Ok(violation(Observed::new(ObsResult::Ok(0), call()), why));
    }
    if let Err(e) = punch(board, fd, offset) {
        return Ok(BoardStep::Observed(Observed::new(ObsResult::Errno(e), call())));
    }
    board.note_punch(page);
    Ok(BoardStep::Clean)
}

//! The race board: memory shared by a case's host threads and its guests (a normal memslot at
//! BOARD_GPA in every VM of the case), through which they agree on what a tracked page may hold.
//!
//! A tracked page starts with two dwords: `tag` (names the page, and the run through a salt;
//! never 0) and `generation` (counts the writes to the page). A hole (never written, or punched) reads
//! 0 in both. Writers store generation, then tag, then publish generation in the page's epoch slot; checkers read
//! the epoch, then tag, then generation. So a page whose generation is older than the epoch it was read after is
//! a stale page (a mapping, or a stage-2 entry, that outlived a punch), a wrong tag is another
//! page's or another VM's data, and a generation never handed out is garbage. A zero in either dword is a
//! hole (a punch may land between the two loads).

use super::world::Mapping;
use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

pub const BOARD_GPA: u64 = 0xffe0_0000;
pub const BOARD_SIZE: usize = 64 * 1024;

/// Offsets in the board, shared with the guest programs.
pub const STOP: u64 = 0x0;
pub const SALT: u64 = 0x4;
/// Where a guest checker leaves what it found wrong before it reports on PORT_VIOLATION.
pub const V_PAGE: u64 = 0x40;
pub const V_TAG: u64 = 0x44;
pub const V_GEN: u64 = 0x48;
pub const V_EPOCH: u64 = 0x4c;
/// The tag of each page, one dword per page, for the guests.
pub const TAGS: u64 = 0x800;
/// Host writers' published gens, one dword per page.
pub const EPOCH: u64 = 0x1000;
/// Guest writers: the generation a write is about to store, and the generation it stored.
pub const START: u64 = 0x2000;
pub const DONE: u64 = 0x3000;
/// Per-vCPU scratch: counters at +0, the last value seen of each page at +LAST.
pub const SCRATCH: u64 = 0x4000;
pub const SCRATCH_SIZE: u64 = 0x1000;
pub const LAST: u64 = 0x800;
pub const MAX_PAGES: u64 = 512;
pub const MAX_GUESTS: u64 = (BOARD_SIZE as u64 - SCRATCH) / SCRATCH_SIZE;

/// Counters each guest program keeps in its scratch area, in this order.
pub const GUEST_COUNTERS: &[&str] = &[
    "passes",
    "reads",
    "zero reads",
    "fresh zero pages",
    "refilled pages",
    "writes",
    "reads of allowed value 1",
    "reads of allowed value 2",
    "reads of allowed value 3",
    "reads of allowed value 4",
];
pub const C_PASSES: u64 = 0;
pub const C_READS: u64 = 4;
pub const C_ZEROS: u64 = 8;
pub const C_FRESH_ZERO: u64 = 12;
pub const C_REFILL: u64 = 16;
pub const C_WRITES: u64 = 20;
/// `scan_loop`: how often each allowed value was read (4 counters).
pub const C_SEEN: u64 = 24;

/// What the host side counted during races, for the interleaving report.
#[derive(Default)]
pub struct HostCounts {
    pub punches: AtomicU64,
    pub punches_while_guest_ran: AtomicU64,
    pub host_reads: AtomicU64,
    pub host_zero_reads: AtomicU64,
    pub host_fresh_zero: AtomicU64,
    pub guest_writes_checked: AtomicU64,
    pub slot_changes_while_guest_ran: AtomicU64,
    pub guest_exits: AtomicU64,
}

pub struct Board {
    mem: Mapping,
    /// Highest generation handed out per page (a value above it was never written).
    latest: Vec<AtomicU32>,
    /// What `start` of a page said right after this host last punched it.
    punched_at: Vec<AtomicU32>,
    /// The last tag/gen pair host checks saw per page, for counting fresh holes.
    host_last: Vec<AtomicU32>,
    /// vCPUs inside KVM_RUN right now.
    pub guests_running: AtomicU32,
    pub counts: HostCounts,
    /// Guest counters summed over every run of a board program, per vCPU.
    guest_totals: Vec<[AtomicU64; GUEST_COUNTER_COUNT]>,
    /// How guest runs ended, other than by halting, during races.
    exits: Mutex<BTreeMap<String, u64>>,
}

const GUEST_COUNTER_COUNT: usize = 10;

/// One page as a checker saw it, judged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen {
    Hole,
    /// The page's generation.
    Value(u32),
}

impl Board {
    pub fn new() -> Result<Board, String> {
        let mem = Mapping::anonymous(BOARD_SIZE).map_err(|e| format!("cannot map the race board: {e}"))?;
        let pages = MAX_PAGES as usize;
        let board = Board {
            mem,
            latest: (0..pages).map(|_| AtomicU32::new(0)).collect(),
            punched_at: (0..pages).map(|_| AtomicU32::new(0)).collect(),
            host_last: (0..pages).map(|_| AtomicU32::new(0)).collect(),
            guests_running: AtomicU32::new(0),
            counts: HostCounts::default(),
            guest_totals: (0..MAX_GUESTS).map(|_| std::array::from_fn(|_| AtomicU64::new(0))).collect(),
            exits: Mutex::new(BTreeMap::new()),
        };
        board.reset(1);
        Ok(board)
    }

    pub fn host_addr(&self) -> u64 {
        self.mem.addr()
    }

    fn word(&self, offset: u64) -> &AtomicU32 {
        assert!(offset + 4 <= BOARD_SIZE as u64 && offset.is_multiple_of(4), "board offset {offset:#x}");
        // SAFETY: in bounds and aligned (checked); the mapping lives as long as self, and every
        // access to board memory, host or guest, is a plain aligned dword access.
        unsafe { AtomicU32::from_ptr(self.mem.ptr.add(offset as usize).cast()) }
    }

    /// Starts a race afresh: a new salt, nothing written, nothing counted.
    pub fn reset(&self, salt: u32) {
        self.word(STOP).store(0, Ordering::SeqCst);
        self.word(SALT).store(salt, Ordering::SeqCst);
        for page in 0..MAX_PAGES {
            self.word(TAGS + 4 * page).store(tag(salt, page), Ordering::SeqCst);
            for table in [EPOCH, START, DONE] {
                self.word(table + 4 * page).store(0, Ordering::SeqCst);
            }
        }
        for v in self.latest.iter().chain(&self.punched_at).chain(&self.host_last) {
            v.store(0, Ordering::SeqCst);
        }
        for counter in self.guest_totals.iter().flatten() {
            counter.store(0, Ordering::SeqCst);
        }
        let c = &self.counts;
        for counter in [
            &c.punches,
            &c.punches_while_guest_ran,
            &c.host_reads,
            &c.host_zero_reads,
            &c.host_fresh_zero,
            &c.guest_writes_checked,
            &c.slot_changes_while_guest_ran,
            &c.guest_exits,
        ] {
            counter.store(0, Ordering::SeqCst);
        }
        self.exits.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }

    pub fn guest_running(&self) -> bool {
        self.guests_running.load(Ordering::SeqCst) > 0
    }

    /// Adds a finished board program's counters to its vCPU's totals.
    pub fn add_guest_run(&self, vcpu: u64) {
        if let Some(totals) = self.guest_totals.get(vcpu as usize) {
            for (i, total) in totals.iter().enumerate() {
                total.fetch_add(self.guest_counter(vcpu, 4 * i as u64).into(), Ordering::SeqCst);
            }
        }
    }

    /// Per vCPU that ran a board program: its summed counters, in GUEST_COUNTERS order.
    pub fn guest_totals(&self) -> Vec<(u64, [u64; GUEST_COUNTER_COUNT])> {
        self.guest_totals
            .iter()
            .enumerate()
            .map(|(v, t)| (v as u64, std::array::from_fn(|i| t[i].load(Ordering::SeqCst))))
            .filter(|(_, t)| t.iter().any(|c| *c > 0))
            .collect()
    }

    pub fn count_exit(&self, word: &str) {
        *self.exits.lock().unwrap_or_else(|p| p.into_inner()).entry(word.to_string()).or_default() += 1;
    }

    pub fn exit_counts(&self) -> Vec<(String, u64)> {
        self.exits.lock().unwrap_or_else(|p| p.into_inner()).iter().map(|(k, v)| (k.clone(), *v)).collect()
    }

    /// Records what a host check saw of `page`; true if it was a hole where a value was before.
    pub fn host_saw(&self, page: u64, seen: Seen) -> bool {
        let now = match seen {
            Seen::Hole => 0,
            Seen::Value(g) => g,
        };
        self.host_last[page as usize].swap(now, Ordering::SeqCst) != 0 && now == 0
    }

    /// Reads the tag and generation of a tracked page at `at` (the host view of its first byte),
    /// in the order checkers must: tag, then generation.
    ///
    /// # Safety
    /// `at` must point to at least 8 bytes of readable memory, 4-byte aligned.
    pub unsafe fn read_page(at: *const u8) -> (u32, u32) {
        // SAFETY: the caller guarantees 8 readable aligned bytes.
        unsafe {
            let tag = AtomicU32::from_ptr(at as *mut u32).load(Ordering::Acquire);
            let generation = AtomicU32::from_ptr(at.add(4) as *mut u32).load(Ordering::Acquire);
            (tag, generation)
        }
    }

    /// Writes a tracked page the way writers must: generation, then tag.
    ///
    /// # Safety
    /// As for `read_page`, writable.
    pub unsafe fn write_page(at: *mut u8, tag: u32, generation: u32) {
        // SAFETY: the caller guarantees 8 writable aligned bytes.
        unsafe {
            AtomicU32::from_ptr(at.add(4) as *mut u32).store(generation, Ordering::Release);
            AtomicU32::from_ptr(at as *mut u32).store(tag, Ordering::Release);
        }
    }

    pub fn stop(&self) {
        self.word(STOP).store(1, Ordering::SeqCst);
    }

    pub fn stopped(&self) -> bool {
        self.word(STOP).load(Ordering::SeqCst) != 0
    }

    pub fn salt(&self) -> u32 {
        self.word(SALT).load(Ordering::Relaxed)
    }

    /// The tag of page `page`: never 0, so a tagged value is never mistaken for a hole.
    pub fn tag(&self, page: u64) -> u32 {
        tag(self.salt(), page)
    }

    pub fn epoch(&self, page: u64) -> u32 {
        self.word(EPOCH + 4 * page).load(Ordering::Acquire)
    }

    /// A host writer takes the next generation of `page` before writing it.
    pub fn next_gen(&self, page: u64) -> u32 {
        self.latest[page as usize].fetch_add(1, Ordering::SeqCst).wrapping_add(1)
    }

    pub fn publish(&self, page: u64, generation: u32) {
        self.word(EPOCH + 4 * page).store(generation, Ordering::Release);
    }

    pub fn latest(&self, page: u64) -> u32 {
        self.latest[page as usize].load(Ordering::SeqCst)
    }

    pub fn violation(&self, vcpu: u64) -> (u64, u32, u32, u32) {
        let base = SCRATCH + vcpu * SCRATCH_SIZE;
        let at = |off| self.word(base + off).load(Ordering::SeqCst);
        (at(V_PAGE).into(), at(V_TAG), at(V_GEN), at(V_EPOCH))
    }

    pub fn guest_start(&self, page: u64) -> u32 {
        self.word(START + 4 * page).load(Ordering::Acquire)
    }

    pub fn guest_done(&self, page: u64) -> u32 {
        self.word(DONE + 4 * page).load(Ordering::Acquire)
    }

    pub fn note_punch(&self, page: u64) {
        let start = self.guest_start(page);
        self.punched_at[page as usize].store(start, Ordering::SeqCst);
    }

    pub fn punched_at(&self, page: u64) -> u32 {
        self.punched_at[page as usize].load(Ordering::SeqCst)
    }

    pub fn guest_counter(&self, vcpu: u64, counter: u64) -> u32 {
        self.word(SCRATCH + vcpu * SCRATCH_SIZE + counter).load(Ordering::Relaxed)
    }

    /// Clears a guest's counters and its memory of each page before it runs.
    pub fn clear_guest(&self, vcpu: u64) {
        for off in (0..SCRATCH_SIZE).step_by(4) {
            self.word(SCRATCH + vcpu * SCRATCH_SIZE + off).store(0, Ordering::Relaxed);
        }
    }

    /// Judges the tag and generation read from `page` after reading `epoch`: Ok, or what is wrong.
    pub fn judge(&self, page: u64, epoch: u32, tag: u32, generation: u32) -> Result<Seen, String> {
        if tag == 0 || generation == 0 {
            return Ok(Seen::Hole);
        }
        if tag != self.tag(page) {
            return Err(format!(
                "page {page} carries tag {tag:#x}, not its own {:#x}: another page's or another VM's data",
                self.tag(page)
            ));
        }
        if generation < epoch {
            return Err(format!(
                "page {page} holds generation {generation} after generation {epoch} was written and published: a stale page that outlived a punch"
            ));
        }
        if generation > self.latest(page) {
            return Err(format!(
                "page {page} holds generation {generation}, but only {} were ever written: garbage",
                self.latest(page)
            ));
        }
        Ok(Seen::Value(generation))
    }
}

pub fn tag(salt: u32, page: u64) -> u32 {
    ((salt as u64 + page) % 255 + 1) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_are_never_zero_and_differ_between_neighbours() {
        for salt in [0, 7, 254, u32::MAX] {
            for page in 0..MAX_PAGES {
                assert_ne!(tag(salt, page), 0);
                assert_ne!(tag(salt, page), tag(salt, page + 1));
            }
        }
    }

    #[test]
    fn the_judge_names_each_kind_of_wrong_page() {
        let b = Board::new().expect("board");
        b.reset(3);
        let g1 = b.next_gen(5);
        let g2 = b.next_gen(5);
        let t = b.tag(5);
        assert_eq!(b.judge(5, g2, 0, 0), Ok(Seen::Hole));
        assert_eq!(b.judge(5, g2, t, 0), Ok(Seen::Hole));
        assert_eq!(b.judge(5, g1, t, g2), Ok(Seen::Value(g2)));
        assert!(b.judge(5, g2, t, g1).expect_err("stale").contains("stale"));
        assert!(b.judge(5, 0, b.tag(6), g1).expect_err("foreign").contains("another"));
        assert!(b.judge(5, 0, t, g2 + 1).expect_err("garbage").contains("garbage"));
    }
}

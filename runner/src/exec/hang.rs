//! What a race reports of a thread that did not stop when the race ended: whether its guest still
//! made progress, where the thread spent its time, and what KVM counted for its vCPU meanwhile.

use super::board::{Board, C_PASSES};
use super::world::World;
use crate::kvm::stats::Stats;
use crate::suite::step::{Op, Step};
use std::time::Duration;

/// What a stuck `guest` step's thread does over a short window: whether its board program still
/// makes passes (counted in the board page, as the host sees it) while the stop flag is set in
/// that same page, and where the thread spends its time (see `ThreadTimes`).
pub fn whereabouts(world: &World, board: &Board, step: &Step, tid: u64) -> Option<String> {
    let Op::Guest { vcpu, program } = &step.op else { return None };
    let obj = world.vcpu(vcpu).ok()?;
    let id = obj.id;
    let stats = obj.running_stats();
    let passes = || board.guest_counter(id, C_PASSES);
    let kvm_counts = || stats.as_ref().map(|s| s.read()).unwrap_or_default();
    let (before, stop, times, counted) = (passes(), board.stopped(), ThreadTimes::read(tid), kvm_counts());
    std::thread::sleep(PROGRESS_WINDOW);
    let made = passes().wrapping_sub(before);
    let grown = Stats::grown(&counted, &kvm_counts());
    let window = PROGRESS_WINDOW.as_millis();
    let mut said = if !program.uses_board() {
        String::new()
    } else if made > 0 {
        format!(
            "its guest made {made} passes in {window} ms while the host's view of the board page had the stop flag {}set",
            if stop { "" } else { "not " }
        )
    } else {
        format!("its guest made no pass in {window} ms (not running, or not reaching the board page the host sees)")
    };
    if let (Some(a), Some(b)) = (times, ThreadTimes::read(tid)) {
        if !said.is_empty() {
            said.push_str("; ");
        }
        said.push_str(&a.compared_with(&b, window));
    }
    if !counted.is_empty() {
        if !said.is_empty() {
            said.push_str("; ");
        }
        if grown.is_empty() {
            said.push_str("KVM counted nothing for this vCPU meanwhile (no exit, no fault)");
        } else {
            let shown: Vec<&str> = grown.iter().take(STATS_SHOWN).map(String::as_str).collect();
            said.push_str(&format!("KVM's counters for this vCPU meanwhile: {}", shown.join(", ")));
        }
    }
    (!said.is_empty()).then_some(said)
}

/// From /proc/self/task/TID/stat and wchan: the thread's state and its CPU time, split into time
/// in the guest, in the kernel and in user space. A vCPU stuck in KVM_RUN shows which: a guest that
/// runs but never sees the stop flag, the kernel looping without entering the guest, or a thread
/// asleep (and where). Guest time is what the kernel accounts as such: hardware virtualization
/// does (also QEMU's emulated SVM); a software KVM counts its guest as kernel time.
struct ThreadTimes {
    state: char,
    user: u64,
    system: u64,
    guest: u64,
    wchan: String,
}

impl ThreadTimes {
    fn read(tid: u64) -> Option<ThreadTimes> {
        let stat = std::fs::read_to_string(format!("/proc/self/task/{tid}/stat")).ok()?;
        // The command name in parentheses may hold spaces: fields are counted after its ')'.
        let rest = stat.get(stat.rfind(')')? + 2..)?;
        let fields: Vec<&str> = rest.split(' ').collect();
        // Fields 3, 14, 15 and 43 of proc(5), here 0, 11, 12 and 40.
        let at = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok());
        let wchan = std::fs::read_to_string(format!("/proc/self/task/{tid}/wchan")).unwrap_or_default();
        Some(ThreadTimes {
            state: fields.first()?.chars().next()?,
            user: at(11)?,
            system: at(12)?,
            guest: at(40)?,
            wchan: wchan.trim().to_string(),
        })
    }

    fn compared_with(&self, later: &ThreadTimes, window_ms: u128) -> String {
        // SAFETY: sysconf has no preconditions.
        let hz = u64::try_from(unsafe { libc::sysconf(libc::_SC_CLK_TCK) }).unwrap_or(100).max(1);
        let ms = |a: u64, b: u64| b.saturating_sub(a) * 1000 / hz;
        // proc(5): utime includes guest time.
        let guest = ms(self.guest, later.guest);
        let user = ms(self.user, later.user).saturating_sub(guest);
        let waiting = if later.wchan.is_empty() || later.wchan == "0" {
            String::new()
        } else {
            format!(", waiting in {}", later.wchan)
        };
        format!(
            "its thread, state {}{waiting}, spent {guest} ms in the guest, {} ms in the kernel and {user} ms in user space of those {window_ms} ms",
            later.state,
            ms(self.system, later.system),
        )
    }
}

const PROGRESS_WINDOW: Duration = Duration::from_millis(200);
/// The vCPU statistics that grew the most, named in a hang report.
const STATS_SHOWN: usize = 12;

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    #[test]
    fn a_running_thread_reads_as_running_with_its_times_split() {
        // SAFETY: gettid has no preconditions.
        let tid = unsafe { libc::gettid() } as u64;
        let before = ThreadTimes::read(tid).expect("this thread's stat is readable");
        let spin = Instant::now();
        while spin.elapsed() < Duration::from_millis(30) {
            std::hint::black_box(());
        }
        let after = ThreadTimes::read(tid).expect("still readable");
        assert_eq!(after.state, 'R');
        assert!(after.user + after.system >= before.user + before.system);
        let said = before.compared_with(&after, 30);
        assert!(said.starts_with("its thread, state R, spent 0 ms in the guest, "), "{said}");
        assert!(said.ends_with("of those 30 ms"), "{said}");
    }

    #[test]
    fn a_thread_that_is_gone_has_no_times() {
        assert!(ThreadTimes::read(u64::from(u32::MAX)).is_none());
    }
}

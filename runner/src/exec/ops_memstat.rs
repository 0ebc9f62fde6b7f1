//! `mem_snapshot` and `mem_growth`: how much memory this process and the whole system use, and how
//! much that grew between two points of a case. Cases bound the growth after hundreds of
//! create/destroy cycles: a VM, a vCPU or a guest_memfd folio that is never freed shows up here.
//!
//! Process: VmRSS (/proc/self/status) and the number of open descriptors (/proc/self/fd).
//! System (/proc/meminfo): the drop of MemAvailable plus the free pages parked in per-CPU lists
//! (/proc/zoneinfo: MemAvailable does not count them, and since Linux 6.7 the lists grow to tens
//! of MiB after a burst of frees, then shrink over seconds), and Unevictable (guest_memfd folios sit on
//! the unevictable LRU), Shmem, SUnreclaim (KVM's slab objects), VmallocUsed (struct kvm is
//! vmalloc'ed on x86), PageTables, Percpu.

use super::observe::{ObsResult, Observed};
use super::world::{CaseError, Obj, World};
use crate::suite::expect::FieldVal;
use std::sync::Arc;
use std::time::Duration;

/// One reading; every amount in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MemSnapshot {
    pub rss: i128,
    pub fds: i128,
    /// MemAvailable plus the pages in per-CPU free lists.
    pub mem_available: i128,
    pub unevictable: i128,
    pub shmem: i128,
    pub sunreclaim: i128,
    pub vmalloc: i128,
    pub page_tables: i128,
    pub percpu: i128,
}

/// Frees that the kernel defers (RCU callbacks for inodes and files, per-CPU page lists being
/// drained) mostly land within this; read after it so that a snapshot is not caught mid-free.
const SETTLE: Duration = Duration::from_millis(100);

pub fn mem_snapshot(w: &World, name: &str) -> Result<Observed, CaseError> {
    let snap = read_now()?;
    w.insert(name, Obj::Snapshot(Arc::new(snap)));
    Ok(Observed::new(ObsResult::Ok(0), format!("memory snapshot `{name}`: {}", describe(&snap))))
}

pub fn mem_growth(w: &World, since: &str) -> Result<Observed, CaseError> {
    let then = match w.get(since) {
        Some(Obj::Snapshot(s)) => *s,
        Some(o) => return Err(CaseError(format!("`{since}` is {}, not a memory snapshot", o.kind()))),
        None => return Err(CaseError(format!("`{since}` does not exist (no `mem_snapshot` made it)"))),
    };
    let now = read_now()?;
    let mut obs = Observed::new(ObsResult::Ok(0), format!("memory use now against snapshot `{since}`"));
    let grown = growth(&then, &now);
    for (field, value) in &grown {
        obs = obs.field(field, FieldVal::Int(*value));
    }
    obs.note = Some(format!("then {}; now {}", describe(&then), describe(&now)));
    Ok(obs)
}

/// The growth a `mem_growth` step measured, in one line (reported even when within bounds).
pub fn summary(obs: &Observed) -> String {
    let fields = crate::suite::step::MEM_GROWTH_FIELDS;
    obs.fields
        .iter()
        .map(|(name, v)| {
            let kind = fields.iter().find(|f| f.name == *name).map(|f| f.kind);
            format!("{name} {}", v.render(kind))
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Now minus then, for every field `mem_growth` offers (MemAvailable falls as memory is used, so
/// its drop is the growth of `mem_used`).
pub fn growth(then: &MemSnapshot, now: &MemSnapshot) -> Vec<(&'static str, i128)> {
    vec![
        ("rss", now.rss - then.rss),
        ("fds", now.fds - then.fds),
        ("mem_used", then.mem_available - now.mem_available),
        ("unevictable", now.unevictable - then.unevictable),
        ("shmem", now.shmem - then.shmem),
        ("sunreclaim", now.sunreclaim - then.sunreclaim),
        ("vmalloc", now.vmalloc - then.vmalloc),
        ("page_tables", now.page_tables - then.page_tables),
        ("percpu", now.percpu - then.percpu),
    ]
}

fn describe(s: &MemSnapshot) -> String {
    let kib = |v: i128| v / 1024;
    format!(
        "rss {} KiB, {} fds, MemAvailable+per-CPU free {} KiB, Unevictable {} KiB, Shmem {} KiB, SUnreclaim {} KiB, VmallocUsed {} KiB, PageTables {} KiB, Percpu {} KiB",
        kib(s.rss),
        s.fds,
        kib(s.mem_available),
        kib(s.unevictable),
        kib(s.shmem),
        kib(s.sunreclaim),
        kib(s.vmalloc),
        kib(s.page_tables),
        kib(s.percpu)
    )
}

fn read_now() -> Result<MemSnapshot, CaseError> {
    std::thread::sleep(SETTLE);
    let read = |path: &str| std::fs::read_to_string(path).map_err(|e| CaseError(format!("cannot read {path}: {e}")));
    let status = read("/proc/self/status")?;
    let meminfo = read("/proc/meminfo")?;
    let zoneinfo = read("/proc/zoneinfo")?;
    let fds = std::fs::read_dir("/proc/self/fd")
        .map_err(|e| CaseError(format!("cannot list /proc/self/fd: {e}")))?
        .count() as i128;
    // The listing itself holds one descriptor open while it runs, in every reading alike.
    let mut snap = parse(&status, &meminfo, fds)?;
    // SAFETY: sysconf has no preconditions.
    let page = i128::from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(4096));
    snap.mem_available += per_cpu_free_pages(&zoneinfo) * page;
    Ok(snap)
}

/// The pages waiting in every zone's per-CPU free lists (`count:` under `pagesets`).
pub fn per_cpu_free_pages(zoneinfo: &str) -> i128 {
    zoneinfo
        .lines()
        .filter_map(|l| l.trim_start().strip_prefix("count:"))
        .filter_map(|v| v.trim().parse::<i128>().ok())
        .sum()
}

/// A snapshot from the text of /proc/self/status and /proc/meminfo (amounts in kB there).
pub fn parse(status: &str, meminfo: &str, fds: i128) -> Result<MemSnapshot, CaseError> {
    let kb = |text: &str, file: &str, key: &str| -> Result<i128, CaseError> {
        text.lines()
            .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
            .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse::<i128>().ok())
            .map(|v| v * 1024)
            .ok_or_else(|| CaseError(format!("{file} has no `{key}:` line in kB")))
    };
    let m = |key| kb(meminfo, "/proc/meminfo", key);
    Ok(MemSnapshot {
        rss: kb(status, "/proc/self/status", "VmRSS")?,
        fds,
        mem_available: m("MemAvailable")?,
        unevictable: m("Unevictable")?,
        shmem: m("Shmem")?,
        sunreclaim: m("SUnreclaim")?,
        vmalloc: m("VmallocUsed")?,
        page_tables: m("PageTables")?,
        percpu: m("Percpu")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const STATUS: &str = "Name:\tgmemconf\nVmPeak:\t   10000 kB\nVmRSS:\t    2048 kB\nThreads:\t1\n";
    const MEMINFO: &str = "MemTotal:        2000000 kB\nMemAvailable:    1500000 kB\nShmem:              1000 kB\n\
        Unevictable:         512 kB\nSUnreclaim:        20000 kB\nVmallocUsed:        4000 kB\n\
        PageTables:          800 kB\nPercpu:              600 kB\nShmemHugePages:        0 kB\n";

    #[test]
    fn parses_the_proc_files() {
        let s = parse(STATUS, MEMINFO, 7).expect("complete files");
        assert_eq!(s.rss, 2048 * 1024);
        assert_eq!(s.fds, 7);
        assert_eq!(s.mem_available, 1_500_000 * 1024);
        assert_eq!(s.shmem, 1000 * 1024, "Shmem, not ShmemHugePages");
        assert_eq!(s.unevictable, 512 * 1024);
        assert_eq!(s.percpu, 600 * 1024);
    }

    #[test]
    fn per_cpu_free_pages_sum_every_zone_and_cpu() {
        let zoneinfo = "Node 0, zone   Normal\n  pages free     100\n  pagesets\n    cpu: 0\n              count:    64\n              high:     378\n    cpu: 1\n              count: 2\n  vm stats threshold: 24\nNode 0, zone DMA32\n  pagesets\n    cpu: 0\n              count:    10\n";
        assert_eq!(per_cpu_free_pages(zoneinfo), 76);
    }

    #[test]
    fn a_missing_line_is_an_error_naming_it() {
        let e = parse(STATUS, "MemTotal: 1 kB\n", 3).expect_err("no MemAvailable");
        assert!(e.0.contains("MemAvailable"), "{}", e.0);
    }

    #[test]
    fn growth_is_now_minus_then_and_a_fall_in_available_is_use() {
        let then = parse(STATUS, MEMINFO, 7).expect("complete files");
        let now = MemSnapshot { rss: then.rss + 4096, mem_available: then.mem_available - 8192, fds: 5, ..then };
        let g = growth(&then, &now);
        let get = |k| g.iter().find(|(n, _)| *n == k).map(|(_, v)| *v);
        assert_eq!(get("rss"), Some(4096));
        assert_eq!(get("mem_used"), Some(8192));
        assert_eq!(get("fds"), Some(-2));
        assert_eq!(get("unevictable"), Some(0));
    }

    #[test]
    fn every_growth_field_is_one_a_suite_may_expect() {
        let names: Vec<&str> = crate::suite::step::MEM_GROWTH_FIELDS.iter().map(|f| f.name).collect();
        let g = growth(&MemSnapshot::default(), &MemSnapshot::default());
        assert_eq!(g.iter().map(|(n, _)| *n).collect::<Vec<_>>(), names);
    }
}

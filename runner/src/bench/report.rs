//! Runs the benchmarks in order and prints their figures side by side.

use super::{interp, race, suites};
use crate::probe::Probe;
use std::time::Duration;

/// One measured comparison: gmemconf's way against the minimal direct way.
pub struct Comparison {
    pub what: &'static str,
    pub unit: &'static str,
    pub gmemconf: f64,
    pub direct: f64,
    /// The figure gmemconf must reach, as `ratio <= limit` (costs) or `ratio >= limit` (rates).
    pub target: Target,
}

pub enum Target {
    /// gmemconf's cost at most this multiple of the direct cost.
    CostAtMost(f64),
    /// gmemconf's rate at least this fraction of the direct rate.
    RateAtLeast(f64),
}

impl Comparison {
    pub fn ratio(&self) -> f64 {
        self.gmemconf / self.direct
    }

    pub fn meets_target(&self) -> bool {
        match self.target {
            Target::CostAtMost(limit) => self.ratio() <= limit,
            Target::RateAtLeast(limit) => self.ratio() >= limit,
        }
    }

    fn line(&self) -> String {
        let (target, verdict) = match self.target {
            Target::CostAtMost(l) => (format!("<= {l:.2}"), self.meets_target()),
            Target::RateAtLeast(l) => (format!(">= {l:.2}"), self.meets_target()),
        };
        format!(
            "{:<46} gmemconf {:>10.3} {u:<10} direct {:>10.3} {u:<10} ratio {:>5.3} (target {target}: {})",
            self.what,
            self.gmemconf,
            self.direct,
            self.ratio(),
            if verdict { "met" } else { "MISSED" },
            u = self.unit
        )
    }
}

pub struct Bench {
    pub iterations: u32,
    pub race_duration: Duration,
    /// Suite files for the wall-time part (empty: the built-in suites).
    pub suites: Vec<std::path::PathBuf>,
    pub exe: std::path::PathBuf,
}

/// Runs every benchmark and prints the figures. Err if one cannot run here (with the reason).
pub fn run_all(b: &Bench, probe: &Probe) -> Result<bool, String> {
    let needs = crate::suite::Requirement::GmemFlags(
        crate::kvm::uapi::GUEST_MEMFD_FLAG_MMAP | crate::kvm::uapi::GUEST_MEMFD_FLAG_INIT_SHARED,
    );
    probe.meets(&needs).map_err(|why| format!("the benchmarks bind an mmap-able guest_memfd: {why}"))?;
    println!("gmemconf bench on {}", probe.fingerprint());
    let mut all_met = true;
    let a = interp::compare(b.iterations)?;
    println!("{}", a.line());
    all_met &= a.meets_target();
    let r = race::compare(b.race_duration, probe)?;
    println!("{}", r.line());
    all_met &= r.meets_target();
    println!("suite wall times (each case in its own process, as `gmemconf run` does):");
    for (name, secs, cases) in suites::wall_times(&b.exe, &b.suites)? {
        println!("  {name:<28} {secs:>7.2} s  {cases:>4} cases");
    }
    Ok(all_met)
}

//! The console: libtest-mimic drives selection (filters, --exact, --list, --ignored,
//! --test-threads) and prints one line per case; gmemconf adds the summary with XFAIL, XPASS and
//! skip reasons.

use super::event::{CaseEvent, Counts, Outcome};
use super::render::failure_block;
use crate::run::{Runner, Selection, baseline_for};
use libtest_mimic::{Completion, Failed, Trial};
use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Arc;

pub fn trials(runner: &Arc<Runner>, selection: &Selection) -> Vec<Trial> {
    selection
        .cases()
        .map(|case| {
            let baseline = baseline_for(case, &selection.baselines, &runner.probe).cloned();
            let kind = if baseline.is_some() { "xfail" } else { "" };
            let ignored = case.ignore.is_some();
            let (runner, case) = (runner.clone(), case.clone());
            Trial::ignorable_test(case.id.clone(), move || {
                trial_result(runner.execute(&case, baseline.as_ref()), &runner.fingerprint)
            })
            .with_kind(kind)
            .with_ignored_flag(ignored)
        })
        .collect()
}

/// How libtest-mimic shows a case's event: a pass or xfail is `ok`, a skip `ignored` with its
/// reason, anything else failed with the failure block.
pub fn trial_result(e: CaseEvent, fingerprint: &str) -> Result<Completion, Failed> {
    match e.outcome {
        Outcome::Pass | Outcome::Xfail => Ok(Completion::Completed),
        Outcome::Skip => Ok(Completion::ignored_with(e.reason.unwrap_or_default())),
        _ => Err(Failed::from(failure_block(&e, fingerprint))),
    }
}

/// The closing summary: counts, then each XFAIL/XPASS with its baseline, then skips by reason.
pub fn summary(counts: &Counts, events: &[CaseEvent], fingerprint: &str, seconds: f64) -> String {
    let mut s = String::new();
    let parts: Vec<String> = Outcome::ALL.iter().map(|o| format!("{} {}", counts.get(*o), o.label())).collect();
    let _ = writeln!(s, "\ngmemconf: {} cases on {fingerprint}", counts.total());
    let _ = writeln!(s, "gmemconf: {} in {seconds:.1} s", parts.join(", "));
    let mut sorted: Vec<&CaseEvent> = events.iter().collect();
    sorted.sort_by(|a, b| a.id.cmp(&b.id));
    for o in [Outcome::Xfail, Outcome::Xpass] {
        let list: Vec<&&CaseEvent> = sorted.iter().filter(|e| e.outcome == o).collect();
        if list.is_empty() {
            continue;
        }
        let _ = writeln!(s, "{} (known deviations of this kernel, from baselines):", o.label().to_uppercase());
        for e in list {
            if let Some(b) = &e.baseline {
                let _ = writeln!(s, "  {}\n      {} [{}:{}; {}]", e.id, b.reason, b.file, b.line, b.reference);
            }
        }
    }
    let noted: Vec<&&CaseEvent> = sorted.iter().filter(|e| !e.notes.is_empty()).collect();
    if !noted.is_empty() {
        let _ =
            writeln!(s, "NOTES (races: interleavings achieved, `--seed` replays a schedule; memory growth measured):");
        for e in noted {
            for note in &e.notes {
                let _ = writeln!(s, "  {} [{}]\n      {note}", e.id, e.outcome.label());
            }
        }
    }
    let mut skips: BTreeMap<&str, usize> = BTreeMap::new();
    for e in sorted.iter().filter(|e| e.outcome == Outcome::Skip) {
        *skips.entry(e.reason.as_deref().unwrap_or("no reason")).or_default() += 1;
    }
    if !skips.is_empty() {
        let _ = writeln!(s, "SKIP (capabilities this target lacks):");
        for (reason, n) in skips {
            let _ = writeln!(s, "  {n:>4} x {reason}");
        }
    }
    s
}

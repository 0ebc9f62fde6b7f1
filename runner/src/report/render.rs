//! Human text for one case's result: the failure block a kernel developer reads.

use super::event::{CaseEvent, Outcome};

/// The block shown under a failing case, in the shape of style.md's example.
pub fn failure_block(e: &CaseEvent, fingerprint: &str) -> String {
    let mut s = String::new();
    let head = match e.outcome {
        Outcome::Xpass => "XPASS (passed, but a baseline says this kernel fails it: remove or narrow the entry)",
        Outcome::Timeout => "TIMEOUT",
        Outcome::Crashed => "CRASHED",
        Outcome::Error => "ERROR (gmemconf could not carry the case out)",
        _ => "FAIL",
    };
    s.push_str(&format!("{head} {} ({} ms)\n", e.id, e.duration_ms));
    match &e.failure {
        Some(f) => {
            s.push_str(&format!("  --> {} (step {} of {}: {})\n", f.location, f.step, f.of, f.op));
            s.push_str(&format!("  contract: {}\n", f.contract));
            s.push_str(&format!("  expected: {}\n", f.expected));
            s.push_str(&format!("    actual: {}\n", f.actual));
            s.push_str(&format!("      call: {}\n", f.call));
        }
        None => {
            s.push_str(&format!("  --> {}\n", e.location));
            s.push_str(&format!("  contract: {}\n", e.reference));
        }
    }
    if let Some(r) = &e.reason {
        s.push_str(&format!("    reason: {r}\n"));
    }
    if let Some(b) = &e.baseline {
        s.push_str(&format!("  baseline: {} ({}:{}; {})\n", b.reason, b.file, b.line, b.reference));
    }
    for line in &e.kernel_log {
        s.push_str(&format!("    kernel: {line}\n"));
    }
    s.push_str(&format!("      host: {fingerprint}\n"));
    s.push_str(&format!("     rerun: {}\n", e.rerun));
    if let Some(out) = &e.output {
        s.push_str(out);
        if !out.ends_with('\n') {
            s.push('\n');
        }
    }
    s
}

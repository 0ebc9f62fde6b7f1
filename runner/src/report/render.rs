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
    for note in &e.notes {
        s.push_str(&format!("      note: {note}\n"));
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exec::protocol::StepFailure;

    #[test]
    fn a_failure_reads_like_the_style_guide() {
        let e = CaseEvent {
            event: "case",
            id: "memslot-sharing::offset-overlap[flags=mmap]".into(),
            outcome: Outcome::Fail,
            duration_ms: 3,
            location: "suites/memslot-sharing.yaml:30:5".into(),
            reference: "api.rst KVM_SET_USER_MEMORY_REGION2".into(),
            reason: None,
            failure: Some(StepFailure {
                step: 4,
                of: 5,
                op: "memslot".into(),
                location: "suites/memslot-sharing.yaml:41:9".into(),
                expected: "errno EINVAL".into(),
                actual: "success (returned 0)".into(),
                call: "KVM_SET_USER_MEMORY_REGION2 { slot: 1 }".into(),
                contract: "api.rst KVM_SET_USER_MEMORY_REGION2: a guest_memfd range binds to one memslot at a time"
                    .into(),
            }),
            baseline: None,
            output: None,
            kernel_log: vec!["WARNING: at virt/kvm/guest_memfd.c:100".into()],
            notes: Vec::new(),
            rerun: "gmemconf run suites/memslot-sharing.yaml --exact -f 'memslot-sharing::offset-overlap[flags=mmap]'"
                .into(),
            target: None,
        };
        let expected = "\
FAIL memslot-sharing::offset-overlap[flags=mmap] (3 ms)
  --> suites/memslot-sharing.yaml:41:9 (step 4 of 5: memslot)
  contract: api.rst KVM_SET_USER_MEMORY_REGION2: a guest_memfd range binds to one memslot at a time
  expected: errno EINVAL
    actual: success (returned 0)
      call: KVM_SET_USER_MEMORY_REGION2 { slot: 1 }
    kernel: WARNING: at virt/kvm/guest_memfd.c:100
      host: 6.18.44, software KVM
     rerun: gmemconf run suites/memslot-sharing.yaml --exact -f 'memslot-sharing::offset-overlap[flags=mmap]'
";
        assert_eq!(failure_block(&e, "6.18.44, software KVM"), expected);
    }
}

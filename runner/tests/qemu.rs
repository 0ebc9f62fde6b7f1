//! The qemu target as a user runs it: `gmemconf run --kernel <bzImage>` boots the test kernel in
//! QEMU and the verdicts come from inside it; a kernel panic mid-suite is charged to its case
//! alone and the other cases still run. Needs QEMU and a test kernel (GMEMCONF_TEST_KERNEL, else
//! the cached `debian:7.3` build); without them these tests fail, they never pass silently.

mod common;

use common::{gmemconf, repo, tempdir};
use rstest::{fixture, rstest};
use serde_json::Value;
use std::process::Output;

/// The test kernel's bzImage path.
struct Kernel(String);

/// The test kernel, checked once: it and QEMU must be there (tests/common: GMEMCONF_TEST_KERNEL,
/// else the cached `debian:7.3` build).
#[fixture]
#[once]
fn kernel() -> Kernel {
    Kernel(common::test_kernel())
}

fn events(out: &Output) -> Vec<Value> {
    common::all_events(out)
}

fn of_kind<'a>(events: &'a [Value], kind: &str) -> Vec<&'a Value> {
    events.iter().filter(|e| e["event"] == kind).collect()
}

fn case<'a>(events: &'a [Value], id: &str) -> &'a Value {
    events.iter().find(|e| e["event"] == "case" && e["id"] == id).unwrap_or_else(|| panic!("no event for {id}"))
}

#[rstest]
fn verdicts_come_from_inside_the_test_kernel(kernel: &Kernel) {
    // pread-refused made wrong on purpose (ESPIPE is the contract); read-refused left as shipped.
    let dir = tempdir("verdicts");
    let text = std::fs::read_to_string(repo().join("suites/sealing.yaml")).expect("suite");
    let from = "      - pread: { fd: g, len: 64, offset: 0 }\n        expect: { errno: ESPIPE }";
    assert!(text.contains(from), "sealing.yaml no longer has the pread expectation this test mutates");
    let suite = dir.join("sealing.yaml");
    std::fs::write(&suite, text.replacen(from, &from.replace("ESPIPE", "EBADF"), 1)).expect("write");
    let suite = suite.to_str().expect("utf8");
    let kernel = kernel.0.as_str();
    let out = gmemconf(&["run", "--kernel", kernel, "--format", "json", "--no-baselines", suite, "-f", "read-refused"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("qemu-system-x86_64 -accel "), "the QEMU command line is not printed:\n{stderr}");
    assert!(stderr.contains("first after"), "no boot-to-first-result figure:\n{stderr}");
    let ev = events(&out);
    let started = of_kind(&ev, "run_started");
    assert_eq!(started.len(), 1, "{ev:#?}");
    assert_eq!(started[0]["target"], "qemu");
    let fingerprint = started[0]["fingerprint"].as_str().expect("fingerprint").to_string();
    assert_eq!(started[0]["probe"]["caps_vm"]["GUEST_MEMFD"], 1, "the guest kernel has no guest_memfd: {fingerprint}");
    assert!(!fingerprint.starts_with(&host_release()), "the verdicts name the host kernel: {fingerprint}");
    for flags in ["none", "mmap", "init_shared", "mmap+init_shared"] {
        let read = case(&ev, &format!("sealing::read-refused[flags={flags}]"));
        assert_eq!(read["outcome"], "pass", "{read}");
        assert_eq!(read["target"], fingerprint.as_str(), "{read}");
        let pread = case(&ev, &format!("sealing::pread-refused[flags={flags}]"));
        assert_eq!(pread["outcome"], "fail", "{pread}");
        assert_eq!(pread["failure"]["expected"], "errno EBADF", "{pread}");
        assert!(pread["failure"]["actual"].as_str().unwrap_or("").contains("ESPIPE"), "{pread}");
        assert!(pread["rerun"].as_str().unwrap_or("").contains(&format!("--kernel {kernel}")), "{pread}");
    }
    assert_eq!(of_kind(&ev, "case").len(), 8);
    assert_eq!(of_kind(&ev, "boot").len(), 1);
    let _ = std::fs::remove_dir_all(dir);
}

/// One case at a time: the panic has exactly one case in flight.
#[rstest]
fn a_kernel_panic_is_charged_to_its_case_and_the_rest_resume(kernel: &Kernel) {
    let out = gmemconf(&[
        "run",
        "--kernel",
        &kernel.0,
        "--format",
        "json",
        "--test-threads",
        "1",
        "runner/tests/fixtures/panic.yaml",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "a crashed case is a failure, not a broken target:\n{stderr}");
    let ev = events(&out);
    assert_crash_charged_alone(&ev);
    let boots = of_kind(&ev, "boot");
    assert_eq!(boots.len(), 2, "one boot up to the panic, one to resume: {boots:#?}");
    assert!(boots[0]["end"].as_str().unwrap_or("").contains("panicked"), "{}", boots[0]);
    assert_eq!(boots[0]["in_flight"], serde_json::json!(["crash::panics"]));
    assert_eq!(boots[1]["end"], "finished");
    // The case before the panic was reported in the first boot, and is not run again.
    assert_eq!(boots[0]["results"], 1);
    assert_eq!(boots[1]["results"], 2);
}

/// Cases at once: whatever was in flight at the panic runs again alone, so only the culprit is
/// charged.
#[rstest]
fn concurrent_suspects_are_rerun_alone(kernel: &Kernel) {
    let out = gmemconf(&[
        "run",
        "--kernel",
        &kernel.0,
        "--format",
        "json",
        "--test-threads",
        "4",
        "runner/tests/fixtures/panic.yaml",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let ev = events(&out);
    assert_crash_charged_alone(&ev);
    let boots = of_kind(&ev, "boot");
    let panicked = boots.iter().filter(|b| b["end"].as_str().unwrap_or("").contains("panicked")).count();
    assert_eq!(panicked, 2, "the first panic, then the culprit alone: {boots:#?}");
}

fn assert_crash_charged_alone(ev: &[Value]) {
    let crash = case(ev, "crash::panics");
    assert_eq!(crash["outcome"], "crashed", "{crash}");
    let reason = crash["reason"].as_str().unwrap_or("");
    assert!(reason.contains("panicked") && reason.contains("sysrq triggered crash"), "{reason}");
    let kernel_log: Vec<&str> =
        crash["kernel_log"].as_array().map(|a| a.iter().filter_map(Value::as_str).collect()).unwrap_or_default();
    assert!(kernel_log.iter().any(|l| l.contains("Kernel panic - not syncing")), "no panic lines: {crash}");
    assert!(crash["output"].as_str().unwrap_or("").contains("--- console"), "no console excerpt: {crash}");
    for id in ["crash::before", "crash::after[size=4K]", "crash::after[size=2M]"] {
        assert_eq!(case(ev, id)["outcome"], "pass", "{}", case(ev, id));
    }
    assert_eq!(of_kind(ev, "case").len(), 4, "each case reported exactly once");
    let finished = of_kind(ev, "run_finished");
    assert_eq!(finished.len(), 1);
    assert_eq!(finished[0]["counts"]["crashed"], 1);
    assert_eq!(finished[0]["counts"]["pass"], 3);
}

#[rstest]
#[case::missing("/no/such/bzImage", "no such file or directory")]
#[case::not_a_kernel("README.md", "is not an x86 bzImage")]
#[case::a_directory("runner", "is not a kernel source tree")]
fn a_bad_kernel_spec_is_exit_2(#[case] spec: &str, #[case] message: &str) {
    let out = gmemconf(&["run", "--kernel", spec, "suites/sealing.yaml"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains(spec) && stderr.contains(message), "{stderr}");
    assert!(stderr.contains("help:") && !stderr.contains("panicked"), "{stderr}");
}

#[rstest]
fn an_empty_selection_is_exit_2_without_a_boot(kernel: &Kernel) {
    let out = gmemconf(&["run", "--kernel", &kernel.0, "suites/sealing.yaml", "-f", "no-such-case"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("no case matched") && !stderr.contains("qemu-system-x86_64 -accel"), "{stderr}");
}

#[rstest]
fn a_kernel_qemu_cannot_load_is_exit_3(kernel: &Kernel) {
    let dir = tempdir("truncated");
    let bytes = std::fs::read(&kernel.0).expect("kernel readable");
    let truncated = dir.join("bzImage");
    std::fs::write(&truncated, &bytes[..4096]).expect("write");
    let out = gmemconf(&["run", "--kernel", truncated.to_str().expect("utf8"), "suites/sealing.yaml"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(stderr.contains("the qemu target cannot run") && stderr.contains("invalid kernel header"), "{stderr}");
    let _ = std::fs::remove_dir_all(dir);
}

fn host_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease").expect("osrelease").trim().to_string()
}

//! gmemconf as a user runs it, on real KVM: the shipped suites' verdicts, and the executor's
//! promises (a wrong expectation is red, a hang is cut at its deadline while the other cases
//! finish, an unexpected SIGBUS fails its case alone, bad input is exit 2 with file:line:col).
//! Cases that need guest_memfd run where it is: this host's /dev/kvm, or the test kernel booted in
//! QEMU when this host has none (tests/common).

mod common;

use common::{BIN, Target, event, events, gmem_target, gmemconf, host_probe, repo, tempdir};
use rstest::{fixture, rstest};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// Where guest_memfd cases run, decided once.
#[fixture]
#[once]
fn target() -> Target {
    gmem_target()
}

/// Verdicts a shipped suite may give on the reference kernels: anything else is a defect here.
const CONFORMING: [&str; 3] = ["pass", "skip", "xfail"];

fn nonconforming(events: &[Value]) -> Vec<&Value> {
    events.iter().filter(|e| !CONFORMING.contains(&e["outcome"].as_str().unwrap_or(""))).collect()
}

/// Under QEMU's emulation (TCG, nested SVM) a race or lifetime case has been seen to fail about
/// once in two full runs, each time a different case, and never again when run once more (see
/// README.md, "Intermittent failures under emulation"). So on the qemu target a case that fails
/// is run once more, alone: if it then conforms, it is reported here as flaky and does not fail
/// the test; if it fails again, it does. More failures than this in one run fail the test at once:
/// that is no longer noise.
const FLAKES_TOLERATED: usize = 2;

#[rstest]
fn shipped_suites_pass_or_fail_only_as_baselined(target: &Target) {
    let out = target.run(&["--format", "json"]);
    let cases = events(&out, "case");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let bad = nonconforming(&cases);
    let lines: Vec<String> = bad.iter().map(|e| format!("{} {}: {e}", e["outcome"], e["id"])).collect();
    let may_be_noise = target.is_qemu() && bad.len() <= FLAKES_TOLERATED;
    assert!(may_be_noise || bad.is_empty(), "unexpected verdicts:\n{}\n{stderr}", lines.join("\n"));
    let (mut flaky, mut failed) = (Vec::new(), Vec::new());
    for (e, line) in bad.iter().zip(lines) {
        let id = e["id"].as_str().unwrap_or_default();
        let again = target.run(&["--format", "json", "--exact", "-f", id]);
        let again_events = events(&again, "case");
        if !again_events.is_empty() && nonconforming(&again_events).is_empty() {
            flaky.push(line);
        } else {
            failed.push(format!("{line}\n  run again: {}", String::from_utf8_lossy(&again.stdout)));
        }
    }
    if !flaky.is_empty() {
        eprintln!("FLAKY (failed once, conformed when run again alone):\n{}", flaky.join("\n"));
    }
    assert!(failed.is_empty(), "unexpected verdicts:\n{}\n{stderr}", failed.join("\n"));
    assert!(bad.is_empty() || out.status.code() == Some(1), "exit {:?}\n{stderr}", out.status.code());
    assert!(!bad.is_empty() || out.status.success(), "exit {:?}\n{stderr}", out.status.code());
    let ran = cases.iter().filter(|e| e["outcome"] != "skip").count();
    assert!(ran >= 500, "only {ran} cases ran on {target:?}");
    for e in cases.iter().filter(|e| e["outcome"] == "skip") {
        assert!(e["reason"].as_str().is_some_and(|r| !r.is_empty()), "a skip without a reason: {e}");
    }
    for e in cases.iter().filter(|e| e["outcome"] == "xfail") {
        assert!(e["baseline"]["reason"].is_string() && e["failure"].is_object() || e["reason"].is_string(), "{e}");
    }
}

/// Copies a shipped suite with one expectation deliberately made wrong.
fn mutated_suite(dir: &Path, suite: &str, from: &str, to: &str) -> PathBuf {
    let text = std::fs::read_to_string(repo().join(suite)).expect("suite readable");
    assert!(text.contains(from), "{suite} no longer contains `{from}`");
    let path = dir.join(Path::new(suite).file_name().expect("file name"));
    std::fs::write(&path, text.replacen(from, to, 1)).expect("write mutated suite");
    path
}

/// Each mutation changes the first occurrence, which lies in the case `only` selects.
#[rstest]
#[case::errno("suites/sealing.yaml", "errno: EINVAL", "errno: ENOENT", "create-flag-bit")]
#[case::signal("suites/sealing.yaml", "signal: SIGBUS", "signal: SIGSEGV", "fault-without-init-shared")]
#[case::guest_value("suites/memslot-sharing.yaml", "read: 0x", "read: 0x7", "slot-order")]
fn a_wrong_expectation_turns_the_case_red(
    target: &Target,
    #[case] suite: &str,
    #[case] from: &str,
    #[case] to: &str,
    #[case] only: &str,
) {
    let dir = tempdir(&format!("mutated-{only}"));
    let path = mutated_suite(&dir, suite, from, to);
    let out = target.run(&["--format", "json", "--no-baselines", path.to_str().expect("utf8"), "-f", only]);
    assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stderr));
    let events = events(&out, "case");
    let red: Vec<&Value> = events.iter().filter(|e| e["outcome"] == "fail").collect();
    assert!(
        red.iter()
            .any(|e| e["failure"]["expected"].as_str().unwrap_or("").contains(to.split(": ").nth(1).unwrap_or(to))),
        "no failure expecting `{to}` among {red:#?}"
    );
}

#[rstest]
fn a_hang_is_cut_at_its_deadline_and_the_others_finish(target: &Target) {
    let start = Instant::now();
    let out = target.run(&["--format", "json", "--test-threads", "2", "runner/tests/fixtures/deadline.yaml"]);
    let took = start.elapsed();
    assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stderr));
    let events = events(&out, "case");
    let hang = event(&events, "harness::spins-for-ever");
    assert_eq!(hang["outcome"], "timeout", "{hang}");
    let reason = hang["reason"].as_str().unwrap_or("");
    let scale = common::events(&out, "run_started")[0]["timeout_scale"].as_f64().unwrap_or(0.0);
    let deadline = format!("within {:.1} s", scale);
    assert!(reason.contains(&deadline) && reason.contains("step 6 of 6 (guest"), "{reason}");
    assert!(reason.contains("stopped with SIGTERM") || reason.contains("stopped with SIGKILL"), "{reason}");
    for byte in ["17", "34", "51"] {
        assert_eq!(event(&events, &format!("harness::finishes[byte={byte}]"))["outcome"], "pass");
    }
    // The hang costs its own deadline, not the others': a boot and a few seconds of cases besides.
    let budget = Duration::from_secs_f64(scale) + Duration::from_secs(if target.is_qemu() { 30 } else { 5 });
    assert!(took < budget, "the run took {took:?} (budget {budget:?}): the hang held it up");
}

#[rstest]
fn an_unexpected_sigbus_fails_its_case_alone(target: &Target) {
    let out =
        target.run(&["--format", "json", "-f", "harness::", "runner/tests/fixtures/deadline.yaml", "--skip", "spins"]);
    let events = events(&out, "case");
    let crash = event(&events, "harness::touches-past-eof");
    assert_eq!(crash["outcome"], "crashed", "{crash}");
    let reason = crash["reason"].as_str().unwrap_or("");
    assert!(reason.contains("SIGBUS") && reason.contains("step 4 of 4 (mem_write"), "{reason}");
    assert_eq!(events.iter().filter(|e| e["outcome"] == "pass").count(), 3);
    assert_eq!(out.status.code(), Some(1));
}

#[rstest]
#[case::unknown_step("      - gmme: { as: g, size: 4K }\n", "bad.yaml:7:9: error: unknown step `gmme`")]
#[case::bad_errno("      - vm: {}\n        expect: { errno: EWHAT }\n", "bad.yaml:8:26: error: unknown errno `EWHAT`")]
#[case::not_yaml("      - vm: {\n", "bad.yaml:")]
fn a_malformed_suite_is_exit_2_with_its_location(#[case] steps: &str, #[case] message: &str) {
    let dir = tempdir(&format!("bad-{}", message.len()));
    let path = dir.join("bad.yaml");
    std::fs::write(&path, format!("suite: t\nsummary: s\ncases:\n  - name: c\n    ref: r\n    steps:\n{steps}"))
        .expect("write");
    for cmd in ["validate", "run", "list"] {
        let out = Command::new(BIN).args([cmd, "bad.yaml"]).current_dir(&dir).output().expect("starts");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{cmd}: {stderr}");
        assert!(stderr.contains(message), "{cmd}: {stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
}

#[rstest]
#[case::missing_file(&["run", "no/such.yaml"], "no/such.yaml: error: no such suite file")]
#[case::bad_flag(&["run", "--frobnicate"], "unexpected argument")]
#[case::bad_scale(&["run", "--timeout-scale", "0"], "--timeout-scale")]
#[case::empty_selection(&["list", "-f", "no-such-case"], "no case matched")]
#[case::zero_threads(&["run", "--test-threads", "0"], "--test-threads must be at least 1")]
#[case::internal_command(&["__case", "--suite", "x", "--id", "y"], "`__case` is internal")]
#[case::bad_baselines(&["list", "--baselines", "no/such/dir"], "cannot read the baselines directory")]
fn bad_command_lines_are_exit_2(#[case] args: &[&str], #[case] message: &str) {
    let out = gmemconf(args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains(message), "{stderr}");
}

#[rstest]
fn list_says_what_runs_and_why_not() {
    host_probe();
    let out = gmemconf(&["list", "--format", "json"]);
    assert!(out.status.success());
    let rows: Vec<Value> =
        String::from_utf8_lossy(&out.stdout).lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
    assert!(rows.len() >= 80);
    for r in &rows {
        assert!(r["ref"].as_str().is_some_and(|s| !s.is_empty()), "case without ref: {r}");
        if r["run"] == false {
            assert!(r["skip_reason"].as_str().is_some_and(|s| s.starts_with("needs ")), "{r}");
        }
    }
}

/// The probe's answers are the kernel's: asked again here, directly, they agree.
#[rstest]
fn probe_reports_the_host() {
    let p = host_probe();
    assert!(["hardware", "nested", "software"].contains(&p["virt"].as_str().unwrap_or("")), "{p}");
    assert_eq!(p["vm_types"][0]["name"], "default");
    assert_eq!(p["vm_types"][0]["create"], "ok");
    let kvm = gmemconf::kvm::Kvm::open().expect("/dev/kvm opens");
    let vm = kvm.try_create_vm(0).expect("a default VM");
    for (name, cap) in gmemconf::kvm::uapi::PROBED_CAPS {
        let direct = vm.check_extension(*cap).map_or_else(|e| -(e as i64), i64::from);
        assert_eq!(p["caps_vm"][*name].as_i64(), Some(direct), "KVM_CAP_{name} on a default VM");
    }
}

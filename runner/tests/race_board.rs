//! The race engine's board steps on this host's real kernel, with a memfd in place of the
//! guest_memfd: clean steps are judged against their expectation like any other, a page that
//! breaks the board's rules is red, a file another thread closed is not kept open by a thread
//! that used it before, and a vCPU that ignores the race's end is cut and reported with where its
//! thread spent its time and what KVM counted for it.

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_gmemconf");

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn outcome<'a>(events: &'a [Value], name: &str) -> &'a Value {
    let id = format!("race-board::{name}");
    events.iter().find(|e| e["id"] == id.as_str()).unwrap_or_else(|| panic!("no event for {id} among {events:#?}"))
}

#[test]
fn board_steps_are_judged_and_let_go_of_what_others_close() {
    let out = Command::new(BIN)
        .args(["run", "--format", "json", "--no-baselines", "runner/tests/fixtures/race-board.yaml"])
        .current_dir(repo())
        .output()
        .expect("gmemconf starts");
    let events: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["event"] == "case")
        .collect();
    let stderr = String::from_utf8_lossy(&out.stderr);

    let kept = outcome(&events, "punches-and-host-reads-keep-the-rules");
    assert_eq!(kept["outcome"], "pass", "{kept}\n{stderr}");

    let wrong = outcome(&events, "a-clean-step-against-another-expectation-is-red");
    assert_eq!(wrong["outcome"], "fail", "{wrong}");
    assert!(wrong["failure"]["expected"].as_str().unwrap_or("").starts_with("errno EBADF"), "{wrong}");
    assert!(wrong["failure"]["actual"].as_str().unwrap_or("").starts_with("success"), "{wrong}");

    let broken = outcome(&events, "a-page-that-breaks-the-board-rules-is-red");
    assert_eq!(broken["outcome"], "fail", "{broken}");
    assert!(broken["failure"]["actual"].as_str().unwrap_or("").contains("violation: found"), "{broken}");

    let hang = outcome(&events, "a-vcpu-that-ignores-the-end-is-a-hang-and-says-where-it-is");
    assert_eq!(hang["outcome"], "fail", "{hang}");
    let said = hang["failure"]["actual"].as_str().unwrap_or("");
    for part in [
        "thread `vcpu0` was still in its step",
        "kicked with SIGUSR1",
        "its thread, state ",
        "KVM's counters for this vCPU meanwhile: ",
    ] {
        assert!(said.contains(part), "{part:?} missing from {hang}");
    }

    let closed = outcome(&events, "a-file-closed-in-a-race-is-gone-for-the-other-threads");
    assert_eq!(closed["outcome"], "error", "{closed}");
    assert!(closed["reason"].as_str().unwrap_or("").contains("`f` does not exist"), "{closed}");
}

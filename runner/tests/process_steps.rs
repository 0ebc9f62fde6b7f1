//! The process and memory steps on this host's real /dev/kvm: a forked child's verdicts come back
//! with the inner step's location, fds given over SCM_RIGHTS replace the parent's, a child that
//! dies is a failure naming its step, and a memory bound is really judged.

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_gmemconf");
const SUITE: &str = "runner/tests/fixtures/process.yaml";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn run(suite: &Path) -> (Output, Vec<Value>) {
    let out = Command::new(BIN)
        .args(["run", "--format", "json", "--no-baselines"])
        .arg(suite)
        .current_dir(repo())
        .output()
        .expect("gmemconf starts");
    let events = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["event"] == "case")
        .collect();
    (out, events)
}

fn event<'a>(events: &'a [Value], id: &str) -> &'a Value {
    events.iter().find(|e| e["id"] == id).unwrap_or_else(|| panic!("no event for {id} among {events:#?}"))
}

#[test]
fn forks_gives_and_cycles_pass_and_failures_name_their_step() {
    let (out, events) = run(&repo().join(SUITE));
    let stderr = String::from_utf8_lossy(&out.stderr);
    for id in ["process::child-vm-ioctls-are-eio-and-given-fds-come-back", "process::cycles-leave-nothing-open"] {
        assert_eq!(event(&events, id)["outcome"], "pass", "{id}: {}\n{stderr}", event(&events, id));
    }
    let died = event(&events, "process::a-child-that-dies-is-reported");
    assert_eq!(died["outcome"], "fail", "{died}");
    let actual = died["failure"]["actual"].as_str().unwrap_or("");
    assert!(actual.contains("killed by SIGSEGV during `mem_write map:m`"), "{died}");
    let grew = event(&events, "process::growth-beyond-a-bound-is-red");
    assert_eq!(grew["outcome"], "fail", "{grew}");
    assert!(grew["failure"]["expected"].as_str().unwrap_or("").contains("rss: at most 1024 KiB"), "{grew}");
    assert_eq!(out.status.code(), Some(1));
}

#[test]
fn a_wrong_expectation_inside_a_child_fails_the_fork_at_the_inner_step() {
    let dir = std::env::temp_dir().join(format!("gmemconf-process-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let text = std::fs::read_to_string(repo().join(SUITE)).expect("suite readable");
    let from = "            - check_extension: { on: vm, cap: USER_MEMORY2 }\n              expect: { errno: EIO }";
    assert!(text.contains(from));
    let path = dir.join("process.yaml");
    std::fs::write(&path, text.replacen(from, "            - check_extension: { on: vm, cap: USER_MEMORY2 }", 1))
        .expect("write");
    let (_, events) = run(&path);
    let e = event(&events, "process::child-vm-ioctls-are-eio-and-given-fds-come-back");
    assert_eq!(e["outcome"], "fail", "{e}");
    let f = &e["failure"];
    assert_eq!(f["op"], "fork > check_extension", "{e}");
    assert!(f["location"].as_str().unwrap_or("").ends_with("process.yaml:15:15"), "{e}");
    assert_eq!(f["actual"], "errno EIO (5)", "{e}");
    let _ = std::fs::remove_dir_all(&dir);
}

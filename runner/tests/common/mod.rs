//! Where the integration tests run guest_memfd cases: this host's /dev/kvm when it offers an
//! mmap-able guest_memfd, else inside the test kernel booted in QEMU (the qemu target). Neither
//! available is a test failure with the fix, never a silent pass.

#![allow(dead_code)]

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub const BIN: &str = env!("CARGO_BIN_EXE_gmemconf");

/// The kernel the qemu target boots: GMEMCONF_TEST_KERNEL, else the cached `debian:7.3` build.
pub const KERNEL_ENV: &str = "GMEMCONF_TEST_KERNEL";
pub const DEFAULT_SPEC: &str = "debian:7.3";

pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

pub fn gmemconf(args: &[&str]) -> Output {
    Command::new(BIN).args(args).current_dir(repo()).output().expect("gmemconf starts")
}

#[derive(Debug, Clone)]
pub enum Target {
    Host,
    Qemu(String),
}

impl Target {
    /// What to put after `gmemconf run` to run on this target.
    pub fn args(&self) -> Vec<String> {
        match self {
            Target::Host => Vec::new(),
            Target::Qemu(kernel) => vec!["--kernel".into(), kernel.clone()],
        }
    }

    /// Runs `gmemconf run <target> <args>`.
    pub fn run(&self, args: &[&str]) -> Output {
        let mut all: Vec<String> = vec!["run".into()];
        all.extend(self.args());
        all.extend(args.iter().map(|s| s.to_string()));
        let refs: Vec<&str> = all.iter().map(String::as_str).collect();
        gmemconf(&refs)
    }

    pub fn is_qemu(&self) -> bool {
        matches!(self, Target::Qemu(_))
    }
}

/// The host's probe, as `gmemconf probe --format json` reports it.
pub fn host_probe() -> Value {
    let out = gmemconf(&["probe", "--format", "json"]);
    assert!(out.status.success(), "this machine has no usable /dev/kvm:\n{}", String::from_utf8_lossy(&out.stdout));
    serde_json::from_slice(&out.stdout).expect("probe JSON")
}

/// This host if its default VMs have mmap-able guest_memfd, else the test kernel in QEMU.
pub fn gmem_target() -> Target {
    let probe = host_probe();
    let flags = probe["caps_vm"]["GUEST_MEMFD_FLAGS"].as_i64().unwrap_or(0);
    if probe["caps_vm"]["GUEST_MEMFD"].as_i64().unwrap_or(0) > 0 && flags & 3 == 3 {
        return Target::Host;
    }
    Target::Qemu(test_kernel())
}

/// The test kernel's bzImage: GMEMCONF_TEST_KERNEL, else `debian:7.3` from the image cache, built
/// there first if it is not (10 to 20 minutes once, on 2 cores). Fails with the fix when it cannot.
pub fn test_kernel() -> String {
    let qemu = Command::new("qemu-system-x86_64").arg("--version").output();
    assert!(
        qemu.is_ok_and(|o| o.status.success()),
        "qemu-system-x86_64 is not installed: this host has no mmap-able guest_memfd, so these tests run \
         inside the test kernel in QEMU (run ci/install-deps as root)"
    );
    if let Ok(path) = std::env::var(KERNEL_ENV) {
        assert!(Path::new(&path).is_file(), "{KERNEL_ENV}={path} is not a file");
        return path;
    }
    eprintln!("tests: building or finding the test kernel (gmemconf image build {DEFAULT_SPEC})");
    let out = gmemconf(&["image", "build", "-q", DEFAULT_SPEC]);
    let path = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(
        out.status.success() && Path::new(&path).is_file(),
        "no test kernel: `gmemconf image build {DEFAULT_SPEC}` failed (install its tools with ci/install-deps, \
         or set {KERNEL_ENV} to a bzImage)\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    path
}

/// The JSON-lines events of a `run --format json` on stdout.
pub fn all_events(out: &Output) -> Vec<Value> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap_or_else(|e| panic!("stdout line is not JSON ({e}): {l}")))
        .collect()
}

/// The events of one kind.
pub fn events(out: &Output, kind: &str) -> Vec<Value> {
    all_events(out).into_iter().filter(|v| v["event"] == kind).collect()
}

pub fn event<'a>(events: &'a [Value], id: &str) -> &'a Value {
    events.iter().find(|e| e["id"] == id).unwrap_or_else(|| panic!("no event for {id}"))
}

pub fn tempdir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("gmemconf-test-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

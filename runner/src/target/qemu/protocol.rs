//! What the host and the guest say to each other. The host packs `GuestArgs` into the initramfs;
//! the guest answers on its second serial port with JSON lines (`GuestEvent`), the host sends one
//! `Plan` line back after `run_started`, and the guest runs exactly the cases it names.

use crate::probe::Probe;
use crate::report::event::CaseEvent;
use serde::{Deserialize, Serialize};

/// Where the args file is inside the initramfs.
pub const ARGS_PATH: &str = "/gmemconf/args.json";
/// The event channel inside the guest: the second serial port (QEMU's second `-serial`).
pub const EVENT_PORT: &str = "/dev/ttyS1";

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct GuestArgs {
    pub suites: Vec<SuiteFile>,
    pub baselines: Vec<BaselineFile>,
    /// Multiplies every case's timeout on top of what the guest's probe asks for.
    pub timeout_scale: f64,
    /// `gmemconf run --seed`: the seed of every race that does not fix its own.
    #[serde(default)]
    pub seed: Option<String>,
    /// Instead of the event protocol, run gmemconf with these arguments on the console (the
    /// qemu form of a command that only prints, such as `bench`).
    #[serde(default)]
    pub exec: Vec<String>,
}

/// A suite the host loaded: its text is packed at `file`; `source` is how the host names it
/// (`Source::to_arg`), so that locations and rerun hints read as on the host.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SuiteFile {
    pub source: String,
    pub file: String,
    /// The suite's name (ids are `name::case`), so that the guest parses only what the plan needs.
    #[serde(default)]
    pub name: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct BaselineFile {
    pub shown_as: String,
    pub file: String,
}

/// The host's answer to `run_started`: the cases to run, in order, and how many at once (None:
/// twice the guest's CPUs, as on the host target).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Plan {
    pub ids: Vec<String>,
    pub test_threads: Option<usize>,
}

/// Lines the guest writes. `run_started`, `case` and `run_finished` are the host target's own
/// events; the others exist only between guest and host.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum GuestEvent {
    RunStarted(Box<GuestUp>),
    /// Where the guest's boot time went, by its own clock (ms since the kernel started).
    Timeline {
        init_ms: u64,
        runner_ms: u64,
        probed_ms: u64,
    },
    CaseStarted {
        id: String,
    },
    Case(Box<CaseEvent>),
    Heartbeat {},
    RunFinished {},
    /// gmemconf itself failed inside the guest (a panic, a bad args file, no event port).
    GuestError {
        message: String,
    },
}

/// The guest's `run_started`: what its kernel can do.
#[derive(Debug, Clone, Deserialize)]
pub struct GuestUp {
    pub probe: Probe,
    pub fingerprint: String,
    pub timeout_scale: f64,
    #[serde(default)]
    pub kernel_log_unwatched: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct CaseStarted<'a> {
    pub event: &'static str,
    pub id: &'a str,
}

#[derive(Debug, Clone, Serialize)]
pub struct Timeline {
    pub event: &'static str,
    /// When PID 1 started.
    pub init_ms: u64,
    /// When the runner started (after exec of the executable again).
    pub runner_ms: u64,
    /// When the suites were loaded and the probe done, just before `run_started`.
    pub probed_ms: u64,
}

/// The environment variable that tells the runner when PID 1 started (ms of kernel uptime).
pub const INIT_MS_ENV: &str = "GMEMCONF_INIT_MS";

/// The guest kernel's uptime in ms (/proc/uptime), 0 if it cannot be read.
pub fn uptime_ms() -> u64 {
    std::fs::read_to_string("/proc/uptime")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|u| u.parse::<f64>().ok()))
        .map_or(0, |secs| (secs * 1000.0) as u64)
}

#[derive(Debug, Clone, Serialize)]
pub struct Heartbeat {
    pub event: &'static str,
    pub uptime_ms: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct GuestError<'a> {
    pub event: &'static str,
    pub message: &'a str,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guest_lines_parse() {
        let e: GuestEvent = serde_json::from_str(r#"{"event":"case_started","id":"s::c"}"#).expect("parses");
        assert!(matches!(e, GuestEvent::CaseStarted { id } if id == "s::c"));
        let e: GuestEvent = serde_json::from_str(r#"{"event":"heartbeat","uptime_ms":5}"#).expect("parses");
        assert!(matches!(e, GuestEvent::Heartbeat {}));
        let line = r#"{"event":"case","id":"s::c","outcome":"fail","duration_ms":3,"location":"s.yaml:1:1",
            "reference":"r","failure":{"step":1,"of":2,"op":"read","location":"s.yaml:3:9","expected":"errno EINVAL",
            "actual":"success","call":"read(g, 64)","contract":"r"},"rerun":"x","target":"7.3.4"}"#;
        let GuestEvent::Case(c) = serde_json::from_str(line).expect("parses") else { panic!("not a case") };
        assert_eq!((c.id.as_str(), c.event, c.failure.map(|f| f.step)), ("s::c", "case", Some(1)));
    }

    #[test]
    fn args_round_trip() {
        let a = GuestArgs {
            suites: vec![SuiteFile {
                source: "embedded:suites/sealing.yaml".into(),
                file: "/gmemconf/s0.yaml".into(),
                name: "sealing".into(),
            }],
            baselines: vec![],
            timeout_scale: 3.0,
            seed: Some("0x5eed".into()),
            exec: vec![],
        };
        let text = serde_json::to_string(&a).expect("serializes");
        assert_eq!(serde_json::from_str::<GuestArgs>(&text).expect("parses"), a);
    }
}

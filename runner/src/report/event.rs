//! The record of a run: one event per line, written as each case ends. Every other output is
//! rendered from these.

use crate::exec::protocol::StepFailure;
use crate::probe::Probe;
use crate::suite::baseline::Baseline;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Pass,
    Fail,
    Skip,
    /// Failed as a baseline entry says this kernel does.
    Xfail,
    /// Passed although a baseline entry says it fails here: the entry is stale.
    Xpass,
    Timeout,
    Crashed,
    /// gmemconf could not carry the case out (not a kernel verdict).
    Error,
}

impl Outcome {
    pub const ALL: [Outcome; 8] = [
        Outcome::Pass,
        Outcome::Fail,
        Outcome::Skip,
        Outcome::Xfail,
        Outcome::Xpass,
        Outcome::Timeout,
        Outcome::Crashed,
        Outcome::Error,
    ];

    /// Whether this outcome makes the run fail (exit status 1).
    pub fn is_failure(self) -> bool {
        !matches!(self, Outcome::Pass | Outcome::Skip | Outcome::Xfail)
    }

    pub fn label(self) -> &'static str {
        match self {
            Outcome::Pass => "pass",
            Outcome::Fail => "fail",
            Outcome::Skip => "skip",
            Outcome::Xfail => "xfail",
            Outcome::Xpass => "xpass",
            Outcome::Timeout => "timeout",
            Outcome::Crashed => "crashed",
            Outcome::Error => "error",
        }
    }
}

/// Read back by the qemu target's host side from the guest's event stream.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CaseEvent {
    #[serde(skip_deserializing, default = "case_tag")]
    pub event: &'static str,
    pub id: String,
    pub outcome: Outcome,
    pub duration_ms: u64,
    /// file:line:column of the case.
    pub location: String,
    pub reference: String,
    /// Skip reason, timeout or crash detail, or the error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<StepFailure>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub baseline: Option<Baseline>,
    /// What the case process printed, when it did not pass.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<String>,
    /// Kernel log lines of level warning or worse that appeared while the case ran.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub kernel_log: Vec<String>,
    /// What the steps said beyond their verdicts: the interleavings a race achieved, its seed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
    pub rerun: String,
    /// The probe fingerprint of the kernel the case ran on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
}

impl CaseEvent {
    /// What was observed to go wrong, for matching a baseline's symptom: the failing step's
    /// observation, and the reason a case did not finish.
    pub fn what_went_wrong(&self) -> String {
        let actual = self.failure.as_ref().map(|f| f.actual.as_str()).unwrap_or_default();
        format!("{actual}\n{}", self.reason.as_deref().unwrap_or_default())
    }
}

fn case_tag() -> &'static str {
    "case"
}

#[derive(Debug, Clone, Serialize)]
pub struct RunStarted<'a> {
    pub event: &'static str,
    pub gmemconf: &'static str,
    pub target: &'static str,
    pub fingerprint: String,
    pub probe: &'a Probe,
    pub cases: usize,
    /// Why kernel WARN/BUG lines and taint cannot be watched here, if they cannot.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kernel_log_unwatched: Option<String>,
    /// What every case's timeout is multiplied by on this target.
    pub timeout_scale: f64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Counts {
    pub pass: usize,
    pub fail: usize,
    pub skip: usize,
    pub xfail: usize,
    pub xpass: usize,
    pub timeout: usize,
    pub crashed: usize,
    pub error: usize,
}

impl Counts {
    pub fn add(&mut self, o: Outcome) {
        let slot = match o {
            Outcome::Pass => &mut self.pass,
            Outcome::Fail => &mut self.fail,
            Outcome::Skip => &mut self.skip,
            Outcome::Xfail => &mut self.xfail,
            Outcome::Xpass => &mut self.xpass,
            Outcome::Timeout => &mut self.timeout,
            Outcome::Crashed => &mut self.crashed,
            Outcome::Error => &mut self.error,
        };
        *slot += 1;
    }

    pub fn get(&self, o: Outcome) -> usize {
        match o {
            Outcome::Pass => self.pass,
            Outcome::Fail => self.fail,
            Outcome::Skip => self.skip,
            Outcome::Xfail => self.xfail,
            Outcome::Xpass => self.xpass,
            Outcome::Timeout => self.timeout,
            Outcome::Crashed => self.crashed,
            Outcome::Error => self.error,
        }
    }

    pub fn total(&self) -> usize {
        Outcome::ALL.iter().map(|o| self.get(*o)).sum()
    }

    pub fn failed(&self) -> bool {
        Outcome::ALL.iter().any(|o| o.is_failure() && self.get(*o) > 0)
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct RunFinished {
    pub event: &'static str,
    pub counts: Counts,
    pub duration_ms: u64,
}

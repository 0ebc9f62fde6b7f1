//! Messages from a case's child process to the runner, one JSON object per line on fd 3.

use serde::{Deserialize, Serialize};

/// The descriptor number the child writes its messages to.
pub const REPORT_FD: i32 = 3;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Message {
    /// Step `index` (1-based) is about to run.
    Step {
        index: usize,
    },
    /// What a step has to say beyond its verdict (a race's interleavings and seed).
    Note {
        text: String,
    },
    Done {
        result: CaseResult,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum CaseResult {
    Pass,
    Fail(StepFailure),
    /// The case could not be carried out (gmemconf or the case is at fault, not the kernel).
    Error {
        step: Option<usize>,
        message: String,
    },
}

/// The step whose expectation did not hold, with everything a reader needs to act on it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepFailure {
    /// 1-based.
    pub step: usize,
    pub of: usize,
    pub op: String,
    /// file:line:column of the step.
    pub location: String,
    pub expected: String,
    pub actual: String,
    pub call: String,
    /// The contract the step checks: its own `ref`, else the case's.
    pub contract: String,
}

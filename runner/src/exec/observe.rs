//! What a step observed, and the judgement of it against what the step expects.

use crate::suite::expect::{FieldSpec, FieldVal, Outcome, ResultExp};
use crate::suite::names::errno_name;
use nix::errno::Errno;
use nix::sys::signal::Signal;
use std::borrow::Cow;

#[derive(Debug, Clone, PartialEq)]
pub enum ObsResult {
    /// The call returned this (non-negative) value.
    Ok(i64),
    Errno(Errno),
    /// The step's process died of this signal.
    Signal(Signal),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Observed {
    pub result: ObsResult,
    pub fields: Vec<(&'static str, FieldVal)>,
    /// The call as made, with its arguments: `KVM_SET_USER_MEMORY_REGION2 { slot: 1, ... }`.
    /// (A hot race step may name itself only, and give the arguments when something is wrong.)
    pub call: Cow<'static, str>,
    /// What else was seen that helps a reader (a guest's mismatch, a partial read).
    pub note: Option<String>,
}

impl Observed {
    pub fn new(result: ObsResult, call: impl Into<Cow<'static, str>>) -> Observed {
        Observed { result, fields: Vec::new(), call: call.into(), note: None }
    }

    /// From a syscall's result as `sys` captured it.
    pub fn from_rc(rc: Result<i64, Errno>, call: impl Into<Cow<'static, str>>) -> Observed {
        let result = match rc {
            Ok(v) => ObsResult::Ok(v),
            Err(e) => ObsResult::Errno(e),
        };
        Observed::new(result, call)
    }

    pub fn from_result<T>(r: Result<T, Errno>, call: impl Into<Cow<'static, str>>) -> Observed {
        Observed::new(
            match r {
                Ok(_) => ObsResult::Ok(0),
                Err(e) => ObsResult::Errno(e),
            },
            call,
        )
    }

    pub fn field(mut self, name: &'static str, v: FieldVal) -> Observed {
        self.fields.push((name, v));
        self
    }

    pub fn is_ok(&self) -> bool {
        matches!(self.result, ObsResult::Ok(_))
    }
}

/// A libc return value with its errno taken at once, before any other call can change errno.
pub fn sys(rc: i64) -> Result<i64, Errno> {
    if rc < 0 { Err(Errno::last()) } else { Ok(rc) }
}

/// Expected and actual, rendered for a failure report.
#[derive(Debug, Clone, PartialEq)]
pub struct Mismatch {
    pub expected: String,
    pub actual: String,
}

fn render_fields(fields: &[(&'static str, FieldVal)], specs: &[FieldSpec]) -> String {
    fields
        .iter()
        .map(|(n, v)| {
            let kind = specs.iter().find(|s| s.name == *n).map(|s| s.kind);
            format!("{n}: {}", v.render(kind))
        })
        .collect::<Vec<_>>()
        .join(", ")
}

pub fn render_expected(o: &Outcome, specs: &[FieldSpec]) -> String {
    let head = match &o.result {
        ResultExp::Ok => "success".to_string(),
        ResultExp::Errno(list) => {
            let names: Vec<&str> = list.iter().map(|e| errno_name(*e)).collect();
            format!("errno {}", names.join(" or "))
        }
        ResultExp::OkOr(list) => {
            let names: Vec<&str> = list.iter().map(|e| errno_name(*e)).collect();
            format!("success or errno {}", names.join(" or "))
        }
        ResultExp::Signal(s) => format!("killed by {}", s.as_str()),
    };
    if o.fields.is_empty() { head } else { format!("{head} with {}", render_fields(&o.fields, specs)) }
}

pub fn render_actual(obs: &Observed, specs: &[FieldSpec]) -> String {
    let head = match &obs.result {
        ObsResult::Ok(v) => format!("success (returned {v})"),
        ObsResult::Errno(e) => format!("errno {} ({})", errno_name(*e), *e as i32),
        ObsResult::Signal(s) => format!("killed by {}", s.as_str()),
    };
    let mut s = if obs.fields.is_empty() { head } else { format!("{head} with {}", render_fields(&obs.fields, specs)) };
    if let Some(n) = &obs.note {
        s.push_str("; ");
        s.push_str(n);
    }
    s
}

/// Judges an observation. `implied` are fields a successful step always checks unless the
/// expectation names any of them itself (a guest program must finish and halt, unless the case
/// states how it ends). `invariant` are fields checked whenever the step observed them, unless the expectation names
/// that very field. Builds nothing unless the observation fails (races judge millions of steps).
pub fn judge(
    expected: &Outcome,
    implied: &[(&'static str, FieldVal)],
    invariant: &[(&'static str, FieldVal)],
    obs: &Observed,
    specs: &[FieldSpec],
) -> Result<(), Mismatch> {
    let named = |name: &str| expected.fields.iter().any(|(n, _)| *n == name);
    let wants_ok = matches!(expected.result, ResultExp::Ok);
    let implied_apply = wants_ok && !implied.iter().any(|(m, _)| named(m));
    let observed = |name: &str| obs.fields.iter().any(|(n, _)| *n == name);
    let invariant_applies = |m: &str| !named(m) && (wants_ok || observed(m));
    let extra = implied.iter().filter(|_| implied_apply).chain(invariant.iter().filter(|(m, _)| invariant_applies(m)));
    let mut want = expected.fields.iter().chain(extra);
    let result_ok = match (&expected.result, &obs.result) {
        (ResultExp::Ok, ObsResult::Ok(_)) => true,
        (ResultExp::Errno(list) | ResultExp::OkOr(list), ObsResult::Errno(e)) => list.contains(e),
        (ResultExp::OkOr(_), ObsResult::Ok(_)) => true,
        (ResultExp::Signal(s), ObsResult::Signal(got)) => s == got,
        _ => false,
    };
    if result_ok && want.all(|(name, v)| obs.fields.iter().any(|(n, got)| n == name && v.accepts(got))) {
        return Ok(());
    }
    let mut full = expected.clone();
    full.fields.extend(
        implied.iter().filter(|_| implied_apply).chain(invariant.iter().filter(|(m, _)| invariant_applies(m))).cloned(),
    );
    Err(Mismatch { expected: render_expected(&full, specs), actual: render_actual(obs, specs) })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::suite::expect::FieldKind;

    const SPECS: &[FieldSpec] = &[FieldSpec { name: "size", kind: FieldKind::Int }];

    #[test]
    fn errno_mismatch_renders_both_sides() {
        let want = Outcome { result: ResultExp::Errno(vec![Errno::EINVAL]), fields: vec![] };
        let obs = Observed::new(ObsResult::Ok(0), "read");
        let m = judge(&want, &[], &[], &obs, SPECS).expect_err("success is not EINVAL");
        assert_eq!(m.expected, "errno EINVAL");
        assert_eq!(m.actual, "success (returned 0)");
    }

    #[test]
    fn fields_must_all_match() {
        let want = Outcome { result: ResultExp::Ok, fields: vec![("size", FieldVal::Int(4096))] };
        let obs = Observed::new(ObsResult::Ok(0), "fstat").field("size", FieldVal::Int(8192));
        let m = judge(&want, &[], &[], &obs, SPECS).expect_err("sizes differ");
        assert_eq!(m.actual, "success (returned 0) with size: 0x2000");
        let obs = Observed::new(ObsResult::Ok(0), "fstat").field("size", FieldVal::Int(4096));
        assert!(judge(&want, &[], &[], &obs, SPECS).is_ok());
    }
}

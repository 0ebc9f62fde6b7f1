//! What a step expects: success, an errno, a signal, and the fields of what it observed.
//! An expectation may depend on a probed capability (`if:`/`then:`/`else:`).

use super::Requirement;
use super::error::{NResult, NodeError, unknown_name_help};
use super::names::{self, FlagTable};
use super::node::{Node, Value};
use nix::errno::Errno;
use nix::sys::signal::Signal;

#[derive(Debug, Clone, Copy)]
pub enum FieldKind {
    Int,
    /// An amount of memory in bytes (written `2M`, shown in KiB); may be negative (a growth).
    Bytes,
    /// A byte value, shown as 0xNN.
    Byte,
    /// File mode bits, shown in octal.
    Mode,
    Bool,
    Word(&'static [&'static str]),
    Flags(&'static FlagTable),
}

#[derive(Debug, Clone, Copy)]
pub struct FieldSpec {
    pub name: &'static str,
    pub kind: FieldKind,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FieldVal {
    Int(i128),
    Bool(bool),
    Word(String),
    /// Observed: several distinct values at once (the bytes of a range that differ).
    Set(Vec<i128>),
    /// Expected: any one of these (for a Set: every member is one of these).
    AnyOf(Vec<FieldVal>),
    /// Expected: a number within these bounds, both included (`{ max: 2048 }`, `{ min: 1 }`).
    Within {
        min: Option<i128>,
        max: Option<i128>,
    },
}

impl FieldVal {
    /// Whether an observed value meets this expected one.
    pub fn accepts(&self, got: &FieldVal) -> bool {
        match (self, got) {
            (FieldVal::AnyOf(options), FieldVal::Set(members)) => {
                members.iter().all(|m| options.iter().any(|o| o.accepts(&FieldVal::Int(*m))))
            }
            (FieldVal::AnyOf(options), got) => options.iter().any(|o| o.accepts(got)),
            (FieldVal::Within { min, max }, FieldVal::Int(v)) => {
                min.is_none_or(|lo| *v >= lo) && max.is_none_or(|hi| *v <= hi)
            }
            (want, got) => want == got,
        }
    }

    pub fn render(&self, kind: Option<FieldKind>) -> String {
        match (self, kind) {
            (FieldVal::Int(v), Some(FieldKind::Flags(t))) => match u64::try_from(*v) {
                Ok(v) => t.render(v),
                Err(_) => v.to_string(),
            },
            (FieldVal::Int(v), Some(FieldKind::Byte)) => format!("{v:#04x}"),
            (FieldVal::Int(v), Some(FieldKind::Mode)) => format!("{v:#o}"),
            (FieldVal::Int(v), Some(FieldKind::Bytes)) if v % 1024 == 0 => format!("{} KiB", v / 1024),
            (FieldVal::Int(v), Some(FieldKind::Bytes)) => format!("{v} bytes"),
            (FieldVal::Int(v), _) if *v >= 4096 => format!("{v:#x}"),
            (FieldVal::Int(v), _) => v.to_string(),
            (FieldVal::Bool(b), _) => b.to_string(),
            (FieldVal::Word(w), _) => w.clone(),
            (FieldVal::Set(members), kind) => format!(
                "mixed ({})",
                members.iter().map(|m| FieldVal::Int(*m).render(kind)).collect::<Vec<_>>().join(", ")
            ),
            (FieldVal::AnyOf(options), kind) => {
                format!("one of [{}]", options.iter().map(|o| o.render(kind)).collect::<Vec<_>>().join(", "))
            }
            (FieldVal::Within { min, max }, kind) => {
                let n = |v: &i128| FieldVal::Int(*v).render(kind);
                match (min, max) {
                    (Some(lo), Some(hi)) => format!("between {} and {}", n(lo), n(hi)),
                    (None, Some(hi)) => format!("at most {}", n(hi)),
                    (Some(lo), None) => format!("at least {}", n(lo)),
                    (None, None) => "any number".to_string(),
                }
            }
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResultExp {
    Ok,
    /// Any of these errnos (more than one only where the contract allows either).
    Errno(Vec<Errno>),
    /// Success or any of these errnos: a call racing another thread, where the contract says
    /// each answer is right at some moment (`result: [ok, ENOENT, EINTR]`).
    OkOr(Vec<Errno>),
    Signal(Signal),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub result: ResultExp,
    pub fields: Vec<(&'static str, FieldVal)>,
}

impl Outcome {
    pub const OK: Outcome = Outcome { result: ResultExp::Ok, fields: Vec::new() };
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expect {
    Plain(Outcome),
    If { cond: Requirement, negated: bool, then: Box<Expect>, otherwise: Box<Expect> },
}

impl Expect {
    /// The outcome that applies on a target, given which requirements it meets.
    pub fn resolve(&self, met: &dyn Fn(&Requirement) -> bool) -> &Outcome {
        match self {
            Expect::Plain(o) => o,
            Expect::If { cond, negated, then, otherwise } => {
                if met(cond) != *negated {
                    then.resolve(met)
                } else {
                    otherwise.resolve(met)
                }
            }
        }
    }

    /// True when the step must succeed whatever the target: then what it needs is implied.
    pub fn is_unconditional_ok(&self) -> bool {
        matches!(self, Expect::Plain(Outcome { result: ResultExp::Ok, .. }))
    }
}

pub fn parse(node: Option<&Node>, fields: &[FieldSpec]) -> NResult<Expect> {
    let Some(node) = node else {
        return Ok(Expect::Plain(Outcome::OK));
    };
    match &node.value {
        Value::Str(s) if s == "ok" => Ok(Expect::Plain(Outcome::OK)),
        Value::Map(entries) if node.get("if").is_some() => {
            for (k, _) in entries {
                let key = k.as_str().unwrap_or_default();
                if !["if", "then", "else"].contains(&key) {
                    return Err(NodeError::at(k, format!("unknown key `{key}` in a conditional expectation"))
                        .help("a conditional expectation is `{ if: <capability>, then: <expect>, else: <expect> }`"));
                }
            }
            let cond_node = node.get("if").ok_or_else(|| NodeError::at(node, "missing `if`"))?;
            let text = cond_node.as_str().unwrap_or_default();
            let (negated, name) = match text.strip_prefix('!') {
                Some(rest) => (true, rest.trim()),
                None => (false, text),
            };
            let cond = Requirement::parse(&Node::new(Value::Str(name.to_string()), cond_node.loc))?;
            let branch = |key: &str| -> NResult<Expect> {
                let n = node.get(key).ok_or_else(|| {
                    NodeError::at(node, format!("conditional expectation needs `{key}`"))
                        .help("write both branches: `then: ok`, `else: { errno: EINVAL }`")
                })?;
                parse(Some(n), fields)
            };
            Ok(Expect::If { cond, negated, then: Box::new(branch("then")?), otherwise: Box::new(branch("else")?) })
        }
        Value::Map(entries) => {
            let mut outcome = Outcome::OK;
            for (k, v) in entries {
                let key = k.as_str().unwrap_or_default();
                match key {
                    "errno" => {
                        let list = match &v.value {
                            Value::Seq(items) => items.iter().map(names::parse_errno).collect::<NResult<Vec<_>>>()?,
                            _ => vec![names::parse_errno(v)?],
                        };
                        if list.is_empty() {
                            return Err(NodeError::at(v, "`errno: []` expects nothing").help("name at least one errno"));
                        }
                        outcome.result = ResultExp::Errno(list);
                    }
                    "signal" => outcome.result = ResultExp::Signal(names::parse_signal(v)?),
                    "result" => outcome.result = parse_result_list(v)?,
                    _ => {
                        let spec = fields.iter().find(|f| f.name == key).ok_or_else(|| {
                            let mut known: Vec<&str> = vec!["errno", "signal", "result"];
                            known.extend(fields.iter().map(|f| f.name));
                            NodeError::at(k, format!("this step has no field `{key}` to expect"))
                                .help(unknown_name_help(key, &known))
                        })?;
                        outcome.fields.push((spec.name, parse_field(v, spec)?));
                    }
                }
            }
            if matches!(outcome.result, ResultExp::Signal(_)) && !outcome.fields.is_empty() {
                return Err(NodeError::at(node, "a step that dies of a signal observes no fields")
                    .help("check the memory in a later step"));
            }
            Ok(Expect::Plain(outcome))
        }
        _ => Err(NodeError::at(node, format!("an expectation is `ok` or a mapping, found {}", node.kind()))
            .help("write `expect: { errno: EINVAL }`, `expect: { signal: SIGBUS }`, `expect: { size: 4K }`")),
    }
}

/// `result: [ok, ENOENT, EINTR]`: success or any of the errnos.
fn parse_result_list(node: &Node) -> NResult<ResultExp> {
    let items = node.as_seq().filter(|i| !i.is_empty()).ok_or_else(|| {
        NodeError::at(node, "`result` is a list of `ok` and errnos").help("write `result: [ok, ENOENT, EINTR]`")
    })?;
    let mut ok = false;
    let mut errnos = Vec::new();
    for item in items {
        if item.as_str() == Some("ok") {
            ok = true;
        } else {
            errnos.push(names::parse_errno(item)?);
        }
    }
    Ok(match (ok, errnos.is_empty()) {
        (true, true) => ResultExp::Ok,
        (true, false) => ResultExp::OkOr(errnos),
        (false, _) => ResultExp::Errno(errnos),
    })
}

fn parse_field(node: &Node, spec: &FieldSpec) -> NResult<FieldVal> {
    // A list is a set of acceptable values, except for flags, where a list is a mask.
    if let (Value::Seq(items), false) = (&node.value, matches!(spec.kind, FieldKind::Flags(_))) {
        if items.is_empty() {
            return Err(NodeError::at(node, format!("`{}: []` accepts nothing", spec.name))
                .help("list at least one acceptable value"));
        }
        return items.iter().map(|i| parse_field(i, spec)).collect::<NResult<Vec<_>>>().map(FieldVal::AnyOf);
    }
    match spec.kind {
        FieldKind::Int | FieldKind::Bytes if node.as_map().is_some() => parse_bounds(node, spec),
        FieldKind::Int | FieldKind::Bytes | FieldKind::Byte | FieldKind::Mode => {
            names::parse_i128(node).map(FieldVal::Int)
        }
        FieldKind::Flags(t) => t.parse(node).map(|v| FieldVal::Int(v.into())),
        FieldKind::Bool => match node.value {
            Value::Bool(b) => Ok(FieldVal::Bool(b)),
            _ => Err(NodeError::at(node, format!("`{}` is true or false", spec.name))),
        },
        FieldKind::Word(words) => {
            let w = node.as_str().unwrap_or_default();
            if words.contains(&w) {
                Ok(FieldVal::Word(w.to_string()))
            } else {
                Err(NodeError::at(node, format!("`{}` cannot be `{}`", spec.name, node.render_compact()))
                    .help(unknown_name_help(w, words)))
            }
        }
    }
}

/// `{ max: N }`, `{ min: N }` or both: a bound on a number the step measures.
fn parse_bounds(node: &Node, spec: &FieldSpec) -> NResult<FieldVal> {
    let help = || format!("write `{}: {{ max: 2048 }}` (or `min:`, or both; each bound is included)", spec.name);
    let entries = node.as_map().unwrap_or_default();
    let (mut min, mut max) = (None, None);
    for (k, v) in entries {
        match k.as_str().unwrap_or_default() {
            "min" => min = Some(names::parse_i128(v)?),
            "max" => max = Some(names::parse_i128(v)?),
            other => {
                return Err(NodeError::at(k, format!("unknown bound `{other}` for `{}`", spec.name)).help(help()));
            }
        }
    }
    match (min, max) {
        (None, None) => Err(NodeError::at(node, format!("`{}` has no bound", spec.name)).help(help())),
        (Some(lo), Some(hi)) if lo > hi => {
            Err(NodeError::at(node, format!("`{}` has min {lo} above max {hi}: nothing meets it", spec.name))
                .help(help()))
        }
        _ => Ok(FieldVal::Within { min, max }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(yaml: &str, kind: FieldKind) -> NResult<FieldVal> {
        let root = super::super::node::parse(&format!("v: {yaml}")).expect("valid yaml");
        parse_field(root.get("v").expect("v"), &FieldSpec { name: "rss", kind })
    }

    #[test]
    fn bounds_include_their_ends() {
        let at_most = field("{ max: 2M }", FieldKind::Bytes).expect("a bound");
        assert_eq!(at_most, FieldVal::Within { min: None, max: Some(2 << 20) });
        assert!(at_most.accepts(&FieldVal::Int(2 << 20)));
        assert!(at_most.accepts(&FieldVal::Int(-4096)));
        assert!(!at_most.accepts(&FieldVal::Int((2 << 20) + 1)));
        let between = field("{ min: -1, max: 1 }", FieldKind::Int).expect("a bound");
        assert!(between.accepts(&FieldVal::Int(-1)) && between.accepts(&FieldVal::Int(1)));
        assert!(!between.accepts(&FieldVal::Int(2)) && !between.accepts(&FieldVal::Int(-2)));
        assert!(!between.accepts(&FieldVal::Word("1".into())));
    }

    #[test]
    fn bounds_render_in_the_field_unit() {
        let b = FieldVal::Within { min: None, max: Some(2 << 20) };
        assert_eq!(b.render(Some(FieldKind::Bytes)), "at most 2048 KiB");
        assert_eq!(FieldVal::Int(-3072).render(Some(FieldKind::Bytes)), "-3 KiB");
        assert_eq!(FieldVal::Within { min: Some(1), max: Some(3) }.render(Some(FieldKind::Int)), "between 1 and 3");
        assert_eq!(FieldVal::Within { min: Some(1), max: None }.render(Some(FieldKind::Int)), "at least 1");
    }

    #[test]
    fn bad_bounds_are_load_errors() {
        let e = field("{ max: 1, min: 2 }", FieldKind::Int).expect_err("empty range");
        assert!(e.message.contains("above max"), "{}", e.message);
        let e = field("{ most: 1 }", FieldKind::Int).expect_err("unknown key");
        assert!(e.message.contains("unknown bound `most`"), "{}", e.message);
        assert!(field("{}", FieldKind::Bytes).is_err());
        assert!(field("{ max: 1 }", FieldKind::Byte).is_err(), "only numbers take bounds");
    }
}

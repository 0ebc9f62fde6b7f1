//! Loads a suite file: YAML → located tree → validated cases, every error with file:line:column.

use super::error::{LoadError, NResult, NodeError, unknown_name_help};
use super::excerpt;
use super::expect;
use super::matrix;
use super::model::{Case, DEFAULT_TIMEOUT, Source, Suite};
use super::node::{self, Node, Value};
use super::parse_op::parse_op;
use super::step::{Op, STEP_KEYS, STEP_NAMES, Step};
use super::{Need, Requirement, embedded};
use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

const SUITE_KEYS: &[&str] = &["suite", "summary", "requires", "timeout", "fixtures", "cases"];
const CASE_KEYS: &[&str] = &["name", "ref", "summary", "requires", "matrix", "timeout", "ignore", "serial", "steps"];
/// Objects every case has without making them.
const BUILTIN_OBJECTS: &[&str] = &["kvm"];

pub fn load(source: &Source) -> Result<Suite, Vec<LoadError>> {
    let text = match source {
        Source::File(p) => std::fs::read_to_string(p).map_err(|e| {
            vec![LoadError {
                file: p.clone(),
                loc: None,
                message: format!("cannot read the suite: {e}"),
                help: Some("give the path of a suite file, e.g. suites/sealing.yaml".into()),
            }]
        })?,
        Source::Embedded(name) => {
            embedded::SUITES.iter().find(|(n, _)| n == name).map(|(_, t)| (*t).to_string()).unwrap_or_default()
        }
    };
    load_text(&text, source)
}

/// Which cases of a suite to expand.
#[derive(Clone, Copy)]
enum Only<'a> {
    All,
    /// One case, for its own case process (no excerpts: it is one).
    Case(&'a str),
    /// These cases, each with its excerpt, for a runner that needs no others.
    Cases(&'a HashSet<String>),
}

impl Only<'_> {
    fn wants(&self, id: &str) -> bool {
        match self {
            Only::All => true,
            Only::Case(wanted) => *wanted == id,
            Only::Cases(set) => set.contains(id),
        }
    }

    /// Whether the case named `name` (its matrix expanded or not) may be wanted.
    fn wants_name(&self, suite: &str, name: &str) -> bool {
        let name_of = |id: &str| {
            let rest = id.strip_prefix(&format!("{suite}::")).unwrap_or(id);
            rest.split('[').next().unwrap_or(rest).to_string()
        };
        match self {
            Only::All => true,
            Only::Case(id) => name_of(id) == name,
            Only::Cases(set) => set.iter().any(|id| name_of(id) == name),
        }
    }
}

/// Loads suite text as if read from `source` (errors name its path).
pub fn load_text(text: &str, source: &Source) -> Result<Suite, Vec<LoadError>> {
    load_text_only(text, source, Only::All)
}

/// Loads only the case `id` (the suite as a whole was validated by the runner): what a case
/// process does, so that it does not expand every other case of a large matrix.
pub fn load_case(text: &str, source: &Source, id: &str) -> Result<Suite, Vec<LoadError>> {
    load_text_only(text, source, Only::Case(id))
}

/// Loads only the cases `ids` of a suite validated elsewhere, each ready for its case process:
/// what the qemu target's guest runner does with the host's plan.
pub fn load_cases(text: &str, source: &Source, ids: &HashSet<String>) -> Result<Suite, Vec<LoadError>> {
    load_text_only(text, source, Only::Cases(ids))
}

fn load_text_only(text: &str, source: &Source, only: Only) -> Result<Suite, Vec<LoadError>> {
    let path = source.path();
    let root = node::parse(text).map_err(|(message, loc)| {
        vec![LoadError { file: path.clone(), loc, message, help: Some("this is not valid YAML".into()) }]
    })?;
    parse_suite(&root, source, &Arc::from(text), only)
        .map_err(|errs| errs.into_iter().map(|e| e.in_file(&path)).collect())
}

fn parse_suite(root: &Node, source: &Source, text: &Arc<str>, only: Only) -> Result<Suite, Vec<NodeError>> {
    let one = |e: NodeError| vec![e];
    let entries = root.as_map().ok_or_else(|| {
        one(NodeError::at(root, format!("a suite file is a mapping, found {}", root.kind()))
            .help("start the file with `suite: <name>`"))
    })?;
    for (k, _) in entries {
        let key = k.as_str().unwrap_or_default();
        if !SUITE_KEYS.contains(&key) {
            return Err(one(NodeError::at(k, format!("unknown suite field `{}`", k.render_compact()))
                .help(unknown_name_help(key, SUITE_KEYS))));
        }
    }
    let name = required_str(root, "suite", "name the suite: `suite: sealing`").map_err(one)?;
    check_ident(root.get("suite").unwrap_or(root), &name).map_err(one)?;
    let summary = required_str(root, "summary", "say in one line what the suite certifies").map_err(one)?;
    let requires = requirements(root.get("requires")).map_err(one)?;
    let timeout = root.get("timeout").map(parse_duration).transpose().map_err(one)?.unwrap_or(DEFAULT_TIMEOUT);
    let fixtures = root.get("fixtures");
    if let Some(f) = fixtures
        && f.as_map().is_none()
    {
        return Err(one(NodeError::at(f, "`fixtures` maps a name to a list of steps")));
    }
    let cases_node = root.get("cases").ok_or_else(|| {
        one(NodeError::at(root, "the suite has no `cases`").help("add `cases:` with at least one case"))
    })?;
    let case_nodes = cases_node.as_seq().filter(|c| !c.is_empty()).ok_or_else(|| {
        one(NodeError::at(cases_node, "`cases` must be a non-empty list").help("add `- name: ...` entries"))
    })?;

    let source = Arc::new(source.clone());
    let mut errors = Vec::new();
    let mut cases = Vec::new();
    let mut ids: HashSet<String> = HashSet::new();
    // A case process parses only its own case; the runner gives each case the text for that.
    let spans = (!matches!(only, Only::Case(_))).then(|| excerpt::spans(root, case_nodes, text));
    for (i, case_node) in case_nodes.iter().enumerate() {
        if !only.wants_name(&name, case_node.get("name").and_then(Node::as_str).unwrap_or_default()) {
            continue;
        }
        let case_text: Arc<str> = match &spans {
            Some(sp) => Arc::from(excerpt::keep_only(text, sp.items[i], sp.block)),
            None => text.clone(),
        };
        let ctx = SuiteContext {
            name: &name,
            requires: &requires,
            timeout,
            fixtures,
            source: &source,
            text: &case_text,
            only,
        };
        match parse_case(case_node, &ctx) {
            Ok(expanded) => {
                for case in expanded {
                    if !ids.insert(case.id.clone()) {
                        let at = case_node.get("name").unwrap_or(case_node);
                        errors.push(
                            NodeError::at(at, format!("duplicate case id `{}`", case.id))
                                .help("give each case a distinct `name`"),
                        );
                    } else {
                        cases.push(case);
                    }
                }
            }
            Err(e) => errors.push(e),
        }
    }
    if errors.is_empty() {
        Ok(Suite { name, summary, source: (*source).clone(), cases, text: text.clone() })
    } else {
        Err(errors)
    }
}

/// What every case of a suite shares.
struct SuiteContext<'a> {
    name: &'a str,
    requires: &'a [Requirement],
    timeout: Duration,
    fixtures: Option<&'a Node>,
    source: &'a Arc<Source>,
    text: &'a Arc<str>,
    /// Which cases to expand.
    only: Only<'a>,
}

fn parse_case(node: &Node, ctx: &SuiteContext) -> NResult<Vec<Case>> {
    let SuiteContext { name: suite, requires: suite_requires, timeout: suite_timeout, fixtures, source, text, only } =
        *ctx;
    let entries = node.as_map().ok_or_else(|| {
        NodeError::at(node, format!("a case is a mapping, found {}", node.kind())).help("write `- name: ...`")
    })?;
    for (k, _) in entries {
        let key = k.as_str().unwrap_or_default();
        if !CASE_KEYS.contains(&key) {
            return Err(NodeError::at(k, format!("unknown case field `{}`", k.render_compact()))
                .help(unknown_name_help(key, CASE_KEYS)));
        }
    }
    let name = required_str(node, "name", "every case has a `name`")?;
    check_ident(node.get("name").unwrap_or(node), &name)?;
    let reference = required_str(
        node,
        "ref",
        "cite the contract: an api.rst section, a selftest, or a kernel commit, e.g. `ref: api.rst KVM_CREATE_GUEST_MEMFD`",
    )?;
    let summary = node.get("summary").and_then(Node::as_str).map(str::to_string);
    let timeout = node.get("timeout").map(parse_duration).transpose()?.unwrap_or(suite_timeout);
    let ignore = match node.get("ignore") {
        None => None,
        Some(n) => Some(
            n.as_str()
                .map(str::to_string)
                .ok_or_else(|| NodeError::at(n, "`ignore` is the reason the case runs only with --ignored"))?,
        ),
    };
    let serial = match node.get("serial") {
        None => false,
        Some(Node { value: Value::Bool(b), .. }) => *b,
        Some(n) => {
            return Err(NodeError::at(n, "`serial` is true or false")
                .help("`serial: true` runs the case with no other case at the same time"));
        }
    };
    let steps_node = node.get("steps").ok_or_else(|| {
        NodeError::at(node, format!("case `{name}` has no `steps`")).help("add `steps:` with at least one step")
    })?;
    if steps_node.as_seq().is_some_and(<[_]>::is_empty) {
        return Err(NodeError::at(steps_node, format!("case `{name}` has no steps")));
    }
    let params = match node.get("matrix") {
        Some(m) => matrix::parse(m)?,
        None => Vec::new(),
    };
    let mut cases = Vec::new();
    let mut used_anywhere: BTreeSet<String> = BTreeSet::new();
    for combo in matrix::combinations(&params) {
        let params: Vec<(String, String)> = combo.iter().map(|(k, v)| (k.clone(), v.render_compact())).collect();
        let id = if params.is_empty() {
            format!("{suite}::{name}")
        } else {
            let p: Vec<String> = params.iter().map(|(k, v)| format!("{k}={v}")).collect();
            format!("{suite}::{name}[{}]", p.join(","))
        };
        if !only.wants(&id) {
            continue;
        }
        let mut used = Vec::new();
        let mut declared: Vec<Requirement> = suite_requires.to_vec();
        if let Some(r) = node.get("requires") {
            declared.extend(requirements(Some(&matrix::substitute(r, &combo, &mut used)?))?);
        }
        let mut steps = Vec::new();
        let mut defined: Vec<String> = BUILTIN_OBJECTS.iter().map(|s| (*s).to_string()).collect();
        // `use:` may name its fixtures through the matrix (`use: $order`), so fixtures are
        // expanded per combination, and their own `$name`s substituted after.
        let raw_steps = expand_fixtures(&matrix::substitute(steps_node, &combo, &mut used)?, fixtures, 0)?;
        for raw in &raw_steps {
            let concrete = matrix::substitute(raw, &combo, &mut used)?;
            let step = parse_step(&concrete)?;
            for used_name in step.op.uses() {
                if !defined.iter().any(|d| d == used_name) {
                    return Err(NodeError::at(&concrete, format!("`{used_name}` is not made by an earlier step"))
                        .help(format!("made so far: {}; add a step with `as: {used_name}`", defined.join(", "))));
                }
            }
            defined.extend(step.op.defines_all().into_iter().map(str::to_string));
            steps.push(step);
        }
        used_anywhere.extend(used);
        let vm_types = scope_steps(&mut steps);
        let mut requires: Vec<Need> =
            declared.into_iter().map(|what| Need { what, vm_types: vm_types.clone() }).collect();
        implied_needs(&steps, &mut requires);
        requires.sort();
        requires.dedup();
        cases.push(Case {
            id,
            name: name.clone(),
            params,
            reference: reference.clone(),
            summary: summary.clone(),
            requires,
            vm_types,
            timeout,
            ignore: ignore.clone(),
            serial,
            steps,
            loc: node.loc,
            source: source.clone(),
            text: text.clone(),
        });
    }
    for p in params.iter().filter(|_| matches!(only, Only::All)) {
        if !used_anywhere.contains(&p.name) {
            return Err(NodeError::at(&p.node, format!("matrix parameter `{}` is not used", p.name))
                .help(format!("use it in a step as `${}`, or remove it", p.name)));
        }
    }
    Ok(cases)
}

/// Gives each step (also those inside a race, fork or repeat) the VM types its `if:` conditions
/// and implied requirements are judged on, and returns the types the case creates (`[0]` when it
/// has no `vm` step). A step acts on the VM it names, or on the VM an object it uses was made from
/// (a vCPU, a guest_memfd, a mapping of one); other steps act on every type the case creates.
fn scope_steps(steps: &mut [Step]) -> Vec<u64> {
    fn created_types(steps: &[Step], out: &mut Vec<u64>) {
        for step in steps {
            if let Op::Vm { vm_type, .. } = step.op
                && !out.contains(&vm_type)
            {
                out.push(vm_type);
            }
            for nested in nested_lists(&step.op) {
                created_types(nested, out);
            }
        }
    }
    fn scope(steps: &mut [Step], created: &[u64], made_from: &mut HashMap<String, u64>) {
        for step in steps.iter_mut() {
            let vm_type = match step.op {
                Op::Vm { vm_type, .. } => Some(vm_type),
                _ => step.op.uses().iter().find_map(|name| made_from.get(*name).copied()),
            };
            for nested in nested_lists_mut(&mut step.op) {
                scope(nested, created, made_from);
            }
            if let Some(d) = step.op.defines() {
                match vm_type {
                    Some(t) => made_from.insert(d.to_string(), t),
                    None => made_from.remove(d),
                };
            }
            step.vm_types = vm_type.map_or_else(|| created.to_vec(), |t| vec![t]);
        }
    }
    let mut created = Vec::new();
    created_types(steps, &mut created);
    if created.is_empty() {
        created.push(0);
    }
    scope(steps, &created, &mut HashMap::new());
    created
}

/// What the steps that must succeed imply, each judged on its own step's VM types; a race's,
/// fork's or repeat's steps count one by one.
fn implied_needs(steps: &[Step], out: &mut Vec<Need>) {
    for step in steps.iter().filter(|s| s.expect.is_unconditional_ok()) {
        let nested = nested_lists(&step.op);
        if nested.is_empty() {
            let vm_types = &step.vm_types;
            out.extend(
                step.op.implied_requirements().into_iter().map(|what| Need { what, vm_types: vm_types.clone() }),
            );
        }
        for list in nested {
            implied_needs(list, out);
        }
    }
}

/// The step lists a step runs inside it: a race's threads, a fork's or a repeat's steps.
fn nested_lists(op: &Op) -> Vec<&[Step]> {
    match op {
        Op::Race(race) => race.threads.iter().map(|t| t.steps.as_slice()).collect(),
        Op::Fork(f) => vec![f.steps.as_slice()],
        Op::Repeat(r) => vec![r.steps.as_slice()],
        _ => Vec::new(),
    }
}

fn nested_lists_mut(op: &mut Op) -> Vec<&mut [Step]> {
    match op {
        Op::Race(race) => race.threads.iter_mut().map(|t| t.steps.as_mut_slice()).collect(),
        Op::Fork(f) => vec![f.steps.as_mut_slice()],
        Op::Repeat(r) => vec![r.steps.as_mut_slice()],
        _ => Vec::new(),
    }
}

/// Inlines `- use: <fixture>` (or `- use: [<fixture>, ...]`, in that order) steps, also in the
/// step lists of `fork` and `repeat`.
fn expand_fixtures(steps: &Node, fixtures: Option<&Node>, depth: usize) -> NResult<Vec<Node>> {
    let items = steps.as_seq().ok_or_else(|| {
        NodeError::at(steps, format!("`steps` must be a list, found {}", steps.kind()))
            .help("write `steps:` then `- vm: {}`")
    })?;
    let mut out = Vec::new();
    for item in items {
        let names = match item.get("use") {
            None => {
                out.push(expand_nested(item, fixtures, depth)?);
                continue;
            }
            Some(n) => fixture_names(n),
        };
        for name_node in &names {
            {
                let name = name_node.as_str().unwrap_or_default();
                let fixture = fixtures.and_then(|f| f.get(name)).ok_or_else(|| {
                    let known: Vec<&str> = fixtures
                        .and_then(Node::as_map)
                        .map(|m| m.iter().filter_map(|(k, _)| k.as_str()).collect())
                        .unwrap_or_default();
                    NodeError::at(name_node, format!("no fixture `{name}`")).help(if known.is_empty() {
                        "define it under the suite's `fixtures:`".to_string()
                    } else {
                        unknown_name_help(name, &known)
                    })
                })?;
                if depth > 4 {
                    return Err(NodeError::at(name_node, "fixtures nest too deeply (a cycle?)"));
                }
                out.extend(expand_fixtures(fixture, fixtures, depth + 1)?);
            }
        }
    }
    Ok(out)
}

/// The fixtures a `use:` names: one name, or a list of names and lists (a matrix value such as
/// `$order` may itself be a list), flattened in order.
fn fixture_names(node: &Node) -> Vec<Node> {
    match node.as_seq() {
        Some(items) => items.iter().flat_map(fixture_names).collect(),
        None => vec![node.clone()],
    }
}

/// A `fork` or `repeat` step with the fixtures in its `steps` inlined; any other step as it is.
fn expand_nested(item: &Node, fixtures: Option<&Node>, depth: usize) -> NResult<Node> {
    let Some(entries) = item.as_map() else { return Ok(item.clone()) };
    let mut out = Vec::new();
    for (k, v) in entries {
        let nested = matches!(k.as_str(), Some("fork" | "repeat"));
        match (nested, v.as_map(), v.get("steps")) {
            (true, Some(args), Some(steps)) if steps.as_seq().is_some() => {
                let expanded = Node::new(Value::Seq(expand_fixtures(steps, fixtures, depth)?), steps.loc);
                let args = args
                    .iter()
                    .map(|(ak, av)| {
                        (ak.clone(), if ak.as_str() == Some("steps") { expanded.clone() } else { av.clone() })
                    })
                    .collect();
                out.push((k.clone(), Node::new(Value::Map(args), v.loc)));
            }
            _ => out.push((k.clone(), v.clone())),
        }
    }
    Ok(Node::new(Value::Map(out), item.loc))
}

/// A nested list of steps (of a fork, a repeat, a race thread): non-empty, no race among them,
/// and each step checked by `check` with its node.
pub(super) fn nested_step_list(
    node: &Node,
    what: &str,
    check: &dyn Fn(&Node, &Step) -> NResult<()>,
) -> NResult<Vec<Step>> {
    let items = node
        .as_seq()
        .filter(|s| !s.is_empty())
        .ok_or_else(|| NodeError::at(node, format!("the steps of {what} must be a non-empty list")))?;
    let mut steps = Vec::new();
    for item in items {
        let step = parse_step(item)?;
        if matches!(step.op, super::step::Op::Race(_)) {
            return Err(NodeError::at(item, format!("a race inside {what}"))
                .help("run races as steps of the case itself, all threads in one race"));
        }
        check(item, &step)?;
        steps.push(step);
    }
    Ok(steps)
}

pub(super) fn parse_step(node: &Node) -> NResult<Step> {
    let entries = node.as_map().ok_or_else(|| {
        NodeError::at(node, format!("a step is a mapping with one operation, found {}", node.kind()))
            .help("write e.g. `- gmem: { as: g, size: 4K }`")
    })?;
    let ops: Vec<&(Node, Node)> =
        entries.iter().filter(|(k, _)| !STEP_KEYS.contains(&k.as_str().unwrap_or_default())).collect();
    let (op_key, args) = match ops.as_slice() {
        [one] => (&one.0, &one.1),
        [] => {
            return Err(NodeError::at(node, "this step has no operation")
                .help(format!("start it with one of: {}", STEP_NAMES.join(", "))));
        }
        [_, second, ..] => {
            let second_name = second.0.as_str().unwrap_or_default();
            let help = if STEP_NAMES.contains(&second_name) {
                "each step does one operation: split it into two steps".to_string()
            } else {
                format!(
                    "a step may also carry only {}; {}",
                    STEP_KEYS.join(", "),
                    unknown_name_help(second_name, STEP_KEYS)
                )
            };
            return Err(
                NodeError::at(&second.0, format!("step has a second key `{}`", second.0.render_compact())).help(help)
            );
        }
    };
    let op_name = op_key.as_str().unwrap_or_default();
    let op = parse_op(op_name, op_key, args)?;
    super::parse_proc::check_expect(&op, node)?;
    let expect = expect::parse(node.get("expect"), op.fields())?;
    let reference = node.get("ref").and_then(Node::as_str).map(str::to_string);
    Ok(Step {
        text: format!("{op_name} {}", args.render_compact()),
        op,
        expect,
        loc: op_key.loc,
        reference,
        vm_types: Vec::new(),
    })
}

fn required_str(node: &Node, key: &str, help: &str) -> NResult<String> {
    match node.get(key) {
        Some(Node { value: Value::Str(s), .. }) if !s.trim().is_empty() => Ok(s.clone()),
        Some(other) => Err(NodeError::at(other, format!("`{key}` must be a non-empty string")).help(help)),
        None => Err(NodeError::at(node, format!("missing `{key}`")).help(help)),
    }
}

fn check_ident(node: &Node, name: &str) -> NResult<()> {
    if name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_') {
        Ok(())
    } else {
        Err(NodeError::at(node, format!("`{name}` is not a valid name"))
            .help("names use lowercase letters, digits, `-` and `_`, so that case ids stay stable and filterable"))
    }
}

fn requirements(node: Option<&Node>) -> NResult<Vec<Requirement>> {
    match node {
        None => Ok(Vec::new()),
        Some(n) => {
            match &n.value {
                Value::Seq(items) => items.iter().map(Requirement::parse).collect(),
                _ => Err(NodeError::at(n, "`requires` is a list of capability names")
                    .help("write `requires: [guest_memfd]`")),
            }
        }
    }
}

pub fn parse_duration(node: &Node) -> NResult<Duration> {
    let bad = || {
        NodeError::at(node, format!("bad duration `{}`", node.render_compact()))
            .help("write seconds (`10`, `10s`), milliseconds (`500ms`) or minutes (`2m`)")
    };
    let d = match &node.value {
        Value::Int(i) => Duration::from_secs(u64::try_from(*i).map_err(|_| bad())?),
        Value::Str(s) => {
            let s = s.trim();
            let (num, scale_ms) = if let Some(v) = s.strip_suffix("ms") {
                (v, 1)
            } else if let Some(v) = s.strip_suffix('s') {
                (v, 1000)
            } else if let Some(v) = s.strip_suffix('m') {
                (v, 60_000)
            } else {
                (s, 1000)
            };
            let n: u64 = num.trim().parse().map_err(|_| bad())?;
            Duration::from_millis(n.checked_mul(scale_ms).ok_or_else(bad)?)
        }
        _ => return Err(bad()),
    };
    if d.is_zero() || d > Duration::from_secs(3600) {
        return Err(NodeError::at(node, "a timeout is between 1 ms and 1 hour"));
    }
    Ok(d)
}

#[cfg(test)]
#[path = "load_tests.rs"]
mod tests;

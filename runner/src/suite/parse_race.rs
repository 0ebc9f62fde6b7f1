//! Parses a `race` step: named threads of steps, how often each runs, the race's duration and seed.
//!
//! ```yaml
//! - race:
//!     duration: 2s            # then counted threads stop at their next step, guests at their next pass
//!     seed: 0x5eed            # optional: fixes the threads' random choices
//!     threads:
//!       vcpu0: { repeat: while_others_run, steps: [ { guest: { program: check_loop, ... } } ] }
//!       puncher: { repeat: until_deadline, steps: [ { punch_cycle: { gmem: g, map: m, pages: 16 } } ] }
//! ```

use super::error::{NResult, NodeError, unknown_name_help};
use super::expect::ResultExp;
use super::load::{nested_step_list, parse_duration};
use super::names;
use super::node::Node;
use super::step::{Race, RaceThread, Repeat};
use std::time::Duration;

const RACE_KEYS: &[&str] = &["threads", "duration", "seed"];
const THREAD_KEYS: &[&str] = &["repeat", "steps"];
pub const DEFAULT_DURATION: Duration = Duration::from_secs(2);

pub fn parse(node: &Node) -> NResult<Race> {
    let entries = node.as_map().ok_or_else(|| {
        NodeError::at(node, "`race` takes a mapping").help("write `race: { duration: 2s, threads: { ... } }`")
    })?;
    check_keys(entries, RACE_KEYS, "race")?;
    let duration = node.get("duration").map(parse_duration).transpose()?.unwrap_or(DEFAULT_DURATION);
    let seed = node.get("seed").map(names::parse_u64).transpose()?;
    let threads_node = node.get("threads").ok_or_else(|| {
        NodeError::at(node, "a race needs `threads`").help("name at least two threads, each with `steps`")
    })?;
    let thread_entries = threads_node.as_map().filter(|t| t.len() >= 2).ok_or_else(|| {
        NodeError::at(threads_node, "`threads` maps two or more thread names to their steps")
            .help("write `threads: { guest: { steps: [...] }, puncher: { repeat: 100, steps: [...] } }`")
    })?;
    let mut threads = Vec::new();
    for (name_node, body) in thread_entries {
        threads.push(parse_thread(name_node, body)?);
    }
    if threads.iter().all(|t| t.repeat == Repeat::WhileOthersRun) {
        return Err(NodeError::at(threads_node, "every thread runs while the others run: none of them ends the race")
            .help("give at least one thread a `repeat` count or `until_deadline`"));
    }
    Ok(Race { threads, duration, seed })
}

fn parse_thread(name_node: &Node, body: &Node) -> NResult<RaceThread> {
    let name = name_node
        .as_str()
        .filter(|n| !n.is_empty() && n.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-'))
        .ok_or_else(|| NodeError::at(name_node, "a thread name is letters, digits, `-` and `_`"))?
        .to_string();
    let entries = body.as_map().ok_or_else(|| {
        NodeError::at(body, format!("thread `{name}` is a mapping with `steps`"))
            .help("write `{ repeat: 100, steps: [ ... ] }`")
    })?;
    check_keys(entries, THREAD_KEYS, "race thread")?;
    let repeat = match body.get("repeat") {
        None => Repeat::Times(1),
        Some(n) if n.as_str() == Some("while_others_run") => Repeat::WhileOthersRun,
        Some(n) if n.as_str() == Some("until_deadline") => Repeat::UntilDeadline,
        Some(n) => match names::parse_u64(n) {
            Ok(0) | Err(_) => {
                return Err(NodeError::at(n, format!("bad repeat `{}`", n.render_compact()))
                    .help("write a count of at least 1, `until_deadline`, or `while_others_run`"));
            }
            Ok(times) => Repeat::Times(times),
        },
    };
    let steps_node = body.get("steps").ok_or_else(|| NodeError::at(body, format!("thread `{name}` has no `steps`")))?;
    let steps = nested_step_list(steps_node, &format!("thread `{name}`"), &|item, step| {
        if let Some(made) = step.op.defines() {
            return Err(NodeError::at(item, format!("a race thread cannot make objects (`as: {made}`)"))
                .help("make every object in a step before the race; threads use and close them"));
        }
        if matches!(step.op, super::step::Op::Fork(_) | super::step::Op::Repeat(_)) {
            return Err(NodeError::at(item, format!("a race thread cannot `{}`", step.op.name()))
                .help("fork and repeat run in the single-threaded case process: make them steps of the case"));
        }
        let expects_signal = |met: bool| matches!(step.expect.resolve(&|_| met).result, ResultExp::Signal(_));
        if expects_signal(true) || expects_signal(false) {
            return Err(NodeError::at(item, "a race thread cannot expect a signal")
                .help("signal steps run in a forked copy of the case process, which a threaded race cannot make"));
        }
        Ok(())
    })?;
    Ok(RaceThread { name, repeat, steps })
}

fn check_keys(entries: &[(Node, Node)], known: &[&str], what: &str) -> NResult<()> {
    for (k, _) in entries {
        let key = k.as_str().unwrap_or_default();
        if !known.contains(&key) {
            return Err(NodeError::at(k, format!("unknown {what} field `{}`", k.render_compact()))
                .help(unknown_name_help(key, known)));
        }
    }
    Ok(())
}

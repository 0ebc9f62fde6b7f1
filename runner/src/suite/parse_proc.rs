//! Parses the steps about processes and memory use: `fork`, `repeat`, `mem_snapshot`, `mem_growth`.
//!
//! ```yaml
//! - fork:                       # the steps run in a forked child, each judged by its own expect
//!     steps:
//!       - check_extension: { cap: GUEST_MEMFD }
//!         expect: { errno: EIO }
//!       - gmem: { as: g2, size: 2M, flags: [mmap] }
//!         vm: vm2
//!     give: [g2]                # sent to the parent over SCM_RIGHTS; then the child exits
//! - repeat:                     # the steps run 300 times over in the case process
//!     times: 300
//!     steps: [ ... ]
//! - mem_snapshot: { as: s0 }
//! - mem_growth: { since: s0 }
//!   expect: { rss: { max: 2M }, unevictable: { max: 4M } }
//! ```

use super::args::Args;
use super::error::{NResult, NodeError};
use super::node::Node;
use super::step::{ForkSteps, Op, RepeatSteps, Step};

/// More iterations than this in one `repeat` is a typo, not a test (and would outlive any deadline).
pub const MAX_TIMES: u64 = 100_000;

pub fn fork(node: &Node) -> NResult<ForkSteps> {
    let a = Args::new("fork", node, &["steps", "give"])?;
    let steps = nested_steps(&a, "fork")?;
    let give = match a.get("give") {
        None => Vec::new(),
        Some(g) => {
            let items = g.as_seq().ok_or_else(|| {
                NodeError::at(g, "`give` is a list of names")
                    .help("write `give: [g, vm]`: fds or VMs the child made or holds")
            })?;
            let mut names: Vec<String> = Vec::new();
            for item in items {
                let name = item.as_str().filter(|n| !n.is_empty() && *n != "kvm").ok_or_else(|| {
                    NodeError::at(item, "each entry of `give` names an fd or VM of the child")
                        .help("name an object made with `as:` (not `kvm`)")
                })?;
                if names.iter().any(|n| n == name) {
                    return Err(NodeError::at(item, format!("`{name}` is given twice")));
                }
                names.push(name.to_string());
            }
            names
        }
    };
    Ok(ForkSteps { steps, give })
}

pub fn repeat(node: &Node) -> NResult<RepeatSteps> {
    let a = Args::new("repeat", node, &["times", "steps"])?;
    let times_node = a.req("times")?;
    let times = a.u64_req("times")?;
    if times == 0 || times > MAX_TIMES {
        return Err(NodeError::at(times_node, format!("`times: {times}` is out of range"))
            .help(format!("repeat at least once and at most {MAX_TIMES} times")));
    }
    Ok(RepeatSteps { times, steps: nested_steps(&a, "repeat")? })
}

pub fn mem_snapshot(node: &Node) -> NResult<Op> {
    Ok(Op::MemSnapshot { name: Args::new("mem_snapshot", node, &["as"])?.string_req("as")? })
}

pub fn mem_growth(node: &Node) -> NResult<Op> {
    Ok(Op::MemGrowth { since: Args::new("mem_growth", node, &["since"])?.string_req("since")? })
}

fn nested_steps(a: &Args, op: &str) -> NResult<Vec<Step>> {
    super::load::nested_step_list(a.req("steps")?, &format!("`{op}`"), &|_, _| Ok(()))
}

/// Steps that judge their inner steps themselves take no `expect` of their own; a `mem_growth`
/// without a bound could not fail. `step` is the whole step (operation and `expect`).
pub fn check_expect(op: &Op, step: &Node) -> NResult<()> {
    let expect = step.get("expect");
    match (op, expect) {
        (Op::Fork(_) | Op::Repeat(_), Some(e)) => Err(NodeError::at(e, format!("`{}` takes no `expect`", op.name()))
            .help("each inner step is judged by its own `expect`")),
        (Op::MemSnapshot { .. }, Some(e)) => {
            Err(NodeError::at(e, "`mem_snapshot` takes no `expect`").help("bound the growth with a later `mem_growth`"))
        }
        (Op::MemGrowth { .. }, e) if e.and_then(Node::as_map).is_none_or(<[_]>::is_empty) => {
            Err(NodeError::at(e.unwrap_or(step), "`mem_growth` needs an `expect` with at least one bound").help(
                "write `expect: { rss: { max: 2M }, mem_used: { max: 8M } }` and say in a comment why each bound holds",
            ))
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use crate::suite::Source;
    use crate::suite::load::load_text;
    use crate::suite::step::Op;

    const HEAD: &str = "suite: t\nsummary: s\ncases:\n  - name: c\n    ref: r\n    steps:\n";

    fn load(steps: &str) -> Result<crate::suite::Suite, String> {
        load_text(&format!("{HEAD}{steps}"), &Source::File("s.yaml".into()))
            .map_err(|e| e.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))
    }

    fn error(steps: &str) -> String {
        load(steps).expect_err("a load error")
    }

    #[test]
    fn fork_and_repeat_nest_steps_and_give_names_back() {
        let suite = load(
            "      - vm: {}\n      - fork:\n          steps:\n            - check_extension: { cap: GUEST_MEMFD }\n              expect: { errno: EIO }\n            - repeat: { times: 3, steps: [ { vm: { as: v2 } } ] }\n            - gmem: { as: g, vm: v2, size: 4K, flags: [mmap] }\n          give: [g, v2]\n      - fstat: { fd: g }\n      - close: { fd: v2 }\n",
        )
        .expect("valid");
        let case = &suite.cases[0];
        let Op::Fork(f) = &case.steps[1].op else { panic!("a fork: {:?}", case.steps[1].op) };
        assert_eq!(f.give, ["g", "v2"]);
        assert_eq!(f.steps.len(), 3);
        assert!(matches!(&f.steps[1].op, Op::Repeat(r) if r.times == 3));
        let reqs: Vec<String> = case.requires.iter().map(ToString::to_string).collect();
        assert_eq!(reqs, ["guest_memfd", "gmem_flag.mmap"], "a child step that must succeed implies what it needs");
    }

    #[test]
    fn what_a_child_makes_and_keeps_is_not_the_parents() {
        let e = error("      - fork: { steps: [ { vm: { as: v2 } } ] }\n      - close: { fd: v2 }\n");
        assert!(e.starts_with("s.yaml:8:9: error: `v2` is not made by an earlier step"), "{e}");
    }

    #[test]
    fn a_child_uses_what_the_parent_made_before_the_fork() {
        let e = error("      - fork: { steps: [ { close: { fd: g } } ] }\n      - vm: {}\n");
        assert!(e.starts_with("s.yaml:7:9: error: `g` is not made by an earlier step"), "{e}");
        let e = error("      - fork: { steps: [ { vm: {} } ], give: [g] }\n");
        assert!(e.contains("`g` is not made by an earlier step"), "{e}");
    }

    #[test]
    fn fixtures_expand_inside_nested_steps_and_from_matrix_lists() {
        let suite = load_text(
            "suite: t\nsummary: s\nfixtures:\n  a: [ { vm: { as: va } } ]\n  b: [ { close: { fd: va } } ]\ncases:\n  - name: c\n    ref: r\n    matrix: { order: [[a, b]] }\n    steps:\n      - repeat: { times: 2, steps: [ { use: [$order] } ] }\n      - fork: { steps: [ { use: a } ], give: [va] }\n",
            &Source::File("s.yaml".into()),
        )
        .expect("valid");
        let case = &suite.cases[0];
        assert_eq!(case.id, "t::c[order=a+b]");
        let Op::Repeat(r) = &case.steps[0].op else { panic!("a repeat") };
        let names: Vec<&str> = r.steps.iter().map(|s| s.op.name()).collect();
        assert_eq!(names, ["vm", "close"]);
        assert_eq!(case.steps[1].op.nested_steps()[0].op.name(), "vm");
    }

    #[test]
    fn steps_that_judge_others_take_no_expect() {
        let e = error("      - fork: { steps: [ { vm: {} } ] }\n        expect: { errno: EIO }\n");
        assert!(e.starts_with("s.yaml:8:17: error: `fork` takes no `expect`"), "{e}");
        assert!(e.contains("each inner step is judged by its own `expect`"), "{e}");
    }

    #[test]
    fn a_growth_without_a_bound_could_not_fail() {
        let e = error("      - mem_snapshot: { as: s }\n      - mem_growth: { since: s }\n");
        assert!(e.starts_with("s.yaml:8:9: error: `mem_growth` needs an `expect` with at least one bound"), "{e}");
        let e = error(
            "      - mem_snapshot: { as: s }\n      - mem_growth: { since: t }\n        expect: { rss: { max: 1M } }\n",
        );
        assert!(e.contains("`t` is not made by an earlier step"), "{e}");
        let e = error(
            "      - mem_snapshot: { as: s }\n      - mem_growth: { since: s }\n        expect: { rsss: { max: 1M } }\n",
        );
        assert!(e.contains("did you mean `rss`?"), "{e}");
        load("      - mem_snapshot: { as: s }\n      - mem_growth: { since: s }\n        expect: { rss: { max: 1M }, fds: { max: 0 } }\n")
            .expect("bounded");
    }

    #[test]
    fn bad_counts_and_lists_point_at_the_spot() {
        let e = error("      - repeat: { times: 0, steps: [ { vm: {} } ] }\n");
        assert!(e.starts_with("s.yaml:7:26: error: `times: 0` is out of range"), "{e}");
        let e = error("      - fork: { steps: [] }\n");
        assert!(e.contains("the steps of `fork` must be a non-empty list"), "{e}");
        let e = error("      - vm: {}\n      - fork: { steps: [ { vm: { as: v } } ], give: [v, v] }\n");
        assert!(e.contains("`v` is given twice"), "{e}");
        let e = error("      - fork: { steps: [ { vm: {} } ], give: vm }\n");
        assert!(e.contains("`give` is a list of names"), "{e}");
    }

    #[test]
    fn a_race_thread_cannot_fork() {
        let e = error(
            "      - vm: {}\n      - race:\n          threads:\n            a: { repeat: 2, steps: [ { fork: { steps: [ { vm: { as: x } } ] } } ] }\n            b: { repeat: 2, steps: [ { check_extension: { cap: GUEST_MEMFD } } ] }\n",
        );
        assert!(e.contains("a race thread cannot `fork`"), "{e}");
    }
}

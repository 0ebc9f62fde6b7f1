//! Every loader error names file:line:column and says how to fix it.

use super::load_text;
use crate::suite::Source;
use rstest::rstest;

fn errors(yaml: &str) -> Vec<String> {
    match load_text(yaml, &Source::File("s.yaml".into())) {
        Ok(_) => panic!("expected an error for:\n{yaml}"),
        Err(e) => e.iter().map(ToString::to_string).collect(),
    }
}

const HEAD: &str = "suite: t\nsummary: s\ncases:\n  - name: c\n    ref: r\n    steps:\n";

#[rstest]
#[case::unknown_step(
    "      - gmme: { as: g, size: 4K }\n",
    "s.yaml:7:9: error: unknown step `gmme`",
    "did you mean `gmem`?"
)]
#[case::unknown_field(
    "      - vm: {}\n      - gmem: { as: g, sise: 4K }\n",
    "s.yaml:8:24: error: unknown field `sise` for step `gmem`",
    "did you mean `size`?"
)]
#[case::unknown_errno(
    "      - vm: {}\n      - gmem: { as: g, size: 4K }\n        expect: { errno: EINVL }\n",
    "s.yaml:9:26: error: unknown errno `EINVL`",
    "did you mean `EINVAL`?"
)]
#[case::unknown_flag(
    "      - vm: {}\n      - gmem: { as: g, size: 4K, flags: [mmapp] }\n",
    "s.yaml:8:42: error: unknown guest_memfd flag `mmapp`",
    "did you mean `mmap`?"
)]
#[case::bad_size(
    "      - vm: {}\n      - gmem: { as: g, size: 4Q }\n",
    "s.yaml:8:30: error: bad size `4Q`",
    "write a number"
)]
#[case::missing_arg(
    "      - vm: {}\n      - gmem: { as: g }\n",
    "s.yaml:8:15: error: step `gmem` needs `size`",
    "add `size: ...`"
)]
#[case::undefined_object(
    "      - vm: {}\n      - read: { fd: g }\n",
    "s.yaml:8:9: error: `g` is not made by an earlier step",
    "made so far: kvm, vm"
)]
#[case::unknown_field_expect(
    "      - vm: {}\n      - gmem: { as: g, size: 4K }\n      - fstat: { fd: g }\n        expect: { sise: 4K }\n",
    "s.yaml:10:19: error: this step has no field `sise` to expect",
    "did you mean `size`?"
)]
#[case::two_ops(
    "      - vm: {}\n        gmem: { as: g, size: 4K }\n",
    "s.yaml:8:9: error: step has a second key `gmem`",
    "split it into two steps"
)]
#[case::unknown_signal(
    "      - vm: {}\n        expect: { signal: SIGBOS }\n",
    "s.yaml:8:27: error: unknown signal `SIGBOS`",
    "signal(7)"
)]
fn step_errors_point_at_the_spot(#[case] steps: &str, #[case] message: &str, #[case] help: &str) {
    let errs = errors(&format!("{HEAD}{steps}"));
    assert!(errs[0].starts_with(message), "got: {}", errs[0]);
    assert!(errs[0].contains(help), "no `{help}` in: {}", errs[0]);
}

#[test]
fn missing_ref_is_an_error() {
    let errs = errors("suite: t\nsummary: s\ncases:\n  - name: c\n    steps:\n      - vm: {}\n");
    assert!(errs[0].starts_with("s.yaml:4:5: error: missing `ref`"), "{}", errs[0]);
    assert!(errs[0].contains("cite the contract"), "{}", errs[0]);
}

#[test]
fn duplicate_case_ids_are_an_error() {
    let errs = errors(&format!("{HEAD}      - vm: {{}}\n  - name: c\n    ref: r\n    steps:\n      - vm: {{}}\n"));
    assert!(errs[0].starts_with("s.yaml:8:11: error: duplicate case id `t::c`"), "{}", errs[0]);
}

#[test]
fn a_param_without_matrix_entry_is_an_error() {
    let errs = errors(&format!("{HEAD}      - vm: {{}}\n      - gmem: {{ as: g, size: 4K, flags: $flags }}\n"));
    assert!(errs[0].starts_with("s.yaml:8:41: error: `$flags` has no matrix entry"), "{}", errs[0]);
    assert!(errs[0].contains("add `matrix: { flags: [...] }`"), "{}", errs[0]);
}

#[test]
fn an_unused_matrix_parameter_is_an_error() {
    let errs = errors(
        "suite: t\nsummary: s\ncases:\n  - name: c\n    ref: r\n    matrix: { size: [4K] }\n    steps:\n      - vm: {}\n",
    );
    assert!(errs[0].starts_with("s.yaml:6:15: error: matrix parameter `size` is not used"), "{}", errs[0]);
}

#[test]
fn unknown_requirement_is_an_error() {
    let errs = errors(
        "suite: t\nsummary: s\nrequires: [guest_memfdd]\ncases:\n  - name: c\n    ref: r\n    steps:\n      - vm: {}\n",
    );
    assert!(errs[0].starts_with("s.yaml:3:12: error: unknown capability `guest_memfdd`"), "{}", errs[0]);
    assert!(errs[0].contains("did you mean `guest_memfd`?"), "{}", errs[0]);
}

#[test]
fn yaml_syntax_errors_have_a_location() {
    let errs = errors("suite: t\nsummary: [unclosed\ncases: []\n");
    assert!(errs[0].starts_with("s.yaml:"), "{}", errs[0]);
    assert!(errs[0].contains("not valid YAML"), "{}", errs[0]);
}

#[test]
fn matrix_expands_to_stable_ids() {
    let yaml = "suite: t\nsummary: s\ncases:\n  - name: c\n    ref: r\n    matrix: { flags: [[], [mmap, init_shared]], size: [4K, 2M] }\n    steps:\n      - vm: {}\n      - gmem: { as: g, size: $size, flags: $flags }\n";
    let suite = load_text(yaml, &Source::File("s.yaml".into())).expect("valid");
    let ids: Vec<&str> = suite.cases.iter().map(|c| c.id.as_str()).collect();
    assert_eq!(
        ids,
        [
            "t::c[flags=none,size=4K]",
            "t::c[flags=none,size=2M]",
            "t::c[flags=mmap+init_shared,size=4K]",
            "t::c[flags=mmap+init_shared,size=2M]"
        ]
    );
    let reqs: Vec<String> = suite.cases[2].requires.iter().map(ToString::to_string).collect();
    assert_eq!(
        reqs,
        ["guest_memfd", "gmem_flag.mmap", "gmem_flag.init_shared"],
        "successful creation implies guest_memfd and the flags"
    );
}

#[test]
fn no_input_panics_the_loader() {
    for text in [
        "",
        "-",
        ":",
        "[]",
        "suite: [",
        "cases: 3",
        "suite: t\nsummary: s\ncases:\n  - 1\n",
        "\u{0}",
        "a: &x\n  b: *x\n",
    ] {
        let _ = load_text(text, &Source::File("s.yaml".into()));
    }
}

#[test]
fn mutated_shipped_suites_never_panic_the_loader() {
    for (name, text) in crate::suite::embedded::SUITES {
        let bytes = text.as_bytes();
        for at in (0..bytes.len()).step_by(bytes.len() / 40 + 1) {
            for replacement in ["", "{", ":", "\n  - ", "$x", "-1"] {
                let mut mutated = String::from_utf8_lossy(&bytes[..at]).into_owned();
                mutated.push_str(replacement);
                mutated.push_str(&String::from_utf8_lossy(&bytes[(at + 1).min(bytes.len())..]));
                let _ = load_text(&mutated, &Source::File((*name).into()));
            }
        }
    }
}

#[test]
fn requirements_are_judged_on_the_vm_types_the_steps_use() {
    let yaml = "suite: t\nsummary: s\nrequires: [memory_attributes.private]\ncases:\n  - name: c\n    ref: r\n    steps:\n      - vm: { as: p, type: sw_protected }\n      - gmem: { as: g, vm: p, size: 4K }\n      - set_attributes: { vm: p, gpa: 0, size: 4K, attributes: [private] }\n      - vm: { as: d }\n      - gmem: { as: h, vm: d, size: 4K, flags: [mmap] }\n      - fstat: { fd: g }\n      - memfd: { as: f }\n      - vcpu: { vm: p }\n      - pre_fault: { gpa: 0, size: 4K }\n";
    let suite = load_text(yaml, &Source::File("s.yaml".into())).expect("valid");
    let case = &suite.cases[0];
    assert_eq!(case.vm_types, [1, 0], "the types its vm steps create, in order");
    let scopes: Vec<(&str, &[u64])> = case.steps.iter().map(|s| (s.op.name(), s.vm_types.as_slice())).collect();
    assert_eq!(
        scopes,
        [
            ("vm", &[1][..]),
            ("gmem", &[1]),
            ("set_attributes", &[1]),
            ("vm", &[0]),
            ("gmem", &[0]),
            ("fstat", &[1]),
            ("memfd", &[1, 0]),
            ("vcpu", &[1]),
            ("pre_fault", &[1]),
        ],
        "a step acts on the VM it names or its objects came from; else on every type of the case"
    );
    let reqs: Vec<String> = case.requires.iter().map(ToString::to_string).collect();
    assert_eq!(
        reqs,
        [
            "guest_memfd",
            "guest_memfd (sw_protected VM)",
            "memory_attributes.private (sw_protected VM)",
            "memory_attributes.private (sw_protected or default VM)",
            "pre_fault (sw_protected VM)",
            "vm_type.sw_protected",
            "gmem_flag.mmap",
        ]
    );
}

#[test]
fn a_case_without_vm_steps_is_judged_on_a_default_vm() {
    let yaml = "suite: t\nsummary: s\nrequires: [guest_memfd]\ncases:\n  - name: c\n    ref: r\n    steps:\n      - memfd: { as: f }\n";
    let suite = load_text(yaml, &Source::File("s.yaml".into())).expect("valid");
    assert_eq!(suite.cases[0].vm_types, [0]);
    assert_eq!(suite.cases[0].requires[0].vm_types, [0]);
    assert_eq!(suite.cases[0].steps[0].vm_types, [0]);
}

#[rstest]
#[case::map_gpa_partial_page(
    "      - vm: {}\n      - vcpu: {}\n      - guest: { program: map_gpa, gpa: 0, len: 100, to: private }\n",
    "s.yaml:9:49: error: map_gpa converts whole 4 KiB pages",
    "multiple of 4K"
)]
#[case::map_gpa_bad_target(
    "      - vm: {}\n      - vcpu: {}\n      - guest: { program: map_gpa, gpa: 0, len: 4K, to: secret }\n",
    "s.yaml:9:57: error: cannot convert to `secret`",
    "`to: private` or `to: shared`"
)]
#[case::unknown_attribute(
    "      - vm: {}\n      - set_attributes: { gpa: 0, size: 4K, attributes: [privat] }\n",
    "s.yaml:8:58: error: unknown memory attribute `privat`",
    "did you mean `private`?"
)]
#[case::too_many_cap_args(
    "      - vm: {}\n      - enable_cap: { cap: EXIT_HYPERCALL, args: [0, 0, 0, 0, 0] }\n",
    "s.yaml:8:50: error: KVM_ENABLE_CAP takes 4 args",
    ""
)]
#[case::unknown_hypercall(
    "      - vm: {}\n      - enable_cap: { cap: EXIT_HYPERCALL, args: [map_gpa] }\n",
    "s.yaml:8:51: error: unknown hypercall `map_gpa`",
    "known: map_gpa_range"
)]
fn private_memory_step_errors_point_at_the_spot(#[case] steps: &str, #[case] message: &str, #[case] help: &str) {
    let errs = errors(&format!("{HEAD}{steps}"));
    assert!(errs[0].starts_with(message), "got: {}", errs[0]);
    assert!(errs[0].contains(help), "no `{help}` in: {}", errs[0]);
}

#[test]
fn steps_inside_a_fork_or_a_repeat_are_judged_on_their_own_vm_types() {
    let yaml = "suite: t\nsummary: s\ncases:\n  - name: c\n    ref: r\n    steps:\n      - vm: {}\n      - fork:\n          steps:\n            - vm: { as: p, type: sw_protected }\n            - repeat: { times: 2, steps: [ { set_attributes: { vm: p, gpa: 0, size: 4K, attributes: [private] } } ] }\n            - gmem: { as: g, vm: vm, size: 4K }\n";
    let suite = load_text(yaml, &Source::File("s.yaml".into())).expect("valid");
    let case = &suite.cases[0];
    assert_eq!(case.vm_types, [0, 1], "a child's vm steps create types too");
    let crate::suite::step::Op::Fork(f) = &case.steps[1].op else { panic!("a fork") };
    let crate::suite::step::Op::Repeat(r) = &f.steps[1].op else { panic!("a repeat") };
    assert_eq!(r.steps[0].vm_types, [1]);
    assert_eq!(f.steps[2].vm_types, [0]);
    let reqs: Vec<String> = case.requires.iter().map(ToString::to_string).collect();
    assert_eq!(reqs, ["guest_memfd", "memory_attributes.private (sw_protected VM)", "vm_type.sw_protected"]);
}

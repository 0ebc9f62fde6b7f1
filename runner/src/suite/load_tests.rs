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
    assert_eq!(reqs, ["gmem_flag.mmap", "gmem_flag.init_shared"], "successful creation implies the flags");
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

//! The text a case process parses: its suite with every other case's lines left blank. A case
//! process parses YAML again; most of a large suite is other cases, and parsing them is most of
//! the cost of starting a case (noticeable under emulation). Blank lines keep every line and
//! column where the file has it, so locations in reports are unchanged.

use super::node::Node;

/// Inclusive line span of each item of the `cases` sequence, and of the whole block.
pub struct Spans {
    pub items: Vec<(u64, u64)>,
    pub block: (u64, u64),
}

/// Where each case item of `root` begins and ends; the last one ends where the next top-level
/// key begins, or at the end of the text.
pub fn spans(root: &Node, case_nodes: &[Node], text: &str) -> Spans {
    let last_line = text.lines().count() as u64;
    let starts: Vec<u64> = case_nodes.iter().map(item_start).collect();
    let first = starts.first().copied().unwrap_or(1);
    let after_block = root
        .as_map()
        .unwrap_or_default()
        .iter()
        .map(|(k, _)| k.loc.line)
        .filter(|l| *l > *starts.last().unwrap_or(&0))
        .min()
        .map_or(last_line, |l| l - 1);
    let items =
        starts.iter().enumerate().map(|(i, s)| (*s, starts.get(i + 1).map_or(after_block, |next| next - 1))).collect();
    Spans { items, block: (first, after_block) }
}

/// A case item starts on the line of its first key (the `- ` is on that line).
fn item_start(n: &Node) -> u64 {
    n.as_map().and_then(|m| m.first()).map_or(n.loc.line, |(k, _)| k.loc.line.min(n.loc.line))
}

/// `text` with the lines of `block` outside `keep` emptied.
pub fn keep_only(text: &str, keep: (u64, u64), block: (u64, u64)) -> String {
    let mut out = String::with_capacity(text.len());
    for (i, line) in text.split_inclusive('\n').enumerate() {
        let n = i as u64 + 1;
        let blank = (block.0..=block.1).contains(&n) && !(keep.0..=keep.1).contains(&n);
        if blank {
            if line.ends_with('\n') {
                out.push('\n');
            }
        } else {
            out.push_str(line);
        }
    }
    out
}

/// The excerpts of several cases of one suite as one text: each line as the excerpt that kept it
/// has it, blank where none did. Loading it yields exactly those cases, at their own locations.
pub fn union<'a>(excerpts: impl IntoIterator<Item = &'a str>) -> String {
    let mut lines: Vec<&str> = Vec::new();
    for text in excerpts {
        for (i, line) in text.split_inclusive('\n').enumerate() {
            match lines.get_mut(i) {
                Some(kept) if kept.trim().is_empty() => *kept = line,
                Some(_) => {}
                None => lines.push(line),
            }
        }
    }
    lines.concat()
}

#[cfg(test)]
mod tests {
    use crate::suite::Source;
    use crate::suite::load::{load_case, load_text};

    const SUITE: &str = "\
suite: s
summary: x
cases:
  - name: a
    ref: r
    steps:
      - vm: {}
  # a comment between cases
  - name: b
    ref: r
    matrix: { n: [1, 2] }
    steps:
      - vm: {}
      - memfd: { as: m, size: $n }
fixtures:
  f:
    - vm: {}
";

    #[test]
    fn a_case_parses_from_its_excerpt_with_the_same_locations() {
        let source = Source::File("s.yaml".into());
        let full = load_text(SUITE, &source).expect("loads");
        for case in &full.cases {
            assert_eq!(case.text.lines().count(), SUITE.lines().count());
            let alone = load_case(&case.text, &source, &case.id).expect("the excerpt loads");
            assert_eq!(alone.cases.len(), 1);
            let (a, b) = (&alone.cases[0], case);
            assert_eq!((&a.id, a.loc, a.steps.len()), (&b.id, b.loc, b.steps.len()));
            for (x, y) in a.steps.iter().zip(&b.steps) {
                assert_eq!(x.loc, y.loc);
            }
        }
        let b1 = &full.cases[1].text;
        assert!(!b1.contains("name: a") && b1.contains("name: b") && b1.contains("fixtures:"), "{b1}");
        assert!(!full.cases[0].text.contains("name: b"));
        assert_eq!(&*full.text, SUITE);
    }

    #[test]
    fn a_union_of_excerpts_loads_exactly_their_cases() {
        let source = Source::File("s.yaml".into());
        let full = load_text(SUITE, &source).expect("loads");
        let b: Vec<&str> = full.cases.iter().filter(|c| c.name == "b").map(|c| &*c.text).collect();
        let only_b = super::union(b);
        assert_eq!(only_b.lines().count(), SUITE.lines().count());
        let loaded = load_text(&only_b, &source).expect("the union loads");
        let ids: Vec<&str> = loaded.cases.iter().map(|c| c.id.as_str()).collect();
        assert_eq!(ids, ["s::b[n=1]", "s::b[n=2]"]);
        assert_eq!(loaded.cases[0].loc, full.cases[1].loc);
        assert_eq!(super::union(full.cases.iter().map(|c| &*c.text)), SUITE);
    }

    #[test]
    fn every_shipped_case_loads_from_its_excerpt() {
        for (name, _) in crate::suite::embedded::SUITES {
            let suite = crate::suite::load::load(&Source::Embedded(name)).expect("shipped suites load");
            let mut seen = std::collections::HashSet::new();
            for case in suite.cases.iter().filter(|c| seen.insert((c.loc.line, c.loc.col))) {
                let alone = load_case(&case.text, &suite.source, &case.id)
                    .unwrap_or_else(|e| panic!("{}: the excerpt does not load: {e:?}", case.id));
                let steps: Vec<_> = alone.cases[0].steps.iter().map(|s| s.loc).collect();
                assert_eq!(steps, case.steps.iter().map(|s| s.loc).collect::<Vec<_>>(), "{}", case.id);
                assert!(case.text.len() < suite.text.len() || suite.cases.len() == 1, "{}", case.id);
            }
        }
    }
}

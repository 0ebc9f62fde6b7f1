//! Kernel config fragments: the built-in one (guest-images/gmemconf.config) plus any the user adds,
//! merged over `make tinyconfig`, and checked against the `.config` Kconfig settles on.

use super::error::ImageError;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::path::Path;

pub const BUILTIN_NAME: &str = "guest-images/gmemconf.config";
pub const BUILTIN: &str = include_str!("../../../guest-images/gmemconf.config");

/// Changes whenever the recipe around the fragments changes (base config, make targets), so that
/// cached kernels built the old way are not reused.
const RECIPE: &str = "gmemconf kernel recipe 1: make tinyconfig, fragments merged, make olddefconfig, make bzImage\n";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assignment {
    pub symbol: String,
    /// As written in a .config: `y`, `m`, `8`, `"text"`; `n` for `# CONFIG_X is not set`.
    pub value: String,
    /// `file:line`, for messages.
    pub origin: String,
}

#[derive(Debug, Clone)]
pub struct Fragment {
    pub name: String,
    pub text: String,
}

/// The fragments of one build, in order: a later assignment to a symbol wins.
#[derive(Debug, Clone)]
pub struct FragmentSet {
    fragments: Vec<Fragment>,
    assignments: Vec<Assignment>,
}

impl FragmentSet {
    /// The built-in fragment, then each extra file in order.
    pub fn load(extra: &[impl AsRef<Path>]) -> Result<FragmentSet, ImageError> {
        let mut fragments = vec![Fragment { name: BUILTIN_NAME.into(), text: BUILTIN.into() }];
        for path in extra {
            let path = path.as_ref();
            let text = std::fs::read_to_string(path).map_err(ImageError::io(
                "read the config fragment",
                path,
                "give a readable file of CONFIG_NAME=value lines",
            ))?;
            fragments.push(Fragment { name: path.display().to_string(), text });
        }
        FragmentSet::new(fragments)
    }

    pub fn new(fragments: Vec<Fragment>) -> Result<FragmentSet, ImageError> {
        let mut assignments: Vec<Assignment> = Vec::new();
        for f in &fragments {
            for a in parse(&f.name, &f.text)? {
                assignments.retain(|old| old.symbol != a.symbol);
                assignments.push(a);
            }
        }
        Ok(FragmentSet { fragments, assignments })
    }

    /// The effective assignments (one per symbol, the last one written).
    #[cfg(test)]
    pub fn assignments(&self) -> &[Assignment] {
        &self.assignments
    }

    /// 12 hex digits of SHA-256 over the recipe and the effective assignments: part of the cache
    /// key. Comments, order and overridden lines do not change it; any option's value does.
    pub fn hash(&self) -> String {
        let mut h = Sha256::new();
        h.update(RECIPE);
        let mut effective: Vec<&Assignment> = self.assignments.iter().collect();
        effective.sort_by(|a, b| a.symbol.cmp(&b.symbol));
        for a in effective {
            h.update(format!("CONFIG_{}={}\n", a.symbol, a.value));
        }
        h.finalize().iter().take(6).map(|b| format!("{b:02x}")).collect()
    }

    /// `base` (a .config) with every symbol the fragments set replaced by the fragments' value.
    pub fn merge_into(&self, base: &str) -> String {
        let mut out: String = base
            .lines()
            .filter(|line| !config_line(line).is_some_and(|(sym, _)| self.assignments.iter().any(|a| a.symbol == sym)))
            .flat_map(|line| [line, "\n"])
            .collect();
        out.push_str("\n# gmemconf fragments (");
        out.push_str(&self.fragments.iter().map(|f| f.name.as_str()).collect::<Vec<_>>().join(", "));
        out.push_str(")\n");
        for a in &self.assignments {
            match a.value.as_str() {
                "n" => out.push_str(&format!("# CONFIG_{} is not set\n", a.symbol)),
                v => out.push_str(&format!("CONFIG_{}={v}\n", a.symbol)),
            }
        }
        out
    }

    /// The assignments the final `.config` does not honour, with what it has instead.
    pub fn unmet<'a>(&'a self, config: &BTreeMap<String, String>) -> Vec<(&'a Assignment, Option<String>)> {
        self.assignments
            .iter()
            .filter_map(|a| {
                let actual = config.get(&a.symbol);
                let met = match a.value.as_str() {
                    "n" => actual.is_none_or(|v| v == "n"),
                    want => actual.is_some_and(|v| v == want),
                };
                (!met).then(|| (a, actual.cloned()))
            })
            .collect()
    }
}

/// The symbol and value of a `.config` line (`CONFIG_X=v` or `# CONFIG_X is not set`).
fn config_line(line: &str) -> Option<(&str, &str)> {
    if let Some(rest) = line.strip_prefix("# CONFIG_").and_then(|r| r.strip_suffix(" is not set")) {
        return is_symbol(rest).then_some((rest, "n"));
    }
    let (sym, value) = line.strip_prefix("CONFIG_")?.split_once('=')?;
    (is_symbol(sym) && !value.is_empty()).then_some((sym, value))
}

fn is_symbol(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// Every symbol a `.config` sets, `n` for the ones it leaves unset.
pub fn parse_config(text: &str) -> BTreeMap<String, String> {
    text.lines().filter_map(config_line).map(|(s, v)| (s.to_string(), v.to_string())).collect()
}

/// Parses a fragment: `CONFIG_X=value`, `# CONFIG_X is not set`, comments and blank lines.
pub fn parse(name: &str, text: &str) -> Result<Vec<Assignment>, ImageError> {
    let mut out = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim_end();
        let indent = line.len() - line.trim_start().len();
        let line = line.trim_start();
        if let Some((symbol, value)) = config_line(line) {
            out.push(Assignment { symbol: symbol.into(), value: value.into(), origin: format!("{name}:{}", i + 1) });
        } else if !(line.is_empty() || line.starts_with('#')) {
            let message = match line.split_once('=') {
                Some((sym, "")) => format!("`{sym}=` has no value"),
                Some((sym, _)) if !sym.starts_with("CONFIG_") => format!("`{sym}` does not start with CONFIG_"),
                _ => format!("`{line}` is not a config assignment"),
            };
            return Err(ImageError::Fragment {
                file: name.into(),
                line: i + 1,
                column: indent + 1,
                message,
                help: "write `CONFIG_NAME=value` (y, m, a number or a \"string\") or `# CONFIG_NAME is not set`".into(),
            });
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(texts: &[&str]) -> FragmentSet {
        let fragments =
            texts.iter().enumerate().map(|(i, t)| Fragment { name: format!("f{i}"), text: t.to_string() }).collect();
        FragmentSet::new(fragments).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn the_builtin_fragment_parses_and_asks_for_what_the_suites_need() {
        let s = set(&[BUILTIN]);
        let has = |sym: &str| s.assignments().iter().any(|a| a.symbol == sym && a.value == "y");
        for sym in [
            "KVM",
            "KVM_AMD",
            "KVM_INTEL",
            "KVM_SW_PROTECTED_VM",
            "SERIAL_8250_CONSOLE",
            "DEVTMPFS",
            "TMPFS",
            "MEMFD_CREATE",
            "UNIX",
            "MAGIC_SYSRQ",
            "KALLSYMS",
            "ADVISE_SYSCALLS",
            "SMP",
            "ACPI",
        ] {
            assert!(has(sym), "built-in fragment lacks CONFIG_{sym}=y");
        }
    }

    #[test]
    fn parses_assignments_comments_and_unset() {
        let a = parse("f", "# comment\n\nCONFIG_A=y\n  CONFIG_B=\"x y\"\n# CONFIG_C is not set\nCONFIG_D=64\n")
            .unwrap_or_default();
        let got: Vec<(&str, &str, &str)> =
            a.iter().map(|a| (a.symbol.as_str(), a.value.as_str(), a.origin.as_str())).collect();
        assert_eq!(got, [("A", "y", "f:3"), ("B", "\"x y\"", "f:4"), ("C", "n", "f:5"), ("D", "64", "f:6")]);
    }

    #[test]
    fn bad_lines_name_file_line_and_column() {
        for (text, line, column, what) in [
            ("CONFIG_A=y\nKVM=y\n", 2, 1, "does not start with CONFIG_"),
            ("  CONFIG_A=\n", 1, 3, "has no value"),
            ("CONFIG_A y\n", 1, 1, "not a config assignment"),
        ] {
            match parse("extra.config", text) {
                Err(e @ ImageError::Fragment { .. }) => {
                    let msg = e.to_string();
                    assert!(msg.starts_with(&format!("extra.config:{line}:{column}: error:")), "{msg}");
                    assert!(msg.contains(what) && msg.contains("help:"), "{msg}");
                }
                other => panic!("{text:?} gave {other:?}"),
            }
        }
    }

    #[test]
    fn later_fragments_win_and_change_the_hash() {
        let base = set(&["CONFIG_A=y\nCONFIG_B=y\n"]);
        let over = set(&["CONFIG_A=y\nCONFIG_B=y\n", "# CONFIG_B is not set\n"]);
        assert_eq!(over.assignments().iter().find(|a| a.symbol == "B").map(|a| a.value.as_str()), Some("n"));
        assert_eq!(over.assignments().len(), 2);
        assert_ne!(base.hash(), over.hash());
        assert_eq!(base.hash(), set(&["CONFIG_A=y\nCONFIG_B=y\n"]).hash());
        assert_eq!(base.hash().len(), 12);
        // What the kernel is configured with is the key, not how the fragment is written.
        assert_eq!(base.hash(), set(&["# why\nCONFIG_B=y\nCONFIG_A=y\n"]).hash());
        assert_eq!(base.hash(), set(&["CONFIG_A=y\nCONFIG_B=m\n", "CONFIG_B=y\n"]).hash());
        assert_ne!(base.hash(), set(&["CONFIG_A=y\nCONFIG_B=m\n"]).hash());
    }

    #[test]
    fn merge_replaces_what_the_fragment_sets() {
        let s = set(&["CONFIG_A=y\n# CONFIG_B is not set\nCONFIG_N=8\n"]);
        let merged = s.merge_into("CONFIG_X=y\n# CONFIG_A is not set\nCONFIG_B=y\nCONFIG_N=2\n");
        let config = parse_config(&merged);
        assert_eq!(config.get("X").map(String::as_str), Some("y"));
        assert_eq!(config.get("A").map(String::as_str), Some("y"));
        assert_eq!(config.get("B").map(String::as_str), Some("n"));
        assert_eq!(config.get("N").map(String::as_str), Some("8"));
        assert_eq!(merged.matches("CONFIG_A").count(), 1, "{merged}");
    }

    #[test]
    fn unmet_reports_dropped_and_changed_options() {
        let s = set(&["CONFIG_A=y\nCONFIG_B=y\n# CONFIG_C is not set\nCONFIG_D=8\nCONFIG_E=y\n"]);
        let config = parse_config("CONFIG_A=y\n# CONFIG_B is not set\nCONFIG_D=2\nCONFIG_E=m\n");
        let unmet: Vec<(&str, Option<String>)> =
            s.unmet(&config).into_iter().map(|(a, v)| (a.symbol.as_str(), v)).collect();
        let some = |v: &str| Some(v.to_string());
        assert_eq!(unmet, [("B", some("n")), ("D", some("2")), ("E", some("m"))]);
        assert!(s.unmet(&parse_config("CONFIG_A=y\nCONFIG_B=y\nCONFIG_D=8\nCONFIG_E=y\nCONFIG_C=y\n")).len() == 1);
    }
}

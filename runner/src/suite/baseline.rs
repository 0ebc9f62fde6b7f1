//! Known failures: a baseline entry names cases (by id pattern), the targets it holds on, why the
//! kernel deviates, and a reference. A matching failure is XFAIL; a matching pass is XPASS, unless
//! the entry is `intermittent` (a race that shows in some runs only). An entry with a `symptom`
//! explains only a failure whose text contains it.

use super::error::{LoadError, NResult, NodeError, unknown_name_help};
use super::node::{self, Node};
use super::{Requirement, embedded};
use crate::probe::{Probe, VirtKind};
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Baseline {
    /// Case id pattern; `*` matches any run of characters.
    pub case: String,
    pub reason: String,
    pub reference: String,
    /// Kernel release pattern (`6.18.*`); none means any.
    pub kernel: Option<String>,
    pub virt: Option<String>,
    /// The deviation shows only in some runs (a race): a pass is then a pass, not an XPASS.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub intermittent: bool,
    /// The entry explains only a failure whose text contains this; any other failure of the case
    /// stays a failure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub symptom: Option<String>,
    #[serde(skip)]
    pub requires: Vec<Requirement>,
    #[serde(skip)]
    pub missing: Vec<Requirement>,
    pub file: String,
    pub line: u64,
}

const ENTRY_KEYS: &[&str] = &["case", "reason", "ref", "when", "intermittent", "symptom"];
const WHEN_KEYS: &[&str] = &["kernel", "virt", "requires", "missing"];

impl Baseline {
    pub fn matches_case(&self, id: &str) -> bool {
        glob(&self.case, id)
    }

    /// Whether the entry's conditions hold on the probed target.
    pub fn applies(&self, probe: &Probe) -> bool {
        self.kernel.as_ref().is_none_or(|k| glob(k, &probe.kernel_release))
            && self.virt.as_ref().is_none_or(|v| *v == probe.virt.to_string())
            && self.requires.iter().all(|r| probe.meets(r).is_ok())
            && self.missing.iter().all(|r| probe.meets(r).is_err())
    }

    /// Whether the entry explains a failure described by `text` (what was observed, or why the
    /// case did not finish).
    pub fn explains(&self, text: &str) -> bool {
        self.symptom.as_ref().is_none_or(|s| text.contains(s.as_str()))
    }
}

/// Loads the baseline files in `dir` (`*.yaml`), or the embedded ones when `dir` is None.
pub fn load_all(dir: Option<&Path>) -> Result<Vec<Baseline>, Vec<LoadError>> {
    parse_all(&texts(dir)?)
}

/// The texts of the baseline files in `dir`, or of the embedded ones, by path.
pub fn texts(dir: Option<&Path>) -> Result<Vec<(PathBuf, String)>, Vec<LoadError>> {
    let mut sources: Vec<(PathBuf, String)> = Vec::new();
    match dir {
        None => sources.extend(embedded::BASELINES.iter().map(|(p, t)| (PathBuf::from(p), (*t).to_string()))),
        Some(dir) => {
            let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
                .map_err(|e| {
                    vec![LoadError {
                        file: dir.to_path_buf(),
                        loc: None,
                        message: format!("cannot read the baselines directory: {e}"),
                        help: Some("give a directory of baseline .yaml files".into()),
                    }]
                })?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
                .collect();
            files.sort();
            for f in files {
                let text = std::fs::read_to_string(&f).map_err(|e| {
                    vec![LoadError { file: f.clone(), loc: None, message: format!("cannot read: {e}"), help: None }]
                })?;
                sources.push((f, text));
            }
        }
    }
    Ok(sources)
}

pub fn parse_all(sources: &[(PathBuf, String)]) -> Result<Vec<Baseline>, Vec<LoadError>> {
    let mut all = Vec::new();
    let mut errors = Vec::new();
    for (path, text) in sources {
        match parse_file(path, text) {
            Ok(mut b) => all.append(&mut b),
            Err(mut e) => errors.append(&mut e),
        }
    }
    if errors.is_empty() { Ok(all) } else { Err(errors) }
}

pub fn parse_file(path: &Path, text: &str) -> Result<Vec<Baseline>, Vec<LoadError>> {
    let root = node::parse(text).map_err(|(message, loc)| {
        vec![LoadError { file: path.to_path_buf(), loc, message, help: Some("this is not valid YAML".into()) }]
    })?;
    parse_root(&root, path).map_err(|e| vec![e.in_file(path)])
}

fn parse_root(root: &Node, path: &Path) -> NResult<Vec<Baseline>> {
    let list = root.get("baselines").and_then(Node::as_seq).ok_or_else(|| {
        NodeError::at(root, "a baseline file has a `baselines:` list").help("write `baselines:` then `- case: ...`")
    })?;
    list.iter().map(|entry| parse_entry(entry, path)).collect()
}

fn parse_entry(entry: &Node, path: &Path) -> NResult<Baseline> {
    let map = entry.as_map().ok_or_else(|| NodeError::at(entry, "a baseline entry is a mapping"))?;
    for (k, _) in map {
        let key = k.as_str().unwrap_or_default();
        if !ENTRY_KEYS.contains(&key) {
            return Err(
                NodeError::at(k, format!("unknown baseline field `{key}`")).help(unknown_name_help(key, ENTRY_KEYS))
            );
        }
    }
    let text = |key: &str, help: &str| -> NResult<String> {
        entry
            .get(key)
            .and_then(Node::as_str)
            .filter(|s| !s.trim().is_empty())
            .map(str::to_string)
            .ok_or_else(|| NodeError::at(entry, format!("baseline entry needs `{key}`")).help(help.to_string()))
    };
    let mut b = Baseline {
        case: text("case", "the case id or a pattern with `*`, as `gmemconf list` prints it")?,
        reason: text("reason", "say how this kernel deviates from the contract")?,
        reference: text("ref", "cite the fix commit, the report, or the contract section")?,
        kernel: None,
        virt: None,
        intermittent: false,
        symptom: None,
        requires: Vec::new(),
        missing: Vec::new(),
        file: path.display().to_string(),
        line: entry.loc.line,
    };
    if let Some(v) = entry.get("intermittent") {
        b.intermittent = v.as_bool().ok_or_else(|| {
            NodeError::at(v, "`intermittent` is true or false").help("true: the deviation shows only in some runs")
        })?;
    }
    if let Some(v) = entry.get("symptom") {
        b.symptom = Some(v.as_str().filter(|s| !s.trim().is_empty()).map(str::to_string).ok_or_else(|| {
            NodeError::at(v, "`symptom` is text").help("a piece of the failure's `actual` (or the reason) text")
        })?);
    }
    if b.intermittent && b.symptom.is_none() {
        return Err(NodeError::at(entry, "an intermittent baseline needs a `symptom`")
            .help("name the failure it explains, so that any other failure of the case stays red"));
    }
    if let Some(when) = entry.get("when") {
        let map = when.as_map().ok_or_else(|| NodeError::at(when, "`when` is a mapping of conditions"))?;
        for (k, v) in map {
            match k.as_str().unwrap_or_default() {
                "kernel" => b.kernel = v.as_str().map(str::to_string),
                "virt" => {
                    let s = v.as_str().unwrap_or_default();
                    if !VirtKind::NAMES.contains(&s) {
                        return Err(NodeError::at(v, format!("unknown virtualization kind `{s}`"))
                            .help(unknown_name_help(s, VirtKind::NAMES)));
                    }
                    b.virt = Some(s.to_string());
                }
                "requires" | "missing" => {
                    let items = v.as_seq().ok_or_else(|| NodeError::at(v, "a list of capability names"))?;
                    let reqs = items.iter().map(Requirement::parse).collect::<NResult<Vec<_>>>()?;
                    if k.as_str() == Some("requires") {
                        b.requires = reqs;
                    } else {
                        b.missing = reqs;
                    }
                }
                other => {
                    return Err(NodeError::at(k, format!("unknown condition `{other}`"))
                        .help(unknown_name_help(other, WHEN_KEYS)));
                }
            }
        }
    }
    Ok(b)
}

/// `*` matches any run of characters; everything else (including `[`) is literal.
pub fn glob(pattern: &str, text: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == text;
    }
    let mut rest = text;
    for (i, part) in parts.iter().enumerate() {
        if i == 0 {
            match rest.strip_prefix(part) {
                Some(r) => rest = r,
                None => return false,
            }
        } else if i == parts.len() - 1 {
            return rest.ends_with(part);
        } else {
            match rest.find(part) {
                Some(pos) => rest = &rest[pos + part.len()..],
                None => return false,
            }
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_treat_brackets_literally() {
        assert!(glob("sealing::read*", "sealing::read-refused[flags=mmap]"));
        assert!(glob("*[flags=mmap]", "sealing::read[flags=mmap]"));
        assert!(!glob("*[flags=mmap]", "sealing::read[flags=none]"));
        assert!(glob("6.18.*", "6.18.44-fc"));
        assert!(!glob("a", "ab"));
    }

    #[test]
    fn missing_reason_is_an_error_with_location() {
        let err = parse_file(Path::new("b.yaml"), "baselines:\n  - case: x\n    ref: y\n").expect_err("no reason");
        assert_eq!(err[0].loc.map(|l| l.line), Some(2));
        assert!(err[0].message.contains("reason"));
    }

    #[test]
    fn a_symptom_narrows_what_an_entry_explains() {
        let text =
            "baselines:\n  - case: x\n    reason: r\n    ref: y\n    intermittent: true\n    symptom: still in\n";
        let b = &parse_file(Path::new("b.yaml"), text).expect("valid")[0];
        assert!(b.intermittent);
        assert!(b.explains("thread `t` was still in its step"));
        assert!(!b.explains("KVM_RUN returned EIO"));
    }

    #[test]
    fn an_intermittent_entry_needs_a_symptom() {
        let text = "baselines:\n  - case: x\n    reason: r\n    ref: y\n    intermittent: true\n";
        let err = parse_file(Path::new("b.yaml"), text).expect_err("no symptom");
        assert_eq!(err[0].loc.map(|l| l.line), Some(2));
        assert!(err[0].message.contains("symptom"));
    }
}

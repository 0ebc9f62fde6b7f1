//! Suite loading errors: each names the file, the line and column, what is wrong and how to fix it.

use super::node::{Loc, Node};
use std::fmt;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, PartialEq)]
pub struct LoadError {
    pub file: PathBuf,
    pub loc: Option<Loc>,
    pub message: String,
    pub help: Option<String>,
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.loc {
            Some(loc) => write!(f, "{}:{}: error: {}", self.file.display(), loc, self.message)?,
            None => write!(f, "{}: error: {}", self.file.display(), self.message)?,
        }
        if let Some(help) = &self.help {
            write!(f, "\n  help: {help}")?;
        }
        Ok(())
    }
}

impl std::error::Error for LoadError {}

/// An error at a node, before the file is known; `in_file` completes it.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeError {
    pub loc: Loc,
    pub message: String,
    pub help: Option<String>,
}

impl NodeError {
    pub fn at(node: &Node, message: impl Into<String>) -> Self {
        NodeError { loc: node.loc, message: message.into(), help: None }
    }

    pub fn help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }

    pub fn in_file(self, file: &Path) -> LoadError {
        LoadError { file: file.to_path_buf(), loc: Some(self.loc), message: self.message, help: self.help }
    }
}

pub type NResult<T> = Result<T, NodeError>;

/// "did you mean `x`?" for a misspelt name, from a closed list of known names.
pub fn suggest<'a>(word: &str, known: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    known
        .into_iter()
        .map(|k| (edit_distance(word, k), k))
        .filter(|(d, k)| *d <= 2.max(k.len() / 3))
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

/// Help text for an unknown name: a suggestion if one is close, and the known names.
pub fn unknown_name_help(word: &str, known: &[&str]) -> String {
    let list = known.join(", ");
    match suggest(word, known.iter().copied()) {
        Some(s) => format!("did you mean `{s}`? known: {list}"),
        None => format!("known: {list}"),
    }
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            cur.push((prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggests_close_names_only() {
        assert_eq!(suggest("EINVL", ["EINVAL", "ENOENT"]), Some("EINVAL"));
        assert_eq!(suggest("fallocte", ["fallocate", "fstat"]), Some("fallocate"));
        assert_eq!(suggest("zzzz", ["fallocate", "fstat"]), None);
    }
}

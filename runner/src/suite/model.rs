//! A loaded, validated suite: cases with stable ids, typed steps and their requirements.

use super::Need;
use super::node::Loc;
use super::step::Step;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

/// Where a suite's text came from: a file, or the copy built into the binary.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Source {
    File(std::path::PathBuf),
    Embedded(&'static str),
}

impl Source {
    /// The path to show in messages; embedded suites show their path in the repository.
    pub fn path(&self) -> std::path::PathBuf {
        match self {
            Source::File(p) => p.clone(),
            Source::Embedded(name) => std::path::PathBuf::from(name),
        }
    }

    /// How a child process is told to load this source again.
    pub fn to_arg(&self) -> String {
        match self {
            Source::File(p) => p.display().to_string(),
            Source::Embedded(name) => format!("embedded:{name}"),
        }
    }

    pub fn from_arg(arg: &str) -> Source {
        match arg.strip_prefix("embedded:") {
            Some(name) => super::embedded::SUITES
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(n, _)| Source::Embedded(n))
                .unwrap_or_else(|| Source::File(arg.into())),
            None => Source::File(arg.into()),
        }
    }
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.path().display())
    }
}

#[derive(Debug, Clone)]
pub struct Suite {
    pub name: String,
    pub summary: String,
    pub source: Source,
    pub cases: Vec<Case>,
    /// The text the suite was loaded from.
    pub text: Arc<str>,
}

#[derive(Debug, Clone)]
pub struct Case {
    /// `suite::name[k=v,...]`: stable across runs and machines.
    pub id: String,
    pub name: String,
    pub params: Vec<(String, String)>,
    pub reference: String,
    pub summary: Option<String>,
    /// Everything the case needs: the suite's and the case's (judged on every VM type the case
    /// creates), and what its steps imply (judged on the type of the VM each step acts on).
    pub requires: Vec<Need>,
    /// The VM types the case's `vm` steps create, in order; `[0]` (default) when it has none.
    pub vm_types: Vec<u64>,
    pub timeout: Duration,
    /// Not run unless asked (`--ignored`), with the reason: slow or disruptive cases.
    pub ignore: Option<String>,
    /// Runs with no other case at the same time (races: the CPUs are theirs, and a kernel warning
    /// during it is theirs alone).
    pub serial: bool,
    pub steps: Vec<Step>,
    pub loc: Loc,
    pub source: Arc<Source>,
    /// What a case process parses: the suite text the case was loaded from, with the other
    /// cases' lines left blank (`excerpt`), so a file edited during a run cannot change what the
    /// run executes, and the process does not parse the whole suite again.
    pub text: Arc<str>,
}

impl Case {
    pub fn location(&self) -> String {
        format!("{}:{}", self.source, self.loc)
    }
}

pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

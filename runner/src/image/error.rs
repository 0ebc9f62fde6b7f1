//! What can go wrong while turning a kernel spec into a bzImage: each message names the spec, path
//! or command, and says how to fix it.

use crate::exit;
use std::path::PathBuf;
use thiserror::Error;

/// The forms `--kernel` and `gmemconf image` accept, for messages.
pub const ACCEPTED_SPECS: &str = "a bzImage file (e.g. ~/linux/arch/x86/boot/bzImage), a kernel source tree directory \
     (e.g. ~/linux), `debian:7.3`, `debian:6.12`, `debian:latest` or `debian` (= debian:7.3)";

#[derive(Debug, Error)]
pub enum ImageError {
    #[error("error: unknown kernel spec `{spec}`\n  help: give {ACCEPTED_SPECS}")]
    UnknownSpec { spec: String },

    #[error(
        "error: kernel spec `{spec}`: Debian release `{release}` is not one gmemconf builds\n  help: use one of {known}; \
         for another kernel, extract its source and give the directory"
    )]
    UnknownDebianRelease { spec: String, release: String, known: String },

    #[error("error: kernel spec `{spec}`: {path}: no such file or directory\n  help: give {ACCEPTED_SPECS}")]
    NoSuchPath { spec: String, path: PathBuf },

    #[error("error: {path} is not an x86 bzImage: {why}\n  help: {help}")]
    NotABzImage { path: PathBuf, why: String, help: String },

    #[error(
        "error: {path} is not a kernel source tree (no {missing})\n  help: give the top directory of a Linux source tree \
         (the one with Makefile, Kconfig and arch/x86), or a built bzImage file"
    )]
    NotAKernelTree { path: PathBuf, missing: String },

    #[error(
        "error: kernel source tree {path} has an in-tree build ({found}), so an out-of-tree build cannot use it\n  help: \
         gmemconf builds out of tree with its own config: run `make -C {path} mrproper` (it deletes that build and its \
         .config), or give {path}/arch/x86/boot/bzImage if that kernel has the options in guest-images/README.md"
    )]
    TreeNotClean { path: PathBuf, found: String },

    #[error("{file}:{line}:{column}: error: {message}\n  help: {help}")]
    Fragment { file: String, line: usize, column: usize, message: String, help: String },

    #[error(
        "error: {what} needs {tools}, not found on this machine\n  help: apt-get install --no-install-recommends {packages} \
         (or run ci/install-deps as root)"
    )]
    MissingTools { what: String, tools: String, packages: String },

    #[error(
        "error: the kernel configured from {tree} lacks options the fragment asks for:\n{mismatches}\n  help: another \
         option they depend on is off; add it to the fragment (`make -C {tree} O={build} menuconfig`, then `/` and the \
         name, shows what each depends on)"
    )]
    ConfigNotApplied { tree: PathBuf, build: PathBuf, mismatches: String },

    #[error("{0}")]
    Command(Box<CommandFailure>),

    #[error("error: cannot {action} {path}: {source}\n  help: {help}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
        help: &'static str,
    },

    #[error(
        "error: no cache directory: none of $GMEMCONF_CACHE, $XDG_CACHE_HOME and $HOME is set\n  help: set GMEMCONF_CACHE \
         to a directory with a few GB free, or pass --cache-dir"
    )]
    NoCacheDir,
}

/// A command of the recipe that failed: what it was for, its exit status and the log's tail.
#[derive(Debug)]
pub struct CommandFailure {
    pub what: String,
    pub command: String,
    pub status: String,
    /// The last lines of the log, already indented for display.
    pub tail: String,
    pub log: PathBuf,
    pub help: Option<String>,
}

impl std::fmt::Display for CommandFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "error: {} failed ({})\n  command: {}\n{}\n  log: {}",
            self.what,
            self.status,
            self.command,
            self.tail,
            self.log.display()
        )?;
        if let Some(help) = &self.help {
            write!(f, "\n  help: {help}")?;
        }
        Ok(())
    }
}

impl ImageError {
    /// Bad input is a usage error (exit 2); a machine that cannot fetch or build is a broken target (exit 3).
    pub fn exit_code(&self) -> u8 {
        match self {
            ImageError::UnknownSpec { .. }
            | ImageError::UnknownDebianRelease { .. }
            | ImageError::NoSuchPath { .. }
            | ImageError::NotABzImage { .. }
            | ImageError::NotAKernelTree { .. }
            | ImageError::TreeNotClean { .. }
            | ImageError::Fragment { .. }
            | ImageError::NoCacheDir => exit::USAGE,
            ImageError::MissingTools { .. }
            | ImageError::ConfigNotApplied { .. }
            | ImageError::Command(_)
            | ImageError::Io { .. } => exit::TARGET_BROKEN,
        }
    }

    pub(crate) fn io(
        action: &'static str,
        path: impl Into<PathBuf>,
        help: &'static str,
    ) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.into();
        move |source| ImageError::Io { action, path, source, help }
    }
}

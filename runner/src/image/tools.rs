//! The host tools a fetch or a build needs, checked before starting so that a missing one is named
//! with its Debian package instead of surfacing minutes later as a cryptic make error.

use super::error::ImageError;
use std::ffi::OsStr;
use std::path::{Path, PathBuf};

/// Something the recipe needs, and the Debian/Ubuntu package that provides it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    Program(&'static str, &'static str),
    /// A C header the kernel's host programs include (found through `gcc -E`).
    Header(&'static str, &'static str),
    File(&'static str, &'static str),
}

impl Need {
    fn name(&self) -> &'static str {
        match self {
            Need::Program(n, _) | Need::Header(n, _) | Need::File(n, _) => n,
        }
    }

    fn package(&self) -> &'static str {
        match self {
            Need::Program(_, p) | Need::Header(_, p) | Need::File(_, p) => p,
        }
    }
}

/// Building a kernel: the fragment compresses it with gzip; objtool needs libelf.
pub const BUILD: &[Need] = &[
    Need::Program("make", "make"),
    Need::Program("gcc", "gcc"),
    Need::Program("ld", "binutils"),
    Need::Program("flex", "flex"),
    Need::Program("bison", "bison"),
    Need::Program("bc", "bc"),
    Need::Program("gzip", "gzip"),
    Need::Header("stdio.h", "libc6-dev"),
    Need::Header("gelf.h", "libelf-dev"),
];

/// Fetching and unpacking a Debian linux-source package.
pub const FETCH: &[Need] = &[
    Need::Program("apt-get", "apt"),
    Need::Program("dpkg-deb", "dpkg"),
    Need::Program("tar", "tar"),
    Need::Program("xz", "xz-utils"),
    Need::File(super::debian::KEYRING, "debian-archive-keyring"),
];

pub fn find_program(program: &str, path_var: Option<&OsStr>) -> Option<PathBuf> {
    std::env::split_paths(path_var?).map(|dir| dir.join(program)).find(|p| is_executable(p))
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

fn header_found(header: &str) -> bool {
    let sh = match xshell::Shell::new() {
        Ok(sh) => sh,
        Err(_) => return false,
    };
    let source = format!("#include <{header}>\n");
    xshell::cmd!(sh, "gcc -E -x c -o /dev/null -").stdin(source).quiet().ignore_stderr().run().is_ok()
}

fn present(need: &Need, path_var: Option<&OsStr>) -> bool {
    match need {
        Need::Program(p, _) => find_program(p, path_var).is_some(),
        // Without gcc the header cannot be looked for; gcc itself is reported missing.
        Need::Header(h, _) => find_program("gcc", path_var).is_none() || header_found(h),
        Need::File(f, _) => Path::new(f).is_file(),
    }
}

/// Fails with every missing need of `needs` (deduplicated), naming the packages to install.
pub fn check(what: &str, needs: &[&[Need]]) -> Result<(), ImageError> {
    let path_var = std::env::var_os("PATH");
    let mut missing: Vec<Need> = Vec::new();
    for need in needs.iter().flat_map(|n| n.iter()) {
        if !missing.contains(need) && !present(need, path_var.as_deref()) {
            missing.push(*need);
        }
    }
    missing_error(what, &missing).map_or(Ok(()), Err)
}

pub fn missing_error(what: &str, missing: &[Need]) -> Option<ImageError> {
    if missing.is_empty() {
        return None;
    }
    let mut packages: Vec<&str> = missing.iter().map(Need::package).collect();
    packages.dedup();
    Some(ImageError::MissingTools {
        what: what.into(),
        tools: missing.iter().map(Need::name).collect::<Vec<_>>().join(", "),
        packages: packages.join(" "),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_programs_on_the_given_path_only() {
        assert!(find_program("sh", Some(OsStr::new("/usr/bin:/bin"))).is_some());
        assert!(find_program("sh", Some(OsStr::new("/nonexistent"))).is_none());
        assert!(find_program("sh", None).is_none());
    }

    #[test]
    fn the_message_names_tools_and_packages() {
        let msg = missing_error("building a kernel", &[BUILD[3], BUILD[8]]).map(|e| e.to_string()).unwrap_or_default();
        assert!(msg.contains("flex, gelf.h"), "{msg}");
        assert!(msg.contains("apt-get install --no-install-recommends flex libelf-dev"), "{msg}");
        assert!(missing_error("x", &[]).is_none());
    }
}

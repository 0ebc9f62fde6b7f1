//! What the user asked for: a built bzImage, a kernel source tree, or a Debian linux-source release.

use super::error::ImageError;
use std::path::{Path, PathBuf};

/// A Debian `linux-source-<series>` package gmemconf knows how to fetch and build.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DebianRelease {
    /// The kernel series, as in `debian:7.3`.
    pub series: &'static str,
    /// Why it is offered (shown in `--help` and errors).
    pub about: &'static str,
}

impl DebianRelease {
    pub fn package(&self) -> String {
        format!("linux-source-{}", self.series)
    }
}

/// The releases offered; the first is the default (the newest contract).
pub const DEBIAN_RELEASES: &[DebianRelease] = &[
    DebianRelease { series: "7.3", about: "the newest guest_memfd contract, from trixie-backports" },
    DebianRelease { series: "6.12", about: "the LTS most hosts run, from trixie or bookworm-backports" },
];

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KernelSpec {
    /// A bzImage someone already built: used as it is.
    BzImage(PathBuf),
    /// A kernel source tree: built out of tree into the cache with the fragment, incrementally.
    SourceTree(PathBuf),
    Debian(DebianRelease),
}

impl KernelSpec {
    /// Parses a spec, looking at the filesystem only for paths. `debian...` is always a Debian
    /// release; a directory called `debian` is reached as `./debian`.
    pub fn parse(spec: &str) -> Result<KernelSpec, ImageError> {
        if let Some(release) = parse_debian(spec)? {
            return Ok(KernelSpec::Debian(release));
        }
        if spec.is_empty() {
            return Err(ImageError::UnknownSpec { spec: spec.into() });
        }
        let path = expand_home(spec);
        match std::fs::metadata(&path) {
            Ok(m) if m.is_dir() => Ok(KernelSpec::SourceTree(path)),
            Ok(_) => Ok(KernelSpec::BzImage(path)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                // `foo:bar` that is not a file reads as a mistyped scheme, not a missing file.
                if spec.contains(':') && !spec.contains('/') {
                    Err(ImageError::UnknownSpec { spec: spec.into() })
                } else {
                    Err(ImageError::NoSuchPath { spec: spec.into(), path })
                }
            }
            Err(source) => {
                Err(ImageError::Io { action: "read", path, source, help: "check the path and its permissions" })
            }
        }
    }
}

/// `debian`, `debian:latest` and `debian:<series>`; `None` when the spec is not a Debian one.
pub fn parse_debian(spec: &str) -> Result<Option<DebianRelease>, ImageError> {
    let release = match spec.split_once(':') {
        None if spec == "debian" => "latest",
        Some(("debian", release)) => release,
        _ => return Ok(None),
    };
    let release = if release == "latest" { DEBIAN_RELEASES[0].series } else { release };
    match DEBIAN_RELEASES.iter().find(|r| r.series == release) {
        Some(r) => Ok(Some(*r)),
        None => Err(ImageError::UnknownDebianRelease {
            spec: spec.into(),
            release: release.into(),
            known: DEBIAN_RELEASES
                .iter()
                .map(|r| format!("debian:{} ({})", r.series, r.about))
                .chain(std::iter::once(format!("debian:latest (= debian:{})", DEBIAN_RELEASES[0].series)))
                .collect::<Vec<_>>()
                .join(", "),
        }),
    }
}

/// `~/linux` as a shell would expand it (the spec may come from a config file, not a shell).
fn expand_home(spec: &str) -> PathBuf {
    match (spec.strip_prefix("~/"), std::env::var_os("HOME")) {
        (Some(rest), Some(home)) => Path::new(&home).join(rest),
        _ => PathBuf::from(spec),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debian_forms() {
        let series = |s: &str| parse_debian(s).ok().flatten().map(|r| r.series);
        assert_eq!(series("debian"), Some("7.3"));
        assert_eq!(series("debian:latest"), Some("7.3"));
        assert_eq!(series("debian:7.3"), Some("7.3"));
        assert_eq!(series("debian:6.12"), Some("6.12"));
        assert_eq!(series("./debian"), None);
        assert_eq!(series("debianx"), None);
        assert_eq!(series("/boot/vmlinuz"), None);
    }

    #[test]
    fn unknown_debian_release_lists_the_known_ones() {
        let err = parse_debian("debian:6.1").err().map(|e| e.to_string()).unwrap_or_default();
        assert!(err.contains("`debian:6.1`"), "{err}");
        assert!(err.contains("debian:7.3") && err.contains("debian:6.12") && err.contains("debian:latest"), "{err}");
        assert!(parse_debian("debian:").is_err());
    }

    #[test]
    fn paths_by_kind() {
        let dir = std::env::temp_dir().join(format!("gmemconf-spec-{}", std::process::id()));
        std::fs::create_dir_all(&dir).ok();
        let file = dir.join("bzImage");
        std::fs::write(&file, b"x").ok();
        assert_eq!(KernelSpec::parse(dir.to_str().unwrap_or_default()).ok(), Some(KernelSpec::SourceTree(dir.clone())));
        assert_eq!(KernelSpec::parse(file.to_str().unwrap_or_default()).ok(), Some(KernelSpec::BzImage(file.clone())));
        let missing = dir.join("nope");
        assert!(matches!(KernelSpec::parse(missing.to_str().unwrap_or_default()), Err(ImageError::NoSuchPath { .. })));
        assert!(matches!(KernelSpec::parse("fedora:41"), Err(ImageError::UnknownSpec { .. })));
        assert!(matches!(KernelSpec::parse(""), Err(ImageError::UnknownSpec { .. })));
        std::fs::remove_dir_all(&dir).ok();
    }
}

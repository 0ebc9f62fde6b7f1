//! Where built kernels, sources and logs live, and how concurrent gmemconf processes share them:
//! one lock file per build, and every finished file published by rename, so a reader sees either
//! nothing or a whole bzImage.

use super::error::ImageError;
use nix::fcntl::{Flock, FlockArg};
use std::ffi::OsString;
use std::fs::File;
use std::path::{Path, PathBuf};

/// $GMEMCONF_CACHE, else $XDG_CACHE_HOME/gmemconf, else $HOME/.cache/gmemconf. Empty or relative
/// XDG values are ignored, as the XDG base directory spec says.
pub fn default_dir(
    gmemconf_cache: Option<OsString>,
    xdg_cache_home: Option<OsString>,
    home: Option<OsString>,
) -> Result<PathBuf, ImageError> {
    let set = |v: Option<OsString>| v.filter(|v| !v.is_empty()).map(PathBuf::from);
    if let Some(dir) = set(gmemconf_cache) {
        return Ok(std::path::absolute(&dir).unwrap_or(dir));
    }
    if let Some(xdg) = set(xdg_cache_home).filter(|p| p.is_absolute()) {
        return Ok(xdg.join("gmemconf"));
    }
    set(home).map(|h| h.join(".cache").join("gmemconf")).ok_or(ImageError::NoCacheDir)
}

pub fn dir_from_env() -> Result<PathBuf, ImageError> {
    default_dir(std::env::var_os("GMEMCONF_CACHE"), std::env::var_os("XDG_CACHE_HOME"), std::env::var_os("HOME"))
}

/// The cache layout. A key names one kernel: what it is built from and the fragments' hash.
#[derive(Debug, Clone)]
pub struct Cache {
    root: PathBuf,
}

impl Cache {
    pub fn new(root: impl Into<PathBuf>) -> Cache {
        Cache { root: root.into() }
    }

    /// The published kernel of a key (it exists only once a build finished).
    pub fn kernel(&self, key: &str) -> PathBuf {
        self.root.join("kernels").join(key).join("bzImage")
    }

    /// The out-of-tree build directory of a key, kept for incremental rebuilds.
    pub fn build_dir(&self, key: &str) -> PathBuf {
        self.root.join("build").join(key)
    }

    /// The log of the last build of a key.
    pub fn log(&self, key: &str) -> PathBuf {
        self.root.join("logs").join(format!("{key}.log"))
    }

    /// Extracted source trees of Debian packages.
    pub fn sources(&self) -> PathBuf {
        self.root.join("src")
    }

    /// The private apt state (sources.list, package lists, downloads).
    pub fn apt(&self) -> PathBuf {
        self.root.join("apt")
    }

    pub fn ensure(&self, dir: &Path) -> Result<(), ImageError> {
        std::fs::create_dir_all(dir).map_err(ImageError::io(
            "create the cache directory",
            dir,
            "set GMEMCONF_CACHE (or pass --cache-dir) to a writable directory",
        ))
    }

    /// Holds `locks/<name>.lock` exclusively until the guard drops; `waiting` is called once if
    /// another process holds it.
    pub fn lock(&self, name: &str, waiting: impl FnOnce()) -> Result<Flock<File>, ImageError> {
        let dir = self.root.join("locks");
        self.ensure(&dir)?;
        let path = dir.join(format!("{name}.lock"));
        let file = File::options().create(true).truncate(false).write(true).open(&path).map_err(ImageError::io(
            "open the lock file",
            &path,
            "set GMEMCONF_CACHE (or pass --cache-dir) to a writable directory",
        ))?;
        let file = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(lock) => return Ok(lock),
            Err((file, nix::errno::Errno::EWOULDBLOCK)) => {
                waiting();
                file
            }
            Err((file, _)) => file,
        };
        Flock::lock(file, FlockArg::LockExclusive).map_err(|(_, errno)| ImageError::Io {
            action: "lock",
            path,
            source: errno.into(),
            help: "the cache must be on a filesystem with flock(2)",
        })
    }

    /// Copies `from` to `to` through a temporary name in the same directory, then renames it, so
    /// that `to` is always absent or complete (a QEMU that opened the old file keeps reading it).
    pub fn publish(&self, from: &Path, to: &Path) -> Result<(), ImageError> {
        let dir = to.parent().unwrap_or(&self.root);
        self.ensure(dir)?;
        let tmp = dir.join(format!(".{}.tmp.{}", file_name(to), std::process::id()));
        std::fs::copy(from, &tmp)
            .and_then(|_| File::open(&tmp)?.sync_all())
            .and_then(|_| std::fs::rename(&tmp, to))
            .map_err(|source| {
                let _ = std::fs::remove_file(&tmp);
                ImageError::Io {
                    action: "publish",
                    path: to.to_path_buf(),
                    source,
                    help: "check free space in the cache",
                }
            })
    }

    /// Writes a small text file atomically (temporary name, then rename).
    pub fn write_atomic(&self, to: &Path, text: &str) -> Result<(), ImageError> {
        let dir = to.parent().unwrap_or(&self.root);
        self.ensure(dir)?;
        let tmp = dir.join(format!(".{}.tmp.{}", file_name(to), std::process::id()));
        std::fs::write(&tmp, text).and_then(|_| std::fs::rename(&tmp, to)).map_err(|source| {
            let _ = std::fs::remove_file(&tmp);
            ImageError::Io { action: "write", path: to.to_path_buf(), source, help: "check free space in the cache" }
        })
    }
}

fn file_name(p: &Path) -> String {
    p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "file".into())
}

/// A short, stable, filename-safe digest of a path (distinguishes two trees of one version).
pub fn path_digest(p: &Path) -> String {
    use sha2::{Digest, Sha256};
    Sha256::digest(p.as_os_str().as_encoded_bytes()).iter().take(4).map(|b| format!("{b:02x}")).collect()
}

/// Keeps `[A-Za-z0-9._-]` of a version string so it can be part of a directory name.
pub fn sanitize(s: &str) -> String {
    s.chars().map(|c| if c.is_ascii_alphanumeric() || "._-".contains(c) { c } else { '_' }).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn os(s: &str) -> Option<OsString> {
        Some(s.into())
    }

    #[test]
    fn cache_dir_precedence() {
        let dir = |a, b, c| default_dir(a, b, c).ok();
        assert_eq!(dir(os("/c"), os("/x"), os("/h")), Some(PathBuf::from("/c")));
        assert_eq!(dir(os(""), os("/x"), os("/h")), Some(PathBuf::from("/x/gmemconf")));
        assert_eq!(dir(None, os("relative"), os("/h")), Some(PathBuf::from("/h/.cache/gmemconf")));
        assert_eq!(dir(None, None, os("/h")), Some(PathBuf::from("/h/.cache/gmemconf")));
        assert!(matches!(default_dir(None, None, None), Err(ImageError::NoCacheDir)));
        let rel = dir(os("rel/cache"), None, None).unwrap_or_default();
        assert!(rel.is_absolute() && rel.ends_with("rel/cache"), "{rel:?}");
    }

    #[test]
    fn names_are_filename_safe_and_stable() {
        assert_eq!(sanitize("7.3.4-1~bpo13+1"), "7.3.4-1_bpo13_1");
        assert_eq!(path_digest(Path::new("/a")), path_digest(Path::new("/a")));
        assert_ne!(path_digest(Path::new("/a")), path_digest(Path::new("/b")));
        assert_eq!(path_digest(Path::new("/a")).len(), 8);
    }

    #[test]
    fn publish_replaces_whole_files_and_locks_exclude() {
        let root = std::env::temp_dir().join(format!("gmemconf-cache-{}", std::process::id()));
        let cache = Cache::new(&root);
        let src = root.join("in");
        cache.ensure(&root).ok();
        std::fs::write(&src, b"one").ok();
        let dest = cache.kernel("k");
        assert!(cache.publish(&src, &dest).is_ok());
        assert_eq!(std::fs::read(&dest).ok().as_deref(), Some(&b"one"[..]));
        std::fs::write(&src, b"two").ok();
        assert!(cache.publish(&src, &dest).is_ok());
        assert_eq!(std::fs::read(&dest).ok().as_deref(), Some(&b"two"[..]));
        let leftovers = std::fs::read_dir(dest.parent().unwrap_or(&root)).map(|d| d.count()).unwrap_or(0);
        assert_eq!(leftovers, 1, "temporary files left behind");

        let held = cache.lock("k", || {});
        assert!(held.is_ok());
        // A second open file description cannot take the lock while the first holds it.
        let path = root.join("locks/k.lock");
        let other = File::open(&path).map(|f| Flock::lock(f, FlockArg::LockExclusiveNonblock).is_ok());
        assert_eq!(other.ok(), Some(false));
        drop(held);
        let other = File::open(&path).map(|f| Flock::lock(f, FlockArg::LockExclusiveNonblock).is_ok());
        assert_eq!(other.ok(), Some(true));
        std::fs::remove_dir_all(&root).ok();
    }
}

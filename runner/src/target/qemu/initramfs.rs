//! The initramfs the test kernel boots: a base archive with this very executable as /init (and
//! the few directories and the console node it needs before it mounts anything), cached by the
//! executable's identity, followed by a small per-run archive with the suites, baselines and args.
//! The kernel unpacks concatenated archives in order. Nothing is compressed: under TCG the
//! guest's decompressor would cost far more than copying the bytes.

use super::cpio::CpioWriter;
use super::elf::Loadable;
use super::protocol::{ARGS_PATH, GuestArgs};
use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// Files of the per-run archive: path inside the initramfs, and text.
pub struct Payload {
    pub args: GuestArgs,
    pub files: Vec<(String, String)>,
}

pub struct Built {
    pub path: PathBuf,
    /// The base archive was already in the cache.
    pub base_cached: bool,
    pub bytes: u64,
}

const BASE_PREFIX: &str = "initramfs-base-";

/// Writes `out`: the cached base archive for `exe` (`image` says which of its bytes the guest
/// needs), then the per-run `payload`.
pub fn build(exe: &Path, image: &Loadable, cache_dir: &Path, payload: &Payload, out: &Path) -> io::Result<Built> {
    let meta = std::fs::metadata(exe)?;
    let key = format!("{BASE_PREFIX}{}-{}.{}.cpio", meta.len(), meta.mtime(), meta.mtime_nsec());
    let base = cache_dir.join(key);
    let base_cached = base.is_file();
    if !base_cached {
        std::fs::create_dir_all(cache_dir)?;
        write_base(exe, image, &base)?;
        remove_stale_bases(cache_dir, &base);
    }
    // copy(2) uses copy_file_range: the 20+ MB base is copied inside the kernel.
    std::fs::copy(&base, out)?;
    let file = std::fs::OpenOptions::new().append(true).open(out)?;
    let mut w = CpioWriter::new(BufWriter::new(file));
    w.dir("/gmemconf", 0o755)?;
    for (path, text) in &payload.files {
        w.file(path, 0o644, text.as_bytes())?;
    }
    let args = serde_json::to_vec(&payload.args).map_err(io::Error::other)?;
    w.file(ARGS_PATH, 0o644, &args)?;
    w.finish()?.into_inner().map_err(|e| e.into_error())?.sync_data()?;
    Ok(Built { path: out.to_path_buf(), base_cached, bytes: std::fs::metadata(out)?.len() })
}

fn write_base(exe: &Path, image: &Loadable, base: &Path) -> io::Result<()> {
    let tmp = base.with_extension(format!("tmp.{}", std::process::id()));
    let result = (|| {
        let mut w = CpioWriter::new(BufWriter::new(File::create(&tmp)?));
        for dir in ["/dev", "/proc", "/sys", "/tmp"] {
            w.dir(dir, 0o755)?;
        }
        // The kernel opens /dev/console for init's stdin, stdout and stderr before devtmpfs exists.
        w.char_device("/dev/console", 0o600, 5, 1)?;
        // Without its debug sections: under TCG the kernel unpacks ~60 MB/s.
        w.file_from("/init", 0o755, image.end, &mut image.reader(File::open(exe)?)?)?;
        w.finish()?.flush()
    })();
    match result.and_then(|_| std::fs::rename(&tmp, base)) {
        Ok(()) => Ok(()),
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            Err(e)
        }
    }
}

/// Bases of earlier builds of gmemconf are of no further use.
fn remove_stale_bases(dir: &Path, keep: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for e in entries.flatten() {
        let path = e.path();
        let name = e.file_name().to_string_lossy().into_owned();
        // Only finished archives: another gmemconf may be writing its `.tmp.<pid>` right now.
        if path != keep && name.starts_with(BASE_PREFIX) && name.ends_with(".cpio") {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// Where cached base archives live: $XDG_CACHE_HOME/gmemconf/initramfs, else ~/.cache/gmemconf/initramfs.
pub fn cache_dir() -> PathBuf {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(std::env::temp_dir);
    base.join("gmemconf").join("initramfs")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_is_cached_and_payload_appended() {
        let dir = std::env::temp_dir().join(format!("gmemconf-initramfs-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("mkdir");
        let exe = dir.join("fake-init");
        std::fs::write(&exe, [&[0x7f][..], &[b'E'; 63], b"\x7fELF not really"].concat()).expect("write");
        let image = Loadable { header: [b'H'; 64], end: 64 + 15 };
        let payload = Payload {
            args: GuestArgs { suites: vec![], baselines: vec![], timeout_scale: 1.0 },
            files: vec![("/gmemconf/s0.yaml".into(), "suite: x\n".into())],
        };
        let cache = dir.join("cache");
        let first = build(&exe, &image, &cache, &payload, &dir.join("a.cpio")).expect("build");
        let second = build(&exe, &image, &cache, &payload, &dir.join("b.cpio")).expect("build");
        assert!(!first.base_cached && second.base_cached);
        let bytes = std::fs::read(&second.path).expect("read");
        assert_eq!(bytes, std::fs::read(&first.path).expect("read"));
        let text = String::from_utf8_lossy(&bytes);
        // Two archives, each with its trailer; the executable and the payload in order.
        assert_eq!(text.matches("TRAILER!!!").count(), 2);
        let at = |s: &str| text.find(s).unwrap_or_else(|| panic!("{s} missing"));
        // The header as `image` says, then the executable's own bytes after it.
        assert!(at("dev/console") < at(&format!("{}\x7fELF not really", "H".repeat(64))));
        assert!(at("TRAILER!!!") < at("gmemconf/s0.yaml") && at("gmemconf/s0.yaml") < at("gmemconf/args.json"));
        // A new build of the executable replaces the cached base.
        std::thread::sleep(std::time::Duration::from_millis(20));
        std::fs::write(&exe, [&[0x7f][..], &[b'E'; 63], b"\x7fELF rebuilt!!!!"].concat()).expect("write");
        assert!(!build(&exe, &image, &cache, &payload, &dir.join("c.cpio")).expect("build").base_cached);
        assert_eq!(std::fs::read_dir(&cache).expect("ls").count(), 1, "stale base left behind");
        let _ = std::fs::remove_dir_all(&dir);
    }
}

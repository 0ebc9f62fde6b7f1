//! Debian's linux-source packages, fetched with a private apt state under the cache (the machine's
//! apt configuration is neither read for sources nor changed), unpacked with dpkg-deb and tar.

use super::cache::Cache;
use super::error::ImageError;
use super::logged;
use super::progress::{Mode, Step};
use super::spec::DebianRelease;
use std::path::{Path, PathBuf};
use xshell::{Shell, cmd};

pub const KEYRING: &str = "/usr/share/keyrings/debian-archive-keyring.gpg";

/// The suites that carry linux-source-7.3 (trixie-backports) and linux-source-6.12 (trixie,
/// bookworm-backports); apt picks the newest version among them.
const SOURCES_LIST: &str = "\
deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian trixie-backports main
deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian trixie main
deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian bookworm-backports main
";

/// An unpacked linux-source package.
#[derive(Debug, Clone)]
pub struct Source {
    pub tree: PathBuf,
    /// The Debian package version, e.g. `7.3.4-1~bpo13+1`.
    pub version: String,
}

fn tree_dir(cache: &Cache, release: &DebianRelease) -> PathBuf {
    cache.sources().join(release.package())
}

fn version_file(cache: &Cache, release: &DebianRelease) -> PathBuf {
    cache.sources().join(format!("{}.version", release.package()))
}

/// The unpacked tree, if an earlier run finished unpacking it.
pub fn extracted(cache: &Cache, release: &DebianRelease) -> Option<Source> {
    let tree = tree_dir(cache, release);
    let version = std::fs::read_to_string(version_file(cache, release)).ok()?;
    tree.join("Makefile").is_file().then(|| Source { tree, version: version.trim().to_string() })
}

/// Downloads and unpacks `linux-source-<series>` unless it is already unpacked. The caller holds
/// the release's lock.
pub fn fetch(cache: &Cache, release: &DebianRelease, log: &Path, mode: Mode) -> Result<Source, ImageError> {
    if let Some(source) = extracted(cache, release) {
        return Ok(source);
    }
    let package = release.package();
    let apt = cache.apt();
    let download = apt.join("download");
    for dir in [apt.join("lists/partial"), apt.join("cache/archives/partial"), download.clone(), cache.sources()] {
        cache.ensure(&dir)?;
    }
    let sources_list = apt.join("sources.list");
    cache.write_atomic(&sources_list, SOURCES_LIST)?;
    let sh = Shell::new().map_err(|e| shell_error(&apt, e))?;
    let opts = [
        format!("Dir::Etc::SourceList={}", sources_list.display()),
        "Dir::Etc::SourceParts=/dev/null".to_string(),
        format!("Dir::State::Lists={}", apt.join("lists").display()),
        format!("Dir::Cache={}", apt.join("cache").display()),
    ];
    let opts: Vec<String> = opts.iter().flat_map(|o| ["-o".to_string(), o.clone()]).collect();
    let apt_opts = &opts;
    let apt_help = |tail: &str| -> Option<String> {
        Some(if tail.contains("Unable to locate package") {
            format!("the Debian archive no longer offers {package}; choose another release or give a source tree")
        } else {
            "apt-get could not reach deb.debian.org (see its output above): check the network or the proxy in \
             /etc/apt/apt.conf.d; or download the linux-source package yourself, unpack it and give the directory"
                .into()
        })
    };

    let step = Step::start(mode, "fetching Debian package lists");
    logged::run(
        cmd!(sh, "apt-get -q {apt_opts...} update"),
        "apt-get update",
        log,
        &step,
        &|l| l.into(),
        Some(&apt_help),
    )?;
    step.done();

    for stale in std::fs::read_dir(&download).into_iter().flatten().flatten() {
        let _ = std::fs::remove_file(stale.path());
    }
    let step = Step::start(mode, format!("downloading {package}"));
    let sh_dl = Shell::new().map_err(|e| shell_error(&apt, e))?;
    sh_dl.change_dir(&download);
    let downloaded = || format!("{} MB", dir_bytes(&download) / 1_000_000);
    logged::run(
        cmd!(sh_dl, "apt-get -q {apt_opts...} download {package}"),
        &format!("apt-get download {package}"),
        log,
        &step,
        &|_| downloaded(),
        Some(&apt_help),
    )?;
    step.done();
    let deb = std::fs::read_dir(&download)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "deb"))
        .ok_or_else(|| {
            logged::command_error(
                &format!("apt-get download {package}"),
                "apt-get download",
                "exit status 0, but no .deb",
                log,
                Some(format!("look for the .deb in {}", download.display())),
            )
        })?;
    let version = deb_version(&deb).unwrap_or_else(|| "unknown".into());

    let step = Step::start(mode, format!("unpacking {package} {version}"));
    let work = cache.sources().join(format!(".unpack-{package}"));
    let _ = std::fs::remove_dir_all(&work);
    cache.ensure(&work)?;
    let pkg_root = work.join("pkg");
    logged::run(cmd!(sh, "dpkg-deb -x {deb} {pkg_root}"), "dpkg-deb -x", log, &step, &|l| l.into(), None)?;
    let tarball = pkg_root.join(format!("usr/src/{package}.tar.xz"));
    logged::run(
        cmd!(sh, "tar --checkpoint=1000 -xf {tarball} -C {work}"),
        &format!("unpacking {}", tarball.display()),
        log,
        &step,
        &unpacked,
        None,
    )?;
    // The version file first, the tree last: a tree in place means both are complete.
    let tree = tree_dir(cache, release);
    cache.write_atomic(&version_file(cache, release), &format!("{version}\n"))?;
    let _ = std::fs::remove_dir_all(&tree);
    std::fs::rename(work.join(&package), &tree).map_err(ImageError::io(
        "move the unpacked source to",
        &tree,
        "check that the cache directory is writable",
    ))?;
    let _ = std::fs::remove_dir_all(&work);
    let _ = std::fs::remove_file(&deb);
    step.done();
    Ok(Source { tree, version })
}

fn shell_error(dir: &Path, e: xshell::Error) -> ImageError {
    ImageError::Io {
        action: "start commands in",
        path: dir.into(),
        source: std::io::Error::other(e),
        help: "check that the cache directory exists",
    }
}

fn dir_bytes(dir: &Path) -> u64 {
    let mut total = 0;
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let Ok(m) = entry.metadata() else { continue };
        total += if m.is_dir() { dir_bytes(&entry.path()) } else { m.len() };
    }
    total
}

/// tar's `--checkpoint` line (`tar: Read checkpoint 3000`, counting 10 KiB records) as progress.
fn unpacked(line: &str) -> String {
    match line.rsplit(' ').next().and_then(|n| n.parse::<u64>().ok()) {
        Some(records) if line.contains("checkpoint") => format!("{} MB unpacked", records * 10240 / 1_000_000),
        _ => line.into(),
    }
}

/// `linux-source-7.3_7.3.4-1~bpo13+1_all.deb` → `7.3.4-1~bpo13+1` (apt escapes an epoch's `:`).
pub fn deb_version(deb: &Path) -> Option<String> {
    let name = deb.file_stem()?.to_str()?;
    let mut parts = name.split('_');
    let (_package, version) = (parts.next()?, parts.next()?);
    Some(version.replace("%3a", ":"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_from_the_deb_name() {
        let v = |s: &str| deb_version(Path::new(s));
        assert_eq!(v("/x/linux-source-7.3_7.3.4-1~bpo13+1_all.deb").as_deref(), Some("7.3.4-1~bpo13+1"));
        assert_eq!(v("linux-source-6.12_1%3a6.12.117-1_all.deb").as_deref(), Some("1:6.12.117-1"));
        assert_eq!(v("nonsense.deb"), None);
    }

    #[test]
    fn tar_checkpoints_read_as_megabytes() {
        assert_eq!(unpacked("tar: Read checkpoint 3000"), "30 MB unpacked");
        assert_eq!(unpacked("something else"), "something else");
    }

    #[test]
    fn sources_list_only_names_the_debian_archive() {
        for line in SOURCES_LIST.lines() {
            assert!(line.starts_with(&format!("deb [signed-by={KEYRING}] http://deb.debian.org/debian ")), "{line}");
        }
    }
}

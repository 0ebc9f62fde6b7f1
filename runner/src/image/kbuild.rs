//! Configures and builds a kernel out of tree: `make tinyconfig`, the fragments merged over it,
//! `make olddefconfig`, a check that every fragment option survived, then `make bzImage`, which is
//! run every time so that an edited tree is rebuilt incrementally.

use super::error::ImageError;
use super::fragment::{FragmentSet, parse_config};
use super::logged;
use super::progress::{Mode, Step};
use std::path::{Path, PathBuf};
use xshell::{Shell, cmd};

/// Marks a build directory whose configuration finished, with the fragments' hash.
const STAMP: &str = ".gmemconf-configured";

pub struct Build<'a> {
    pub src: &'a Path,
    pub out: &'a Path,
    pub fragments: &'a FragmentSet,
    pub jobs: usize,
    pub log: &'a Path,
    pub mode: Mode,
}

/// Checks that `path` is the top of an x86 kernel tree that can be built out of tree.
pub fn check_tree(path: &Path) -> Result<(), ImageError> {
    for needed in ["Makefile", "Kconfig", "arch/x86/Kconfig", "virt/kvm"] {
        if !path.join(needed).exists() {
            return Err(ImageError::NotAKernelTree { path: path.into(), missing: needed.into() });
        }
    }
    // The kernel's own Makefile refuses O= builds of a tree with any of these.
    for found in [".config", "include/config", "arch/x86/include/generated"] {
        if path.join(found).exists() {
            return Err(ImageError::TreeNotClean { path: path.into(), found: found.into() });
        }
    }
    Ok(())
}

/// `7.3.4` (plus EXTRAVERSION, e.g. `7.4.0-rc2`) from the top Makefile's text.
pub fn makefile_version(makefile: &str) -> Option<String> {
    let field = |name: &str| {
        makefile.lines().find_map(|l| {
            let (k, v) = l.split_once('=')?;
            (k.trim() == name).then(|| v.trim().to_string())
        })
    };
    let (v, p, s) = (field("VERSION")?, field("PATCHLEVEL")?, field("SUBLEVEL")?);
    let extra = field("EXTRAVERSION").unwrap_or_default();
    (!v.is_empty() && !p.is_empty()).then(|| format!("{v}.{p}.{s}{extra}"))
}

pub fn tree_version(tree: &Path) -> Result<String, ImageError> {
    let makefile = tree.join("Makefile");
    let text = std::fs::read_to_string(&makefile).map_err(ImageError::io(
        "read",
        &makefile,
        "give the top directory of a Linux source tree",
    ))?;
    makefile_version(&text).ok_or_else(|| ImageError::NotAKernelTree {
        path: tree.into(),
        missing: "VERSION/PATCHLEVEL in Makefile".into(),
    })
}

fn shell() -> Result<Shell, ImageError> {
    Shell::new().map_err(|e| ImageError::Io {
        action: "start commands in",
        path: ".".into(),
        source: std::io::Error::other(e),
        help: "check that the current directory still exists",
    })
}

/// Configures `out` if it is not configured with these fragments yet, builds, and returns the bzImage.
pub fn build(b: &Build) -> Result<PathBuf, ImageError> {
    let stamp = b.out.join(STAMP);
    let hash = b.fragments.hash();
    // The stamp: the fragments' hash, then the fragment options this kernel does not define.
    let stamped = std::fs::read_to_string(&stamp).unwrap_or_default();
    let mut lines = stamped.lines();
    let configured = lines.next() == Some(hash.as_str()) && b.out.join(".config").is_file();
    let absent: Vec<String> = if configured {
        lines.next().unwrap_or_default().split_whitespace().map(String::from).collect()
    } else {
        // No stamp while configuring: an interrupted or refused configuration is redone next time.
        let _ = std::fs::remove_file(&stamp);
        let absent = configure(b)?;
        std::fs::write(&stamp, format!("{hash}\n{}\n", absent.join(" "))).map_err(ImageError::io(
            "write",
            &stamp,
            "check the cache directory",
        ))?;
        absent
    };
    let step = Step::start(b.mode, format!("building the kernel (make -j{})", b.jobs));
    let (src, out, jobs) = (b.src, b.out, b.jobs.to_string());
    let sh = shell()?;
    logged::run(
        cmd!(sh, "make -C {src} O={out} ARCH=x86_64 -j{jobs} bzImage"),
        "the kernel build",
        b.log,
        &step,
        &|line| line.into(),
        Some(&make_help),
    )?;
    step.done();
    // A tree edited since it was configured may have lost an option (make re-runs Kconfig).
    check_config(b, &absent, None)?;
    let image = out.join("arch/x86/boot/bzImage");
    super::bzimage::check(&image)?;
    Ok(image)
}

/// Returns the fragment options this kernel does not define.
fn configure(b: &Build) -> Result<Vec<String>, ImageError> {
    let step = Step::start(b.mode, "configuring (tinyconfig + fragments)");
    let (src, out) = (b.src, b.out);
    std::fs::create_dir_all(out).map_err(ImageError::io("create", out, "check the cache directory"))?;
    let sh = shell()?;
    let show = |l: &str| l.to_string();
    logged::run(
        cmd!(sh, "make -C {src} O={out} ARCH=x86_64 tinyconfig"),
        "make tinyconfig",
        b.log,
        &step,
        &show,
        Some(&make_help),
    )?;
    let config = out.join(".config");
    let base = std::fs::read_to_string(&config).map_err(ImageError::io("read", &config, "see the build log"))?;
    std::fs::write(&config, b.fragments.merge_into(&base)).map_err(ImageError::io(
        "write",
        &config,
        "check free space in the cache",
    ))?;
    logged::run(
        cmd!(sh, "make -C {src} O={out} ARCH=x86_64 olddefconfig"),
        "make olddefconfig",
        b.log,
        &step,
        &show,
        Some(&make_help),
    )?;
    let absent = check_config(b, &[], Some(&step))?;
    step.done();
    Ok(absent)
}

/// Fails if a fragment option that this kernel knows is not in the final .config. An option the
/// kernel does not define at all (e.g. PROC_SYSCTL, gone in 7.3) is noted once, at configure time.
/// Returns those undefined options.
fn check_config(b: &Build, known_absent: &[String], notes: Option<&Step>) -> Result<Vec<String>, ImageError> {
    let path = b.out.join(".config");
    let text = std::fs::read_to_string(&path).map_err(ImageError::io("read", &path, "see the build log"))?;
    let config = parse_config(&text);
    let mut dropped = Vec::new();
    let mut absent = Vec::new();
    for (a, actual) in b.fragments.unmet(&config) {
        if known_absent.contains(&a.symbol) || !symbol_defined(b.src, &a.symbol) {
            absent.push(a.symbol.clone());
            if let Some(step) = notes {
                step.note(&format!("CONFIG_{} ({}) is not an option of this kernel: ignored", a.symbol, a.origin));
            }
            continue;
        }
        dropped.push(format!(
            "    CONFIG_{}={} ({}), but the .config has {}",
            a.symbol,
            a.value,
            a.origin,
            actual.map_or("it unset (a dependency is off)".to_string(), |v| format!("CONFIG_{}={v}", a.symbol))
        ));
    }
    if dropped.is_empty() {
        return Ok(absent);
    }
    Err(ImageError::ConfigNotApplied { tree: b.src.into(), build: b.out.into(), mismatches: dropped.join("\n") })
}

/// Whether any Kconfig file of the tree defines the symbol.
fn symbol_defined(src: &Path, symbol: &str) -> bool {
    let Ok(sh) = Shell::new() else { return true };
    let pattern = format!("^[[:space:]]*(menu)?config[[:space:]]+{symbol}[[:space:]]*$");
    // grep: 0 found, 1 not found, 2 trouble (then assume it exists, so the mismatch is reported).
    match cmd!(sh, "grep -rqsE --include=Kconfig* {pattern} {src}").quiet().ignore_status().output() {
        Ok(o) => o.status.code() != Some(1),
        Err(_) => true,
    }
}

fn make_help(tail: &str) -> Option<String> {
    if tail.contains("source tree is not clean") {
        Some("the source tree has an in-tree build; run `make mrproper` in it, or give its bzImage".into())
    } else if tail.contains("gelf.h") || tail.contains("libelf") {
        Some("apt-get install --no-install-recommends libelf-dev".into())
    } else if tail.contains("openssl") {
        Some("apt-get install --no-install-recommends libssl-dev".into())
    } else if tail.contains("No space left") {
        Some("free space in the cache directory (or point GMEMCONF_CACHE elsewhere)".into())
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_from_makefile() {
        let mk = "# SPDX\nVERSION = 7\nPATCHLEVEL = 3\nSUBLEVEL = 4\nEXTRAVERSION =\nNAME = x\n";
        assert_eq!(makefile_version(mk).as_deref(), Some("7.3.4"));
        let rc = "VERSION = 7\nPATCHLEVEL = 4\nSUBLEVEL = 0\nEXTRAVERSION = -rc2\n";
        assert_eq!(makefile_version(rc).as_deref(), Some("7.4.0-rc2"));
        assert_eq!(makefile_version("all:\n\techo\n"), None);
    }

    #[test]
    fn tree_checks_name_what_is_wrong() {
        let root = std::env::temp_dir().join(format!("gmemconf-tree-{}", std::process::id()));
        std::fs::create_dir_all(root.join("arch/x86")).ok();
        std::fs::create_dir_all(root.join("virt/kvm")).ok();
        assert!(matches!(check_tree(&root), Err(ImageError::NotAKernelTree { missing, .. }) if missing == "Makefile"));
        for f in ["Makefile", "Kconfig", "arch/x86/Kconfig"] {
            std::fs::write(root.join(f), "").ok();
        }
        assert!(check_tree(&root).is_ok());
        std::fs::create_dir_all(root.join("include/config")).ok();
        let err = check_tree(&root).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(err.contains("include/config") && err.contains("mrproper"), "{err}");
        std::fs::remove_dir_all(&root).ok();
    }

    #[test]
    fn make_failures_get_a_hint_where_one_is_known() {
        assert!(make_help("*** The source tree is not clean, please run 'make mrproper'").is_some());
        assert!(make_help("fatal error: gelf.h: No such file").is_some_and(|h| h.contains("libelf-dev")));
        assert_eq!(make_help("error: something else"), None);
    }
}

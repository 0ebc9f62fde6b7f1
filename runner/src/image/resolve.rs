//! From a kernel spec to a bzImage path: check a given image, build a given tree, or fetch and
//! build a Debian release, reusing the cache. A build directory belongs to a source (a Debian
//! release, a tree), so that a changed fragment rebuilds incrementally; a finished kernel is kept
//! per (source, fragments' hash).

use super::cache::{self, Cache, path_digest, sanitize};
use super::debian;
use super::error::ImageError;
use super::fragment::FragmentSet;
use super::kbuild::{self, Build};
use super::progress::{Mode, Step};
use super::spec::{DebianRelease, KernelSpec};
use super::tools;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone)]
pub struct ImageOptions {
    /// Where sources, builds, logs and kernels are kept.
    pub cache_dir: PathBuf,
    /// Parallel make jobs.
    pub jobs: usize,
    /// Config fragments applied after guest-images/gmemconf.config (a later one wins).
    pub extra_fragments: Vec<PathBuf>,
    /// Progress on stderr: spinners, plain lines, or nothing.
    pub progress: Mode,
}

impl ImageOptions {
    /// One make job per CPU, progress as stderr allows, the built-in fragment only.
    pub fn new(cache_dir: impl Into<PathBuf>) -> ImageOptions {
        ImageOptions {
            cache_dir: cache_dir.into(),
            jobs: std::thread::available_parallelism().map_or(1, |n| n.get()),
            extra_fragments: Vec::new(),
            progress: Mode::for_stderr(false),
        }
    }

    /// As `new`, with the cache directory from the environment ($GMEMCONF_CACHE, ...).
    pub fn from_env() -> Result<ImageOptions, ImageError> {
        Ok(ImageOptions::new(cache::dir_from_env()?))
    }
}

/// The bzImage for `spec`, building it if needed. A bzImage path is only checked; a source tree is
/// always re-made (incrementally); a Debian release is built once per fragment set.
pub fn resolve_kernel(spec: &str, opts: &ImageOptions) -> Result<PathBuf, ImageError> {
    match KernelSpec::parse(spec)? {
        KernelSpec::BzImage(path) => {
            super::bzimage::check(&path)?;
            Ok(std::path::absolute(&path).unwrap_or(path))
        }
        KernelSpec::SourceTree(tree) => build_tree(&tree, opts),
        KernelSpec::Debian(release) => build_debian(&release, opts),
    }
}

/// The bzImage `spec` names if it needs no build: a valid bzImage path, or a kernel already in
/// the cache (for a tree, its last build, which may predate later edits). No network, no make.
pub fn cached_kernel(spec: &str, opts: &ImageOptions) -> Result<Option<PathBuf>, ImageError> {
    let cache = Cache::new(&opts.cache_dir);
    let key = match KernelSpec::parse(spec)? {
        KernelSpec::BzImage(path) => {
            super::bzimage::check(&path)?;
            return Ok(Some(std::path::absolute(&path).unwrap_or(path)));
        }
        KernelSpec::SourceTree(tree) => tree_key(&canonical_tree(&tree)?)?,
        KernelSpec::Debian(release) => debian_key(&release),
    };
    let kernel = cache.kernel(&kernel_key(&key, &FragmentSet::load(&opts.extra_fragments)?));
    Ok(kernel.is_file().then_some(kernel))
}

/// The build directory's key: which source.
fn debian_key(release: &DebianRelease) -> String {
    format!("debian-{}", release.series)
}

fn tree_key(tree: &Path) -> Result<String, ImageError> {
    let version = kbuild::tree_version(tree)?;
    Ok(format!("tree-{}-{}", sanitize(&version), path_digest(tree)))
}

/// A finished kernel's key: which source, with which fragments.
fn kernel_key(build_key: &str, fragments: &FragmentSet) -> String {
    format!("{build_key}-{}", fragments.hash())
}

fn canonical_tree(tree: &Path) -> Result<PathBuf, ImageError> {
    let tree = tree.canonicalize().map_err(ImageError::io("resolve", tree, "give an existing directory"))?;
    kbuild::check_tree(&tree)?;
    Ok(tree)
}

fn build_debian(release: &DebianRelease, opts: &ImageOptions) -> Result<PathBuf, ImageError> {
    let cache = Cache::new(&opts.cache_dir);
    let fragments = FragmentSet::load(&opts.extra_fragments)?;
    let key = debian_key(release);
    let kernel = cache.kernel(&kernel_key(&key, &fragments));
    if kernel.is_file() {
        return Ok(kernel);
    }
    let what = format!("building debian:{}", release.series);
    match debian::extracted(&cache, release) {
        Some(_) => tools::check(&what, &[tools::BUILD])?,
        None => tools::check(&what, &[tools::FETCH, tools::BUILD])?,
    }
    let _lock = lock(&cache, &key, opts.progress)?;
    // Another process may have finished it while this one waited.
    if kernel.is_file() {
        return Ok(kernel);
    }
    let log = start_log(&cache, &kernel_key(&key, &fragments))?;
    let source = match debian::extracted(&cache, release) {
        Some(s) => s,
        None => debian::fetch(&cache, release, &log, opts.progress)?,
    };
    let out = cache.build_dir(&key);
    let built = kbuild::build(&Build {
        src: &source.tree,
        out: &out,
        fragments: &fragments,
        jobs: opts.jobs,
        log: &log,
        mode: opts.progress,
    })?;
    let info = format!(
        "spec: debian:{}\npackage: {} {}\nfragments: {}\nbuild: {}\n",
        release.series,
        release.package(),
        source.version,
        fragments.hash(),
        out.display()
    );
    publish(&cache, &built, &kernel, &info)?;
    Ok(kernel)
}

fn build_tree(tree: &Path, opts: &ImageOptions) -> Result<PathBuf, ImageError> {
    let cache = Cache::new(&opts.cache_dir);
    let tree = canonical_tree(tree)?;
    let fragments = FragmentSet::load(&opts.extra_fragments)?;
    let key = tree_key(&tree)?;
    tools::check(&format!("building {}", tree.display()), &[tools::BUILD])?;
    let _lock = lock(&cache, &key, opts.progress)?;
    let log = start_log(&cache, &kernel_key(&key, &fragments))?;
    let out = cache.build_dir(&key);
    let built = kbuild::build(&Build {
        src: &tree,
        out: &out,
        fragments: &fragments,
        jobs: opts.jobs,
        log: &log,
        mode: opts.progress,
    })?;
    let kernel = cache.kernel(&kernel_key(&key, &fragments));
    let info = format!("spec: {}\nfragments: {}\nbuild: {}\n", tree.display(), fragments.hash(), out.display());
    publish(&cache, &built, &kernel, &info)?;
    Ok(kernel)
}

fn lock(cache: &Cache, name: &str, mode: Mode) -> Result<nix::fcntl::Flock<std::fs::File>, ImageError> {
    let mut waiting: Option<Step> = None;
    let lock = cache.lock(name, || {
        waiting = Some(Step::start(mode, format!("waiting for another gmemconf building {name}")));
    })?;
    if let Some(step) = waiting {
        step.done();
    }
    Ok(lock)
}

/// A fresh log for this run's commands.
fn start_log(cache: &Cache, key: &str) -> Result<PathBuf, ImageError> {
    let log = cache.log(key);
    if let Some(dir) = log.parent() {
        cache.ensure(dir)?;
    }
    std::fs::write(&log, "").map_err(ImageError::io("write", &log, "check the cache directory"))?;
    Ok(log)
}

fn publish(cache: &Cache, built: &Path, kernel: &Path, info: &str) -> Result<(), ImageError> {
    cache.publish(built, kernel)?;
    cache.write_atomic(&kernel.with_file_name("info"), info)
}

//! `gmemconf image build|path <spec>`: the clap part, hooked into the main CLI as `Cmd::Image`.

use super::cache;
use super::error::ImageError;
use super::progress::Mode;
use super::resolve::{ImageOptions, cached_kernel, resolve_kernel};
use crate::exit;
use clap::{Args, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

/// `image path` when the kernel is not built yet.
const NOT_CACHED: u8 = 1;

#[derive(Args, Debug)]
pub struct ImageArgs {
    #[command(subcommand)]
    cmd: ImageCmd,
}

#[derive(Subcommand, Debug)]
enum ImageCmd {
    /// Build (or find in the cache) the test kernel for SPEC and print its bzImage path on stdout.
    Build(SpecArgs),
    /// Print the cached bzImage path for SPEC without building anything; exit 1 if there is none.
    Path(SpecArgs),
}

#[derive(Args, Debug)]
struct SpecArgs {
    /// A bzImage file, a kernel source tree, `debian:7.3`, `debian:6.12`, `debian:latest` or
    /// `debian` (= debian:7.3).
    spec: String,
    /// Another config fragment (CONFIG_NAME=value lines) applied after guest-images/gmemconf.config;
    /// repeatable, a later one wins. Part of the cache key.
    #[arg(long = "config", value_name = "FRAGMENT")]
    configs: Vec<PathBuf>,
    /// Cache directory (default: $GMEMCONF_CACHE, else $XDG_CACHE_HOME/gmemconf, else ~/.cache/gmemconf).
    #[arg(long)]
    cache_dir: Option<PathBuf>,
    /// Parallel make jobs (default: the number of CPUs).
    #[arg(short, long)]
    jobs: Option<usize>,
    /// No progress on stderr (errors are still printed).
    #[arg(short, long)]
    quiet: bool,
}

impl SpecArgs {
    fn options(&self) -> Result<ImageOptions, ImageError> {
        let cache_dir = match &self.cache_dir {
            Some(dir) => std::path::absolute(dir).unwrap_or(dir.clone()),
            None => cache::dir_from_env()?,
        };
        let mut opts = ImageOptions::new(cache_dir);
        if let Some(jobs) = self.jobs {
            opts.jobs = jobs.max(1);
        }
        opts.extra_fragments = self.configs.clone();
        opts.progress = Mode::for_stderr(self.quiet);
        Ok(opts)
    }
}

pub fn image_main(args: ImageArgs) -> ExitCode {
    let (spec, result) = match &args.cmd {
        ImageCmd::Build(a) => (&a.spec, a.options().and_then(|o| resolve_kernel(&a.spec, &o).map(Some))),
        ImageCmd::Path(a) => (&a.spec, a.options().and_then(|o| cached_kernel(&a.spec, &o))),
    };
    match result {
        Ok(Some(path)) => {
            println!("{}", path.display());
            ExitCode::from(exit::OK)
        }
        Ok(None) => {
            eprintln!("gmemconf image: {spec} is not built yet\n  help: gmemconf image build {spec}");
            ExitCode::from(NOT_CACHED)
        }
        Err(e) => {
            // Messages start with `error:` or `file:line:col: error:`, as suite errors do.
            eprintln!("{e}");
            ExitCode::from(e.exit_code())
        }
    }
}

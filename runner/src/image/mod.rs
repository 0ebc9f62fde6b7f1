//! The test kernel for the qemu target: a bzImage from a path, a source tree or a Debian
//! linux-source release, built with guest-images/gmemconf.config and cached.

mod bzimage;
mod cache;
mod cli;
mod debian;
mod error;
mod fragment;
mod kbuild;
mod logged;
mod progress;
mod resolve;
mod spec;
mod tools;

pub use cli::{ImageArgs, image_main};
pub use error::ImageError;
pub use progress::Mode as ProgressMode;
pub use resolve::{ImageOptions, cached_kernel, resolve_kernel};
pub use spec::{DEBIAN_RELEASES, KernelSpec};

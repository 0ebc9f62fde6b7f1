//! Which kernel image a `--kernel` spec names: a bzImage, a source tree (built), or a Debian
//! release (fetched and built), through the test-kernel recipe (crate::image).

use crate::image::{ImageError, ImageOptions, resolve_kernel};
use std::path::PathBuf;

/// The bootable image for `spec`, built first if it needs to be.
pub fn kernel_image(spec: &str) -> Result<PathBuf, ImageError> {
    resolve_kernel(spec, &ImageOptions::from_env()?)
}

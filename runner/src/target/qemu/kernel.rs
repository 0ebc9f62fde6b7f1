//! Which kernel image a `--kernel` spec names. For now a bzImage path; the image builder
//! (`crate::image::resolve_kernel`) takes over source trees and `debian:<version>` when merged.

use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

/// A `--kernel` spec the qemu target cannot use, worded for the user with what to do instead.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("--kernel {spec}: {message}\n  help: {help}")]
pub struct KernelSpecError {
    pub spec: String,
    pub message: String,
    pub help: String,
}

/// The bootable image for `spec`.
pub fn kernel_image(spec: &str) -> Result<PathBuf, KernelSpecError> {
    let fail =
        |message: String, help: &str| KernelSpecError { spec: spec.to_string(), message, help: help.to_string() };
    if spec.starts_with("debian:") {
        return Err(fail(
            "building Debian's kernels is not part of this build".into(),
            "give the path of a bzImage (e.g. ~/linux/arch/x86/boot/bzImage)",
        ));
    }
    let path = Path::new(spec);
    if path.is_dir() {
        let built = path.join("arch/x86/boot/bzImage");
        return Err(fail(
            "is a directory".into(),
            &if built.is_file() {
                format!("give the image built in it: --kernel {}", built.display())
            } else {
                "build the kernel (make bzImage) and give arch/x86/boot/bzImage".to_string()
            },
        ));
    }
    check_bzimage(path)
        .map_err(|m| fail(m, "give the path of an x86 bzImage (arch/x86/boot/bzImage of a kernel build)"))?;
    Ok(path.to_path_buf())
}

/// An x86 boot image carries "HdrS" at 0x202 (Documentation/arch/x86/boot.rst).
fn check_bzimage(path: &Path) -> Result<(), String> {
    let mut f = std::fs::File::open(path).map_err(|e| format!("cannot open: {e}"))?;
    let mut magic = [0u8; 4];
    f.seek(SeekFrom::Start(0x202))
        .and_then(|_| f.read_exact(&mut magic))
        .map_err(|_| "too short to be a kernel image".to_string())?;
    if &magic != b"HdrS" {
        return Err("not an x86 kernel boot image (no \"HdrS\" boot header at 0x202)".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::kernel_image;

    #[test]
    fn bad_specs_say_what_to_give() {
        let e = kernel_image("/no/such/bzImage").expect_err("missing");
        assert!(e.to_string().contains("--kernel /no/such/bzImage: cannot open") && e.help.contains("bzImage"), "{e}");
        let e = kernel_image("/etc/hostname").expect_err("not a kernel");
        assert!(e.message.contains("too short") || e.message.contains("HdrS"), "{e}");
        let e = kernel_image("/etc").expect_err("a directory");
        assert!(e.message.contains("directory"), "{e}");
        let e = kernel_image("debian:7.3").expect_err("not here yet");
        assert!(e.help.contains("bzImage"), "{e}");
    }
}

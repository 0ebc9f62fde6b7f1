//! Is this file a kernel QEMU can boot with `-kernel`? The x86 boot protocol puts the magic "HdrS"
//! at offset 0x202 of a bzImage (Documentation/arch/x86/boot.rst, "The real-mode kernel header").

use super::error::ImageError;
use std::io::Read;
use std::path::Path;

const MAGIC_OFFSET: usize = 0x202;
const MAGIC: &[u8; 4] = b"HdrS";

/// Why a file's first bytes are not a bzImage; `None` when they are.
pub fn header_problem(head: &[u8]) -> Option<(String, &'static str)> {
    if head.starts_with(b"\x7fELF") {
        return Some((
            "it is an ELF file (vmlinux?), not the compressed boot image".into(),
            "give arch/x86/boot/bzImage from the build directory, not vmlinux",
        ));
    }
    if head.len() < MAGIC_OFFSET + MAGIC.len() {
        return Some((
            format!("it is {} bytes long, too short to hold the boot header (\"HdrS\" at 0x202)", head.len()),
            "give arch/x86/boot/bzImage from a finished kernel build",
        ));
    }
    let found = &head[MAGIC_OFFSET..MAGIC_OFFSET + MAGIC.len()];
    if found != MAGIC {
        return Some((
            format!("no \"HdrS\" boot header magic at offset 0x202 (found {found:02x?})"),
            "give arch/x86/boot/bzImage from an x86 kernel build",
        ));
    }
    None
}

pub fn check(path: &Path) -> Result<(), ImageError> {
    let mut head = Vec::with_capacity(MAGIC_OFFSET + MAGIC.len());
    std::fs::File::open(path)
        .and_then(|f| f.take((MAGIC_OFFSET + MAGIC.len()) as u64).read_to_end(&mut head))
        .map_err(ImageError::io("read", path, "check the path and its permissions"))?;
    match header_problem(&head) {
        None => Ok(()),
        Some((why, help)) => Err(ImageError::NotABzImage { path: path.to_path_buf(), why, help: help.into() }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image_with(magic: &[u8]) -> Vec<u8> {
        let mut v = vec![0u8; 0x400];
        v[MAGIC_OFFSET..MAGIC_OFFSET + magic.len()].copy_from_slice(magic);
        v
    }

    #[test]
    fn accepts_the_boot_header() {
        assert_eq!(header_problem(&image_with(b"HdrS")), None);
    }

    #[test]
    fn refuses_anything_else() {
        let why = |b: &[u8]| header_problem(b).map(|(w, _)| w).unwrap_or_default();
        assert!(why(&image_with(b"HdrX")).contains("0x202"));
        assert!(why(&[0u8; 0x205]).contains("too short"));
        assert!(why(b"").contains("0 bytes"));
        let mut elf = image_with(b"HdrS");
        elf[..4].copy_from_slice(b"\x7fELF");
        assert!(why(&elf).contains("vmlinux"));
    }

    #[test]
    fn check_reads_the_file() {
        let path = std::env::temp_dir().join(format!("gmemconf-bzimage-{}", std::process::id()));
        std::fs::write(&path, image_with(b"HdrS")).ok();
        assert!(check(&path).is_ok());
        std::fs::write(&path, b"#!/bin/sh\n").ok();
        let err = check(&path).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(err.contains(&path.display().to_string()) && err.contains("help:"), "{err}");
        std::fs::remove_file(&path).ok();
        assert!(matches!(check(&path), Err(ImageError::Io { .. })));
    }
}

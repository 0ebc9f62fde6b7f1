//! Whether an executable can be the initramfs's /init on its own: an x86-64 ELF without a
//! program interpreter (PT_INTERP), i.e. statically linked. Reads only the ELF and program
//! headers, so a few fixed offsets of the ELF64 format suffice.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

const PT_INTERP: u32 = 3;
const EM_X86_64: u16 = 62;

pub fn check_static(path: &Path) -> Result<(), String> {
    let mut f = File::open(path).map_err(|e| format!("cannot open {}: {e}", path.display()))?;
    let mut head = [0u8; 64];
    f.read_exact(&mut head).map_err(|_| format!("{} is not an ELF executable (too short)", path.display()))?;
    let interp = interpreter(&head, |offset, buf| {
        f.seek(SeekFrom::Start(offset)).and_then(|_| f.read_exact(buf)).map_err(|e| e.to_string())
    })
    .map_err(|e| format!("{}: {e}", path.display()))?;
    match interp {
        None => Ok(()),
        Some(i) => Err(format!(
            "{} is dynamically linked (it asks for {i}); it cannot run as /init of the test kernel's initramfs",
            path.display()
        )),
    }
}

/// The PT_INTERP path of an ELF64 little-endian x86-64 file whose first 64 bytes are `head`,
/// reading the rest through `read_at(offset, buf)`; None for a static executable.
fn interpreter(
    head: &[u8; 64],
    mut read_at: impl FnMut(u64, &mut [u8]) -> Result<(), String>,
) -> Result<Option<String>, String> {
    if &head[..4] != b"\x7fELF" || head[4] != 2 || head[5] != 1 {
        return Err("not a 64-bit little-endian ELF file".into());
    }
    let machine = u16::from_le_bytes([head[18], head[19]]);
    if machine != EM_X86_64 {
        return Err(format!("ELF machine {machine} is not x86-64"));
    }
    let phoff = u64::from_le_bytes(head[32..40].try_into().map_err(|_| "bad header")?);
    let phentsize = u16::from_le_bytes([head[54], head[55]]) as u64;
    let phnum = u16::from_le_bytes([head[56], head[57]]) as u64;
    if phentsize < 56 {
        return Err(format!("program header entries of {phentsize} bytes"));
    }
    for i in 0..phnum {
        let mut ph = [0u8; 56];
        read_at(phoff + i * phentsize, &mut ph)?;
        if u32::from_le_bytes([ph[0], ph[1], ph[2], ph[3]]) == PT_INTERP {
            let offset = u64::from_le_bytes(ph[8..16].try_into().map_err(|_| "bad program header")?);
            let size = u64::from_le_bytes(ph[32..40].try_into().map_err(|_| "bad program header")?).min(4096);
            let mut path = vec![0u8; size as usize];
            read_at(offset, &mut path)?;
            let text = String::from_utf8_lossy(&path).trim_end_matches('\0').to_string();
            return Ok(Some(text));
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::check_static;
    use std::path::Path;

    #[test]
    fn this_test_binary_is_static() {
        // The crate is always built with +crt-static (.cargo/config.toml), tests included.
        let exe = std::env::current_exe().expect("own path");
        check_static(&exe).expect("static");
    }

    #[test]
    fn a_dynamic_executable_is_refused_by_name() {
        let sh = Path::new("/bin/sh");
        let err = check_static(sh).expect_err("/bin/sh is dynamically linked on Debian");
        assert!(err.contains("dynamically linked") && err.contains("ld-linux"), "{err}");
    }

    #[test]
    fn a_text_file_is_not_elf() {
        let err = check_static(Path::new("/etc/hostname")).expect_err("text");
        assert!(err.contains("not") && err.contains("/etc/hostname"), "{err}");
    }
}

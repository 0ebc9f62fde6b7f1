//! Whether an executable can be the initramfs's /init on its own: an x86-64 ELF without a
//! program interpreter (PT_INTERP), i.e. statically linked; and the part of it a process needs.
//! Reads only the ELF and program headers, so a few fixed offsets of the ELF64 format suffice.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

const PT_INTERP: u32 = 3;
const EM_X86_64: u16 = 62;

/// A static executable as the guest runs it: everything its program headers point at, without
/// the section headers and the debug sections after it (about 18 of a release build's 24 MB),
/// which the kernel never loads.
#[derive(Debug)]
pub struct Loadable {
    /// The ELF header with the section header table removed (e_shoff, e_shnum, e_shstrndx 0).
    pub header: [u8; 64],
    /// Where the last segment ends in the file.
    pub end: u64,
}

impl Loadable {
    /// The bytes of the trimmed executable, read from `file` (the original).
    pub fn reader(&self, mut file: File) -> std::io::Result<impl Read> {
        file.seek(SeekFrom::Start(64))?;
        Ok(std::io::Cursor::new(self.header).chain(file.take(self.end - 64)))
    }
}

pub fn check_static(path: &Path) -> Result<Loadable, String> {
    let mut f = File::open(path).map_err(|e| format!("cannot open {}: {e}", path.display()))?;
    let mut head = [0u8; 64];
    f.read_exact(&mut head).map_err(|_| format!("{} is not an ELF executable (too short)", path.display()))?;
    let (interp, end) = segments(&head, |offset, buf| {
        f.seek(SeekFrom::Start(offset)).and_then(|_| f.read_exact(buf)).map_err(|e| e.to_string())
    })
    .map_err(|e| format!("{}: {e}", path.display()))?;
    if let Some(i) = interp {
        return Err(format!(
            "{} is dynamically linked (it asks for {i}); it cannot run as /init of the test kernel's initramfs",
            path.display()
        ));
    }
    let mut header = head;
    header[0x28..0x30].fill(0); // e_shoff
    header[0x3c..0x40].fill(0); // e_shnum, e_shstrndx
    Ok(Loadable { header, end: end.max(64) })
}

/// The PT_INTERP path of an ELF64 little-endian x86-64 file whose first 64 bytes are `head`
/// (None for a static executable), and where its last segment ends; reading the rest through
/// `read_at(offset, buf)`.
fn segments(
    head: &[u8; 64],
    mut read_at: impl FnMut(u64, &mut [u8]) -> Result<(), String>,
) -> Result<(Option<String>, u64), String> {
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
    let mut end = phoff + phnum * phentsize;
    let mut interp = None;
    for i in 0..phnum {
        let mut ph = [0u8; 56];
        read_at(phoff + i * phentsize, &mut ph)?;
        let offset = u64::from_le_bytes(ph[8..16].try_into().map_err(|_| "bad program header")?);
        let filesz = u64::from_le_bytes(ph[32..40].try_into().map_err(|_| "bad program header")?);
        end = end.max(offset.saturating_add(filesz));
        if u32::from_le_bytes([ph[0], ph[1], ph[2], ph[3]]) == PT_INTERP {
            let mut path = vec![0u8; filesz.min(4096) as usize];
            read_at(offset, &mut path)?;
            interp = Some(String::from_utf8_lossy(&path).trim_end_matches('\0').to_string());
        }
    }
    Ok((interp, end))
}

#[cfg(test)]
mod tests {
    use super::check_static;
    use std::io::Read;
    use std::path::Path;

    #[test]
    fn this_test_binary_is_static_and_its_trimmed_copy_runs() {
        // The crate is always built with +crt-static (.cargo/config.toml), tests included.
        let exe = std::env::current_exe().expect("own path");
        let image = check_static(&exe).expect("static");
        let size = std::fs::metadata(&exe).expect("stat").len();
        assert!(image.end > 64 && image.end < size, "{} of {size}", image.end);
        let mut bytes = Vec::new();
        image.reader(std::fs::File::open(&exe).expect("open")).expect("seek").read_to_end(&mut bytes).expect("read");
        assert_eq!(bytes.len() as u64, image.end);
        let copy = std::env::temp_dir().join(format!("gmemconf-trimmed-{}", std::process::id()));
        std::fs::write(&copy, &bytes).expect("write");
        std::fs::set_permissions(&copy, std::os::unix::fs::PermissionsExt::from_mode(0o755)).expect("chmod");
        // The trimmed test binary still starts and lists its tests.
        let out = std::process::Command::new(&copy).arg("--list").output().expect("the trimmed copy starts");
        let _ = std::fs::remove_file(&copy);
        assert!(out.status.success() && String::from_utf8_lossy(&out.stdout).contains("elf::tests"), "{out:?}");
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

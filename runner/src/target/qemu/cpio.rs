//! A writer of cpio "newc" archives, the format the kernel unpacks an initramfs from
//! (Documentation/driver-api/early-userspace/buffer-format.rst): a 110-byte ASCII header per
//! entry, the name, the data, each padded to 4 bytes, and a `TRAILER!!!` entry at the end.

use std::io::{self, Read, Write};

const MAGIC: &str = "070701";
const TRAILER: &str = "TRAILER!!!";

pub const S_IFDIR: u32 = 0o040000;
pub const S_IFREG: u32 = 0o100000;
pub const S_IFCHR: u32 = 0o020000;

/// Writes entries in order; `finish` adds the trailer. Owner root, mtime 0: the archive depends
/// only on its contents.
pub struct CpioWriter<W: Write> {
    out: W,
    written: u64,
    next_ino: u32,
}

impl<W: Write> CpioWriter<W> {
    pub fn new(out: W) -> CpioWriter<W> {
        CpioWriter { out, written: 0, next_ino: 1 }
    }

    pub fn dir(&mut self, path: &str, perm: u32) -> io::Result<()> {
        self.header(path, S_IFDIR | perm, 2, 0, (0, 0))
    }

    pub fn char_device(&mut self, path: &str, perm: u32, major: u32, minor: u32) -> io::Result<()> {
        self.header(path, S_IFCHR | perm, 1, 0, (major, minor))
    }

    pub fn file(&mut self, path: &str, perm: u32, data: &[u8]) -> io::Result<()> {
        self.file_from(path, perm, data.len() as u64, &mut &data[..])
    }

    /// A regular file of exactly `size` bytes read from `data`.
    pub fn file_from(&mut self, path: &str, perm: u32, size: u64, data: &mut dyn Read) -> io::Result<()> {
        if size > u64::from(u32::MAX) {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("{path}: newc holds files below 4 GiB")));
        }
        self.header(path, S_IFREG | perm, 1, size as u32, (0, 0))?;
        let copied = io::copy(&mut data.take(size), &mut self.out)?;
        if copied != size {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("{path}: expected {size} bytes, read {copied}"),
            ));
        }
        self.written += size;
        self.pad()
    }

    /// Writes the trailer and returns the writer.
    pub fn finish(mut self) -> io::Result<W> {
        self.header(TRAILER, 0, 1, 0, (0, 0))?;
        self.out.flush()?;
        Ok(self.out)
    }

    fn header(&mut self, path: &str, mode: u32, nlink: u32, size: u32, rdev: (u32, u32)) -> io::Result<()> {
        let name = path.trim_start_matches('/');
        let ino = if name == TRAILER { 0 } else { self.next_ino };
        self.next_ino += 1;
        let fields = [ino, mode, 0, 0, nlink, 0, size, 0, 0, rdev.0, rdev.1, name.len() as u32 + 1, 0];
        let mut head = String::with_capacity(110 + name.len() + 4);
        head.push_str(MAGIC);
        for f in fields {
            head.push_str(&format!("{f:08x}"));
        }
        head.push_str(name);
        head.push('\0');
        self.out.write_all(head.as_bytes())?;
        self.written += head.len() as u64;
        self.pad()
    }

    fn pad(&mut self) -> io::Result<()> {
        let pad = (4 - self.written % 4) % 4;
        self.out.write_all(&[0u8; 3][..pad as usize])?;
        self.written += pad;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reads back (name, mode, rdev major, data) from a newc archive: what the kernel does.
    fn entries(mut bytes: &[u8]) -> Vec<(String, u32, u32, Vec<u8>)> {
        let mut out = Vec::new();
        let mut offset = 0usize;
        let hex = |s: &[u8]| u32::from_str_radix(std::str::from_utf8(s).expect("ascii"), 16).expect("hex");
        loop {
            assert_eq!(&bytes[..6], MAGIC.as_bytes(), "magic at offset {offset}");
            let field = |i: usize| hex(&bytes[6 + 8 * i..14 + 8 * i]);
            let (mode, size, major, namesize) = (field(1), field(6) as usize, field(9), field(11) as usize);
            let name = std::str::from_utf8(&bytes[110..110 + namesize - 1]).expect("utf8").to_string();
            assert_eq!(bytes[110 + namesize - 1], 0, "name is NUL-terminated");
            let data_at = (110 + namesize).next_multiple_of(4);
            let data = bytes[data_at..data_at + size].to_vec();
            let next = (data_at + size).next_multiple_of(4);
            offset += next;
            bytes = &bytes[next..];
            if name == TRAILER {
                assert!(bytes.is_empty(), "nothing after the trailer");
                return out;
            }
            out.push((name, mode, major, data));
        }
    }

    #[test]
    fn entries_round_trip_with_padding() {
        let mut w = CpioWriter::new(Vec::new());
        w.dir("/dev", 0o755).expect("dir");
        w.char_device("/dev/console", 0o600, 5, 1).expect("dev");
        w.file("/init", 0o755, b"abcde").expect("file");
        w.file("/x/args.json", 0o644, b"{}").expect("file");
        let bytes = w.finish().expect("finish");
        assert_eq!(bytes.len() % 4, 0);
        let got = entries(&bytes);
        assert_eq!(
            got,
            vec![
                ("dev".to_string(), S_IFDIR | 0o755, 0, vec![]),
                ("dev/console".to_string(), S_IFCHR | 0o600, 5, vec![]),
                ("init".to_string(), S_IFREG | 0o755, 0, b"abcde".to_vec()),
                ("x/args.json".to_string(), S_IFREG | 0o644, 0, b"{}".to_vec()),
            ]
        );
    }

    #[test]
    fn the_header_is_the_documented_one() {
        let mut w = CpioWriter::new(Vec::new());
        w.file("a", 0o644, b"z").expect("file");
        let bytes = w.finish().expect("finish");
        let head = std::str::from_utf8(&bytes[..112]).expect("ascii");
        let fields = [
            "00000001", // ino
            "000081a4", // mode: regular, 0644
            "00000000", // uid
            "00000000", // gid
            "00000001", // nlink
            "00000000", // mtime
            "00000001", // filesize
            "00000000", // devmajor
            "00000000", // devminor
            "00000000", // rdevmajor
            "00000000", // rdevminor
            "00000002", // namesize, with the NUL
            "00000000", // check
        ];
        assert_eq!(head, format!("070701{}a\0", fields.concat()));
    }

    #[test]
    fn a_short_reader_is_an_error() {
        let mut w = CpioWriter::new(Vec::new());
        let err = w.file_from("big", 0o644, 10, &mut &b"abc"[..]).expect_err("3 bytes are not 10");
        assert!(err.to_string().contains("expected 10 bytes, read 3"), "{err}");
    }
}

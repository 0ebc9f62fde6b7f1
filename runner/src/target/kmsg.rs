//! Watches the kernel log and taint flags across one case: a WARN, BUG or oops, or a new taint,
//! while a case ran is part of its verdict.

use std::fs::File;
use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;

/// What the kernel said while a case ran.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct KernelLog {
    /// Lines of level warning or worse.
    pub lines: Vec<String>,
    /// Lines that mean the kernel found a bug: WARNING, BUG, Oops, general protection fault.
    pub alarms: Vec<String>,
    /// /proc/sys/kernel/tainted before and after, when it changed.
    pub taint_change: Option<(u64, u64)>,
    /// Why the log could not be watched, if it could not.
    pub unwatched: Option<String>,
}

pub struct Watch {
    kmsg: Result<File, String>,
    taint_before: Option<u64>,
}

const ALARMS: &[&str] = &["WARNING:", "BUG:", "Oops", "general protection fault", "Kernel panic", "kernel BUG"];

impl Watch {
    pub fn start() -> Watch {
        let kmsg = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open("/dev/kmsg")
            .map_err(|e| format!("/dev/kmsg: {e}"))
            .and_then(|f| {
                use std::os::fd::AsRawFd;
                // SAFETY: plain syscall on our own fd; SEEK_END skips the records already there.
                let rc = unsafe { libc::lseek(f.as_raw_fd(), 0, libc::SEEK_END) };
                if rc < 0 { Err(format!("/dev/kmsg seek: {}", std::io::Error::last_os_error())) } else { Ok(f) }
            });
        Watch { kmsg, taint_before: taint() }
    }

    pub fn finish(self) -> KernelLog {
        let mut log = KernelLog::default();
        match self.kmsg {
            Ok(mut f) => {
                let mut buf = vec![0u8; 8192];
                loop {
                    match f.read(&mut buf) {
                        Ok(0) => break,
                        Ok(n) => {
                            let record = String::from_utf8_lossy(&buf[..n]);
                            if let Some((level, text)) = parse_record(&record) {
                                if ALARMS.iter().any(|a| text.contains(a)) {
                                    log.alarms.push(text.to_string());
                                }
                                if level <= 4 {
                                    log.lines.push(text.to_string());
                                }
                            }
                        }
                        // EPIPE: records were overwritten before we read them; keep reading.
                        Err(e) if e.raw_os_error() == Some(libc::EPIPE) => continue,
                        Err(_) => break,
                    }
                }
            }
            Err(e) => log.unwatched = Some(e),
        }
        if let (Some(before), Some(after)) = (self.taint_before, taint())
            && before != after
        {
            log.taint_change = Some((before, after));
        }
        log
    }
}

fn taint() -> Option<u64> {
    std::fs::read_to_string("/proc/sys/kernel/tainted").ok()?.trim().parse().ok()
}

/// `pri,seq,ts,flags;text\n` → (level, text).
fn parse_record(record: &str) -> Option<(u32, &str)> {
    let (head, text) = record.split_once(';')?;
    let pri: u32 = head.split(',').next()?.parse().ok()?;
    Some((pri & 7, text.lines().next().unwrap_or("").trim_end()))
}

#[cfg(test)]
mod tests {
    use super::parse_record;

    #[test]
    fn records_parse() {
        assert_eq!(parse_record("4,123,456,-;WARNING: at foo\n SUBSYSTEM=x\n"), Some((4, "WARNING: at foo")));
        assert_eq!(parse_record("6,1,2,-;hello"), Some((6, "hello")));
        assert_eq!(parse_record("garbage"), None);
    }
}

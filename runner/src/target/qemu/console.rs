//! The guest's serial console (QEMU's stdout): copied to a log file as it comes, its last lines
//! and the lines of kernel trouble kept for crash reports, and a kernel panic signalled at once.

use super::boot::Signal;
use std::collections::VecDeque;
use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

/// Lines kept from the end of the console for a crash report.
const TAIL: usize = 40;
/// Trouble lines kept (an oops with its trace is ~30 lines).
const TROUBLE: usize = 60;
/// What marks the start of kernel trouble that ends a boot; the lines after it, up to the panic,
/// are its trace. (A WARNING is judged inside the guest, from /dev/kmsg, against its case.)
const TROUBLE_STARTS: &[&str] =
    &["Kernel panic", "Oops", "BUG:", "kernel BUG", "general protection fault", "sysrq: Trigger a crash"];
const PANIC: &str = "Kernel panic - not syncing";

#[derive(Default)]
struct State {
    /// The last lines, each with its line number.
    tail: VecDeque<(usize, String)>,
    trouble: Vec<String>,
    /// The line number where the trouble began.
    trouble_at: Option<usize>,
    lines: usize,
}

#[derive(Default)]
pub struct Console {
    state: Mutex<State>,
}

impl Console {
    /// Reads `stdout` to its end on a thread of its own, copying it to `log`.
    pub fn watch(
        stdout: impl Read + Send + 'static,
        mut log: File,
        tx: Sender<Signal>,
    ) -> (Arc<Console>, JoinHandle<()>) {
        let console = Arc::new(Console::default());
        let c = console.clone();
        let handle = std::thread::spawn(move || {
            let mut reader = BufReader::new(stdout);
            let mut raw = Vec::new();
            loop {
                raw.clear();
                match reader.read_until(b'\n', &mut raw) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
                let _ = log.write_all(&raw);
                let line = String::from_utf8_lossy(&raw).trim_end_matches(['\r', '\n']).to_string();
                if line.contains(PANIC) {
                    let _ = tx.send(Signal::Panic(line.clone()));
                }
                c.add(line);
            }
            let _ = log.flush();
            let _ = tx.send(Signal::ConsoleClosed);
        });
        (console, handle)
    }

    fn add(&self, line: String) {
        let Ok(mut s) = self.state.lock() else { return };
        let n = s.lines;
        s.lines += 1;
        if s.trouble_at.is_none() && TROUBLE_STARTS.iter().any(|t| line.contains(t)) {
            s.trouble_at = Some(n);
        }
        if s.trouble_at.is_some() && s.trouble.len() < TROUBLE {
            s.trouble.push(line.clone());
        }
        s.tail.push_back((n, line));
        if s.tail.len() > TAIL {
            s.tail.pop_front();
        }
    }

    /// The oops/panic lines (from the first sign of trouble, bounded), if any.
    pub fn trouble(&self) -> Vec<String> {
        self.state.lock().map(|s| s.trouble.clone()).unwrap_or_default()
    }

    /// The last lines of the console before the trouble began (its lines are in `trouble`).
    pub fn tail(&self) -> Vec<String> {
        let Ok(s) = self.state.lock() else { return Vec::new() };
        let before = s.trouble_at.unwrap_or(usize::MAX);
        s.tail.iter().filter(|(n, _)| *n < before).map(|(_, l)| l.clone()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trouble_and_tail_are_kept_and_a_panic_signalled() {
        let mut text = String::new();
        for i in 0..100 {
            text.push_str(&format!("line {i}\r\n"));
        }
        text.push_str("sysrq: Trigger a crash\r\nKernel panic - not syncing: sysrq triggered crash\r\nCPU: 0\r\n");
        let log = std::env::temp_dir().join(format!("gmemconf-console-test-{}", std::process::id()));
        let (tx, rx) = std::sync::mpsc::channel();
        let (console, handle) =
            Console::watch(std::io::Cursor::new(text.clone().into_bytes()), File::create(&log).expect("log"), tx);
        handle.join().expect("reader ends");
        assert!(matches!(rx.recv(), Ok(Signal::Panic(l)) if l.contains("sysrq triggered crash")));
        assert!(matches!(rx.recv(), Ok(Signal::ConsoleClosed)));
        assert_eq!(console.trouble().len(), 3);
        let tail = console.tail();
        assert_eq!((tail.len(), tail[0].as_str(), tail[36].as_str()), (37, "line 63", "line 99"));
        assert_eq!(std::fs::read_to_string(&log).expect("log"), text);
        let _ = std::fs::remove_file(log);
    }
}

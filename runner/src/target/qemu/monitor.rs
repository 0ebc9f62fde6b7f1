//! QEMU's human monitor, asked where the guest's CPUs are when the guest stops responding: in
//! the kernel (where), idle (HLT), or running one of gmemconf's own nested guest programs.

use crate::exec::world::{CODE_GPA, CODE_SIZE};
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

/// The monitor answers within this, or QEMU itself is stuck (its main loop holds the lock).
const ANSWER: Duration = Duration::from_secs(3);
const PROMPT: &str = "(qemu) ";

/// `info registers -a`, as the monitor printed it.
pub fn cpu_registers(socket: &Path) -> Result<String, String> {
    let mut s = UnixStream::connect(socket).map_err(|e| format!("cannot reach QEMU's monitor: {e}"))?;
    s.set_read_timeout(Some(Duration::from_millis(200))).map_err(|e| e.to_string())?;
    read_until_prompt(&mut s, 1)?;
    s.write_all(b"info registers -a\n").map_err(|e| format!("QEMU's monitor: {e}"))?;
    read_until_prompt(&mut s, 1)
}

/// Reads until the monitor has printed `prompts` more prompts.
fn read_until_prompt(s: &mut UnixStream, prompts: usize) -> Result<String, String> {
    let until = Instant::now() + ANSWER;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while count_prompts(&got) < prompts {
        if Instant::now() >= until {
            return Err(format!("QEMU's monitor did not answer within {} s", ANSWER.as_secs()));
        }
        match s.read(&mut buf) {
            Ok(0) => return Err("QEMU's monitor closed the connection".into()),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
            Err(e) => return Err(format!("QEMU's monitor: {e}")),
        }
    }
    Ok(String::from_utf8_lossy(&got).replace('\r', ""))
}

fn count_prompts(bytes: &[u8]) -> usize {
    bytes.windows(PROMPT.len()).filter(|w| *w == PROMPT.as_bytes()).count()
}

/// The kernel's text symbols, from its System.map, to name where a CPU was.
#[derive(Default)]
pub struct Symbols(Vec<(u64, String)>);

impl Symbols {
    /// The System.map beside the image, or in the build directory gmemconf's cache records for
    /// it, or at the top of the build tree it came from (the image at `arch/x86/boot/bzImage`).
    pub fn for_kernel(bzimage: &Path) -> Symbols {
        let dir = bzimage.parent().unwrap_or(Path::new("."));
        let recorded = std::fs::read_to_string(dir.join("info")).ok().and_then(|info| {
            info.lines().find_map(|l| l.strip_prefix("build: ")).map(|d| Path::new(d.trim()).join("System.map"))
        });
        let candidates = [Some(dir.join("System.map")), recorded, Some(dir.join("../../../System.map"))];
        candidates
            .into_iter()
            .flatten()
            .find_map(|p| std::fs::read_to_string(p).ok())
            .map_or_else(Symbols::default, |text| Symbols::parse(&text))
    }

    pub fn parse(system_map: &str) -> Symbols {
        let mut text: Vec<(u64, String)> = system_map
            .lines()
            .filter_map(|l| {
                let mut w = l.split_whitespace();
                let (addr, kind, name) = (w.next()?, w.next()?, w.next()?);
                matches!(kind, "t" | "T").then(|| Some((u64::from_str_radix(addr, 16).ok()?, name.to_string())))?
            })
            .collect();
        text.sort();
        Symbols(text)
    }

    /// `name+0xoffset` of the symbol at or below `addr`.
    pub fn name(&self, addr: u64) -> Option<String> {
        let i = self.0.partition_point(|(a, _)| *a <= addr).checked_sub(1)?;
        let (start, name) = &self.0[i];
        Some(format!("{name}+{:#x}", addr - start))
    }
}

/// One line per CPU: its instruction pointer, privilege and halt state, and what runs there.
pub fn summarize(registers: &str, symbols: &Symbols) -> Vec<String> {
    let mut out = Vec::new();
    let mut cpu = None;
    for line in registers.lines().map(str::trim) {
        if let Some(rest) = line.strip_prefix("CPU#") {
            cpu = Some(rest.split_whitespace().next().unwrap_or(rest).to_string());
        } else if let (Some(n), Some(ip)) = (&cpu, instruction_pointer(line)) {
            let keep: Vec<&str> =
                line.split_whitespace().filter(|w| w.starts_with("CPL=") || w.starts_with("HLT=")).collect();
            let word = if line.starts_with("RIP=") { "RIP" } else { "EIP" };
            out.push(format!("CPU#{n} {word}={ip:x} {}{}", keep.join(" "), whereabouts(word, ip, symbols)));
            cpu = None;
        }
    }
    out
}

fn instruction_pointer(line: &str) -> Option<u64> {
    let value = line.strip_prefix("RIP=").or_else(|| line.strip_prefix("EIP="))?;
    u64::from_str_radix(value.split_whitespace().next()?, 16).ok()
}

fn whereabouts(word: &str, ip: u64, symbols: &Symbols) -> String {
    if word == "EIP" && (CODE_GPA..CODE_GPA + CODE_SIZE as u64).contains(&ip) {
        " (in a gmemconf guest program: this CPU runs a nested guest)".into()
    } else if ip >= 0xffff_8000_0000_0000 {
        match symbols.name(ip) {
            Some(name) => format!(" (in the kernel: {name})"),
            None => " (in the kernel)".into(),
        }
    } else if word == "RIP" {
        " (in user space)".into()
    } else {
        String::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summarizes_each_cpu() {
        let text = "info registers -a\n\nCPU#0\nRAX=0000000000000000 RBX=0000000000000001\n\
                    RIP=ffffffff81a2b3c4 RFL=00000246 [---Z-P-] CPL=0 II=0 A20=1 SMM=0 HLT=1\n\
                    ES =0000 0000000000000000 ffffffff 00c00000\n\nCPU#1\nEAX=00000000 EBX=00000000\n\
                    EIP=fff0001c EFL=00000002 [-------] CPL=0 II=0 A20=1 SMM=0 HLT=0\n(qemu) ";
        let symbols = Symbols::parse("ffffffff81a2b000 T default_idle\nffffffff81a2b100 D some_data\n");
        assert_eq!(
            summarize(text, &symbols),
            [
                "CPU#0 RIP=ffffffff81a2b3c4 CPL=0 HLT=1 (in the kernel: default_idle+0x3c4)",
                "CPU#1 EIP=fff0001c CPL=0 HLT=0 (in a gmemconf guest program: this CPU runs a nested guest)"
            ]
        );
    }

    #[test]
    fn counts_prompts() {
        assert_eq!(count_prompts(b"QEMU 7.2 monitor\n(qemu) info\nx\n(qemu) "), 2);
    }
}

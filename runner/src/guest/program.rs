//! The guest programs. Each runs in flat 32-bit protected mode from the vCPU's code page, touches
//! guest memory at the given guest-physical addresses, reports on the protocol ports, and halts.

use super::protocol::*;
use crate::exec::board;
use crate::kvm::uapi;
use iced_x86::code_asm::*;

#[derive(Clone, PartialEq, Eq)]
pub enum Program {
    /// Read the byte at `gpa` and report it.
    Read { gpa: u64 },
    /// Write `byte` at `gpa`.
    Write { gpa: u64, byte: u8 },
    /// Write `byte` to every byte of `gpa..gpa+len`.
    Fill { gpa: u64, len: u64, byte: u8 },
    /// Check that every byte of `gpa..gpa+len` is `byte`; report the first that is not.
    Verify { gpa: u64, len: u64, byte: u8 },
    /// Read the first byte of every 4 KiB page of `gpa..gpa+len`, `iterations` times over (0: for
    /// ever), then report the last byte read.
    ReadLoop { gpa: u64, len: u64, iterations: u64 },
    /// Ask the VMM to convert `gpa..gpa+len` to private (or shared) with the KVM_HC_MAP_GPA_RANGE
    /// hypercall (nr 12: gpa, number of 4 KiB pages, attributes), and report what it returned.
    MapGpa { gpa: u64, len: u64, private: bool },
    /// Race checker for bytes: read the first byte of every page of `gpa..gpa+len` over and over
    /// (until the race board says stop, or `iterations` passes) and report the first that is none
    /// of `allowed` (up to 4 values).
    ScanLoop { gpa: u64, len: u64, allowed: Vec<u8>, iterations: u64 },
    /// Race checker: read the tracked pages over and over, judging each against the race board
    /// (exec::board); counts what it saw in its scratch area and reports the first wrong page.
    CheckLoop(BoardPages),
    /// Race writer: write the next generation of each tracked page, publishing start and done on
    /// the board.
    WriteLoop(BoardPages),
}

/// Tracked pages `first..first+pages` of the race board, the first at `gpa`; a board program
/// loops over them until the board says stop, or after `iterations` passes (0: no limit).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BoardPages {
    pub gpa: u64,
    pub first: u64,
    pub pages: u64,
    pub iterations: u64,
}

impl std::fmt::Debug for Program {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Program::Read { gpa } => write!(f, "read {{ gpa: {gpa:#x} }}"),
            Program::Write { gpa, byte } => write!(f, "write {{ gpa: {gpa:#x}, byte: {byte:#04x} }}"),
            Program::Fill { gpa, len, byte } => write!(f, "fill {{ gpa: {gpa:#x}, len: {len:#x}, byte: {byte:#04x} }}"),
            Program::Verify { gpa, len, byte } => {
                write!(f, "verify {{ gpa: {gpa:#x}, len: {len:#x}, byte: {byte:#04x} }}")
            }
            Program::ReadLoop { gpa, len, iterations } => {
                write!(f, "read_loop {{ gpa: {gpa:#x}, len: {len:#x}, iterations: {iterations} }}")
            }
            Program::ScanLoop { gpa, len, allowed, iterations } => write!(
                f,
                "scan_loop {{ gpa: {gpa:#x}, len: {len:#x}, allowed: {allowed:#04x?}, iterations: {iterations} }}"
            ),
            Program::MapGpa { gpa, len, private } => {
                let to = if *private { "private" } else { "shared" };
                write!(f, "map_gpa {{ gpa: {gpa:#x}, len: {len:#x}, to: {to} }}")
            }
            Program::CheckLoop(b) | Program::WriteLoop(b) => {
                let name = if matches!(self, Program::CheckLoop(_)) { "check_loop" } else { "write_loop" };
                write!(
                    f,
                    "{name} {{ gpa: {:#x}, first: {}, pages: {}, iterations: {} }}",
                    b.gpa, b.first, b.pages, b.iterations
                )
            }
        }
    }
}

pub const PROGRAM_NAMES: &[&str] =
    &["read", "write", "fill", "verify", "read_loop", "check_loop", "write_loop", "scan_loop", "map_gpa"];

impl Program {
    /// Whether the program keeps state in the race board (and so in the vCPU's scratch area).
    pub fn uses_board(&self) -> bool {
        matches!(self, Program::CheckLoop(_) | Program::WriteLoop(_) | Program::ScanLoop { .. })
    }

    /// Assembles the program to run at `at` on vCPU `vcpu` (which picks its board scratch area).
    pub fn assemble(&self, at: u64, vcpu: u64) -> Result<Vec<u8>, String> {
        self.emit(at, vcpu).map_err(|e| e.to_string())
    }

    fn emit(&self, at: u64, vcpu: u64) -> Result<Vec<u8>, AsmError> {
        let mut a = CodeAssembler::new(32)?;
        match *self {
            Program::Read { gpa } => {
                a.movzx(eax, byte_ptr(addr32(gpa)?))?;
                a.out(PORT_VALUE as u32, eax)?;
            }
            Program::Write { gpa, byte } => {
                a.mov(byte_ptr(addr32(gpa)?), u32::from(byte))?;
            }
            Program::Fill { gpa, len, byte } => {
                a.mov(edi, addr32(gpa)?)?;
                a.mov(ecx, addr32(len)?)?;
                a.mov(al, u32::from(byte))?;
                a.cld()?;
                a.rep().stosb()?;
            }
            Program::Verify { gpa, len, byte } => {
                // `repe scasb` compares the whole range in one instruction: far fewer exits than a
                // byte loop where the host emulates guest accesses.
                let mut end = a.create_label();
                a.mov(edi, addr32(gpa)?)?;
                a.mov(ecx, addr32(len)?)?;
                a.mov(al, u32::from(byte))?;
                a.cld()?;
                a.test(ecx, ecx)?;
                a.jz(end)?;
                a.repe().scasb()?;
                a.je(end)?;
                a.dec(edi)?;
                a.mov(eax, edi)?;
                a.out(PORT_MISMATCH_GPA as u32, eax)?;
                a.movzx(eax, byte_ptr(edi))?;
                a.out(PORT_MISMATCH_BYTE as u32, al)?;
                a.hlt()?;
                a.set_label(&mut end)?;
            }
            Program::ReadLoop { gpa, len, iterations } => {
                let mut pass = a.create_label();
                let mut page = a.create_label();
                a.mov(edx, addr32(iterations)?)?;
                a.xor(eax, eax)?;
                a.set_label(&mut pass)?;
                a.mov(esi, addr32(gpa)?)?;
                a.mov(ecx, addr32(len.div_ceil(4096))?)?;
                a.set_label(&mut page)?;
                a.movzx(eax, byte_ptr(esi))?;
                a.add(esi, 4096)?;
                a.dec(ecx)?;
                a.jnz(page)?;
                if iterations > 0 {
                    a.dec(edx)?;
                    a.jnz(pass)?;
                } else {
                    a.jmp(pass)?;
                }
                a.out(PORT_VALUE as u32, eax)?;
            }
            Program::MapGpa { gpa, len, private } => {
                let attrs = if private { uapi::KVM_MAP_GPA_RANGE_ENCRYPTED } else { 0 };
                a.mov(eax, uapi::KVM_HC_MAP_GPA_RANGE as u32)?;
                a.mov(ebx, addr32(gpa)?)?;
                a.mov(ecx, addr32(len / 4096)?)?;
                a.mov(edx, attrs as u32)?;
                if host_cpu_is_amd() {
                    a.vmmcall()?;
                } else {
                    a.vmcall()?;
                }
                a.out(PORT_HYPERCALL_RET as u32, eax)?;
            }
            Program::CheckLoop(b) => emit_check_loop(&mut a, b, vcpu)?,
            Program::ScanLoop { gpa, len, ref allowed, iterations } => {
                emit_scan_loop(&mut a, gpa, len, allowed, iterations, vcpu)?
            }
            Program::WriteLoop(b) => emit_write_loop(&mut a, b, vcpu)?,
        }
        a.xor(eax, eax)?;
        a.out(PORT_DONE as u32, al)?;
        a.hlt()?;
        Ok(a.assemble(at)?)
    }
}

/// Board addresses as the guest sees them.
fn at_board(offset: u64) -> Result<u32, AsmError> {
    addr32(board::BOARD_GPA + offset)
}

fn scratch(vcpu: u64, offset: u64) -> Result<u32, AsmError> {
    if vcpu >= board::MAX_GUESTS {
        return Err(AsmError::TooManyGuests(vcpu));
    }
    at_board(board::SCRATCH + vcpu * board::SCRATCH_SIZE + offset)
}

/// Jumps to `done` once the board says stop, or after `iterations` passes (when non-zero).
fn emit_pass_gate(a: &mut CodeAssembler, iterations: u64, vcpu: u64, done: CodeLabel) -> Result<(), AsmError> {
    a.cmp(dword_ptr(at_board(board::STOP)?), 0)?;
    a.jne(done)?;
    if iterations > 0 {
        a.cmp(dword_ptr(scratch(vcpu, board::C_PASSES)?), addr32(iterations)?)?;
        a.jae(done)?;
    }
    Ok(())
}

fn emit_check_loop(a: &mut CodeAssembler, b: BoardPages, vcpu: u64) -> Result<(), AsmError> {
    let (mut pass, mut page, mut hole, mut judge, mut next, mut bad, mut done) = (
        a.create_label(),
        a.create_label(),
        a.create_label(),
        a.create_label(),
        a.create_label(),
        a.create_label(),
        a.create_label(),
    );
    let count = |off| scratch(vcpu, off).map(dword_ptr);
    let last = scratch(vcpu, board::LAST)?;
    a.set_label(&mut pass)?;
    emit_pass_gate(a, b.iterations, vcpu, done)?;
    a.mov(esi, addr32(b.first)?)?;
    a.mov(ebx, addr32(b.gpa)?)?;
    a.set_label(&mut page)?;
    // The epoch first, then the tag, then the gen: the order the writers publish in reverse.
    a.mov(ecx, dword_ptr(esi * 4 + at_board(board::EPOCH)?))?;
    a.mov(edx, dword_ptr(ebx))?;
    a.mov(eax, dword_ptr(ebx + 4))?;
    a.inc(count(board::C_READS)?)?;
    a.test(edx, edx)?;
    a.jz(hole)?;
    a.test(eax, eax)?;
    a.jnz(judge)?;
    a.set_label(&mut hole)?;
    // Hole: count it, and count a page that held a value at the last look as freshly zeroed.
    a.xor(eax, eax)?;
    a.inc(count(board::C_ZEROS)?)?;
    a.cmp(dword_ptr(esi * 4 + last), 0)?;
    a.je(next)?;
    a.inc(count(board::C_FRESH_ZERO)?)?;
    a.jmp(next)?;
    a.set_label(&mut judge)?;
    a.cmp(edx, dword_ptr(esi * 4 + at_board(board::TAGS)?))?;
    a.jne(bad)?;
    a.cmp(eax, ecx)?;
    a.jb(bad)?;
    a.cmp(dword_ptr(esi * 4 + last), 0)?;
    a.jne(next)?;
    a.inc(count(board::C_REFILL)?)?;
    a.set_label(&mut next)?;
    a.mov(dword_ptr(esi * 4 + last), eax)?;
    a.add(ebx, 4096)?;
    a.inc(esi)?;
    a.cmp(esi, addr32(b.first + b.pages)?)?;
    a.jb(page)?;
    a.inc(count(board::C_PASSES)?)?;
    a.jmp(pass)?;
    a.set_label(&mut bad)?;
    a.mov(dword_ptr(scratch(vcpu, 0)? + board::V_PAGE as u32), esi)?;
    a.mov(dword_ptr(scratch(vcpu, 0)? + board::V_TAG as u32), edx)?;
    a.mov(dword_ptr(scratch(vcpu, 0)? + board::V_GEN as u32), eax)?;
    a.mov(dword_ptr(scratch(vcpu, 0)? + board::V_EPOCH as u32), ecx)?;
    a.out(PORT_VIOLATION as u32, al)?;
    a.hlt()?;
    a.set_label(&mut done)?;
    Ok(())
}

fn emit_scan_loop(
    a: &mut CodeAssembler,
    gpa: u64,
    len: u64,
    allowed: &[u8],
    iterations: u64,
    vcpu: u64,
) -> Result<(), AsmError> {
    let (mut pass, mut page, mut next, mut bad, mut done) =
        (a.create_label(), a.create_label(), a.create_label(), a.create_label(), a.create_label());
    a.set_label(&mut pass)?;
    emit_pass_gate(a, iterations, vcpu, done)?;
    a.mov(ebx, addr32(gpa)?)?;
    a.mov(ecx, addr32(len.div_ceil(4096))?)?;
    a.set_label(&mut page)?;
    a.movzx(eax, byte_ptr(ebx))?;
    a.inc(dword_ptr(scratch(vcpu, board::C_READS)?))?;
    let mut hits: Vec<CodeLabel> = allowed.iter().map(|_| a.create_label()).collect();
    for (value, hit) in allowed.iter().zip(&hits) {
        a.cmp(al, u32::from(*value))?;
        a.je(*hit)?;
    }
    a.jmp(bad)?;
    for (i, hit) in hits.iter_mut().enumerate() {
        a.set_label(hit)?;
        a.inc(dword_ptr(scratch(vcpu, board::C_SEEN + 4 * i as u64)?))?;
        a.jmp(next)?;
    }
    a.set_label(&mut next)?;
    a.add(ebx, 4096)?;
    a.dec(ecx)?;
    a.jnz(page)?;
    a.inc(dword_ptr(scratch(vcpu, board::C_PASSES)?))?;
    a.jmp(pass)?;
    a.set_label(&mut bad)?;
    // What was found goes where check_loop leaves a bad page: the gpa as the page, the byte as gen.
    a.mov(dword_ptr(scratch(vcpu, 0)? + board::V_PAGE as u32), ebx)?;
    a.mov(dword_ptr(scratch(vcpu, 0)? + board::V_TAG as u32), 0u32)?;
    a.mov(dword_ptr(scratch(vcpu, 0)? + board::V_GEN as u32), eax)?;
    a.out(PORT_VIOLATION as u32, al)?;
    a.hlt()?;
    a.set_label(&mut done)?;
    Ok(())
}

fn emit_write_loop(a: &mut CodeAssembler, b: BoardPages, vcpu: u64) -> Result<(), AsmError> {
    let (mut pass, mut page, mut done) = (a.create_label(), a.create_label(), a.create_label());
    a.set_label(&mut pass)?;
    emit_pass_gate(a, b.iterations, vcpu, done)?;
    a.mov(esi, addr32(b.first)?)?;
    a.mov(ebx, addr32(b.gpa)?)?;
    a.set_label(&mut page)?;
    // start = done + 1; the gen, then the tag; done = start.
    a.mov(eax, dword_ptr(esi * 4 + at_board(board::DONE)?))?;
    a.inc(eax)?;
    a.mov(dword_ptr(esi * 4 + at_board(board::START)?), eax)?;
    a.mov(dword_ptr(ebx + 4), eax)?;
    a.mov(edx, dword_ptr(esi * 4 + at_board(board::TAGS)?))?;
    a.mov(dword_ptr(ebx), edx)?;
    a.mov(dword_ptr(esi * 4 + at_board(board::DONE)?), eax)?;
    a.inc(dword_ptr(scratch(vcpu, board::C_WRITES)?))?;
    a.add(ebx, 4096)?;
    a.inc(esi)?;
    a.cmp(esi, addr32(b.first + b.pages)?)?;
    a.jb(page)?;
    a.inc(dword_ptr(scratch(vcpu, board::C_PASSES)?))?;
    a.jmp(pass)?;
    a.set_label(&mut done)?;
    Ok(())
}

#[derive(Debug)]
enum AsmError {
    Iced(iced_x86::IcedError),
    Above4G(u64),
    TooManyGuests(u64),
}

impl From<iced_x86::IcedError> for AsmError {
    fn from(e: iced_x86::IcedError) -> Self {
        AsmError::Iced(e)
    }
}

impl std::fmt::Display for AsmError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AsmError::Iced(e) => write!(f, "{e}"),
            AsmError::Above4G(v) => write!(f, "{v:#x} is above 4 GiB: guest programs run in 32-bit mode"),
            AsmError::TooManyGuests(id) => write!(
                f,
                "vCPU {id} has no scratch area on the race board: board programs run on vCPU ids below {}",
                board::MAX_GUESTS
            ),
        }
    }
}

/// KVM takes the hypercall instruction of the vendor it runs on (VMMCALL on AMD and Hygon, VMCALL
/// on Intel); the other one traps and is patched only while KVM_X86_QUIRK_FIX_HYPERCALL_INSN is on.
fn host_cpu_is_amd() -> bool {
    let leaf0 = std::arch::x86_64::__cpuid(0);
    // "AuthenticAMD" and "HygonGenuine": EBX holds the first four characters.
    leaf0.ebx == u32::from_le_bytes(*b"Auth") || leaf0.ebx == u32::from_le_bytes(*b"Hygo")
}

fn addr32(v: u64) -> Result<u32, AsmError> {
    u32::try_from(v).map_err(|_| AsmError::Above4G(v))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_program_assembles_and_ends_in_hlt() {
        for p in [
            Program::Read { gpa: 0x1000 },
            Program::Write { gpa: 0x1000, byte: 1 },
            Program::Fill { gpa: 0x1000, len: 4096, byte: 0xaa },
            Program::Verify { gpa: 0x1000, len: 4096, byte: 0xaa },
            Program::ReadLoop { gpa: 0x1000, len: 8192, iterations: 3 },
            Program::MapGpa { gpa: 0x1000, len: 8192, private: true },
            Program::CheckLoop(BoardPages { gpa: 0x1000, first: 0, pages: 16, iterations: 0 }),
            Program::WriteLoop(BoardPages { gpa: 0x1000, first: 16, pages: 16, iterations: 5 }),
        ] {
            let code = p.assemble(0xfff0_0000, 1).expect("assembles");
            assert_eq!(code.last(), Some(&0xf4), "{p:?} ends in hlt");
        }
        assert!(Program::Read { gpa: 1 << 32 }.assemble(0, 0).is_err());
        assert!(Program::CheckLoop(BoardPages { gpa: 0, first: 0, pages: 1, iterations: 0 }).assemble(0, 99).is_err());
    }
}

//! The ports through which guest programs report to the host.

/// A value the program read (byte or dword), in program order.
pub const PORT_VALUE: u16 = 0x10;
/// The program ran to its end; it halts right after.
pub const PORT_DONE: u16 = 0x11;
/// `verify` found a byte that differs: first its guest-physical address...
pub const PORT_MISMATCH_GPA: u16 = 0x12;
/// ...then the byte it found there.
pub const PORT_MISMATCH_BYTE: u16 = 0x13;
/// `check_loop` found a page that breaks the race board's rules; what it found is in its scratch
/// area of the board (see exec::board), and it halts right after.
pub const PORT_VIOLATION: u16 = 0x14;
/// `map_gpa`: the value its hypercall returned (RAX; 32 bits in the guest's 32-bit mode).
pub const PORT_HYPERCALL_RET: u16 = 0x15;

//! The steps a case is made of: one operation each, with typed arguments.

use super::expect::{FieldKind, FieldSpec, FieldVal};
use super::names::*;
use super::node::Loc;
use crate::guest::Program;
use std::sync::LazyLock;

/// A file descriptor named by a step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FdRef {
    /// An object made by an earlier step (`as:`), or `kvm` for /dev/kvm.
    Named(String),
    /// A descriptor number that is certainly closed.
    Closed,
    /// A literal number (e.g. -1).
    Raw(i32),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Userspace {
    /// userspace_addr = 0.
    Zero,
    /// A mapping made by an `mmap` step, plus an offset into it.
    Map { name: String, offset: u64 },
    /// A literal address.
    Addr(u64),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RegionApi {
    V1,
    V2,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpliceDir {
    /// From the file into a pipe.
    Out,
    /// From a filled pipe into the file.
    In,
}

/// How many times a race thread runs its steps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Repeat {
    Times(u64),
    /// Over and over until the race's duration is up.
    UntilDeadline,
    /// Until every other thread that ends the race has finished (or the duration is up).
    WhileOthersRun,
}

impl Repeat {
    /// Whether the race waits for this thread (a `while_others_run` thread only keeps pace).
    pub fn ends_race(self) -> bool {
        !matches!(self, Repeat::WhileOthersRun)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct RaceThread {
    pub name: String,
    pub repeat: Repeat,
    pub steps: Vec<Step>,
}

/// Threads of steps run at once, bounded by repeats and a duration (see exec::race).
#[derive(Debug, Clone, PartialEq)]
pub struct Race {
    pub threads: Vec<RaceThread>,
    pub duration: std::time::Duration,
    /// Fixes the threads' random choices (pages, pauses); random and printed when not given.
    pub seed: Option<u64>,
}

/// Steps run in a forked child of the case process (see exec::ops_proc).
#[derive(Debug, Clone, PartialEq)]
pub struct ForkSteps {
    pub steps: Vec<Step>,
    /// Objects (fds or VMs) the child sends back to the parent over SCM_RIGHTS before it exits;
    /// the parent then holds them under these names.
    pub give: Vec<String>,
}

/// Steps run `times` times over in the case process.
#[derive(Debug, Clone, PartialEq)]
pub struct RepeatSteps {
    pub times: u64,
    pub steps: Vec<Step>,
}

/// Tracked pages `first..first+pages` of the race board (see exec::board): page `first + i` is at
/// offset `offset + i * 4K` of the mapping, which maps the guest_memfd from its start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tracked {
    pub map: String,
    pub offset: u64,
    pub first: u64,
    pub pages: u64,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Op {
    Vm {
        name: String,
        vm_type: u64,
    },
    Vcpu {
        name: String,
        vm: String,
        id: u64,
    },
    CheckExtension {
        on: String,
        cap: u32,
    },
    Gmem {
        name: String,
        vm: String,
        size: u64,
        flags: u64,
        reserved: [u64; 6],
    },
    Memslot {
        vm: String,
        api: RegionApi,
        slot: u32,
        flags: u32,
        gpa: u64,
        size: u64,
        userspace: Userspace,
        gmem: Option<FdRef>,
        offset: u64,
    },
    Open {
        name: String,
        path: String,
        write: bool,
    },
    Memfd {
        name: String,
        size: u64,
    },
    Tmpfile {
        name: String,
        size: u64,
    },
    Close {
        fd: FdRef,
    },
    Read {
        fd: FdRef,
        len: u64,
    },
    Write {
        fd: FdRef,
        len: u64,
        byte: u8,
    },
    Pread {
        fd: FdRef,
        len: u64,
        offset: i64,
    },
    Pwrite {
        fd: FdRef,
        len: u64,
        offset: i64,
        byte: u8,
    },
    Lseek {
        fd: FdRef,
        offset: i64,
        whence: u64,
    },
    Ftruncate {
        fd: FdRef,
        size: i64,
    },
    Fchmod {
        fd: FdRef,
        mode: u32,
    },
    Fsync {
        fd: FdRef,
    },
    Fdatasync {
        fd: FdRef,
    },
    AddSeals {
        fd: FdRef,
        seals: u64,
    },
    GetSeals {
        fd: FdRef,
    },
    Ioctl {
        fd: FdRef,
        request: u64,
        arg: u64,
    },
    /// `offset` None passes a NULL offset pointer (use and move the file position).
    Splice {
        fd: FdRef,
        dir: SpliceDir,
        len: u64,
        offset: Option<i64>,
    },
    CopyFileRange {
        from: FdRef,
        to: FdRef,
        len: u64,
        offset_in: Option<i64>,
        offset_out: Option<i64>,
        flags: u32,
    },
    Sendfile {
        from: FdRef,
        to: FdRef,
        len: u64,
        offset: Option<i64>,
    },
    Fcntl {
        fd: FdRef,
        cmd: u64,
        arg: u64,
    },
    Fchown {
        fd: FdRef,
        uid: u32,
        gid: u32,
    },
    Futimens {
        fd: FdRef,
    },
    Fallocate {
        fd: FdRef,
        mode: u64,
        offset: i64,
        len: i64,
    },
    Fstat {
        fd: FdRef,
    },
    Mmap {
        name: String,
        fd: Option<FdRef>,
        len: u64,
        offset: i64,
        prot: u64,
        flags: u64,
    },
    Munmap {
        map: String,
    },
    Mprotect {
        map: String,
        offset: u64,
        len: Option<u64>,
        prot: u64,
    },
    Madvise {
        map: String,
        offset: u64,
        len: Option<u64>,
        advice: u64,
    },
    MemWrite {
        map: String,
        offset: u64,
        len: u64,
        byte: u8,
    },
    MemRead {
        map: String,
        offset: u64,
        len: u64,
    },
    Guest {
        vcpu: String,
        program: Program,
    },
    SetAttributes {
        vm: String,
        gpa: u64,
        size: u64,
        attributes: u64,
        flags: u64,
    },
    PreFault {
        vcpu: String,
        gpa: u64,
        size: u64,
        flags: u64,
    },
    EnableCap {
        vm: String,
        cap: u32,
        flags: u32,
        args: [u64; 4],
    },
    Race(Box<Race>),
    /// Wait (in a race thread: let the others get going first).
    Sleep {
        duration: std::time::Duration,
    },
    /// Punch a random tracked page, write its next generation through the mapping, publish it.
    PunchCycle {
        gmem: FdRef,
        pages: Tracked,
    },
    /// Read a random tracked page through the mapping and judge it against the board.
    HostCheck {
        pages: Tracked,
    },
    /// Punch a random tracked page that a guest `write_loop` writes, and check through the mapping
    /// that every guest write begun after the previous punch of it landed in the file.
    PunchVerify {
        gmem: FdRef,
        pages: Tracked,
    },
    Fork(Box<ForkSteps>),
    Repeat(Box<RepeatSteps>),
    /// Record this process's and the system's memory use under a name.
    MemSnapshot {
        name: String,
    },
    /// How much memory use grew since a snapshot.
    MemGrowth {
        since: String,
    },
    /// Test-only: writes `key` to /proc/sysrq-trigger (`c` panics the kernel). Refused outside the
    /// qemu target's guest, whose kernel is disposable.
    Sysrq {
        key: char,
    },
}

/// Every step name, for "unknown step" help.
pub const STEP_NAMES: &[&str] = &[
    "vm",
    "vcpu",
    "check_extension",
    "gmem",
    "memslot",
    "delete_memslot",
    "open",
    "memfd",
    "tmpfile",
    "close",
    "read",
    "write",
    "pread",
    "pwrite",
    "lseek",
    "ftruncate",
    "fchmod",
    "fsync",
    "fdatasync",
    "add_seals",
    "get_seals",
    "ioctl",
    "splice",
    "copy_file_range",
    "sendfile",
    "fcntl",
    "fchown",
    "futimens",
    "fallocate",
    "fstat",
    "mmap",
    "munmap",
    "mprotect",
    "madvise",
    "mem_write",
    "mem_read",
    "guest",
    "set_attributes",
    "pre_fault",
    "enable_cap",
    "race",
    "sleep",
    "punch_cycle",
    "host_check",
    "punch_verify",
    "fork",
    "repeat",
    "mem_snapshot",
    "mem_growth",
    "sysrq",
];

/// Keys a step may carry beside its operation.
pub const STEP_KEYS: &[&str] = &["expect", "ref"];

impl Op {
    /// The name the step was written with.
    pub fn name(&self) -> &'static str {
        match self {
            Op::Vm { .. } => "vm",
            Op::Vcpu { .. } => "vcpu",
            Op::CheckExtension { .. } => "check_extension",
            Op::Gmem { .. } => "gmem",
            Op::Memslot { size: 0, .. } => "delete_memslot",
            Op::Memslot { .. } => "memslot",
            Op::Open { .. } => "open",
            Op::Memfd { .. } => "memfd",
            Op::Tmpfile { .. } => "tmpfile",
            Op::Close { .. } => "close",
            Op::Read { .. } => "read",
            Op::Write { .. } => "write",
            Op::Pread { .. } => "pread",
            Op::Pwrite { .. } => "pwrite",
            Op::Lseek { .. } => "lseek",
            Op::Ftruncate { .. } => "ftruncate",
            Op::Fchmod { .. } => "fchmod",
            Op::Fsync { .. } => "fsync",
            Op::Fdatasync { .. } => "fdatasync",
            Op::AddSeals { .. } => "add_seals",
            Op::GetSeals { .. } => "get_seals",
            Op::Ioctl { .. } => "ioctl",
            Op::Splice { .. } => "splice",
            Op::CopyFileRange { .. } => "copy_file_range",
            Op::Sendfile { .. } => "sendfile",
            Op::Fcntl { .. } => "fcntl",
            Op::Fchown { .. } => "fchown",
            Op::Futimens { .. } => "futimens",
            Op::Fallocate { .. } => "fallocate",
            Op::Fstat { .. } => "fstat",
            Op::Mmap { .. } => "mmap",
            Op::Munmap { .. } => "munmap",
            Op::Mprotect { .. } => "mprotect",
            Op::Madvise { .. } => "madvise",
            Op::MemWrite { .. } => "mem_write",
            Op::MemRead { .. } => "mem_read",
            Op::Guest { .. } => "guest",
            Op::SetAttributes { .. } => "set_attributes",
            Op::PreFault { .. } => "pre_fault",
            Op::EnableCap { .. } => "enable_cap",
            Op::Race(_) => "race",
            Op::Sleep { .. } => "sleep",
            Op::PunchCycle { .. } => "punch_cycle",
            Op::HostCheck { .. } => "host_check",
            Op::PunchVerify { .. } => "punch_verify",
            Op::Fork(_) => "fork",
            Op::Repeat(_) => "repeat",
            Op::MemSnapshot { .. } => "mem_snapshot",
            Op::MemGrowth { .. } => "mem_growth",
            Op::Sysrq { .. } => "sysrq",
        }
    }

    /// The object name this step defines, if any.
    pub fn defines(&self) -> Option<&str> {
        match self {
            Op::Vm { name, .. }
            | Op::Vcpu { name, .. }
            | Op::Gmem { name, .. }
            | Op::Open { name, .. }
            | Op::Memfd { name, .. }
            | Op::Tmpfile { name, .. }
            | Op::Mmap { name, .. }
            | Op::MemSnapshot { name } => Some(name),
            _ => None,
        }
    }

    /// Every object name this step leaves defined in the case process: what it makes, what a
    /// fork's child gives back, what a repeat's steps make.
    pub fn defines_all(&self) -> Vec<&str> {
        match self {
            Op::Fork(f) => f.give.iter().map(String::as_str).collect(),
            Op::Repeat(r) => r.steps.iter().flat_map(|s| s.op.defines_all()).collect(),
            other => other.defines().into_iter().collect(),
        }
    }

    /// The steps this step runs inside it (a fork's or a repeat's).
    pub fn nested_steps(&self) -> &[Step] {
        match self {
            Op::Fork(f) => &f.steps,
            Op::Repeat(r) => &r.steps,
            _ => &[],
        }
    }

    /// Object names this step uses.
    pub fn uses(&self) -> Vec<&str> {
        fn fd(f: &FdRef) -> Option<&str> {
            match f {
                FdRef::Named(n) => Some(n.as_str()),
                _ => None,
            }
        }
        match self {
            Op::Vcpu { vm, .. } | Op::Gmem { vm, .. } | Op::SetAttributes { vm, .. } | Op::EnableCap { vm, .. } => {
                vec![vm]
            }
            Op::CheckExtension { on, .. } => vec![on],
            Op::Memslot { vm, gmem, userspace, .. } => {
                let mut names = vec![vm.as_str()];
                names.extend(gmem.as_ref().and_then(fd));
                if let Userspace::Map { name, .. } = userspace {
                    names.push(name);
                }
                names
            }
            Op::Close { fd: f }
            | Op::Read { fd: f, .. }
            | Op::Write { fd: f, .. }
            | Op::Pread { fd: f, .. }
            | Op::Pwrite { fd: f, .. }
            | Op::Lseek { fd: f, .. }
            | Op::Ftruncate { fd: f, .. }
            | Op::Fchmod { fd: f, .. }
            | Op::Fsync { fd: f }
            | Op::Fdatasync { fd: f }
            | Op::AddSeals { fd: f, .. }
            | Op::GetSeals { fd: f }
            | Op::Ioctl { fd: f, .. }
            | Op::Splice { fd: f, .. }
            | Op::Fallocate { fd: f, .. }
            | Op::Fstat { fd: f }
            | Op::Fcntl { fd: f, .. }
            | Op::Fchown { fd: f, .. }
            | Op::Futimens { fd: f }
            | Op::Mmap { fd: Some(f), .. } => fd(f).into_iter().collect(),
            Op::CopyFileRange { from, to, .. } | Op::Sendfile { from, to, .. } => {
                fd(from).into_iter().chain(fd(to)).collect()
            }
            Op::Munmap { map }
            | Op::Mprotect { map, .. }
            | Op::Madvise { map, .. }
            | Op::MemWrite { map, .. }
            | Op::MemRead { map, .. } => vec![map],
            Op::Guest { vcpu, .. } | Op::PreFault { vcpu, .. } => vec![vcpu],
            Op::Race(race) => race.threads.iter().flat_map(|t| t.steps.iter().flat_map(|s| s.op.uses())).collect(),
            Op::PunchCycle { gmem, pages } | Op::PunchVerify { gmem, pages } => {
                fd(gmem).into_iter().chain([pages.map.as_str()]).collect()
            }
            Op::HostCheck { pages } => vec![&pages.map],
            Op::Fork(_) | Op::Repeat(_) => {
                let mut made: Vec<&str> = Vec::new();
                let mut used = Vec::new();
                for step in self.nested_steps() {
                    used.extend(step.op.uses().into_iter().filter(|u| !made.contains(u)));
                    made.extend(step.op.defines_all());
                }
                if let Op::Fork(f) = self {
                    used.extend(f.give.iter().map(String::as_str).filter(|g| !made.contains(g)));
                }
                used
            }
            Op::MemGrowth { since } => vec![since],
            _ => Vec::new(),
        }
    }

    /// The fields this step's observation has, which `expect:` may check.
    pub fn fields(&self) -> &'static [FieldSpec] {
        match self {
            Op::Fstat { .. } => FSTAT_FIELDS,
            Op::GetSeals { .. } => SEALS_FIELDS,
            Op::MemRead { .. } => MEM_READ_FIELDS,
            Op::Guest { .. } => GUEST_FIELDS,
            Op::PreFault { .. } => PRE_FAULT_FIELDS,
            Op::PunchCycle { .. } | Op::HostCheck { .. } | Op::PunchVerify { .. } => BOARD_FIELDS,
            Op::Fork(_) | Op::Repeat(_) | Op::MemSnapshot { .. } => &[],
            Op::MemGrowth { .. } => MEM_GROWTH_FIELDS,
            _ => VALUE_FIELDS,
        }
    }

    /// Fields that success of this step means, checked unless the expectation names one of them:
    /// a guest program that succeeds ran to its end and halted.
    pub fn implied_fields(&self) -> &'static [(&'static str, FieldVal)] {
        static GUEST: LazyLock<Vec<(&'static str, FieldVal)>> =
            LazyLock::new(|| vec![("exit", FieldVal::Word("hlt".into())), ("completed", FieldVal::Bool(true))]);
        match self {
            Op::Guest { .. } => &GUEST,
            _ => &[],
        }
    }

    /// Fields checked whenever this step succeeds, unless the expectation names that very field:
    /// a race board program that found a wrong page has failed, however it exited.
    pub fn invariant_fields(&self) -> &'static [(&'static str, FieldVal)] {
        static NO_VIOLATION: LazyLock<Vec<(&'static str, FieldVal)>> =
            LazyLock::new(|| vec![("violation", FieldVal::Word("none".into()))]);
        static CONSISTENT_REMAINDER: LazyLock<Vec<(&'static str, FieldVal)>> =
            LazyLock::new(|| vec![("remainder_consistent", FieldVal::Bool(true))]);
        match self {
            Op::Guest { .. } | Op::PunchCycle { .. } | Op::HostCheck { .. } | Op::PunchVerify { .. } => &NO_VIOLATION,
            Op::PreFault { .. } => &CONSISTENT_REMAINDER,
            _ => &[],
        }
    }

    /// Requirements implied by this step succeeding: a VM of a type, guest_memfd and its flags,
    /// the attributes it sets, pre-faulting, hypercall exits. The loader judges the per-VM ones on
    /// the type of the VM the step acts on.
    pub fn implied_requirements(&self) -> Vec<super::Requirement> {
        use super::Requirement;
        use crate::kvm::uapi::{KVM_CAP_EXIT_HYPERCALL, KVM_MEMORY_ATTRIBUTE_PRIVATE};
        match self {
            Op::Vm { vm_type, .. } if *vm_type != 0 => vec![Requirement::VmType(*vm_type)],
            Op::Gmem { flags, .. } => std::iter::once(Requirement::GuestMemfd)
                .chain(
                    GMEM_FLAGS
                        .bits
                        .iter()
                        .filter(|(_, bit)| flags & bit != 0)
                        .map(|(_, bit)| Requirement::GmemFlags(*bit)),
                )
                .collect(),
            // Clearing every attribute is a valid request wherever the ioctl exists, even on a VM
            // that supports none: only setting one needs it supported.
            Op::SetAttributes { attributes, .. } if attributes & KVM_MEMORY_ATTRIBUTE_PRIVATE != 0 => {
                vec![Requirement::PrivateAttribute]
            }
            Op::SetAttributes { attributes, .. } if *attributes != 0 => vec![Requirement::MemoryAttributes],
            Op::PreFault { .. } => vec![Requirement::PreFault],
            Op::EnableCap { cap, .. } if *cap == KVM_CAP_EXIT_HYPERCALL => vec![Requirement::ExitHypercall],
            Op::Race(race) => race
                .threads
                .iter()
                .flat_map(|t| t.steps.iter().filter(|s| s.expect.is_unconditional_ok()))
                .flat_map(|s| s.op.implied_requirements())
                .collect(),
            Op::Fork(_) | Op::Repeat(_) => self
                .nested_steps()
                .iter()
                .filter(|s| s.expect.is_unconditional_ok())
                .flat_map(|s| s.op.implied_requirements())
                .collect(),
            _ => Vec::new(),
        }
    }
}

static VALUE_FIELDS: &[FieldSpec] = &[FieldSpec { name: "value", kind: FieldKind::Int }];
static FSTAT_FIELDS: &[FieldSpec] = &[
    FieldSpec { name: "value", kind: FieldKind::Int },
    FieldSpec { name: "size", kind: FieldKind::Int },
    FieldSpec { name: "blocks", kind: FieldKind::Int },
    FieldSpec { name: "blksize", kind: FieldKind::Int },
    FieldSpec { name: "nlink", kind: FieldKind::Int },
    FieldSpec { name: "perm", kind: FieldKind::Mode },
    FieldSpec { name: "type", kind: FieldKind::Word(FILE_TYPES) },
    FieldSpec { name: "ino", kind: FieldKind::Int },
];
static SEALS_FIELDS: &[FieldSpec] =
    &[FieldSpec { name: "value", kind: FieldKind::Int }, FieldSpec { name: "seals", kind: FieldKind::Flags(&SEALS) }];
static PRE_FAULT_FIELDS: &[FieldSpec] = &[
    FieldSpec { name: "value", kind: FieldKind::Int },
    FieldSpec { name: "gpa", kind: FieldKind::Int },
    FieldSpec { name: "size", kind: FieldKind::Int },
    FieldSpec { name: "remainder_consistent", kind: FieldKind::Bool },
];
static BOARD_FIELDS: &[FieldSpec] = &[FieldSpec { name: "violation", kind: FieldKind::Word(&["none", "found"]) }];
/// What `mem_growth` measures: each is now minus the snapshot (negative when use fell).
pub static MEM_GROWTH_FIELDS: &[FieldSpec] = &[
    FieldSpec { name: "rss", kind: FieldKind::Bytes },
    FieldSpec { name: "fds", kind: FieldKind::Int },
    FieldSpec { name: "mem_used", kind: FieldKind::Bytes },
    FieldSpec { name: "unevictable", kind: FieldKind::Bytes },
    FieldSpec { name: "shmem", kind: FieldKind::Bytes },
    FieldSpec { name: "sunreclaim", kind: FieldKind::Bytes },
    FieldSpec { name: "vmalloc", kind: FieldKind::Bytes },
    FieldSpec { name: "page_tables", kind: FieldKind::Bytes },
    FieldSpec { name: "percpu", kind: FieldKind::Bytes },
];
static MEM_READ_FIELDS: &[FieldSpec] = &[FieldSpec { name: "bytes", kind: FieldKind::Byte }];
static GUEST_FIELDS: &[FieldSpec] = &[
    FieldSpec { name: "exit", kind: FieldKind::Word(crate::kvm::vcpu::EXIT_WORDS) },
    FieldSpec { name: "completed", kind: FieldKind::Bool },
    FieldSpec { name: "read", kind: FieldKind::Byte },
    FieldSpec { name: "gpa", kind: FieldKind::Int },
    FieldSpec { name: "size", kind: FieldKind::Int },
    FieldSpec { name: "flags", kind: FieldKind::Flags(&MEMORY_FAULT_FLAGS) },
    FieldSpec { name: "port", kind: FieldKind::Int },
    FieldSpec { name: "ret", kind: FieldKind::Int },
    FieldSpec { name: "hypercalls", kind: FieldKind::Int },
    FieldSpec { name: "violation", kind: FieldKind::Word(&["none", "found"]) },
];

pub const FILE_TYPES: &[&str] = &["regular", "directory", "char", "block", "fifo", "socket", "symlink"];

/// One step of a case.
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    pub op: Op,
    pub expect: super::expect::Expect,
    pub loc: Loc,
    /// The step as written, compact, for messages.
    pub text: String,
    pub reference: Option<String>,
    /// The VM types its `if:` conditions are judged on: the type of the VM it acts on (directly or
    /// through an object made from that VM), else every type the case creates. Set by the loader.
    pub vm_types: Vec<u64>,
}

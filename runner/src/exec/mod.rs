//! Running cases: the child process per case, the step interpreter, and judging observations.

pub mod board;
pub mod child;
pub mod hang;
pub mod interp;
pub mod observe;
pub mod ops_attr;
pub mod ops_file;
pub mod ops_kvm;
pub mod ops_mem;
pub mod ops_memstat;
pub mod ops_proc;
pub mod ops_race;
pub mod ops_sysrq;
pub mod protocol;
pub mod race;
pub mod supervise;
pub mod world;

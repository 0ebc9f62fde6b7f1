//! Running cases: the child process per case, the step interpreter, and judging observations.

pub mod child;
pub mod interp;
pub mod observe;
pub mod ops_attr;
pub mod ops_file;
pub mod ops_kvm;
pub mod ops_mem;
pub mod protocol;
pub mod supervise;
pub mod world;

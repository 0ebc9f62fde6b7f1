//! Safe wrappers over the KVM uAPI that guest_memfd touches. Raw forms (`*_raw`) return the exact
//! errno; `try_*` forms name the ioctl in their error.

pub mod gmem;
pub mod ioctl;
pub mod stats;
pub mod system;
pub mod uapi;
pub mod vcpu;
pub mod vm;

pub use gmem::GuestMemfd;
pub use ioctl::KvmError;
pub use system::Kvm;
pub use vcpu::{GuestExit, Vcpu};
pub use vm::Vm;

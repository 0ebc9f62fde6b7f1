//! The qemu target: boot the kernel under test in QEMU with gmemconf itself as /init, run the
//! host flow inside on the guest kernel's /dev/kvm, and read the results back.

pub mod board;
pub mod boot;
pub mod command;
pub mod console;
pub mod cpio;
pub mod elf;
pub mod exec;
pub mod guest;
pub mod host;
pub mod initramfs;
pub mod kernel;
pub mod manager;
pub mod monitor;
pub mod pid1;
pub mod port;
pub mod protocol;
pub mod tsc;

pub use command::AccelChoice;
pub use host::{QemuOptions, run};
pub use kernel::kernel_image;

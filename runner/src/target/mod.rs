//! Targets gmemconf runs cases on, and what it watches there.

pub mod kmsg;
pub mod qemu;

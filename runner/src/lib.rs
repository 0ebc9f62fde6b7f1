//! gmemconf: a conformance suite and test runner for KVM guest private memory (guest_memfd).

pub mod bench;
pub mod cli;
pub mod exec;
pub mod exit;
pub mod guest;
pub mod image;
pub mod kvm;
pub mod probe;
pub mod report;
pub mod run;
pub mod suite;
pub mod target;

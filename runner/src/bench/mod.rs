//! `gmemconf bench`: what gmemconf itself costs, next to the kernel work it drives.

mod direct;
mod interp;
mod race;
mod report;
mod suites;

pub use report::{Bench, run_all};

//! Exit statuses of `gmemconf`.

/// Every case passed, was skipped, or failed as its baseline expects.
pub const OK: u8 = 0;
/// A case failed, timed out, crashed, could not be carried out, or passed against its baseline.
pub const CASE_FAILED: u8 = 1;
/// Bad command line, or a suite or baseline file with an error.
pub const USAGE: u8 = 2;
/// The target broke: no usable /dev/kvm, or (qemu target) the kernel under test panicked.
pub const TARGET_BROKEN: u8 = 3;

//! The process exit codes, all in one place (documented in docs/exit-codes.md).

/// Every VM succeeded (or a dry run / dump completed).
pub const SUCCESS: u8 = 0;
/// The VM's pipeline failed (a stage failed; the report says which and why).
pub const VM_FAILED: u8 = 1;
/// Invalid input or usage: bad flags, unreadable or invalid manifest or config, a plan that
/// cannot run (existing outputs, unusable output directory), a log file that cannot be opened.
/// Nothing was touched.
pub const INVALID_INPUT: u8 = 2;
/// A batch finished and some of its VMs failed or never started.
pub const BATCH_PARTIAL: u8 = 3;
/// A required external tool is missing (the message names the package to install).
pub const MISSING_TOOL: u8 = 4;
/// Interrupted by SIGINT or SIGTERM; running conversions were stopped and `.part` files removed.
pub const INTERRUPTED: u8 = 130;

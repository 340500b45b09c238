//! Hooks: the admin's own code run at fixed points of a VM's pipeline.
//!
//! This part holds what every hook type shares: `{{ var }}` templates over a closed variable set
//! ([`template`]) and the retry backoff arithmetic ([`retry`]).

pub mod retry;
pub mod template;

//! hsm agent library: the agent daemon (its core and runner, ledger, server, clean-up), its
//! identity and mutual TLS, and frame I/O. The task backends are the `hsm-exec` crate,
//! re-exported here for the daemon's own paths.

pub mod clean;
pub mod core;
pub mod daemon;
pub mod dist;
pub mod identity;
pub mod ledger;
pub mod owners;
pub mod preflight;
pub mod relay;
pub mod runner;
pub mod server;
pub mod strict;
pub mod sync;
pub mod tls;
pub mod wire;

/// The execution backends live in their own crate (`hsm-exec`), shared with the coordinator.
pub use hsm_exec::{hpc, process, scheduler};

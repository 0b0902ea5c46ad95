//! hsm agent library: the agent daemon (its core and runner, ledger, server, clean-up, relay).
//! The task backends (`hsm-exec`) and identities, mutual TLS and frames (`hsm-transport`) are
//! crates of their own, re-exported here for the daemon's own paths.

pub mod clean;
pub mod core;
pub mod daemon;
pub mod ledger;
pub mod owners;
pub mod preflight;
pub mod relay;
pub mod runner;
pub mod server;
pub mod sync;

/// The execution backends live in their own crate (`hsm-exec`), shared with the coordinator.
pub use hsm_exec::{hpc, process, scheduler};
/// Identities, mutual TLS and frames are the `hsm-transport` crate, shared with the coordinator.
pub use hsm_transport::{identity, strict, tls, wire};

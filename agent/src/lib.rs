//! hsm agent library: the agent's identity and mutual TLS, frame I/O, and the task backends
//! shared by the agent daemon and the coordinator's local source.

pub mod clean;
pub mod core;
pub mod daemon;
pub mod dist;
pub mod hpc;
pub mod identity;
pub mod ledger;
pub mod owners;
pub mod preflight;
pub mod process;
pub mod relay;
pub mod runner;
pub mod scheduler;
pub mod server;
pub mod strict;
pub mod sync;
pub mod tls;
pub mod wire;

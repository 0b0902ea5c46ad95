//! hsm coordinator library: the pure core (sweep expansion, rendering, task state machine,
//! completion planning), the durable store, the actix actors and the CLI.

pub mod actors;
pub mod cli;
pub mod config;
pub mod core;
pub mod engine;
pub mod home;
pub mod layout;
pub mod metrics_worker;
pub mod prefetch;
pub mod preflight;
pub mod progress;
pub mod report;
pub mod run_log;
pub mod ssh_control;
pub mod store;
pub mod sync;
pub mod transfer;
pub mod transport;
pub mod watch;
pub mod yaml;

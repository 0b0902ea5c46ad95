//! Execution backends shared by the coordinator's local source and the agent: processes
//! (`process`: spawn, reap with usage, timeouts, cancel), batch schedulers (`scheduler`: Slurm/PBS
//! job arrays followed by polling) and their pure parts (`hpc`: job scripts, the wrapper, output
//! parsers, the decisions from what a scheduler says), with the backend event types they report.
//! Neither daemon nor coordinator code lives here.

pub mod hpc;
pub mod process;
pub mod scheduler;

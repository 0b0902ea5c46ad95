//! The pure core: no IO, no clock, no actix/tokio types. Time is an argument; IO lives in shells.

pub mod argflags;
pub mod command;
pub mod diag;
pub mod drive;
pub mod errors;
pub mod failure;
pub mod link;
pub mod metrics;
pub mod pace;
pub mod plan;
pub mod render;
pub mod results;
pub mod state;
pub mod stats;
pub mod sweep;
pub mod task_layout;
pub mod taskspec;
pub mod time;
pub mod v1;
pub mod value;

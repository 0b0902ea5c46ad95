//! hsm agent library: task execution backends shared by the agent daemon and the coordinator's
//! local source.

pub mod identity;
pub mod process;
pub mod tls;

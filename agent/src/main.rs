//! `hsm-agent`: the daemon that runs tasks for a coordinator on a remote host or login node.
//! This version ships the process backend (used by the coordinator's local source); the QUIC
//! daemon's commands (`init`, `fingerprint`, `authorize`, `serve`) arrive with the agent work.

use clap::Parser;

#[derive(Parser, Debug)]
#[command(
    name = "hsm-agent",
    version,
    about = "hsm agent: runs sweep tasks for an hsm coordinator",
    long_about = "hsm agent: runs sweep tasks for an hsm coordinator.\n\nThis version has no daemon \
                  commands yet: sweeps run on the coordinator's local source. The QUIC daemon \
                  (init, fingerprint, authorize, serve) is the next step on the roadmap."
)]
struct AgentArgs {}

fn main() {
    let _args = AgentArgs::parse();
    eprintln!(
        "hsm-agent {}: no daemon commands in this version (see `hsm-agent --help`)",
        env!("CARGO_PKG_VERSION")
    );
    std::process::exit(2);
}

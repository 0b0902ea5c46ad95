//! `hsm-agent`: the daemon that runs tasks for a coordinator on a remote host or login node.
//! This version manages the agent's identity and its authorized coordinators; `serve` (the QUIC
//! daemon) is being built on top of them.

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use hsm_agent::identity::{self, AuthorizedKeys, Identity};
use std::path::PathBuf;

#[derive(Parser, Debug)]
#[command(
    name = "hsm-agent",
    version,
    about = "hsm agent: runs sweep tasks for authorized hsm coordinators"
)]
struct AgentArgs {
    #[command(subcommand)]
    command: AgentCommand,
}

#[derive(Subcommand, Debug)]
enum AgentCommand {
    /// Create this agent's identity (a self-signed certificate, files 0600) in the state dir.
    Init(StateDirArgs),
    /// Print this agent's fingerprint (give it to `hsm-coordinator agent add --fingerprint`).
    Fingerprint(StateDirArgs),
    /// Allow a coordinator (its `hsm-coordinator identity` fingerprint) to use this agent.
    Authorize {
        /// `sha256:` followed by 64 hex digits.
        fingerprint: String,
        #[command(flatten)]
        state: StateDirArgs,
    },
}

#[derive(clap::Args, Debug)]
struct StateDirArgs {
    /// Where the identity and authorized coordinators live (default: $HSM_AGENT_HOME, else
    /// $XDG_STATE_HOME/hsm-agent, else ~/.local/state/hsm-agent).
    #[arg(long, value_name = "DIR")]
    state_dir: Option<PathBuf>,
}

impl StateDirArgs {
    fn resolve(&self) -> anyhow::Result<PathBuf> {
        if let Some(dir) = &self.state_dir {
            return Ok(dir.clone());
        }
        if let Some(dir) = std::env::var_os("HSM_AGENT_HOME") {
            return Ok(PathBuf::from(dir));
        }
        if let Some(dir) = std::env::var_os("XDG_STATE_HOME") {
            return Ok(PathBuf::from(dir).join("hsm-agent"));
        }
        let home = std::env::var_os("HOME")
            .context("no --state-dir given and neither HSM_AGENT_HOME nor HOME is set")?;
        Ok(PathBuf::from(home).join(".local/state/hsm-agent"))
    }
}

/// A problem with what the user gave us: exit code 2.
#[derive(Debug)]
struct UsageError(String);

impl std::fmt::Display for UsageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

fn main() {
    let args = AgentArgs::parse();
    let code = match run(args) {
        Ok(()) => 0,
        Err(error) => {
            eprintln!("hsm-agent: {error:#}");
            if error.downcast_ref::<UsageError>().is_some() {
                2
            } else {
                1
            }
        }
    };
    std::process::exit(code);
}

fn run(args: AgentArgs) -> anyhow::Result<()> {
    match args.command {
        AgentCommand::Init(state) => {
            let dir = state.resolve()?;
            let (identity, created) = Identity::load_or_create(&dir, "hsm-agent")
                .with_context(|| format!("identity in {}", dir.display()))?;
            let fingerprint = identity::fingerprint(&identity.cert_der);
            if created {
                eprintln!("created an agent identity in {}", dir.display());
            } else {
                eprintln!("an agent identity already exists in {}", dir.display());
            }
            println!("{fingerprint}");
        }
        AgentCommand::Fingerprint(state) => {
            let dir = state.resolve()?;
            let identity = Identity::load(&dir).map_err(|e| {
                anyhow::Error::new(UsageError(format!(
                    "{e} — run `hsm-agent init --state-dir {}` first",
                    dir.display()
                )))
            })?;
            println!("{}", identity::fingerprint(&identity.cert_der));
        }
        AgentCommand::Authorize { fingerprint, state } => {
            let dir = state.resolve()?;
            let fingerprint = identity::parse_fingerprint(&fingerprint).map_err(|e| {
                anyhow::Error::new(UsageError(format!(
                    "{e} — the coordinator prints its fingerprint with `hsm-coordinator identity`"
                )))
            })?;
            let added = AuthorizedKeys::authorize(&dir, &fingerprint)
                .with_context(|| format!("authorized coordinators in {}", dir.display()))?;
            if added {
                eprintln!("authorized coordinator {fingerprint}");
            } else {
                eprintln!("coordinator {fingerprint} was already authorized");
            }
        }
    }
    Ok(())
}

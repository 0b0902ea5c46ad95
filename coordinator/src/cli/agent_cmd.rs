//! `identity`, `agent add` and `agent list`: this coordinator's own identity and the agents it
//! trusts (pinned by fingerprint in the project config).

use super::config_cmd::{display_path, load_config};
use super::{user_error, AgentAddArgs, Global, EXIT_OK};
use crate::config::{self, SourceKind};
use anyhow::Context as _;
use hsm_agent::identity::{self, Identity};
use std::path::PathBuf;

/// The coordinator's state directory: `$HSM_HOME`, else `$XDG_STATE_HOME/hsm`, else
/// `~/.local/state/hsm`.
pub fn state_dir() -> anyhow::Result<PathBuf> {
    if let Some(dir) = std::env::var_os("HSM_HOME") {
        return Ok(PathBuf::from(dir));
    }
    if let Some(dir) = std::env::var_os("XDG_STATE_HOME") {
        return Ok(PathBuf::from(dir).join("hsm"));
    }
    let home = std::env::var_os("HOME").context("neither HSM_HOME nor HOME is set")?;
    Ok(PathBuf::from(home).join(".local/state/hsm"))
}

/// This coordinator's identity, created on first use.
pub fn coordinator_identity() -> anyhow::Result<Identity> {
    let dir = state_dir()?;
    let (identity, created) = Identity::load_or_create(&dir, "hsm-coordinator")
        .with_context(|| format!("coordinator identity in {}", dir.display()))?;
    if created {
        eprintln!("created this coordinator's identity in {}", dir.display());
    }
    Ok(identity)
}

pub fn identity() -> anyhow::Result<i32> {
    let identity = coordinator_identity()?;
    println!("{}", identity::fingerprint(&identity.cert_der));
    Ok(EXIT_OK)
}

pub fn add(global: &Global, args: &AgentAddArgs) -> anyhow::Result<i32> {
    config::validate_source_name(&args.name)
        .map_err(|e| user_error(format!("agent name `{}`: {e}", args.name)))?;
    config::validate_address(&args.address)
        .map_err(|e| user_error(format!("address `{}`: {e}", args.address)))?;
    let fingerprint = identity::parse_fingerprint(&args.fingerprint).map_err(|e| {
        user_error(format!(
            "--fingerprint: {e} — the agent prints it with `hsm-agent fingerprint`"
        ))
    })?;
    if args.slots == Some(0) {
        return Err(user_error("--slots: expected a positive number"));
    }
    // Validate the current config first: never rewrite a file that has problems.
    let cfg = load_config(global)?;
    let path = cfg
        .file
        .clone()
        .unwrap_or_else(|| global.project_dir.join(".hsm").join("config.yaml"));
    let text = if path.exists() {
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?
    } else {
        String::new()
    };
    let updated = config::set_agent_source(
        &text,
        &args.name,
        &args.address,
        &fingerprint,
        args.slots,
        args.project_dir.as_deref(),
    )
    .map_err(|e| user_error(format!("{}: {e}", display_path(global, &path))))?;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    crate::layout::write_atomic(&path, updated.as_bytes())
        .with_context(|| format!("writing {}", path.display()))?;
    println!(
        "agent {} ({}, {fingerprint}) added to {}",
        args.name,
        args.address,
        display_path(global, &path)
    );
    Ok(EXIT_OK)
}

pub fn list(global: &Global) -> anyhow::Result<i32> {
    let cfg = load_config(global)?;
    let mut n = 0;
    for (name, source) in &cfg.sources {
        if let SourceKind::Agent {
            address,
            fingerprint,
            slots,
            backend,
            ..
        } = &source.kind
        {
            n += 1;
            println!(
                "{name}\t{address}\t{fingerprint}\tslots={}\tbackend={backend}",
                slots.map_or_else(|| "agent".to_string(), |s| s.to_string())
            );
        }
    }
    if n == 0 {
        eprintln!("no agents configured — add one with `hsm-coordinator agent add NAME HOST:PORT --fingerprint FP`");
    }
    Ok(EXIT_OK)
}

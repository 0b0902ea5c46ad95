//! The coordinator's own state directory and identity (its certificate, which agents authorize).

use anyhow::Context as _;
use hsm_transport::identity::Identity;
use std::path::PathBuf;

/// `$HSM_HOME`, else `$XDG_STATE_HOME/hsm`, else `~/.local/state/hsm`.
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

/// This coordinator's identity, created (files 0600) on first use.
pub fn coordinator_identity() -> anyhow::Result<Identity> {
    let dir = state_dir()?;
    let (identity, created) = Identity::load_or_create(&dir, "hsm-coordinator")
        .with_context(|| format!("coordinator identity in {}", dir.display()))?;
    if created {
        eprintln!("created this coordinator's identity in {}", dir.display());
    }
    Ok(identity)
}

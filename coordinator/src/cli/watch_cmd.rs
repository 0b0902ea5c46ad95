//! `sweep watch` (and `monitor watch`): finds the sweep, checks the flags, opens its database
//! read-only and hands over to `crate::watch`; and what `sweep run`/`sweep complete` record
//! for it (`sources_meta`).

use super::config_cmd::load_config;
use super::sweep_cmd::{is_active, resolve_sweep};
use super::{user_error, Global, WatchArgs};
use crate::actors::sweep::{SourceSpec, SourceSpecKind};
use crate::store::{Store, StoreError};
use std::time::Duration;

/// Redraws at most this often and at least this rarely.
const INTERVAL_RANGE: std::ops::RangeInclusive<f64> = 0.1..=3600.0;

pub fn watch(global: &Global, args: &WatchArgs) -> anyhow::Result<i32> {
    if !INTERVAL_RANGE.contains(&args.interval) {
        return Err(user_error(format!(
            "--interval {}: expected seconds between {} and {}, e.g. --interval 2",
            args.interval,
            INTERVAL_RANGE.start(),
            INTERVAL_RANGE.end()
        )));
    }
    let cfg = load_config(global)?;
    let (sweep_id, paths) = resolve_sweep(global, &cfg, args.sweep_id.as_deref())?;
    let store = match Store::open_read_only_current(&paths.db()) {
        Ok(store) => store,
        Err(StoreError::Incomplete { .. }) if is_active(&paths) => {
            return Err(user_error(format!(
                "sweep {sweep_id} is still being created; try again in a moment"
            )))
        }
        Err(StoreError::Incomplete { .. }) => {
            return Err(user_error(format!(
                "sweep {sweep_id} was never fully created (its coordinator stopped while creating it); nothing of it ran"
            )))
        }
        Err(e @ StoreError::Older { .. }) => return Err(user_error(e.to_string())),
        Err(e) => return Err(e.into()),
    };
    let options = crate::watch::Options {
        interval: Duration::from_secs_f64(args.interval),
        once: args.once,
    };
    crate::watch::watch(&sweep_id, paths, store, &options, &is_active)
}

/// `[{"name", "kind", "slots"}]` of a run's sources, as JSON: `kind` is local, agent,
/// agent/slurm, agent/pbs, agent/batch (the agent's host decides), slurm or pbs; `slots` is null
/// for an agent that says how many it has when it connects.
pub(super) fn sources_meta(sources: &[SourceSpec]) -> String {
    use hsm_protocol::SchedulerChoice;
    let scheduler = |hpc: &hsm_protocol::HpcMsg| match hpc.scheduler {
        SchedulerChoice::Slurm => "slurm",
        SchedulerChoice::Pbs => "pbs",
        SchedulerChoice::Sge => "sge",
        SchedulerChoice::Auto => "batch",
    };
    let list: Vec<_> = sources
        .iter()
        .map(|s| {
            let (kind, slots) = match &s.kind {
                SourceSpecKind::Local => ("local".to_string(), Some(s.slots)),
                SourceSpecKind::Agent {
                    hpc,
                    slots_configured,
                    ..
                } => (
                    hpc.as_ref()
                        .map_or("agent".to_string(), |h| format!("agent/{}", scheduler(h))),
                    slots_configured.then_some(s.slots),
                ),
                SourceSpecKind::Scheduler { hpc, .. } => {
                    (scheduler(hpc).to_string(), Some(s.slots))
                }
            };
            serde_json::json!({"name": s.name, "kind": kind, "slots": slots})
        })
        .collect();
    serde_json::Value::Array(list).to_string()
}

//! `agent clean NAME [--sweep ID …] [--older-than DURATION] [--dry-run]`: removes, on an agent,
//! the task directories and logs of this project's sweeps whose results this coordinator holds,
//! over the agent connection (`ToAgent::Clean`), so it works for any agent, deployed or not.
//!
//! The coordinator decides which sweeps it holds ([`judge`]: every attempt that sweep.db says
//! went to the agent has ended, and no coordinator runs the sweep now); the agent checks again
//! with its ledger and keeps anything still running or unreported (the agent's `clean.rs`).

use super::config_cmd::{display_path, load_config};
use super::sweep_cmd::{is_active, list_sweeps};
use super::{user_error, AgentCleanArgs, Global, EXIT_FAILED, EXIT_OK};
use crate::config::{self, SourceKind};
use crate::core::state::TaskStatus;
use crate::layout::SweepPaths;
use crate::store::Store;
use hsm_protocol::{display_safe, CleanMsg, CleanedMsg, FromAgent, SweepId, ToAgent};

/// What this coordinator knows of one sweep on one agent source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Nothing of it went to the source.
    NeverThere,
    /// Every attempt that went there has ended: its results are here.
    Held,
    /// Not (yet): why, and what to do.
    NotHeld(String),
}

/// Whether the coordinator holds the results of a sweep on `source`: `attempts` are the sweep's
/// attempts on it by status (`Store::attempts_on`), `running_now` whether a coordinator holds
/// the sweep's lock.
pub fn judge(id: &str, source: &str, attempts: &[(TaskStatus, u64)], running_now: bool) -> Verdict {
    // A run going on may send tasks there at any moment.
    if running_now {
        return Verdict::NotHeld(format!(
            "a coordinator is running it now — wait for it to finish, or `hsm-coordinator sweep \
             cancel {id}`"
        ));
    }
    if attempts.is_empty() {
        return Verdict::NeverThere;
    }
    let open: u64 = attempts
        .iter()
        .filter(|(status, _)| !status.is_final())
        .map(|(_, n)| n)
        .sum();
    if open > 0 {
        return Verdict::NotHeld(format!(
            "{open} attempt{} on {source} not ended in its sweep.db (queued or running, or its \
             results not received) — `hsm-coordinator sweep complete {id}` takes them up",
            if open == 1 { "" } else { "s" }
        ));
    }
    Verdict::Held
}

/// `1.5 GiB`, `320 KiB`, `12 B`.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// The lines `agent clean` prints for the agent's answer, and whether a sweep the user named
/// was kept.
pub fn report(
    name: &str,
    answer: &CleanedMsg,
    dry_run: bool,
    named: &[String],
) -> (Vec<String>, bool) {
    let mut lines = Vec::new();
    let verb = if dry_run { "would remove" } else { "removed" };
    let (mut task_dirs, mut total) = (0, 0);
    for sweep in &answer.removed {
        task_dirs += sweep.task_dirs;
        total += sweep.bytes;
        let place = if sweep.dir.is_empty() {
            "only ledger entries".to_string()
        } else {
            format!(
                "{} task dirs, {}, {}",
                sweep.task_dirs,
                bytes(sweep.bytes),
                display_safe(&sweep.dir)
            )
        };
        lines.push(format!(
            "  {verb} {} ({place})",
            display_safe(sweep.sweep_id.as_str())
        ));
    }
    let mut named_kept = false;
    for kept in &answer.kept {
        named_kept |= named.iter().any(|n| n == kept.sweep_id.as_str());
        lines.push(format!(
            "  kept {}: {}",
            display_safe(kept.sweep_id.as_str()),
            display_safe(&kept.reason)
        ));
    }
    if !answer.absent.is_empty() {
        let ids: Vec<String> = answer
            .absent
            .iter()
            .map(|s| display_safe(s.as_str()).into_owned())
            .collect();
        lines.push(format!("  nothing left of {} on {name}", ids.join(", ")));
    }
    let n = answer.removed.len();
    lines.push(if n == 0 {
        format!("{name}: nothing to clean")
    } else {
        format!(
            "{name}: {verb} {n} sweep{} ({task_dirs} task dirs, {})",
            if n == 1 { "" } else { "s" },
            bytes(total)
        )
    });
    (lines, named_kept)
}

pub fn clean(global: &Global, args: &AgentCleanArgs) -> anyhow::Result<i32> {
    let older_than = match &args.older_than {
        Some(text) => Some(
            config::parse_duration(text).map_err(|e| user_error(format!("--older-than: {e}")))?,
        ),
        None => None,
    };
    let timeout =
        config::parse_duration(&args.timeout).map_err(|e| user_error(format!("--timeout: {e}")))?;
    let cfg = load_config(global)?;
    let name = &args.name;
    let (address, fingerprint, transport) = match cfg.sources.get(name).map(|s| &s.kind) {
        Some(SourceKind::Agent {
            address,
            fingerprint,
            transport,
            ..
        }) => (address, fingerprint, transport),
        Some(_) => return Err(user_error(format!("source `{name}` is not an agent"))),
        None => {
            return Err(user_error(format!(
                "no agent named `{name}` in the project config — `hsm-coordinator agent list` shows them"
            )))
        }
    };
    let outputs = crate::layout::outputs_dir(&cfg.root);
    let sweeps = list_sweeps(&outputs);
    // Named sweeps must exist and be held; the rest of the project's are looked at quietly.
    let mut chosen: Vec<(String, SweepPaths)> = Vec::new();
    for id in &args.sweep {
        match sweeps.iter().find(|(s, _)| s == id) {
            Some(found) => chosen.push(found.clone()),
            None => {
                return Err(user_error(format!(
                    "--sweep {id}: no such sweep in {}",
                    display_path(global, &outputs)
                )))
            }
        }
    }
    let naming = !args.sweep.is_empty();
    if !naming {
        chosen = sweeps;
    }
    let mut held = Vec::new();
    let mut not_held = Vec::new();
    for (id, paths) in &chosen {
        let attempts = match Store::open(&paths.db()).and_then(|store| store.attempts_on(name)) {
            Ok(attempts) => attempts,
            Err(e) => {
                not_held.push((id.clone(), format!("cannot read its sweep.db: {e}")));
                continue;
            }
        };
        match judge(id, name, &attempts, is_active(paths)) {
            Verdict::Held => held.push(SweepId::from(id.as_str())),
            Verdict::NeverThere if naming => {
                not_held.push((id.clone(), format!("none of its tasks ran on {name}")))
            }
            // Unnamed, only the sweeps that sent work there are worth a line.
            Verdict::NeverThere => {}
            Verdict::NotHeld(_) if !naming && attempts.is_empty() => {}
            Verdict::NotHeld(why) => not_held.push((id.clone(), why)),
        }
    }
    if naming && !not_held.is_empty() {
        let lines: Vec<String> = not_held
            .iter()
            .map(|(id, why)| format!("sweep {id}: {why}"))
            .collect();
        return Err(user_error(format!(
            "not cleaning {name}: this coordinator does not hold the results of every sweep named\n  {}",
            lines.join("\n  ")
        )));
    }
    for (id, why) in &not_held {
        println!("  kept {id}: {why}");
    }
    if held.is_empty() {
        println!("{name}: nothing to clean (no finished sweep of this project ran there)");
        return Ok(EXIT_OK);
    }
    let request = ToAgent::Clean(CleanMsg {
        sweeps: held,
        older_than_secs: older_than.map(|d| d.as_secs()),
        dry_run: args.dry_run,
    });
    let asked = super::agent_cmd::request_address(
        address,
        fingerprint,
        transport,
        timeout,
        Default::default(),
        request,
        |frame| match frame {
            FromAgent::Cleaned(answer) => Some(Ok(answer)),
            FromAgent::Error(e) if hsm_protocol::is_unknown_request(&e.message) => {
                Some(Err(anyhow::Error::new(TooOld)))
            }
            FromAgent::Error(e) => Some(Err(anyhow::anyhow!(
                "the agent refused: {}",
                display_safe(&e.message)
            ))),
            _ => None,
        },
    );
    let answer = match asked {
        Ok((_, answer, _, _)) => answer,
        Err(e) => {
            let text = if e.downcast_ref::<TooOld>().is_some() {
                format!(
                    "{name}'s hsm-agent predates `agent clean`: upgrade it (`hsm-coordinator agent \
                     deploy {name} HOST` for a deployed agent, or install this release's \
                     hsm-agent and restart it); nothing was removed"
                )
            } else {
                format!("{e:#}")
            };
            eprintln!("hsm-coordinator: agent {name}: {}", display_safe(&text));
            return Ok(EXIT_FAILED);
        }
    };
    let (lines, named_kept) = report(name, &answer, args.dry_run, &args.sweep);
    for line in lines {
        println!("{line}");
    }
    Ok(if named_kept { EXIT_FAILED } else { EXIT_OK })
}

/// The agent answered that it cannot decode a `Clean` (it predates it).
#[derive(Debug, thiserror::Error)]
#[error("the agent is too old for `agent clean`")]
struct TooOld;

#[cfg(test)]
mod tests {
    use super::*;
    use hsm_protocol::{CleanedSweep, KeptSweep};

    #[test]
    fn a_sweep_is_held_once_every_attempt_on_the_source_ended_and_nobody_runs_it() {
        use TaskStatus::*;
        assert_eq!(judge("s", "a1", &[], false), Verdict::NeverThere);
        assert!(matches!(judge("s", "a1", &[], true), Verdict::NotHeld(_)));
        assert_eq!(
            judge(
                "s",
                "a1",
                &[(Completed, 3), (Failed, 1), (Cancelled, 2)],
                false
            ),
            Verdict::Held
        );
        let Verdict::NotHeld(why) = judge("s", "a1", &[(Completed, 3), (Running, 1)], false) else {
            panic!("a running attempt")
        };
        assert!(
            why.starts_with("1 attempt on a1 not ended") && why.contains("sweep complete s"),
            "{why}"
        );
        let Verdict::NotHeld(why) = judge("s", "a1", &[(Completed, 3)], true) else {
            panic!("a running coordinator")
        };
        assert!(why.contains("running it now"), "{why}");
    }

    #[test]
    fn the_report_names_what_was_removed_and_kept_safely() {
        let answer = CleanedMsg {
            removed: vec![CleanedSweep {
                sweep_id: SweepId::from("s1"),
                dir: "/w/s1".into(),
                task_dirs: 4,
                bytes: 3 << 20,
            }],
            kept: vec![KeptSweep {
                sweep_id: SweepId::from("s2"),
                reason: "evil\x1b[2J".into(),
            }],
            absent: vec![SweepId::from("s3")],
        };
        let (lines, named_kept) = report("a1", &answer, false, &["s1".into()]);
        assert!(!named_kept);
        assert_eq!(
            lines,
            [
                "  removed s1 (4 task dirs, 3.0 MiB, /w/s1)",
                "  kept s2: evil\\x1b[2J",
                "  nothing left of s3 on a1",
                "a1: removed 1 sweep (4 task dirs, 3.0 MiB)",
            ]
        );
        let (lines, named_kept) = report("a1", &answer, true, &["s2".into()]);
        assert!(named_kept);
        assert!(lines[0].starts_with("  would remove s1"));
        let nothing = CleanedMsg {
            removed: vec![],
            kept: vec![],
            absent: vec![SweepId::from("s1")],
        };
        assert_eq!(
            report("a1", &nothing, false, &[]).0.last().unwrap(),
            "a1: nothing to clean"
        );
        assert_eq!(bytes(12), "12 B");
        assert_eq!(bytes(1536), "1.5 KiB");
    }
}

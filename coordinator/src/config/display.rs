//! `config show`: the resolved project config as YAML, every value filled in. The output is
//! itself a valid project config (v1 keys already folded into current names), so it can be
//! saved as `.hsm/config.yaml`.

use super::{cpu_count, format_duration, HpcOptions, ProjectConfig, SourceKind};
use serde_json::{json, Map, Value};

/// The resolved config for `config show`. Unset optional values are shown as `null`; slots
/// that default to the CPU count show this machine's count.
pub fn to_display_yaml(cfg: &ProjectConfig) -> String {
    let command = &cfg.command;
    let defaults = &cfg.defaults;
    let mut sources = Map::new();
    for (name, source) in &cfg.sources {
        sources.insert(name.clone(), source_json(cfg, &source.kind));
    }
    let value = json!({
        "project": {
            "name": cfg.name,
            "root": cfg.root.display().to_string(),
        },
        "command": {
            "python": command.python,
            "script": command.script,
            "template": command.template,
            "style": match command.style {
                crate::core::command::ArgStyle::Hydra => "hydra",
                crate::core::command::ArgStyle::Argparse => "argparse",
            },
            "conda_env": command.conda_env,
            "env": env_json(&command.env),
            "pre_script": command.pre_script,
            "wandb_group": command.wandb_group,
            // null: detected per run from `@hydra.main` in the script.
            "hydra": command.hydra,
        },
        "defaults": {
            "parallel": defaults.parallel.unwrap_or_else(cpu_count),
            "timeout": defaults.timeout.map(format_duration),
            "retries": defaults.retries,
            "kill_grace": format_duration(defaults.kill_grace),
            "agent_grace": format_duration(defaults.agent_grace),
            "strategy": defaults.strategy.as_str(),
            "min_free_disk": format_size(defaults.min_free_disk),
            "steal_after": defaults.steal_after.map_or_else(|| "0".to_string(), format_duration),
            "connect_timeout": format_duration(defaults.connect_timeout),
            "work_dir": defaults.work_dir,
        },
        "hpc": hpc_json(&cfg.hpc),
        "sync": {
            "mode": cfg.sync.mode.as_str(),
            "include": cfg.sync.include,
            "exclude": cfg.sync.exclude,
        },
        "sources": sources,
    });
    let origin = match &cfg.file {
        Some(file) => format!("# resolved from {}\n", file.display()),
        None => "# no config file found: built-in defaults\n".to_string(),
    };
    origin + &crate::yaml::emit_json(&value)
}

fn source_json(cfg: &ProjectConfig, kind: &SourceKind) -> Value {
    match kind {
        SourceKind::Local { slots } => json!({
            "type": "local",
            "slots": slots.unwrap_or_else(|| cfg.local_slots()),
        }),
        SourceKind::Agent {
            address,
            fingerprint,
            slots,
            project_dir,
            python,
            backend,
            hpc,
            setup,
            transport,
            sync,
            work_dir,
            ..
        } => {
            let mut agent = json!({
            "type": "agent",
            "transport": transport.mode.as_str(),
            "ssh": transport.ssh.as_ref().map(|s| s.target.clone()),
            "ssh_options": transport.ssh.as_ref().map(|s| s.options.clone()),
            "address": address,
            "fingerprint": fingerprint,
            // The agent reports its own slot count when none is configured.
            "slots": slots,
            "project_dir": project_dir,
            "python": python,
            "backend": backend.as_str(),
            "sync": sync.as_str(),
            "hpc": hpc_json(hpc),
            // null: the agent's default, <state-dir>/work on its host.
            "work_dir": work_dir,
            });
            // The source's own settings, shown only when it has them (else `command:`'s apply).
            if let Some(conda_env) = &setup.conda_env {
                agent["conda_env"] = conda_env.as_str().into();
            }
            if !setup.env.is_empty() {
                agent["env"] = env_json(&setup.env);
            }
            if !setup.pre_script.is_empty() {
                agent["pre_script"] = json!(setup.pre_script);
            }
            agent
        }
        SourceKind::Slurm { hpc, slots } => {
            json!({"type": "slurm", "slots": slots, "hpc": hpc_json(hpc)})
        }
        SourceKind::Pbs { hpc, slots } => {
            json!({"type": "pbs", "slots": slots, "hpc": hpc_json(hpc)})
        }
        SourceKind::Sge { hpc, slots } => {
            json!({"type": "sge", "slots": slots, "hpc": hpc_json(hpc)})
        }
    }
}

fn env_json(env: &[(String, String)]) -> Value {
    Value::Object(
        env.iter()
            .map(|(name, value)| (name.clone(), Value::String(value.clone())))
            .collect(),
    )
}

fn hpc_json(hpc: &HpcOptions) -> Value {
    json!({
        "walltime": hpc.walltime.map(format_duration),
        "partition": hpc.partition,
        "queue": hpc.queue,
        "account": hpc.account,
        "qos": hpc.qos,
        "cpus": hpc.cpus,
        "mem": hpc.mem,
        "gpus": hpc.gpus,
        "gres": hpc.gres,
        "modules": hpc.modules,
        "pre_script": hpc.pre_script,
        "directives": hpc.directives,
        "max_array_size": hpc.max_array_size,
        "array_throttle": hpc.array_throttle,
        "array": hpc.array,
        "requeue": hpc.requeue,
        "max_jobs": hpc.max_jobs,
        "tasks_per_job": hpc.tasks_per_job,
        "pack_parallel": hpc.pack_parallel,
        "poll": hpc.poll.map(format_duration),
        "resources": hpc.resources,
    })
}

/// A byte count in the largest binary unit that keeps it whole (`1G`, `1536M`), or `0`.
fn format_size(bytes: u64) -> String {
    if bytes == 0 {
        return "0".into();
    }
    for (shift, unit) in [(40, "T"), (30, "G"), (20, "M"), (10, "K")] {
        if bytes.is_multiple_of(1u64 << shift) {
            return format!("{}{unit}", bytes >> shift);
        }
    }
    format!("{bytes}")
}

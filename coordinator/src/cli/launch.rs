//! How a sweep's tasks are launched, decided once per run from the project config and this
//! machine: whether the script is a Hydra app, whether W&B's group is passed, and the checks
//! `sweep run` and `config validate` share (script, interpreter, conda env exist).

use super::user_error;
use crate::config::{ProjectConfig, SourceKind};
use crate::core::command::{
    build_argv, looks_like_hydra_app, ArgStyle, CommandSpec, LaunchContext,
};
use crate::core::value::Params;
use std::path::Path;

/// The per-sweep settings kept in `sweep.db` so `complete` launches tasks the same way.
pub struct SweepSettings {
    pub script_override: Option<String>,
    pub group: String,
    /// The project's command with this sweep's decisions filled in (`launch_command`).
    pub command: CommandSpec,
}

/// The project's command for a sweep whose file says `script_override`: `hydra` decided (the
/// config's `command.hydra`, else whether the script has `@hydra.main`), and W&B's group on when
/// the config asks for it or `wandb` (an explicit `--group`, or a sweep recorded with it).
/// Only the default command in Hydra style adds keys, so only it is looked at.
pub fn launch_command(
    cfg: &ProjectConfig,
    script_override: Option<&str>,
    wandb: bool,
) -> CommandSpec {
    let mut command = cfg.command.clone();
    command.wandb_group |= wandb;
    if command.hydra.is_none() && command.template.is_none() && command.style == ArgStyle::Hydra {
        let script = script_override.or(command.script.as_deref());
        let source = script.and_then(|s| std::fs::read_to_string(cfg.root.join(s)).ok());
        command.hydra = Some(source.is_some_and(|text| looks_like_hydra_app(&text)));
    }
    command
}

/// Every problem that would make the sweep's tasks fail to start, found before anything is
/// created: no script, a template error, a script, interpreter or conda env that does not exist,
/// an agent source without `project_dir`. Each is a line with its fix.
pub fn command_problems(
    cfg: &ProjectConfig,
    command: &CommandSpec,
    script_override: Option<&str>,
    sample: &Params,
) -> Vec<String> {
    let mut problems = Vec::new();
    let ctx = LaunchContext {
        sweep_id: "check",
        task_index: 1,
        task_id: "task_001",
        attempt: 1,
        output_dir: "/tmp/check",
        group: "check",
        script_override,
    };
    let argv = match build_argv(command, sample, &ctx) {
        Ok(argv) => argv,
        Err(e) => {
            problems.push(e.to_string());
            Vec::new()
        }
    };
    let uses_script = command.template.is_none()
        || command
            .template
            .iter()
            .flatten()
            .any(|t| t.contains("{script}"));
    if uses_script {
        if let Some(script) = script_override.or(command.script.as_deref()) {
            if !cfg.root.join(script).exists() {
                let set_where = if script_override.is_some() {
                    "script: in the sweep file"
                } else {
                    "command.script in the project config"
                };
                problems.push(format!(
                    "training script {script} not found in {} — fix {set_where}",
                    cfg.root.display()
                ));
            }
        }
    }
    if let Some(program) = argv.first() {
        if !program_exists(program) {
            let fix = if command.conda_env.is_some() {
                "install conda or remove command.conda_env from the project config"
            } else if command.template.is_some() {
                "fix the first element of command.template in the project config"
            } else {
                "set command.python in the project config to an interpreter that exists"
            };
            problems.push(format!(
                "program `{program}` not found (on PATH or as a path) — {fix}"
            ));
        } else if let Some(env) = &command.conda_env {
            if let Some(envs) = conda_envs() {
                if !envs.iter().any(|e| e == env) {
                    problems.push(format!(
                        "conda env `{env}` not found (`conda env list` has: {}) — fix command.conda_env in the project config",
                        envs.join(", ")
                    ));
                }
            }
        }
    }
    for source in cfg.sources.values() {
        if let SourceKind::Agent {
            project_dir: None, ..
        } = &source.kind
        {
            // Also a config validation error; repeated here for configs built in code.
            problems.push(format!(
                "agent source {}: no project_dir — add project_dir: /path/to/the/project/on/that/host",
                source.name
            ));
        }
    }
    problems
}

/// `command_problems` as one user error (exit 2), or `Ok`.
pub fn check_command(
    cfg: &ProjectConfig,
    command: &CommandSpec,
    script_override: Option<&str>,
    sample: &Params,
) -> anyhow::Result<()> {
    let problems = command_problems(cfg, command, script_override, sample);
    if problems.is_empty() {
        Ok(())
    } else {
        Err(user_error(problems.join("\n")))
    }
}

fn program_exists(program: &str) -> bool {
    if program.is_empty() {
        return false;
    }
    if program.contains('/') {
        return Path::new(program).exists();
    }
    std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).any(|dir| dir.join(program).is_file()))
        .unwrap_or(false)
}

/// The names of the conda envs `conda env list --json` reports (`base` included), or `None`
/// when conda cannot tell (then nothing is claimed about the env).
fn conda_envs() -> Option<Vec<String>> {
    let output = std::process::Command::new("conda")
        .args(["env", "list", "--json"])
        .stderr(std::process::Stdio::null())
        .output()
        .ok()?;
    if !output.status.success() {
        return None;
    }
    let listed: serde_json::Value = serde_json::from_slice(&output.stdout).ok()?;
    let mut names: Vec<String> = listed["envs"]
        .as_array()?
        .iter()
        .filter_map(|path| path.as_str())
        .filter_map(|path| Path::new(path).file_name())
        .map(|name| name.to_string_lossy().into_owned())
        .collect();
    names.push("base".into());
    Some(names)
}

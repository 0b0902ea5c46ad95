//! How a sweep's tasks are launched, decided once per run from the project config and this
//! machine: whether the script is a Hydra app, whether W&B's group is passed, and the checks
//! `sweep run` and `config validate` share (script, interpreter, conda env exist).

use super::user_error;
use crate::config::{ProjectConfig, SourceKind};
use crate::core::command::{
    build_argv, looks_like_hydra_app, ArgStyle, CommandError, CommandSpec, LaunchContext,
};
use crate::core::diag::Problem;
use crate::core::value::Params;
use crate::yaml::Pos;
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

/// A problem [`command_problems`] found, and whether the sweep file's `script:` set what it is
/// about (else a key of the project config).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandProblem {
    pub in_sweep_file: bool,
    pub problem: Problem,
}

/// Every problem that would make the sweep's tasks fail to start, found before anything is
/// created: no script, a template error, a script, interpreter or conda env that does not exist,
/// an agent source without `project_dir`. Each names the key that set it (`command.script`, or
/// `script` in the sweep file at `sweep_script_pos`), where the config wrote it, and its fix.
pub fn command_problems(
    cfg: &ProjectConfig,
    command: &CommandSpec,
    script_override: Option<&str>,
    sweep_script_pos: Option<Pos>,
    sample: &Params,
) -> Vec<CommandProblem> {
    let mut problems = Vec::new();
    // Named as written: a Python HSM v1 file's `paths.python_interpreter`, else the current key.
    let in_config = |paths: &[&str], message: String, hint: &str| {
        let written = paths.iter().find(|p| cfg.positions.contains_key(**p));
        let path = written.unwrap_or(&paths[0]);
        CommandProblem {
            in_sweep_file: false,
            problem: Problem::new(cfg.key_pos(paths), *path, message).with_hint(hint),
        }
    };
    const SCRIPT: &[&str] = &[
        "command.script",
        "paths.train_script",
        "paths.training_script",
    ];
    const PYTHON: &[&str] = &["command.python", "paths.python_interpreter"];
    const TEMPLATE: &[&str] = &["command.template", "command"];
    const CONDA: &[&str] = &["command.conda_env"];
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
            let (paths, hint) = match e {
                CommandError::NoScript => (SCRIPT, "e.g. command.script: train.py"),
                _ => (TEMPLATE, "fix command.template in the project config"),
            };
            let mut found = in_config(paths, e.to_string(), hint);
            found.problem.hint = None;
            problems.push(found);
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
                let message = format!(
                    "training script {script} not found in {}",
                    cfg.root.display()
                );
                problems.push(if script_override.is_some() {
                    CommandProblem {
                        in_sweep_file: true,
                        problem: Problem::new(sweep_script_pos, "script", message)
                            .with_hint("fix script: in the sweep file (relative to the project directory)"),
                    }
                } else {
                    in_config(
                        SCRIPT,
                        message,
                        "fix command.script in the project config (relative to the project directory)",
                    )
                });
            }
        }
    }
    if uses_script && command.style == ArgStyle::Argparse {
        if let Some(script) = script_override.or(command.script.as_deref()) {
            problems.extend(flag_problems(&cfg.root.join(script), script, sample));
        }
    }
    if let Some(program) = argv.first() {
        if !program_exists(program) {
            let message = format!("program `{program}` not found (on PATH or as a path)");
            problems.push(if command.conda_env.is_some() {
                in_config(
                    CONDA,
                    message,
                    "install conda or remove command.conda_env from the project config",
                )
            } else if command.template.is_some() {
                in_config(
                    TEMPLATE,
                    message,
                    "fix the first element of command.template in the project config",
                )
            } else {
                in_config(
                    PYTHON,
                    message,
                    "set command.python in the project config to an interpreter that exists",
                )
            });
        } else if let Some(env) = &command.conda_env {
            if let Some(envs) = conda_envs() {
                if !envs.iter().any(|e| e == env) {
                    problems.push(in_config(
                        CONDA,
                        format!(
                            "conda env `{env}` not found (`conda env list` has: {})",
                            envs.join(", ")
                        ),
                        "fix command.conda_env in the project config",
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
            let at = format!("sources.{}", source.name);
            problems.push(CommandProblem {
                in_sweep_file: false,
                problem: Problem::new(
                    cfg.key_pos(&[&at]),
                    format!("{at}.project_dir"),
                    "agent source without project_dir",
                )
                .with_hint("add project_dir: /path/to/the/project/on/that/host"),
            });
        }
    }
    problems
}

/// Sweep keys an argparse script would refuse: it declares the same name with `-` and `_`
/// swapped (`--batch-size` for the key `batch_size`). The script is read as text, at most 1 MiB.
fn flag_problems(path: &Path, script: &str, sample: &Params) -> Vec<CommandProblem> {
    use std::io::Read;
    let mut text = String::new();
    let read = std::fs::File::open(path).and_then(|f| f.take(1 << 20).read_to_string(&mut text));
    if read.is_err() || !text.contains("add_argument(") {
        return Vec::new();
    }
    let declared = crate::core::argflags::declared_flags(&text);
    crate::core::argflags::misspelled(sample.keys().map(String::as_str), &declared)
        .into_iter()
        .map(|(key, flag)| {
            let wanted = flag.trim_start_matches("--");
            CommandProblem {
                in_sweep_file: true,
                problem: Problem::new(
                    None,
                    key.clone(),
                    format!(
                        "{script} declares {flag}, not --{key}: argparse would refuse every task (unrecognized arguments)"
                    ),
                )
                .with_hint(format!("name the key `{wanted}` in the sweep file")),
            }
        })
        .collect()
}

/// One line per problem: `file:line:col: key: message — fix`. `config` and `sweep` are the
/// files as shown to the user (`None`: there is no such file; the key alone is shown).
pub fn render_command_problems(
    problems: &[CommandProblem],
    config: Option<&str>,
    sweep: Option<&str>,
) -> Vec<String> {
    problems
        .iter()
        .map(|p| {
            let file = if p.in_sweep_file { sweep } else { config };
            p.problem.render_in(file)
        })
        .collect()
}

/// `command_problems` as one user error (exit 2), or `Ok`.
pub fn check_command(
    cfg: &ProjectConfig,
    command: &CommandSpec,
    script_override: Option<&str>,
    sample: &Params,
) -> anyhow::Result<()> {
    let problems = command_problems(cfg, command, script_override, None, sample);
    if problems.is_empty() {
        return Ok(());
    }
    let config = cfg.file.as_deref().map(shown_from_cwd);
    let lines = render_command_problems(&problems, config.as_deref(), Some("sweep file"));
    Err(user_error(lines.join("\n")))
}

/// An absolute path as the user should see it from the current directory.
fn shown_from_cwd(path: &Path) -> String {
    match std::env::current_dir().and_then(|cwd| cwd.canonicalize()) {
        Ok(cwd) => super::config_cmd::relative_path(&cwd, path),
        Err(_) => path.display().to_string(),
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

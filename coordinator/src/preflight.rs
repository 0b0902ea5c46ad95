//! Pre-flight for agent sources: what to ask an agent to check before any task goes there (built
//! from the command its tasks would run), and the message that takes a failing source out of
//! the run — naming the host, what is missing there and the config key that fixes it.

use crate::core::command::CommandSpec;
use hsm_protocol::preflight::check;
use hsm_protocol::{HpcMsg, PreflightMsg, PreflightProblem};

/// The checks for a source whose tasks run `command` (its `python` already the source's) in
/// `project_dir`, with the batch set-up of `hpc` when it submits to a scheduler.
pub fn request(
    command: &CommandSpec,
    script_override: Option<&str>,
    project_dir: Option<&str>,
    hpc: Option<&HpcMsg>,
    min_free_disk: u64,
) -> PreflightMsg {
    let template_mentions = |placeholder: &str| {
        command
            .template
            .as_ref()
            .is_none_or(|t| t.iter().any(|e| e.contains(placeholder)))
    };
    let script = script_override
        .or(command.script.as_deref())
        .filter(|s| !s.is_empty() && template_mentions("{script}"));
    let mut setup = Vec::new();
    let mut conda_env = command.conda_env.clone();
    if let Some(hpc) = hpc {
        setup.extend(
            hpc.resources
                .modules
                .iter()
                .map(|m| format!("module load {}", shell_word(m))),
        );
        setup.extend(hpc.resources.pre_script.iter().cloned());
        conda_env = conda_env.or_else(|| hpc.resources.conda_env.clone());
    }
    // As each task starts: its environment, then its set-up lines.
    setup.extend(
        command
            .env
            .iter()
            .map(|(name, value)| format!("export {name}={}", shell_word(value))),
    );
    setup.extend(command.pre_script.iter().cloned());
    let mut interpreter = Vec::new();
    if template_mentions("{python}") {
        if let Some(env) = conda_env {
            interpreter.extend(
                ["conda", "run", "-n", env.as_str(), "--no-capture-output"].map(String::from),
            );
        }
        interpreter.push(command.python.clone());
        interpreter.push("--version".into());
    }
    PreflightMsg {
        project_dir: project_dir.unwrap_or_default().to_string(),
        files: script.map(|s| vec![s.to_string()]).unwrap_or_default(),
        interpreter,
        setup,
        min_free_disk,
        scheduler: hpc.map(|h| h.scheduler),
    }
}

/// `word` quoted for `sh` when it needs it.
fn shell_word(word: &str) -> String {
    if !word.is_empty()
        && word
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/._-+=:@,".contains(&b))
    {
        word.to_string()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

/// Why source `source` (at `address`) is out of the run, on one line (status lines escape line
/// breaks): each problem the agent found with its fix. Peer text is escaped.
pub fn explain(source: &str, address: &str, problems: &[PreflightProblem]) -> String {
    let parts: Vec<String> = problems
        .iter()
        .map(|p| {
            let detail = hsm_protocol::display_safe(&p.detail);
            let fix = match p.check.as_str() {
                check::PROJECT_DIR => format!(
                    "set sources.{source}.project_dir to where the project is on that host, or put it there"
                ),
                check::FILE => format!(
                    "copy the project to {source}, or fix sources.{source}.project_dir"
                ),
                check::INTERPRETER => format!(
                    "set sources.{source}.python to an interpreter that exists on that host (and its conda env / modules)"
                ),
                check::DISK => {
                    "free space in the agent's work directory, or lower defaults.min_free_disk".into()
                }
                check::SCHEDULER => format!(
                    "set sources.{source}.backend to what that host has (slurm, pbs, sge, auto; process runs tasks without a scheduler), or start the agent where that scheduler's commands work"
                ),
                _ => String::new(),
            };
            let check = hsm_protocol::display_safe(&p.check);
            if fix.is_empty() {
                format!("{check}: {detail}")
            } else {
                format!("{check}: {detail} — {fix}")
            }
        })
        .collect();
    format!(
        "pre-flight checks failed on {source} ({address}), so no task goes there: {}",
        parts.join("; ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::command::ArgStyle;

    fn command() -> CommandSpec {
        CommandSpec {
            python: "/opt/py/bin/python".into(),
            script: Some("train.py".into()),
            style: ArgStyle::Argparse,
            ..CommandSpec::default()
        }
    }

    #[test]
    fn the_checks_follow_the_command_the_tasks_would_run() {
        let msg = request(&command(), None, Some("/srv/proj"), None, 1 << 30);
        assert_eq!(msg.project_dir, "/srv/proj");
        assert_eq!(msg.files, vec!["train.py"]);
        assert_eq!(msg.interpreter, vec!["/opt/py/bin/python", "--version"]);
        assert!(msg.setup.is_empty());
        assert_eq!(msg.min_free_disk, 1 << 30);
        // The sweep file's script wins; a conda env wraps the interpreter.
        let spec = CommandSpec {
            conda_env: Some("ml".into()),
            ..command()
        };
        let msg = request(&spec, Some("other.py"), None, None, 0);
        assert_eq!(msg.files, vec!["other.py"]);
        assert_eq!(
            msg.interpreter,
            vec![
                "conda",
                "run",
                "-n",
                "ml",
                "--no-capture-output",
                "/opt/py/bin/python",
                "--version"
            ]
        );
        // A template that names neither the script nor the interpreter checks neither.
        let spec = CommandSpec {
            template: Some(vec!["./run.sh".into(), "{overrides}".into()]),
            ..command()
        };
        let msg = request(&spec, None, Some("/p"), None, 0);
        assert!(
            msg.files.is_empty() && msg.interpreter.is_empty(),
            "{msg:?}"
        );
    }

    #[test]
    fn a_batch_source_checks_after_its_modules_and_set_up() {
        let resources = hsm_protocol::HpcResources {
            modules: vec!["cuda/12.1".into(), "odd name".into()],
            pre_script: vec!["source .venv/bin/activate".into()],
            conda_env: Some("hpc".into()),
            ..Default::default()
        };
        let hpc = HpcMsg {
            scheduler: hsm_protocol::SchedulerChoice::Slurm,
            resources,
        };
        let msg = request(&command(), None, Some("/p"), Some(&hpc), 0);
        assert_eq!(
            msg.setup,
            vec![
                "module load cuda/12.1",
                "module load 'odd name'",
                "source .venv/bin/activate"
            ]
        );
        assert_eq!(msg.interpreter[..4], ["conda", "run", "-n", "hpc"]);
        // The source's own environment and set-up lines come after the batch ones.
        let spec = CommandSpec {
            env: vec![
                ("OMP_NUM_THREADS".into(), "4".into()),
                ("NOTE".into(), "a b".into()),
            ],
            pre_script: vec!["source .venv/bin/activate".into()],
            ..command()
        };
        let msg = request(&spec, None, Some("/p"), None, 0);
        assert_eq!(
            msg.setup,
            vec![
                "export OMP_NUM_THREADS=4",
                "export NOTE='a b'",
                "source .venv/bin/activate"
            ]
        );
    }

    #[test]
    fn the_explanation_names_the_host_what_is_missing_and_the_key_that_fixes_it() {
        let text = explain(
            "gpu1",
            "10.0.0.2:7300",
            &[
                PreflightProblem {
                    check: check::PROJECT_DIR.into(),
                    detail: "/srv/nope does not exist".into(),
                },
                PreflightProblem {
                    check: "future-check".into(),
                    detail: "forged\n[INFO] line".into(),
                },
            ],
        );
        assert_eq!(
            text,
            "pre-flight checks failed on gpu1 (10.0.0.2:7300), so no task goes there: \
             project_dir: /srv/nope does not exist — set sources.gpu1.project_dir to where the \
             project is on that host, or put it there; future-check: forged\\n[INFO] line"
        );
    }
}

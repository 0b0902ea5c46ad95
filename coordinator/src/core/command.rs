//! Building a task's argv and environment from the project's command spec and the task's
//! parameters (DESIGN §4). Never a shell string: values with spaces, quotes and `$` arrive intact.

/// How parameters are passed to the script.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ArgStyle {
    /// `key=value` in Hydra's override grammar (the default, as in Python HSM).
    #[default]
    Hydra,
    /// `--key value` for argparse scripts.
    Argparse,
}

/// The validated command part of the project config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandSpec {
    /// The interpreter, e.g. `python3` or `/opt/conda/bin/python`.
    pub python: String,
    /// The training script, relative to the project root (or absolute). A sweep file's `script:`
    /// overrides it.
    pub script: Option<String>,
    /// A full argv template replacing the default command; see `build_argv` for placeholders.
    pub template: Option<Vec<String>>,
    pub style: ArgStyle,
    /// Run through `conda run -n NAME --no-capture-output`.
    pub conda_env: Option<String>,
    /// Append `wandb.group=<group>` in the default Hydra command (Python HSM does).
    pub wandb_group: bool,
}

impl Default for CommandSpec {
    fn default() -> Self {
        CommandSpec {
            python: "python3".into(),
            script: None,
            template: None,
            style: ArgStyle::Hydra,
            conda_env: None,
            wandb_group: true,
        }
    }
}

/// Everything about one task attempt that the command and environment may mention.
#[derive(Debug, Clone)]
pub struct LaunchContext<'a> {
    pub sweep_id: &'a str,
    /// 1-based task index.
    pub task_index: u64,
    /// `task_007`.
    pub task_id: &'a str,
    /// 1-based attempt number.
    pub attempt: u32,
    /// The task's results directory (absolute), passed as `output.dir` and `HSM_OUTPUT_DIR`.
    pub output_dir: &'a str,
    /// The W&B group; defaults to the sweep id.
    pub group: &'a str,
    /// The sweep file's `script:`, which overrides `CommandSpec::script`.
    pub script_override: Option<&'a str>,
}

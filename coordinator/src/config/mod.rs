//! The project config (`.hsm/config.yaml`): finding it, reading it (Python HSM v1
//! keys included), validating it with every problem reported at its line and column, showing
//! it resolved, and writing it (`init`, `agent add`).
//!
//! Reading happens in two layers, as STYLE.md asks: `raw` turns the positioned YAML tree into
//! typed fields exactly as written (unknown keys and wrong types are reported there), and
//! `resolve` turns those into a [`ProjectConfig`] (durations parsed, enums and formats checked,
//! v1 keys folded into ours, conflicts and cross-field rules checked, defaults filled in).

mod display;
mod duration;
mod edit;
mod init;
mod raw;
mod resolve;
mod transport;
mod work_dir;

use crate::core::command::CommandSpec;
use crate::core::diag::Problem;
use crate::yaml::{Pos, Spanned};
use indexmap::IndexMap;
use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

pub use display::to_display_yaml;
pub use duration::{format_duration, parse_duration};
pub use edit::{remove_agent_source, set_agent_entry, set_agent_source, AgentEntry};
pub use init::{
    detect, init_config_text, init_sweep_text, script_style, Detection, Scheduler, ScriptStyle,
};
pub use resolve::{
    validate_address, validate_fingerprint, validate_source_name, validate_ssh_destination,
    DEFAULT_AGENT_PYTHON,
};
pub use transport::{AgentTransport, SshTarget, TransportMode};
pub use work_dir::{mismatch_warning, validate_work_dir, work_dir_matches};

/// Where the project config is looked for, relative to the project directory, in order.
/// The last two are where Python HSM v1 kept it.
pub const CONFIG_CANDIDATES: [&str; 3] = [
    ".hsm/config.yaml",
    "sweeps/hsm_config.yaml",
    "hsm_config.yaml",
];

/// The validated project config.
#[derive(Debug, Clone)]
pub struct ProjectConfig {
    /// The project directory, absolute.
    pub root: PathBuf,
    /// The file it was read from; `None` when no config file exists (all defaults).
    pub file: Option<PathBuf>,
    /// `project.name`, else the project directory's name.
    pub name: String,
    pub command: CommandSpec,
    pub defaults: RunDefaults,
    /// Project-wide scheduler options. Each Slurm/PBS/agent source carries its own copy with
    /// its overrides already applied, so backends read only their source's options.
    pub hpc: HpcOptions,
    /// Named compute sources in file order; always contains `local`.
    pub sources: IndexMap<String, SourceConfig>,
    /// `sync:`: which files make the project, and how agent sources compare theirs.
    pub sync: SyncSettings,
    /// Where each key was written (`command.script`, `sources.gpu1.project_dir`), so checks
    /// made after validation (the script exists, ...) can point at the key that set it. Empty
    /// for a config without a file.
    pub positions: BTreeMap<String, Pos>,
}

/// `defaults:`: how a sweep runs unless its command line says otherwise.
#[derive(Debug, Clone)]
pub struct RunDefaults {
    /// Local slots; `None` = the number of CPUs.
    pub parallel: Option<usize>,
    /// Per-task time limit; `None` = none.
    pub timeout: Option<Duration>,
    /// Automatic retries of a failed task.
    pub retries: u32,
    /// Time between SIGTERM and SIGKILL when a task is stopped.
    pub kill_grace: Duration,
    /// How long an unreachable agent's running tasks wait for it before they run again
    /// elsewhere as a new attempt.
    pub agent_grace: Duration,
    pub strategy: Strategy,
    /// An agent reporting less free disk in its work directory gets no new work (0: never).
    pub min_free_disk: u64,
    /// How long a task may wait pending in a Slurm/PBS queue before an idle source may take it
    /// over; `None` (`0` in the file): never.
    pub steal_after: Option<Duration>,
    /// A run stops when none of its sources has answered for this long since it started.
    pub connect_timeout: Duration,
    /// Where agents keep task directories on their hosts, for agent sources without their own
    /// `work_dir` (`None`: the agent's default, `<state-dir>/work`).
    pub work_dir: Option<String>,
}

impl Default for RunDefaults {
    fn default() -> Self {
        RunDefaults {
            parallel: None,
            timeout: None,
            retries: 0,
            kill_grace: Duration::from_secs(10),
            agent_grace: Duration::from_secs(60),
            strategy: Strategy::default(),
            min_free_disk: 1 << 30,
            steal_after: Some(Duration::from_secs(300)),
            connect_timeout: Duration::from_secs(120),
            work_dir: None,
        }
    }
}

/// How queued tasks are spread over sources (the core's type; parsed from config here).
pub use crate::core::state::Strategy;

/// Scheduler options for Slurm/PBS. Every field is optional; backends fill in
/// their own defaults.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HpcOptions {
    pub walltime: Option<Duration>,
    /// Slurm partition.
    pub partition: Option<String>,
    /// PBS queue (Python HSM v1's `default_queue` lands here).
    pub queue: Option<String>,
    pub account: Option<String>,
    pub qos: Option<String>,
    /// CPUs per task.
    pub cpus: Option<u32>,
    /// Memory per task as written (`16G`, `4000M`, `64gb`); backends convert the unit.
    pub mem: Option<String>,
    pub gpus: Option<u32>,
    pub gres: Option<String>,
    pub modules: Vec<String>,
    /// Shell lines run before the task (v1's `module_commands` come first).
    pub pre_script: Vec<String>,
    /// Extra raw scheduler lines (`--constraint=a100`), written after our own.
    pub directives: Vec<String>,
    pub max_array_size: Option<u32>,
    /// At most this many array elements running at once (`%K`).
    pub array_throttle: Option<u32>,
    /// `false`: one job per task instead of job arrays (sites that forbid arrays).
    pub array: Option<bool>,
    /// Whether the scheduler may run a job again after a preemption or a node failure
    /// (`--requeue`/`--no-requeue`, PBS `-r y`/`-r n`); `None`: the cluster's default.
    pub requeue: Option<bool>,
    /// At most this many of the source's jobs (array elements count one each) queued or
    /// running at once: the cluster's per-user limit (`MaxSubmitJobs`) when it is lower than
    /// what the agent can learn, or the user's own.
    pub max_jobs: Option<u32>,
    /// Short tasks packed: each job (array element) runs this many, one after another, each
    /// with its own directory, records and time limit.
    pub tasks_per_job: Option<u32>,
    /// Of a packed job's tasks, this many at once (the job asks for as many times the
    /// per-task CPUs, memory and GPUs).
    pub pack_parallel: Option<u32>,
    /// Slurm/PBS sources run by the coordinator itself: time between `squeue`/`qstat` calls
    /// (agents have `hsm-agent serve --poll`).
    pub poll: Option<Duration>,
    /// A raw resource string from Python HSM v1 (`select=1:ncpus=4:mem=16gb` for PBS,
    /// `--nodes=1 --ntasks=4 --mem=16G` for Slurm), passed through as written.
    pub resources: Option<String>,
}

/// One named compute source.
#[derive(Debug, Clone)]
pub struct SourceConfig {
    pub name: String,
    pub kind: SourceKind,
}

/// What a source is and how to reach it.
// A config holds a handful of sources, built once per command: boxing the agent variant would
// only add indirection to every match.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone)]
pub enum SourceKind {
    /// Processes on this machine. `slots: None` = the number of CPUs.
    Local { slots: Option<usize> },
    /// A remote `hsm-agent`.
    Agent {
        /// `host:port`.
        address: String,
        /// `sha256:<64 lowercase hex>`: the agent's pinned certificate.
        fingerprint: String,
        slots: Option<usize>,
        /// Where the project lives on that host (required: validation reports it missing).
        project_dir: Option<String>,
        /// The interpreter on that host that replaces `command.python` for its tasks (default
        /// `python3` on the agent's PATH): the coordinator's own interpreter path, often a
        /// local venv or an `init`-detected absolute path, rarely exists there.
        python: String,
        backend: Backend,
        /// The project's `hpc:` with this source's overrides applied.
        hpc: HpcOptions,
        /// The ssh destination (`[user@]host`, or a `~/.ssh/config` alias) `agent deploy`
        /// installed it through; `agent status|logs|stop` use it.
        ssh: Option<String>,
        /// Its own `conda_env`, `env` and `pre_script` over `command:`'s.
        setup: crate::core::command::SourceSetup,
        /// UDP, ssh, or UDP then ssh (`transport`, `ssh`, `ssh_options`).
        transport: AgentTransport,
        /// How its copy of the project is compared with this one (its own `sync`, else the
        /// project's).
        sync: SyncMode,
        /// Where the agent keeps task directories on its host (`work_dir`, else
        /// `defaults.work_dir`; absolute or `~/...`): `agent deploy` starts it there.
        work_dir: Option<String>,
    },
    /// Slurm driven from this process (the coordinator runs on a login node). `slots`: tasks
    /// handed to the scheduler at once (default 1000).
    Slurm {
        hpc: HpcOptions,
        slots: Option<usize>,
    },
    /// PBS/Torque driven from this process.
    Pbs {
        hpc: HpcOptions,
        slots: Option<usize>,
    },
    /// Grid Engine driven from this process (in Grid Engine's environment, as `qsub` is).
    Sge {
        hpc: HpcOptions,
        slots: Option<usize>,
    },
}

impl SourceKind {
    /// The `type:` word.
    pub fn type_name(&self) -> &'static str {
        match self {
            SourceKind::Local { .. } => "local",
            SourceKind::Agent { .. } => "agent",
            SourceKind::Slurm { .. } => "slurm",
            SourceKind::Pbs { .. } => "pbs",
            SourceKind::Sge { .. } => "sge",
        }
    }
}

/// How an agent source's copy of the project is kept equal to this one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SyncMode {
    /// Compare before the first task; a source whose files differ gets no tasks (unless the
    /// run allows drift).
    #[default]
    Check,
    /// Compare, then send what differs.
    Push,
    /// Do not compare.
    Off,
}

impl SyncMode {
    pub const ALL: [SyncMode; 3] = [SyncMode::Check, SyncMode::Push, SyncMode::Off];

    pub fn as_str(self) -> &'static str {
        match self {
            SyncMode::Check => "check",
            SyncMode::Push => "push",
            SyncMode::Off => "off",
        }
    }
}

/// The top-level `sync:`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SyncSettings {
    /// The mode of agent sources that do not set their own.
    pub mode: SyncMode,
    /// Globs of the files that make the project when it is not a git checkout (empty: all);
    /// in a git checkout the tracked files are the project.
    pub include: Vec<String>,
    /// Globs left out in either case (on top of the built-in ones: sweep outputs, `.hsm/`,
    /// caches and virtual environments).
    pub exclude: Vec<String>,
}

/// How an agent runs the tasks it accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Backend {
    #[default]
    Process,
    Slurm,
    Pbs,
    /// Grid Engine (Son of Grid Engine, Univa/Altair, Open Grid Scheduler).
    Sge,
    /// Slurm if the agent's host has `sbatch`, else PBS or Grid Engine by its `qstat`.
    Auto,
}

impl Backend {
    pub const ALL: [Backend; 5] = [
        Backend::Process,
        Backend::Slurm,
        Backend::Pbs,
        Backend::Sge,
        Backend::Auto,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Backend::Process => "process",
            Backend::Slurm => "slurm",
            Backend::Pbs => "pbs",
            Backend::Sge => "sge",
            Backend::Auto => "auto",
        }
    }

    /// The batch scheduler an agent is asked to submit to; `None`: tasks run as processes.
    pub fn scheduler(self) -> Option<hsm_protocol::SchedulerChoice> {
        use hsm_protocol::SchedulerChoice;
        match self {
            Backend::Process => None,
            Backend::Slurm => Some(SchedulerChoice::Slurm),
            Backend::Pbs => Some(SchedulerChoice::Pbs),
            Backend::Sge => Some(SchedulerChoice::Sge),
            Backend::Auto => Some(SchedulerChoice::Auto),
        }
    }
}

impl FromStr for Backend {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        Backend::ALL
            .into_iter()
            .find(|b| b.as_str() == text.trim())
            .ok_or_else(|| {
                format!("unknown backend `{text}`; expected process, slurm, pbs, sge or auto")
            })
    }
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why the project config could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// Reading the file failed (including an explicit `--config` that does not exist).
    #[error("cannot read config file {}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The file has problems; all of them, in file order.
    #[error("{}", render_problems(file, problems))]
    Invalid {
        file: PathBuf,
        problems: Vec<Problem>,
    },
}

fn render_problems(file: &Path, problems: &[Problem]) -> String {
    let file = file.display().to_string();
    problems
        .iter()
        .map(|p| p.render(&file))
        .collect::<Vec<_>>()
        .join("\n")
}

impl ProjectConfig {
    /// The config of a project without a config file: everything default.
    pub fn defaults_for(root: &Path) -> ProjectConfig {
        let mut sources = IndexMap::new();
        sources.insert(
            "local".to_string(),
            SourceConfig {
                name: "local".into(),
                kind: SourceKind::Local { slots: None },
            },
        );
        ProjectConfig {
            root: root.to_path_buf(),
            file: None,
            name: default_name(root),
            command: CommandSpec::default(),
            defaults: RunDefaults::default(),
            hpc: HpcOptions::default(),
            sources,
            sync: SyncSettings::default(),
            positions: BTreeMap::new(),
        }
    }

    /// Where the first of `paths` that is written in the file was written (a key may have a
    /// Python HSM v1 spelling: `command.python` or `paths.python_interpreter`).
    pub fn key_pos(&self, paths: &[&str]) -> Option<Pos> {
        paths.iter().find_map(|p| self.positions.get(*p).copied())
    }

    /// Slots of the built-in `local` source: its `slots`, else `defaults.parallel` (already
    /// folded in at validation), else the number of CPUs.
    pub fn local_slots(&self) -> usize {
        match self.sources.get("local").map(|s| &s.kind) {
            Some(SourceKind::Local { slots: Some(n) }) => *n,
            _ => self.defaults.parallel.unwrap_or_else(cpu_count),
        }
    }
}

/// The number of CPUs this process may use (at least 1).
pub(crate) fn cpu_count() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

fn default_name(root: &Path) -> String {
    root.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| "project".into())
}

/// The config file to read: `explicit` when given (relative paths are taken from the project
/// directory, since `-C DIR` means "as if started in DIR"), else the first of
/// [`CONFIG_CANDIDATES`] that exists under `project_dir`.
pub fn locate_config(project_dir: &Path, explicit: Option<&Path>) -> Option<PathBuf> {
    if let Some(path) = explicit {
        return Some(project_dir.join(path));
    }
    CONFIG_CANDIDATES
        .iter()
        .map(|candidate| project_dir.join(candidate))
        .find(|path| path.is_file())
}

/// Finds, reads and validates the project config. No file found (and none asked for) means
/// all defaults; an explicit path that cannot be read is an [`ConfigError::Io`].
pub fn load_project(
    project_dir: &Path,
    explicit: Option<&Path>,
) -> Result<ProjectConfig, ConfigError> {
    let (config, problems) = load_project_lenient(project_dir, explicit)?;
    match (problems.is_empty(), config.file.clone()) {
        (false, Some(file)) => Err(ConfigError::Invalid { file, problems }),
        _ => Ok(config),
    }
}

/// [`load_project`] that also returns the config built from everything valid in a file with
/// problems, so `config validate` can check what it names (script, interpreter) and report it
/// together with them. Only a YAML syntax error (nothing to build from) or IO is an error.
pub fn load_project_lenient(
    project_dir: &Path,
    explicit: Option<&Path>,
) -> Result<(ProjectConfig, Vec<Problem>), ConfigError> {
    let io_error = |source| ConfigError::Io {
        path: project_dir.to_path_buf(),
        source,
    };
    let mut root = std::path::absolute(project_dir).map_err(io_error)?;
    // `absolute` keeps `..`, which would leave the project without a directory name.
    if root.file_name().is_none() {
        root = root.canonicalize().map_err(io_error)?;
    }
    let Some(file) = locate_config(&root, explicit) else {
        return Ok((ProjectConfig::defaults_for(&root), Vec::new()));
    };
    let text = std::fs::read_to_string(&file).map_err(|source| ConfigError::Io {
        path: file.clone(),
        source,
    })?;
    let (mut config, problems) =
        parse_config_lenient(&text, &root).map_err(|problems| ConfigError::Invalid {
            file: file.clone(),
            problems,
        })?;
    config.file = Some(file);
    Ok((config, problems))
}

/// Validates config text (pure: no IO). `root` is the project directory; it is stored as given
/// and names the project when `project.name` is absent. All problems are returned, sorted by
/// position.
pub fn parse_config(text: &str, root: &Path) -> Result<ProjectConfig, Vec<Problem>> {
    let (config, problems) = parse_config_lenient(text, root)?;
    if problems.is_empty() {
        Ok(config)
    } else {
        Err(problems)
    }
}

/// [`parse_config`] that returns the config built from the valid keys along with the
/// problems (sorted). `Err` only for a YAML syntax error.
pub fn parse_config_lenient(
    text: &str,
    root: &Path,
) -> Result<(ProjectConfig, Vec<Problem>), Vec<Problem>> {
    let tree = crate::yaml::parse(text).map_err(|err| vec![err.problem()])?;
    let mut problems = Vec::new();
    let raw = raw::read(tree.as_ref(), &mut problems);
    let mut config = resolve::resolve(raw, root, &mut problems);
    if let Some(tree) = &tree {
        key_positions(tree, "", &mut config.positions);
    }
    Ok((config, tidy(problems)))
}

/// Every mapping key under `node` by its dotted path (`sources.gpu1.python`).
fn key_positions(node: &Spanned, prefix: &str, out: &mut BTreeMap<String, Pos>) {
    for (key, value) in node.as_map().unwrap_or_default() {
        let path = if prefix.is_empty() {
            key.key_text()
        } else {
            format!("{prefix}.{}", key.key_text())
        };
        key_positions(value, &path, out);
        out.insert(path, key.pos);
    }
}

/// Sorts problems by position (position-less last) and drops repeats: a project-wide `hpc:`
/// value is checked again inside every source that inherits it.
fn tidy(problems: Vec<Problem>) -> Vec<Problem> {
    // Through a hash set: comparing each problem with every kept one took 9 s for a config of
    // 40k unknown keys.
    let mut seen = std::collections::HashSet::new();
    let first: Vec<bool> = problems
        .iter()
        .map(|p| {
            let pos = p.pos.map(|pos| (pos.line, pos.col));
            seen.insert((pos, p.path.as_str(), p.message.as_str(), p.hint.as_deref()))
        })
        .collect();
    drop(seen);
    let mut unique: Vec<Problem> = problems
        .into_iter()
        .zip(first)
        .filter_map(|(problem, first)| first.then_some(problem))
        .collect();
    unique.sort_by_key(|p| match p.pos {
        Some(pos) => (0, pos.line, pos.col),
        None => (1, 0, 0),
    });
    unique
}

#[cfg(test)]
mod tests;

//! The raw layer of the project config: the positioned YAML tree read into typed fields as
//! written. Unknown keys and wrong types are reported here; meaning (durations, enums, formats,
//! ranges, v1 keys, conflicts, defaults) is `resolve`'s job.

use crate::core::diag::{did_you_mean, Problem};
use crate::yaml::{Node, Pos, Spanned};

/// A value as written, with where it was written and its dotted key path.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct At<T> {
    pub value: T,
    pub pos: Pos,
    pub path: String,
}

impl<T> At<T> {
    /// A problem about this value.
    pub fn problem(&self, message: impl Into<String>) -> Problem {
        Problem::new(Some(self.pos), self.path.clone(), message)
    }
}

pub(super) const TOP_KEYS: [&str; 6] = ["project", "command", "defaults", "hpc", "sources", "sync"];
/// `sync:` as a mapping (it may also be just the mode: `sync: push`).
pub(super) const SYNC_KEYS: [&str; 3] = ["mode", "include", "exclude"];

/// Top-level sections Python HSM v1 wrote. `paths:` is read; of the others only what has a
/// counterpart here: `wandb.project` (or `experiment_tracking.wandb_enabled`/`wandb_project`)
/// turns on `command.wandb_group`, `compute.max_concurrent_local` is `defaults.parallel` and
/// `compute.retry_attempts` is `defaults.retries`. The rest is accepted and ignored:
/// `metadata:` (created_by, created_at, version), `logging:`, the other trackers and
/// `compute:`'s remote-polling intervals belong to the Python tool.
pub(super) const V1_TOP_KEYS: [&str; 6] = [
    "paths",
    "metadata",
    "wandb",
    "logging",
    "experiment_tracking",
    "compute",
];

/// Blocks of later Python HSM versions, which moved the same ideas elsewhere.
const NEWER_PYTHON_BLOCKS: [(&str, &str); 3] = [
    (
        "local",
        "Python HSM's `local:` block is `sources.local` here (and `defaults:`)",
    ),
    (
        "slurm",
        "Python HSM's `slurm:` block is `hpc:` here, with a `sources:` entry of type slurm",
    ),
    (
        "distributed",
        "Python HSM's `distributed.remotes` are `sources:` of type agent here",
    ),
];

/// `root` is accepted and ignored: v1 wrote the absolute path at init time (stale once a project
/// is copied or synced), and `config show` prints the resolved root there.
pub(super) const PROJECT_KEYS: [&str; 2] = ["name", "root"];
pub(super) const COMMAND_KEYS: [&str; 9] = [
    "python",
    "script",
    "template",
    "style",
    "conda_env",
    "wandb_group",
    "hydra",
    "env",
    "pre_script",
];
pub(super) const DEFAULTS_KEYS: [&str; 10] = [
    "parallel",
    "timeout",
    "retries",
    "kill_grace",
    "strategy",
    "agent_grace",
    "min_free_disk",
    "steal_after",
    "connect_timeout",
    "work_dir",
];
pub(super) const HPC_KEYS: [&str; 21] = [
    "walltime",
    "partition",
    "queue",
    "account",
    "qos",
    "cpus",
    "mem",
    "gpus",
    "gres",
    "modules",
    "pre_script",
    "directives",
    "max_array_size",
    "array_throttle",
    "array",
    "requeue",
    "max_jobs",
    "tasks_per_job",
    "pack_parallel",
    "poll",
    "resources",
];
/// Python HSM v1's `hpc:` keys (top level only). `system` (pbs/slurm/local) is accepted and
/// ignored: sources say which scheduler to use.
pub(super) const HPC_V1_KEYS: [&str; 5] = [
    "default_walltime",
    "default_resources",
    "default_queue",
    "module_commands",
    "system",
];
/// Python HSM v1's `paths:`. `config_dir`, `output_dir` and `project_root` are accepted and
/// ignored: Hydra finds its own configs, outputs always go to `sweeps/outputs/`, and the root is
/// where the config was found (a v1 absolute root goes stale when a project is copied).
pub(super) const PATHS_KEYS: [&str; 7] = [
    "python_interpreter",
    "train_script",
    "training_script",
    "conda_env",
    "config_dir",
    "output_dir",
    "project_root",
];
/// Every key any source type takes; `resolve` checks which ones fit the source's type.
pub(super) const SOURCE_KEYS: [&str; 16] = [
    "type",
    "slots",
    "address",
    "fingerprint",
    "project_dir",
    "python",
    "backend",
    "hpc",
    "ssh",
    "conda_env",
    "env",
    "pre_script",
    "transport",
    "ssh_options",
    "sync",
    "work_dir",
];

#[derive(Debug, Default)]
pub(super) struct RawConfig {
    pub project: RawProject,
    pub command: RawCommand,
    pub defaults: RawDefaults,
    pub hpc: RawHpc,
    /// Empty when `sources:` is absent or null.
    pub sources: Vec<RawSource>,
    pub paths: RawPaths,
    pub v1: RawV1,
    pub sync: RawSync,
}

/// The top-level `sync:`: the mode for every agent source, and which files make the project.
#[derive(Debug, Default)]
pub(super) struct RawSync {
    pub mode: Option<At<String>>,
    pub include: Option<At<Vec<String>>>,
    pub exclude: Option<At<Vec<String>>>,
}

/// What is read from Python HSM v1's otherwise ignored sections.
#[derive(Debug, Default)]
pub(super) struct RawV1 {
    /// `wandb.project`, or `experiment_tracking.wandb_project` (non-empty).
    pub wandb_project: Option<At<String>>,
    /// `experiment_tracking.wandb_enabled`.
    pub wandb_enabled: Option<At<bool>>,
    pub max_concurrent_local: Option<At<i64>>,
    pub retry_attempts: Option<At<i64>>,
}

#[derive(Debug, Default)]
pub(super) struct RawProject {
    pub name: Option<At<String>>,
}

#[derive(Debug, Default)]
pub(super) struct RawCommand {
    pub python: Option<At<String>>,
    pub script: Option<At<String>>,
    pub template: Option<At<Vec<String>>>,
    pub style: Option<At<String>>,
    pub conda_env: Option<At<String>>,
    pub wandb_group: Option<At<bool>>,
    pub hydra: Option<At<bool>>,
    pub env: Option<At<Vec<(String, String)>>>,
    pub pre_script: Option<At<Vec<String>>>,
}

#[derive(Debug, Default)]
pub(super) struct RawDefaults {
    pub parallel: Option<At<i64>>,
    pub timeout: Option<At<String>>,
    pub retries: Option<At<i64>>,
    pub kill_grace: Option<At<String>>,
    pub agent_grace: Option<At<String>>,
    pub strategy: Option<At<String>>,
    pub min_free_disk: Option<At<String>>,
    pub steal_after: Option<At<String>>,
    pub connect_timeout: Option<At<String>>,
    pub work_dir: Option<At<String>>,
}

#[derive(Debug, Default, Clone)]
pub(super) struct RawHpc {
    pub walltime: Option<At<String>>,
    pub partition: Option<At<String>>,
    pub queue: Option<At<String>>,
    pub account: Option<At<String>>,
    pub qos: Option<At<String>>,
    pub cpus: Option<At<i64>>,
    pub mem: Option<At<String>>,
    pub gpus: Option<At<i64>>,
    pub gres: Option<At<String>>,
    pub modules: Option<At<Vec<String>>>,
    pub pre_script: Option<At<Vec<String>>>,
    pub directives: Option<At<Vec<String>>>,
    pub max_array_size: Option<At<i64>>,
    pub array_throttle: Option<At<i64>>,
    pub array: Option<At<bool>>,
    pub requeue: Option<At<bool>>,
    pub max_jobs: Option<At<i64>>,
    pub tasks_per_job: Option<At<i64>>,
    pub pack_parallel: Option<At<i64>>,
    pub poll: Option<At<String>>,
    pub resources: Option<At<String>>,
    // Python HSM v1, top level only.
    pub default_walltime: Option<At<String>>,
    pub default_resources: Option<At<String>>,
    pub default_queue: Option<At<String>>,
    pub module_commands: Option<At<Vec<String>>>,
}

#[derive(Debug, Default)]
pub(super) struct RawPaths {
    pub python_interpreter: Option<At<String>>,
    pub train_script: Option<At<String>>,
    pub training_script: Option<At<String>>,
    pub conda_env: Option<At<String>>,
}

#[derive(Debug)]
pub(super) struct RawSource {
    /// The name, at the key's position.
    pub name: At<String>,
    /// Where the source's mapping starts.
    pub pos: Pos,
    /// The keys written, for the per-type check.
    pub keys: Vec<At<String>>,
    pub kind: Option<At<String>>,
    pub slots: Option<At<i64>>,
    pub address: Option<At<String>>,
    pub fingerprint: Option<At<String>>,
    pub project_dir: Option<At<String>>,
    pub conda_env: Option<At<String>>,
    pub env: Option<At<Vec<(String, String)>>>,
    pub pre_script: Option<At<Vec<String>>>,
    pub python: Option<At<String>>,
    pub backend: Option<At<String>>,
    pub hpc: Option<RawHpc>,
    /// `transport`, `ssh`, `ssh_options` (see `transport.rs`); `ssh` is also how `agent
    /// deploy|status|logs|stop` reach the agent's host.
    pub transport: Option<At<String>>,
    pub ssh: Option<At<String>>,
    pub ssh_options: Option<At<Vec<String>>>,
    /// `check`, `push` or `off` for this source.
    pub sync: Option<At<String>>,
    /// Where the agent keeps task directories (see `work_dir.rs`).
    pub work_dir: Option<At<String>>,
}

/// Reads the whole document. `root` is `None` for an empty file.
pub(super) fn read(root: Option<&Spanned>, problems: &mut Vec<Problem>) -> RawConfig {
    let mut raw = RawConfig::default();
    let Some(root) = root else {
        return raw;
    };
    if !matches!(root.node, Node::Map(_) | Node::Null) {
        problems.push(
            Problem::new(
                Some(root.pos),
                "",
                format!("expected a mapping of sections, got {}", describe(root)),
            )
            .with_hint("start with e.g. `command:` or `sources:`"),
        );
        return raw;
    }
    let top = Section::new(Some(root), "", problems);
    let known: Vec<&str> = TOP_KEYS.iter().chain(&V1_TOP_KEYS).copied().collect();
    top.check_keys_with(&known, problems, |key| {
        NEWER_PYTHON_BLOCKS
            .iter()
            .find(|(block, _)| *block == key)
            .map(|(_, hint)| hint.to_string())
    });

    let project = top.section("project", problems);
    project.check_keys(&PROJECT_KEYS, problems);
    raw.project.name = project.name("name", problems);

    raw.command = read_command(&top, problems);

    let defaults = top.section("defaults", problems);
    defaults.check_keys(&DEFAULTS_KEYS, problems);
    raw.defaults = RawDefaults {
        parallel: defaults.int("parallel", "a positive integer", problems),
        timeout: defaults.duration("timeout", problems),
        retries: defaults.int("retries", "a non-negative integer", problems),
        kill_grace: defaults.duration("kill_grace", problems),
        agent_grace: defaults.duration("agent_grace", problems),
        strategy: defaults.string("strategy", problems),
        min_free_disk: defaults.size("min_free_disk", problems),
        steal_after: defaults.duration("steal_after", problems),
        connect_timeout: defaults.duration("connect_timeout", problems),
        work_dir: defaults.string("work_dir", problems),
    };

    let hpc = top.section("hpc", problems);
    let known: Vec<&str> = HPC_KEYS.iter().chain(&HPC_V1_KEYS).copied().collect();
    hpc.check_keys(&known, problems);
    raw.hpc = read_hpc(&hpc, problems);
    raw.hpc.default_walltime = hpc.duration("default_walltime", problems);
    raw.hpc.default_resources = hpc.string("default_resources", problems);
    raw.hpc.default_queue = hpc.name("default_queue", problems);
    raw.hpc.module_commands = hpc.strings("module_commands", problems);

    let paths = top.section("paths", problems);
    paths.check_keys(&PATHS_KEYS, problems);
    raw.paths = RawPaths {
        python_interpreter: paths.string("python_interpreter", problems),
        train_script: paths.string("train_script", problems),
        training_script: paths.string("training_script", problems),
        conda_env: paths.name("conda_env", problems),
    };

    raw.v1 = read_v1(&top, problems);
    raw.sources = read_sources(&top, problems);
    raw.sync = read_sync(&top, problems);
    raw
}

/// The few v1 settings that have a counterpart here. The W&B keys are read leniently (the
/// sections are otherwise ignored, and v1 wrote `entity: ''` and nulls freely); the `compute:`
/// numbers are checked like ours.
fn read_v1(top: &Section<'_>, problems: &mut Vec<Problem>) -> RawV1 {
    let mut ignored = Vec::new();
    let wandb = top.section("wandb", &mut ignored);
    let tracking = top.section("experiment_tracking", &mut ignored);
    let non_empty = |at: Option<At<String>>| at.filter(|at| !at.value.trim().is_empty());
    let compute = top.section("compute", problems);
    RawV1 {
        wandb_project: non_empty(wandb.name("project", &mut ignored))
            .or_else(|| non_empty(tracking.name("wandb_project", &mut ignored))),
        wandb_enabled: tracking.boolean("wandb_enabled", &mut ignored),
        max_concurrent_local: compute.int("max_concurrent_local", "a positive integer", problems),
        retry_attempts: compute.int("retry_attempts", "a non-negative integer", problems),
    }
}

/// `command:` is a mapping, or a list: the argv template alone (the short form).
fn read_command(top: &Section<'_>, problems: &mut Vec<Problem>) -> RawCommand {
    if let Some(node) = top.get("command") {
        if let Node::Seq(_) = node.node {
            return RawCommand {
                template: string_list(node, "command".into(), problems),
                ..RawCommand::default()
            };
        }
    }
    let command = top.section("command", problems);
    command.check_keys(&COMMAND_KEYS, problems);
    RawCommand {
        python: command.string("python", problems),
        script: command.string("script", problems),
        template: command.strings("template", problems),
        style: command.string("style", problems),
        conda_env: command.name("conda_env", problems),
        wandb_group: command.boolean("wandb_group", problems),
        hydra: command.boolean("hydra", problems),
        env: command.string_map("env", problems),
        pre_script: command.strings("pre_script", problems),
    }
}

/// A `sync` mode as written; anything but a string is a problem whose hint lists the modes
/// (`true` and a mapping are the likely mistakes, and quoting them would not help).
fn sync_mode(
    section: &Section<'_>,
    expected: &str,
    problems: &mut Vec<Problem>,
) -> Option<At<String>> {
    let node = section.get("sync")?;
    if let Node::Str(_) = node.node {
        return section.string("sync", problems);
    }
    problems.push(
        Problem::new(
            Some(node.pos),
            section.child_path("sync"),
            format!("expected {expected}, got {}", describe(node)),
        )
        .with_hint("write e.g. `sync: push`"),
    );
    None
}

/// `sync:` is a mapping, or just the mode (`sync: push`).
fn read_sync(top: &Section<'_>, problems: &mut Vec<Problem>) -> RawSync {
    if top
        .get("sync")
        .is_some_and(|node| !matches!(node.node, Node::Map(_) | Node::Null))
    {
        return RawSync {
            mode: sync_mode(top, "a mapping or one of check | push | off", problems),
            ..RawSync::default()
        };
    }
    let sync = top.section("sync", problems);
    sync.check_keys(&SYNC_KEYS, problems);
    RawSync {
        mode: sync.string("mode", problems),
        include: sync.strings("include", problems),
        exclude: sync.strings("exclude", problems),
    }
}

/// The keys shared by the top-level `hpc:` and a source's `hpc:` (the caller checked keys).
fn read_hpc(hpc: &Section<'_>, problems: &mut Vec<Problem>) -> RawHpc {
    RawHpc {
        walltime: hpc.duration("walltime", problems),
        partition: hpc.name("partition", problems),
        queue: hpc.name("queue", problems),
        account: hpc.name("account", problems),
        qos: hpc.name("qos", problems),
        cpus: hpc.int("cpus", "a positive integer", problems),
        mem: hpc.mem("mem", problems),
        gpus: hpc.int("gpus", "a non-negative integer", problems),
        gres: hpc.string("gres", problems),
        modules: hpc.strings("modules", problems),
        pre_script: hpc.strings("pre_script", problems),
        directives: hpc.strings("directives", problems),
        max_array_size: hpc.int("max_array_size", "a positive integer", problems),
        array_throttle: hpc.int("array_throttle", "a positive integer", problems),
        array: hpc.boolean("array", problems),
        requeue: hpc.boolean("requeue", problems),
        max_jobs: hpc.int("max_jobs", "a positive integer", problems),
        tasks_per_job: hpc.int("tasks_per_job", "a positive integer", problems),
        pack_parallel: hpc.int("pack_parallel", "a positive integer", problems),
        poll: hpc.duration("poll", problems),
        resources: hpc.string("resources", problems),
        ..RawHpc::default()
    }
}

fn read_sources(top: &Section<'_>, problems: &mut Vec<Problem>) -> Vec<RawSource> {
    let sources = top.section("sources", problems);
    let mut out = Vec::new();
    for (key, value) in sources.entries {
        let name = At {
            value: key.key_text(),
            pos: key.pos,
            path: sources.child_path(&key.key_text()),
        };
        // `local:` with nothing under it is the built-in source, spelled out.
        if matches!(value.node, Node::Null) && name.value == "local" {
            out.push(RawSource {
                pos: value.pos,
                keys: Vec::new(),
                kind: None,
                slots: None,
                address: None,
                fingerprint: None,
                project_dir: None,
                python: None,
                backend: None,
                conda_env: None,
                env: None,
                pre_script: None,
                hpc: None,
                transport: None,
                ssh: None,
                ssh_options: None,
                sync: None,
                work_dir: None,
                name,
            });
            continue;
        }
        if !matches!(value.node, Node::Map(_)) {
            problems.push(
                Problem::new(
                    Some(value.pos),
                    name.path.clone(),
                    format!("expected a mapping with a `type:`, got {}", describe(value)),
                )
                .with_hint(format!(
                    "write e.g. {}: {{type: agent, address: host:7300, fingerprint: sha256:...}}",
                    name.value
                )),
            );
            continue;
        }
        let section = Section::new(Some(value), &name.path, problems);
        section.check_keys(&SOURCE_KEYS, problems);
        let keys = section
            .entries
            .iter()
            .map(|(k, _)| At {
                value: k.key_text(),
                pos: k.pos,
                path: section.child_path(&k.key_text()),
            })
            .collect();
        let hpc = section.get("hpc").map(|_| {
            let hpc = section.section("hpc", problems);
            hpc.check_keys_with(&HPC_KEYS, problems, |key| {
                HPC_V1_KEYS.contains(&key).then(|| {
                    "Python HSM v1 keys are read only in the top-level `hpc:`; use the current name (e.g. walltime) here".to_string()
                })
            });
            read_hpc(&hpc, problems)
        });
        out.push(RawSource {
            pos: value.pos,
            keys,
            kind: section.string("type", problems),
            slots: section.int("slots", "a positive integer", problems),
            address: section.string("address", problems),
            fingerprint: section.string("fingerprint", problems),
            project_dir: section.string("project_dir", problems),
            python: section.string("python", problems),
            backend: section.string("backend", problems),
            conda_env: section.name("conda_env", problems),
            env: section.string_map("env", problems),
            pre_script: section.strings("pre_script", problems),
            hpc,
            transport: section.string("transport", problems),
            ssh: section.string("ssh", problems),
            ssh_options: section.strings("ssh_options", problems),
            sync: sync_mode(
                &section,
                "one of check | push | off (`include`/`exclude` go in the top-level `sync:`)",
                problems,
            ),
            work_dir: section.string("work_dir", problems),
            name,
        });
    }
    out
}

/// A mapping being read: its entries and dotted path. A missing or null mapping reads as empty.
struct Section<'a> {
    path: String,
    entries: &'a [(Spanned, Spanned)],
}

impl<'a> Section<'a> {
    fn new(node: Option<&'a Spanned>, path: &str, problems: &mut Vec<Problem>) -> Section<'a> {
        let entries: &[(Spanned, Spanned)] = match node {
            Some(Spanned {
                node: Node::Map(entries),
                ..
            }) => entries,
            None
            | Some(Spanned {
                node: Node::Null, ..
            }) => &[],
            Some(other) => {
                problems.push(Problem::new(
                    Some(other.pos),
                    path,
                    format!("expected a mapping, got {}", describe(other)),
                ));
                &[]
            }
        };
        Section {
            path: path.to_string(),
            entries,
        }
    }

    fn child_path(&self, key: &str) -> String {
        if self.path.is_empty() {
            key.to_string()
        } else {
            format!("{}.{key}", self.path)
        }
    }

    /// The value under `key`; `None` when missing or null (null means "not set" everywhere,
    /// as Python HSM's templates wrote `key: null` for unset values).
    fn get(&self, key: &str) -> Option<&'a Spanned> {
        self.entries
            .iter()
            .find(|(k, _)| k.as_str() == Some(key))
            .map(|(_, v)| v)
            .filter(|v| !matches!(v.node, Node::Null))
    }

    fn section(&self, key: &str, problems: &mut Vec<Problem>) -> Section<'a> {
        Section::new(self.get(key), &self.child_path(key), problems)
    }

    fn check_keys(&self, known: &[&str], problems: &mut Vec<Problem>) {
        self.check_keys_with(known, problems, |_| None);
    }

    /// Reports every key not in `known`, with a "did you mean" (or `special`'s hint).
    fn check_keys_with(
        &self,
        known: &[&str],
        problems: &mut Vec<Problem>,
        special: impl Fn(&str) -> Option<String>,
    ) {
        for (key, _) in self.entries {
            let text = key.key_text();
            if known.contains(&text.as_str()) {
                continue;
            }
            let hint = special(&text).unwrap_or_else(|| match did_you_mean(&text, known) {
                Some(near) => format!("did you mean `{near}`?"),
                None => format!("expected one of: {}", known.join(", ")),
            });
            problems.push(
                Problem::new(Some(key.pos), self.child_path(&text), "unknown key").with_hint(hint),
            );
        }
    }

    fn at<T>(&self, key: &str, node: &Spanned, value: T) -> At<T> {
        At {
            value,
            pos: node.pos,
            path: self.child_path(key),
        }
    }

    fn wrong(&self, key: &str, node: &Spanned, expected: &str) -> Problem {
        Problem::new(
            Some(node.pos),
            self.child_path(key),
            format!("expected {expected}, got {}", describe(node)),
        )
    }

    fn string(&self, key: &str, problems: &mut Vec<Problem>) -> Option<At<String>> {
        let node = self.get(key)?;
        match &node.node {
            Node::Str(s) => Some(self.at(key, node, s.clone())),
            _ => {
                let mut problem = self.wrong(key, node, "a string");
                if let Node::Int(_) | Node::Float(_) | Node::Bool(_) = node.node {
                    problem = problem.with_hint("put it in quotes");
                }
                problems.push(problem);
                None
            }
        }
    }

    /// A name that may be written as a bare number (`account: 12345`, `qos: 2`).
    fn name(&self, key: &str, problems: &mut Vec<Problem>) -> Option<At<String>> {
        let node = self.get(key)?;
        match &node.node {
            Node::Str(s) => Some(self.at(key, node, s.clone())),
            Node::Int(i) => Some(self.at(key, node, i.to_string())),
            _ => {
                problems.push(self.wrong(key, node, "a string"));
                None
            }
        }
    }

    /// A memory size: a string with a unit. A bare number is refused because Slurm reads it
    /// as megabytes and PBS as bytes.
    /// A byte size with a unit (`2G`), or `0`.
    fn size(&self, key: &str, problems: &mut Vec<Problem>) -> Option<At<String>> {
        let node = self.get(key)?;
        match &node.node {
            Node::Int(0) => Some(self.at(key, node, "0".into())),
            Node::Int(_) => self.mem(key, problems),
            Node::Str(s) => Some(self.at(key, node, s.clone())),
            _ => {
                problems.push(self.wrong(key, node, "a size such as 2G (or 0)"));
                None
            }
        }
    }

    fn mem(&self, key: &str, problems: &mut Vec<Problem>) -> Option<At<String>> {
        let node = self.get(key)?;
        match &node.node {
            Node::Str(s) => Some(self.at(key, node, s.clone())),
            Node::Int(i) => {
                problems.push(
                    self.wrong(key, node, "a memory size with a unit")
                        .with_hint(format!("write e.g. {key}: {i}G or {key}: {i}M")),
                );
                None
            }
            _ => {
                problems.push(self.wrong(key, node, "a memory size such as 16G"));
                None
            }
        }
    }

    fn int(&self, key: &str, expected: &str, problems: &mut Vec<Problem>) -> Option<At<i64>> {
        let node = self.get(key)?;
        match &node.node {
            Node::Int(i) => Some(self.at(key, node, *i)),
            Node::Str(s) if s.trim().parse::<i64>().is_ok() => {
                problems.push(
                    self.wrong(key, node, expected)
                        .with_hint(format!("write {key}: {} without quotes", s.trim())),
                );
                None
            }
            _ => {
                problems.push(self.wrong(key, node, expected));
                None
            }
        }
    }

    fn boolean(&self, key: &str, problems: &mut Vec<Problem>) -> Option<At<bool>> {
        let node = self.get(key)?;
        match &node.node {
            Node::Bool(b) => Some(self.at(key, node, *b)),
            Node::Str(s) if ["yes", "no", "on", "off", "y", "n"].contains(&s.as_str()) => {
                problems.push(
                    self.wrong(key, node, "true or false")
                        .with_hint("YAML 1.2 reads yes/no/on/off as strings; write true or false"),
                );
                None
            }
            _ => {
                problems.push(self.wrong(key, node, "true or false"));
                None
            }
        }
    }

    /// A duration: a string for `parse_duration`, or a whole number of seconds.
    fn duration(&self, key: &str, problems: &mut Vec<Problem>) -> Option<At<String>> {
        let node = self.get(key)?;
        match &node.node {
            Node::Str(s) => Some(self.at(key, node, s.clone())),
            Node::Int(i) => Some(self.at(key, node, i.to_string())),
            _ => {
                problems.push(
                    self.wrong(key, node, "a duration").with_hint(
                        "write e.g. 90s, 15m, 2h, 1h30m, HH:MM:SS or a number of seconds",
                    ),
                );
                None
            }
        }
    }

    fn strings(&self, key: &str, problems: &mut Vec<Problem>) -> Option<At<Vec<String>>> {
        let node = self.get(key)?;
        string_list(node, self.child_path(key), problems)
    }

    /// A mapping of names to text (`env: {CUDA_VISIBLE_DEVICES: "0", OMP_NUM_THREADS: 4}`): a
    /// number or boolean value is taken as written, as a shell would see it.
    fn string_map(
        &self,
        key: &str,
        problems: &mut Vec<Problem>,
    ) -> Option<At<Vec<(String, String)>>> {
        let node = self.get(key)?;
        let Node::Map(entries) = &node.node else {
            problems.push(
                self.wrong(key, node, "a mapping of names to values")
                    .with_hint(format!("write e.g. {key}: {{OMP_NUM_THREADS: \"4\"}}")),
            );
            return None;
        };
        let section = Section {
            path: self.child_path(key),
            entries,
        };
        let mut values = Vec::with_capacity(entries.len());
        for (name, value) in entries {
            let text = match &value.node {
                Node::Str(s) => s.clone(),
                Node::Int(_) | Node::Float(_) | Node::Bool(_) => value.key_text(),
                _ => {
                    problems.push(section.wrong(&name.key_text(), value, "a string"));
                    continue;
                }
            };
            values.push((name.key_text(), text));
        }
        Some(self.at(key, node, values))
    }
}

/// A list of strings; each bad item is reported at its own position.
fn string_list(
    node: &Spanned,
    path: String,
    problems: &mut Vec<Problem>,
) -> Option<At<Vec<String>>> {
    let Node::Seq(items) = &node.node else {
        let mut problem = Problem::new(
            Some(node.pos),
            path.clone(),
            format!("expected a list of strings, got {}", describe(node)),
        );
        if let Node::Str(s) = &node.node {
            problem = problem.with_hint(format!(
                "write [{}]",
                crate::yaml::emit_json(&serde_json::Value::String(s.clone())).trim_end()
            ));
        }
        problems.push(problem);
        return None;
    };
    let mut values = Vec::with_capacity(items.len());
    let mut ok = true;
    for (index, item) in items.iter().enumerate() {
        match &item.node {
            Node::Str(s) => values.push(s.clone()),
            _ => {
                ok = false;
                problems.push(
                    Problem::new(
                        Some(item.pos),
                        format!("{path}[{index}]"),
                        format!("expected a string, got {}", describe(item)),
                    )
                    .with_hint("put it in quotes"),
                );
            }
        }
    }
    ok.then_some(At {
        value: values,
        pos: node.pos,
        path,
    })
}

/// What a node is, with its value when it is a scalar, for "expected X, got Y" messages.
pub(super) fn describe(node: &Spanned) -> String {
    match &node.node {
        Node::Null => "null".into(),
        Node::Bool(b) => format!("a boolean ({b})"),
        Node::Int(i) => format!("a number ({i})"),
        Node::Float(f) => format!("a number ({f})"),
        Node::Str(s) => {
            let shown: String = s.chars().take(40).collect();
            let ellipsis = if s.chars().count() > 40 { "…" } else { "" };
            format!("a string (\"{shown}{ellipsis}\")")
        }
        Node::Seq(_) => "a list".into(),
        Node::Map(_) => "a mapping".into(),
    }
}

//! The validated layer of the project config: raw values as written → [`ProjectConfig`].
//! Durations are parsed, enums and formats checked, Python HSM v1 keys folded into ours (a v1
//! key and its current name with different values is a problem: which one did the user mean?),
//! a source's `hpc:` laid over the project's, and the built-in `local` source added.

use super::raw::{
    At, RawCommand, RawConfig, RawDefaults, RawHpc, RawPaths, RawSource, RawSync, RawV1,
    SOURCE_KEYS,
};
use super::{
    default_name, parse_duration, Backend, HpcOptions, ProjectConfig, RunDefaults, SourceConfig,
    SourceKind, Strategy, SyncMode, SyncSettings,
};
use crate::core::command::{ArgStyle, CommandSpec, SourceSetup};
use crate::core::diag::{did_you_mean, Problem};
use indexmap::IndexMap;
use std::fmt::Display;
use std::path::Path;
use std::time::Duration;

/// The interpreter an agent source's tasks use unless its `python:` says otherwise.
pub const DEFAULT_AGENT_PYTHON: &str = "python3";

pub(super) fn resolve(raw: RawConfig, root: &Path, problems: &mut Vec<Problem>) -> ProjectConfig {
    let name = match raw.project.name {
        Some(name) if name.value.trim().is_empty() => {
            problems.push(empty(&name));
            default_name(root)
        }
        Some(name) => name.value.trim().to_string(),
        None => default_name(root),
    };
    let command = resolve_command(raw.command, raw.paths, &raw.v1, problems);
    let defaults = resolve_defaults(raw.defaults, raw.v1, problems);
    let top_hpc = fold_v1_hpc(raw.hpc, problems);
    let hpc = resolve_hpc(&top_hpc, problems);
    let sync = resolve_sync(&raw.sync, problems);
    let sources = resolve_sources(raw.sources, &top_hpc, &defaults, sync.mode, problems);
    ProjectConfig {
        root: root.to_path_buf(),
        file: None,
        name,
        command,
        defaults,
        hpc,
        sources,
        sync,
        positions: Default::default(),
    }
}

fn sync_mode(at: &At<String>, problems: &mut Vec<Problem>) -> Option<SyncMode> {
    let options = SyncMode::ALL.map(|m| (m.as_str(), m));
    choice(at, "sync mode", &options, problems)
}

fn resolve_sync(raw: &RawSync, problems: &mut Vec<Problem>) -> SyncSettings {
    let globs = |at: &Option<At<Vec<String>>>, problems: &mut Vec<Problem>| {
        let Some(at) = at else { return Vec::new() };
        at.value
            .iter()
            .filter(|glob| match crate::sync::check_glob(glob) {
                Ok(()) => true,
                Err(why) => {
                    problems.push(
                        at.problem(format!("`{glob}` is not a usable glob: {why}"))
                            .with_hint("write e.g. `*.py`, `conf/**` or `data/*.csv`"),
                    );
                    false
                }
            })
            .cloned()
            .collect()
    };
    SyncSettings {
        mode: raw
            .mode
            .as_ref()
            .and_then(|at| sync_mode(at, problems))
            .unwrap_or_default(),
        include: globs(&raw.include, problems),
        exclude: globs(&raw.exclude, problems),
    }
}

fn resolve_command(
    raw: RawCommand,
    paths: RawPaths,
    v1: &RawV1,
    problems: &mut Vec<Problem>,
) -> CommandSpec {
    let mut spec = CommandSpec::default();
    if let Some(python) = prefer(raw.python, paths.python_interpreter, problems) {
        spec.python = non_empty(&python, problems).unwrap_or(spec.python);
    }
    // v1 wrote `train_script` from `init` and `training_script` from HSMConfig's template.
    let v1_script = prefer(paths.train_script, paths.training_script, problems);
    spec.script = prefer(raw.script, v1_script, problems).and_then(|s| non_empty(&s, problems));
    spec.conda_env =
        prefer(raw.conda_env, paths.conda_env, problems).and_then(|s| non_empty(&s, problems));
    if let Some(template) = raw.template {
        match template.value.first() {
            None => problems.push(
                template
                    .problem("expected a non-empty list of strings (the program and its arguments)")
                    .with_hint(r#"write e.g. ["python", "-m", "pkg.train", "{overrides}"]"#),
            ),
            Some(program) if program.trim().is_empty() => {
                problems.push(template.problem("the first item (the program to run) is empty"))
            }
            Some(_) => spec.template = Some(template.value),
        }
    }
    if let Some(style) = raw.style {
        let options = [("hydra", ArgStyle::Hydra), ("argparse", ArgStyle::Argparse)];
        if let Some(style) = choice(&style, "style", &options, problems) {
            spec.style = style;
        }
    }
    // W&B keys only when the project asks: our key, else a v1 config that names a W&B project
    // (v1 always passed the group, and such a project's script expects it).
    spec.wandb_group = match raw.wandb_group {
        Some(wandb_group) => wandb_group.value,
        None => {
            v1.wandb_enabled.as_ref().is_some_and(|at| at.value)
                || (v1.wandb_project.is_some()
                    && v1.wandb_enabled.as_ref().is_none_or(|at| at.value))
        }
    };
    spec.hydra = raw.hydra.map(|at| at.value);
    spec.env = raw.env.map(|at| env_vars(at, problems)).unwrap_or_default();
    spec.pre_script = raw.pre_script.map(|at| at.value).unwrap_or_default();
    spec
}

/// An `env:` mapping, each name checked: a variable a shell can set, and not one of hsm's own
/// (`HSM_*`, which every task gets from hsm and a config could only break).
fn env_vars(at: At<Vec<(String, String)>>, problems: &mut Vec<Problem>) -> Vec<(String, String)> {
    let mut vars = Vec::with_capacity(at.value.len());
    for (name, value) in at.value {
        let usable = name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !usable {
            problems.push(
                Problem::new(
                    Some(at.pos),
                    format!("{}.{name}", at.path),
                    format!("`{name}` is not an environment variable name"),
                )
                .with_hint("use letters, digits and `_`, not starting with a digit"),
            );
        } else if name.starts_with("HSM_") {
            problems.push(
                Problem::new(
                    Some(at.pos),
                    format!("{}.{name}", at.path),
                    format!("`{name}` is set by hsm for every task"),
                )
                .with_hint("pick another name; HSM_* variables are hsm's own"),
            );
        } else {
            vars.push((name, value));
        }
    }
    vars
}

/// A source's own `conda_env`, `env` and `pre_script`.
fn source_setup(raw: &RawSource, problems: &mut Vec<Problem>) -> SourceSetup {
    SourceSetup {
        conda_env: raw
            .conda_env
            .as_ref()
            .and_then(|at| non_empty(at, problems)),
        env: raw
            .env
            .clone()
            .map(|at| env_vars(at, problems))
            .unwrap_or_default(),
        pre_script: raw
            .pre_script
            .as_ref()
            .map(|at| at.value.clone())
            .unwrap_or_default(),
    }
}

fn resolve_defaults(raw: RawDefaults, v1: RawV1, problems: &mut Vec<Problem>) -> RunDefaults {
    let parallel = prefer(raw.parallel, v1.max_concurrent_local, problems);
    let retries = prefer(raw.retries, v1.retry_attempts, problems);
    let mut defaults = RunDefaults {
        parallel: parallel.and_then(|n| ranged(&n, 1, "a positive integer", problems)),
        timeout: raw.timeout.and_then(|t| duration(&t, false, problems)),
        ..RunDefaults::default()
    };
    if let Some(retries) = retries {
        defaults.retries = ranged(&retries, 0, "a non-negative integer", problems).unwrap_or(0);
    }
    if let Some(grace) = raw.agent_grace.and_then(|g| duration(&g, true, problems)) {
        defaults.agent_grace = grace;
    }
    if let Some(after) = raw.steal_after.and_then(|g| duration(&g, true, problems)) {
        defaults.steal_after = (!after.is_zero()).then_some(after);
    }
    if let Some(limit) = raw
        .connect_timeout
        .and_then(|g| duration(&g, false, problems))
    {
        defaults.connect_timeout = limit;
    }
    if let Some(at) = &raw.work_dir {
        match super::work_dir::validate_work_dir(&at.value) {
            Ok(dir) => defaults.work_dir = Some(dir),
            Err(why) => problems.push(at.problem(why).with_hint(super::work_dir::HINT)),
        }
    }
    if let Some(at) = raw.min_free_disk {
        match parse_size(&at.value) {
            Some(bytes) => defaults.min_free_disk = bytes,
            None => problems.push(
                at.problem(format!("`{}` is not a size", at.value))
                    .with_hint(
                        "write a number with a unit, e.g. 500M, 2G or 1.5T (0 turns the check off)",
                    ),
            ),
        }
    }
    if let Some(grace) = raw.kill_grace.and_then(|g| duration(&g, true, problems)) {
        defaults.kill_grace = grace;
    }
    if let Some(strategy) = raw.strategy {
        // Python HSM's distributed mode wrote `round_robin`.
        let normalized = At {
            value: strategy.value.trim().replace('_', "-"),
            ..strategy
        };
        let options = Strategy::ALL.map(|s| (s.as_str(), s));
        if let Some(strategy) = choice(&normalized, "strategy", &options, problems) {
            defaults.strategy = strategy;
        }
    }
    defaults
}

/// Folds the top-level v1 `hpc:` keys into their current names.
fn fold_v1_hpc(mut hpc: RawHpc, problems: &mut Vec<Problem>) -> RawHpc {
    let v1_walltime = hpc.default_walltime.take();
    hpc.walltime = match (hpc.walltime.take(), v1_walltime) {
        (Some(current), Some(old)) => {
            // Compare meanings, not spellings: `4h` and `04:00:00` agree.
            match (parse_duration(&current.value), parse_duration(&old.value)) {
                (Ok(a), Ok(b)) if a != b => problems.push(conflict(&current, &old)),
                (_, Err(why)) => problems.push(old.problem(why)),
                _ => {}
            }
            Some(current)
        }
        (current, old) => current.or(old),
    };
    hpc.resources = prefer(hpc.resources.take(), hpc.default_resources.take(), problems);
    hpc.queue = prefer(hpc.queue.take(), hpc.default_queue.take(), problems);
    // v1's module_commands were whole shell lines (`module load cuda`), so they are
    // pre_script lines, run first.
    if let Some(commands) = hpc.module_commands.take() {
        hpc.pre_script = Some(match hpc.pre_script.take() {
            Some(lines) => At {
                value: commands.value.into_iter().chain(lines.value).collect(),
                ..lines
            },
            None => commands,
        });
    }
    hpc
}

/// A source's `hpc:` over the project's: a key written in the source replaces the project's
/// value (lists too: they are replaced, not appended).
fn overlay(over: Option<&RawHpc>, base: &RawHpc) -> RawHpc {
    let Some(over) = over else {
        return base.clone();
    };
    let pick = |a: &Option<At<String>>, b: &Option<At<String>>| a.clone().or_else(|| b.clone());
    let pick_int = |a: &Option<At<i64>>, b: &Option<At<i64>>| a.clone().or_else(|| b.clone());
    let pick_list =
        |a: &Option<At<Vec<String>>>, b: &Option<At<Vec<String>>>| a.clone().or_else(|| b.clone());
    RawHpc {
        walltime: pick(&over.walltime, &base.walltime),
        partition: pick(&over.partition, &base.partition),
        queue: pick(&over.queue, &base.queue),
        account: pick(&over.account, &base.account),
        qos: pick(&over.qos, &base.qos),
        cpus: pick_int(&over.cpus, &base.cpus),
        mem: pick(&over.mem, &base.mem),
        gpus: pick_int(&over.gpus, &base.gpus),
        gres: pick(&over.gres, &base.gres),
        modules: pick_list(&over.modules, &base.modules),
        pre_script: pick_list(&over.pre_script, &base.pre_script),
        directives: pick_list(&over.directives, &base.directives),
        max_array_size: pick_int(&over.max_array_size, &base.max_array_size),
        array_throttle: pick_int(&over.array_throttle, &base.array_throttle),
        array: over.array.clone().or_else(|| base.array.clone()),
        requeue: over.requeue.clone().or_else(|| base.requeue.clone()),
        max_jobs: pick_int(&over.max_jobs, &base.max_jobs),
        tasks_per_job: pick_int(&over.tasks_per_job, &base.tasks_per_job),
        pack_parallel: pick_int(&over.pack_parallel, &base.pack_parallel),
        poll: pick(&over.poll, &base.poll),
        resources: pick(&over.resources, &base.resources),
        ..RawHpc::default()
    }
}

fn resolve_hpc(raw: &RawHpc, problems: &mut Vec<Problem>) -> HpcOptions {
    let text = |at: &Option<At<String>>, problems: &mut Vec<Problem>| {
        at.as_ref().and_then(|at| non_empty(at, problems))
    };
    let mem = raw.mem.as_ref().and_then(|at| {
        if valid_mem(&at.value) {
            Some(at.value.trim().to_string())
        } else {
            problems.push(
                at.problem(format!("`{}` is not a memory size", at.value))
                    .with_hint("write a number and a unit, e.g. 16G, 4000M or 64gb"),
            );
            None
        }
    });
    if let Some(directives) = &raw.directives {
        if let Some(line) = directives
            .value
            .iter()
            .find(|d| d.trim_start().starts_with('#'))
        {
            problems.push(
                directives
                    .problem(format!("`{line}`: write the option only"))
                    .with_hint("e.g. --constraint=a100; hsm adds the #SBATCH/#PBS prefix"),
            );
        }
    }
    let packs = raw.tasks_per_job.as_ref().is_some_and(|k| k.value > 1);
    if let (Some(k), Some(array)) = (&raw.tasks_per_job, &raw.array) {
        if packs && !array.value {
            problems.push(
                k.problem("packing tasks needs job arrays, and `array: false` turns them off")
                    .with_hint("remove tasks_per_job, or array: false"),
            );
        }
    }
    // A tasks_per_job below 1 is its own problem: no knock-on one about pack_parallel.
    let bad_k = raw.tasks_per_job.as_ref().is_some_and(|k| k.value < 1);
    if let Some(p) = raw.pack_parallel.as_ref().filter(|_| !bad_k) {
        if !packs {
            problems.push(
                p.problem("pack_parallel applies to packed jobs only")
                    .with_hint("set tasks_per_job to 2 or more as well, or remove pack_parallel"),
            );
        } else if let Some(k) = raw.tasks_per_job.as_ref().filter(|k| p.value > k.value) {
            // Not clamped quietly: the user may think the job runs P tasks at once.
            problems.push(
                p.problem(format!(
                    "{} at once is more than the {} tasks a job runs (tasks_per_job)",
                    p.value, k.value
                ))
                .with_hint(format!(
                    "use pack_parallel: {} or less, or more tasks_per_job",
                    k.value
                )),
            );
        } else if p.value > 1 && (raw.gpus.is_some() || raw.gres.is_some()) {
            // Tasks running side by side in one job would all see all of its GPUs.
            problems.push(
                p.problem("tasks packed side by side would share every GPU of their job")
                    .with_hint("use pack_parallel: 1 with gpus/gres (tasks one after another)"),
            );
        }
    }
    HpcOptions {
        walltime: raw
            .walltime
            .as_ref()
            .and_then(|at| duration(at, false, problems)),
        partition: text(&raw.partition, problems),
        queue: text(&raw.queue, problems),
        account: text(&raw.account, problems),
        qos: text(&raw.qos, problems),
        cpus: raw
            .cpus
            .as_ref()
            .and_then(|at| ranged(at, 1, "a positive integer", problems)),
        mem,
        gpus: raw
            .gpus
            .as_ref()
            .and_then(|at| ranged(at, 0, "a non-negative integer", problems)),
        gres: text(&raw.gres, problems),
        modules: list(&raw.modules),
        pre_script: list(&raw.pre_script),
        directives: list(&raw.directives),
        max_array_size: raw
            .max_array_size
            .as_ref()
            .and_then(|at| ranged(at, 1, "a positive integer", problems)),
        array_throttle: raw
            .array_throttle
            .as_ref()
            .and_then(|at| ranged(at, 1, "a positive integer", problems)),
        array: raw.array.as_ref().map(|at| at.value),
        requeue: raw.requeue.as_ref().map(|at| at.value),
        max_jobs: raw
            .max_jobs
            .as_ref()
            .and_then(|at| ranged(at, 1, "a positive integer", problems)),
        tasks_per_job: raw
            .tasks_per_job
            .as_ref()
            .and_then(|at| ranged(at, 1, "a positive integer", problems)),
        pack_parallel: raw
            .pack_parallel
            .as_ref()
            .and_then(|at| ranged(at, 1, "a positive integer", problems)),
        poll: raw
            .poll
            .as_ref()
            .and_then(|at| duration(at, false, problems)),
        resources: text(&raw.resources, problems),
    }
}

fn list(at: &Option<At<Vec<String>>>) -> Vec<String> {
    at.as_ref().map(|at| at.value.clone()).unwrap_or_default()
}

/// Bytes of `500M`, `2G`, `1.5T`, `64kb` (binary units) or a bare `0`.
pub fn parse_size(text: &str) -> Option<u64> {
    let text = text.trim();
    if text == "0" {
        return Some(0);
    }
    if !valid_mem(text) {
        return None;
    }
    let number_len = text
        .bytes()
        .take_while(|b| b.is_ascii_digit() || *b == b'.')
        .count();
    let (number, unit) = text.split_at(number_len);
    let shift = match unit.trim().to_ascii_lowercase().trim_end_matches('b') {
        "k" => 10,
        "m" => 20,
        "g" => 30,
        _ => 40,
    };
    let bytes = number.parse::<f64>().ok()? * (1u64 << shift) as f64;
    (bytes < u64::MAX as f64).then_some(bytes as u64)
}

/// `16G`, `4000M`, `64gb`, `1.5T`, `512`+unit: a number and a K/M/G/T unit (optional `b`).
fn valid_mem(text: &str) -> bool {
    let text = text.trim();
    let number_len = text
        .bytes()
        .take_while(|b| b.is_ascii_digit() || *b == b'.')
        .count();
    let (number, unit) = text.split_at(number_len);
    let number_ok = !number.is_empty() && number.parse::<f64>().is_ok_and(|n| n > 0.0);
    let unit = unit.trim().to_ascii_lowercase();
    number_ok && ["k", "m", "g", "t", "kb", "mb", "gb", "tb"].contains(&unit.as_str())
}

fn resolve_sources(
    raw_sources: Vec<RawSource>,
    top_hpc: &RawHpc,
    defaults: &RunDefaults,
    sync: SyncMode,
    problems: &mut Vec<Problem>,
) -> IndexMap<String, SourceConfig> {
    let mut sources = IndexMap::new();
    for raw in raw_sources {
        if let Some(kind) = resolve_source(&raw, top_hpc, defaults, sync, problems) {
            let name = raw.name.value;
            sources.insert(name.clone(), SourceConfig { name, kind });
        }
    }
    if !sources.contains_key("local") {
        sources.shift_insert(
            0,
            "local".to_string(),
            SourceConfig {
                name: "local".into(),
                kind: SourceKind::Local {
                    slots: defaults.parallel,
                },
            },
        );
    }
    sources
}

fn resolve_source(
    raw: &RawSource,
    top_hpc: &RawHpc,
    defaults: &RunDefaults,
    sync: SyncMode,
    problems: &mut Vec<Problem>,
) -> Option<SourceKind> {
    let name = &raw.name.value;
    if let Err(why) = validate_source_name(name) {
        problems.push(raw.name.problem(why));
    }
    let type_name = match &raw.kind {
        None if name == "local" => "local",
        None => {
            problems.push(
                Problem::new(Some(raw.pos), raw.name.path.clone(), "missing `type`")
                    .with_hint("add type: agent (or local, slurm, pbs, sge)"),
            );
            return None;
        }
        Some(kind) => {
            let options = [
                ("local", "local"),
                ("agent", "agent"),
                ("slurm", "slurm"),
                ("pbs", "pbs"),
                ("sge", "sge"),
            ];
            choice(kind, "source type", &options, problems)?
        }
    };
    let type_pos = raw.kind.as_ref().map_or(raw.name.pos, |k| k.pos);
    let type_path = format!("{}.type", raw.name.path);
    if name == "local" && type_name != "local" {
        problems.push(
            Problem::new(
                Some(type_pos),
                type_path,
                format!("the source named `local` must have type local, not {type_name}"),
            )
            .with_hint(
                "`local` is the built-in source for this machine; give this source another name",
            ),
        );
        return None;
    }
    if name != "local" && type_name == "local" {
        problems.push(
            Problem::new(
                Some(type_pos),
                type_path,
                "only the source named `local` can have type local",
            )
            .with_hint("this machine is `local`; use type: agent for another host"),
        );
        return None;
    }

    let allowed: &[&str] = match type_name {
        "local" => &["type", "slots"],
        "agent" => &SOURCE_KEYS,
        _ => &["type", "slots", "hpc"],
    };
    for key in &raw.keys {
        // Keys no source takes were reported by the raw layer.
        if SOURCE_KEYS.contains(&key.value.as_str()) && !allowed.contains(&key.value.as_str()) {
            problems.push(
                key.problem(format!("not a setting of a {type_name} source"))
                    .with_hint(format!(
                        "a {type_name} source takes: {}",
                        allowed.join(", ")
                    )),
            );
        }
    }

    let slots = raw
        .slots
        .as_ref()
        .and_then(|at| ranged(at, 1, "a positive integer", problems));
    Some(match type_name {
        "local" => SourceKind::Local {
            slots: slots.or(defaults.parallel),
        },
        "agent" => {
            let missing = |key: &str, hint: &str| {
                Problem::new(
                    Some(raw.pos),
                    raw.name.path.clone(),
                    format!("an agent source needs `{key}`"),
                )
                .with_hint(hint.to_string())
            };
            let address = match &raw.address {
                None => {
                    problems.push(missing(
                        "address",
                        "add address: host:port (where `hsm-agent serve` listens)",
                    ));
                    String::new()
                }
                Some(at) => {
                    if let Err(why) = validate_address(&at.value) {
                        problems.push(at.problem(why).with_hint("write e.g. gpu1.lab:7300"));
                    }
                    at.value.trim().to_string()
                }
            };
            let fingerprint = match &raw.fingerprint {
                None => {
                    problems.push(missing(
                        "fingerprint",
                        "add fingerprint: sha256:... (printed by `hsm-agent fingerprint` on that host)",
                    ));
                    String::new()
                }
                Some(at) => {
                    if let Err(why) = validate_fingerprint(&at.value) {
                        problems.push(
                            at.problem(why)
                                .with_hint("copy it from `hsm-agent fingerprint` on that host"),
                        );
                    }
                    at.value.trim().to_string()
                }
            };
            let project_dir = match &raw.project_dir {
                None => {
                    problems.push(missing(
                        "project_dir",
                        "add project_dir: /path/to/the/project on that host (tasks run there; \
                         `agent add ... --project-dir DIR` writes it)",
                    ));
                    None
                }
                Some(at) => non_empty(at, problems),
            };
            let python = raw
                .python
                .as_ref()
                .and_then(|at| non_empty(at, problems))
                .unwrap_or_else(|| DEFAULT_AGENT_PYTHON.to_string());
            let backend = match &raw.backend {
                Some(at) => {
                    let options = Backend::ALL.map(|b| (b.as_str(), b));
                    choice(at, "backend", &options, problems).unwrap_or_default()
                }
                None => Backend::default(),
            };
            // Problems in the merged options are reported with their own positions; the
            // project-wide ones again for each source, which `tidy` folds into one.
            let hpc = resolve_hpc(&overlay(raw.hpc.as_ref(), top_hpc), problems);
            let transport = super::transport::resolve_transport(
                raw.transport.as_ref(),
                raw.ssh.as_ref(),
                raw.ssh_options.as_ref(),
                problems,
            );
            // `agent status|logs|stop` reach the host through the same destination.
            let ssh = transport.ssh.as_ref().map(|t| t.target.clone());
            SourceKind::Agent {
                address,
                fingerprint,
                slots,
                project_dir,
                python,
                backend,
                hpc,
                ssh,
                setup: source_setup(raw, problems),
                transport,
                sync: raw
                    .sync
                    .as_ref()
                    .and_then(|at| sync_mode(at, problems))
                    .unwrap_or(sync),
                work_dir: super::work_dir::resolve_work_dir(
                    raw.work_dir.as_ref(),
                    defaults.work_dir.as_ref(),
                    problems,
                ),
            }
        }
        "slurm" => SourceKind::Slurm {
            hpc: resolve_hpc(&overlay(raw.hpc.as_ref(), top_hpc), problems),
            slots,
        },
        "pbs" => SourceKind::Pbs {
            hpc: resolve_hpc(&overlay(raw.hpc.as_ref(), top_hpc), problems),
            slots,
        },
        _ => SourceKind::Sge {
            hpc: resolve_hpc(&overlay(raw.hpc.as_ref(), top_hpc), problems),
            slots,
        },
    })
}

/// Checks a source name: it names log files (`logs/sources/<name>.log`), so letters, digits,
/// `_`, `-` and `.` only, not starting with `.` or `-`.
pub fn validate_source_name(name: &str) -> Result<(), String> {
    let ok_chars = name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    if name.is_empty() {
        Err("a source name cannot be empty".into())
    } else if name.len() > 64 {
        Err(format!("source name `{name}` is longer than 64 characters"))
    } else if !ok_chars || name.starts_with(['.', '-']) {
        Err(format!(
            "`{name}` is not a usable source name: use letters, digits, `_`, `-` and `.`, not starting with `.` or `-`"
        ))
    } else {
        Ok(())
    }
}

/// Checks an ssh destination (`[user@]host` or an ssh_config alias): one word that `ssh` cannot
/// take for an option.
pub fn validate_ssh_destination(destination: &str) -> Result<(), String> {
    let text = destination.trim();
    if text.is_empty() {
        Err("the ssh destination is empty".into())
    } else if text.starts_with('-') {
        Err(format!("ssh destination `{text}` starts with `-`"))
    } else if text.chars().any(|c| c.is_whitespace() || c.is_control()) {
        Err(format!(
            "ssh destination `{text}` has spaces or control characters"
        ))
    } else {
        Ok(())
    }
}

/// Checks an agent address: `host:port` or `[ipv6]:port`, port 1–65535.
pub fn validate_address(address: &str) -> Result<(), String> {
    let fail = |why: &str| Err(format!("`{address}` is not a host:port address: {why}"));
    let text = address.trim();
    let (host, port) = if let Some(rest) = text.strip_prefix('[') {
        let Some((host, after)) = rest.split_once(']') else {
            return fail("missing `]` after the IPv6 address");
        };
        let Some(port) = after.strip_prefix(':') else {
            return fail("missing `:port` after the IPv6 address");
        };
        (host, port)
    } else {
        let Some((host, port)) = text.rsplit_once(':') else {
            return fail("missing `:port`");
        };
        if host.contains(':') {
            return fail("an IPv6 address needs brackets, e.g. [::1]:7300");
        }
        (host, port)
    };
    if host.is_empty() {
        return fail("the host is empty");
    }
    if host
        .chars()
        .any(|c| c.is_whitespace() || matches!(c, '/' | '@' | '?' | '#'))
    {
        return fail("the host has characters a host name cannot have");
    }
    match port.parse::<u16>() {
        Ok(0) => fail("the port must be 1-65535"),
        Ok(_) => Ok(()),
        Err(_) => fail("the port must be a number 1-65535"),
    }
}

/// Checks a pinned agent identity: `sha256:` and 64 lowercase hex digits.
pub fn validate_fingerprint(fingerprint: &str) -> Result<(), String> {
    let fail = |why: String| Err(format!("`{fingerprint}` is not a fingerprint: {why}"));
    let Some(hex) = fingerprint.trim().strip_prefix("sha256:") else {
        return fail("it must start with `sha256:`".into());
    };
    let n_digits = hex.chars().count();
    if n_digits != 64 {
        return fail(format!(
            "expected 64 hex digits after `sha256:`, found {n_digits}"
        ));
    }
    if !hex.chars().all(|c| c.is_ascii_hexdigit()) {
        return fail("only hex digits 0-9, a-f may follow `sha256:`".into());
    }
    if hex.chars().any(|c| c.is_ascii_uppercase()) {
        return fail("write the hex digits in lowercase".into());
    }
    Ok(())
}

/// The current key's value, else its Python HSM v1 alias; both with different values is a
/// problem reported at the v1 key.
fn prefer<T: PartialEq + Display>(
    current: Option<At<T>>,
    old: Option<At<T>>,
    problems: &mut Vec<Problem>,
) -> Option<At<T>> {
    match (current, old) {
        (Some(current), Some(old)) => {
            if current.value != old.value {
                problems.push(conflict(&current, &old));
            }
            Some(current)
        }
        (current, old) => current.or(old),
    }
}

fn conflict<T: Display>(current: &At<T>, old: &At<T>) -> Problem {
    old.problem(format!(
        "`{}` conflicts with `{}: {}` (line {})",
        old.value, current.path, current.value, current.pos.line
    ))
    .with_hint(format!(
        "keep one of them; `{}` is the current name",
        current.path
    ))
}

/// One of a fixed set of words, with a "did you mean" when it is close to one.
fn choice<T: Copy>(
    at: &At<String>,
    what: &str,
    options: &[(&str, T)],
    problems: &mut Vec<Problem>,
) -> Option<T> {
    let wanted = at.value.trim();
    if let Some((_, value)) = options.iter().find(|(word, _)| *word == wanted) {
        return Some(*value);
    }
    let words: Vec<&str> = options.iter().map(|(word, _)| *word).collect();
    let hint = match did_you_mean(wanted, &words) {
        Some(near) => format!("did you mean `{near}`?"),
        None => format!("expected one of: {}", words.join(", ")),
    };
    problems.push(
        at.problem(format!("unknown {what} `{}`", at.value))
            .with_hint(hint),
    );
    None
}

/// An integer at least `min` that fits `T`.
fn ranged<T: TryFrom<i64>>(
    at: &At<i64>,
    min: i64,
    expected: &str,
    problems: &mut Vec<Problem>,
) -> Option<T> {
    match T::try_from(at.value) {
        Ok(value) if at.value >= min => Some(value),
        _ => {
            problems.push(at.problem(format!("expected {expected}, got {}", at.value)));
            None
        }
    }
}

fn duration(at: &At<String>, allow_zero: bool, problems: &mut Vec<Problem>) -> Option<Duration> {
    match parse_duration(&at.value) {
        Ok(d) if d.is_zero() && !allow_zero => {
            problems.push(
                at.problem("must be longer than zero")
                    .with_hint("leave the key out (or write null) for no limit"),
            );
            None
        }
        Ok(d) => Some(d),
        Err(why) => {
            problems.push(at.problem(why));
            None
        }
    }
}

fn non_empty(at: &At<String>, problems: &mut Vec<Problem>) -> Option<String> {
    let value = at.value.trim();
    if value.is_empty() {
        problems.push(empty(at));
        None
    } else {
        Some(value.to_string())
    }
}

fn empty(at: &At<String>) -> Problem {
    at.problem("is empty")
        .with_hint("give a value, or leave the key out for the default")
}

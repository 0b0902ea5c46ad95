//! `sweep run`, `sweep complete`, `sweep status` and `sweep cancel`: validate everything first
//! (exit 2, nothing created), then create or open the sweep's state and hand it to the engine.

use super::config_cmd::{display_path, load_config, load_sweep, resolve_sweep_path};
use super::launch::{check_command, launch_command, SweepSettings};
use super::{
    user_error, CancelArgs, CompleteArgs, ExecArgs, Global, RunArgs, StatusArgs, EXIT_FAILED,
    EXIT_INTERRUPTED, EXIT_OK,
};
use crate::actors::local::kill_orphans;
use crate::actors::sweep::{now_ms, RunContext, RunSummary, SourceSpec, SourceSpecKind};
use crate::config::{self, ProjectConfig, SourceKind};
use crate::core::command::{build_argv, LaunchContext};
use crate::core::plan::{plan_completion, CompletionRequest, RecordedTask};
use crate::core::state::{Change, Counts, Strategy, SweepCore, TaskState, TaskStatus};
use crate::core::stats::source_stats;
use crate::core::taskspec::parse_task_ids;
use crate::core::value::{params_hash, task_width, Params};
use crate::engine;
use crate::layout::{self, SweepPaths};
use crate::progress::{Progress, ProgressMode};
use crate::store::{NewTask, Store, TaskRow};
use crate::yaml::emit_json;
use anyhow::Context as _;
use serde_json::json;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The most tasks one sweep may have: every task is a row in sweep.db and a little memory in
/// the coordinator (about 1 KB), so a sweep beyond this is almost surely a mistake.
pub const MAX_TASKS: u64 = 20_000_000;

/// The validated options of a run or completion.
struct ExecPlan {
    sources: Vec<SourceSpec>,
    strategy: Strategy,
    timeout: Option<Duration>,
    kill_grace: Duration,
    retries: u32,
    max_runs: Option<u64>,
}

fn validate_exec(cfg: &ProjectConfig, args: &ExecArgs) -> anyhow::Result<ExecPlan> {
    let max_runs = match args.max_runs {
        Some(n) if n <= 0 => {
            return Err(user_error(format!(
                "--max-runs {n}: expected a positive number of tasks"
            )))
        }
        Some(n) => Some(n as u64),
        None => None,
    };
    let parallel = match args.parallel {
        Some(n) if n <= 0 => {
            return Err(user_error(format!(
                "--parallel {n}: expected a positive number of slots"
            )))
        }
        Some(n) => Some(n as usize),
        None => None,
    };
    let walltime = args
        .walltime
        .as_deref()
        .map(|text| positive_duration("--walltime", text))
        .transpose()?;
    if args.array_throttle == Some(0) {
        return Err(user_error(
            "--array-throttle 0: expected a positive number of array elements",
        ));
    }
    let timeout = match &args.timeout {
        Some(text) => Some(positive_duration("--timeout", text)?),
        None => cfg.defaults.timeout,
    };
    let strategy = match args.strategy.as_deref() {
        None => cfg.defaults.strategy,
        Some(text) => text
            .parse::<Strategy>()
            .map_err(|e| user_error(format!("--strategy: {e}")))?,
    };
    let names: Vec<String> = if args.sources.is_empty() {
        vec!["local".to_string()]
    } else {
        args.sources
            .iter()
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect()
    };
    if names.is_empty() {
        return Err(user_error(
            "--sources: name at least one source, e.g. --sources local",
        ));
    }
    let mut sources = Vec::new();
    // Built once, for the first source that compares its copy of the project.
    let mut manifest: Option<std::sync::Arc<crate::sync::Manifest>> = None;
    for name in &names {
        if sources.iter().any(|s: &SourceSpec| &s.name == name) {
            return Err(user_error(format!("--sources: `{name}` is listed twice")));
        }
        let Some(source) = cfg.sources.get(name) else {
            let known: Vec<&str> = cfg.sources.keys().map(String::as_str).collect();
            return Err(user_error(format!(
                "--sources: no source named `{name}` (configured: {}) — add it under `sources:` in the project config",
                known.join(", ")
            )));
        };
        match &source.kind {
            SourceKind::Local { slots } => {
                let slots = parallel
                    .or(*slots)
                    .or(cfg.defaults.parallel)
                    .unwrap_or_else(default_slots);
                sources.push(SourceSpec {
                    attach_only: false,
                    name: name.clone(),
                    slots,
                    kind: SourceSpecKind::Local,
                });
            }
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
                let hpc = hpc_request(*backend, hpc, args, walltime);
                let sync = match sync {
                    // A dry run starts nothing: no need to read the whole project.
                    config::SyncMode::Off => None,
                    _ if args.dry_run => None,
                    mode => {
                        let manifest = match &manifest {
                            Some(m) => std::sync::Arc::clone(m),
                            None => {
                                let built = crate::sync::build(&cfg.root, &cfg.sync)
                                    .map_err(|why| user_error(format!("sync: {why}")))?;
                                let built = std::sync::Arc::new(built);
                                manifest = Some(std::sync::Arc::clone(&built));
                                built
                            }
                        };
                        Some(crate::sync::SourceSync {
                            mode: *mode,
                            allow_drift: args.allow_remote_drift,
                            manifest,
                            set_on_source: cfg
                                .key_pos(&[&format!("sources.{name}.sync")])
                                .is_some(),
                        })
                    }
                };
                sources.push(SourceSpec {
                    attach_only: false,
                    name: name.clone(),
                    // Until it connects and says; it gets no work before that.
                    slots: slots.unwrap_or(1),
                    kind: SourceSpecKind::Agent {
                        address: address.clone(),
                        fingerprint: fingerprint.clone(),
                        project_dir: project_dir.clone(),
                        python: python.clone(),
                        slots_configured: slots.is_some(),
                        hpc,
                        setup: setup.clone(),
                        transport: transport.clone(),
                        sync,
                        work_dir: work_dir.clone(),
                    },
                });
            }
            SourceKind::Slurm { hpc, slots } | SourceKind::Pbs { hpc, slots } => {
                // This process submits to the scheduler of the host it runs on (a login node).
                let backend = match source.kind {
                    SourceKind::Slurm { .. } => config::Backend::Slurm,
                    _ => config::Backend::Pbs,
                };
                let Some(request) = hpc_request(backend, hpc, args, walltime) else {
                    continue;
                };
                sources.push(SourceSpec {
                    attach_only: false,
                    name: name.clone(),
                    slots: slots.unwrap_or(DEFAULT_SCHEDULER_SLOTS),
                    kind: SourceSpecKind::Scheduler {
                        hpc: request,
                        poll: hpc.poll.unwrap_or(DEFAULT_SCHEDULER_POLL),
                    },
                });
            }
        }
    }
    Ok(ExecPlan {
        sources,
        strategy,
        timeout,
        kill_grace: cfg.defaults.kill_grace,
        retries: args.retries.unwrap_or(cfg.defaults.retries),
        max_runs,
    })
}

fn default_slots() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

pub fn run(global: &Global, args: &RunArgs) -> anyhow::Result<i32> {
    let cfg = load_config(global)?;
    let sweep_path = resolve_sweep_path(global, args.sweep_file.as_deref());
    let (sweep, sweep_text) = load_sweep(global, &sweep_path)?;
    let exec = validate_exec(&cfg, &args.exec)?;
    if let Some(id) = &args.sweep_id {
        if !layout::valid_sweep_id(id) {
            return Err(user_error(format!(
                "--sweep-id {id}: use letters, digits, `_`, `-` and `.` only"
            )));
        }
    }
    let count = sweep.spec.count();
    let shown = display_path(global, &sweep_path);
    if args.count_only {
        // A bare number for scripts; past u64 there is no number to print, so say why instead.
        let n_tasks = match (exec.max_runs, count.exact()) {
            (Some(m), total) => total.map_or(m, |t| m.min(t)),
            (None, Some(total)) => total,
            (None, None) => {
                return Err(user_error(format!(
                    "{shown}: {count} tasks, too many to count exactly or to run (one sweep \
                     holds {MAX_TASKS}) — split the sweep"
                )))
            }
        };
        println!("{n_tasks}");
        return Ok(EXIT_OK);
    }
    if count == 0 {
        return Err(user_error(format!(
            "{shown}: `exclude` removes every combination; nothing to run"
        )));
    }
    // The whole sweep is created (`--max-runs` only limits what runs now; `complete` runs
    // the rest), so the whole sweep must fit.
    let total = match count.exact() {
        Some(total) if total <= MAX_TASKS => total,
        _ => {
            return Err(user_error(format!(
            "{shown}: {count} tasks is more than one sweep holds ({MAX_TASKS}) — split the sweep"
        )))
        }
    };
    let n_tasks = exec.max_runs.map_or(total, |m| m.min(total));
    let first = sweep.spec.iter().next().unwrap_or_default();
    let command = launch_command(&cfg, sweep.script.as_deref(), args.group.is_some());
    check_command(&cfg, &command, sweep.script.as_deref(), &first)?;

    let outputs = layout::outputs_dir(&cfg.root);
    let base_id = args
        .sweep_id
        .clone()
        .unwrap_or_else(|| layout::sweep_id_at(now_ms() / 1000));
    if args.exec.dry_run {
        let settings = SweepSettings {
            script_override: sweep.script.clone(),
            group: args.group.clone().unwrap_or_else(|| base_id.clone()),
            command,
        };
        let paths = SweepPaths::new(outputs.join(&base_id)).with_task_width(task_width(total));
        let tasks = sweep
            .spec
            .iter()
            .take(n_tasks as usize)
            .enumerate()
            .map(|(i, params)| (i as u64 + 1, params));
        return print_dry_run(
            &settings,
            &base_id,
            &paths,
            tasks,
            args.exec.json,
            None,
            &hpc_sources(&exec),
        );
    }

    let (sweep_id, paths) = layout::create_sweep_dir(&outputs, &base_id, args.sweep_id.is_some())
        .map_err(|e| {
        if args.sweep_id.is_some() && e.kind() == std::io::ErrorKind::AlreadyExists {
            user_error(format!(
                "--sweep-id: {e} — choose another id or use `sweep complete {base_id}`"
            ))
        } else {
            anyhow::Error::new(e).context(format!(
                "creating a sweep directory in {}",
                outputs.display()
            ))
        }
    })?;
    let settings = SweepSettings {
        script_override: sweep.script.clone(),
        group: args.group.clone().unwrap_or_else(|| sweep_id.clone()),
        command,
    };
    let paths = paths.with_task_width(task_width(total));
    println!("sweep_id: {sweep_id}");
    let lock = acquire_lock(&paths, &sweep_id)?;

    std::fs::write(paths.config_copy(), &sweep_text)
        .with_context(|| format!("writing {}", paths.config_copy().display()))?;
    let created = now_ms();
    let meta = vec![
        ("sweep_id", sweep_id.clone()),
        ("created", created.to_string()),
        ("sweep_file", sweep_path.display().to_string()),
        ("project_root", cfg.root.display().to_string()),
        ("group", settings.group.clone()),
        // Whether tasks get `wandb.group`: `complete` passes it exactly when `run` did.
        ("wandb_group", settings.command.wandb_group.to_string()),
        (
            "script_override",
            settings.script_override.clone().unwrap_or_default(),
        ),
        ("total_combinations", total.to_string()),
        (
            "metadata",
            serde_json::to_string(&sweep.metadata).unwrap_or_else(|_| "null".into()),
        ),
        ("hsm_version", env!("CARGO_PKG_VERSION").to_string()),
    ];
    // Streamed from the expansion into SQLite: the whole sweep is never held twice.
    let store = Store::create(
        &paths.db(),
        &meta,
        paths.task_width,
        sweep.spec.iter().enumerate().map(|(i, params)| NewTask {
            index: i as u64 + 1,
            params_hash: params_hash(&params),
            params,
        }),
    )?;
    let rows = store.tasks()?;
    write_metadata(
        &paths,
        &sweep_id,
        &cfg,
        &exec,
        &rows,
        created,
        sweep.metadata.as_ref(),
    )?;
    let to_run: Vec<u64> = (1..=n_tasks).collect();
    note(
        global,
        &format!(
            "running {} task{} on {}",
            to_run.len(),
            if to_run.len() == 1 { "" } else { "s" },
            describe_sources(&exec.sources)
        ),
    );
    let summary = execute(
        global,
        &cfg,
        &exec,
        &settings,
        &sweep_id,
        &paths,
        store,
        rows,
        &to_run,
        &[],
        0,
    )?;
    drop(lock);
    finish(
        global,
        &sweep_id,
        &paths,
        &cfg,
        &exec,
        created,
        &summary,
        sweep.metadata.as_ref(),
    )
}

/// Information for the person at the terminal; `-q` silences it.
fn note(global: &Global, line: &str) {
    if !global.quiet {
        eprintln!("{line}");
    }
}

fn describe_sources(sources: &[SourceSpec]) -> String {
    sources
        .iter()
        .map(|s| match s.kind {
            // An agent without configured slots says how many it has when it connects.
            SourceSpecKind::Agent {
                slots_configured: false,
                ..
            } => format!("{} (its own slots)", s.name),
            _ => format!(
                "{} ({} slot{})",
                s.name,
                s.slots,
                if s.slots == 1 { "" } else { "s" }
            ),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

#[allow(clippy::too_many_arguments)]
fn execute(
    global: &Global,
    cfg: &ProjectConfig,
    exec: &ExecPlan,
    settings: &SweepSettings,
    sweep_id: &str,
    paths: &SweepPaths,
    store: Store,
    rows: Vec<TaskRow>,
    to_run: &[u64],
    attach: &[(u64, u32, usize)],
    n_rerun_final: u64,
) -> anyhow::Result<RunSummary> {
    let tasks: Vec<TaskState> = rows
        .iter()
        .map(|row| TaskState {
            index: row.index,
            status: row.status,
            attempt: row.attempt,
            source: None,
            retries_left: 0,
            pid: None,
            lost: 0,
        })
        .collect();
    let sources =
        exec.sources
            .iter()
            .map(|s| {
                use crate::core::state::{SourceClass, SourceState};
                let class = match &s.kind {
                    SourceSpecKind::Local => SourceClass::Local,
                    SourceSpecKind::Agent { hpc: None, .. } => SourceClass::Agent,
                    SourceSpecKind::Agent { hpc: Some(_), .. }
                    | SourceSpecKind::Scheduler { .. } => SourceClass::Batch,
                };
                let state = if s.attach_only {
                    SourceState::attach_only(s.name.clone())
                } else {
                    SourceState::new(s.name.clone(), s.slots)
                };
                state.with_class(class)
            })
            .collect();
    // What `sweep watch` shows per source (it reads sweep.db only): this run's sources.
    if let Err(e) = store.set_meta(
        crate::watch::view::SOURCES_META,
        &super::watch_cmd::sources_meta(&exec.sources),
    ) {
        tracing::warn!(error = %e, "cannot record the run's sources in sweep.db");
    }
    let mut core =
        SweepCore::new(tasks, sources, exec.strategy).with_steal_after(cfg.defaults.steal_after);
    let initial = core.counts();
    core.enqueue(to_run, exec.retries, now_ms());
    core.attach(attach, exec.retries, now_ms());
    let mut progress = Progress::new(
        ProgressMode::detect(global.quiet),
        (to_run.len() + attach.len()) as u64,
        initial,
        paths.task_width,
    );
    progress.rerunning(n_rerun_final);
    let run = RunContext {
        sweep_id: sweep_id.to_string(),
        paths: paths.clone(),
        project_root: cfg.root.clone(),
        command: settings.command.clone(),
        script_override: settings.script_override.clone(),
        group: settings.group.clone(),
        prefetch: to_run
            .iter()
            .copied()
            .filter(|&i| rows.get((i - 1) as usize).is_some_and(|r| r.attempt == 0))
            .collect(),
        // Moved out of the rows, not cloned: one copy of every task's parameters per run.
        params: std::sync::Arc::new(rows.into_iter().map(|r| r.params).collect()),
        sources: exec.sources.clone(),
        timeout: exec.timeout,
        kill_grace: exec.kill_grace,
        agent_grace: cfg.defaults.agent_grace,
        min_free_disk: cfg.defaults.min_free_disk,
        connect_timeout: cfg.defaults.connect_timeout,
    };
    engine::execute(run, core, store, progress)
}

#[allow(clippy::too_many_arguments)]
fn finish(
    global: &Global,
    sweep_id: &str,
    paths: &SweepPaths,
    cfg: &ProjectConfig,
    exec: &ExecPlan,
    created: i64,
    summary: &RunSummary,
    metadata: Option<&crate::core::value::Value>,
) -> anyhow::Result<i32> {
    let store = Store::open(&paths.db())?;
    let rows = store.task_statuses()?;
    if let Err(e) = write_metadata(paths, sweep_id, cfg, exec, &rows, created, metadata) {
        tracing::warn!(error = %e, "cannot update sweep_metadata.yaml");
    }
    let c = summary.counts;
    println!(
        "{sweep_id}: {} completed, {} failed, {} cancelled, {} pending, of {} task{} ({:.1}s)",
        c.completed,
        c.failed,
        c.cancelled,
        c.pending + c.queued + c.running,
        c.total(),
        if c.total() == 1 { "" } else { "s" },
        summary.elapsed.as_secs_f64()
    );
    let outputs = display_path(global, &paths.root);
    if !global.quiet {
        eprintln!("outputs: {outputs}");
    }
    super::report_cmd::after_run(global, sweep_id, paths);
    if let Some(failure) = &summary.failure {
        eprintln!("hsm-coordinator: the sweep state could not be written: {failure}");
        eprintln!("fix the cause, then run `hsm-coordinator sweep complete {sweep_id}`");
        return Ok(EXIT_FAILED);
    }
    if let Some(stopped) = &summary.stopped {
        eprintln!("hsm-coordinator: {}", stopped.message);
        eprintln!(
            "the sweep's state is kept; once fixed, `hsm-coordinator sweep complete {sweep_id}` runs what is left"
        );
        return Ok(if stopped.user_fix {
            crate::cli::EXIT_USAGE
        } else {
            EXIT_FAILED
        });
    }
    if summary.interrupted {
        eprintln!("interrupted; run `hsm-coordinator sweep complete {sweep_id}` to finish");
        return Ok(EXIT_INTERRUPTED);
    }
    if c.pending + c.queued + c.running > 0 && c.failed + c.cancelled == 0 {
        eprintln!(
            "{} task{} pending; `hsm-coordinator sweep complete {sweep_id}` runs them",
            c.pending + c.queued + c.running,
            if c.pending + c.queued + c.running == 1 {
                ""
            } else {
                "s"
            }
        );
        // Left out on purpose with --max-runs: what was asked for succeeded.
        return Ok(if exec.max_runs.is_some() {
            EXIT_OK
        } else {
            EXIT_FAILED
        });
    }
    if c.failed + c.cancelled > 0 {
        note(global, &format!(
            "see `hsm-coordinator sweep status {sweep_id}`; `hsm-coordinator sweep complete {sweep_id}` re-runs failed and cancelled tasks"
        ));
        return Ok(EXIT_FAILED);
    }
    Ok(EXIT_OK)
}

fn write_metadata(
    paths: &SweepPaths,
    sweep_id: &str,
    cfg: &ProjectConfig,
    exec: &ExecPlan,
    rows: &[TaskRow],
    created: i64,
    metadata: Option<&crate::core::value::Value>,
) -> anyhow::Result<()> {
    let counts: Counts = rows.iter().map(|r| r.status).collect();
    let configured: Vec<(String, usize)> = exec
        .sources
        .iter()
        .map(|s| (s.name.clone(), s.slots))
        .collect();
    // The figures are a view: a database that cannot be read for them leaves them out.
    let attempts = Store::open(&paths.db())
        .and_then(|store| store.attempt_rows())
        .unwrap_or_default();
    let stats = source_stats(&attempts);
    let sources = super::source_stats::metadata_sources(&configured, &stats);
    let value = json!({
        "sweep_id": sweep_id,
        "created": layout::format_utc(created),
        "updated": layout::format_utc(now_ms()),
        "project": cfg.name,
        "project_root": cfg.root.display().to_string(),
        "sources": sources,
        "strategy": exec.strategy.as_str(),
        "counts": {
            "total": counts.total(),
            "completed": counts.completed,
            "failed": counts.failed,
            "cancelled": counts.cancelled,
            "running": counts.running,
            "queued": counts.queued,
            "pending": counts.pending,
        },
        "metadata": metadata,
        "versions": {"hsm": env!("CARGO_PKG_VERSION"), "schema": crate::store::SCHEMA_VERSION},
    });
    layout::write_atomic(&paths.metadata(), emit_json(&value).as_bytes())
        .with_context(|| format!("writing {}", paths.metadata().display()))
}

/// Holds the sweep's lock file for as long as this coordinator works on the sweep. The lock is
/// an OS file lock, so it is released even by `kill -9`.
fn acquire_lock(paths: &SweepPaths, sweep_id: &str) -> anyhow::Result<File> {
    try_acquire_lock(paths)?.ok_or_else(|| {
        let pid = std::fs::read_to_string(paths.lock()).unwrap_or_default();
        user_error(format!(
            "sweep {sweep_id} is being run by another coordinator (pid {}) — wait for it, or `hsm-coordinator sweep cancel {sweep_id}`",
            pid.trim()
        ))
    })
}

/// The lock, or `None` when a coordinator holds it. `status` and `cancel` probe the lock by
/// taking it for an instant, so a failed attempt is retried for a moment before giving up.
fn try_acquire_lock(paths: &SweepPaths) -> anyhow::Result<Option<File>> {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(paths.lock())
        .with_context(|| format!("opening {}", paths.lock().display()))?;
    for _ in 0..50 {
        if file.try_lock().is_ok() {
            let _ = file.set_len(0);
            let _ = std::fs::write(paths.lock(), std::process::id().to_string());
            return Ok(Some(file));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(None)
}

/// True when a coordinator currently holds the sweep's lock.
pub(super) fn is_active(paths: &SweepPaths) -> bool {
    let Ok(file) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(paths.lock())
    else {
        return false;
    };
    match file.try_lock() {
        Ok(()) => {
            let _ = file.unlock();
            false
        }
        Err(_) => true,
    }
}

/// Opens a sweep's database; one whose creation never finished is the user's to re-run.
pub(super) fn open_store(paths: &SweepPaths, sweep_id: &str) -> anyhow::Result<Store> {
    match Store::open(&paths.db()) {
        Err(crate::store::StoreError::Incomplete { .. }) if is_active(paths) => Err(user_error(
            format!("sweep {sweep_id} is still being created; try again in a moment"),
        )),
        Err(crate::store::StoreError::Incomplete { .. }) => Err(user_error(format!(
            "sweep {sweep_id} was never fully created (its coordinator stopped while creating it); nothing of it ran — start it again with `hsm-coordinator sweep run`"
        ))),
        other => Ok(other?),
    }
}

/// The sweep a command names (its id or directory), or the project's latest when none is named.
pub(super) fn resolve_sweep(
    global: &Global,
    cfg: &ProjectConfig,
    id: Option<&str>,
) -> anyhow::Result<(String, SweepPaths)> {
    match id {
        Some(id) => find_sweep(global, cfg, id),
        None => latest_sweep(global, cfg),
    }
}

/// Finds a sweep by id (under the project's outputs) or by path.
fn find_sweep(
    global: &Global,
    cfg: &ProjectConfig,
    id: &str,
) -> anyhow::Result<(String, SweepPaths)> {
    let as_path = PathBuf::from(id);
    if as_path.join("sweep.db").is_file() {
        let root = std::fs::canonicalize(&as_path).unwrap_or(as_path);
        let name = root
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| id.to_string());
        return Ok((name, SweepPaths::new(root)));
    }
    let outputs = layout::outputs_dir(&cfg.root);
    let paths = SweepPaths::new(outputs.join(id));
    if layout::valid_sweep_id(id) && paths.db().is_file() {
        return Ok((id.to_string(), paths));
    }
    let recent: Vec<String> = list_sweeps(&outputs)
        .into_iter()
        .rev()
        .take(5)
        .map(|(n, _)| n)
        .collect();
    Err(user_error(format!(
        "no sweep `{id}` in {}{}",
        display_path(global, &outputs),
        if recent.is_empty() {
            String::new()
        } else {
            format!(" (recent: {})", recent.join(", "))
        }
    )))
}

/// The most recently created sweep of the project (what `status` and `complete` take when no
/// id is given).
fn latest_sweep(global: &Global, cfg: &ProjectConfig) -> anyhow::Result<(String, SweepPaths)> {
    let outputs = layout::outputs_dir(&cfg.root);
    list_sweeps(&outputs).pop().ok_or_else(|| {
        user_error(format!(
            "no sweeps in {} — start one with `hsm-coordinator sweep run`",
            display_path(global, &outputs)
        ))
    })
}

/// Sweeps under `outputs`, oldest first (by the database's creation order: modification time of
/// the directory is unreliable, so the `created` meta would need opening every db; names of
/// default ids sort by time, and the directory mtime breaks ties for custom ids).
pub(super) fn list_sweeps(outputs: &Path) -> Vec<(String, SweepPaths)> {
    let Ok(entries) = std::fs::read_dir(outputs) else {
        return Vec::new();
    };
    let mut sweeps: Vec<(std::time::SystemTime, String, SweepPaths)> = entries
        .filter_map(|e| e.ok())
        .filter(|e| e.path().join("sweep.db").is_file())
        .map(|e| {
            let created = e
                .metadata()
                .and_then(|m| m.created().or_else(|_| m.modified()))
                .unwrap_or(std::time::UNIX_EPOCH);
            (
                created,
                e.file_name().to_string_lossy().into_owned(),
                SweepPaths::new(e.path()),
            )
        })
        .collect();
    sweeps.sort_by(|a, b| a.0.cmp(&b.0).then_with(|| a.1.cmp(&b.1)));
    sweeps
        .into_iter()
        .map(|(_, name, paths)| (name, paths))
        .collect()
}

fn open_settings(store: &Store, cfg: &ProjectConfig) -> anyhow::Result<SweepSettings> {
    let script_override = store.meta("script_override")?.filter(|s| !s.is_empty());
    let group = store.meta("group")?.unwrap_or_default();
    // Sweeps recorded before this key passed the group whenever the config did.
    let wandb = store.meta("wandb_group")?.is_some_and(|v| v == "true");
    let command = launch_command(cfg, script_override.as_deref(), wandb);
    Ok(SweepSettings {
        script_override,
        group,
        command,
    })
}

pub fn complete(global: &Global, args: &CompleteArgs) -> anyhow::Result<i32> {
    let cfg = load_config(global)?;
    let mut exec = validate_exec(&cfg, &args.exec)?;
    // A Python HSM v1 sweep directory (no sweep.db) is taken over in place first.
    let requested = match &args.sweep_id {
        Some(id) => id.clone(),
        None => {
            let (id, _) = latest_sweep(global, &cfg)?;
            note(global, &format!("completing the latest sweep, {id}"));
            id
        }
    };
    if let Some(v1_paths) = super::v1_import::find(&layout::outputs_dir(&cfg.root), &requested) {
        let v1_id = v1_paths
            .root
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| requested.clone());
        if args.exec.dry_run {
            super::v1_import::preview(global, &v1_paths, &v1_id)?;
            return Ok(EXIT_OK);
        }
        let lock = acquire_lock(&v1_paths, &v1_id)?;
        super::v1_import::import(global, &v1_paths, &v1_id, &cfg.root)?;
        drop(lock);
    }
    let (sweep_id, paths) = find_sweep(global, &cfg, &requested)?;
    let lock = if args.exec.dry_run {
        None
    } else {
        Some(acquire_lock(&paths, &sweep_id)?)
    };
    let store = open_store(&paths, &sweep_id)?;
    let paths = paths.with_task_width(store.task_width()?);
    if lock.is_some() {
        // A cancel request left from an earlier run must not stop this one; one arriving from
        // now on (we hold the lock) is meant for this run.
        store.clear_cancel()?;
    }
    let settings = open_settings(&store, &cfg)?;
    let rows = store.tasks()?;
    let total = rows.len() as u64;
    let task_ids = match &args.task_ids {
        Some(spec) => Some(
            parse_task_ids(spec, total, &|path: &str| {
                let path = Path::new(path);
                if path.is_absolute() || path.exists() {
                    std::fs::read_to_string(path)
                } else {
                    std::fs::read_to_string(global.project_dir.join(path))
                }
            })
            .map_err(|e| user_error(format!("--task-ids: {e}")))?,
        ),
        None => None,
    };
    let recorded: Vec<RecordedTask> = rows
        .iter()
        .map(|r| RecordedTask {
            index: r.index,
            status: r.status,
        })
        .collect();
    // Attempts an agent may still hold from a coordinator that died (recorded queued or running
    // there) are taken up, not run again: the agent reports how they ended, or that it does not
    // hold them, and only then do they run again. Its source joins this run for that alone when
    // not among --sources.
    let mut attach: Vec<(u64, u32, usize)> = Vec::new();
    for row in &rows {
        if !matches!(row.status, TaskStatus::Queued | TaskStatus::Running) || row.attempt == 0 {
            continue;
        }
        let named = task_ids
            .as_ref()
            .is_some_and(|ids| ids.contains(&row.index));
        let Some(name) = row.source.as_deref().filter(|_| !named) else {
            continue;
        };
        let Some(config::SourceConfig {
            kind:
                SourceKind::Agent {
                    address,
                    fingerprint,
                    project_dir,
                    python,
                    setup,
                    transport,
                    work_dir,
                    ..
                },
            ..
        }) = cfg.sources.get(name)
        else {
            continue;
        };
        let source = match exec.sources.iter().position(|s| s.name == name) {
            Some(i) => i,
            None => {
                exec.sources.push(SourceSpec {
                    name: name.to_string(),
                    slots: 1,
                    kind: SourceSpecKind::Agent {
                        address: address.clone(),
                        fingerprint: fingerprint.clone(),
                        project_dir: project_dir.clone(),
                        python: python.clone(),
                        slots_configured: true,
                        hpc: None,
                        setup: setup.clone(),
                        transport: transport.clone(),
                        // Only finishing what it holds: its tasks already run what they run.
                        sync: None,
                        work_dir: work_dir.clone(),
                    },
                    attach_only: true,
                });
                exec.sources.len() - 1
            }
        };
        attach.push((row.index, row.attempt, source));
    }
    let mut plan = plan_completion(
        &recorded,
        &CompletionRequest {
            task_ids,
            retry_failed: !args.no_retry_failed,
            max_runs: exec.max_runs,
        },
    );
    let attached: std::collections::HashSet<u64> = attach.iter().map(|a| a.0).collect();
    plan.runs.retain(|(i, _)| !attached.contains(i));
    if let Some(first) = plan.runs.first() {
        check_command(
            &cfg,
            &settings.command,
            settings.script_override.as_deref(),
            &rows[(first.0 - 1) as usize].params,
        )?;
    }
    if args.exec.dry_run {
        let reasons: std::collections::HashMap<u64, &str> =
            plan.runs.iter().map(|(i, r)| (*i, r.as_str())).collect();
        let tasks = plan
            .runs
            .iter()
            .map(|(i, _)| (*i, rows[(*i - 1) as usize].params.clone()));
        return print_dry_run(
            &settings,
            &sweep_id,
            &paths,
            tasks,
            args.exec.json,
            Some(&reasons),
            &hpc_sources(&exec),
        );
    }
    println!("sweep_id: {sweep_id}");
    if plan.runs.is_empty() {
        eprintln!(
            "nothing to run: {} completed{}",
            plan.n_completed,
            if plan.n_failed_kept > 0 {
                format!(
                    ", {} failed left alone (--no-retry-failed)",
                    plan.n_failed_kept
                )
            } else {
                String::new()
            }
        );
    }
    // Task processes left by a coordinator that died are ended before anything runs again.
    let n_killed = kill_orphans(&sweep_id);
    if n_killed > 0 {
        eprintln!(
            "stopped {n_killed} task process group{} left by an earlier coordinator",
            if n_killed == 1 { "" } else { "s" }
        );
    }
    let to_run: Vec<u64> = plan.runs.iter().map(|(i, _)| *i).collect();
    if !attach.is_empty() {
        note(
            global,
            &format!(
                "taking up {} task{} an earlier coordinator left on agents ({})",
                attach.len(),
                if attach.len() == 1 { "" } else { "s" },
                {
                    let mut names: Vec<&str> = attach
                        .iter()
                        .map(|a| exec.sources[a.2].name.as_str())
                        .collect();
                    names.sort_unstable();
                    names.dedup();
                    names.join(", ")
                }
            ),
        );
    }
    let n_rerun_final = plan
        .runs
        .iter()
        .filter(|(i, _)| rows[(*i - 1) as usize].status.is_final())
        .count() as u64;
    if !to_run.is_empty() {
        note(
            global,
            &format!(
                "running {} task{} on {} ({} completed kept)",
                to_run.len(),
                if to_run.len() == 1 { "" } else { "s" },
                describe_sources(&exec.sources),
                rows.iter()
                    .filter(|r| r.status == TaskStatus::Completed)
                    .count()
            ),
        );
    }
    let metadata: Option<crate::core::value::Value> = store
        .meta("metadata")?
        .and_then(|text| serde_json::from_str(&text).ok());
    let created = store
        .meta("created")?
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(now_ms);
    let summary = execute(
        global,
        &cfg,
        &exec,
        &settings,
        &sweep_id,
        &paths,
        store,
        rows,
        &to_run,
        &attach,
        n_rerun_final,
    )?;
    drop(lock);
    finish(
        global,
        &sweep_id,
        &paths,
        &cfg,
        &exec,
        created,
        &summary,
        metadata.as_ref(),
    )
}

#[allow(clippy::too_many_arguments)]
fn print_dry_run(
    settings: &SweepSettings,
    sweep_id: &str,
    paths: &SweepPaths,
    tasks: impl Iterator<Item = (u64, Params)>,
    as_json: bool,
    reasons: Option<&std::collections::HashMap<u64, &str>>,
    hpc: &[(String, hsm_protocol::HpcMsg)],
) -> anyhow::Result<i32> {
    // Streamed: a dry run of millions of tasks prints as it goes and holds one task at a time.
    use std::io::Write as _;
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let mut n = 0u64;
    if as_json {
        out.write_all(b"[")?;
    }
    for (index, params) in tasks {
        n += 1;
        let task_id = paths.task_name(index);
        let output_dir = paths.results_dir(index).display().to_string();
        let ctx = LaunchContext {
            sweep_id,
            task_index: index,
            task_id: &task_id,
            attempt: 1,
            output_dir: &output_dir,
            group: &settings.group,
            script_override: settings.script_override.as_deref(),
        };
        let argv =
            build_argv(&settings.command, &params, &ctx).map_err(|e| user_error(e.to_string()))?;
        let reason = reasons.and_then(|r| r.get(&index));
        if as_json {
            let mut item = json!({"task": task_id, "index": index, "params": params, "argv": argv});
            if let Some(reason) = reason {
                item["reason"] = json!(reason);
            }
            out.write_all(if n == 1 { b"\n  " } else { b",\n  " })?;
            serde_json::to_writer(&mut out, &item)?;
        } else {
            let reason = reason
                .map(|r| format!(" ({})", hsm_protocol::display_safe(r)))
                .unwrap_or_default();
            writeln!(out, "{task_id}{reason}")?;
            writeln!(
                out,
                "  params: {}",
                serde_json::to_string(&params).unwrap_or_default()
            )?;
            writeln!(
                out,
                "  argv:   {}",
                crate::core::command::shell_display(&argv)
            )?;
        }
    }
    if as_json {
        out.write_all(if n == 0 { b"]\n" } else { b"\n]\n" })?;
    }
    if !as_json {
        for (name, request) in hpc {
            write_job_script_preview(&mut out, name, request, sweep_id, n)?;
        }
    }
    out.flush()?;
    if !as_json {
        eprintln!(
            "dry run: {n} task{} would run; nothing was started",
            if n == 1 { "" } else { "s" }
        );
    }
    Ok(EXIT_OK)
}

pub fn status(global: &Global, args: &StatusArgs) -> anyhow::Result<i32> {
    let cfg = load_config(global)?;
    let (sweep_id, paths) = resolve_sweep(global, &cfg, args.sweep_id.as_deref())?;
    let store = open_store(&paths, &sweep_id)?;
    let rows = if args.json {
        store.tasks()?
    } else {
        store.task_statuses()?
    };
    let counts: Counts = rows.iter().map(|r| r.status).collect();
    let active = is_active(&paths);
    let attempts = store.attempt_rows()?;
    let stats = source_stats(&attempts);
    if args.json {
        let mut tails = store.stderr_tails()?;
        // What each task's current attempt used, when measured.
        let used: std::collections::HashMap<(u64, u32), crate::core::state::Usage> = attempts
            .iter()
            .map(|a| ((a.index, a.attempt), a.usage))
            .collect();
        let tasks: Vec<_> = rows
            .iter()
            .map(|r| {
                json!({
                    "task": r.task_id,
                    "index": r.index,
                    "status": r.status.as_str(),
                    "attempt": r.attempt,
                    "params": r.params,
                    "params_hash": r.params_hash,
                    "source": r.source,
                    "exit_code": r.exit_code,
                    "reason": r.reason,
                    "stderr_tail": tails.remove(&r.index),
                    "job_id": r.job_id,
                    "started": r.started_at.map(layout::format_utc),
                    "finished": r.finished_at.map(layout::format_utc),
                    "usage": used.get(&(r.index, r.attempt)).and_then(layout::usage_json),
                })
            })
            .collect();
        let value = json!({
            "sweep_id": sweep_id,
            "path": paths.root.display().to_string(),
            "active": active,
            "total": counts.total(),
            "completed": counts.completed,
            "failed": counts.failed,
            "cancelled": counts.cancelled,
            "running": counts.running,
            "queued": counts.queued,
            "pending": counts.pending,
            "tasks": tasks,
            "sources": stats.iter().map(super::source_stats::stats_json).collect::<Vec<_>>(),
        });
        println!("{}", serde_json::to_string_pretty(&value)?);
        return Ok(EXIT_OK);
    }
    println!(
        "{sweep_id} ({})",
        if active { "running" } else { "not running" }
    );
    println!("  total {} · {}", counts.total(), counts.breakdown());
    print!("{}", super::source_stats::table(&stats));
    for row in &rows {
        let show = args.all || matches!(row.status, TaskStatus::Failed | TaskStatus::Running);
        if !show {
            continue;
        }
        println!(
            "  {} {} (attempt {}{}){}",
            row.task_id,
            row.status,
            row.attempt,
            row.source
                .as_deref()
                .map(|s| format!(", {s}"))
                .unwrap_or_default(),
            row.reason
                .as_deref()
                .map(|r| format!(": {r}"))
                .unwrap_or_default()
        );
    }
    println!("  outputs: {}", display_path(global, &paths.root));
    Ok(EXIT_OK)
}

pub fn cancel(global: &Global, args: &CancelArgs) -> anyhow::Result<i32> {
    let cfg = load_config(global)?;
    let (sweep_id, paths) = match &args.sweep_id {
        Some(id) => find_sweep(global, &cfg, id)?,
        None => {
            let (id, paths) = latest_sweep(global, &cfg)?;
            note(global, &format!("cancelling the latest sweep, {id}"));
            (id, paths)
        }
    };
    let mut store = open_store(&paths, &sweep_id)?;
    if let Some(_lock) = try_acquire_lock(&paths)? {
        // No coordinator runs the sweep, and none can start while we hold the lock: end what
        // an abandoned run left behind and record the cancellation ourselves.
        kill_orphans(&sweep_id);
        let rows = store.task_statuses()?;
        let now = now_ms();
        let changes: Vec<Change> = rows
            .iter()
            .filter(|r| !r.status.is_final())
            .map(|r| Change {
                reason: Some(crate::core::failure::StopCause::Cancel.reason().into()),
                ..Change::new(
                    r.index,
                    r.attempt,
                    TaskStatus::Cancelled,
                    r.source.clone(),
                    now,
                )
            })
            .collect();
        store.apply(&changes)?;
        let rows = store.task_statuses()?;
        let _ = layout::write_atomic(
            &paths.mapping(),
            layout::mapping_yaml(&sweep_id, &rows).as_bytes(),
        );
        eprintln!(
            "{sweep_id} was not running; marked {} unfinished task{} cancelled",
            changes.len(),
            if changes.len() == 1 { "" } else { "s" }
        );
    } else {
        store.request_cancel()?;
        eprintln!(
            "asked the running coordinator to cancel {sweep_id}; waiting for its tasks to stop"
        );
        // The request is recorded; waiting is a courtesy, so a coordinator that takes long to
        // stop (a grace period, a huge sweep) is reported, not treated as a failure.
        let started = std::time::Instant::now();
        let mut next_note = Duration::from_secs(15);
        while is_active(&paths) {
            if started.elapsed() > Duration::from_secs(600) {
                eprintln!(
                    "the coordinator is still stopping after 10 minutes; it will finish on its own"
                );
                return Ok(EXIT_OK);
            }
            if started.elapsed() > next_note {
                eprintln!("still stopping ({} s)…", started.elapsed().as_secs());
                next_note += Duration::from_secs(15);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    let rows = Store::open(&paths.db())?.task_statuses()?;
    let counts: Counts = rows.iter().map(|r| r.status).collect();
    println!(
        "{sweep_id}: {} completed, {} failed, {} cancelled, {} pending, of {}",
        counts.completed,
        counts.failed,
        counts.cancelled,
        counts.pending + counts.queued + counts.running,
        counts.total()
    );
    Ok(EXIT_OK)
}

/// A duration flag that must be longer than zero.
fn positive_duration(flag: &str, text: &str) -> anyhow::Result<std::time::Duration> {
    let duration =
        config::parse_duration(text).map_err(|e| user_error(format!("{flag} {text}: {e}")))?;
    if duration.is_zero() {
        return Err(user_error(format!(
            "{flag} {text}: must be longer than zero"
        )));
    }
    Ok(duration)
}

/// Tasks a Slurm/PBS source run by this process hands to the scheduler at once, by default.
const DEFAULT_SCHEDULER_SLOTS: usize = 1000;
/// Time between `squeue`/`qstat` calls of such a source, by default.
const DEFAULT_SCHEDULER_POLL: std::time::Duration = std::time::Duration::from_secs(10);

/// What an agent source asks of its batch scheduler: `None` for the process backend. The
/// project's `hpc:` with the source's overrides, then this run's flags on top.
fn hpc_request(
    backend: config::Backend,
    hpc: &config::HpcOptions,
    args: &ExecArgs,
    walltime: Option<std::time::Duration>,
) -> Option<hsm_protocol::HpcMsg> {
    use hsm_protocol::SchedulerChoice;
    let scheduler = match backend {
        config::Backend::Process => return None,
        config::Backend::Slurm => SchedulerChoice::Slurm,
        config::Backend::Pbs => SchedulerChoice::Pbs,
        config::Backend::Auto => SchedulerChoice::Auto,
    };
    let walltime = walltime.or(hpc.walltime);
    Some(hsm_protocol::HpcMsg {
        scheduler,
        resources: hsm_protocol::HpcResources {
            walltime: walltime.map(|w| w.as_secs().max(60)),
            partition: args.partition.clone().or_else(|| hpc.partition.clone()),
            queue: args.queue.clone().or_else(|| hpc.queue.clone()),
            account: args.account.clone().or_else(|| hpc.account.clone()),
            qos: args.qos.clone().or_else(|| hpc.qos.clone()),
            cpus: hpc.cpus,
            mem: hpc.mem.clone(),
            gpus: hpc.gpus,
            gres: hpc.gres.clone(),
            modules: hpc.modules.clone(),
            conda_env: None,
            pre_script: hpc.pre_script.clone(),
            directives: hpc.directives.clone(),
            max_array_size: hpc.max_array_size,
            // `--parallel N` caps each array at N running elements too, unless
            // `--array-throttle` says otherwise.
            array_throttle: args
                .array_throttle
                .or(args.parallel.and_then(|n| u32::try_from(n).ok()))
                .or(hpc.array_throttle),
            array: hpc.array.unwrap_or(true),
            resources: hpc.resources.clone(),
        },
    })
}

/// The Slurm/PBS sources of a run and what they ask of their scheduler.
fn hpc_sources(exec: &ExecPlan) -> Vec<(String, hsm_protocol::HpcMsg)> {
    exec.sources
        .iter()
        .filter_map(|s| match &s.kind {
            SourceSpecKind::Agent { hpc: Some(h), .. }
            | SourceSpecKind::Scheduler { hpc: h, .. } => Some((s.name.clone(), h.clone())),
            _ => None,
        })
        .collect()
}

/// The job script an HPC agent would submit for the first array of this run (all of them
/// differ only in their size and directory), as the dry run shows it.
fn write_job_script_preview(
    out: &mut impl std::io::Write,
    name: &str,
    request: &hsm_protocol::HpcMsg,
    sweep_id: &str,
    n_tasks: u64,
) -> anyhow::Result<()> {
    use hsm_agent::hpc::script::{array_job_script, ArrayJobSpec, Scheduler};
    use hsm_protocol::SchedulerChoice;
    let (scheduler, which) = match request.scheduler {
        SchedulerChoice::Slurm => (Scheduler::Slurm, "slurm"),
        SchedulerChoice::Pbs => (
            Scheduler::PbsPro,
            "pbs (shown for PBS Pro; Torque uses `-t`)",
        ),
        SchedulerChoice::Auto => (
            Scheduler::Slurm,
            "auto (shown for Slurm; the agent uses PBS where there is no Slurm)",
        ),
    };
    // The agent also caps arrays at the cluster's MaxArraySize, which only it can read.
    let max = request.resources.max_array_size.unwrap_or(1000).max(1) as u64;
    let first = n_tasks.min(max).max(1);
    let arrays = n_tasks.div_ceil(max).max(1);
    let spec = ArrayJobSpec {
        // The agent names each submission after its directory (`job_<stamp>_<n>`).
        job_name: format!("hsm_{sweep_id}_STAMP_0001"),
        chunk_dir: format!("/AGENT_WORK_DIR/{sweep_id}/scripts/job_scripts/job_STAMP_0001").into(),
        count: first as u32,
        throttle: request.resources.array_throttle,
        resources: request.resources.clone(),
        scheduler_output: None,
    };
    writeln!(
        out,
        "\njob script for source {name}, backend {which}: {arrays} array{} of up to {max} tasks (fewer if the cluster's MaxArraySize is lower); the first:",
        if arrays == 1 { "" } else { "s" }
    )?;
    match array_job_script(scheduler, &spec) {
        Ok(text) => {
            for line in text.lines() {
                writeln!(out, "  {line}")?;
            }
        }
        Err(e) => {
            return Err(user_error(format!(
                "source {name}: the job script cannot be built: {e} — check `hpc:` in the project config"
            )))
        }
    }
    Ok(())
}

//! `sweep run`: a new sweep from the plan — its directory, `sweep.db` and metadata — handed to
//! the engine, and the summary and exit code at the end (shared with `sweep complete`).

use super::*;
use crate::core::task_layout::COMPACT_ABOVE;

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
            .map(|(i, params)| Ok((i as u64 + 1, params)));
        return print_dry_run(
            &settings,
            &base_id,
            &paths,
            tasks,
            args.exec.json,
            None,
            &exec,
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
    let (task_layout, auto) = sweep.layout.decide(total);
    let paths = paths
        .with_task_width(task_width(total))
        .with_task_layout(task_layout);
    println!("sweep_id: {sweep_id}");
    if auto && task_layout.is_compact() {
        note(
            global,
            &format!(
                "layout: compact ({total} tasks, more than {COMPACT_ABOVE}): no params.yaml, \
                 command.txt or status.yaml per task (sweep.db and task_mapping.yaml hold them), \
                 and a task directory only for a task that prints or leaves results; \
                 `layout: full` in the sweep file keeps them all"
            ),
        );
    }
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
        (crate::store::LAYOUT_KEY, task_layout.as_str().to_string()),
        // What the report shows as the sweep's command: a compact sweep has no command.txt.
        (
            "first_command",
            first_command(&settings, &sweep_id, &paths, &first).unwrap_or_default(),
        ),
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
    // A new sweep's tasks are all pending and never run: nothing to read back.
    let tasks: Vec<TaskState> = (1..=total)
        .map(|index| TaskState::recorded(index, TaskStatus::Pending, 0))
        .collect();
    write_metadata(
        &paths,
        &sweep_id,
        &cfg,
        &exec,
        Counts {
            pending: total,
            ..Counts::default()
        },
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
        tasks,
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
pub(super) fn note(global: &Global, line: &str) {
    if !global.quiet {
        eprintln!("{line}");
    }
}

pub(super) fn describe_sources(sources: &[SourceSpec]) -> String {
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
pub(super) fn execute(
    global: &Global,
    cfg: &ProjectConfig,
    exec: &ExecPlan,
    settings: &SweepSettings,
    sweep_id: &str,
    paths: &SweepPaths,
    store: Store,
    tasks: Vec<TaskState>,
    to_run: &[u64],
    attach: &[(u64, u32, usize)],
    n_rerun_final: u64,
) -> anyhow::Result<RunSummary> {
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
        &crate::cli::watch_cmd::sources_meta(&exec.sources),
    ) {
        tracing::warn!(error = %e, "cannot record the run's sources in sweep.db");
    }
    // Tasks about to run their first attempt get their directories prepared ahead.
    let prefetch: Vec<u64> = to_run
        .iter()
        .copied()
        .filter(|&i| tasks.get((i - 1) as usize).is_some_and(|t| t.attempt == 0))
        .collect();
    // Read from sweep.db as tasks are prepared and launched, never all held at once.
    let params = crate::store::TaskParams::open(&paths.db())?;
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
        prefetch,
        params: std::sync::Arc::new(params),
        sources: exec.sources.clone(),
        timeout: exec.timeout,
        kill_grace: exec.kill_grace,
        agent_grace: cfg.defaults.agent_grace,
        min_free_disk: cfg.defaults.min_free_disk,
        connect_timeout: cfg.defaults.connect_timeout,
    };
    // A compact sweep's spare task directories from a run killed before it removed them.
    layout::remove_spares(paths);
    let summary = engine::execute(run, core, store, progress);
    // The run removes its spares when it drops them; this also covers an actor left undropped.
    layout::remove_spares(paths);
    summary
}

#[allow(clippy::too_many_arguments)]
pub(super) fn finish(
    global: &Global,
    sweep_id: &str,
    paths: &SweepPaths,
    cfg: &ProjectConfig,
    exec: &ExecPlan,
    created: i64,
    summary: &RunSummary,
    metadata: Option<&crate::core::value::Value>,
) -> anyhow::Result<i32> {
    let counts = Store::open(&paths.db())?.counts()?;
    let complete = complete_command(sweep_id, exec);
    if let Err(e) = write_metadata(paths, sweep_id, cfg, exec, counts, created, metadata) {
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
    crate::cli::report_cmd::after_run(global, sweep_id, paths);
    if let Some(failure) = &summary.failure {
        eprintln!("hsm-coordinator: the sweep state could not be written: {failure}");
        eprintln!("fix the cause, then run `{complete}`");
        return Ok(EXIT_FAILED);
    }
    if let Some(stopped) = &summary.stopped {
        eprintln!("hsm-coordinator: {}", stopped.message);
        eprintln!("the sweep's state is kept; once fixed, `{complete}` runs what is left");
        return Ok(if stopped.user_fix {
            crate::cli::EXIT_USAGE
        } else {
            EXIT_FAILED
        });
    }
    if summary.interrupted {
        eprintln!("interrupted; run `{complete}` to finish");
        return Ok(EXIT_INTERRUPTED);
    }
    if c.pending + c.queued + c.running > 0 && c.failed + c.cancelled == 0 {
        eprintln!(
            "{} task{} pending; `{complete}` runs them",
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
            "see `hsm-coordinator sweep status {sweep_id}`; `{complete}` re-runs failed and cancelled tasks"
        ));
        return Ok(EXIT_FAILED);
    }
    Ok(EXIT_OK)
}

/// `sweep complete` of this sweep on the sources this run used: with `--sources` unless that
/// was `local` alone, its default (a cluster sweep completed without it would run locally).
fn complete_command(sweep_id: &str, exec: &ExecPlan) -> String {
    let names: Vec<&str> = exec
        .sources
        .iter()
        .filter(|s| !s.attach_only)
        .map(|s| s.name.as_str())
        .collect();
    if names.is_empty() || names == ["local"] {
        format!("hsm-coordinator sweep complete {sweep_id}")
    } else {
        format!(
            "hsm-coordinator sweep complete {sweep_id} --sources {}",
            names.join(",")
        )
    }
}

pub(super) fn write_metadata(
    paths: &SweepPaths,
    sweep_id: &str,
    cfg: &ProjectConfig,
    exec: &ExecPlan,
    counts: Counts,
    created: i64,
    metadata: Option<&crate::core::value::Value>,
) -> anyhow::Result<()> {
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
    let sources = crate::cli::source_stats::metadata_sources(&configured, &stats);
    let value = json!({
        "sweep_id": sweep_id,
        "created": layout::format_utc(created),
        "updated": layout::format_utc(now_ms()),
        "project": cfg.name,
        "project_root": cfg.root.display().to_string(),
        "sources": sources,
        "strategy": exec.strategy.as_str(),
        "layout": paths.task_layout.as_str(),
        "counts": super::status::counts_json(&counts),
        "metadata": metadata,
        "versions": {"hsm": env!("CARGO_PKG_VERSION"), "schema": crate::store::SCHEMA_VERSION},
    });
    layout::write_atomic(&paths.metadata(), emit_json(&value).as_bytes())
        .with_context(|| format!("writing {}", paths.metadata().display()))
}

/// The first task's command line as `command.txt` shows it.
fn first_command(
    settings: &SweepSettings,
    sweep_id: &str,
    paths: &SweepPaths,
    params: &crate::core::value::Params,
) -> Option<String> {
    let task_id = paths.task_name(1);
    let output_dir = paths.results_dir(1).display().to_string();
    let ctx = crate::core::command::LaunchContext {
        sweep_id,
        task_index: 1,
        task_id: &task_id,
        attempt: 1,
        output_dir: &output_dir,
        group: &settings.group,
        script_override: settings.script_override.as_deref(),
    };
    crate::core::command::build_argv(&settings.command, params, &ctx)
        .ok()
        .map(|argv| crate::core::command::shell_display(&argv))
}

//! `sweep complete`: a finished or interrupted sweep's missing, failed or cancelled tasks run
//! again, on the same or other sources.

use super::*;

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
    if let Some(v1_paths) = crate::cli::v1_import::find(&layout::outputs_dir(&cfg.root), &requested)
    {
        let v1_id = v1_paths
            .root
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| requested.clone());
        if args.exec.dry_run {
            crate::cli::v1_import::preview(global, &v1_paths, &v1_id)?;
            return Ok(EXIT_OK);
        }
        let lock = acquire_lock(&v1_paths, &v1_id)?;
        crate::cli::v1_import::import(global, &v1_paths, &v1_id, &cfg.root)?;
        drop(lock);
    }
    let (sweep_id, paths) = find_sweep(global, &cfg, &requested)?;
    let lock = if args.exec.dry_run {
        None
    } else {
        Some(acquire_lock(&paths, &sweep_id)?)
    };
    let store = open_store(&paths, &sweep_id)?;
    let paths = paths
        .with_task_width(store.task_width()?)
        .with_task_layout(store.task_layout()?);
    if lock.is_some() {
        // A cancel request left from an earlier run must not stop this one; one arriving from
        // now on (we hold the lock) is meant for this run.
        store.clear_cancel()?;
        remove_cancel_request(&paths)?;
    }
    let settings = open_settings(&store, &cfg)?;
    // Each task's status and attempt only: parameters are read for the tasks that run, when
    // they run.
    let tasks = store.task_states()?;
    let total = tasks.len() as u64;
    let params = crate::store::TaskParams::open(&paths.db())?;
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
    let recorded: Vec<RecordedTask> = tasks
        .iter()
        .map(|t| RecordedTask {
            index: t.index,
            status: t.status,
        })
        .collect();
    // Attempts an agent may still hold from a coordinator that died (recorded queued or running
    // there) are taken up, not run again: the agent reports how they ended, or that it does not
    // hold them, and only then do they run again. Its source joins this run for that alone when
    // not among --sources.
    let mut attach: Vec<(u64, u32, usize)> = Vec::new();
    for row in store.listed_tasks()? {
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
            &params.get(first.0)?,
        )?;
    }
    if args.exec.dry_run {
        let reasons: std::collections::HashMap<u64, &str> =
            plan.runs.iter().map(|(i, r)| (*i, r.as_str())).collect();
        let runs = plan.runs.iter().map(|(i, _)| Ok((*i, params.get(*i)?)));
        return print_dry_run(
            &settings,
            &sweep_id,
            &paths,
            runs,
            args.exec.json,
            Some(&reasons),
            &exec,
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
        .filter(|(i, _)| tasks[(*i - 1) as usize].status.is_final())
        .count() as u64;
    if !to_run.is_empty() {
        note(
            global,
            &format!(
                "running {} task{} on {} ({} completed kept)",
                to_run.len(),
                if to_run.len() == 1 { "" } else { "s" },
                describe_sources(&exec.sources),
                tasks
                    .iter()
                    .filter(|t| t.status == TaskStatus::Completed)
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
        tasks,
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

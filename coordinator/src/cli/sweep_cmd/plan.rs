//! The validated run plan: every flag and config value of `sweep run`/`sweep complete` checked
//! (exit 2, nothing created) into an `ExecPlan`, and what its Slurm/PBS sources ask of their
//! scheduler.

use super::*;

/// The most tasks one sweep may have: every task is a row in sweep.db and a little memory in
/// the coordinator (about 1 KB), so a sweep beyond this is almost surely a mistake.
pub const MAX_TASKS: u64 = 20_000_000;

/// The validated options of a run or completion.
pub(super) struct ExecPlan {
    pub(super) sources: Vec<SourceSpec>,
    pub(super) strategy: Strategy,
    pub(super) timeout: Option<Duration>,
    pub(super) kill_grace: Duration,
    pub(super) retries: u32,
    pub(super) max_runs: Option<u64>,
}

pub(super) fn validate_exec(cfg: &ProjectConfig, args: &ExecArgs) -> anyhow::Result<ExecPlan> {
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
            SourceKind::Slurm { hpc, slots }
            | SourceKind::Pbs { hpc, slots }
            | SourceKind::Sge { hpc, slots } => {
                // This process submits to the scheduler of the host it runs on (a login node).
                let backend = match source.kind {
                    SourceKind::Slurm { .. } => config::Backend::Slurm,
                    SourceKind::Pbs { .. } => config::Backend::Pbs,
                    _ => config::Backend::Sge,
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

pub(super) fn default_slots() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

/// A duration flag that must be longer than zero.
pub(super) fn positive_duration(flag: &str, text: &str) -> anyhow::Result<std::time::Duration> {
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
pub(super) const DEFAULT_SCHEDULER_SLOTS: usize = 1000;
/// Time between `squeue`/`qstat` calls of such a source, by default.
pub(super) const DEFAULT_SCHEDULER_POLL: std::time::Duration = std::time::Duration::from_secs(10);

/// What an agent source asks of its batch scheduler: `None` for the process backend. The
/// project's `hpc:` with the source's overrides, then this run's flags on top.
pub(super) fn hpc_request(
    backend: config::Backend,
    hpc: &config::HpcOptions,
    args: &ExecArgs,
    walltime: Option<std::time::Duration>,
) -> Option<hsm_protocol::HpcMsg> {
    let scheduler = backend.scheduler()?;
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
            requeue: hpc.requeue,
            max_jobs: hpc.max_jobs,
            tasks_per_job: hpc.tasks_per_job,
            pack_parallel: hpc.pack_parallel,
            resources: hpc.resources.clone(),
        },
    })
}

/// The Slurm/PBS/Grid Engine sources of a run and what their jobs ask of the scheduler (the
/// tasks' `--timeout` shortening the wall time as the submitting side does).
///
/// Each with whether it submits from this host (a login-node `type: slurm/pbs/sge` source)
/// rather than through an agent.
pub(super) fn hpc_sources(exec: &ExecPlan) -> Vec<(String, hsm_protocol::HpcMsg, bool)> {
    let limit = exec.timeout.map(|t| t.as_secs_f64().ceil() as u64);
    exec.sources
        .iter()
        .filter_map(|s| match &s.kind {
            SourceSpecKind::Agent { hpc: Some(h), .. }
            | SourceSpecKind::Scheduler { hpc: h, .. } => {
                let mut h = h.clone();
                h.resources = hsm_exec::hpc::pack::with_task_limit(
                    &h.resources,
                    limit,
                    exec.kill_grace.as_secs().max(1),
                );
                let here = matches!(s.kind, SourceSpecKind::Scheduler { .. });
                Some((s.name.clone(), h, here))
            }
            _ => None,
        })
        .collect()
}

//! `--dry-run` of `sweep run`/`sweep complete`: what would run, with each Slurm/PBS source's job
//! script preview.

use super::*;

#[allow(clippy::too_many_arguments)]
pub(super) fn print_dry_run(
    settings: &SweepSettings,
    sweep_id: &str,
    paths: &SweepPaths,
    tasks: impl Iterator<Item = Result<(u64, Params), crate::store::StoreError>>,
    as_json: bool,
    reasons: Option<&std::collections::HashMap<u64, &str>>,
    exec: &ExecPlan,
) -> anyhow::Result<i32> {
    // Streamed: a dry run of millions of tasks prints as it goes and holds one task at a time.
    use std::io::Write as _;
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let mut n = 0u64;
    if as_json {
        out.write_all(b"[")?;
    }
    for task in tasks {
        let (index, params) = task?;
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
        // The argv above is this host's: an agent's tasks start its own interpreter in its
        // copy of the project.
        for source in &exec.sources {
            if let SourceSpecKind::Agent {
                python,
                project_dir,
                ..
            } = &source.kind
            {
                writeln!(
                    out,
                    "\non source {}, tasks start `{}` (its `python:`) in {} and write their \
                     files on that host; the argv above is this host's",
                    source.name,
                    hsm_protocol::display_safe(python),
                    project_dir.as_deref().unwrap_or("its project_dir"),
                )?;
            }
        }
        for (name, request, here) in hpc_sources(exec) {
            // The agent keeps its jobs under its own work directory; this host, in the sweep's.
            let scripts = if here {
                paths.root.join("scripts/job_scripts")
            } else {
                format!("/AGENT_WORK_DIR/{sweep_id}/scripts/job_scripts").into()
            };
            write_job_script_preview(&mut out, &name, &request, &scripts, sweep_id, n)?;
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

/// The job script a Slurm/PBS/Grid Engine source would submit for the first array of this run
/// (all of them differ only in their size and directory; `scripts`: where their directories
/// go), as the dry run shows it.
pub(super) fn write_job_script_preview(
    out: &mut impl std::io::Write,
    name: &str,
    request: &hsm_protocol::HpcMsg,
    scripts: &std::path::Path,
    sweep_id: &str,
    n_tasks: u64,
) -> anyhow::Result<()> {
    use hsm_exec::hpc::script::{array_job_script, ArrayJobSpec, Scheduler};
    use hsm_protocol::SchedulerChoice;
    let (scheduler, which) = match request.scheduler {
        SchedulerChoice::Slurm => (Scheduler::Slurm, "slurm"),
        SchedulerChoice::Pbs => (
            Scheduler::PbsPro,
            "pbs (shown for PBS Pro; Torque uses `-t`)",
        ),
        SchedulerChoice::Sge => (Scheduler::Sge, "sge"),
        SchedulerChoice::Auto => (
            Scheduler::Slurm,
            "auto (shown for Slurm; where there is no Slurm the agent uses PBS or Grid Engine, by its qstat)",
        ),
    };
    // The agent also caps arrays at the cluster's MaxArraySize, which only it can read.
    let max = request.resources.max_array_size.unwrap_or(1000).max(1) as u64;
    let pack = hsm_exec::hpc::pack::Pack::of(&request.resources);
    let per_job = pack.map_or(1, |p| u64::from(p.tasks));
    let jobs = n_tasks.div_ceil(per_job);
    let first = jobs.min(max).max(1);
    let arrays = jobs.div_ceil(max).max(1);
    let spec = ArrayJobSpec {
        // Each submission is named after its directory (`job_<stamp>_<n>`).
        job_name: format!("hsm_{sweep_id}_STAMP_0001"),
        chunk_dir: scripts.join("job_STAMP_0001"),
        count: first as u32,
        throttle: request.resources.array_throttle,
        resources: request.resources.clone(),
        scheduler_output: None,
    };
    let s = |n: u64| if n == 1 { "" } else { "s" };
    // Only Slurm tells the agent its array limit; elsewhere `max_array_size` (default 1000) is it.
    let fewer = if scheduler == Scheduler::Slurm {
        " (fewer if the cluster's MaxArraySize is lower)"
    } else {
        ""
    };
    match pack {
        None => writeln!(
            out,
            "\njob script for source {name}, backend {which}: {arrays} array{} of up to {max} tasks{fewer}; the first:",
            s(arrays)
        )?,
        Some(pack) => writeln!(
            out,
            "\njob script for source {name}, backend {which}: {n_tasks} task{} packed {} per job, {} at a time, into {jobs} job{} (array elements), {arrays} array{} of up to {max} jobs{fewer}; each task keeps its own time limit; the first:",
            s(n_tasks),
            pack.tasks,
            pack.parallel,
            s(jobs),
            s(arrays)
        )?,
    }
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

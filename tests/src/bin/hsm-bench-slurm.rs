//! `hsm-bench-slurm`: how a sweep through an agent's Slurm backend uses the scheduler — the number
//! of `sbatch` calls, array elements submitted, `squeue` calls per minute while tasks run, the
//! time from `sweep run` to every task submitted, and the whole sweep's makespan — for N tasks
//! (`/bin/true`, or `sleep S`) on a running Slurm, with one or more packings
//! (`hpc.tasks_per_job`) run in turn, round after round, by the same agent. Counts come from the
//! real command lines the agent ran (it runs with `PATH` starting at a directory of counting
//! shims that exec the real binaries) and from the job scripts it wrote, not from hsm's own
//! counters. A measurement, never a pass/fail test.
//!
//! Usage (as root, with a test Slurm; MaxArraySize 1001 is Slurm's default):
//! `tests/slurm.sh up /tmp/hsm-slurm && export SLURM_CONF=/tmp/hsm-slurm/slurm.conf`
//! `cargo run --release -p hsm-tests --bin hsm-bench-slurm -- [--tasks 2000] [--poll 10]
//!  [--sleep 0.1] [--tasks-per-job 1,50] [--rounds 2] [--out FILE]`
use anyhow::{bail, Context};
use hsm_tests::{hsm_sweep, start_agent};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

const COMMANDS: [&str; 4] = ["sbatch", "squeue", "scancel", "scontrol"];

fn main() -> anyhow::Result<()> {
    let mut tasks: u64 = 2000;
    let mut poll: u64 = 10;
    let mut sleep: Option<String> = None;
    let mut packings: Vec<u32> = vec![1];
    let mut rounds: u32 = 1;
    let mut out = std::path::PathBuf::from("target/bench/slurm.md");
    let mut it = std::env::args().skip(1);
    let usage = "hsm-bench-slurm [--tasks N] [--poll S] [--sleep S] [--tasks-per-job K,K..] [--rounds R] [--out FILE]";
    while let Some(flag) = it.next() {
        let mut value = || it.next().with_context(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--tasks" => tasks = value()?.parse()?,
            "--poll" => poll = value()?.parse()?,
            "--sleep" => {
                let text = value()?;
                text.parse::<f64>()
                    .with_context(|| format!("--sleep {text}: seconds"))?;
                sleep = Some(text);
            }
            "--tasks-per-job" => {
                packings = value()?
                    .split(',')
                    .map(|k| k.trim().parse::<u32>().context("--tasks-per-job K,K.."))
                    .collect::<anyhow::Result<_>>()?;
            }
            "--rounds" => rounds = value()?.parse()?,
            "--out" => out = value()?.into(),
            other => bail!("unknown flag {other} ({usage})"),
        }
    }
    let conf = std::env::var("SLURM_CONF").context(
        "SLURM_CONF is not set: start a Slurm first (tests/slurm.sh up DIR, then export SLURM_CONF)",
    )?;
    let agent_bin = std::env::current_exe()?.with_file_name("hsm-agent");
    if !agent_bin.is_file() {
        bail!(
            "{} not built (cargo build --release -p hsm-agent)",
            agent_bin.display()
        );
    }
    let work = tempfile::tempdir()?;
    // SAFETY (edition 2021: safe): set before any thread reads the environment for identity.
    std::env::set_var("HSM_HOME", work.path().join("home"));

    // Counting shims: each logs "<unix time> <command>" and execs the real binary.
    let shims = work.path().join("shims");
    std::fs::create_dir_all(&shims)?;
    let log = work.path().join("calls.log");
    for name in COMMANDS {
        let real = which(name).with_context(|| format!("`{name}` not found on PATH"))?;
        let path = shims.join(name);
        std::fs::write(
            &path,
            format!(
                "#!/bin/sh\necho \"$(date +%s.%N) {name}\" >> '{}'\nexec '{}' \"$@\"\n",
                log.display(),
                real.display()
            ),
        )?;
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))?;
    }
    let path_var = std::env::join_paths(std::iter::once(shims.clone()).chain(
        std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()),
    ))?;
    let poll_text = poll.to_string();
    let agent = start_agent(
        &agent_bin,
        2,
        work.path(),
        &["--poll", &poll_text],
        &[("PATH", path_var.as_os_str())],
    )?;
    let task = match &sleep {
        Some(s) => format!("`sleep {s}`"),
        None => "`/bin/true`".to_string(),
    };
    eprintln!(
        "hsm-bench-slurm: {tasks} tasks of {task} through the agent's Slurm backend ({conf}), tasks per job {packings:?}, {rounds} round(s)"
    );
    let mut rows = Vec::new();
    for round in 1..=rounds {
        for &k in &packings {
            let _ = std::fs::remove_file(&log);
            let id = format!("bench_r{round}_k{k}");
            let project = work.path().join(&id);
            let command = match &sleep {
                Some(s) => {
                    format!("[\"/bin/sh\", \"-c\", \"sleep {s}\", \"sh\", \"{{overrides}}\"]")
                }
                None => "[\"/bin/true\", \"{overrides}\"]".to_string(),
            };
            let config = format!(
                "command:\n  template: {command}\nhpc:\n  tasks_per_job: {k}\nsources:\n  a1:\n    type: agent\n    address: \"{}\"\n    fingerprint: \"{}\"\n    project_dir: \"{}\"\n    backend: slurm\n    slots: {tasks}\n",
                agent.addr,
                agent.fingerprint,
                project.display()
            );
            eprintln!("hsm-bench-slurm: round {round}, {k} task(s) per job");
            let started_unix = unix_now();
            let started = Instant::now();
            hsm_sweep(
                &project,
                &config,
                tasks,
                &["--sources", "a1", "--sweep-id", &id],
            )?;
            let elapsed = started.elapsed().as_secs_f64();
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            let calls: Vec<(f64, &str)> = text
                .lines()
                .filter_map(|l| {
                    let (t, name) = l.split_once(' ')?;
                    Some((t.parse().ok()?, name))
                })
                .collect();
            let count = |name: &str| calls.iter().filter(|(_, n)| *n == name).count();
            let sbatch_times: Vec<f64> = calls
                .iter()
                .filter(|(_, n)| *n == "sbatch")
                .map(|(t, _)| *t)
                .collect();
            let last_submit = sbatch_times.iter().copied().fold(f64::NAN, f64::max);
            let running_from = sbatch_times.iter().copied().fold(f64::NAN, f64::min);
            let running_for = (started_unix + elapsed - running_from).max(1e-9);
            rows.push(format!(
                "| {round} | {k} | {} | {} | {} | {:.1} | {} | {:.2} s | {elapsed:.1} s |\n",
                count("sbatch"),
                elements_submitted(&agent.work_dir.join(&id))?,
                count("squeue"),
                count("squeue") as f64 / running_for * 60.0,
                count("scancel"),
                last_submit - started_unix,
            ));
        }
    }
    drop(agent);

    let report = format!(
        "# Slurm backend benchmark\n\n{tasks} tasks of {task} through one agent with the Slurm \
         backend (`--poll {poll}`), on a single-node Slurm ({conf}); each packing \
         (`hpc.tasks_per_job`) in turn, round after round. Scheduler calls counted from the \
         command lines the agent ran; elements from the job scripts it wrote.\n\n\
         | round | tasks per job | `sbatch` calls | array elements | `squeue` calls | `squeue`/min | `scancel` calls | to every task submitted | whole sweep |\n\
         |---:|---:|---:|---:|---:|---:|---:|---:|---:|\n{}",
        rows.concat()
    );
    if let Some(dir) = out.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&out, &report)?;
    print!("{report}");
    eprintln!("hsm-bench-slurm: results written to {}", out.display());
    Ok(())
}

/// Array elements (jobs) the agent submitted for a sweep: the sizes of the `--array=0-N` lines
/// of its job scripts (`<sweep>/scripts/job_scripts/*/job.sh`).
fn elements_submitted(sweep_dir: &std::path::Path) -> anyhow::Result<u64> {
    let scripts = sweep_dir.join("scripts/job_scripts");
    let mut total = 0;
    for entry in std::fs::read_dir(&scripts).with_context(|| scripts.display().to_string())? {
        let text = std::fs::read_to_string(entry?.path().join("job.sh")).unwrap_or_default();
        for line in text.lines() {
            if let Some(range) = line.strip_prefix("#SBATCH --array=0-") {
                let last: u64 = range.split('%').next().unwrap_or("").parse()?;
                total += last + 1;
            }
        }
    }
    Ok(total)
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

fn which(name: &str) -> Option<std::path::PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

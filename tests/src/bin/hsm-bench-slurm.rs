//! `hsm-bench-slurm`: how a sweep through an agent's Slurm backend uses the scheduler — the number
//! of `sbatch` calls, `squeue` calls per minute while tasks run, and the time from `sweep run` to
//! every task submitted — for N `/bin/true` tasks on a running Slurm. Counts come from the real
//! command lines the agent ran (it runs with `PATH` starting at a directory of counting shims that
//! exec the real binaries), not from hsm's own counters. A measurement, never a pass/fail test.
//!
//! Usage (as root, with a test Slurm; MaxArraySize 1001 is Slurm's default):
//! `tests/slurm.sh up /tmp/hsm-slurm && export SLURM_CONF=/tmp/hsm-slurm/slurm.conf`
//! `cargo run --release -p hsm-tests --bin hsm-bench-slurm -- [--tasks 2000] [--poll 10] [--out FILE]`

use anyhow::{bail, Context};
use hsm_tests::{hsm_sweep, start_agent};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

const COMMANDS: [&str; 4] = ["sbatch", "squeue", "scancel", "scontrol"];

fn main() -> anyhow::Result<()> {
    let mut tasks: u64 = 2000;
    let mut poll: u64 = 10;
    let mut out = std::path::PathBuf::from("target/bench/slurm.md");
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().with_context(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--tasks" => tasks = value()?.parse()?,
            "--poll" => poll = value()?.parse()?,
            "--out" => out = value()?.into(),
            other => {
                bail!("unknown flag {other} (hsm-bench-slurm [--tasks N] [--poll S] [--out FILE])")
            }
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
    let project = work.path().join("project");
    let config = format!(
        "command:\n  template: [\"/bin/true\", \"{{overrides}}\"]\nsources:\n  a1:\n    type: agent\n    address: \"{}\"\n    fingerprint: \"{}\"\n    project_dir: \"{}\"\n    backend: slurm\n    slots: {tasks}\n",
        agent.addr,
        agent.fingerprint,
        project.display()
    );
    eprintln!(
        "hsm-bench-slurm: {tasks} tasks of /bin/true through the agent's Slurm backend ({conf})"
    );
    let started_unix = unix_now();
    let started = Instant::now();
    hsm_sweep(&project, &config, tasks, &["--sources", "a1"])?;
    let elapsed = started.elapsed();
    drop(agent);

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
    let to_submitted = last_submit - started_unix;
    let running_from = sbatch_times.iter().copied().fold(f64::NAN, f64::min);
    let running_for = (started_unix + elapsed.as_secs_f64() - running_from).max(1e-9);
    let squeue_per_minute = count("squeue") as f64 / running_for * 60.0;

    let report = format!(
        "# Slurm backend benchmark\n\n{tasks} tasks of `/bin/true` through one agent with the Slurm \
         backend (`--poll {poll}`), on a single-node Slurm ({conf}). Scheduler calls counted from \
         the command lines the agent ran.\n\n\
         | what | value |\n|---|---:|\n\
         | `sbatch` calls | {} |\n\
         | `squeue` calls | {} |\n\
         | `squeue` calls per minute while tasks ran | {squeue_per_minute:.1} |\n\
         | `scontrol` calls | {} |\n\
         | `scancel` calls | {} |\n\
         | time from `sweep run` to every task submitted | {to_submitted:.2} s |\n\
         | whole sweep | {:.1} s |\n",
        count("sbatch"),
        count("squeue"),
        count("scontrol"),
        count("scancel"),
        elapsed.as_secs_f64()
    );
    if let Some(dir) = out.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&out, &report)?;
    print!("{report}");
    eprintln!("hsm-bench-slurm: results written to {}", out.display());
    Ok(())
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

//! `hsm-bench-agents`: what a task costs on the agent path — tasks/s through one and two
//! agents, the coordinator's and the agent's CPU per task, files created per task, the
//! coordinator's CPU with 16 idle agents connected, and (given `--hq`) HyperQueue on the same
//! tasks — for one or more builds, alternating, in one run, beside `xargs -P`. With `--ext4`,
//! also the local source right after deleting an earlier sweep on that ext4 directory. A
//! measurement written to a Markdown file, never a pass/fail test.
//!
//! Usage: `cargo run --release -p hsm-tests --bin hsm-bench-agents -- [--tasks 10000]
//! [--slots 2] [--rounds 1] [--dir DIR] [--out FILE] [--build DIR]... [--hq PATH]
//! [--ext4 DIR] [--idle-agents 16]`. A `--build` directory holds `hsm-coordinator` and
//! `hsm-agent` (default: the directory of this bench); `--build DIR:compact` (or `:full`) runs
//! that build's sweeps with `layout: compact` (`full`) in the sweep file, so one run compares
//! the layouts; without a suffix the sweep file says nothing (what a build before layouts
//! needs).

use anyhow::{bail, Context};
use hsm_tests::{
    agent_config, count_files, path_and_layout, start_agent, wait_usage, write_project,
    write_project_in, BenchAgent,
};
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

struct Args {
    tasks: u64,
    slots: u64,
    rounds: u32,
    dir: PathBuf,
    out: PathBuf,
    builds: Vec<Build>,
    hq: Option<PathBuf>,
    ext4: Option<PathBuf>,
    idle_agents: usize,
    idle_for: Duration,
}

fn parse_args() -> anyhow::Result<Args> {
    let mut args = Args {
        tasks: 10_000,
        slots: 2,
        rounds: 1,
        dir: "target/bench/agents".into(),
        out: "target/bench/agents.md".into(),
        builds: Vec::new(),
        hq: None,
        ext4: None,
        idle_agents: 16,
        idle_for: Duration::from_secs(10),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || {
            it.next()
                .ok_or_else(|| anyhow::anyhow!("{flag} needs a value"))
        };
        match flag.as_str() {
            "--tasks" => args.tasks = value()?.parse()?,
            "--slots" => args.slots = value()?.parse()?,
            "--rounds" => args.rounds = value()?.parse()?,
            "--dir" => args.dir = value()?.into(),
            "--out" => args.out = value()?.into(),
            "--build" => args.builds.push(Build::parse(&value()?)),
            "--hq" => args.hq = Some(value()?.into()),
            "--ext4" => args.ext4 = Some(value()?.into()),
            "--idle-agents" => args.idle_agents = value()?.parse()?,
            "--idle-for" => args.idle_for = Duration::from_secs(value()?.parse()?),
            "-h" | "--help" => {
                println!(
                    "hsm-bench-agents [--tasks N] [--slots K] [--rounds R] [--dir DIR] [--out FILE] \
                     [--build DIR]... [--hq PATH] [--ext4 DIR] [--idle-agents N] [--idle-for SECONDS]"
                );
                std::process::exit(0);
            }
            other => bail!("unknown flag {other}"),
        }
    }
    if args.builds.is_empty() {
        let me = std::env::current_exe()?;
        args.builds.push(Build {
            dir: me.parent().context("bench path")?.to_path_buf(),
            layout: None,
        });
    }
    for build in &args.builds {
        for bin in ["hsm-coordinator", "hsm-agent"] {
            if !build.dir.join(bin).is_file() {
                bail!(
                    "{} has no {bin} (cargo build --release -p hsm-coordinator -p hsm-agent)",
                    build.dir.display()
                );
            }
        }
    }
    if let Some(hq) = &args.hq {
        if !hq.is_file() {
            bail!("--hq {}: no such file", hq.display());
        }
    }
    Ok(args)
}

/// A build directory, and the layout its sweeps ask for (none: the sweep file says nothing).
struct Build {
    dir: PathBuf,
    layout: Option<String>,
}

impl Build {
    /// `DIR` or `DIR:full` / `DIR:compact` / `DIR:auto`.
    fn parse(text: &str) -> Build {
        let (dir, layout) = path_and_layout(text);
        Build { dir, layout }
    }

    fn label(&self) -> String {
        match &self.layout {
            Some(layout) => format!("{}:{layout}", self.dir.display()),
            None => self.dir.display().to_string(),
        }
    }
}

/// One round's figures for one build.
#[derive(Default)]
struct Row {
    build: String,
    local_rate: f64,
    local_inodes: f64,
    one_rate: f64,
    one_coord_us: f64,
    one_agent_us: f64,
    /// Files and directories the agent created per task in its work directory.
    one_agent_inodes: f64,
    /// Files and directories the coordinator created per task for agent tasks.
    one_coord_inodes: f64,
    two_rate: f64,
    two_coord_us: f64,
    idle_core_pct: f64,
    /// (fresh hsm/xargs, hsm/xargs right after deleting the fresh run's sweep).
    ext4: Option<(f64, f64)>,
}

/// The baselines of a round.
#[derive(Default)]
struct Baseline {
    xargs_rate: f64,
    /// (tasks/s, server + worker CPU per task in µs).
    hq: Option<(f64, f64)>,
}

fn main() -> anyhow::Result<()> {
    let args = parse_args()?;
    std::fs::create_dir_all(&args.dir)?;
    let home = tempfile::tempdir_in(&args.dir)?;
    // SAFETY (edition 2021: safe): set before any thread reads the environment. The agents
    // authorize this identity; the coordinators run with the same HSM_HOME.
    std::env::set_var("HSM_HOME", home.path());
    let mut rows = Vec::new();
    let mut baselines = Vec::new();
    for round in 0..args.rounds {
        let mut base = Baseline {
            xargs_rate: xargs(args.tasks, args.slots)?,
            ..Baseline::default()
        };
        eprintln!("round {}: xargs {:.0}/s", round + 1, base.xargs_rate);
        if let Some(hq) = &args.hq {
            base.hq = Some(hyperqueue(hq, &args)?);
        }
        baselines.push(base);
        // Alternate the order each round so drift in the machine's speed affects all alike.
        let mut order: Vec<&Build> = args.builds.iter().collect();
        if round % 2 == 1 {
            order.reverse();
        }
        for build in order {
            rows.push(measure(&args, build)?);
        }
    }
    let report = render(&args, &baselines, &rows);
    if let Some(dir) = args.out.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&args.out, &report)
        .with_context(|| format!("writing {}", args.out.display()))?;
    print!("{report}");
    eprintln!("results written to {}", args.out.display());
    Ok(())
}

fn measure(args: &Args, build: &Build) -> anyhow::Result<Row> {
    let coordinator = build.dir.join("hsm-coordinator");
    let agent_bin = build.dir.join("hsm-agent");
    let layout = build.layout.as_deref();
    let mut row = Row {
        build: build.label(),
        ..Row::default()
    };
    let tasks = args.tasks as f64;
    let true_cmd = "[\"/bin/true\", \"{overrides}\"]";

    let project = tempfile::tempdir_in(&args.dir)?;
    let config = format!("command:\n  template: {true_cmd}\n");
    let parallel = args.slots.to_string();
    let run = sweep(
        &coordinator,
        project.path(),
        &config,
        args.tasks,
        layout,
        &["--parallel", &parallel],
    )?;
    row.local_rate = tasks / run.wall.as_secs_f64();
    row.local_inodes = count_files(&project.path().join("sweeps/outputs")) as f64 / tasks;
    eprintln!("  {}: local {:.0}/s", row.build, row.local_rate);
    drop(project);

    let agent = start_agent(&agent_bin, args.slots, &args.dir, &[], &[])?;
    let project = tempfile::tempdir_in(&args.dir)?;
    let config = agent_config(&agent, true_cmd, project.path());
    let agent_cpu = cpu_of(agent.child.id());
    let run = sweep(
        &coordinator,
        project.path(),
        &config,
        args.tasks,
        layout,
        &["--sources", "a1"],
    )?;
    row.one_rate = tasks / run.wall.as_secs_f64();
    row.one_coord_us = run.cpu.as_secs_f64() * 1e6 / tasks;
    row.one_agent_us = (cpu_of(agent.child.id()) - agent_cpu).as_secs_f64() * 1e6 / tasks;
    row.one_agent_inodes = count_files(&agent.work_dir) as f64 / tasks;
    row.one_coord_inodes = count_files(&project.path().join("sweeps/outputs")) as f64 / tasks;
    eprintln!(
        "  {}: one agent {:.0}/s, coordinator {:.0} µs/task, agent {:.0} µs/task",
        row.build, row.one_rate, row.one_coord_us, row.one_agent_us
    );
    drop(project);

    let second = start_agent(&agent_bin, args.slots, &args.dir, &[], &[])?;
    let project = tempfile::tempdir_in(&args.dir)?;
    let config = format!(
        "{}{}",
        agent_config(&agent, true_cmd, project.path()),
        source_entry("a2", &second, project.path())
    );
    let run = sweep(
        &coordinator,
        project.path(),
        &config,
        args.tasks,
        layout,
        &["--sources", "a1,a2"],
    )?;
    row.two_rate = tasks / run.wall.as_secs_f64();
    row.two_coord_us = run.cpu.as_secs_f64() * 1e6 / tasks;
    eprintln!(
        "  {}: two agents {:.0}/s, coordinator {:.0} µs/task",
        row.build, row.two_rate, row.two_coord_us
    );
    drop((project, agent, second));

    row.idle_core_pct = idle_agents(args, &coordinator, &agent_bin)?;
    eprintln!(
        "  {}: {} idle agents, coordinator {:.2}% of a core",
        row.build, args.idle_agents, row.idle_core_pct
    );

    if let Some(ext4) = &args.ext4 {
        row.ext4 = Some(after_delete(args, ext4, &coordinator, layout)?);
    }
    Ok(row)
}

/// The config entry of one more agent source.
fn source_entry(name: &str, agent: &BenchAgent, project: &Path) -> String {
    format!(
        "  {name}:\n    type: agent\n    address: \"{}\"\n    fingerprint: \"{}\"\n    project_dir: \"{}\"\n",
        agent.addr,
        agent.fingerprint,
        project.display()
    )
}

struct Run {
    wall: Duration,
    /// The coordinator's CPU (user + system) with that of its reaped children.
    cpu: Duration,
}

/// A whole `sweep run` of `tasks` tasks by the binary `coordinator`.
fn sweep(
    coordinator: &Path,
    project: &Path,
    config: &str,
    tasks: u64,
    layout: Option<&str>,
    extra: &[&str],
) -> anyhow::Result<Run> {
    write_project_in(project, config, tasks, layout)?;
    let started = Instant::now();
    let child = Command::new(coordinator)
        .args(["-q", "-C"])
        .arg(project)
        .args(["sweep", "run"])
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .with_context(|| format!("starting {}", coordinator.display()))?;
    let cpu = wait_cpu(child)?;
    Ok(Run {
        wall: started.elapsed(),
        cpu,
    })
}

/// Waits for our child: its CPU time, children included.
fn wait_cpu(child: std::process::Child) -> anyhow::Result<Duration> {
    let usage = wait_usage(child, "sweep run")?;
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    Ok(tv(usage.ru_utime) + tv(usage.ru_stime))
}

/// User + system CPU of a running process (all its threads, not its children).
fn cpu_of(pid: u32) -> Duration {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The command name may hold spaces; fields count from after its closing parenthesis.
    let fields: Vec<&str> = text
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    // utime and stime are fields 14 and 15 of the whole line: 11 and 12 after the name.
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Duration::from_micros((ticks(11) + ticks(12)) * 1_000_000 / hz)
}

/// The coordinator's CPU, as a percentage of one core, over `idle_for` while it is connected
/// to `idle_agents` agents and one task sleeps on one of them.
fn idle_agents(args: &Args, coordinator: &Path, agent_bin: &Path) -> anyhow::Result<f64> {
    let mut agents = Vec::new();
    for _ in 0..args.idle_agents {
        agents.push(start_agent(agent_bin, 1, &args.dir, &[], &[])?);
    }
    let project = tempfile::tempdir_in(&args.dir)?;
    let sleep = args.idle_for + Duration::from_secs(8);
    let mut config = agent_config(
        &agents[0],
        &format!(
            "[\"/bin/sh\", \"-c\", \"sleep {}\", \"sh\", \"{{overrides}}\"]",
            sleep.as_secs()
        ),
        project.path(),
    );
    let mut names = vec!["a1".to_string()];
    for (i, agent) in agents.iter().enumerate().skip(1) {
        let name = format!("a{}", i + 1);
        config.push_str(&source_entry(&name, agent, project.path()));
        names.push(name);
    }
    write_project(project.path(), &config, 1)?;
    let child = Command::new(coordinator)
        .args(["-q", "-C"])
        .arg(project.path())
        .args(["sweep", "run", "--sources", &names.join(",")])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()?;
    let pid = child.id();
    // Past start-up and the task's launch: only the connections' upkeep is left.
    std::thread::sleep(Duration::from_secs(5));
    let before = cpu_of(pid);
    let from = Instant::now();
    std::thread::sleep(args.idle_for);
    let used = cpu_of(pid) - before;
    let window = from.elapsed();
    wait_cpu(child)?;
    Ok(used.as_secs_f64() * 100.0 / window.as_secs_f64())
}

/// hsm local against `xargs` on the `--ext4` directory: fresh, then right after `rm -rf` of
/// the fresh run's sweep (ext4 skips recently freed inodes when it allocates).
fn after_delete(
    args: &Args,
    ext4: &Path,
    coordinator: &Path,
    layout: Option<&str>,
) -> anyhow::Result<(f64, f64)> {
    let config = "command:\n  template: [\"/bin/true\", \"{overrides}\"]\n";
    let parallel = args.slots.to_string();
    let tasks = args.tasks as f64;
    let first = tempfile::tempdir_in(ext4)?;
    let x = xargs(args.tasks, args.slots)?;
    let run = sweep(
        coordinator,
        first.path(),
        config,
        args.tasks,
        layout,
        &["--parallel", &parallel],
    )?;
    let fresh = tasks / run.wall.as_secs_f64() / x;
    let status = Command::new("rm").arg("-rf").arg(first.path()).status()?;
    if !status.success() {
        bail!("rm -rf {} failed", first.path().display());
    }
    let second = tempfile::tempdir_in(ext4)?;
    let x = xargs(args.tasks, args.slots)?;
    let run = sweep(
        coordinator,
        second.path(),
        config,
        args.tasks,
        layout,
        &["--parallel", &parallel],
    )?;
    let after = tasks / run.wall.as_secs_f64() / x;
    eprintln!("  ext4: fresh {fresh:.2}x of xargs, after a delete {after:.2}x");
    Ok((fresh, after))
}

/// `xargs -P slots` over `tasks` runs of `/bin/true`: tasks/s.
fn xargs(tasks: u64, slots: u64) -> anyhow::Result<f64> {
    let started = Instant::now();
    let mut child = Command::new("xargs")
        .args(["-P", &slots.to_string(), "-n", "1", "/bin/true"])
        .stdin(Stdio::piped())
        .spawn()
        .context("starting xargs")?;
    {
        let mut stdin = child.stdin.take().context("xargs stdin")?;
        let input: String = (0..tasks).map(|i| format!("{i}\n")).collect();
        stdin.write_all(input.as_bytes())?;
    }
    if !child.wait()?.success() {
        bail!("xargs failed");
    }
    Ok(tasks as f64 / started.elapsed().as_secs_f64())
}

/// HyperQueue on the same tasks: its server and one worker with `slots` CPUs here, one array
/// job of `tasks` `/bin/true`, its default stdout and stderr file per task. Tasks/s of the
/// submit-and-wait, and the server's plus the worker's CPU per task.
fn hyperqueue(hq: &Path, args: &Args) -> anyhow::Result<(f64, f64)> {
    let dir = tempfile::tempdir_in(&args.dir)?;
    let server_dir = dir.path().join("server");
    let hq_cmd = || {
        let mut c = Command::new(hq);
        c.arg("--server-dir")
            .arg(&server_dir)
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        c
    };
    let server = Killed(hq_cmd().args(["server", "start"]).spawn()?);
    let deadline = Instant::now() + Duration::from_secs(30);
    while !server_dir.join("hq-current").exists() {
        if Instant::now() > deadline {
            bail!("hq server did not start in 30 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let worker = Killed(
        hq_cmd()
            .args(["worker", "start", "--cpus", &args.slots.to_string()])
            .spawn()?,
    );
    if !hq_cmd().args(["worker", "wait", "1"]).status()?.success() {
        bail!("hq worker wait failed");
    }
    let cpu = || cpu_of(server.0.id()) + cpu_of(worker.0.id());
    let before = cpu();
    let started = Instant::now();
    let status = hq_cmd()
        .args([
            "submit",
            "--array",
            &format!("1-{}", args.tasks),
            "--wait",
            "--",
            "/bin/true",
        ])
        .status()?;
    let wall = started.elapsed();
    let used = cpu() - before;
    if !status.success() {
        bail!("hq submit failed");
    }
    let tasks = args.tasks as f64;
    let rate = tasks / wall.as_secs_f64();
    let us = used.as_secs_f64() * 1e6 / tasks;
    eprintln!("  HyperQueue {rate:.0}/s, server + worker {us:.0} µs/task");
    drop((worker, server));
    Ok((rate, us))
}

/// A process of ours ended by its pid when the bench is done with it.
struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn render(args: &Args, baselines: &[Baseline], rows: &[Row]) -> String {
    let mut s = String::new();
    let per_round = args.builds.len();
    let _ =
        writeln!(
        s,
        "# Agent path\n\n{} tasks of `/bin/true`, {} slots per agent, on {} CPU(s), `--dir {}`. \
         Measured in one run by `hsm-bench-agents`; builds alternate each round.\n",
        args.tasks,
        args.slots,
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        args.dir.display()
    );
    let _ = writeln!(
        s,
        "| round | build | `xargs` | local | 1 agent | 2 agents | HyperQueue | 1 agent / HQ | coord. CPU/task, 1 agent | coord. CPU/task, 2 agents | agent CPU/task | HQ CPU/task | {} idle agents |\n\
         |---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        args.idle_agents
    );
    for (i, row) in rows.iter().enumerate() {
        let base = &baselines[i / per_round];
        let (hq_rate, hq_ratio, hq_cpu) = match base.hq {
            Some((rate, us)) => (
                format!("{rate:.0}/s"),
                format!("{:.2}x", row.one_rate / rate),
                format!("{us:.0} µs"),
            ),
            None => ("—".into(), "—".into(), "—".into()),
        };
        let _ = writeln!(
            s,
            "| {} | `{}` | {:.0}/s | {:.0}/s | {:.0}/s | {:.0}/s | {hq_rate} | {hq_ratio} | {:.0} µs | {:.0} µs | {:.0} µs | {hq_cpu} | {:.2}% |",
            i / per_round + 1,
            row.build,
            base.xargs_rate,
            row.local_rate,
            row.one_rate,
            row.two_rate,
            row.one_coord_us,
            row.two_coord_us,
            row.one_agent_us,
            row.idle_core_pct
        );
    }
    let _ = writeln!(
        s,
        "\nFiles and directories created per task:\n\n| build | local source | agent path, coordinator side | agent path, agent side |\n|---|---:|---:|---:|"
    );
    for row in rows {
        let _ = writeln!(
            s,
            "| `{}` | {:.2} | {:.2} | {:.2} |",
            row.build, row.local_inodes, row.one_coord_inodes, row.one_agent_inodes
        );
    }
    if rows.iter().any(|r| r.ext4.is_some()) {
        let _ = writeln!(
            s,
            "\nLocal source on `{}` (ext4) against `xargs` just before it:\n\n| build | fresh | right after `rm -rf` of that sweep |\n|---|---:|---:|",
            args.ext4.as_deref().unwrap_or(Path::new("")).display()
        );
        for row in rows {
            if let Some((fresh, after)) = row.ext4 {
                let _ = writeln!(s, "| `{}` | {fresh:.2}x | {after:.2}x |", row.build);
            }
        }
    }
    let _ = writeln!(
        s,
        "\nCoordinator CPU is the whole `sweep run` process (`wait4`), start-up and the end-of-run \
         report included; agent CPU is the agent process's own time (`/proc/PID/stat`), its tasks \
         excluded. HyperQueue: one server and one worker with {} CPUs, one array job \
         (`hq submit --array 1-N --wait`), its default stdout and stderr file per task; CPU is the \
         server's plus the worker's.",
        args.slots
    );
    s
}

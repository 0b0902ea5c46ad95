//! `hsm-bench-scale`: what a sweep of a million tasks costs the coordinator — start-up, memory,
//! `sweep status`, `sweep status --json`, `sweep cancel` and `sweep complete --dry-run` — for
//! one or more `hsm-coordinator` binaries, alternating, in one run. A measurement written to a
//! Markdown file, never a pass/fail test.
//!
//! Usage: `cargo run --release -p hsm-tests --bin hsm-bench-scale -- [--tasks 1000000]
//! [--rounds 1] [--dir DIR] [--out FILE] [--coordinator PATH]...` (default: the
//! `hsm-coordinator` beside this bench). `--coordinator PATH:full` (or `:compact`) puts
//! `layout: full` (`compact`) in the sweep file; without a suffix the file says nothing, and a
//! build that knows layouts chooses (compact, past 10,000 tasks).

use anyhow::{bail, Context};
use hsm_tests::{count_files, layout_line, path_and_layout, wait_usage};
use std::fmt::Write as _;
use std::io::{BufRead, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Args {
    tasks: u64,
    rounds: u32,
    dir: PathBuf,
    out: PathBuf,
    /// Each binary, and the layout its sweep file asks for.
    coordinators: Vec<(PathBuf, Option<String>)>,
    /// How long the sweep runs before `status` and `cancel` are measured.
    run_for: Duration,
    /// How long a run may take to stop after `sweep cancel` before it is killed and the
    /// figure given as "more than" this.
    cancel_limit: Duration,
}

fn parse_args() -> anyhow::Result<Args> {
    let mut args = Args {
        tasks: 1_000_000,
        rounds: 1,
        dir: "target/bench/scale".into(),
        out: "target/bench/scale.md".into(),
        coordinators: Vec::new(),
        run_for: Duration::from_secs(30),
        cancel_limit: Duration::from_secs(120),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || {
            it.next()
                .ok_or_else(|| anyhow::anyhow!("{flag} needs a value"))
        };
        match flag.as_str() {
            "--tasks" => args.tasks = value()?.parse()?,
            "--rounds" => args.rounds = value()?.parse()?,
            "--dir" => args.dir = value()?.into(),
            "--out" => args.out = value()?.into(),
            "--coordinator" => args.coordinators.push(path_and_layout(&value()?)),
            "--run-for" => args.run_for = Duration::from_secs(value()?.parse()?),
            "--cancel-limit" => args.cancel_limit = Duration::from_secs(value()?.parse()?),
            "-h" | "--help" => {
                println!(
                    "hsm-bench-scale [--tasks N] [--rounds R] [--run-for SECONDS] [--cancel-limit SECONDS] [--dir DIR] \
                     [--out FILE] [--coordinator PATH]..."
                );
                std::process::exit(0);
            }
            other => bail!("unknown flag {other}"),
        }
    }
    if args.coordinators.is_empty() {
        let me = std::env::current_exe()?;
        args.coordinators
            .push((me.with_file_name("hsm-coordinator"), None));
    }
    if args.tasks < 1000 || !args.tasks.is_multiple_of(1000) {
        bail!("--tasks must be a multiple of 1000 (the sweep is a grid of N/1000 x 1000)");
    }
    Ok(args)
}

/// One round's figures for one binary.
#[derive(Default)]
struct Row {
    binary: String,
    first_task: Duration,
    /// Peak RSS while tasks ran (before the cancel).
    running_rss_kb: u64,
    /// Peak RSS over the whole run, its end (views, report) included.
    peak_rss_kb: u64,
    /// (seconds since start, tasks ended, RSS in kB) samples while the sweep ran.
    rss_samples: Vec<(f64, u64, u64)>,
    status: Duration,
    status_rss_kb: u64,
    status_json_first_byte: Duration,
    status_json_total: Duration,
    status_json_rss_kb: u64,
    /// `sweep cancel` until it returned (the run released the sweep's lock: its tasks are
    /// stopped and sweep.db says so); `None`: not within the limit.
    cancel_returned: Option<Duration>,
    /// Until the run's process exited (after its summary and report); `None`: still running
    /// at the limit (then killed).
    cancel: Option<Duration>,
    complete_dry_run: Duration,
    complete_dry_run_rss_kb: u64,
    db_bytes: u64,
    files: u64,
    ended_at_cancel: u64,
}

fn main() -> anyhow::Result<()> {
    let args = parse_args()?;
    std::fs::create_dir_all(&args.dir)?;
    let mut rows = Vec::new();
    for round in 0..args.rounds {
        // Alternate the order each round so neither binary always runs on a warmer machine.
        let mut order: Vec<&(PathBuf, Option<String>)> = args.coordinators.iter().collect();
        if round % 2 == 1 {
            order.reverse();
        }
        for (bin, layout) in order {
            eprintln!("hsm-bench-scale: round {}: {}", round + 1, bin.display());
            rows.push(measure(&args, bin, layout.as_deref())?);
        }
    }
    let report = render(&args, &rows);
    if let Some(parent) = args.out.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(&args.out, &report)?;
    print!("{report}");
    eprintln!("hsm-bench-scale: wrote {}", args.out.display());
    Ok(())
}

fn measure(args: &Args, bin: &Path, layout: Option<&str>) -> anyhow::Result<Row> {
    let project = tempfile::tempdir_in(&args.dir)?;
    let p = project.path();
    let marker = p.join("first-task-started");
    std::fs::create_dir_all(p.join(".hsm"))?;
    std::fs::create_dir_all(p.join("sweeps"))?;
    // Short tasks, two at a time, so thousands end while the figures are taken.
    std::fs::write(
        p.join(".hsm/config.yaml"),
        format!(
            "command:\n  template: [\"/bin/sh\", \"-c\", \"[ -e '{m}' ] || : > '{m}'\", \"sh\", \"{{overrides}}\"]\n",
            m = marker.display()
        ),
    )?;
    std::fs::write(
        p.join("sweeps/sweep.yaml"),
        format!(
            "{}sweep:\n  grid:\n    a: {{range: [0, {}]}}\n    b: {{range: [0, 1000]}}\n",
            layout_line(layout),
            args.tasks / 1000
        ),
    )?;
    let mut row = Row {
        binary: match layout {
            Some(layout) => format!("{}:{layout}", bin.display()),
            None => bin.display().to_string(),
        },
        ..Row::default()
    };
    let started = Instant::now();
    let mut run = Command::new(bin)
        .args(["-q", "-C"])
        .arg(p)
        .args(["sweep", "run", "--parallel", "2"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {}", bin.display()))?;
    let pid = run.id();
    let stderr = run.stderr.take().expect("piped");
    let mut run = KillOnDrop(run);
    let stderr_lines = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = std::io::BufReader::new(stderr).read_to_string(&mut text);
        text
    });
    while !marker.exists() {
        if let Some(status) = run.try_wait()? {
            bail!(
                "sweep run ended ({status}) before its first task: {}",
                stderr_lines.join().unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    row.first_task = started.elapsed();
    eprintln!("  first task after {:.2} s", row.first_task.as_secs_f64());
    let sweep_dir = only_sweep_dir(p)?;
    let db = sweep_dir.join("sweep.db");
    // Sample memory while it runs.
    let until = Instant::now() + args.run_for;
    let mut next_sample = Instant::now();
    while Instant::now() < until {
        if Instant::now() >= next_sample {
            let (rss, hwm) = rss_of(pid);
            row.peak_rss_kb = row.peak_rss_kb.max(hwm);
            let ended = ended_tasks(&db);
            row.rss_samples
                .push((started.elapsed().as_secs_f64(), ended, rss));
            next_sample += args.run_for / 6;
        }
        if let Some(status) = run.try_wait()? {
            bail!("sweep run ended early ({status})");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    // `sweep status` while it runs: the median of three.
    let mut times = Vec::new();
    for _ in 0..3 {
        let (t, rss) = timed(bin, p, &["sweep", "status"])?;
        times.push(t);
        row.status_rss_kb = row.status_rss_kb.max(rss);
    }
    times.sort();
    row.status = times[1];
    eprintln!("  sweep status {:.3} s", row.status.as_secs_f64());
    let (first, total, rss) = streamed(bin, p, &["sweep", "status", "--json"])?;
    row.status_json_first_byte = first;
    row.status_json_total = total;
    row.status_json_rss_kb = rss;
    eprintln!(
        "  sweep status --json: first byte {:.3} s, all {:.3} s",
        first.as_secs_f64(),
        total.as_secs_f64()
    );
    let (hwm_now, _) = {
        let (_, hwm) = rss_of(pid);
        (hwm, ())
    };
    row.peak_rss_kb = row.peak_rss_kb.max(hwm_now);
    row.running_rss_kb = row.peak_rss_kb;
    // `sweep cancel`: from the command to the run's exit.
    row.ended_at_cancel = ended_tasks(&db);
    let cancel_started = Instant::now();
    // The command waits for the run itself (up to ten minutes); the bench watches the run.
    let mut cancel = Command::new(bin)
        .args(["-q", "-C"])
        .arg(p)
        .args(["sweep", "cancel"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    let deadline = cancel_started + args.cancel_limit;
    row.cancel = loop {
        // The peak while it stops counts too (VmHWM is gone once it exits).
        row.peak_rss_kb = row.peak_rss_kb.max(rss_of(pid).1);
        if row.cancel_returned.is_none() && cancel.try_wait()?.is_some() {
            row.cancel_returned = Some(cancel_started.elapsed());
        }
        if run.try_wait()?.is_some() {
            break Some(cancel_started.elapsed());
        }
        if Instant::now() > deadline {
            eprintln!(
                "  the run did not stop within {:?} of `sweep cancel`: killed",
                args.cancel_limit
            );
            let _ = run.kill();
            let _ = run.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    if row.cancel.is_some() && row.cancel_returned.is_none() {
        // It returned within the last poll, or is about to (it polls the lock every 100 ms).
        let _ = cancel.wait();
        row.cancel_returned = Some(cancel_started.elapsed());
    }
    let _ = cancel.kill();
    let _ = cancel.wait();
    let _ = stderr_lines.join();
    if let Some(t) = row.cancel {
        eprintln!("  cancel {:.2} s", t.as_secs_f64());
    }
    row.db_bytes = std::fs::metadata(&db).map(|m| m.len()).unwrap_or(0)
        + std::fs::metadata(sweep_dir.join("sweep.db-wal"))
            .map(|m| m.len())
            .unwrap_or(0);
    row.files = count_files(&sweep_dir);
    // `sweep complete --dry-run` with 10% of the tasks missing: nine in ten marked completed.
    {
        let conn = rusqlite::Connection::open(&db)?;
        conn.busy_timeout(Duration::from_secs(30))?;
        conn.execute(
            "UPDATE tasks SET status = 'completed', attempt = max(attempt, 1) WHERE idx % 10 != 0",
            [],
        )?;
        // Keep any maintained counts in step with the rows (a newer schema's table).
        let has_counts: bool = conn
            .query_row(
                "SELECT count(*) FROM sqlite_master WHERE name = 'task_counts'",
                [],
                |r| r.get::<_, i64>(0),
            )
            .map(|n| n > 0)?;
        if has_counts {
            conn.execute_batch(
                "DELETE FROM task_counts;
                 INSERT INTO task_counts (status, n) SELECT status, count(*) FROM tasks GROUP BY status;",
            )?;
        }
    }
    let (t, rss) = timed(bin, p, &["sweep", "complete", "--dry-run"])?;
    row.complete_dry_run = t;
    row.complete_dry_run_rss_kb = rss;
    eprintln!("  complete --dry-run {:.2} s", t.as_secs_f64());
    // Leave nothing behind: a million-task tree is gigabytes on the bench's filesystem.
    drop(project);
    Ok(row)
}

/// The sweep run being measured, ended by its pid if the bench stops early.
struct KillOnDrop(Child);

impl std::ops::Deref for KillOnDrop {
    type Target = Child;
    fn deref(&self) -> &Child {
        &self.0
    }
}

impl std::ops::DerefMut for KillOnDrop {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.0
    }
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
        }
        let _ = self.0.wait();
    }
}

fn only_sweep_dir(project: &Path) -> anyhow::Result<PathBuf> {
    let outputs = project.join("sweeps").join("outputs");
    for entry in
        std::fs::read_dir(&outputs).with_context(|| format!("reading {}", outputs.display()))?
    {
        let path = entry?.path();
        if path.join("sweep.db").exists() {
            return Ok(path);
        }
    }
    bail!("no sweep directory under {}", outputs.display())
}

/// Tasks with a final status, read as any other terminal would.
fn ended_tasks(db: &Path) -> u64 {
    let Ok(conn) =
        rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
    else {
        return 0;
    };
    let _ = conn.busy_timeout(Duration::from_secs(5));
    conn.query_row(
        "SELECT count(*) FROM attempts WHERE status IN ('completed', 'failed', 'cancelled')",
        [],
        |r| r.get::<_, i64>(0),
    )
    .map(|n| n as u64)
    .unwrap_or(0)
}

/// (VmRSS, VmHWM) of a process in kB.
fn rss_of(pid: u32) -> (u64, u64) {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        text.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// Runs a command to its end with its output discarded: wall time and peak RSS (kB).
fn timed(bin: &Path, project: &Path, args: &[&str]) -> anyhow::Result<(Duration, u64)> {
    let started = Instant::now();
    let child = Command::new(bin)
        .args(["-q", "-C"])
        .arg(project)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    let rss = wait_rss(child, args)?;
    Ok((started.elapsed(), rss))
}

/// Runs a command reading its output: time to the first byte, to the end, and peak RSS (kB).
fn streamed(
    bin: &Path,
    project: &Path,
    args: &[&str],
) -> anyhow::Result<(Duration, Duration, u64)> {
    let started = Instant::now();
    let mut child = Command::new(bin)
        .args(["-q", "-C"])
        .arg(project)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    let mut out = std::io::BufReader::new(child.stdout.take().expect("piped"));
    let first = {
        let buf = out.fill_buf()?;
        if buf.is_empty() {
            bail!("{args:?} printed nothing");
        }
        started.elapsed()
    };
    std::io::copy(&mut out, &mut std::io::sink())?;
    let total = started.elapsed();
    let rss = wait_rss(child, args)?;
    Ok((first, total, rss))
}

fn wait_rss(child: Child, args: &[&str]) -> anyhow::Result<u64> {
    Ok(wait_usage(child, &format!("{args:?}"))?.ru_maxrss as u64)
}

fn render(args: &Args, rows: &[Row]) -> String {
    let mut s = String::new();
    let mb = |kb: u64| kb as f64 / 1024.0;
    let _ = writeln!(
        s,
        "# hsm at scale: a {} x 1000 grid ({} tasks), 2 in flight\n",
        args.tasks / 1000,
        args.tasks
    );
    let _ = writeln!(
        s,
        "| binary | run → first task | peak RSS running / with its end | `status` | `status --json` first byte / all / RSS | `cancel` returns / run exits | `complete --dry-run` (10% missing) / RSS | sweep.db | files in sweep dir (at cancel: tasks ended) |"
    );
    let _ = writeln!(s, "|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    for r in rows {
        let _ = writeln!(
            s,
            "| `{}` | {:.2} s | {:.0} MB / {:.0} MB | {:.3} s | {:.2} s / {:.2} s / {:.0} MB | {} / {} | {:.2} s / {:.0} MB | {:.0} MB | {} ({}) |",
            r.binary,
            r.first_task.as_secs_f64(),
            mb(r.running_rss_kb),
            mb(r.peak_rss_kb),
            r.status.as_secs_f64(),
            r.status_json_first_byte.as_secs_f64(),
            r.status_json_total.as_secs_f64(),
            mb(r.status_json_rss_kb),
            r.cancel_returned
                .map(|t| format!("{:.2} s", t.as_secs_f64()))
                .unwrap_or_else(|| format!("> {} s", args.cancel_limit.as_secs())),
            r.cancel
                .map(|t| format!("{:.2} s", t.as_secs_f64()))
                .unwrap_or_else(|| format!("> {} s", args.cancel_limit.as_secs())),
            r.complete_dry_run.as_secs_f64(),
            mb(r.complete_dry_run_rss_kb),
            r.db_bytes as f64 / 1e6,
            r.files,
            r.ended_at_cancel,
        );
    }
    let _ = writeln!(
        s,
        "\nCoordinator RSS while the sweep ran (seconds since `sweep run`, tasks ended, RSS):\n"
    );
    for r in rows {
        let samples: Vec<String> = r
            .rss_samples
            .iter()
            .map(|(t, n, kb)| format!("{t:.0} s: {n} ended, {:.0} MB", mb(*kb)))
            .collect();
        let _ = writeln!(s, "- `{}`: {}", r.binary, samples.join("; "));
    }
    s
}

//! `hsm-bench-metrics`: what a task printing a million metric lines costs a run. Side by side in
//! one run, alternating: a local sweep of N short tasks where task 0 prints a million plain
//! lines, and the same where those lines are `HSM_METRIC loss=… step=…`; plus how fast the
//! metric reader goes through such a log on its own. Writes a Markdown results file. A
//! measurement, never a pass/fail test.
//!
//! Usage: `cargo run --release -p hsm-tests --bin hsm-bench-metrics -- [--tasks N] [--lines L]
//! [--rounds R] [--out FILE]`

use anyhow::{bail, Context};
use hsm_tests::hsm_sweep;
use std::io::Write;
use std::time::Instant;

struct Args {
    tasks: u64,
    lines: u64,
    rounds: u32,
    out: std::path::PathBuf,
}

fn parse() -> anyhow::Result<Args> {
    let mut args = Args {
        tasks: 2_000,
        lines: 1_000_000,
        rounds: 2,
        out: "target/bench/metrics.md".into(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().with_context(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--tasks" => args.tasks = value()?.parse()?,
            "--lines" => args.lines = value()?.parse()?,
            "--rounds" => args.rounds = value()?.parse()?,
            "--out" => args.out = value()?.into(),
            "-h" | "--help" => {
                println!("hsm-bench-metrics [--tasks N] [--lines L] [--rounds R] [--out FILE]");
                std::process::exit(0);
            }
            other => bail!("unknown flag {other}"),
        }
    }
    Ok(args)
}

/// Task 0 prints `lines` lines (metric lines or plain ones); every other task just exits.
fn script(lines: u64, metrics: bool) -> String {
    let line = if metrics {
        r#""HSM_METRIC loss=" 1/$1 " step=" $1"#
    } else {
        r#""epoch " $1 " loss " 1/$1"#
    };
    format!(
        "#!/bin/sh\ncase \"$1\" in\n  i=0) seq 1 {lines} | awk '{{print {line}}}' ;;\nesac\nexit 0\n"
    )
}

/// One sweep; returns its wall time and how many metric points and names it kept.
fn one_run(args: &Args, metrics: bool) -> anyhow::Result<(f64, i64, i64)> {
    let dir = tempfile::Builder::new()
        .prefix("hsm-bench-metrics")
        .tempdir_in(std::env::temp_dir())?;
    let project = dir.path();
    std::fs::write(project.join("task.sh"), script(args.lines, metrics))?;
    let config = "command:\n  template: [\"/bin/sh\", \"task.sh\", \"{overrides}\"]\n";
    let started = Instant::now();
    hsm_sweep(
        project,
        config,
        args.tasks,
        &["--parallel", "2", "--sweep-id", "b"],
    )?;
    let took = started.elapsed().as_secs_f64();
    let db = rusqlite::Connection::open(project.join("sweeps/outputs/b/sweep.db"))?;
    let points: i64 = db.query_row("SELECT count(*) FROM metrics", [], |r| r.get(0))?;
    let names: i64 = db.query_row("SELECT count(*) FROM task_metrics", [], |r| r.get(0))?;
    Ok((took, points, names))
}

fn main() -> anyhow::Result<()> {
    let args = parse()?;
    let mut plain = Vec::new();
    let mut with_metrics = Vec::new();
    let mut kept = (0, 0);
    for round in 0..args.rounds {
        // Alternate, so drift of the machine's load hits both alike.
        let order = if round % 2 == 0 {
            [false, true]
        } else {
            [true, false]
        };
        for metrics in order {
            let (secs, points, names) = one_run(&args, metrics)?;
            eprintln!(
                "round {round}: {} {secs:.2} s ({points} points kept)",
                if metrics {
                    "metric lines"
                } else {
                    "plain lines "
                }
            );
            if metrics {
                with_metrics.push(secs);
                kept = (points, names);
            } else {
                plain.push(secs);
            }
        }
    }
    // The reader alone over a log of `lines` metric lines.
    let dir = tempfile::tempdir()?;
    let log = dir.path().join("stdout.log");
    {
        let mut f = std::io::BufWriter::new(std::fs::File::create(&log)?);
        for step in 1..=args.lines {
            writeln!(f, "HSM_METRIC loss={} step={step}", 1.0 / step as f64)?;
        }
    }
    let bytes = std::fs::metadata(&log)?.len();
    let started = Instant::now();
    let read = hsm_coordinator::metrics_worker::extract(1, 1, dir.path());
    let parse_secs = started.elapsed().as_secs_f64();
    let kept_points = read.metrics.points().count();

    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len().max(1) as f64;
    let (p, m) = (mean(&plain), mean(&with_metrics));
    let mut report = String::new();
    report.push_str(&format!(
        "# A task printing {} metric lines\n\n{} local tasks (`/bin/sh`, 2 slots); task 0 prints {} lines, plain or `HSM_METRIC loss=… step=…`; {} rounds, alternating.\n\n\
         | task 0 prints | mean seconds | runs |\n|---|---:|---|\n\
         | plain lines | {p:.2} | {} |\n| metric lines | {m:.2} | {} |\n\n\
         Metric lines vs plain: {:.2}x the time. Kept in sweep.db: {} points, {} last values.\n\n\
         The reader alone: {} lines ({:.1} MiB) in {parse_secs:.2} s ({:.1} M lines/s), {kept_points} points kept.\n",
        args.lines,
        args.tasks,
        args.lines,
        args.rounds,
        plain.iter().map(|s| format!("{s:.2}")).collect::<Vec<_>>().join(", "),
        with_metrics.iter().map(|s| format!("{s:.2}")).collect::<Vec<_>>().join(", "),
        m / p,
        kept.0,
        kept.1,
        args.lines,
        bytes as f64 / (1024.0 * 1024.0),
        args.lines as f64 / parse_secs / 1e6,
    ));
    if let Some(parent) = args.out.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(&args.out, &report)?;
    print!("{report}");
    eprintln!("written to {}", args.out.display());
    Ok(())
}

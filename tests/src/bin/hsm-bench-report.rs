//! `hsm-bench-report`: the sweep report of a big synthetic sweep. Creates a `sweep.db` of N
//! tasks (default 100,000: five parameters, three sources, 5% failures in four kinds with
//! stderr tails, usage, two metrics per completed task) through `Store::create`/`apply`/
//! `record_metrics`, builds the report as `sweep report` does, and measures its size, the time
//! to build it and, when Chromium is installed, the time headless Chromium takes to load and
//! render it (`--dump-dom`, which returns after the page's script ran). Prints the figures and
//! appends a Markdown row to a results file. A measurement, never a pass/fail test.
//!
//! Usage: `cargo run --release -p hsm-tests --bin hsm-bench-report -- [--tasks N] [--out FILE]
//! [--dir DIR] [--loads K]`

use anyhow::{bail, Context};
use hsm_coordinator::core::metrics::TaskMetrics;
use hsm_coordinator::core::state::{Change, TaskStatus, Usage};
use hsm_coordinator::core::value::{params_hash, task_width, Params, Value};
use hsm_coordinator::layout::SweepPaths;
use hsm_coordinator::store::{NewTask, Store};
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Instant;

struct Args {
    tasks: u64,
    out: PathBuf,
    dir: Option<PathBuf>,
    loads: usize,
}

fn parse_args() -> anyhow::Result<Args> {
    let mut args = Args {
        tasks: 100_000,
        out: "target/bench/report.md".into(),
        dir: None,
        loads: 3,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().with_context(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--tasks" => args.tasks = value()?.parse()?,
            "--out" => args.out = value()?.into(),
            "--dir" => args.dir = Some(value()?.into()),
            "--loads" => args.loads = value()?.parse()?,
            "-h" | "--help" => {
                println!("hsm-bench-report [--tasks N] [--out FILE] [--dir DIR] [--loads K]");
                std::process::exit(0);
            }
            other => bail!("unknown flag {other}"),
        }
    }
    Ok(args)
}

/// xorshift64*: reproducible data without a dependency.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

fn params_of(index: u64) -> Params {
    let mut rng = Rng(index.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    let lr = 10f64.powf(-5.0 + 4.0 * rng.unit());
    let batch = [16, 32, 64, 128, 256][(rng.next() % 5) as usize];
    let opt = ["adam", "sgd", "adamw"][(rng.next() % 3) as usize];
    [
        ("lr".to_string(), Value::Float(lr)),
        ("batch_size".to_string(), Value::Int(batch)),
        ("optimizer".to_string(), Value::Str(opt.into())),
        ("dropout".to_string(), Value::Float(rng.unit() * 0.5)),
        ("seed".to_string(), Value::Int((index % 10) as i64)),
    ]
    .into_iter()
    .collect()
}

const FAILURES: [(&str, &str); 4] = [
    ("exit code 1: RuntimeError: CUDA out of memory. Tried to allocate 2.00 GiB", "Traceback (most recent call last):\n  File \"train.py\", line 88, in <module>\n    loss.backward()\nRuntimeError: CUDA out of memory. Tried to allocate 2.00 GiB"),
    ("exit code 1: FloatingPointError: loss is NaN", "Traceback (most recent call last):\n  File \"train.py\", line 93, in <module>\nFloatingPointError: loss is NaN"),
    ("killed by signal 9", "Killed"),
    ("timed out after 2h", "epoch 7/10"),
];

fn create(paths: &SweepPaths, n: u64) -> anyhow::Result<()> {
    let width = task_width(n);
    let mut store = Store::create(
        &paths.db(),
        &[
            ("sweep_id", "bench".to_string()),
            ("created", "1780000000000".to_string()),
            ("hsm_version", env!("CARGO_PKG_VERSION").to_string()),
        ],
        width,
        (1..=n).map(|index| {
            let params = params_of(index);
            NewTask {
                index,
                params_hash: params_hash(&params),
                params,
            }
        }),
    )?;
    let sources = ["local", "gpu1", "cluster"];
    let slots = [4u64, 8, 64];
    let mut clock = [1_780_000_000_000i64; 3];
    let mut rng = Rng(7);
    let mut batch = Vec::with_capacity(20_000);
    for index in 1..=n {
        let s = (index % 10).min(2) as usize;
        let duration = (20_000.0 + 400_000.0 * rng.unit() * rng.unit()) as i64;
        let start = clock[s];
        clock[s] += duration / slots[s] as i64;
        let failed = rng.next().is_multiple_of(20);
        let change = |status, at| Change::new(index, 1, status, Some(sources[s].to_string()), at);
        batch.push(change(TaskStatus::Running, start));
        let kind = (rng.next() % 4) as usize;
        batch.push(Change {
            exit_code: failed.then_some(1),
            reason: failed.then(|| FAILURES[kind].0.to_string()),
            stderr_tail: failed.then(|| FAILURES[kind].1.to_string()),
            usage: Some(Usage {
                wall_ms: Some(duration as u64),
                cpu_user_ms: Some((duration as f64 * 0.9) as u64),
                cpu_sys_ms: Some(duration as u64 / 50),
                max_rss_kb: Some(500_000 + rng.next() % 4_000_000),
                scheduler: None,
            }),
            ..change(
                if failed {
                    TaskStatus::Failed
                } else {
                    TaskStatus::Completed
                },
                start + duration,
            )
        });
        if batch.len() >= 20_000 {
            store.apply(&batch)?;
            batch.clear();
        }
        if !failed {
            let Value::Float(lr) = params_of(index)["lr"] else {
                unreachable!()
            };
            let loss = (lr.log10() + 3.0).abs() * 0.4 + rng.unit() * 0.3;
            let mut metrics = TaskMetrics::default();
            metrics.parse_line(&format!(
                "HSM_METRIC loss={loss:.5} acc={:.5}",
                1.0 - loss / 3.0
            ));
            store.record_metrics(&[(index, 1, &metrics)], start + duration)?;
        }
    }
    store.apply(&batch)?;
    Ok(())
}

fn chromium() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .flat_map(|dir| ["chromium", "chromium-browser"].map(|name| dir.join(name)))
        .find(|p| p.is_file())
}

/// Seconds headless Chromium takes to load the page and run its script (`--dump-dom` returns
/// after the load event; the page renders synchronously before it).
fn load_time(browser: &PathBuf, page: &std::path::Path) -> anyhow::Result<f64> {
    let profile = tempfile::tempdir()?;
    let started = Instant::now();
    let out = Command::new(browser)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg("--dump-dom")
        .arg(format!("file://{}", page.display()))
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()?;
    let secs = started.elapsed().as_secs_f64();
    let dom = String::from_utf8_lossy(&out.stdout);
    if !dom.contains("data-rendered=\"ok\"") {
        bail!("the page did not render (no data-rendered=\"ok\")");
    }
    Ok(secs)
}

fn main() -> anyhow::Result<()> {
    let args = parse_args()?;
    let dir = match &args.dir {
        Some(dir) => dir.clone(),
        None => std::env::temp_dir().join(format!("hsm-bench-report-{}", std::process::id())),
    };
    let root = dir.join("bench");
    if root.exists() {
        std::fs::remove_dir_all(&root)?;
    }
    std::fs::create_dir_all(&root)?;
    let paths = SweepPaths::new(root.clone()).with_task_width(task_width(args.tasks));
    let started = Instant::now();
    create(&paths, args.tasks)?;
    let db_bytes = std::fs::metadata(paths.db())?.len();
    println!(
        "sweep.db with {} tasks: {:.1}s, {:.1} MiB",
        args.tasks,
        started.elapsed().as_secs_f64(),
        db_bytes as f64 / 1048576.0
    );
    let page = root.join("reports/report.html");
    let started = Instant::now();
    let written = hsm_coordinator::report::write(&paths, "bench", false, &page)?;
    let total_ms = started.elapsed().as_secs_f64() * 1e3;
    println!(
        "report: {} ({:.2} MiB), {} of {} tasks embedded; read {:.0} ms + build {:.0} ms = {:.0} ms",
        page.display(),
        written.bytes as f64 / 1048576.0,
        written.embedded,
        written.tasks,
        written.read_ms,
        written.build_ms,
        total_ms
    );
    let loads: Vec<f64> = match chromium() {
        Some(browser) => (0..args.loads)
            .map(|_| load_time(&browser, &page))
            .collect::<anyhow::Result<_>>()?,
        None => {
            println!("chromium not installed: no load time");
            Vec::new()
        }
    };
    let loads_text = if loads.is_empty() {
        "—".to_string()
    } else {
        loads
            .iter()
            .map(|s| format!("{s:.2}s"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    println!("chromium --dump-dom: {loads_text}");
    if let Some(parent) = args.out.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let new = !args.out.exists();
    let mut out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&args.out)?;
    if new {
        writeln!(out, "| tasks | embedded | report size | read sweep.db | build page | total | chromium load (--dump-dom) |")?;
        writeln!(out, "|---:|---:|---:|---:|---:|---:|---|")?;
    }
    writeln!(
        out,
        "| {} | {} | {:.2} MiB | {:.0} ms | {:.0} ms | {:.0} ms | {} |",
        written.tasks,
        written.embedded,
        written.bytes as f64 / 1048576.0,
        written.read_ms,
        written.build_ms,
        total_ms,
        loads_text
    )?;
    println!("appended to {}", args.out.display());
    if args.dir.is_none() {
        std::fs::remove_dir_all(&dir)?;
    }
    Ok(())
}

//! The sweep report in a real browser: a local sweep whose tasks print `HSM_METRIC` lines and
//! some of which fail (one with markup in its error), `sweep report`, then headless Chromium
//! opens the file: the script ran to the end without an error, every section rendered, the
//! sweep's text stayed text, and brushing and sorting work (`#selfcheck`). The screenshot is
//! kept in target/test-artifacts/report.png. Skips with a reason where Chromium is missing and
//! this is not root (as root, tests/run-all.sh installs it).

mod common;

use common::browser::*;
use common::*;
use hsm_coordinator::store::Store;
use std::path::Path;

/// Prints metrics; `sgd` with lr 0.1 diverges with a traceback whose message holds markup;
/// adam with lr 0.001 and batch 64 exits 3.
const TASK_PY: &str = r#"
import os, sys
args = dict(a.split("=", 1) for a in sys.argv[1:])
os.makedirs(args["output.dir"], exist_ok=True)
lr, opt, bs = float(args["lr"]), args["optimizer"], int(args["batch_size"])
if opt == "sgd" and lr >= 0.1:
    print("Traceback (most recent call last):", file=sys.stderr)
    print('  File "task.py", line 7, in <module>', file=sys.stderr)
    print("FloatingPointError: loss is NaN </script><script>document.title='pwned'</script>", file=sys.stderr)
    sys.exit(1)
if opt == "adam" and lr == 0.001 and bs == 64:
    print("error: data shard 3 missing", file=sys.stderr)
    sys.exit(3)
loss = lr * 10 + bs / 1000
for step in range(3):
    print(f"HSM_METRIC loss={loss + (2 - step) * 0.1:.4f} acc={1 - loss / 3:.4f} step={step}", flush=True)
"#;

const SWEEP: &str = "sweep:\n  grid:\n    lr: [0.001, 0.01, 0.1]\n    optimizer: [adam, sgd]\n    batch_size: [32, 64]\n";

#[test]
fn the_report_renders_in_a_real_browser() {
    let p = Project::new(
        CONFIG,
        &[("task.py", TASK_PY), ("sweeps/sweep.yaml", SWEEP)],
    );
    let run = p.run(&["sweep", "run", "--sweep-id", "rep"]);
    run.expect_code(1);
    let default = p.sweep_dir("rep").join("reports").join("report.html");
    assert!(
        run.stderr.contains("report: ") && default.is_file(),
        "the run wrote its report:\n{}",
        run.stderr
    );
    // The run collected the tasks' metrics before it wrote its report.
    let store = Store::open(&p.sweep_dir("rep").join("sweep.db")).unwrap();
    assert_eq!(
        store.last_metrics().unwrap().len(),
        9,
        "the 9 tasks that completed"
    );
    let written = std::fs::read_to_string(&default).unwrap();
    assert!(
        written.contains("\"acc\"") && written.contains("\"loss\""),
        "the run's report has the metrics"
    );
    let artifacts = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../target/test-artifacts")
        .canonicalize()
        .unwrap_or_else(|_| {
            let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/test-artifacts");
            std::fs::create_dir_all(&dir).unwrap();
            dir.canonicalize().unwrap()
        });
    let out = artifacts.join("report.html");
    let made = p.run(&["sweep", "report", "rep", "-o", out.to_str().unwrap()]);
    made.expect_code(0);
    assert!(
        made.stdout.contains("12 of 12 tasks plotted"),
        "{}",
        made.stdout
    );
    let html = std::fs::read_to_string(&out).unwrap();
    assert!(!html.contains("<script>document.title"), "markup escaped");
    // A mistyped -o directory is refused, not created.
    let missing = p.path().join("no-such-dir/r.html");
    let refused = p.run(&["sweep", "report", "rep", "-o", missing.to_str().unwrap()]);
    refused.expect_code(2);
    assert!(
        refused.stderr.contains("does not exist"),
        "{}",
        refused.stderr
    );
    assert!(!p.path().join("no-such-dir").exists());

    let Some(browser) = chromium_or_skip() else {
        return;
    };
    let profile = tempfile::tempdir().unwrap();
    let url = format!("file://{}", out.display());
    let (dom, log) = run_chromium(&browser, profile.path(), &["--dump-dom"], &url);
    let fail = |why: &str| -> ! {
        panic!("{why}\n--- DOM ---\n{dom}\n--- chromium stderr ---\n{log}");
    };
    if !dom.contains("data-rendered=\"ok\"") {
        fail("the page's script did not finish rendering");
    }
    if !page_errors(&log).is_empty() {
        fail(&format!("console errors: {:?}", page_errors(&log)));
    }
    if !dom.contains("id=\"js-errors\" hidden=\"\"") {
        fail("the error box is shown");
    }
    // Every section, with what this sweep holds.
    let attr = |id: &str, a: &str| {
        attr_of(&dom, id, a).unwrap_or_else(|| fail(&format!("no {a} on #{id}")))
    };
    assert_eq!(
        attr("best-table", "data-rows"),
        "9",
        "the 9 completed tasks"
    );
    assert_eq!(attr("error-groups", "data-groups"), "2");
    // One source (local) ran one attempt of each of the 12 tasks (core::stats' figures).
    assert_eq!(attr("sources-table", "data-sources"), "1");
    assert_eq!(attr("sources-table", "data-attempts"), "12");
    assert_eq!(
        attr("pc-canvas", "data-axes"),
        "4",
        "3 parameters and the metric"
    );
    assert_eq!(attr("sample-note", "data-total"), "12");
    assert_eq!(attr("selected-count", "data-selected"), "12");
    assert_eq!(attr("timeline-canvas", "data-mode"), "bars");
    attr("histogram-canvas", "class");
    assert_eq!(
        dom.matches("class=\"plot scatter\"").count(),
        3,
        "a scatter per parameter"
    );
    for text in [
        "2 tasks",
        "error: data shard 3 missing",
        "stderr tail of task_",
        ">acc</option>",
        ">loss</option>",
        "sweep id",
    ] {
        if !dom.contains(text) {
            fail(&format!("{text:?} not rendered"));
        }
    }
    // The sweep's markup is text in the page, not elements.
    if dom.contains("<script>document.title")
        || !dom.contains("&lt;/script&gt;&lt;script&gt;document.title")
    {
        fail("the failure text was not kept as text");
    }
    if !dom.contains("<title>hsm report: rep</title>") {
        fail("the title changed: the sweep's script ran");
    }

    // Brushing the best half of the metric and sorting by a parameter, in the browser.
    let (checked, log) = run_chromium(
        &browser,
        profile.path(),
        &["--dump-dom"],
        &format!("{url}#selfcheck"),
    );
    let check = checked
        .find("data-selfcheck=\"")
        .map(|at| &checked[at + "data-selfcheck=\"".len()..])
        .and_then(|rest| Some(rest[..rest.find('"')?].to_string()))
        .unwrap_or_else(|| panic!("no self-check result\n{checked}\n{log}"));
    let fields: std::collections::HashMap<&str, &str> = check
        .split(';')
        .filter_map(|kv| kv.split_once('='))
        .collect();
    let selected: usize = fields["selected"].parse().unwrap();
    assert!(
        (1..9).contains(&selected),
        "brushing keeps some of the 9 tasks with a loss: {check}"
    );
    assert_eq!(fields["rows"], fields["selected"], "{check}");
    assert_eq!(fields["sorted"], "lr", "{check}");
    assert!(page_errors(&log).is_empty(), "{log}");

    let shot = artifacts.join("report.png");
    let _ = std::fs::remove_file(&shot);
    let (_, log) = run_chromium(
        &browser,
        profile.path(),
        &[
            &format!("--screenshot={}", shot.display()),
            "--window-size=1400,2400",
            "--hide-scrollbars",
        ],
        &url,
    );
    assert!(shot.is_file(), "no screenshot:\n{log}");
    println!("screenshot: {}", shot.display());
}

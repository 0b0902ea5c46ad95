//! Hostile sweep and config files through the real binary under a 1 GiB address-space cap: YAML
//! alias bombs, generators that add up past a sweep's value budget, and task counts past u64.
//! Before the bounds each bomb aborted the process on its memory (exit 134); now each is exit 2
//! with the line to fix.

mod common;

use common::*;
use std::os::unix::process::CommandExt;
use std::process::Stdio;

/// The cap each command runs under: far above what a real sweep or config needs, far below what
/// the unbounded expansions asked for (10^9 nodes, 20 million values).
const MEMORY_CAP: libc::rlim_t = 1 << 30;

const CONFIG: &str = "command:\n  template: [\"sh\", \"-c\", \"true\", \"{overrides}\"]\n";

/// Runs `args` like `Project::run`, with the address space capped at [`MEMORY_CAP`].
fn run_capped(p: &Project, args: &[&str]) -> Run {
    let mut cmd = p.command(args);
    // SAFETY: setrlimit is async-signal-safe, and the closure touches nothing else.
    unsafe {
        cmd.pre_exec(|| {
            let limit = libc::rlimit {
                rlim_cur: MEMORY_CAP,
                rlim_max: MEMORY_CAP,
            };
            if libc::setrlimit(libc::RLIMIT_AS, &limit) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn hsm-coordinator");
    let description = format!(
        "(address space capped at 1 GiB) {} -C {} {}",
        bin(),
        p.path().display(),
        args.join(" ")
    );
    Run::wait(child, description)
}

fn expect_refused(run: &Run, needles: &[&str]) {
    run.expect_code(2);
    for needle in needles {
        if !run.stderr.contains(needle) {
            run.fail(&format!("missing {needle:?} in stderr"));
        }
    }
}

/// The alias bomb (~480 bytes): nine levels of ten aliases, 10^9 nodes if expanded,
/// under `key:` at the top of the file.
fn alias_bomb(key: &str) -> String {
    let mut text = format!("{key}:\n  l0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
    for level in 1..9 {
        let alias = format!("*a{}", level - 1);
        let items = [alias.as_str(); 10].join(", ");
        text.push_str(&format!("  l{level}: &a{level} [{items}]\n"));
    }
    text
}

#[test]
fn alias_bombs_in_a_sweep_or_the_config_are_refused_at_their_line_in_bounded_memory() {
    let sweep = alias_bomb("metadata") + "sweep:\n  grid:\n    lr: [0.1, 0.01]\n";
    let p = Project::new(CONFIG, &[("sweeps/sweep.yaml", &sweep)]);
    // Level 5 (line 7) is where the copies pass a million nodes.
    let needles = ["sweeps/sweep.yaml:7:", "anchors and aliases expand"];
    expect_refused(&run_capped(&p, &["config", "validate"]), &needles);
    expect_refused(&run_capped(&p, &["sweep", "run", "--dry-run"]), &needles);

    let config = format!("{CONFIG}{}", alias_bomb("x-shared"));
    let p = Project::new(&config, &[("sweeps/sweep.yaml", "grid:\n  lr: [0.1]\n")]);
    let needles = [".hsm/config.yaml:9:", "anchors and aliases expand"];
    expect_refused(&run_capped(&p, &["config", "validate"]), &needles);
    expect_refused(&run_capped(&p, &["sweep", "run", "--dry-run"]), &needles);
}

#[test]
fn generators_past_the_sweep_total_are_refused_before_their_values_are_made() {
    // The 685-byte file: each generator is within its own limit, twenty are not.
    let mut sweep = String::from("sweep:\n  grid:\n");
    for k in 0..20 {
        sweep.push_str(&format!("    p{k}: {{range: [0, 1000000, 1]}}\n"));
    }
    let p = Project::new(CONFIG, &[("sweeps/sweep.yaml", &sweep)]);
    let needles = [
        "sweeps/sweep.yaml:13:5",
        "20000000 values in all, more than the limit of 10000000",
    ];
    expect_refused(&run_capped(&p, &["config", "validate"]), &needles);
    expect_refused(&run_capped(&p, &["sweep", "run", "--dry-run"]), &needles);
    expect_refused(&run_capped(&p, &["sweep", "run", "--count-only"]), &needles);
}

#[test]
fn counts_past_u64_are_said_in_words_not_as_a_saturated_number() {
    // 10^20 tasks from 400,000 values.
    let mut sweep = String::from("grid:\n");
    for k in 0..4 {
        sweep.push_str(&format!("  k{k}: {{range: [0, 100000]}}\n"));
    }
    let p = Project::new(CONFIG, &[("sweeps/sweep.yaml", &sweep)]);
    let saturated = "18446744073709551615";

    let validate = run_capped(&p, &["config", "validate"]);
    validate.expect_code(0);
    if !validate.stdout.contains("ok, 2^64 or more tasks") || validate.stdout.contains(saturated) {
        validate.fail("expected the count in words");
    }

    let count = run_capped(&p, &["sweep", "run", "--count-only"]);
    expect_refused(&count, &["2^64 or more tasks, too many to count exactly"]);
    if count.stdout.contains(saturated) || count.stderr.contains(saturated) {
        count.fail("a saturated count was printed");
    }
    // With --max-runs there is a number to give.
    let limited = run_capped(&p, &["sweep", "run", "--count-only", "--max-runs", "5"]);
    limited.expect_code(0);
    assert_eq!(limited.stdout.trim(), "5", "{}", limited.stdout);

    let dry = run_capped(&p, &["sweep", "run", "--dry-run"]);
    expect_refused(
        &dry,
        &["2^64 or more tasks is more than one sweep holds (20000000)"],
    );
}

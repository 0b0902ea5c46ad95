//! Pre-flight: before any task goes to an agent, the agent checks that the project directory,
//! the script and the interpreter are there; a source that fails is out of the run with one
//! message naming the host and the fix, and the other sources run the sweep. Real `hsm-agent`
//! processes on loopback, real `sweep run`.

mod common;

use common::*;

const TASK_PY: &str = "import sys\nprint('ran', sys.argv[1:])\n";

fn project() -> Project {
    Project::new(
        "command:\n  python: python3\n  script: task.py\n  style: argparse\n",
        &[
            ("task.py", TASK_PY),
            (
                "sweeps/sweep.yaml",
                "sweep:\n  grid:\n    i: {range: [1, 5]}\n",
            ),
        ],
    )
}

/// Adds `agent` as source `name` with these extra `agent add` flags (authorized first).
fn add(
    p: &Project,
    agent_bin: &std::path::Path,
    agent: &AgentProcess,
    name: &str,
    own: &str,
    flags: &[&str],
) {
    let ok = std::process::Command::new(agent_bin)
        .args(["authorize", own, "--state-dir"])
        .arg(&agent.state)
        .output()
        .unwrap();
    assert!(ok.status.success());
    let mut args = vec![
        "agent",
        "add",
        name,
        &agent.addr,
        "--fingerprint",
        &agent.fingerprint,
    ];
    args.extend_from_slice(flags);
    p.run(&args).expect_code(0);
}

/// Task directories the agent made (none means no task went there).
fn agent_task_dirs(agent: &AgentProcess) -> usize {
    count_named(&agent.work_dir(), "task_")
}

#[test]
fn a_source_missing_the_project_is_out_of_the_run_before_any_task_and_the_others_run_it() {
    let Some(agent_bin) = agent_bin() else {
        return;
    };
    let home = tempfile::tempdir().unwrap();
    let p = project();
    let own = coordinator_fingerprint(&p, home.path());
    let agent = start_agent(&agent_bin);
    add(
        &p,
        &agent_bin,
        &agent,
        "far",
        &own,
        &["--project-dir", "/nonexistent/proj"],
    );
    let run = p.run_in(
        home.path(),
        &["sweep", "run", "--sources", "local,far", "--sweep-id", "pf"],
    );
    run.expect_code(0);
    let all = format!("{}{}", run.stdout, run.stderr);
    for needed in [
        "pre-flight checks failed on far",
        "/nonexistent/proj does not exist",
        "sources.far.project_dir",
    ] {
        if !all.contains(needed) {
            run.fail(&format!("the output does not say {needed:?}"));
        }
    }
    assert_eq!(agent_task_dirs(&agent), 0, "no task may reach the agent");
    let status = p.status("pf");
    assert!(statuses(&status).iter().all(|(_, s, _)| s == "completed"));

    // The same checks without a sweep; then fixed.
    let validate = || p.run_in(home.path(), &["config", "validate", "--remote"]);
    // The project is missing there.
    let check = validate();
    check.expect_code(2);
    if !check.stdout.contains("pre-flight checks failed on far")
        || !check.stdout.contains("/nonexistent/proj does not exist")
    {
        check.fail("the remote check does not name the missing project");
    }
    let project_dir = p.path().display().to_string();
    add(
        &p,
        &agent_bin,
        &agent,
        "far",
        &own,
        &["--project-dir", &project_dir],
    );
    let check = validate();
    check.expect_code(0);
    if !check.stdout.contains("remote far (") || !check.stdout.contains("): ok") {
        check.fail("the remote check does not say the source is ok");
    }
}

#[test]
fn with_no_other_source_the_run_stops_at_once_naming_the_interpreter_and_its_fix() {
    let Some(agent_bin) = agent_bin() else {
        return;
    };
    let home = tempfile::tempdir().unwrap();
    let p = project();
    let own = coordinator_fingerprint(&p, home.path());
    let agent = start_agent(&agent_bin);
    let project_dir = p.path().display().to_string();
    add(
        &p,
        &agent_bin,
        &agent,
        "far",
        &own,
        &["--project-dir", &project_dir],
    );
    // An interpreter that does not exist on that host.
    let config = std::fs::read_to_string(p.path().join(".hsm/config.yaml")).unwrap();
    let config = config.replacen(
        &format!("project_dir: {project_dir}"),
        &format!("project_dir: {project_dir}\n    python: /no/such/python3"),
        1,
    );
    assert!(config.contains("/no/such/python3"), "{config}");
    p.write(".hsm/config.yaml", &config);
    let run = p.run_in(
        home.path(),
        &["sweep", "run", "--sources", "far", "--sweep-id", "pf2"],
    );
    run.expect_code(2);
    eprintln!("--- what the user sees ---\n{}", run.stderr);
    for needed in [
        "pre-flight checks failed on far",
        "/no/such/python3 --version",
        "sources.far.python",
    ] {
        if !run.stderr.contains(needed) && !run.stdout.contains(needed) {
            run.fail(&format!("the output does not say {needed:?}"));
        }
    }
    assert_eq!(agent_task_dirs(&agent), 0, "no task may reach the agent");
}

#[test]
fn an_agent_sources_env_pre_script_and_python_are_what_its_tasks_run_with() {
    let Some(agent_bin) = agent_bin() else {
        return;
    };
    let home = tempfile::tempdir().unwrap();
    let p = Project::new(
        "command:\n  python: python3\n  script: task.py\n  style: argparse\n  env: {GREETING: hello, WHERE: project}\n",
        &[
            (
                "task.py",
                "import os, sys\nprint('env', os.environ['GREETING'], os.environ['WHERE'], os.environ.get('FROM_PRE'), sys.executable)\n",
            ),
            ("sweeps/sweep.yaml", "sweep:\n  grid:\n    i: [1, 2]\n"),
        ],
    );
    let own = coordinator_fingerprint(&p, home.path());
    let agent = start_agent(&agent_bin);
    let project_dir = p.path().display().to_string();
    add(
        &p,
        &agent_bin,
        &agent,
        "far",
        &own,
        &["--project-dir", &project_dir],
    );
    // The source's own interpreter (a link under another name), environment and set-up lines.
    let python = which("python3");
    let link = p.path().join("py-on-far");
    std::os::unix::fs::symlink(&python, &link).unwrap();
    let config = std::fs::read_to_string(p.path().join(".hsm/config.yaml")).unwrap();
    let config = config.replacen(
        &format!("project_dir: {project_dir}"),
        &format!(
            "project_dir: {project_dir}\n    python: {}\n    env: {{WHERE: far}}\n    pre_script: [\"FROM_PRE=set-up\", \"export FROM_PRE\"]",
            link.display()
        ),
        1,
    );
    p.write(".hsm/config.yaml", &config);
    let run = p.run_in(
        home.path(),
        &["sweep", "run", "--sources", "far", "--sweep-id", "env"],
    );
    run.expect_code(0);
    for i in 1..=2 {
        let log = std::fs::read_to_string(
            p.sweep_dir("env")
                .join(format!("tasks/task_{i:03}/stdout.log")),
        )
        .unwrap();
        let want = format!("env hello far set-up {}", link.display());
        assert!(log.contains(&want), "task {i}: {log:?}, wanted {want:?}");
    }
}

/// The interpreter `program` really is (not a shim such as pyenv's, which dispatches on its name).
fn which(program: &str) -> std::path::PathBuf {
    let out = std::process::Command::new(program)
        .args(["-c", "import sys; print(sys.executable)"])
        .output()
        .unwrap();
    std::path::PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
}

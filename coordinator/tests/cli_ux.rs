//! End-to-end tests of the first hour's rough edges: `init` next to existing files, `config
//! validate` reporting what `sweep run` would refuse, `agent add/remove/list`, and an agent
//! source running its tasks with its own interpreter.

mod common;

use common::*;

const FP: &str = "sha256:0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f";

#[test]
fn init_keeps_an_existing_sweep_and_force_keeps_backups() {
    let p = Project::new("", &[]);
    std::fs::remove_file(p.path().join(".hsm/config.yaml")).unwrap();
    let mine = "# my sweep\nsweep:\n  grid:\n    lr: [1, 2]\n";
    p.write("sweeps/sweep.yaml", mine);
    p.write("train.py", "print('hi')\n");
    let run = p.run(&["init"]);
    run.expect_code(0);
    assert!(
        run.stdout.contains("wrote .hsm/config.yaml"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains("kept sweeps/sweep.yaml (exists)"),
        "{}",
        run.stdout
    );
    let sweep_path = p.path().join("sweeps/sweep.yaml");
    assert_eq!(std::fs::read_to_string(&sweep_path).unwrap(), mine);

    // Both exist: nothing is written, exit 2, and the message names --force.
    let config = std::fs::read_to_string(p.path().join(".hsm/config.yaml")).unwrap();
    let run = p.run(&["init"]);
    run.expect_code(2);
    assert!(run.stderr.contains("--force"), "{}", run.stderr);

    // --force replaces both and keeps the old files as .bak (never overwriting a backup).
    p.run(&["init", "--force"]).expect_code(0);
    assert_eq!(
        std::fs::read_to_string(p.path().join("sweeps/sweep.yaml.bak")).unwrap(),
        mine
    );
    assert_eq!(
        std::fs::read_to_string(p.path().join(".hsm/config.yaml.bak")).unwrap(),
        config
    );
    assert_ne!(std::fs::read_to_string(&sweep_path).unwrap(), mine);
    let run = p.run(&["init", "--force"]);
    run.expect_code(0);
    assert!(
        p.path().join("sweeps/sweep.yaml.bak.2").is_file(),
        "{}",
        run.stdout
    );
    assert_eq!(
        std::fs::read_to_string(p.path().join("sweeps/sweep.yaml.bak")).unwrap(),
        mine
    );

    // A v1 config counts as the config: init does not shadow it with .hsm/config.yaml.
    let v1 = Project::new("", &[]);
    std::fs::remove_file(v1.path().join(".hsm/config.yaml")).unwrap();
    v1.write(
        "sweeps/hsm_config.yaml",
        "paths:\n  train_script: train.py\n",
    );
    let run = v1.run(&["init"]);
    run.expect_code(0);
    assert!(!v1.path().join(".hsm/config.yaml").exists());
    assert!(
        run.stdout.contains("kept sweeps/hsm_config.yaml"),
        "{}",
        run.stdout
    );
}

#[test]
fn config_validate_reports_what_sweep_run_would_refuse_all_at_once() {
    let p = Project::new(
        &format!(
            "command:\n  python: /nonexistent/bin/python\n  script: missing.py\nsources:\n  gpu1:\n    type: agent\n    address: 'h:1'\n    fingerprint: {FP}\n"
        ),
        &[("sweeps/sweep.yaml", "sweep:\n  grid:\n    lr: [1]\n")],
    );
    let run = p.run(&["config", "validate"]);
    run.expect_code(2);
    // The agent without project_dir, with its position and the fix.
    assert!(
        run.stderr.contains(".hsm/config.yaml:6:5: sources.gpu1: an agent source needs `project_dir` — add project_dir:"),
        "{}",
        run.stderr
    );
    // Fix that; now the command checks run and report both problems together.
    p.write(
        ".hsm/config.yaml",
        &format!(
            "command:\n  python: /nonexistent/bin/python\n  script: missing.py\nsources:\n  gpu1:\n    type: agent\n    address: 'h:1'\n    fingerprint: {FP}\n    project_dir: /srv/p\n"
        ),
    );
    let run = p.run(&["config", "validate"]);
    run.expect_code(2);
    assert!(
        run.stderr.contains("training script missing.py not found")
            && run.stderr.contains("command.script"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr
            .contains("program `/nonexistent/bin/python` not found")
            && run.stderr.contains("command.python"),
        "{}",
        run.stderr
    );
    // sweep run refuses the same, creating nothing.
    p.run(&["sweep", "run"]).expect_code(2);
    assert!(!p.outputs().exists());
    p.write(
        ".hsm/config.yaml",
        "command:\n  python: python3\n  script: train.py\n",
    );
    p.write("train.py", "");
    p.run(&["config", "validate"]).expect_code(0);
}

#[test]
fn agent_add_update_remove_and_list() {
    let p = Project::new(CONFIG, &[("task.py", "")]);
    let add = |extra: &[&str]| {
        let mut args = vec!["agent", "add", "gpu1", "gpu1.lab:7300", "--fingerprint", FP];
        args.extend_from_slice(extra);
        p.run(&args)
    };
    // A new agent needs --project-dir; the message says so and shows the whole command.
    let run = add(&[]);
    run.expect_code(2);
    assert!(
        run.stderr.contains("--project-dir DIR is needed")
            && run.stderr.contains("agent add gpu1 gpu1.lab:7300"),
        "{}",
        run.stderr
    );
    let run = add(&[
        "--project-dir",
        "/srv/proj",
        "--backend",
        "slurm",
        "--python",
        "/opt/py/bin/python3",
    ]);
    run.expect_code(0);
    assert!(
        run.stdout.contains("agent gpu1 (gpu1.lab:7300"),
        "{}",
        run.stdout
    );
    assert!(run.stdout.contains(") added in"), "{}", run.stdout);
    let show = p.run(&["config", "show"]);
    show.expect_code(0);
    for want in [
        "backend: slurm",
        "python: /opt/py/bin/python3",
        "project_dir: /srv/proj",
    ] {
        assert!(show.stdout.contains(want), "{want}: {}", show.stdout);
    }
    // Again, without --project-dir: an update, which keeps it.
    let run = add(&["--slots", "3"]);
    run.expect_code(0);
    assert!(run.stdout.contains(") updated in"), "{}", run.stdout);
    p.run(&[
        "agent",
        "add",
        "gpu2",
        "127.0.0.1:1",
        "--fingerprint",
        FP,
        "--project-dir",
        "/p2",
    ])
    .expect_code(0);
    let bad_backend = add(&["--backend", "slurn"]);
    bad_backend.expect_code(2);

    let list = p.run(&["agent", "list"]);
    list.expect_code(0);
    let lines: Vec<&str> = list.stdout.lines().collect();
    assert!(
        lines[0].starts_with("NAME")
            && lines[0].contains("PROJECT_DIR")
            && lines[0].contains("BACKEND"),
        "{}",
        list.stdout
    );
    assert!(
        lines[1].starts_with("gpu1 ")
            && lines[1].contains("/srv/proj")
            && lines[1].contains("slurm")
            && lines[1].contains(" 3 "),
        "{}",
        list.stdout
    );
    // --check connects: nothing listens on 127.0.0.1:1, so it fails (for scripts).
    let list = p.run(&["agent", "list", "--check"]);
    list.expect_code(1);
    let gpu2 = list.stdout.lines().find(|l| l.starts_with("gpu2")).unwrap();
    assert!(gpu2.contains("unreachable"), "{}", list.stdout);
    assert!(list.stdout.lines().next().unwrap().contains("REACHABLE"));

    let run = p.run(&["agent", "remove", "gpu1"]);
    run.expect_code(0);
    let config = std::fs::read_to_string(p.path().join(".hsm/config.yaml")).unwrap();
    assert!(!config.contains("gpu1"), "{config}");
    assert!(
        config.contains("gpu2") && config.contains("kill_grace: 1s"),
        "{config}"
    );
    p.run(&["config", "validate"]).expect_code(0);
    let run = p.run(&["agent", "remove", "gpu1"]);
    run.expect_code(2);
    assert!(run.stderr.contains("no agent `gpu1`"), "{}", run.stderr);
    p.run(&["agent", "remove", "local"]).expect_code(2);
}

#[test]
fn an_agent_source_runs_tasks_with_its_own_python_not_the_coordinators() {
    let Some(agent_bin) = agent_bin() else {
        return;
    };
    let home = tempfile::tempdir().unwrap();
    let agent = start_agent(&agent_bin);
    // The coordinator's interpreter is a local wrapper that the agent's host must not be asked
    // to run; the agent source names its own.
    let p = Project::new("", &[]);
    let marker = p.path().join("used-agent-python");
    let agent_python = p.path().join("agent-python");
    p.write(
        "agent-python",
        &format!(
            "#!/bin/sh\necho \"agent $1\" >> '{}'\nexec python3 \"$@\"\n",
            marker.display()
        ),
    );
    let local_python = p.path().join("local-python");
    p.write("local-python", "#!/bin/sh\nexec python3 \"$@\"\n");
    for script in [&agent_python, &local_python] {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(script, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    p.write(
        ".hsm/config.yaml",
        &format!(
            "command:\n  python: {}\n  script: task.py\n",
            local_python.display()
        ),
    );
    p.write("task.py", "import sys\nprint('args', sys.argv[1:])\n");
    p.write("sweeps/sweep.yaml", "sweep:\n  grid:\n    x: [1, 2, 3]\n");
    let own_fp = coordinator_fingerprint(&p, home.path());
    enlist(&p, &agent_bin, &agent, "a1", &own_fp);
    let mut cmd = p.command(&[
        "agent",
        "add",
        "a1",
        &agent.addr,
        "--fingerprint",
        &agent.fingerprint,
        "--python",
    ]);
    cmd.arg(&agent_python);
    assert!(cmd.output().unwrap().status.success());
    let mut cmd = p.command(&["sweep", "run", "--sources", "a1", "--sweep-id", "s"]);
    cmd.env("HSM_HOME", home.path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let run = Run::wait(cmd.spawn().unwrap(), "sweep run on the agent".into());
    run.expect_code(0);
    let used = std::fs::read_to_string(&marker).unwrap_or_default();
    // Once per task, and once by the pre-flight check (`--version`) before any task.
    assert_eq!(
        used.lines().filter(|l| l.ends_with("task.py")).count(),
        3,
        "agent python used per task: {used:?}"
    );
    assert_eq!(
        used.lines().filter(|l| *l == "agent --version").count(),
        1,
        "agent python checked before the tasks: {used:?}"
    );
    let command =
        std::fs::read_to_string(p.sweep_dir("s").join("tasks/task_001/command.txt")).unwrap();
    assert!(
        command.contains(agent_python.to_str().unwrap()),
        "{command}"
    );
    assert!(!command.contains("local-python"), "{command}");
}

/// Starts `hsm-agent serve` with stderr into `log`; returns the child and its address.
fn serve_logged(
    agent_bin: &std::path::Path,
    listen: &str,
    state: &std::path::Path,
    log: &std::path::Path,
) -> (std::process::Child, String) {
    use std::io::BufRead;
    let mut child = std::process::Command::new(agent_bin)
        .args(["serve", "--listen", listen, "--state-dir"])
        .arg(state)
        .stdout(std::process::Stdio::piped())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let first = lines.next().and_then(Result::ok).unwrap_or_default();
    // The agent prints its fingerprint next and nothing after: read it before the pipe closes.
    let _fingerprint = lines.next();
    (child, first.replace("listening on ", ""))
}

#[test]
fn agent_serve_takes_host_names_and_says_plainly_when_the_port_is_taken() {
    let Some(agent_bin) = agent_bin() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let init = std::process::Command::new(&agent_bin)
        .args(["init", "--state-dir"])
        .arg(&state)
        .output()
        .unwrap();
    assert!(init.status.success());
    let (mut first, addr) =
        serve_logged(&agent_bin, "localhost:0", &state, &dir.path().join("a.log"));
    assert!(addr.starts_with("127.0.0.1:"), "{addr}");

    // The same state dir on another port: refused, its ledger has an owner.
    let twin = std::process::Command::new(&agent_bin)
        .args(["serve", "--listen", "127.0.0.1:0", "--state-dir"])
        .arg(&state)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&twin.stderr);
    assert_eq!(twin.status.code(), Some(2), "{err}");
    assert!(
        err.contains(&format!("(pid {}) uses the state dir", first.id())),
        "{err}"
    );

    // The same port again (another agent): exit 2, one plain sentence, no unrelated `init` hint.
    let other = dir.path().join("other");
    assert!(std::process::Command::new(&agent_bin)
        .args(["init", "--state-dir"])
        .arg(&other)
        .output()
        .unwrap()
        .status
        .success());
    let port = addr.rsplit(':').next().unwrap();
    let second = std::process::Command::new(&agent_bin)
        .args([
            "serve",
            "--listen",
            &format!("localhost:{port}"),
            "--state-dir",
        ])
        .arg(&other)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&second.stderr);
    assert_eq!(second.status.code(), Some(2), "{err}");
    assert_eq!(err.matches("in use").count(), 1, "{err}");
    assert!(!err.contains("hsm-agent init"), "{err}");
    assert!(err.contains("--listen"), "{err}");

    let bad = std::process::Command::new(&agent_bin)
        .args([
            "serve",
            "--listen",
            "no-such-host.invalid:7300",
            "--state-dir",
        ])
        .arg(&state)
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("--listen no-such-host.invalid:7300"));

    // Without an identity: the init hint, with the state dir.
    let empty = dir.path().join("empty");
    let none = std::process::Command::new(&agent_bin)
        .args(["serve", "--listen", "127.0.0.1:0", "--state-dir"])
        .arg(&empty)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&none.stderr);
    assert_eq!(none.status.code(), Some(2), "{err}");
    assert!(
        err.contains(&format!("hsm-agent init --state-dir {}", empty.display())),
        "{err}"
    );

    stop_child(&mut first);
}

#[test]
fn a_refused_coordinator_is_told_the_authorize_command_with_the_state_dir() {
    let Some(agent_bin) = agent_bin() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let init = std::process::Command::new(&agent_bin)
        .args(["init", "--state-dir"])
        .arg(&state)
        .output()
        .unwrap();
    let agent_fp = String::from_utf8_lossy(&init.stdout).trim().to_string();
    let log = dir.path().join("agent.log");
    let (mut child, addr) = serve_logged(&agent_bin, "127.0.0.1:0", &state, &log);
    let home = tempfile::tempdir().unwrap();
    let p = Project::new(CONFIG, &[("task.py", "")]);
    p.run(&[
        "agent",
        "add",
        "a1",
        &addr,
        "--fingerprint",
        &agent_fp,
        "--project-dir",
        "/p",
    ])
    .expect_code(0);
    let ping = p
        .command(&["agent", "ping", "a1", "--timeout", "5s"])
        .env("HSM_HOME", home.path())
        .output()
        .unwrap();
    assert_eq!(ping.status.code(), Some(1));
    // The agent's log names the command to run, with this agent's non-default state dir. The
    // line is written right after the handshake fails; wait for it without a deadline beyond
    // the ping's own.
    let want = format!("--state-dir {}", state.display());
    let mut text = String::new();
    for _ in 0..100 {
        text = std::fs::read_to_string(&log).unwrap_or_default();
        if text.contains(&want) {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert!(
        text.contains("hsm-agent authorize sha256:") && text.contains(&want),
        "{text}"
    );
    stop_child(&mut child);
}

/// Ends an agent this test started (by its pid) and reaps it.
fn stop_child(child: &mut std::process::Child) {
    let _ = child.kill();
    let _ = child.wait();
}

/// `hsm-coordinator ARGS` started in `dir`, without -C.
fn run_in(dir: &std::path::Path, args: &[&str]) -> Run {
    let mut cmd = std::process::Command::new(bin());
    cmd.args(args)
        .current_dir(dir)
        .env_remove("HSM_LOG")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    Run::wait(
        cmd.spawn().unwrap(),
        format!("{} {} (in {})", bin(), args.join(" "), dir.display()),
    )
}

#[test]
fn commands_find_the_project_from_a_subdirectory_and_say_when_there_is_none() {
    let p = Project::new(
        CONFIG,
        &[
            ("task.py", ""),
            ("sweeps/sweep.yaml", "sweep:\n  grid:\n    x: [1, 2]\n"),
            ("src/deep/er/keep", ""),
        ],
    );
    let sub = p.path().join("src/deep");
    let run = run_in(&sub, &["sweep", "run", "--sweep-id", "from_sub"]);
    run.expect_code(0);
    assert!(
        p.sweep_dir("from_sub").join("sweep.db").is_file(),
        "created in the project root"
    );
    // The outputs line is a path that works from where the user is.
    let outputs = run
        .stderr
        .lines()
        .find_map(|l| l.strip_prefix("outputs: "))
        .unwrap_or_else(|| run.fail("no outputs line"));
    assert_eq!(outputs, "../../sweeps/outputs/from_sub");
    assert!(sub.join(outputs).join("sweep.db").is_file());
    let status = run_in(&sub.join("er"), &["sweep", "status"]);
    status.expect_code(0);
    assert!(status.stdout.contains("from_sub"), "{}", status.stdout);

    // Outside any project: exit 2, saying so; `identity`-like commands are not affected.
    let nowhere = tempfile::tempdir().unwrap();
    let run = run_in(nowhere.path(), &["sweep", "status"]);
    run.expect_code(2);
    assert!(
        run.stderr.contains("not inside an hsm project")
            && run.stderr.contains("hsm-coordinator init"),
        "{}",
        run.stderr
    );
    assert!(!nowhere.path().join("sweeps").exists());
}

#[test]
fn completions_and_help_examples() {
    let nowhere = tempfile::tempdir().unwrap();
    for shell in ["bash", "zsh", "fish"] {
        let run = run_in(nowhere.path(), &["completions", shell]);
        run.expect_code(0);
        assert!(
            run.stdout.contains("hsm-coordinator") && run.stdout.contains("complete"),
            "{shell}: {}",
            run.stdout
        );
    }
    run_in(nowhere.path(), &["completions", "tcsh"]).expect_code(2);
    // Bash, as a shell completes: past the first word too (subcommands and their flags).
    let script = nowhere.path().join("hsm.bash");
    std::fs::write(
        &script,
        run_in(nowhere.path(), &["completions", "bash"]).stdout,
    )
    .unwrap();
    for (line, word, expected) in [
        ("hsm-coordinator sw", "sw", "sweep"),
        ("hsm-coordinator sweep ru", "ru", "run"),
        ("hsm-coordinator sweep run --sou", "--sou", "--sources"),
    ] {
        let words: Vec<&str> = line.split(' ').collect();
        let probe = format!(
            "source '{}'; COMP_WORDS=({line}); COMP_CWORD={}; COMP_LINE='{line}'; COMP_POINT={}; \
             _hsm__coordinator hsm-coordinator '{word}' '{}'; printf '%s\\n' \"${{COMPREPLY[@]}}\"",
            script.display(),
            words.len() - 1,
            line.len(),
            words[words.len() - 2]
        );
        let out = std::process::Command::new("bash")
            .args(["-c", &probe])
            .output()
            .unwrap();
        let replies = String::from_utf8_lossy(&out.stdout);
        assert!(
            replies.lines().any(|l| l.trim() == expected),
            "`{line}<Tab>` offers {expected}: {replies:?} {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    for (args, example) in [
        (&["sweep", "run", "--help"][..], "sweep run --dry-run"),
        (&["sweep", "complete", "--help"], "the latest sweep"),
        (&["agent", "add", "--help"], "--project-dir /home/me/proj"),
    ] {
        let run = run_in(nowhere.path(), args);
        run.expect_code(0);
        assert!(run.stdout.contains(example), "{}", run.stdout);
    }
    let help = run_in(nowhere.path(), &["--help"]);
    assert!(
        help.stdout.contains("still prints the sweep id"),
        "{}",
        help.stdout
    );
}

#[test]
fn the_wandb_style_parameters_layout_is_refused_with_how_to_write_it() {
    let p = Project::new(
        CONFIG,
        &[
            ("task.py", ""),
            (
                "sweeps/sweep.yaml",
                "parameters:\n  lr:\n    values: [1, 2]\nstrategy: grid\n",
            ),
        ],
    );
    let run = p.run(&["sweep", "run"]);
    run.expect_code(2);
    assert!(
        run.stderr
            .contains("sweeps/sweep.yaml:1:1: parameters: unknown key `parameters` — the `parameters:`/`values:` layout")
            && run.stderr.contains("grid: {lr: [0.1, 0.01]}"),
        "{}",
        run.stderr
    );
    assert!(!p.outputs().exists());
}

#[test]
fn init_in_a_subdirectory_of_a_project_points_at_the_project() {
    let p = Project::new(
        "command:\n  python: python3\n  script: task.py\n",
        &[("task.py", "")],
    );
    let sub = p.path().join("conf");
    std::fs::create_dir_all(&sub).unwrap();
    let run = run_in(&sub, &["init"]);
    run.expect_code(2);
    assert!(
        run.stderr.contains("is inside the project") && run.stderr.contains("--force"),
        "{}",
        run.stderr
    );
    assert!(!sub.join(".hsm").exists() && !sub.join("sweeps").exists());
    run_in(&sub, &["init", "--force"]).expect_code(0);
    assert!(
        sub.join(".hsm/config.yaml").exists(),
        "--force starts one here"
    );
}

//! Pre-flight checks a coordinator asks for in its `Hello`: does this host have what the run's
//! tasks need — the project directory, the script, an interpreter that starts (after the run's
//! setup lines and inside its conda env), free disk, and the batch scheduler the source's
//! `backend:` names (Grid Engine's `qsub` is no PBS). Each missing thing is one problem stating
//! what was found; the coordinator adds the fix, since it knows which config key set what.

use hsm_exec::hpc::choose::{choose, Probe};
use hsm_protocol::preflight::check;
use hsm_protocol::{PreflightMsg, PreflightProblem};
use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// How long the interpreter check may take (a cold conda env or a module system can be slow).
pub const INTERPRETER_TIMEOUT: Duration = Duration::from_secs(60);
/// How long `sbatch --version` / `qstat --version` may take (a shared filesystem can be slow):
/// as long as the scheduler backend waits for any scheduler command.
const VERSION_TIMEOUT: Duration = Duration::from_secs(60);

/// Runs the checks (blocking: it starts the interpreter). `free_disk` reads the free bytes of a
/// directory's file system.
pub fn run(
    msg: &PreflightMsg,
    work_dir: &Path,
    free_disk: impl Fn(&Path) -> Option<u64>,
) -> Vec<PreflightProblem> {
    let mut problems = Vec::new();
    let problem = |check: &str, detail: String| PreflightProblem {
        check: check.into(),
        detail,
    };
    let project = (!msg.project_dir.is_empty()).then(|| PathBuf::from(&msg.project_dir));
    let project_ok = match &project {
        Some(dir) if !dir.is_dir() => {
            let found = if dir.exists() {
                "is not a directory"
            } else {
                "does not exist"
            };
            problems.push(problem(
                check::PROJECT_DIR,
                format!("{} {found}", dir.display()),
            ));
            false
        }
        _ => true,
    };
    if project_ok {
        for file in &msg.files {
            let path = match &project {
                Some(dir) => dir.join(file),
                None => PathBuf::from(file),
            };
            if !path.is_file() {
                problems.push(problem(
                    check::FILE,
                    format!("{} does not exist", path.display()),
                ));
            }
        }
    }
    if !msg.interpreter.is_empty() {
        let cwd = project.as_deref().filter(|_| project_ok);
        if let Err(why) = run_interpreter(&msg.setup, &msg.interpreter, cwd) {
            problems.push(problem(check::INTERPRETER, why));
        }
    }
    if let Some(choice) = msg.scheduler {
        // What the scheduler backend asks before it submits, asked before any task comes.
        let probe = Probe {
            sbatch: match version_of("sbatch") {
                Ok((true, stdout, _)) => Ok(stdout),
                Ok((false, _, stderr)) => Err(stderr.trim().to_string()),
                Err(why) => Err(why),
            },
            qstat: version_of("qstat").map(|(_, stdout, stderr)| format!("{stdout}{stderr}")),
        };
        if let Err(why) = choose(choice, &probe) {
            problems.push(problem(check::SCHEDULER, why));
        }
    }
    if msg.min_free_disk > 0 {
        if let Some(free) = free_disk(work_dir) {
            if free < msg.min_free_disk {
                problems.push(problem(
                    check::DISK,
                    format!(
                        "{} has {} free, the run asks for at least {}",
                        work_dir.display(),
                        gib(free),
                        gib(msg.min_free_disk)
                    ),
                ));
            }
        }
    }
    problems
}

/// `program --version`: whether it exited 0, its stdout and its stderr; `Err` when it cannot be
/// run or does not finish within [`VERSION_TIMEOUT`].
fn version_of(program: &str) -> Result<(bool, String, String), String> {
    let mut child = Command::new(program)
        .arg("--version")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run `{program}`: {e}"))?;
    // A version text is small: read after the exit.
    let status = wait_within(&mut child, VERSION_TIMEOUT, &format!("{program} --version"))?;
    let read = |pipe: Option<Box<dyn std::io::Read>>| {
        let mut text = String::new();
        if let Some(pipe) = pipe {
            let _ = pipe.take(64 * 1024).read_to_string(&mut text);
        }
        text
    };
    let stdout = read(child.stdout.take().map(|p| Box::new(p) as _));
    let stderr = read(child.stderr.take().map(|p| Box::new(p) as _));
    Ok((status.success(), stdout, stderr))
}

/// Waits for `child` (`shown` in messages) at most `limit`, then kills it and says so.
fn wait_within(
    child: &mut std::process::Child,
    limit: Duration,
    shown: &str,
) -> Result<std::process::ExitStatus, String> {
    let deadline = Instant::now() + limit;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Ok(status),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(10)),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "`{shown}` did not finish within {}s",
                    limit.as_secs()
                ));
            }
            Err(e) => return Err(format!("cannot wait for `{shown}`: {e}")),
        }
    }
}

fn gib(bytes: u64) -> String {
    format!("{:.2} GiB", bytes as f64 / (1u64 << 30) as f64)
}

/// The interpreter command, after the setup lines, through `sh` as a task's would be; `Err` with
/// what it said when it does not exit 0 within [`INTERPRETER_TIMEOUT`].
fn run_interpreter(setup: &[String], argv: &[String], cwd: Option<&Path>) -> Result<(), String> {
    let shown = argv.join(" ");
    let script = format!("{}\nexec \"$@\"", setup.join("\n"));
    let mut command = Command::new("sh");
    command
        .arg("-c")
        .arg(&script)
        .arg("hsm-preflight")
        .args(argv)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(dir) = cwd {
        command.current_dir(dir);
    }
    let mut child = command
        .spawn()
        .map_err(|e| format!("cannot run `{shown}`: cannot start sh: {e}"))?;
    // Output is tiny (a version line); read it after the exit. A chatty setup could fill the
    // pipe and block, which the timeout then ends.
    let status = wait_within(&mut child, INTERPRETER_TIMEOUT, &shown)?;
    if status.success() {
        return Ok(());
    }
    let mut said = String::new();
    for pipe in [
        child
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn std::io::Read>),
        child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn std::io::Read>),
    ]
    .into_iter()
    .flatten()
    {
        let mut text = String::new();
        let _ = pipe.take(4096).read_to_string(&mut text);
        said.push_str(&text);
    }
    let last = said
        .lines()
        .map(str::trim)
        .rfind(|l| !l.is_empty())
        .map(without_shell_prefix)
        .unwrap_or("no output");
    let exit = match status.code() {
        Some(code) => format!("exit code {code}"),
        None => "killed by a signal".into(),
    };
    Err(format!("`{shown}` failed ({exit}): {last}"))
}

/// A message of the shell that ran the check, without its `hsm-preflight: 2: exec: ` prefix
/// (dash's way of naming itself and the line).
fn without_shell_prefix(line: &str) -> &str {
    let Some(rest) = line.strip_prefix("hsm-preflight: ") else {
        return line;
    };
    let rest = match rest.split_once(": ") {
        Some((number, rest)) if number.bytes().all(|b| b.is_ascii_digit()) => rest,
        _ => rest,
    };
    rest.strip_prefix("exec: ").unwrap_or(rest)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn checks(problems: &[PreflightProblem]) -> Vec<&str> {
        problems.iter().map(|p| p.check.as_str()).collect()
    }

    #[test]
    fn a_host_with_everything_passes() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("train.py"), "").unwrap();
        let msg = PreflightMsg {
            project_dir: dir.path().display().to_string(),
            files: vec!["train.py".into()],
            interpreter: vec!["sh".into(), "-c".into(), "test -n \"$FROM_SETUP\"".into()],
            setup: vec!["FROM_SETUP=yes".into(), "export FROM_SETUP".into()],
            min_free_disk: 1,
            scheduler: None,
        };
        assert_eq!(run(&msg, dir.path(), |_| Some(10)), vec![]);
    }

    #[test]
    fn each_missing_thing_is_one_problem_saying_what_was_found() {
        let dir = tempfile::tempdir().unwrap();
        let msg = PreflightMsg {
            project_dir: dir.path().join("nope").display().to_string(),
            files: vec!["train.py".into()],
            interpreter: vec!["no-such-python-here".into(), "--version".into()],
            setup: Vec::new(),
            min_free_disk: 2 << 30,
            scheduler: None,
        };
        let problems = run(&msg, dir.path(), |_| Some(1 << 30));
        // The script is not looked for in a directory that is not there.
        assert_eq!(
            checks(&problems),
            vec![check::PROJECT_DIR, check::INTERPRETER, check::DISK]
        );
        assert!(
            problems[0].detail.ends_with("nope does not exist"),
            "{problems:?}"
        );
        assert!(
            problems[1]
                .detail
                .contains("`no-such-python-here --version` failed (exit code 127)")
                && problems[1].detail.contains("not found"),
            "{problems:?}"
        );
        assert!(problems[2].detail.contains("1.00 GiB free"), "{problems:?}");
        let msg = PreflightMsg {
            project_dir: dir.path().display().to_string(),
            files: vec!["train.py".into()],
            ..PreflightMsg::default()
        };
        let problems = run(&msg, dir.path(), |_| None);
        assert_eq!(checks(&problems), vec![check::FILE]);
        assert!(problems[0].detail.ends_with("train.py does not exist"));
    }

    #[test]
    fn version_commands_are_run_or_said_missing() {
        // (Which scheduler the answers mean is `hsm_exec::hpc::choose`'s, tested there; a
        // real Grid Engine host in coordinator/tests/cli_sge.rs.)
        let dir = tempfile::tempdir().unwrap();
        let qstat = dir.path().join("qstat");
        std::fs::write(
            &qstat,
            "#!/bin/sh\necho 'SGE 8.1.9'\necho usage >&2\nexit 1\n",
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&qstat, std::fs::Permissions::from_mode(0o755)).unwrap();
        let answer = version_of(qstat.to_str().unwrap()).unwrap();
        assert_eq!(answer, (false, "SGE 8.1.9\n".into(), "usage\n".into()));
        let why = version_of("no-such-sbatch-here").unwrap_err();
        assert!(why.starts_with("cannot run `no-such-sbatch-here`"), "{why}");
    }

    #[test]
    fn a_failing_setup_line_fails_the_interpreter_check_with_its_message() {
        let msg = PreflightMsg {
            interpreter: vec!["true".into()],
            setup: vec!["echo 'module: cuda/99 not found' >&2; exit 3".into()],
            ..PreflightMsg::default()
        };
        let problems = run(&msg, Path::new("/"), |_| None);
        assert_eq!(checks(&problems), vec![check::INTERPRETER]);
        assert_eq!(
            problems[0].detail,
            "`true` failed (exit code 3): module: cuda/99 not found"
        );
    }
}

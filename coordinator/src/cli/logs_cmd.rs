//! `sweep logs SWEEP_ID TASK [--stderr] [-f] [--attempt N]`: prints a task's stdout (or
//! stderr) log of its current attempt, or of an earlier one (kept as `stdout.attemptN.log`);
//! `-f` keeps printing what the attempt writes until it ends, reading `sweep.db` read-only.

use super::errors_cmd::{open_for_reading, resolve};
use super::sweep_cmd::is_active;
use super::{user_error, Global, LogsArgs, EXIT_OK};
use crate::core::state::TaskStatus;
use crate::store::{Store, TaskRow};
use std::io::{Read, Write};
use std::path::PathBuf;
use std::time::Duration;

/// How often `-f` looks for new output and for the attempt's end.
const FOLLOW_EVERY: Duration = Duration::from_millis(250);

/// The task number in `7`, `007`, `task_007` or `task_0007`.
pub fn parse_task(text: &str) -> Option<u64> {
    let digits = text.trim().strip_prefix("task_").unwrap_or(text.trim());
    if digits.is_empty() || !digits.chars().all(|c| c.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok().filter(|&n| n > 0)
}

/// The log file of attempt `attempt` when the task's current attempt is `current`: the
/// current one writes `stdout.log`; an earlier one's was renamed `stdout.attemptN.log` when the
/// next attempt's directory was prepared.
pub fn log_name(stderr: bool, attempt: u32, current: u32) -> String {
    let stream = if stderr { "stderr" } else { "stdout" };
    if attempt == current {
        format!("{stream}.log")
    } else {
        format!("{stream}.attempt{attempt}.log")
    }
}

pub fn logs(global: &Global, args: &LogsArgs) -> anyhow::Result<i32> {
    let (sweep_id, paths) = resolve(global, Some(&args.sweep_id))?;
    let (store, paths) = open_for_reading(paths, &sweep_id, true)?;
    let index = parse_task(&args.task).ok_or_else(|| {
        user_error(format!(
            "`{}` is not a task: give its number (7), 007 or task_007",
            args.task
        ))
    })?;
    let name = paths.task_name(index);
    let mut row = store.task(index)?.ok_or_else(|| {
        user_error(format!(
            "sweep {sweep_id} has no task {index} — `hsm-coordinator sweep status {sweep_id} --all` lists its tasks"
        ))
    })?;
    if row.attempt == 0 {
        if !(args.follow && is_active(&paths)) {
            return Err(user_error(format!(
                "{name} never ran ({}): it has no logs yet{}",
                row.status,
                if is_active(&paths) {
                    " — `-f` waits for it to start"
                } else {
                    ""
                }
            )));
        }
        row = wait_for(&store, index, |r| r.attempt > 0, &paths)?
            .ok_or_else(|| user_error(format!("{name} never ran: the sweep stopped first")))?;
    }
    let attempt = args.attempt.unwrap_or(row.attempt);
    if attempt == 0 || attempt > row.attempt {
        return Err(user_error(format!(
            "{name} has {}: there is no attempt {attempt}",
            if row.attempt == 1 {
                "one attempt (1)".to_string()
            } else {
                format!("attempts 1 to {}", row.attempt)
            }
        )));
    }
    let path = paths
        .task_dir(index)
        .join(log_name(args.stderr, attempt, row.attempt));
    let following = args.follow && attempt == row.attempt;
    // A task that ran on an agent and printed nothing has no log file on this side: the
    // coordinator creates one on the first output it receives.
    let printed_nothing = |store: &Store| -> anyhow::Result<bool> {
        Ok(store
            .task(index)?
            .is_some_and(|r| attempt < r.attempt || r.started_at.is_some()))
    };
    let mut file = match std::fs::File::open(&path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && following => {
            match wait_for_file(&store, index, attempt, &path, &paths)? {
                Some(file) => file,
                None if printed_nothing(&store)? => return Ok(EXIT_OK),
                None => return Err(missing(&name, attempt, &path)),
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if printed_nothing(&store)? {
                return Ok(EXIT_OK);
            }
            return Err(missing(&name, attempt, &path));
        }
        Err(e) => return Err(anyhow::anyhow!("{}: {e}", path.display())),
    };
    let mut out = std::io::stdout().lock();
    copy_new(&mut file, &mut out)?;
    if !following {
        return Ok(EXIT_OK);
    }
    loop {
        let ended = attempt_ended(&store, index, attempt)?;
        copy_new(&mut file, &mut out)?;
        if ended {
            return Ok(EXIT_OK);
        }
        if !is_active(&paths) {
            // Nobody runs the sweep: the attempt will not end while we wait.
            copy_new(&mut file, &mut out)?;
            eprintln!("hsm-coordinator: sweep {sweep_id} is not running; stopped following {name}");
            return Ok(EXIT_OK);
        }
        std::thread::sleep(FOLLOW_EVERY);
    }
}

fn missing(name: &str, attempt: u32, path: &std::path::Path) -> anyhow::Error {
    user_error(format!(
        "{name} attempt {attempt} has no log at {} (it may not have started)",
        path.display()
    ))
}

/// Copies what the file has beyond what was read so far.
fn copy_new(file: &mut std::fs::File, out: &mut impl Write) -> anyhow::Result<()> {
    let mut buf = [0u8; 64 * 1024];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        out.write_all(&buf[..n])?;
    }
    out.flush()?;
    Ok(())
}

/// The attempt is over: the task moved on to another attempt or reached an end.
fn attempt_ended(store: &Store, index: u64, attempt: u32) -> anyhow::Result<bool> {
    Ok(match store.task(index)? {
        Some(row) => {
            row.attempt != attempt || row.status.is_final() || row.status == TaskStatus::Pending
        }
        None => true,
    })
}

/// Polls the task until `done` holds; `None` when the sweep stops being run first.
fn wait_for(
    store: &Store,
    index: u64,
    done: impl Fn(&TaskRow) -> bool,
    paths: &crate::layout::SweepPaths,
) -> anyhow::Result<Option<TaskRow>> {
    loop {
        if let Some(row) = store.task(index)? {
            if done(&row) {
                return Ok(Some(row));
            }
        }
        if !is_active(paths) {
            return Ok(None);
        }
        std::thread::sleep(FOLLOW_EVERY);
    }
}

/// Waits for a queued attempt's log to appear; `None` when the attempt ends or the sweep stops
/// being run without it.
fn wait_for_file(
    store: &Store,
    index: u64,
    attempt: u32,
    path: &PathBuf,
    paths: &crate::layout::SweepPaths,
) -> anyhow::Result<Option<std::fs::File>> {
    loop {
        if let Ok(file) = std::fs::File::open(path) {
            return Ok(Some(file));
        }
        if attempt_ended(store, index, attempt)? || !is_active(paths) {
            return Ok(std::fs::File::open(path).ok());
        }
        std::thread::sleep(FOLLOW_EVERY);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tasks_are_named_by_number_padded_or_not() {
        assert_eq!(parse_task("7"), Some(7));
        assert_eq!(parse_task("007"), Some(7));
        assert_eq!(parse_task("task_007"), Some(7));
        assert_eq!(parse_task("task_0012"), Some(12));
        for bad in ["", "task_", "0", "seven", "-1", "task-7", "7a"] {
            assert_eq!(parse_task(bad), None, "{bad}");
        }
    }

    #[test]
    fn earlier_attempts_read_their_kept_logs() {
        assert_eq!(log_name(false, 2, 2), "stdout.log");
        assert_eq!(log_name(true, 2, 2), "stderr.log");
        assert_eq!(log_name(false, 1, 2), "stdout.attempt1.log");
        assert_eq!(log_name(true, 1, 3), "stderr.attempt1.log");
    }
}

//! The runner's file work: preparing a task directory and its launch, reading what a task
//! appended to its logs (and a recovered event's range of them), and scanning and hashing the
//! result files an attempt offers. Plain blocking functions, called outside the runner's lock.

use super::{backend_key, OUTPUT_CHUNK, TASK_MARK};
use crate::process::TaskLaunch;
use hsm_protocol::digest::hash_file;
use hsm_protocol::{check_relative_path, FileOffer, Stream, TemplateMsg, AGENT_OUTPUT_DIR};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Total path text a `ResultOffer` may carry, so the event always fits in one frame (MAX_FRAME is
/// 16 MiB); files beyond it are left out and logged.
const MAX_OFFER_PATH_BYTES: usize = 4 * 1024 * 1024;
/// Directory depth under `results/` that is scanned; deeper trees are a sign of a loop or a bug.
/// The coordinator refuses paths of more components, so nothing deeper is offered (`results/`
/// and the file name are the other two).
const MAX_RESULTS_DEPTH: usize = hsm_protocol::MAX_PATH_COMPONENTS - 2;

/// `len` bytes of a task's log from `offset` (what a recovered `Output` event carried); fewer
/// when the file is shorter now.
pub(super) fn read_log_range(dir: &Path, stream: Stream, offset: u64, len: u64) -> Vec<u8> {
    use std::os::unix::fs::FileExt;
    let name = match stream {
        Stream::Stdout => "stdout.log",
        Stream::Stderr => "stderr.log",
    };
    let Ok(file) = std::fs::File::open(dir.join(name)) else {
        return Vec::new();
    };
    let mut buf = vec![0u8; len.min(OUTPUT_CHUNK as u64) as usize];
    let mut filled = 0;
    while filled < buf.len() {
        match file.read_at(&mut buf[filled..], offset + filled as u64) {
            Ok(0) | Err(_) => break,
            Ok(n) => filled += n,
        }
    }
    buf.truncate(filled);
    buf
}

/// A compact sweep's ended attempt with nothing left to deliver (no results, or results the
/// coordinator has): its empty logs removed, then an empty `results/`, then its directory if
/// nothing else is in it (output, or a scheduler's start and exit records, keep it). Output
/// events still unacknowledged point into non-empty logs only, which stay.
pub(super) fn tidy(dir: &Path) {
    for name in ["stdout.log", "stderr.log"] {
        let log = dir.join(name);
        if std::fs::metadata(&log).is_ok_and(|m| m.is_file() && m.len() == 0) {
            let _ = std::fs::remove_file(&log);
        }
    }
    let _ = std::fs::remove_dir(dir.join("results"));
    let _ = std::fs::remove_dir(dir);
}

/// Creates the task directory (fresh `results/`) and builds the launch.
pub(super) fn prepare(
    id: u64,
    attempt: u32,
    dir: &Path,
    template: &TemplateMsg,
    args: Vec<String>,
    env: Vec<(String, String)>,
) -> Result<TaskLaunch, String> {
    let results = dir.join("results");
    // A task directory made just now has nothing to clear; otherwise results of an earlier
    // attempt of the same task on this agent must not be offered as this attempt's.
    let fresh = match std::fs::create_dir(dir) {
        Ok(()) => true,
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => false,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::create_dir_all(dir)
                .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
            true
        }
        Err(e) => return Err(format!("cannot create {}: {e}", dir.display())),
    };
    if !fresh {
        match std::fs::remove_dir_all(&results) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(format!("cannot clear {}: {e}", results.display())),
        }
    }
    std::fs::create_dir(&results)
        .map_err(|e| format!("cannot create {}: {e}", results.display()))?;
    // The coordinator cannot know this host's paths: it writes a token where the task's
    // results directory goes (e.g. `output.dir=<token>`), replaced here.
    let results_text = results.to_string_lossy().into_owned();
    let localize = |text: String| {
        if text.contains(AGENT_OUTPUT_DIR) {
            text.replace(AGENT_OUTPUT_DIR, &results_text)
        } else {
            text
        }
    };
    let mut argv: Vec<String> = template.argv_prefix.iter().cloned().map(localize).collect();
    argv.extend(args.into_iter().map(localize));
    let mut full_env: Vec<(String, String)> = template
        .env
        .iter()
        .cloned()
        .chain(env)
        .map(|(k, v)| (k, localize(v)))
        .collect();
    // Last, so it wins over the coordinator's value: paths differ per host.
    full_env.push(("HSM_OUTPUT_DIR".to_string(), results_text.clone()));
    full_env.push((
        TASK_MARK.to_string(),
        format!("{}#{attempt}", dir.display()),
    ));
    Ok(TaskLaunch {
        key: backend_key(id),
        argv,
        env: full_env,
        cwd: PathBuf::from(&template.cwd),
        stdout: dir.join("stdout.log"),
        stderr: dir.join("stderr.log"),
        timeout: template.timeout_ms.map(Duration::from_millis),
        kill_grace: Duration::from_millis(template.kill_grace_ms),
    })
}

/// Reads what was appended to the log files since `positions`, alternating between them in
/// chunks of at most [`OUTPUT_CHUNK`], until `credit` bytes were read or both are at their end.
/// A missing file counts as empty.
pub(super) fn read_appended(
    paths: &[PathBuf; 2],
    files: &mut [Option<std::fs::File>; 2],
    positions: &mut [u64; 2],
    mut credit: usize,
) -> std::io::Result<Vec<(Stream, Vec<u8>)>> {
    use std::os::unix::fs::FileExt;
    let streams = [Stream::Stdout, Stream::Stderr];
    // Opened once and kept by the caller: a task is read several times.
    for (path, file) in paths.iter().zip(files.iter_mut()) {
        if file.is_none() {
            match std::fs::File::open(path) {
                Ok(f) => *file = Some(f),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
    }
    let mut chunks = Vec::new();
    for i in 0..2 {
        let Some(file) = &files[i] else {
            continue;
        };
        // The size says how much is new, so an empty log (the common case) costs one fstat
        // and no buffer.
        let mut available = file.metadata()?.len().saturating_sub(positions[i]);
        while credit > 0 && available > 0 {
            let want = (available as usize).min(credit).min(OUTPUT_CHUNK);
            let mut buf = vec![0u8; want];
            let mut filled = 0;
            while filled < want {
                let n = file.read_at(&mut buf[filled..], positions[i] + filled as u64)?;
                if n == 0 {
                    break;
                }
                filled += n;
            }
            if filled == 0 {
                break; // truncated under us
            }
            buf.truncate(filled);
            positions[i] += filled as u64;
            available = available.saturating_sub(filled as u64);
            credit -= filled;
            chunks.push((streams[i], buf));
        }
    }
    Ok(chunks)
}

/// Every regular file under `<task_dir>/results/`, recursively, with size and SHA-256; paths
/// relative to the task directory. Symlinks are followed only when they resolve to a regular
/// file inside the task directory; others are skipped and logged.
pub fn scan_results(task_dir: &Path) -> Vec<FileOffer> {
    let mut files = Vec::new();
    // Resolved only when a symlink needs checking: most results have none, and resolving costs
    // a readlink per path component.
    let root = Root {
        dir: task_dir,
        resolved: std::cell::OnceCell::new(),
    };
    let mut budget = MAX_OFFER_PATH_BYTES;
    walk(
        &root,
        &task_dir.join("results"),
        "results",
        0,
        &mut budget,
        &mut files,
    );
    files
}

/// The task directory, canonicalized on first use.
struct Root<'a> {
    dir: &'a Path,
    resolved: std::cell::OnceCell<Option<PathBuf>>,
}

impl Root<'_> {
    fn get(&self) -> Option<&Path> {
        self.resolved
            .get_or_init(|| std::fs::canonicalize(self.dir).ok())
            .as_deref()
    }
}

fn walk(
    root: &Root<'_>,
    dir: &Path,
    rel: &str,
    depth: usize,
    budget: &mut usize,
    files: &mut Vec<FileOffer>,
) {
    if depth > MAX_RESULTS_DEPTH {
        tracing::warn!(dir = %dir.display(), "results nested too deep; not offered");
        return;
    }
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) => {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(dir = %dir.display(), error = %e, "cannot list results");
            }
            return;
        }
    };
    let mut entries: Vec<_> = entries.filter_map(Result::ok).collect();
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let path = entry.path();
        let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
            tracing::warn!(path = %path.display(), "result file name is not UTF-8; not offered");
            continue;
        };
        let rel_path = format!("{rel}/{name}");
        if let Err(e) = check_relative_path(&rel_path) {
            tracing::warn!(error = %e, "result path not offered");
            continue;
        }
        let Ok(file_type) = entry.file_type() else {
            continue;
        };
        if file_type.is_dir() {
            walk(root, &path, &rel_path, depth + 1, budget, files);
            continue;
        }
        if file_type.is_symlink() {
            let inside = match (root.get(), std::fs::canonicalize(&path)) {
                (Some(root), Ok(target)) => target.starts_with(root) && target.is_file(),
                _ => false,
            };
            if !inside {
                tracing::warn!(
                    path = %path.display(),
                    "result symlink does not resolve to a file inside the task directory; not offered"
                );
                continue;
            }
        } else if !file_type.is_file() {
            tracing::warn!(path = %path.display(), "result is not a regular file; not offered");
            continue;
        }
        if rel_path.len() + 100 > *budget {
            tracing::error!(path = %rel_path, "too many result files for one offer; the rest are not offered");
            return;
        }
        match hash_file(&path) {
            Ok((size, sha256)) => {
                *budget -= rel_path.len() + 100;
                files.push(FileOffer {
                    path: rel_path,
                    size,
                    sha256,
                });
            }
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "cannot read result; not offered")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_are_scanned_recursively_without_escaping_symlinks() {
        let dir = tempfile::tempdir().unwrap();
        let task = dir.path().join("task_001");
        std::fs::create_dir_all(task.join("results/sub")).unwrap();
        std::fs::write(task.join("results/a.txt"), b"abc").unwrap();
        std::fs::write(task.join("results/empty"), b"").unwrap();
        std::fs::write(task.join("results/sub/b.bin"), vec![7u8; 1000]).unwrap();
        std::fs::write(task.join("stdout.log"), b"log").unwrap();
        std::fs::write(dir.path().join("secret"), b"outside").unwrap();
        std::os::unix::fs::symlink(dir.path().join("secret"), task.join("results/escape")).unwrap();
        std::os::unix::fs::symlink(task.join("stdout.log"), task.join("results/log")).unwrap();
        std::os::unix::fs::symlink("/", task.join("results/root")).unwrap();
        let files = scan_results(&task);
        let paths: Vec<&str> = files.iter().map(|f| f.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "results/a.txt",
                "results/empty",
                "results/log",
                "results/sub/b.bin"
            ]
        );
        assert_eq!(files[0].size, 3);
        assert_eq!(
            files[0].sha256,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(files[1].size, 0);
        assert_eq!(
            files[1].sha256,
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(files[3].size, 1000);
    }

    #[test]
    fn appended_output_is_read_in_bounded_chunks() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        let err = dir.path().join("err");
        std::fs::write(&out, vec![b'o'; 200 * 1024]).unwrap();
        std::fs::write(&err, b"e").unwrap();
        let paths = [out, err];
        let mut pos = [0, 0];
        let mut files = [None, None];
        let chunks = read_appended(&paths, &mut files, &mut pos, 100 * 1024).unwrap();
        let total: usize = chunks.iter().map(|(_, c)| c.len()).sum();
        assert_eq!(total, 100 * 1024);
        assert!(chunks.iter().all(|(_, c)| c.len() <= OUTPUT_CHUNK));
        let chunks = read_appended(&paths, &mut files, &mut pos, usize::MAX).unwrap();
        let total: usize = chunks.iter().map(|(_, c)| c.len()).sum();
        // Both files together hold 200 KiB + 1; the first call took 100 KiB of them.
        assert_eq!(total, 200 * 1024 + 1 - 100 * 1024);
        assert_eq!(pos, [200 * 1024, 1]);
        assert!(read_appended(&paths, &mut files, &mut pos, 10)
            .unwrap()
            .is_empty());
    }
}

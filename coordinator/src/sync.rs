//! Project sync, the coordinator's side: the manifest of the project (git's files in a checkout,
//! else the files `sync.include`/`sync.exclude` pick; SHA-256 each), the wording of what an
//! agent's copy lacks, and pushing the files that differ over the agent connection.
//!
//! The agent compares in its `Welcome` (see `hsm_protocol::sync`); this module decides what a
//! difference means for the source (`check`: no tasks there unless the run allows drift;
//! `push`: send each differing file, verified and renamed into place there).

use crate::config::{SyncMode, SyncSettings};
use globset::{Glob, GlobSet, GlobSetBuilder};
use hsm_protocol::sync::diff;
use hsm_protocol::{display_safe, ManifestEntry, PushHeader, PushReply, SyncDiff, SyncRequest};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// At most this many files make a project: past it the manifest says to narrow `sync.include`
/// or widen `sync.exclude` (a data set in the project directory, most likely).
pub const MAX_MANIFEST_FILES: usize = 20_000;
/// Entries looked at while walking a project that is not a git checkout.
const MAX_WALKED: usize = 1_000_000;

/// Left out of every manifest: hsm's own files and the sweeps' outputs, which differ by nature.
const ALWAYS_EXCLUDED: [&str; 3] = [".git", ".hsm", "sweeps/outputs"];
/// Also left out when the project is not a git checkout (a checkout's `.gitignore` says).
const WALK_EXCLUDED: [&str; 11] = [
    "__pycache__",
    "*.pyc",
    ".venv",
    "venv",
    ".ipynb_checkpoints",
    "node_modules",
    ".DS_Store",
    // Hydra's and W&B's run directories.
    "outputs",
    "multirun",
    "wandb",
    ".pytest_cache",
];

/// The project as this coordinator has it.
#[derive(Debug, Clone)]
pub struct Manifest {
    /// The project directory the paths are relative to.
    pub root: PathBuf,
    pub entries: Vec<ManifestEntry>,
    /// Made from git's list of files (tracked, and new ones git does not ignore).
    pub from_git: bool,
}

impl Manifest {
    /// The sync request for a source whose project lives at `project_dir` there.
    pub fn request(&self, project_dir: &str, push: bool) -> SyncRequest {
        SyncRequest {
            project_dir: project_dir.to_string(),
            files: self.entries.clone(),
            push,
        }
    }

    /// Drops from pre-flight's `files` those a push brings before any task runs.
    pub fn leave_to_push(&self, files: &mut Vec<String>) {
        files.retain(|f| {
            let f = f.trim_start_matches("./");
            !self.entries.iter().any(|e| e.path == f)
        });
    }
}

/// What an agent source does about its copy of the project in this run.
#[derive(Debug, Clone)]
pub struct SourceSync {
    pub mode: SyncMode,
    /// `--allow-remote-drift`: a `check` that finds differences warns instead of refusing.
    pub allow_drift: bool,
    pub manifest: Arc<Manifest>,
    /// The source has a `sync:` of its own (said in the fix of a refusal).
    pub set_on_source: bool,
}

/// Checks a `sync.include`/`sync.exclude` glob.
pub fn check_glob(glob: &str) -> Result<(), String> {
    if glob.trim().is_empty() {
        return Err("it is empty".into());
    }
    patterns(glob)
        .into_iter()
        .try_for_each(|p| Glob::new(&p).map(|_| ()).map_err(|e| e.kind().to_string()))
}

/// The globset patterns of one glob, gitignore-like: a glob without `/` matches at any depth;
/// a trailing `/` means the directory.
fn patterns(glob: &str) -> Vec<String> {
    let glob = glob.trim().trim_start_matches("./");
    let glob = glob.strip_suffix('/').unwrap_or(glob);
    if let Some(anchored) = glob.strip_prefix('/') {
        vec![anchored.to_string()]
    } else if glob.contains('/') {
        vec![glob.to_string()]
    } else {
        vec![glob.to_string(), format!("**/{glob}")]
    }
}

fn glob_set<'a>(globs: impl IntoIterator<Item = &'a str>) -> Result<GlobSet, String> {
    let mut builder = GlobSetBuilder::new();
    for glob in globs {
        for pattern in patterns(glob) {
            let glob = globset::GlobBuilder::new(&pattern)
                .literal_separator(true)
                .build()
                .map_err(|e| format!("`{glob}`: {}", e.kind()))?;
            builder.add(glob);
        }
    }
    builder.build().map_err(|e| e.to_string())
}

/// Whether `path` or a directory on its way matches `set` (a directory excluded is excluded
/// with everything in it, as in `.gitignore`).
fn matches_on_the_way(set: &GlobSet, path: &str) -> bool {
    if set.is_empty() {
        return false;
    }
    path.match_indices('/')
        .any(|(i, _)| set.is_match(&path[..i]))
        || set.is_match(path)
}

/// Which files make the project: the pure filter over relative paths.
pub struct Selection {
    include: GlobSet,
    exclude: GlobSet,
}

impl Selection {
    pub fn new(settings: &SyncSettings, from_git: bool) -> Result<Selection, String> {
        let builtin = ALWAYS_EXCLUDED
            .iter()
            .chain(if from_git {
                &[][..]
            } else {
                &WALK_EXCLUDED[..]
            })
            .copied();
        // `sweeps/outputs` is anchored at the root: another project's `sweeps/` deeper down
        // is just files.
        let exclude = builtin
            .map(|g| {
                if g.contains('/') {
                    format!("/{g}")
                } else {
                    g.to_string()
                }
            })
            .chain(settings.exclude.iter().cloned())
            .collect::<Vec<_>>();
        Ok(Selection {
            // In a checkout git says which files are the project; `include` narrows a walk.
            include: if from_git {
                GlobSet::empty()
            } else {
                glob_set(settings.include.iter().map(String::as_str))?
            },
            exclude: glob_set(exclude.iter().map(String::as_str))?,
        })
    }

    /// Whether the file at relative path `path` is part of the project.
    pub fn wants(&self, path: &str) -> bool {
        !matches_on_the_way(&self.exclude, path)
            && (self.include.is_empty() || matches_on_the_way(&self.include, path))
    }

    /// Whether a walk goes into directory `dir` at all.
    fn enters(&self, dir: &str) -> bool {
        !self.exclude.is_match(dir)
    }
}

/// Builds the manifest of the project at `root` (blocking: it reads every file).
pub fn build(root: &Path, settings: &SyncSettings) -> Result<Manifest, String> {
    let (paths, from_git) = match git_files(root) {
        Some(paths) => (paths, true),
        None => (walk(root, &Selection::new(settings, false)?)?, false),
    };
    let selection = Selection::new(settings, from_git)?;
    let mut entries = Vec::new();
    for rel in paths {
        if !selection.wants(&rel) || hsm_protocol::check_relative_path(&rel).is_err() {
            continue;
        }
        let path = root.join(&rel);
        // Deleted but still in git's index, a submodule, a dangling link: not a file to send.
        let Ok(meta) = std::fs::metadata(&path) else {
            continue;
        };
        if !meta.is_file() {
            continue;
        }
        if entries.len() == MAX_MANIFEST_FILES {
            return Err(format!(
                "the project at {} has more than {MAX_MANIFEST_FILES} files to compare with agent sources{}: \
                 leave data out with `sync: {{exclude: [data/]}}` in the project config, or set `sync: off`",
                root.display(),
                if from_git { " (git lists them)" } else { "" }
            ));
        }
        let sha256 = sha256_file(&path).map_err(|e| format!("reading {}: {e}", path.display()))?;
        entries.push(ManifestEntry {
            path: rel,
            size: meta.len(),
            sha256,
            executable: is_executable(&meta),
        });
    }
    let manifest = Manifest {
        root: root.to_path_buf(),
        entries,
        from_git,
    };
    // It rides in the hello: it must fit a frame with room to spare.
    let encoded = hsm_protocol::encode(&manifest.request("", false)).map(|f| f.len());
    if !matches!(encoded, Ok(len) if len <= hsm_protocol::MAX_FRAME / 2) {
        return Err(format!(
            "the list of the project's {} files is too large to send to agents: leave some out \
             with `sync: {{exclude: [...]}}`, or set `sync: off`",
            manifest.entries.len()
        ));
    }
    Ok(manifest)
}

/// The files git knows in `root` (tracked, and new ones it does not ignore), relative to it;
/// `None` when `root` is not in a git checkout or git is not installed.
fn git_files(root: &Path) -> Option<Vec<String>> {
    let output = std::process::Command::new("git")
        .arg("-C")
        .arg(root)
        .args([
            "ls-files",
            "-z",
            "--cached",
            "--others",
            "--exclude-standard",
        ])
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .output()
        .ok()?;
    if !output.status.success() {
        return None;
    }
    let mut paths: Vec<String> = output
        .stdout
        .split(|&b| b == 0)
        .filter(|p| !p.is_empty())
        .filter_map(|p| String::from_utf8(p.to_vec()).ok())
        .collect();
    // A file deleted but still staged and its new copy can both be listed.
    paths.sort();
    paths.dedup();
    Some(paths)
}

/// Every file under `root` the selection's excludes leave in (directories excluded are not
/// entered; symlinked directories are not followed).
fn walk(root: &Path, selection: &Selection) -> Result<Vec<String>, String> {
    let mut files = Vec::new();
    let mut stack = vec![String::new()];
    let mut seen = 0usize;
    while let Some(rel_dir) = stack.pop() {
        let dir = root.join(&rel_dir);
        let entries =
            std::fs::read_dir(&dir).map_err(|e| format!("reading {}: {e}", dir.display()))?;
        for entry in entries.flatten() {
            seen += 1;
            if seen > MAX_WALKED {
                return Err(format!(
                    "the project at {} holds more than {MAX_WALKED} files and directories: \
                     leave data out with `sync: {{exclude: [data/]}}`, or set `sync: off`",
                    root.display()
                ));
            }
            let Some(name) = entry.file_name().to_str().map(str::to_string) else {
                continue;
            };
            let rel = if rel_dir.is_empty() {
                name
            } else {
                format!("{rel_dir}/{name}")
            };
            let Ok(kind) = entry.file_type() else {
                continue;
            };
            if kind.is_dir() {
                if selection.enters(&rel) {
                    stack.push(rel);
                }
            } else {
                files.push(rel);
            }
        }
    }
    files.sort();
    Ok(files)
}

use hsm_protocol::digest::{is_executable, sha256_file};

/// The differences an agent reported that name files of `manifest` (anything else it says is
/// ignored: it cannot ask for a file that is not the project's).
pub fn relevant<'a>(manifest: &Manifest, differs: &'a [SyncDiff]) -> Vec<&'a SyncDiff> {
    let known: std::collections::HashSet<&str> =
        manifest.entries.iter().map(|e| e.path.as_str()).collect();
    differs
        .iter()
        .filter(|d| known.contains(d.path.as_str()))
        .collect()
}

/// "train.py differs, conf/x.yaml missing and 3 more" (paths escaped for the terminal).
pub fn describe(differs: &[&SyncDiff], shown: usize) -> String {
    let mut parts: Vec<String> = differs
        .iter()
        .take(shown)
        .map(|d| {
            let how = match d.kind.as_str() {
                diff::MISSING => "missing",
                diff::DIFFERS => "differs",
                diff::MODE => "differs in its executable bit",
                diff::NOT_A_FILE => "is not a file there",
                other => other,
            };
            format!("{} {}", display_safe(&d.path), display_safe(how))
        })
        .collect();
    if differs.len() > shown {
        let last = format!("{} more", differs.len() - shown);
        parts.push(last);
    }
    match parts.len() {
        0 => String::new(),
        1 => parts.remove(0),
        n => {
            let last = parts.remove(n - 1);
            format!("{} and {last}", parts.join(", "))
        }
    }
}

/// Why source `name` gets no tasks from a sweep: its copy of the project differs.
/// `set_on_source`: the source has a `sync:` of its own (the fix changes that one).
pub fn drift_refusal(
    name: &str,
    address: &str,
    project_dir: &str,
    differs: &[&SyncDiff],
    set_on_source: bool,
) -> String {
    let push = if set_on_source {
        format!("change sources.{name}.sync to `push` to send the changes")
    } else {
        format!(
            "`sync: push` under sources.{name} (or at the top of the project config) sends the changes"
        )
    };
    format!(
        "{name} ({address}): the project at {} differs from this one: {}; a sweep sends no tasks \
         there. Fix: {push}; or copy them there yourself; or give the sweep --allow-remote-drift \
         to use it as it is",
        display_safe(project_dir),
        describe(differs, 5)
    )
}

/// ", project pushed: 2 files (3.4 KiB) in 0.1 s".
pub fn pushed_note(files: usize, bytes: u64, elapsed: Duration) -> String {
    format!(
        ", project pushed: {files} file{} ({}) in {:.1} s",
        if files == 1 { "" } else { "s" },
        human_bytes(bytes),
        elapsed.as_secs_f64()
    )
}

fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

/// Why a push did not complete.
#[derive(Debug)]
pub enum PushError {
    /// The connection broke: the next session compares and pushes again.
    Connection(String),
    /// The agent refused a file (disk full, permissions, the file changed while being sent).
    Refused(String),
}

/// What a push sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pushed {
    pub files: usize,
    pub bytes: u64,
    pub elapsed: Duration,
}

/// Sends each file of `differs` (already filtered to the manifest's) on its own stream and
/// waits for the agent to say it is in place.
pub async fn push(
    conn: &quinn::Connection,
    manifest: &Manifest,
    project_dir: &str,
    differs: &[&SyncDiff],
) -> Result<Pushed, PushError> {
    use hsm_transport::wire::{read_frame, write_message};
    let started = Instant::now();
    let by_path: HashMap<&str, &ManifestEntry> = manifest
        .entries
        .iter()
        .map(|e| (e.path.as_str(), e))
        .collect();
    let mut pushed = Pushed {
        files: 0,
        bytes: 0,
        elapsed: Duration::ZERO,
    };
    let lost =
        |e: &dyn std::fmt::Display| PushError::Connection(format!("pushing the project: {e}"));
    for d in differs {
        let Some(entry) = by_path.get(d.path.as_str()) else {
            continue;
        };
        let (mut send, mut recv) = conn.open_bi().await.map_err(|e| lost(&e))?;
        let header = PushHeader {
            project_dir: project_dir.to_string(),
            path: entry.path.clone(),
            size: entry.size,
            sha256: entry.sha256.clone(),
            executable: entry.executable,
        };
        write_message(&mut send, &header)
            .await
            .map_err(|e| lost(&e))?;
        let local = manifest.root.join(&entry.path);
        let mut file = tokio::fs::File::open(&local).await.map_err(|e| {
            PushError::Refused(format!("{} could not be read here: {e}", local.display()))
        })?;
        // What the manifest said, no more: the agent checks size and hash and says if the file
        // changed since.
        let mut limited = tokio::io::AsyncReadExt::take(&mut file, entry.size);
        tokio::io::copy(&mut limited, &mut send)
            .await
            .map_err(|e| lost(&e))?;
        let _ = send.finish();
        let reply = read_frame(&mut recv, 64 * 1024)
            .await
            .map_err(|e| lost(&e))?
            .ok_or_else(|| lost(&"the agent closed the push stream without answering"))?;
        let reply: PushReply = hsm_protocol::decode(&reply)
            .map_err(|e| PushError::Refused(format!("the agent's answer to a push: {e}")))?;
        if let Some(why) = reply.error {
            return Err(PushError::Refused(format!(
                "the agent did not take {}: {}",
                display_safe(&entry.path),
                display_safe(&why)
            )));
        }
        pushed.files += 1;
        pushed.bytes += entry.size;
    }
    pushed.elapsed = started.elapsed();
    Ok(pushed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(include: &[&str], exclude: &[&str]) -> SyncSettings {
        SyncSettings {
            mode: SyncMode::Check,
            include: include.iter().map(|s| s.to_string()).collect(),
            exclude: exclude.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn selection_leaves_out_outputs_caches_and_excluded_dirs_like_gitignore() {
        let walk = Selection::new(&settings(&[], &["data/", "*.ckpt"]), false).unwrap();
        for kept in [
            "train.py",
            "conf/x.yaml",
            "sweeps/sweep.yaml",
            "pkg/outputs.py",
        ] {
            assert!(walk.wants(kept), "{kept}");
        }
        for dropped in [
            ".hsm/config.yaml",
            "sweeps/outputs/s1/tasks/task_001/stdout.log",
            "pkg/__pycache__/m.cpython-311.pyc",
            "m.pyc",
            ".venv/bin/python",
            "outputs/2026-01-01/x.log",
            "data/big.bin",
            "models/last.ckpt",
            ".git/HEAD",
        ] {
            assert!(!walk.wants(dropped), "{dropped}");
        }
        // A checkout: git's own ignores apply, ours only for hsm's files.
        let git = Selection::new(&settings(&["*.py"], &[]), true).unwrap();
        assert!(git.wants("outputs/keep.txt") && git.wants("conf/x.yaml"));
        assert!(!git.wants(".hsm/config.yaml") && !git.wants("sweeps/outputs/a"));
        // A walk with include: only what it names (at any depth without a slash).
        let only = Selection::new(&settings(&["*.py", "conf/"], &[]), false).unwrap();
        assert!(only.wants("train.py") && only.wants("pkg/m.py") && only.wants("conf/a/b.yaml"));
        assert!(!only.wants("README.md"));
    }

    #[test]
    fn bad_globs_are_named() {
        assert!(check_glob("*.py").is_ok());
        assert!(check_glob("[").unwrap_err().contains("unclosed"));
        assert!(check_glob(" ").is_err());
    }

    fn diff(path: &str, kind: &str) -> SyncDiff {
        SyncDiff {
            path: path.into(),
            kind: kind.into(),
        }
    }

    #[test]
    fn differences_are_described_briefly_and_escaped() {
        let d = [
            diff("train.py", "differs"),
            diff("conf/x.yaml", "missing"),
            diff("run.sh", "mode"),
        ];
        let refs: Vec<&SyncDiff> = d.iter().collect();
        assert_eq!(describe(&refs[..1], 5), "train.py differs");
        assert_eq!(
            describe(&refs[..2], 5),
            "train.py differs and conf/x.yaml missing"
        );
        assert_eq!(
            describe(&refs, 2),
            "train.py differs, conf/x.yaml missing and 1 more"
        );
        let evil = [diff("a\x1b[2Kb", "differs")];
        let refs: Vec<&SyncDiff> = evil.iter().collect();
        assert!(describe(&refs, 5).contains("\\x1b"));
        let why = drift_refusal("gpu1", "gpu1:7300", "/srv/p", &refs, false);
        assert!(why.starts_with("gpu1 (gpu1:7300): the project at /srv/p differs"));
        assert!(
            why.contains("`sync: push` under sources.gpu1") && why.contains("--allow-remote-drift")
        );
        let why = drift_refusal("gpu1", "gpu1:7300", "/srv/p", &refs, true);
        assert!(why.contains("change sources.gpu1.sync to `push`"), "{why}");
    }

    #[test]
    fn pushes_are_summed_up_in_human_units() {
        assert_eq!(
            pushed_note(1, 12, Duration::from_millis(40)),
            ", project pushed: 1 file (12 B) in 0.0 s"
        );
        assert_eq!(
            pushed_note(3, 3 * 1024 * 1024 + 512 * 1024, Duration::from_millis(1250)),
            ", project pushed: 3 files (3.5 MiB) in 1.2 s"
        );
    }

    #[test]
    fn a_manifest_lists_git_files_or_walks_and_only_names_the_projects_files_in_reports() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("conf")).unwrap();
        std::fs::create_dir_all(root.join("sweeps/outputs/s1")).unwrap();
        std::fs::write(root.join("train.py"), b"print(1)\n").unwrap();
        std::fs::write(root.join("conf/x.yaml"), b"a: 1\n").unwrap();
        std::fs::write(root.join("sweeps/outputs/s1/log"), b"x").unwrap();
        let manifest = build(root, &SyncSettings::default()).unwrap();
        let paths: Vec<&str> = manifest.entries.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(paths, ["conf/x.yaml", "train.py"]);
        let digest = hsm_protocol::digest::sha256_hex(b"print(1)\n");
        assert_eq!(manifest.entries[1].sha256, digest);
        assert_eq!(manifest.entries[1].size, 9);
        let report = [diff("train.py", "differs"), diff("/etc/passwd", "missing")];
        let kept = relevant(&manifest, &report);
        assert_eq!(kept.len(), 1);
        assert_eq!(kept[0].path, "train.py");

        // In a git checkout: git's list (a tracked file, a new unignored one; not an ignored one).
        let git = |args: &[&str]| {
            std::process::Command::new("git")
                .arg("-C")
                .arg(root)
                .args(args)
                .output()
                .map(|o| o.status.success())
                .unwrap_or(false)
        };
        if !git(&["init", "-q"]) {
            eprintln!("git is not installed: the checkout half of this test skipped");
            return;
        }
        std::fs::write(root.join(".gitignore"), b"*.log\n").unwrap();
        std::fs::write(root.join("debug.log"), b"x").unwrap();
        assert!(git(&["add", "train.py"]));
        let manifest = build(root, &SyncSettings::default()).unwrap();
        assert!(manifest.from_git);
        let paths: Vec<&str> = manifest.entries.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(paths, [".gitignore", "conf/x.yaml", "train.py"]);
    }
}

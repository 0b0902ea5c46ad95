//! Project sync on the agent's side: comparing `project_dir` with the manifest a coordinator's
//! `Hello` carries, and receiving the files it then pushes — each written under a temporary
//! name, verified against its announced size and SHA-256, and only then renamed into place.
//! Only files this session's own report named are accepted.

use crate::wire::{read_frame, write_message};
use hsm_protocol::digest::{hex, is_executable, sha256_file};
use hsm_protocol::sync::{diff, MAX_PUSH_HEADER};
use hsm_protocol::{check_relative_path, PushHeader, PushReply, SyncDiff, SyncReport, SyncRequest};
use sha2::{Digest, Sha256};
use std::collections::HashSet;
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Compares `project_dir` with the manifest (blocking: it reads and hashes files). With
/// `push`, a missing `project_dir` is created first, so that the push can fill it.
pub fn compare(request: &SyncRequest) -> SyncReport {
    let failed = |error: String| SyncReport {
        differs: Vec::new(),
        error: Some(error),
    };
    if request.project_dir.is_empty() {
        return failed("no project_dir to compare".into());
    }
    let root = PathBuf::from(&request.project_dir);
    if request.push {
        if let Err(e) = std::fs::create_dir_all(&root) {
            return failed(format!("cannot create {}: {e}", root.display()));
        }
    }
    let mut differs = Vec::new();
    for entry in &request.files {
        if let Err(e) = check_relative_path(&entry.path) {
            return failed(format!("the manifest names {:?}: {e}", entry.path));
        }
        let kind = match compare_file(&root.join(&entry.path), entry) {
            Ok(None) => continue,
            Ok(Some(kind)) => kind,
            // Unreadable here (permissions): as good as different; a push will say why.
            Err(_) => diff::DIFFERS,
        };
        differs.push(SyncDiff {
            path: entry.path.clone(),
            kind: kind.into(),
        });
    }
    SyncReport {
        differs,
        error: None,
    }
}

/// How the file at `path` differs from `entry`, if it does.
fn compare_file(
    path: &Path,
    entry: &hsm_protocol::ManifestEntry,
) -> std::io::Result<Option<&'static str>> {
    let meta = match std::fs::metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Some(diff::MISSING)),
        Err(e) => return Err(e),
    };
    if !meta.is_file() {
        return Ok(Some(diff::NOT_A_FILE));
    }
    // The size first: most edits change it, and it costs no read.
    if meta.len() != entry.size || sha256_file(path)? != entry.sha256 {
        return Ok(Some(diff::DIFFERS));
    }
    if is_executable(&meta) != entry.executable {
        return Ok(Some(diff::MODE));
    }
    Ok(None)
}

/// What a session accepts pushes for: its request's `project_dir` and the paths its report
/// named.
#[derive(Debug, Clone)]
pub struct PushWindow {
    pub project_dir: String,
    pub paths: HashSet<String>,
}

impl PushWindow {
    /// The window a report opens, when the request asked for a push and something differs.
    pub fn for_report(request: &SyncRequest, report: &SyncReport) -> Option<PushWindow> {
        (request.push && report.error.is_none() && !report.differs.is_empty()).then(|| PushWindow {
            project_dir: request.project_dir.clone(),
            paths: report.differs.iter().map(|d| d.path.clone()).collect(),
        })
    }
}

/// Receives one pushed file from a push stream and answers on it. Never panics on what the peer
/// sends; a refused or damaged file leaves nothing behind.
pub async fn receive_push<R, W>(recv: &mut R, send: &mut W, window: &PushWindow)
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let error = match receive(recv, window).await {
        Ok(path) => {
            tracing::info!(path = %path.display(), "project file pushed by the coordinator");
            None
        }
        Err(why) => {
            tracing::warn!(%why, "a pushed project file was refused");
            Some(why)
        }
    };
    let _ = write_message(send, &PushReply { error }).await;
    let _ = send.shutdown().await;
}

async fn receive<R: AsyncRead + Unpin>(
    recv: &mut R,
    window: &PushWindow,
) -> Result<PathBuf, String> {
    let frame = read_frame(recv, MAX_PUSH_HEADER)
        .await
        .map_err(|e| format!("reading the push header: {e}"))?
        .ok_or("the push stream ended before its header")?;
    let header: PushHeader =
        hsm_protocol::decode(&frame).map_err(|e| format!("malformed push header: {e}"))?;
    if header.project_dir != window.project_dir {
        return Err(format!(
            "{:?} is not the project_dir this session compared",
            header.project_dir
        ));
    }
    if !window.paths.contains(&header.path) {
        return Err(format!(
            "{:?} is not a file this session's check found different",
            header.path
        ));
    }
    check_relative_path(&header.path).map_err(|e| format!("{:?}: {e}", header.path))?;
    let target = inside(Path::new(&header.project_dir), &header.path)?;
    write_verified(recv, &header, &target).await?;
    Ok(target)
}

/// `root/rel`, with every parent directory created and none of them reached through a symlink
/// that leads outside `root`.
fn inside(root: &Path, rel: &str) -> Result<PathBuf, String> {
    let root = std::fs::canonicalize(root).map_err(|e| format!("{}: {e}", root.display()))?;
    let mut path = root.clone();
    let components: Vec<_> = Path::new(rel).components().collect();
    for (i, component) in components.iter().enumerate() {
        let Component::Normal(part) = component else {
            return Err(format!("{rel:?}: only plain path components are allowed"));
        };
        path.push(part);
        let last = i + 1 == components.len();
        if !last {
            if let Err(e) = std::fs::create_dir(&path) {
                if e.kind() != std::io::ErrorKind::AlreadyExists {
                    return Err(format!("creating {}: {e}", path.display()));
                }
            }
            let real = std::fs::canonicalize(&path).map_err(|e| format!("{e}"))?;
            if !real.starts_with(&root) || !real.is_dir() {
                return Err(format!(
                    "{}: not a directory inside the project",
                    path.display()
                ));
            }
        } else if std::fs::symlink_metadata(&path).is_ok_and(|m| m.is_dir()) {
            return Err(format!("{} is a directory", path.display()));
        }
    }
    Ok(path)
}

static PARTIAL_SERIAL: AtomicU64 = AtomicU64::new(0);

/// Removes the temporary file unless it was renamed into place.
struct Partial(Option<PathBuf>);

impl Drop for Partial {
    fn drop(&mut self) {
        if let Some(path) = self.0.take() {
            let _ = std::fs::remove_file(path);
        }
    }
}

async fn write_verified<R: AsyncRead + Unpin>(
    recv: &mut R,
    header: &PushHeader,
    target: &Path,
) -> Result<(), String> {
    let serial = PARTIAL_SERIAL.fetch_add(1, Ordering::Relaxed);
    let tmp_path =
        target.with_file_name(format!(".hsm-push-{}-{serial}.partial", std::process::id()));
    let mut tmp = Partial(Some(tmp_path.clone()));
    let io = |e: std::io::Error| format!("{}: {e}", header.path);
    let mut file = tokio::fs::File::create(&tmp_path).await.map_err(io)?;
    let mut hasher = Sha256::new();
    let mut got: u64 = 0;
    let mut buf = vec![0u8; 1024 * 1024];
    loop {
        let n = recv.read(&mut buf).await.map_err(io)?;
        if n == 0 {
            break;
        }
        got += n as u64;
        // Never more on disk than was announced.
        if got > header.size {
            return Err(format!(
                "{}: more than the {} bytes announced",
                header.path, header.size
            ));
        }
        let piece = buf.get(..n).unwrap_or_default();
        hasher.update(piece);
        file.write_all(piece).await.map_err(io)?;
    }
    if got != header.size {
        return Err(format!(
            "{}: {got} bytes arrived, {} were announced",
            header.path, header.size
        ));
    }
    let received = hex(&hasher.finalize());
    if received != header.sha256 {
        return Err(format!(
            "{}: SHA-256 {received} does not match the announced {}",
            header.path, header.sha256
        ));
    }
    file.sync_all().await.map_err(io)?;
    drop(file);
    set_executable(&tmp_path, header.executable).map_err(io)?;
    tokio::fs::rename(&tmp_path, target).await.map_err(io)?;
    tmp.0 = None;
    Ok(())
}

#[cfg(unix)]
fn set_executable(path: &Path, executable: bool) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let mut perms = std::fs::metadata(path)?.permissions();
    let mode = perms.mode();
    // Execute for whoever may read, as `git checkout` does.
    let mode = if executable {
        mode | ((mode & 0o444) >> 2)
    } else {
        mode & !0o111
    };
    perms.set_mode(mode);
    std::fs::set_permissions(path, perms)
}

#[cfg(not(unix))]
fn set_executable(_path: &Path, _executable: bool) -> std::io::Result<()> {
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use hsm_protocol::ManifestEntry;

    fn entry(path: &str, content: &[u8], executable: bool) -> ManifestEntry {
        ManifestEntry {
            path: path.into(),
            size: content.len() as u64,
            sha256: hsm_protocol::digest::sha256_hex(content),
            executable,
        }
    }

    fn kinds(report: &SyncReport) -> Vec<(String, String)> {
        report
            .differs
            .iter()
            .map(|d| (d.path.clone(), d.kind.clone()))
            .collect()
    }

    #[test]
    fn compare_names_missing_changed_mode_and_not_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::write(root.join("same.py"), b"print(1)\n").unwrap();
        std::fs::write(root.join("train.py"), b"print(2)\n").unwrap();
        std::fs::write(root.join("run.sh"), b"echo\n").unwrap();
        std::fs::create_dir(root.join("conf")).unwrap();
        let request = SyncRequest {
            project_dir: root.display().to_string(),
            files: vec![
                entry("same.py", b"print(1)\n", false),
                entry("train.py", b"print(3)\n", false),
                entry("conf/x.yaml", b"a: 1\n", false),
                entry("run.sh", b"echo\n", true),
                entry("conf", b"", false),
            ],
            push: false,
        };
        let report = compare(&request);
        assert_eq!(report.error, None);
        let want = [
            ("train.py", diff::DIFFERS),
            ("conf/x.yaml", diff::MISSING),
            ("run.sh", diff::MODE),
            ("conf", diff::NOT_A_FILE),
        ];
        assert_eq!(
            kinds(&report),
            want.map(|(p, k)| (p.to_string(), k.to_string())).to_vec()
        );
    }

    #[test]
    fn compare_refuses_a_manifest_path_outside_the_project_and_creates_the_dir_for_a_push() {
        let dir = tempfile::tempdir().unwrap();
        let mut request = SyncRequest {
            project_dir: dir.path().join("new/proj").display().to_string(),
            files: vec![entry("../escape", b"x", false)],
            push: false,
        };
        assert!(compare(&request).error.unwrap().contains("../escape"));
        request.files = vec![entry("a.py", b"x", false)];
        assert_eq!(
            kinds(&compare(&request)),
            vec![("a.py".into(), "missing".into())]
        );
        assert!(!dir.path().join("new").exists(), "a check creates nothing");
        request.push = true;
        assert_eq!(compare(&request).differs.len(), 1);
        assert!(dir.path().join("new/proj").is_dir());
    }

    async fn push(window: &PushWindow, header: &PushHeader, body: &[u8]) -> PushReply {
        let mut input = hsm_protocol::encode(header).unwrap();
        input.extend_from_slice(body);
        let mut out = Vec::new();
        receive_push(&mut &input[..], &mut out, window).await;
        let frame = read_frame(&mut &out[..], 1 << 20).await.unwrap().unwrap();
        hsm_protocol::decode(&frame).unwrap()
    }

    fn header(root: &Path, path: &str, body: &[u8], executable: bool) -> PushHeader {
        let e = entry(path, body, executable);
        PushHeader {
            project_dir: root.display().to_string(),
            path: e.path,
            size: e.size,
            sha256: e.sha256,
            executable,
        }
    }

    fn leftovers(root: &Path) -> Vec<String> {
        let mut names = Vec::new();
        let mut stack = vec![root.to_path_buf()];
        while let Some(dir) = stack.pop() {
            for entry in std::fs::read_dir(dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    stack.push(path.clone());
                }
                let name = path.file_name().unwrap().to_string_lossy().to_string();
                if name.ends_with(".partial") {
                    names.push(name);
                }
            }
        }
        names
    }

    #[tokio::test]
    async fn a_pushed_file_is_verified_then_renamed_into_place_with_its_mode() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::write(root.join("train.py"), b"old\n").unwrap();
        let window = PushWindow {
            project_dir: root.display().to_string(),
            paths: ["train.py", "conf/x.yaml", "run.sh"]
                .map(String::from)
                .into(),
        };
        let reply = push(
            &window,
            &header(root, "train.py", b"new\n", false),
            b"new\n",
        )
        .await;
        assert_eq!(reply.error, None);
        assert_eq!(std::fs::read(root.join("train.py")).unwrap(), b"new\n");
        let reply = push(
            &window,
            &header(root, "conf/x.yaml", b"a: 1\n", false),
            b"a: 1\n",
        )
        .await;
        assert_eq!(reply.error, None);
        assert_eq!(std::fs::read(root.join("conf/x.yaml")).unwrap(), b"a: 1\n");
        let reply = push(&window, &header(root, "run.sh", b"echo\n", true), b"echo\n").await;
        assert_eq!(reply.error, None);
        let meta = std::fs::metadata(root.join("run.sh")).unwrap();
        assert!(is_executable(&meta));
        assert!(leftovers(root).is_empty());
    }

    #[tokio::test]
    async fn damaged_or_unasked_pushes_are_refused_and_leave_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::write(root.join("train.py"), b"old\n").unwrap();
        let window = PushWindow {
            project_dir: root.display().to_string(),
            paths: ["train.py".to_string()].into(),
        };
        // Wrong hash.
        let mut h = header(root, "train.py", b"new\n", false);
        h.sha256 = "0".repeat(64);
        let why = push(&window, &h, b"new\n").await.error.unwrap();
        assert!(why.contains("SHA-256"), "{why}");
        // Short and long bodies.
        let h = header(root, "train.py", b"new\n", false);
        assert!(push(&window, &h, b"ne")
            .await
            .error
            .unwrap()
            .contains("2 bytes arrived"));
        assert!(push(&window, &h, b"new\nmore")
            .await
            .error
            .unwrap()
            .contains("more than"));
        // A path the check did not name, another project_dir, a path outside.
        let h = header(root, "other.py", b"x", false);
        assert!(push(&window, &h, b"x")
            .await
            .error
            .unwrap()
            .contains("not a file this session"));
        let mut h = header(root, "train.py", b"new\n", false);
        h.project_dir = "/elsewhere".into();
        assert!(push(&window, &h, b"new\n")
            .await
            .error
            .unwrap()
            .contains("not the project_dir"));
        let outside = PushWindow {
            project_dir: window.project_dir.clone(),
            paths: ["../x".to_string()].into(),
        };
        let h = header(root, "../x", b"x", false);
        assert!(push(&outside, &h, b"x").await.error.is_some());
        // Garbage instead of a header.
        let mut out = Vec::new();
        receive_push(&mut &b"\x00\x00\x00\x03abc"[..], &mut out, &window).await;
        let frame = read_frame(&mut &out[..], 1 << 20).await.unwrap().unwrap();
        let reply: PushReply = hsm_protocol::decode(&frame).unwrap();
        assert!(reply.error.unwrap().contains("malformed"));
        assert_eq!(std::fs::read(root.join("train.py")).unwrap(), b"old\n");
        assert!(leftovers(root).is_empty());
    }

    #[cfg(unix)]
    #[tokio::test]
    async fn a_symlinked_directory_leading_outside_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::os::unix::fs::symlink(outside.path(), root.join("conf")).unwrap();
        let window = PushWindow {
            project_dir: root.display().to_string(),
            paths: ["conf/x.yaml".to_string()].into(),
        };
        let h = header(root, "conf/x.yaml", b"a", false);
        let why = push(&window, &h, b"a").await.error.unwrap();
        assert!(why.contains("not a directory inside the project"), "{why}");
        assert_eq!(std::fs::read_dir(outside.path()).unwrap().count(), 0);
    }
}

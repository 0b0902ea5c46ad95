//! Receiving result files from agents: one file per QUIC stream, a `FileHeader` frame followed by
//! exactly `size` bytes. The path must be relative and stay inside the task's directory (checked
//! as text and again against symlinks on disk); the bytes go to a temporary name and are renamed
//! into place only when size and SHA-256 match, so a failed or forged transfer never leaves a
//! file that looks complete.

use hsm_agent::wire::read_frame;
use hsm_protocol::{check_relative_path, decode, FileHeader, MAX_FRAME};
use sha2::{Digest, Sha256};
use std::path::{Component, Path, PathBuf};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};

/// Why a result file was refused or lost.
#[derive(Debug, thiserror::Error)]
pub enum TransferError {
    /// The stream did not start with a readable file header.
    #[error("malformed file header: {0}")]
    Header(String),
    /// The path is absolute, contains `..`, or otherwise leaves the task directory.
    #[error("refused result path {path:?}: {why}")]
    Path { path: String, why: String },
    /// The stream ended before `size` bytes arrived, or carried more.
    #[error("result file {path}: expected {expected} bytes, got {got}")]
    Size {
        path: String,
        expected: u64,
        got: u64,
    },
    /// The bytes do not hash to the announced SHA-256.
    #[error("result file {path}: SHA-256 mismatch (announced {announced}, received {received})")]
    Hash {
        path: String,
        announced: String,
        received: String,
    },
    /// Writing the file failed.
    #[error("result file {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// A file received and verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    pub header: FileHeader,
    /// Where it was written.
    pub path: PathBuf,
}

/// Reads one file stream into `task_dir` (which must exist). `task_dir_for` maps the header's
/// sweep and task to the local task directory; it returns `None` for a task this coordinator
/// does not expect, which is refused.
pub async fn receive_file<R: AsyncRead + Unpin>(
    stream: &mut R,
    task_dir_for: impl FnOnce(&FileHeader) -> Option<PathBuf>,
) -> Result<Received, TransferError> {
    let frame = read_frame(stream, MAX_FRAME)
        .await
        .map_err(|e| TransferError::Header(e.to_string()))?
        .ok_or_else(|| TransferError::Header("the stream was empty".into()))?;
    let header: FileHeader = decode(&frame).map_err(|e| TransferError::Header(e.to_string()))?;
    let refuse = |why: String| TransferError::Path {
        path: header.path.clone(),
        why,
    };
    check_relative_path(&header.path).map_err(|e| refuse(e.to_string()))?;
    let task_dir = task_dir_for(&header)
        .ok_or_else(|| refuse("not a task this coordinator is waiting for".into()))?;
    let target = resolve_inside(&task_dir, &header.path).map_err(refuse)?;
    let io = |source| TransferError::Io {
        path: header.path.clone(),
        source,
    };
    if let Some(parent) = target.parent() {
        tokio::fs::create_dir_all(parent).await.map_err(io)?;
        // Directories created above are inside the task dir by construction; a symlink that
        // already existed is caught here, after creation, before any byte is written.
        resolve_inside(&task_dir, &header.path).map_err(refuse)?;
    }
    let tmp = target.with_file_name(format!(
        ".{}.partial",
        target
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("file")
    ));
    let mut file = tokio::fs::File::create(&tmp).await.map_err(io)?;
    let mut hasher = Sha256::new();
    let mut got: u64 = 0;
    // Large pieces: each write to a `tokio::fs::File` is a trip to the blocking pool.
    let mut buf = vec![0u8; 1024 * 1024];
    loop {
        let n = stream.read(&mut buf).await.map_err(io)?;
        if n == 0 {
            break;
        }
        got += n as u64;
        if got > header.size {
            drop(file);
            let _ = tokio::fs::remove_file(&tmp).await;
            return Err(TransferError::Size {
                path: header.path.clone(),
                expected: header.size,
                got,
            });
        }
        hasher.update(&buf[..n]);
        file.write_all(&buf[..n]).await.map_err(io)?;
    }
    file.flush().await.map_err(io)?;
    drop(file);
    let fail = |err| async {
        let _ = tokio::fs::remove_file(&tmp).await;
        Err(err)
    };
    if got != header.size {
        return fail(TransferError::Size {
            path: header.path.clone(),
            expected: header.size,
            got,
        })
        .await;
    }
    let received: String = hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    if received != header.sha256 {
        return fail(TransferError::Hash {
            path: header.path.clone(),
            announced: header.sha256.clone(),
            received,
        })
        .await;
    }
    tokio::fs::rename(&tmp, &target).await.map_err(io)?;
    Ok(Received {
        header,
        path: target,
    })
}

/// `task_dir/rel`, refused when any existing component on the way is a symlink leading outside
/// `task_dir` (the text was already checked: relative, no `..`).
fn resolve_inside(task_dir: &Path, rel: &str) -> Result<PathBuf, String> {
    let root = std::fs::canonicalize(task_dir).map_err(|e| format!("task directory: {e}"))?;
    let mut path = root.clone();
    for component in Path::new(rel).components() {
        let Component::Normal(part) = component else {
            return Err("only plain path components are allowed".into());
        };
        path.push(part);
        if let Ok(meta) = std::fs::symlink_metadata(&path) {
            if meta.file_type().is_symlink() {
                let real = std::fs::canonicalize(&path).map_err(|e| format!("{e}"))?;
                if !real.starts_with(&root) {
                    return Err("a symlink on the way leads outside the task directory".into());
                }
            }
        }
    }
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use hsm_agent::wire::write_message;
    use hsm_protocol::{Attempt, SweepId, TaskIndex, TaskRef};

    fn header(path: &str, bytes: &[u8]) -> FileHeader {
        FileHeader {
            sweep_id: SweepId("s".into()),
            task: TaskRef {
                index: TaskIndex(1),
                attempt: Attempt(1),
            },
            path: path.into(),
            size: bytes.len() as u64,
            sha256: Sha256::digest(bytes)
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect(),
        }
    }

    async fn send(h: &FileHeader, body: &[u8], dir: &Path) -> Result<Received, TransferError> {
        let (mut a, mut b) = tokio::io::duplex(1 << 16);
        let h2 = h.clone();
        let body = body.to_vec();
        let writer = tokio::spawn(async move {
            write_message(&mut a, &h2).await.unwrap();
            let _ = a.write_all(&body).await;
        });
        let dir = dir.to_path_buf();
        let result = receive_file(&mut b, move |_| Some(dir)).await;
        let _ = writer.await;
        result
    }

    #[tokio::test]
    async fn a_verified_file_lands_in_place_and_nothing_else_remains() {
        let dir = tempfile::tempdir().unwrap();
        let body: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        let got = send(&header("results/sub/model.bin", &body), &body, dir.path())
            .await
            .unwrap();
        assert_eq!(std::fs::read(&got.path).unwrap(), body);
        let empty = send(&header("results/empty.txt", b""), b"", dir.path())
            .await
            .unwrap();
        assert_eq!(std::fs::read(&empty.path).unwrap(), b"");
        let leftovers: Vec<_> = walk(dir.path())
            .into_iter()
            .filter(|p| p.contains(".partial"))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
    }

    #[tokio::test]
    async fn paths_leaving_the_task_directory_are_refused_and_never_written() {
        let outer = tempfile::tempdir().unwrap();
        let dir = outer.path().join("task");
        std::fs::create_dir(&dir).unwrap();
        for path in [
            "../escape.txt",
            "/etc/evil",
            "results/../../escape.txt",
            "",
            "a//b",
        ] {
            let err = send(&header(path, b"x"), b"x", &dir).await.unwrap_err();
            assert!(matches!(err, TransferError::Path { .. }), "{path}: {err}");
        }
        // A symlink inside the task dir pointing out of it.
        std::os::unix::fs::symlink(outer.path(), dir.join("link")).unwrap();
        let err = send(&header("link/escape.txt", b"x"), b"x", &dir)
            .await
            .unwrap_err();
        assert!(matches!(err, TransferError::Path { .. }), "{err}");
        assert!(!outer.path().join("escape.txt").exists());
        assert_eq!(
            walk(outer.path())
                .iter()
                .filter(|p| p.contains("escape"))
                .count(),
            0
        );
    }

    #[tokio::test]
    async fn wrong_hash_or_size_leaves_no_file() {
        let dir = tempfile::tempdir().unwrap();
        let mut h = header("results/a.txt", b"hello");
        h.sha256 = "0".repeat(64);
        assert!(matches!(
            send(&h, b"hello", dir.path()).await,
            Err(TransferError::Hash { .. })
        ));
        let h = header("results/b.txt", b"hello");
        assert!(matches!(
            send(&h, b"hel", dir.path()).await,
            Err(TransferError::Size { .. })
        ));
        assert!(matches!(
            send(&h, b"hello, world", dir.path()).await,
            Err(TransferError::Size { .. })
        ));
        let files: Vec<_> = walk(dir.path())
            .into_iter()
            .filter(|p| !p.ends_with("/results"))
            .collect();
        assert!(files.is_empty(), "{files:?}");
    }

    fn walk(dir: &Path) -> Vec<String> {
        let mut out = Vec::new();
        if let Ok(entries) = std::fs::read_dir(dir) {
            for e in entries.flatten() {
                let p = e.path();
                out.push(p.display().to_string());
                if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                    out.extend(walk(&p));
                }
            }
        }
        out
    }
}

//! Receiving result files from agents: one file per QUIC stream, a `FileHeader` frame followed by
//! exactly `size` bytes. The path must be relative and stay inside the task's directory (checked
//! as text and again against symlinks on disk), and the stream must be claimed against what the
//! attempt offered before any byte is written; the bytes go to a temporary name and are renamed
//! into place only when size and SHA-256 match, so a failed or forged transfer never leaves a
//! file that looks complete, and the temporary file is removed on every error path.

use hsm_protocol::{check_relative_path, decode, FileHeader};
use hsm_transport::wire::read_frame;
use sha2::{Digest, Sha256};
use std::future::Future;
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};

/// The largest file header frame accepted. A header is a path (at most 4 KiB), a sweep id and a
/// hash: a peer announcing more is not sending a header, and is not given a buffer for it.
pub const MAX_HEADER: usize = 64 * 1024;

/// Why a result file was refused or lost.
#[derive(Debug, thiserror::Error)]
pub enum TransferError {
    /// The stream did not start with a readable file header.
    #[error("malformed file header: {0}")]
    Header(String),
    /// The path is absolute, contains `..`, or otherwise leaves the task directory.
    #[error("refused result path {path:?}: {why}")]
    Path { path: String, why: String },
    /// Not a file this coordinator awaits (see `OfferBook::claim`); nothing was written.
    #[error("refused result file {path:?}: {why}")]
    Refused { path: String, why: String },
    /// The stream ended before `size` bytes arrived, or carried more.
    #[error("result file {path:?}: expected {expected} bytes, got {got}")]
    Size {
        path: String,
        expected: u64,
        got: u64,
    },
    /// The bytes do not hash to the announced SHA-256.
    #[error("result file {path:?}: SHA-256 mismatch (announced {announced}, received {received})")]
    Hash {
        path: String,
        announced: String,
        received: String,
    },
    /// Writing the file here failed.
    #[error("result file {path:?}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// Reading the stream failed: the connection dropped or the sender reset the stream. The
    /// file can be asked for again.
    #[error("result file {path:?}: the transfer broke off: {source}")]
    Interrupted {
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// No byte arrived for too long.
    #[error("result file {path:?}: no data arrived for {after:?}")]
    Stalled { path: String, after: Duration },
}

impl TransferError {
    /// A transfer that broke off with the connection: the file is asked for again rather than
    /// counted against the attempt.
    pub fn is_interruption(&self) -> bool {
        matches!(self, TransferError::Interrupted { .. })
    }
}

/// What became of one file stream.
#[derive(Debug)]
pub struct Arrival {
    /// The header, when one could be read.
    pub header: Option<FileHeader>,
    /// The stream was matched to an offer and claimed (see `OfferBook::claim`): the caller
    /// settles or releases that offer whatever the outcome.
    pub claimed: bool,
    /// Where the verified file was put.
    pub outcome: Result<PathBuf, TransferError>,
}

/// Reads one file stream. `accept` (async: the agent actor's link decides) checks the header
/// against what is awaited, claims it and returns the task directory to write into (which must
/// exist), or says why not; nothing is created before it agreed. `progress` is called as bytes
/// arrive; `stall` bounds the wait for any one read.
pub async fn receive_file<R: AsyncRead + Unpin, A: Future<Output = Result<PathBuf, String>>>(
    stream: &mut R,
    accept: impl FnOnce(&FileHeader) -> A,
    mut progress: impl FnMut(),
    stall: Duration,
) -> Arrival {
    let frame = match tokio::time::timeout(stall, read_frame(stream, MAX_HEADER)).await {
        Ok(Ok(Some(frame))) => frame,
        Ok(Ok(None)) => {
            return unclaimed(None, TransferError::Header("the stream was empty".into()))
        }
        Ok(Err(e)) => return unclaimed(None, TransferError::Header(e.to_string())),
        Err(_) => {
            return unclaimed(
                None,
                TransferError::Header(format!("no header arrived within {stall:?}")),
            )
        }
    };
    let header: FileHeader = match decode(&frame) {
        Ok(header) => header,
        Err(e) => return unclaimed(None, TransferError::Header(e.to_string())),
    };
    if let Err(e) = check_relative_path(&header.path) {
        let err = TransferError::Path {
            path: header.path.clone(),
            why: e.to_string(),
        };
        return unclaimed(Some(header), err);
    }
    let task_dir = match accept(&header).await {
        Ok(dir) => dir,
        Err(why) => {
            let err = TransferError::Refused {
                path: header.path.clone(),
                why,
            };
            return unclaimed(Some(header), err);
        }
    };
    let outcome = write_verified(stream, &header, &task_dir, &mut progress, stall).await;
    Arrival {
        header: Some(header),
        claimed: true,
        outcome,
    }
}

fn unclaimed(header: Option<FileHeader>, err: TransferError) -> Arrival {
    Arrival {
        header,
        claimed: false,
        outcome: Err(err),
    }
}

/// A temporary file removed when dropped, unless it was renamed into place.
struct Partial(Option<PathBuf>);

impl Drop for Partial {
    fn drop(&mut self) {
        if let Some(path) = self.0.take() {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// Distinguishes temporary names within this process (two streams of one path can overlap
/// around a reconnect).
static PARTIAL_SERIAL: AtomicU64 = AtomicU64::new(0);

/// A temporary name next to `target` of a fixed, short length: the target's own name may already
/// be as long as a file name can be.
fn partial_name(target: &Path) -> PathBuf {
    let serial = PARTIAL_SERIAL.fetch_add(1, Ordering::Relaxed);
    target.with_file_name(format!(".hsm-{}-{serial}.partial", std::process::id()))
}

async fn write_verified<R: AsyncRead + Unpin>(
    stream: &mut R,
    header: &FileHeader,
    task_dir: &Path,
    progress: &mut impl FnMut(),
    stall: Duration,
) -> Result<PathBuf, TransferError> {
    let path = || header.path.clone();
    let refuse = |why: String| TransferError::Path { path: path(), why };
    let io = |source| TransferError::Io {
        path: path(),
        source,
    };
    let target = resolve_inside(task_dir, &header.path).map_err(refuse)?;
    if let Some(parent) = target.parent() {
        tokio::fs::create_dir_all(parent).await.map_err(io)?;
        // Directories created above are inside the task dir by construction; a symlink that
        // already existed is caught here, after creation, before any byte is written.
        resolve_inside(task_dir, &header.path).map_err(refuse)?;
    }
    let tmp = Partial(Some(partial_name(&target)));
    let tmp_path = tmp.0.clone().unwrap_or_default();
    let mut file = tokio::fs::File::create(&tmp_path).await.map_err(io)?;
    let mut hasher = Sha256::new();
    let mut got: u64 = 0;
    // Large pieces: each write to a `tokio::fs::File` is a trip to the blocking pool.
    let mut buf = vec![0u8; 1024 * 1024];
    loop {
        let n = match tokio::time::timeout(stall, stream.read(&mut buf)).await {
            Ok(Ok(n)) => n,
            Ok(Err(source)) => {
                return Err(TransferError::Interrupted {
                    path: path(),
                    source,
                })
            }
            Err(_) => {
                return Err(TransferError::Stalled {
                    path: path(),
                    after: stall,
                })
            }
        };
        if n == 0 {
            break;
        }
        progress();
        got += n as u64;
        // Never more bytes on disk than were offered.
        if got > header.size {
            return Err(TransferError::Size {
                path: path(),
                expected: header.size,
                got,
            });
        }
        let piece = buf.get(..n).unwrap_or_default();
        hasher.update(piece);
        file.write_all(piece).await.map_err(io)?;
    }
    file.flush().await.map_err(io)?;
    drop(file);
    if got != header.size {
        return Err(TransferError::Size {
            path: path(),
            expected: header.size,
            got,
        });
    }
    let received = hsm_protocol::digest::hex(&hasher.finalize());
    if received != header.sha256 {
        return Err(TransferError::Hash {
            path: path(),
            announced: header.sha256.clone(),
            received,
        });
    }
    tokio::fs::rename(&tmp_path, &target).await.map_err(io)?;
    // Renamed: nothing left to remove.
    let mut tmp = tmp;
    tmp.0 = None;
    Ok(target)
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
    use hsm_protocol::{Attempt, SweepId, TaskIndex, TaskRef};
    use hsm_transport::wire::write_message;
    use std::future::{ready, Ready};

    fn header(path: &str, bytes: &[u8]) -> FileHeader {
        FileHeader {
            sweep_id: SweepId("s".into()),
            task: TaskRef {
                index: TaskIndex(1),
                attempt: Attempt(1),
            },
            path: path.into(),
            size: bytes.len() as u64,
            sha256: hsm_protocol::digest::sha256_hex(bytes),
        }
    }

    async fn send(h: &FileHeader, body: &[u8], dir: &Path) -> Result<PathBuf, TransferError> {
        let (mut a, mut b) = tokio::io::duplex(1 << 16);
        let h2 = h.clone();
        let body = body.to_vec();
        let writer = tokio::spawn(async move {
            write_message(&mut a, &h2).await.unwrap();
            let _ = a.write_all(&body).await;
        });
        let dir = dir.to_path_buf();
        let arrival = receive_file(&mut b, move |_| ready(Ok(dir)), || {}, STALL).await;
        let _ = writer.await;
        arrival.outcome
    }

    const STALL: Duration = Duration::from_secs(10);

    #[tokio::test]
    async fn a_name_as_long_as_a_file_name_can_be_arrives() {
        // The temporary name once was `.<name>.partial`, 9 bytes over NAME_MAX for such a name:
        // the file was refused and the task waited for it forever.
        let dir = tempfile::tempdir().unwrap();
        let name = format!("results/{}", "n".repeat(hsm_protocol::MAX_COMPONENT_LEN));
        let got = send(&header(&name, b"long"), b"long", dir.path())
            .await
            .unwrap();
        assert_eq!(std::fs::read(got).unwrap(), b"long");
        assert_eq!(walk(dir.path()).len(), 2, "{:?}", walk(dir.path()));
    }

    #[tokio::test]
    async fn a_header_announcing_more_than_a_header_is_refused_unread() {
        // A stream that announces a 16 MiB "header" and sends 1 KiB: refused on the length
        // alone (before, each such stream held a 16 MiB buffer on the coordinator).
        let (mut a, mut b) = tokio::io::duplex(1 << 16);
        a.write_all(&(16u32 << 20).to_be_bytes()).await.unwrap();
        a.write_all(&[0u8; 1024]).await.unwrap();
        let arrival = receive_file(
            &mut b,
            |_| -> Ready<Result<PathBuf, String>> {
                panic!("a header that was never read cannot be accepted")
            },
            || {},
            STALL,
        )
        .await;
        assert!(!arrival.claimed && arrival.header.is_none());
        let err = arrival.outcome.unwrap_err().to_string();
        assert!(err.contains("malformed file header"), "{err}");
    }

    #[tokio::test]
    async fn a_refused_stream_writes_nothing_at_all() {
        let dir = tempfile::tempdir().unwrap();
        let h = header("results/deep/er/model.txt", b"x");
        let (mut a, mut b) = tokio::io::duplex(1 << 16);
        write_message(&mut a, &h).await.unwrap();
        a.write_all(b"x").await.unwrap();
        drop(a);
        let arrival =
            receive_file(&mut b, |_| ready(Err("not offered".into())), || {}, STALL).await;
        assert!(!arrival.claimed);
        assert!(matches!(
            arrival.outcome,
            Err(TransferError::Refused { .. })
        ));
        assert_eq!(arrival.header.unwrap().path, "results/deep/er/model.txt");
        assert!(walk(dir.path()).is_empty());
    }

    #[tokio::test]
    async fn a_broken_or_stalled_stream_leaves_no_partial_file() {
        let dir = tempfile::tempdir().unwrap();
        let body = vec![7u8; 100_000];
        // The sender stops mid-way and the stream fails (not a clean end).
        struct Failing(Vec<u8>);
        impl AsyncRead for Failing {
            fn poll_read(
                mut self: std::pin::Pin<&mut Self>,
                _: &mut std::task::Context<'_>,
                buf: &mut tokio::io::ReadBuf<'_>,
            ) -> std::task::Poll<std::io::Result<()>> {
                if self.0.is_empty() {
                    return std::task::Poll::Ready(Err(std::io::Error::new(
                        std::io::ErrorKind::ConnectionReset,
                        "reset by peer",
                    )));
                }
                let n = self.0.len().min(buf.remaining());
                buf.put_slice(&self.0[..n]);
                self.0.drain(..n);
                std::task::Poll::Ready(Ok(()))
            }
        }
        let mut bytes = hsm_protocol::encode(&header("results/big.bin", &body)).unwrap();
        bytes.extend_from_slice(&body[..50_000]);
        let dir_path = dir.path().to_path_buf();
        let arrival = receive_file(
            &mut Failing(bytes),
            move |_| ready(Ok(dir_path)),
            || {},
            STALL,
        )
        .await;
        assert!(arrival.claimed);
        let err = arrival.outcome.unwrap_err();
        assert!(err.is_interruption(), "{err}");
        // A stream that goes quiet.
        let (mut a, mut b) = tokio::io::duplex(1 << 16);
        write_message(&mut a, &header("results/quiet.bin", &body))
            .await
            .unwrap();
        a.write_all(&body[..10]).await.unwrap();
        let dir_path = dir.path().to_path_buf();
        let arrival = receive_file(
            &mut b,
            move |_| ready(Ok(dir_path)),
            || {},
            Duration::from_millis(200),
        )
        .await;
        assert!(matches!(
            arrival.outcome,
            Err(TransferError::Stalled { .. })
        ));
        drop(a);
        let partials: Vec<_> = walk(dir.path())
            .into_iter()
            .filter(|p| p.contains(".partial"))
            .collect();
        assert!(partials.is_empty(), "{partials:?}");
    }

    #[tokio::test]
    async fn a_verified_file_lands_in_place_and_nothing_else_remains() {
        let dir = tempfile::tempdir().unwrap();
        let body: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        let got = send(&header("results/sub/model.bin", &body), &body, dir.path())
            .await
            .unwrap();
        assert_eq!(std::fs::read(&got).unwrap(), body);
        let empty = send(&header("results/empty.txt", b""), b"", dir.path())
            .await
            .unwrap();
        assert_eq!(std::fs::read(&empty).unwrap(), b"");
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

//! A quinn socket whose datagrams travel over a child process's stdin/stdout (framed as in
//! the agent's `relay`) instead of UDP: the coordinator's end of the ssh transport, where the child
//! is `ssh HOST hsm-agent relay --to 127.0.0.1:PORT`. The QUIC connection over it is the usual
//! one (same TLS, protocol and timers); to quinn the pipe is a network path to one peer.
//!
//! The child is killed when the [`Relay`] is dropped. When it exits on its own, datagrams sent
//! after that are dropped (as a network would) and [`Relay::ended`] resolves with why, so the
//! caller can treat it as a lost connection and start a new relay.

use std::collections::VecDeque;
use std::fmt;
use std::future::Future;
use std::io::{self, IoSliceMut};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use quinn::udp::{RecvMeta, Transmit};
use tokio::io::AsyncReadExt;
use tokio::sync::{mpsc, watch};

use crate::pipe::encode_frame;

/// Chunks of frames (one per `try_send`, up to `SEGMENTS` datagrams each) waiting for the pipe.
/// About 1,000 datagrams of QUIC's size: enough to keep the pipe busy, small enough that a
/// stalled child holds little; a full queue makes quinn wait (`UdpPoller`), not drop.
const SEND_QUEUE: usize = 128;
/// Datagrams read from the pipe and not yet taken by quinn.
const RECV_QUEUE: usize = 1024;
/// Datagrams quinn may hand over at once (GSO-style, `segment_size` apart).
const SEGMENTS: usize = 10;
/// Lines of the child's stderr kept for the message when it exits.
const STDERR_LINES: usize = 5;

/// The command that starts the far end: program and arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelayCommand {
    pub program: String,
    pub args: Vec<String>,
}

impl fmt::Display for RelayCommand {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.program)?;
        for arg in &self.args {
            write!(f, " {arg}")?;
        }
        Ok(())
    }
}

/// The socket handed to quinn.
pub struct StdioSocket {
    to_pipe: mpsc::Sender<Vec<u8>>,
    from_pipe: Mutex<mpsc::Receiver<Vec<u8>>>,
    /// Every datagram from the pipe is reported as coming from here (the address dialled).
    peer: SocketAddr,
}

impl fmt::Debug for StdioSocket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StdioSocket")
            .field("peer", &self.peer)
            .finish_non_exhaustive()
    }
}

/// A running relay child: its socket for quinn, and its exit.
pub struct Relay {
    pub socket: Arc<StdioSocket>,
    ended: watch::Receiver<Option<String>>,
    pid: Option<u32>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for Relay {
    fn drop(&mut self) {
        // The supervising task owns the child (`kill_on_drop`): aborting it kills the child.
        for task in &self.tasks {
            task.abort();
        }
    }
}

impl Relay {
    /// Starts `command` with piped stdin/stdout/stderr. `peer` is the address quinn dials
    /// through it. Must be called inside a tokio runtime.
    pub fn spawn(command: &RelayCommand, peer: SocketAddr) -> io::Result<Relay> {
        // Our own pipe for its stdin, written by a thread of its own (see `pipe_writer`).
        let (stdin, stdin_writer) = io::pipe()?;
        let mut child = tokio::process::Command::new(&command.program)
            .args(&command.args)
            .stdin(stdin)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| io::Error::new(e.kind(), format!("cannot run `{command}`: {e}")))?;
        let pid = child.id();
        let stdout = child.stdout.take().expect("piped");
        let stderr = child.stderr.take().expect("piped");
        let (to_pipe, outgoing) = mpsc::channel(SEND_QUEUE);
        let (incoming, from_pipe) = mpsc::channel(RECV_QUEUE);
        let (ended_tx, ended) = watch::channel(None);
        let tail = Arc::new(Mutex::new(VecDeque::new()));
        let program = command.program.clone();
        let supervise = {
            let tail = Arc::clone(&tail);
            async move {
                let status = child.wait().await;
                // The last words on stderr arrive with the exit; give them a moment.
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                let said: Vec<String> =
                    tail.lock().expect("not poisoned").iter().cloned().collect();
                let status = match status {
                    Ok(status) => status.to_string(),
                    Err(e) => format!("cannot be waited for: {e}"),
                };
                let mut why = format!("the relay (`{program}`) ended: {status}");
                if !said.is_empty() {
                    why.push_str(&format!(" — it said: {}", said.join(" / ")));
                }
                let _ = ended_tx.send(Some(why));
            }
        };
        std::thread::Builder::new()
            .name("relay-stdin".into())
            .spawn(move || pipe_writer(outgoing, stdin_writer))?;
        let tasks = vec![
            tokio::spawn(supervise),
            tokio::spawn(pipe_reader(stdout, incoming)),
            tokio::spawn(stderr_tail(stderr, tail)),
        ];
        Ok(Relay {
            socket: Arc::new(StdioSocket {
                to_pipe,
                from_pipe: Mutex::new(from_pipe),
                peer,
            }),
            ended,
            pid,
            tasks,
        })
    }

    /// The child's process id (while it runs).
    pub fn pid(&self) -> Option<u32> {
        self.pid
    }

    /// Resolves when the child has exited, with a sentence saying how (and its last stderr).
    pub async fn ended(&self) -> String {
        let mut ended = self.ended.clone();
        let why = match ended.wait_for(Option::is_some).await {
            Ok(why) => why.clone().unwrap_or_default(),
            Err(_) => "the relay was stopped".to_string(),
        };
        why
    }

    /// A quinn endpoint (client only) over this relay.
    pub fn client_endpoint(&self) -> io::Result<quinn::Endpoint> {
        quinn::Endpoint::new_with_abstract_socket(
            quinn::EndpointConfig::default(),
            None,
            self.socket.clone(),
            Arc::new(quinn::TokioRuntime),
        )
    }
}

/// Writes queued frames to the child's stdin, flushing when the queue is empty; ends when the
/// socket is dropped or the child's end of the pipe closes.
///
/// A thread of its own, with SIGPIPE blocked in it: writing to a pipe whose reader died raises
/// SIGPIPE in the writing thread, and the coordinator keeps SIGPIPE's default action (die
/// quietly, for `sweep status | head`), so a killed `ssh` killed the whole run. Blocked, the
/// signal stays pending on this thread (and goes with it) and the write fails with EPIPE.
fn pipe_writer(mut outgoing: mpsc::Receiver<Vec<u8>>, stdin: io::PipeWriter) {
    use std::io::Write;
    block_sigpipe_in_this_thread();
    let mut pipe = io::BufWriter::with_capacity(256 * 1024, stdin);
    while let Some(chunk) = outgoing.blocking_recv() {
        if pipe.write_all(&chunk).is_err() {
            return;
        }
        while let Ok(chunk) = outgoing.try_recv() {
            if pipe.write_all(&chunk).is_err() {
                return;
            }
        }
        if pipe.flush().is_err() {
            return;
        }
    }
}

fn block_sigpipe_in_this_thread() {
    // SAFETY: `set` is a valid, initialised signal set on this stack frame; pthread_sigmask
    // changes only the calling thread's mask.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGPIPE);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
    }
}

/// Reads frames from the child's stdout and queues their datagrams for quinn; a full queue
/// makes it wait (the relay then blocks, and the far side's UDP buffer drops what overflows).
async fn pipe_reader(stdout: tokio::process::ChildStdout, incoming: mpsc::Sender<Vec<u8>>) {
    let mut pipe = tokio::io::BufReader::with_capacity(256 * 1024, stdout);
    loop {
        let Ok(len) = pipe.read_u16().await else {
            return; // the pipe ended (or broke mid-frame): the child is going away
        };
        let mut datagram = vec![0u8; len as usize];
        if pipe.read_exact(&mut datagram).await.is_err() {
            return;
        }
        if incoming.send(datagram).await.is_err() {
            return;
        }
    }
}

/// Keeps the last lines of the child's stderr (ssh's reason for giving up) and logs them.
async fn stderr_tail(stderr: tokio::process::ChildStderr, tail: Arc<Mutex<VecDeque<String>>>) {
    use tokio::io::AsyncBufReadExt;
    let mut lines = tokio::io::BufReader::new(stderr).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        let line: String = line.chars().filter(|c| !c.is_control()).take(300).collect();
        if line.trim().is_empty() {
            continue;
        }
        tracing::debug!(line = %line, "relay stderr");
        let mut tail = tail.lock().expect("not poisoned");
        if tail.len() == STDERR_LINES {
            tail.pop_front();
        }
        tail.push_back(line);
    }
}

impl quinn::AsyncUdpSocket for StdioSocket {
    fn create_io_poller(self: Arc<Self>) -> Pin<Box<dyn quinn::UdpPoller>> {
        Box::pin(Writable {
            to_pipe: self.to_pipe.clone(),
            waiting: Mutex::new(None),
        })
    }

    fn try_send(&self, transmit: &Transmit) -> io::Result<()> {
        let segment = transmit
            .segment_size
            .unwrap_or(transmit.contents.len())
            .max(1);
        let mut chunk = Vec::with_capacity(transmit.contents.len() + 2 * SEGMENTS);
        for datagram in transmit.contents.chunks(segment) {
            encode_frame(datagram, &mut chunk)?;
        }
        match self.to_pipe.try_send(chunk) {
            Ok(()) => Ok(()),
            Err(mpsc::error::TrySendError::Full(_)) => Err(io::ErrorKind::WouldBlock.into()),
            // The child is gone: lost, as on a network; the caller sees the relay end.
            Err(mpsc::error::TrySendError::Closed(_)) => Ok(()),
        }
    }

    fn poll_recv(
        &self,
        cx: &mut Context,
        bufs: &mut [IoSliceMut<'_>],
        meta: &mut [RecvMeta],
    ) -> Poll<io::Result<usize>> {
        let mut from_pipe = self.from_pipe.lock().expect("not poisoned");
        let mut filled = 0;
        while filled < bufs.len().min(meta.len()) {
            let datagram = if filled == 0 {
                match from_pipe.poll_recv(cx) {
                    Poll::Ready(Some(datagram)) => datagram,
                    // The pipe ended: nothing will come any more (the relay's end is reported
                    // by `Relay::ended`), so never ready.
                    Poll::Ready(None) | Poll::Pending => return Poll::Pending,
                }
            } else {
                match from_pipe.try_recv() {
                    Ok(datagram) => datagram,
                    Err(_) => break,
                }
            };
            let buf = &mut bufs[filled];
            if datagram.len() > buf.len() {
                continue; // larger than quinn takes: dropped, as a socket would truncate
            }
            buf[..datagram.len()].copy_from_slice(&datagram);
            meta[filled] = RecvMeta {
                addr: self.peer,
                len: datagram.len(),
                stride: datagram.len(),
                ..RecvMeta::default()
            };
            filled += 1;
        }
        if filled == 0 {
            // Only oversized datagrams: look again (the waker is registered by then).
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        Poll::Ready(Ok(filled))
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        // No real address: one of the peer's family (quinn only asks whether it is IPv6).
        Ok(if self.peer.is_ipv6() {
            "[::1]:0".parse().expect("literal")
        } else {
            "127.0.0.1:0".parse().expect("literal")
        })
    }

    fn max_transmit_segments(&self) -> usize {
        SEGMENTS
    }

    fn may_fragment(&self) -> bool {
        // A pipe never fragments, and the far hop is the agent host's loopback: path MTU
        // discovery may grow packets past the 1,200-byte minimum.
        false
    }
}

/// Waits for room in the send queue.
struct Writable {
    to_pipe: mpsc::Sender<Vec<u8>>,
    #[allow(clippy::type_complexity)]
    waiting: Mutex<Option<Pin<Box<dyn Future<Output = ()> + Send>>>>,
}

impl fmt::Debug for Writable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Writable").finish_non_exhaustive()
    }
}

impl quinn::UdpPoller for Writable {
    fn poll_writable(self: Pin<&mut Self>, cx: &mut Context) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let waiting = this.waiting.get_mut().expect("not poisoned");
        let future = waiting.get_or_insert_with(|| {
            let to_pipe = this.to_pipe.clone();
            // Room for one chunk (given back at once: `try_send` takes it), or the child gone,
            // in which case sends succeed by dropping.
            Box::pin(async move {
                let _ = to_pipe.reserve().await;
            })
        });
        match future.as_mut().poll(cx) {
            Poll::Ready(()) => {
                *waiting = None;
                Poll::Ready(Ok(()))
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

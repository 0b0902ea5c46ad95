//! The agent daemon's network side: a QUIC server that admits only authorized coordinators
//! (refused in the TLS handshake), speaks the hsm protocol on one control stream per connection,
//! answers pings and reports its health every few seconds. Running tasks over the wire is built
//! on top of this session loop; until then task messages are answered with an error.

use crate::identity::{AuthorizedKeys, Identity};
use crate::tls::{self, TransportOptions};
use crate::wire::{read_frame, write_message};
use anyhow::Context as _;
use hsm_protocol::{
    decode, negotiate, AgentInfo, ErrorMsg, FromAgent, HeartbeatMsg, Hello, HelloReply, PongMsg,
    ToAgent, MAX_FRAME,
};
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How the daemon runs.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    pub listen: SocketAddr,
    pub state_dir: PathBuf,
    pub work_dir: PathBuf,
    pub slots: u32,
    /// The agent's name in `Welcome` (the host name unless set).
    pub name: String,
    pub heartbeat_every: Duration,
    pub transport: TransportOptions,
}

/// A bound, ready server: its address is known before `run` starts accepting.
pub struct Server {
    endpoint: quinn::Endpoint,
    options: ServeOptions,
    fingerprint: String,
}

impl Server {
    /// Loads the identity, binds the UDP port.
    pub fn bind(options: ServeOptions) -> anyhow::Result<Server> {
        let identity = Identity::load(&options.state_dir)?;
        let checker = AuthorizedKeys::checker(&options.state_dir);
        let config = tls::server_config(&identity, checker, options.transport)?;
        let endpoint = tls::server_endpoint(options.listen, config)?;
        std::fs::create_dir_all(&options.work_dir)
            .with_context(|| format!("creating work dir {}", options.work_dir.display()))?;
        Ok(Server {
            endpoint,
            fingerprint: identity.fingerprint(),
            options,
        })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.endpoint.local_addr()
    }

    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    /// Accepts connections until `shutdown` resolves, then closes every connection and waits
    /// (bounded) for the peers to be told.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                incoming = self.endpoint.accept() => {
                    let Some(incoming) = incoming else { break };
                    let options = self.options.clone();
                    tokio::spawn(async move {
                        let remote = incoming.remote_address();
                        match incoming.await {
                            Ok(conn) => {
                                let peer = tls::peer_fingerprint(&conn).unwrap_or_default();
                                tracing::info!(%remote, coordinator = %peer, "coordinator connected");
                                if let Err(e) = session(conn, &options).await {
                                    tracing::info!(%remote, error = %format!("{e:#}"), "session ended");
                                }
                            }
                            Err(e) => tracing::warn!("{}", tls::explain_accept_error(&e, remote)),
                        }
                    });
                }
                _ = &mut shutdown => break,
            }
        }
        self.endpoint.close(0u32.into(), b"agent shutting down");
        let _ = tokio::time::timeout(Duration::from_secs(3), self.endpoint.wait_idle()).await;
        Ok(())
    }
}

/// One coordinator connection: the first bidirectional stream is the control stream.
async fn session(conn: quinn::Connection, options: &ServeOptions) -> anyhow::Result<()> {
    let (mut send, mut recv) = conn
        .accept_bi()
        .await
        .context("waiting for the control stream")?;
    let hello_frame = read_frame(&mut recv, MAX_FRAME)
        .await?
        .context("the coordinator closed the control stream before saying hello")?;
    let hello: Hello = decode(&hello_frame).context("malformed hello")?;
    let info = AgentInfo {
        agent_version: env!("CARGO_PKG_VERSION").to_string(),
        agent_name: options.name.clone(),
        slots: options.slots,
        backend: "process".into(),
        running: Vec::new(),
    };
    let welcome = match negotiate(&hello, info) {
        Ok(welcome) => welcome,
        Err(reject) => {
            tracing::warn!(reason = %reject.reason, "refused a coordinator speaking another protocol");
            write_message(&mut send, &HelloReply::Reject(reject)).await?;
            let _ = send.finish();
            // Let the reply reach the coordinator before the connection goes away.
            let _ = tokio::time::timeout(Duration::from_secs(2), conn.closed()).await;
            return Ok(());
        }
    };
    write_message(&mut send, &HelloReply::Welcome(welcome)).await?;
    // A first heartbeat right away, so `agent ping` shows health without waiting.
    send_frame(&mut send, &FromAgent::Heartbeat(health(options))).await?;
    let mut heartbeat = tokio::time::interval(options.heartbeat_every);
    heartbeat.tick().await;
    loop {
        tokio::select! {
            frame = read_frame(&mut recv, MAX_FRAME) => {
                let Some(frame) = frame? else { return Ok(()) };
                let reply = match decode::<ToAgent>(&frame) {
                    Ok(ToAgent::Ping(ping)) => FromAgent::Pong(PongMsg { nonce: ping.nonce }),
                    Ok(_) => FromAgent::Error(ErrorMsg {
                        message: "this agent does not run tasks over the network yet".into(),
                    }),
                    Err(e) => {
                        // A peer that sends garbage after authenticating is broken: say why, close.
                        let _ = send_frame(&mut send, &FromAgent::Error(ErrorMsg {
                            message: format!("malformed message: {e}"),
                        })).await;
                        anyhow::bail!("malformed message from the coordinator: {e}");
                    }
                };
                send_frame(&mut send, &reply).await?;
            }
            _ = heartbeat.tick() => send_frame(&mut send, &FromAgent::Heartbeat(health(options))).await?,
        }
    }
}

async fn send_frame(send: &mut quinn::SendStream, msg: &FromAgent) -> anyhow::Result<()> {
    write_message(send, msg).await?;
    Ok(())
}

/// The agent's health as reported in heartbeats.
pub fn health(options: &ServeOptions) -> HeartbeatMsg {
    HeartbeatMsg {
        load1: load_average().unwrap_or(0.0),
        free_mem_bytes: available_memory().unwrap_or(0),
        free_disk_bytes: free_disk(&options.work_dir).unwrap_or(0),
        running: 0,
        slots: options.slots,
    }
}

fn load_average() -> Option<f32> {
    parse_loadavg(&std::fs::read_to_string("/proc/loadavg").ok()?)
}

/// First field of /proc/loadavg.
fn parse_loadavg(text: &str) -> Option<f32> {
    text.split_whitespace().next()?.parse().ok()
}

fn available_memory() -> Option<u64> {
    parse_meminfo_available(&std::fs::read_to_string("/proc/meminfo").ok()?)
}

/// `MemAvailable:` of /proc/meminfo, in bytes.
fn parse_meminfo_available(text: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    kib.checked_mul(1024)
}

fn free_disk(dir: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    // SAFETY: statvfs fills the zeroed struct we own from a valid C string.
    let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(path.as_ptr(), &mut stat) } != 0 {
        return None;
    }
    (stat.f_bavail as u64).checked_mul(stat.f_frsize as u64)
}

/// This host's name, for `Welcome.agent_name`.
pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "hsm-agent".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_files_parse() {
        assert_eq!(parse_loadavg("0.52 0.31 0.20 1/234 5678\n"), Some(0.52));
        assert_eq!(parse_loadavg(""), None);
        let meminfo = "MemTotal:       24000000 kB\nMemFree:  100 kB\nMemAvailable:   2048 kB\n";
        assert_eq!(parse_meminfo_available(meminfo), Some(2048 * 1024));
        assert_eq!(parse_meminfo_available("MemTotal: 1 kB\n"), None);
    }

    #[test]
    fn health_reads_this_machine() {
        let dir = tempfile::tempdir().unwrap();
        let options = ServeOptions {
            listen: "127.0.0.1:0".parse().unwrap(),
            state_dir: dir.path().into(),
            work_dir: dir.path().into(),
            slots: 3,
            name: "t".into(),
            heartbeat_every: Duration::from_secs(1),
            transport: TransportOptions::default(),
        };
        let h = health(&options);
        assert_eq!(h.slots, 3);
        assert!(h.free_mem_bytes > 0 && h.free_disk_bytes > 0, "{h:?}");
    }
}

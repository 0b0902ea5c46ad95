//! The agent source's connection task: dials the agent (over the source's transport, pinned
//! fingerprint), says hello (with the pre-flight request), pumps frames both ways, accepts result
//! file streams once the actor's link claimed them, and reconnects with capped backoff until the
//! actor goes.

use super::*;

/// Reads the agent's frames and hands them to the actor until the stream fails; returns why.
async fn read_frames<R: tokio::io::AsyncRead + Unpin>(
    mut recv: R,
    actor: actix::Addr<AgentSource>,
    name: String,
) -> String {
    loop {
        let frame = match read_frame(&mut recv, MAX_FRAME).await {
            Ok(Some(frame)) => frame,
            Ok(None) => return format!("{name} closed the control stream"),
            Err(e) => return format!("connection to {name} lost: {e}"),
        };
        match hsm_protocol::decode::<FromAgent>(&frame) {
            Ok(msg) => actor.do_send(Incoming::Frame(msg)),
            Err(e) => return format!("malformed message from {name}: {e}"),
        }
    }
}

/// Aborts the task when dropped (a session's reader must not outlive the session).
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Why a session ended.
enum SessionError {
    /// Worth dialling again (unreachable, reset, the connection dropped).
    Retry(String),
    /// One side refused the other; dialling again cannot help.
    Refused(String),
}

impl From<String> for SessionError {
    fn from(why: String) -> Self {
        SessionError::Retry(why)
    }
}

impl From<&str> for SessionError {
    fn from(why: &str) -> Self {
        SessionError::Retry(why.to_string())
    }
}

/// What the connection task needs.
pub(super) struct Dial {
    pub(super) name: String,
    pub(super) address: String,
    pub(super) fingerprint: String,
    pub(super) sweep_id: String,
    /// Where received result files go (`tasks/<task>/`).
    pub(super) paths: SweepPaths,
    /// The link's clock (see `AgentSource::epoch`).
    pub(super) epoch: Instant,
    /// When result bytes last arrived, on that clock (see `AgentSource::file_progress`).
    pub(super) file_progress: Arc<AtomicU64>,
    /// Drop the connection now (see `AgentSource::kick`).
    pub(super) kick: Arc<Notify>,
    /// Asked in the `Hello`; problems found refuse the source for this run.
    pub(super) preflight: Option<hsm_protocol::PreflightMsg>,
    pub(super) transport: crate::config::AgentTransport,
    /// Compared in the `Hello` (and pushed) before the first session goes up.
    pub(super) sync: Option<crate::sync::SourceSync>,
    /// The source's `project_dir` there (what the sync compares).
    pub(super) project_dir: Option<String>,
}

/// Connection liveness: QUIC keep-alives every 2 s, the connection declared dead after 10 s of
/// silence (a killed agent process does not close its side). Giving up on the agent's *tasks* is
/// a separate, longer decision (`defaults.agent_grace`).
const SESSION_TRANSPORT: TransportOptions = TransportOptions {
    idle_timeout: Duration::from_secs(10),
    keep_alive: Duration::from_secs(2),
};

const BACKOFF_START: Duration = Duration::from_millis(250);
const BACKOFF_MAX: Duration = Duration::from_secs(10);

/// Dials, handshakes and pumps frames both ways until the actor goes away; reconnects with
/// capped exponential backoff. Messages queued while disconnected are sent after reconnecting;
/// the agent replays the events this coordinator has not acknowledged.
pub(super) async fn connection(
    mut dial: Dial,
    actor: actix::Addr<AgentSource>,
    mut outbox: mpsc::UnboundedReceiver<(u64, ToAgent)>,
) {
    let identity = match crate::home::coordinator_identity() {
        Ok(identity) => identity,
        Err(e) => {
            actor.do_send(Incoming::Down {
                why: format!("no coordinator identity: {e:#}"),
            });
            return;
        }
    };
    let mut backoff = BACKOFF_START;
    let mut pending: Option<(u64, ToAgent)> = None;
    // Sessions welcomed so far; messages are tagged with the one they were meant for.
    let mut sessions = 0u64;
    // What `transport: auto` found working, kept for the reconnects of this run.
    let mut chosen = None;
    loop {
        if !actor.connected() {
            return;
        }
        let before = sessions;
        match session(
            &dial,
            &identity,
            &mut chosen,
            &actor,
            &mut outbox,
            &mut pending,
            &mut sessions,
        )
        .await
        {
            Ok(()) => return, // the actor is gone
            Err(SessionError::Refused(why)) => {
                actor.do_send(Incoming::Refused { why });
                return;
            }
            Err(SessionError::Retry(why)) => {
                actor.do_send(Incoming::Down { why });
                // A session that got going ends the run of failures: the agent restarted or
                // the network blinked, and coming back quickly is what matters.
                if sessions != before {
                    backoff = BACKOFF_START;
                    // Checked once, before the first task: a later check failing (say, disk
                    // filling up) would throw out tasks that run there; the heartbeat's disk
                    // check pauses the source instead.
                    dial.preflight = None;
                    dial.sync = None;
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(BACKOFF_MAX);
            }
        }
    }
}

/// What the agent's comparison of the project means for this source: nothing to do, a push
/// (before any task, so the first tasks run the new files), a warning (`--allow-remote-drift`)
/// or a refusal. Returns the note for the source's status line.
async fn settle_sync(
    dial: &Dial,
    conn: &quinn::Connection,
    sync: &crate::sync::SourceSync,
    project_dir: &str,
    report: hsm_protocol::SyncReport,
) -> Result<String, SessionError> {
    use crate::config::SyncMode;
    use crate::sync::PushError;
    if let Some(error) = report.error {
        let why = format!(
            "{} ({}): the project could not be compared there: {}",
            dial.name,
            dial.address,
            hsm_protocol::display_safe(&error)
        );
        if sync.allow_drift {
            return Ok(format!(", project not compared ({why})"));
        }
        conn.close(0u32.into(), b"project sync failed");
        return Err(SessionError::Refused(why));
    }
    let differs = crate::sync::relevant(&sync.manifest, &report.differs);
    if differs.is_empty() {
        return Ok(String::new());
    }
    match sync.mode {
        SyncMode::Push => {
            match crate::sync::push(conn, &sync.manifest, project_dir, &differs).await {
                Ok(pushed) => {
                    tracing::info!(agent = %dial.name, files = pushed.files, bytes = pushed.bytes, "project pushed");
                    Ok(crate::sync::pushed_note(
                        pushed.files,
                        pushed.bytes,
                        pushed.elapsed,
                    ))
                }
                Err(PushError::Connection(why)) => Err(SessionError::Retry(why)),
                Err(PushError::Refused(why)) => {
                    conn.close(0u32.into(), b"project push failed");
                    Err(SessionError::Refused(format!(
                        "{} ({}): pushing the project to {} failed: {why}",
                        dial.name,
                        dial.address,
                        hsm_protocol::display_safe(project_dir)
                    )))
                }
            }
        }
        _ if sync.allow_drift => Ok(format!(
            ", project differs (--allow-remote-drift): {}",
            crate::sync::describe(&differs, 5)
        )),
        _ => {
            conn.close(0u32.into(), b"project differs");
            Err(SessionError::Refused(crate::sync::drift_refusal(
                &dial.name,
                &dial.address,
                project_dir,
                &differs,
                sync.set_on_source,
            )))
        }
    }
}

async fn session(
    dial: &Dial,
    identity: &Identity,
    chosen: &mut Option<crate::config::TransportMode>,
    actor: &actix::Addr<AgentSource>,
    outbox: &mut mpsc::UnboundedReceiver<(u64, ToAgent)>,
    pending: &mut Option<(u64, ToAgent)>,
    sessions: &mut u64,
) -> Result<(), SessionError> {
    use crate::transport::{self, DialFailure};
    let target = transport::Target {
        address: &dial.address,
        fingerprint: &dial.fingerprint,
        transport: &dial.transport,
        options: SESSION_TRANSPORT,
        timeout: Duration::from_secs(15),
    };
    // Dropped when the session ends: an ssh relay child is killed with it, and started anew by
    // the next session (after the reconnect backoff).
    let dialled =
        transport::dial(&target, identity, chosen)
            .await
            .map_err(|failure| match failure {
                DialFailure::Retry(why) => SessionError::Retry(why),
                DialFailure::Refused(why) => SessionError::Refused(why),
            })?;
    let (endpoint, conn) = (&dialled.endpoint, &dialled.conn);
    let (mut send, mut recv) = conn.open_bi().await.map_err(|e| e.to_string())?;
    let mut hello = Hello::new(env!("CARGO_PKG_VERSION"));
    hello.preflight = dial.preflight.clone();
    let sync_dir = dial.project_dir.clone().unwrap_or_default();
    hello.sync = dial.sync.as_ref().map(|sync| {
        sync.manifest
            .request(&sync_dir, sync.mode == crate::config::SyncMode::Push)
    });
    write_message(&mut send, &hello)
        .await
        .map_err(|e| e.to_string())?;
    let reply = read_frame(&mut recv, MAX_FRAME)
        .await
        .map_err(|e| e.to_string())?
        .ok_or("the agent closed the connection without answering the hello")?;
    match hsm_protocol::decode::<HelloReply>(&reply).map_err(|e| e.to_string())? {
        HelloReply::Welcome(welcome) => {
            match (&dial.preflight, &welcome.preflight) {
                (Some(_), Some(problems)) if !problems.is_empty() => {
                    let why = crate::preflight::explain(&dial.name, &dial.address, problems);
                    conn.close(0u32.into(), b"pre-flight checks failed");
                    return Err(SessionError::Refused(why));
                }
                (Some(_), None) => {
                    tracing::info!(agent = %dial.name, "the agent predates pre-flight checks: not checked");
                }
                _ => {}
            }
            let synced = match (&dial.sync, welcome.sync) {
                (Some(sync), Some(report)) => {
                    settle_sync(dial, conn, sync, &sync_dir, report).await?
                }
                (Some(_), None) => {
                    tracing::info!(agent = %dial.name, "the agent predates project sync: not compared");
                    ", project not compared (the agent predates project sync)".to_string()
                }
                _ => String::new(),
            };
            *sessions += 1;
            // The agent's strings are shown to the user: escaped, never raw (see display_safe).
            actor.do_send(Incoming::Up {
                session: *sessions,
                slots: welcome.slots,
                agent: hsm_protocol::display_safe(&welcome.agent_name).into_owned(),
                rtt_ms: conn.rtt().as_millis().min(u128::from(u32::MAX)) as u32,
                work_dir: hsm_protocol::display_safe(&welcome.work_dir).into_owned(),
                via: dialled.via(&dial.transport),
                synced,
            })
        }
        HelloReply::Reject(reject) => {
            return Err(SessionError::Refused(
                hsm_protocol::display_safe(&reject.to_string()).into_owned(),
            ))
        }
    }
    let this = *sessions;
    let sweep_id = dial.sweep_id.clone();
    let paths = dial.paths.clone();
    // Frames are read by their own task: `read_frame` is not cancel-safe (a frame half read when
    // another branch of a `select!` wins would be lost and the stream read out of step — seen
    // as a "frame of 1.9 GB" under a burst of 2,000 launches).
    let mut reader = AbortOnDrop(tokio::spawn(read_frames(
        recv,
        actor.clone(),
        dial.name.clone(),
    )));
    loop {
        // Meant for an earlier session: it went down with it (the link says again what
        // still matters when a session comes up).
        if pending
            .as_ref()
            .is_some_and(|(session, _)| *session != this)
        {
            *pending = None;
        }
        if let Some((session, msg)) = pending.take() {
            if let Err(e) = write_message(&mut send, &msg).await {
                *pending = Some((session, msg));
                return Err(format!("connection to {} lost: {e}", dial.name).into());
            }
        }
        tokio::select! {
            msg = outbox.recv() => match msg {
                Some(msg) => *pending = Some(msg),
                None => {
                    // Let the agent read everything sent (the last acknowledgements and
                    // `ResultsDone`s) before closing: a close drops data still in flight.
                    let _ = send.finish();
                    let _ = tokio::time::timeout(Duration::from_secs(2), send.stopped()).await;
                    conn.close(0u32.into(), b"sweep done");
                    endpoint.wait_idle().await;
                    return Ok(());
                }
            },
            ended = &mut reader.0 => {
                return Err(ended.unwrap_or_else(|e| format!("reading from {} failed: {e}", dial.name)).into());
            }
            // A relay child that died is a dropped connection: dial again (a new child).
            why = dialled.relay_ended() => {
                return Err(format!("connection to {} lost: {why}", dial.name).into());
            }
            () = dial.kick.notified() => {
                conn.close(1u32.into(), b"protocol error");
                return Err(format!("{} broke the protocol (an event out of sequence); reconnecting", dial.name).into());
            }
            stream = conn.accept_uni() => {
                let mut stream = stream.map_err(|e| format!("connection to {} lost: {e}", dial.name))?;
                let actor = actor.clone();
                let sweep_id = sweep_id.clone();
                let paths = paths.clone();
                let epoch = dial.epoch;
                let file_progress = dial.file_progress.clone();
                tokio::spawn(async move {
                    // A file stream is claimed against what the attempt offered (the actor's
                    // link decides) before anything is written.
                    let accept = |h: &FileHeader| {
                        let h = h.clone();
                        let actor = actor.clone();
                        async move {
                            if h.sweep_id.as_str() != sweep_id {
                                return Err(format!("it is of sweep {:?}, not this one", h.sweep_id.as_str()));
                            }
                            let key = TaskKey {
                                index: h.task.index.0,
                                attempt: h.task.attempt.0,
                            };
                            let claim = ClaimFile {
                                key,
                                path: h.path,
                                size: h.size,
                                sha256: h.sha256,
                            };
                            match actor.send(claim).await {
                                Ok(claimed) => claimed.map_err(|e| e.to_string())?,
                                Err(_) => return Err("the run is ending".to_string()),
                            }
                            // A compact sweep's task may have no directory yet.
                            let dir = paths.task_dir(key.index);
                            tokio::fs::create_dir_all(&dir).await.map_err(|e| {
                                format!("cannot create {}: {e}", dir.display())
                            })?;
                            Ok(dir)
                        }
                    };
                    let progress = || {
                        let now = epoch.elapsed().as_millis() as u64;
                        file_progress.fetch_max(now, Ordering::Relaxed);
                    };
                    let arrival = receive_file(&mut stream, accept, progress, RESULT_STALL).await;
                    actor.do_send(Incoming::File(arrival));
                });
            }
        }
    }
}

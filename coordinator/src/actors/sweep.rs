//! The sweep actor: the only owner of a run's `SweepCore`. It turns source events into core
//! inputs, carries the core's commands to the source actors, and batches the core's changes to
//! the store actor.

use super::agent::{AgentSetup, AgentSource, AttachTask, SendAcks, Shutdown, StealTask};
use super::local::{CancelTask, LaunchTask, LocalSource, LocalSourceSetup};
use super::store::{CancelUnstarted, Close, Persist, PollControl, StoreActor, WriteViews};
use super::{SourceEvent, SourceStatus, TaskReport};
use crate::core::command::{build_argv, command_env, CommandSpec, LaunchContext};
use crate::core::drive::{self, Order, Route, WriteAhead};
use crate::core::failure::{self, StopCause};
use crate::core::link::LinkStatus;
use crate::core::state::{Command, Counts, ExitKind, SweepCore, TaskStatus};
use crate::layout::{self, SweepPaths};
use crate::prefetch::{Prefetch, PrefetchPlan, PrefetchThread};
use crate::progress::Progress;
use actix::{
    Actor, ActorContext, ActorFutureExt, Addr, AsyncContext, Context, Handler, Message, WrapFuture,
};
use hsm_exec::process::TaskKey;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How often changes are flushed to the store (one transaction per flush).
const FLUSH_EVERY: Duration = Duration::from_millis(50);
/// How often the control table (`sweep cancel` from another terminal) is read.
const POLL_CONTROL_EVERY: Duration = Duration::from_millis(300);
/// How often the run looks for `sweep cancel`'s request file (a `stat`).
const CANCEL_REQUEST_EVERY: Duration = Duration::from_millis(50);
/// How often `task_mapping.yaml` is rewritten while running.
const VIEWS_EVERY: Duration = Duration::from_secs(3);
/// How often dispatch runs without an event to trigger it: a job pending in a batch queue
/// becomes movable to an idle source by time alone (`defaults.steal_after`).
const DISPATCH_TICK: Duration = Duration::from_secs(1);

/// A source of this run.
#[derive(Debug, Clone)]
pub struct SourceSpec {
    pub name: String,
    /// For an agent without configured slots: what it reports when it connects.
    pub slots: usize,
    pub kind: SourceSpecKind,
    /// Not asked for this run: only here to finish attempts it holds from a run whose
    /// coordinator died. It gets no new work.
    pub attach_only: bool,
}

// A handful per run, built once: the size difference does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone)]
pub enum SourceSpecKind {
    Local,
    Agent {
        address: String,
        fingerprint: String,
        /// Where the project lives on the agent's host (tasks run there).
        project_dir: Option<String>,
        /// The interpreter on the agent's host; replaces `command.python` for its tasks.
        python: String,
        /// Slots were configured; otherwise the agent's own count is used.
        slots_configured: bool,
        /// Through the agent's batch scheduler (Slurm/PBS) rather than as processes.
        hpc: Option<hsm_protocol::HpcMsg>,
        /// Its own `conda_env`, `env`, `pre_script` over the project's.
        setup: crate::core::command::SourceSetup,
        /// UDP, ssh or auto.
        transport: crate::config::AgentTransport,
        /// Its copy of the project compared (and pushed) before its first task; `None`: off.
        sync: Option<crate::sync::SourceSync>,
        /// The configured `work_dir` on its host, checked against what the agent reports.
        work_dir: Option<String>,
    },
    /// This host's batch scheduler, driven from this process (a coordinator on a login node).
    Scheduler {
        hpc: hsm_protocol::HpcMsg,
        poll: Duration,
    },
}

/// The actor behind a source.
enum SourceHandle {
    Local(Addr<LocalSource>),
    Agent(Addr<AgentSource>),
}

/// What the sweep actor tells a source (for an agent source, held until the store has written
/// the changes the core made along with it: `drive::WriteAhead`).
enum SourceOrder {
    Launch(LaunchTask),
    Cancel(TaskKey),
    Steal(TaskKey),
}

impl SourceOrder {
    fn send(self, addr: &Addr<AgentSource>) {
        match self {
            SourceOrder::Launch(msg) => addr.do_send(msg),
            SourceOrder::Cancel(key) => addr.do_send(CancelTask(key)),
            SourceOrder::Steal(key) => addr.do_send(StealTask(key)),
        }
    }
}

/// A future that is ready at once.
fn futures_ready() -> std::pin::Pin<Box<dyn std::future::Future<Output = ()>>> {
    Box::pin(std::future::ready(()))
}

/// What the sweep actor needs to launch tasks.
pub struct RunContext {
    pub sweep_id: String,
    pub paths: SweepPaths,
    pub project_root: PathBuf,
    pub command: CommandSpec,
    pub script_override: Option<String>,
    pub group: String,
    /// The tasks' parameters, read from sweep.db when a task is prepared or launched.
    pub params: Arc<crate::store::TaskParams>,
    /// Tasks of this run that start their first attempt, in dispatch order: their directories
    /// are prepared ahead of time.
    pub prefetch: Vec<u64>,
    pub sources: Vec<SourceSpec>,
    pub timeout: Option<Duration>,
    pub kill_grace: Duration,
    /// How long an unreachable agent's tasks wait for it.
    pub agent_grace: Duration,
    /// Agents reporting less free disk get no new work.
    pub min_free_disk: u64,
    /// The run stops when no source has answered for this long since it started.
    pub connect_timeout: Duration,
}

/// Why a run stopped before its tasks were done, with what to do.
#[derive(Debug, Clone)]
pub struct Stopped {
    pub message: String,
    /// The fix is the user's (a fingerprint, an authorization): exit 2, not 1.
    pub user_fix: bool,
}

/// How a run ended.
#[derive(Debug, Clone)]
pub struct RunSummary {
    /// Counts over every task of the sweep at the end.
    pub counts: Counts,
    /// Ctrl-C stopped it.
    pub interrupted: bool,
    /// `sweep cancel` stopped it.
    pub cancelled: bool,
    /// The state could not be written; the run was stopped.
    pub failure: Option<String>,
    /// No source could run its tasks; the run was stopped with them left pending.
    pub stopped: Option<Stopped>,
    pub elapsed: Duration,
}

pub struct SweepActor {
    core: SweepCore,
    run: RunContext,
    store: Addr<StoreActor>,
    sources: Vec<SourceHandle>,
    progress: Progress,
    done_tx: Option<tokio::sync::oneshot::Sender<RunSummary>>,
    interrupted: bool,
    cancelled: bool,
    failure: Option<String>,
    stopped: Option<Stopped>,
    /// Per source: it has answered (an agent connected once; local sources at once).
    answered: Vec<bool>,
    /// Per source: why it refused or was refused, which puts it out of the run for good.
    refused: Vec<Option<String>>,
    finishing: bool,
    views_dirty: bool,
    /// Orders for agent sources and acknowledgements of their events since the last write,
    /// in order: sent once the changes made with them are written.
    held: WriteAhead<SourceOrder>,
    /// Resolves once the last flush's orders and acknowledgements were handed over.
    sent_before: Option<tokio::sync::oneshot::Receiver<()>>,
    started: Instant,
    /// Stops the directory preparer when the actor goes away.
    prefetch_thread: Option<PrefetchThread>,
    /// Stderr tails of attempts reported failed since the last flush, by (task, attempt).
    tails: HashMap<(u64, u32), String>,
    /// Per source: for an agent, the run's command with the agent's own interpreter (the
    /// coordinator's interpreter path means nothing on another host); `None` for the others.
    agent_commands: Vec<Option<CommandSpec>>,
    /// `logs/sources/NAME.log`: each source's news, written at each flush.
    source_logs: crate::run_log::SourceLogs,
}

pub use hsm_protocol::now_ms;

impl SweepActor {
    pub fn new(
        core: SweepCore,
        run: RunContext,
        store: Addr<StoreActor>,
        progress: Progress,
        done_tx: tokio::sync::oneshot::Sender<RunSummary>,
    ) -> Self {
        let agent_commands = run
            .sources
            .iter()
            .map(|spec| match &spec.kind {
                SourceSpecKind::Agent { python, setup, .. } => {
                    Some(run.command.for_source(Some(python), setup))
                }
                _ => None,
            })
            .collect();
        SweepActor {
            agent_commands,
            source_logs: crate::run_log::SourceLogs::new(run.paths.clone()),
            core,
            run,
            store,
            sources: Vec::new(),
            progress,
            done_tx: Some(done_tx),
            interrupted: false,
            cancelled: false,
            failure: None,
            stopped: None,
            answered: Vec::new(),
            refused: Vec::new(),
            finishing: false,
            views_dirty: true,
            held: WriteAhead::default(),
            sent_before: None,
            started: Instant::now(),
            prefetch_thread: None,
            tails: HashMap::new(),
        }
    }

    /// Why this run stops its tasks, if it does.
    fn stop_cause(&self) -> Option<StopCause> {
        if self.cancelled {
            Some(StopCause::Cancel)
        } else if self.failure.is_some() {
            Some(StopCause::StoreFailure)
        } else if self.interrupted {
            Some(StopCause::Interrupt)
        } else if self.stopped.is_some() {
            Some(StopCause::NoSource)
        } else {
            None
        }
    }

    /// A failure's reason with the line of its stderr that says why, the tail kept for the
    /// store. Every source's task writes (or streams) its stderr into the task directory's
    /// `stderr.log`, and an agent's attempt is reported finished only after its output arrived,
    /// so one bounded read of the local file serves local, agent and Slurm/PBS tasks alike. Only
    /// for the task's current attempt: a stale report's file may be a newer attempt's.
    fn explain(&mut self, index: u64, attempt: u32, exit: ExitKind) -> ExitKind {
        let ExitKind::Failure { exit_code, reason } = exit else {
            return exit;
        };
        let current = self.core.task(index).is_some_and(|t| {
            t.attempt == attempt && matches!(t.status, TaskStatus::Queued | TaskStatus::Running)
        });
        let path = self.run.paths.task_dir(index).join("stderr.log");
        let tail = if current {
            match layout::read_end(&path, failure::TAIL_MAX_BYTES) {
                Ok((end, cut)) => failure::stderr_tail(&end, cut),
                Err(e) => {
                    tracing::debug!(path = %path.display(), error = %e, "cannot read stderr");
                    None
                }
            }
        } else {
            None
        };
        // A process that exited with a code had its say on stderr. One stopped from outside (a
        // timeout, a signal, a lost transfer) did not: its reason is the whole story, and its
        // tail is kept only for looking into.
        let line = tail
            .as_deref()
            .filter(|_| exit_code.is_some())
            .and_then(failure::meaningful_line);
        let reason = failure::reason_with_line(&reason, line.as_deref());
        if let Some(tail) = tail {
            self.tails.insert((index, attempt), tail);
        }
        ExitKind::Failure { exit_code, reason }
    }

    fn dispatch(&mut self, ctx: &mut Context<Self>) {
        loop {
            let commands = self.core.poll_dispatch(now_ms());
            if commands.is_empty() {
                break;
            }
            for command in commands {
                self.carry_out(command);
            }
        }
        // Agent orders go out once written: write now rather than at the next tick, so that a
        // launch waits for one SQLite commit, not up to FLUSH_EVERY.
        if self.held.has_orders() {
            self.flush();
        }
        self.maybe_finish(ctx);
    }

    fn carry_out(&mut self, command: Command) {
        let (source, order) = match drive::route(command) {
            Route::Order(source, order) => (source, order),
            Route::Attach(source, key) => {
                match &self.sources[source] {
                    SourceHandle::Agent(addr) => addr.do_send(AttachTask(key)),
                    // Only agents hold attempts across coordinators; a local attempt of a dead
                    // coordinator was ended by `kill_orphans`.
                    SourceHandle::Local(_) => self.core.handle_exited(
                        key.index,
                        key.attempt,
                        ExitKind::Lost {
                            reason: "not held by a local source".into(),
                        },
                        now_ms(),
                    ),
                }
                return;
            }
        };
        let order = match order {
            Order::Launch(key) => match self.launch_task(key, source) {
                Ok(msg) => SourceOrder::Launch(msg),
                Err(reason) => {
                    let exit = ExitKind::Failure {
                        exit_code: None,
                        reason,
                    };
                    self.core
                        .handle_exited(key.index, key.attempt, exit, now_ms());
                    return;
                }
            },
            Order::Cancel(key) => SourceOrder::Cancel(key),
            Order::Steal(key) => SourceOrder::Steal(key),
        };
        match &self.sources[source] {
            SourceHandle::Agent(_) => self.held.order(source, order),
            SourceHandle::Local(addr) => match order {
                SourceOrder::Launch(msg) => addr.do_send(msg),
                // The local source is never drained; stopping the attempt is the closest thing.
                // Only an in-process scheduler source holds unstarted tasks locally: a stolen
                // one's pending job is cancelled (`scancel`/`qdel`) and the attempt ends
                // cancelled.
                SourceOrder::Cancel(key) | SourceOrder::Steal(key) => addr.do_send(CancelTask(key)),
            },
        }
    }

    /// The message that launches attempt `key` on `source`: its argv and environment.
    fn launch_task(&self, key: TaskKey, source: usize) -> Result<LaunchTask, String> {
        let TaskKey { index, attempt } = key;
        let task_id = self.run.paths.task_name(index);
        // An agent's results live on its host: it substitutes its own directory for this token.
        let output_dir = match self.run.sources.get(source).map(|s| &s.kind) {
            Some(SourceSpecKind::Agent { .. }) => hsm_protocol::AGENT_OUTPUT_DIR.to_string(),
            _ => self.run.paths.results_dir(index).display().to_string(),
        };
        let launch_ctx = LaunchContext {
            sweep_id: &self.run.sweep_id,
            task_index: index,
            task_id: &task_id,
            attempt,
            output_dir: &output_dir,
            group: &self.run.group,
            script_override: self.run.script_override.as_deref(),
        };
        let params = self.run.params.get(index).map_err(|e| e.to_string())?;
        let command = self
            .agent_commands
            .get(source)
            .and_then(Option::as_ref)
            .unwrap_or(&self.run.command);
        let argv = build_argv(command, &params, &launch_ctx).map_err(|e| e.to_string())?;
        Ok(LaunchTask {
            key,
            env: command_env(command, &launch_ctx),
            argv,
        })
    }

    fn flush(&mut self) {
        // Nothing to wait for here: the acknowledgements travel on their own.
        drop(self.flush_and_acknowledge());
        self.source_logs.flush();
    }

    /// A line for source `source`'s log.
    fn source_log(&mut self, source: usize, text: &str) {
        if let Some(spec) = self.run.sources.get(source) {
            self.source_logs.line(&spec.name, text, now_ms());
        }
    }

    /// Writes the changes since the last flush, then (once they are written) acknowledges to
    /// each agent the events applied before them. The future resolves when the acknowledgements
    /// are in the agent sources' mailboxes (at once when there are none).
    fn flush_and_acknowledge(
        &mut self,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()>>> {
        let mut changes = self.core.poll_changes();
        // Behind this batch in the store's FIFO mailbox: a task queued again by a change of
        // this batch is pending in sweep.db before its range is cancelled (ahead of it, the
        // range would skip the task and the batch then make it pending again). And the batch's
        // orders (the agents' cancels) go out without waiting for a million rows.
        let unstarted = self.core.poll_cancelled_unstarted();
        let cancel_unstarted = |actor: &mut Self| {
            if !unstarted.is_empty() {
                actor.views_dirty = true;
                actor.store.do_send(CancelUnstarted {
                    ranges: unstarted,
                    at: now_ms(),
                });
            }
        };
        let stop = self.stop_cause();
        let outcomes = failure::annotate(&mut changes, &mut self.tails, stop);
        if !changes.is_empty() {
            self.views_dirty = true;
            self.progress.on_changes(&changes, &outcomes);
        }
        self.progress.update(self.core.counts());
        let Some(batch) = self.held.take(changes) else {
            // Nothing written, nothing to send (the interval's idle ticks).
            cancel_unstarted(self);
            return futures_ready();
        };
        // The store's mailbox is FIFO: an empty batch answers once every earlier one is written.
        let written = self.store.send(Persist(batch.changes));
        cancel_unstarted(self);
        let agent = |source: usize| match self.sources.get(source) {
            Some(SourceHandle::Agent(addr)) => Some(addr.clone()),
            _ => None,
        };
        let orders: Vec<(Addr<AgentSource>, SourceOrder)> = batch
            .orders
            .into_iter()
            .filter_map(|(source, order)| Some((agent(source)?, order)))
            .collect();
        let to: Vec<(Addr<AgentSource>, Vec<hsm_protocol::EventRef>)> = batch
            .acks
            .into_iter()
            .filter_map(|(source, acks)| Some((agent(source)?, acks)))
            .collect();
        // Each flush's sends wait for the previous flush's: orders reach an agent in the order
        // the core gave them, whatever order the tasks below are woken in.
        let before = self.sent_before.take();
        let (next_tx, next_rx) = tokio::sync::oneshot::channel::<()>();
        self.sent_before = Some(next_rx);
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        actix::spawn(async move {
            let ok = written.await.unwrap_or(false);
            if let Some(before) = before {
                let _ = before.await;
            }
            // Not written: nothing is sent or acknowledged, and the agent keeps the events for
            // `sweep complete` (the run stops on the failed write).
            if ok {
                for (addr, order) in orders {
                    order.send(&addr);
                }
                for (addr, acks) in to {
                    addr.do_send(SendAcks(acks));
                }
            }
            let _ = next_tx.send(());
            let _ = tx.send(());
        });
        Box::pin(async move {
            let _ = rx.await;
        })
    }

    /// `sweep cancel` asked (its request file, or its row in `sweep.db`): stop every task.
    fn cancel_requested(&mut self, ctx: &mut Context<Self>) {
        self.cancelled = true;
        // Consumed: a later `sweep complete` of this sweep must not see it.
        let _ = std::fs::remove_file(self.run.paths.cancel_request());
        tracing::info!(sweep_id = %self.run.sweep_id, "cancel requested: stopping all tasks");
        self.stop_running(true);
        self.maybe_finish(ctx);
    }

    fn stop_running(&mut self, cancel: bool) {
        let commands = if cancel {
            self.core.handle_cancel(now_ms())
        } else {
            self.core.handle_interrupt(now_ms())
        };
        for command in commands {
            self.carry_out(command);
        }
    }

    fn maybe_finish(&mut self, ctx: &mut Context<Self>) {
        if self.finishing || !self.core.is_finished() {
            return;
        }
        self.finishing = true;
        // A source asked for that never connected took no task: say so, or a sweep that local
        // alone finished would leave the person wondering about their new host.
        for (i, spec) in self.run.sources.iter().enumerate() {
            let silent = !self.answered.get(i).copied().unwrap_or(true)
                && self.refused.get(i).is_some_and(Option::is_none);
            if silent && !spec.attach_only {
                self.progress.note(&format!(
                    "source {}: not connected before the sweep ended; no task went there \
                     (`hsm-coordinator agent ping {}` checks it)",
                    spec.name, spec.name
                ));
            }
        }
        let acknowledged = self.flush_and_acknowledge();
        let counts = self.core.counts();
        for source in 0..self.run.sources.len() {
            self.source_log(
                source,
                &format!(
                    "run of {} ended ({} completed, {} failed, {} cancelled, {} left in the sweep)",
                    self.run.sweep_id,
                    counts.completed,
                    counts.failed,
                    counts.cancelled,
                    counts.pending + counts.queued + counts.running
                ),
            );
        }
        self.source_logs.flush();
        // The last of the flushes' hand-overs (this one's, or an earlier one still waiting for
        // its write).
        let all_sent = self.sent_before.take();
        self.progress.finish(self.core.counts());
        // The store's mailbox is FIFO: the views are written after the last batch.
        let views = self.store.send(WriteViews { force: true });
        let close = self.store.send(Close);
        let agents: Vec<Addr<AgentSource>> = self
            .sources
            .iter()
            .filter_map(|s| match s {
                SourceHandle::Agent(addr) => Some(addr.clone()),
                SourceHandle::Local(_) => None,
            })
            .collect();
        let done = async move {
            // The last orders and acknowledgements reach the agent sources before they shut
            // down.
            acknowledged.await;
            if let Some(all_sent) = all_sent {
                let _ = all_sent.await;
            }
            let shutdowns: Vec<_> = agents.iter().map(|a| a.send(Shutdown)).collect();
            let result = views.await;
            let _ = close.await;
            for agent in shutdowns {
                let _ = agent.await;
            }
            result
        };
        ctx.wait(done.into_actor(self).map(|result, actor, ctx| {
            if let Ok(Err(e)) = result {
                tracing::warn!(error = %e, "cannot write task_mapping.yaml");
            }
            let summary = RunSummary {
                counts: actor.core.counts(),
                interrupted: actor.interrupted,
                cancelled: actor.cancelled,
                failure: actor.failure.clone(),
                stopped: actor.stopped.clone(),
                elapsed: actor.started.elapsed(),
            };
            if let Some(tx) = actor.done_tx.take() {
                let _ = tx.send(summary);
            }
            ctx.stop();
        }));
    }
}

impl Actor for SweepActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        let create_logs = self
            .run
            .sources
            .iter()
            .any(|s| !matches!(s.kind, SourceSpecKind::Agent { .. }));
        // A compact sweep run on agents alone has nothing to prepare: its tasks' directories
        // appear with their first output or result.
        let prepares = create_logs || !self.run.paths.compact();
        // A compact sweep's silent local tasks pass their directories on to the next ones.
        let spares = (self.run.paths.compact()
            && self
                .run
                .sources
                .iter()
                .any(|s| matches!(s.kind, SourceSpecKind::Local)))
        .then(|| Arc::new(crate::layout::SparePool::new(&self.run.paths)));
        let prefetch = (prepares && !self.run.prefetch.is_empty()).then(|| {
            let plan = PrefetchPlan {
                paths: self.run.paths.clone(),
                sweep_id: self.run.sweep_id.clone(),
                group: self.run.group.clone(),
                command: self.run.command.clone(),
                script_override: self.run.script_override.clone(),
                params: Arc::clone(&self.run.params),
                total: self.core.total(),
                order: std::mem::take(&mut self.run.prefetch),
                create_logs,
                spares: spares.clone(),
            };
            let (shared, thread) = Prefetch::start(plan);
            self.prefetch_thread = Some(thread);
            shared
        });
        // Sources are children of this actor: they report to its address.
        for (number, spec) in self.run.sources.iter().enumerate() {
            let handle = match &spec.kind {
                SourceSpecKind::Local | SourceSpecKind::Scheduler { .. } => {
                    let scheduler = match &spec.kind {
                        SourceSpecKind::Scheduler { hpc, poll } => Some((hpc.clone(), *poll)),
                        _ => None,
                    };
                    SourceHandle::Local(
                        LocalSource::new(
                            LocalSourceSetup {
                                source: number,
                                paths: self.run.paths.clone(),
                                cwd: self.run.project_root.clone(),
                                timeout: self.run.timeout,
                                kill_grace: self.run.kill_grace,
                                params: Arc::clone(&self.run.params),
                                prefetch: prefetch.clone(),
                                // A batch scheduler's records stay in the task directory.
                                spares: spares.clone().filter(|_| scheduler.is_none()),
                                scheduler,
                            },
                            ctx.address().recipient(),
                        )
                        .start(),
                    )
                }
                SourceSpecKind::Agent {
                    address,
                    fingerprint,
                    project_dir,
                    hpc,
                    transport,
                    sync,
                    work_dir,
                    ..
                } => {
                    // No work until it connects (the core starts agents unhealthy).
                    self.core.handle_source_status(number, false, None);
                    SourceHandle::Agent(
                        AgentSource::new(
                            AgentSetup {
                                source: number,
                                name: spec.name.clone(),
                                address: address.clone(),
                                fingerprint: fingerprint.clone(),
                                project_dir: project_dir.clone(),
                                paths: self.run.paths.clone(),
                                sweep_id: self.run.sweep_id.clone(),
                                timeout: self.run.timeout,
                                kill_grace: self.run.kill_grace,
                                params: Arc::clone(&self.run.params),
                                grace: self.run.agent_grace,
                                min_free_disk: self.run.min_free_disk,
                                prefetch: prefetch.clone(),
                                hpc: hpc.clone(),
                                preflight: self.agent_commands[number].as_ref().map(|command| {
                                    let mut request = crate::preflight::request(
                                        command,
                                        self.run.script_override.as_deref(),
                                        project_dir.as_deref(),
                                        hpc.as_ref(),
                                        self.run.min_free_disk,
                                    );
                                    // A push brings the project's own files before any task.
                                    if let Some(sync) = sync
                                        .as_ref()
                                        .filter(|s| s.mode == crate::config::SyncMode::Push)
                                    {
                                        sync.manifest.leave_to_push(&mut request.files);
                                    }
                                    request
                                }),
                                transport: transport.clone(),
                                sync: sync.clone(),
                                work_dir: work_dir.clone(),
                            },
                            ctx.address().recipient(),
                            ctx.address().recipient(),
                        )
                        .start(),
                    )
                }
            };
            tracing::debug!(source = %spec.name, slots = spec.slots, "source started");
            let what = match &spec.kind {
                SourceSpecKind::Local => format!("local processes, {} slots", spec.slots),
                SourceSpecKind::Scheduler { hpc, .. } => {
                    let scheduler = format!("{:?}", hpc.scheduler).to_lowercase();
                    format!("this host's batch scheduler ({scheduler})")
                }
                SourceSpecKind::Agent {
                    address, transport, ..
                } => format!(
                    "agent at {address} (transport {}), dialling",
                    transport.mode.as_str()
                ),
            };
            self.source_logs.line(
                &spec.name,
                &format!(
                    "run of {} started: {what}{}",
                    self.run.sweep_id,
                    if spec.attach_only {
                        " (only to finish attempts it holds)"
                    } else {
                        ""
                    }
                ),
                now_ms(),
            );
            self.answered
                .push(!matches!(spec.kind, SourceSpecKind::Agent { .. }));
            self.refused.push(None);
            self.sources.push(handle);
        }
        let limit = self.run.connect_timeout;
        ctx.run_later(limit, move |actor, ctx| {
            if actor.answered.iter().any(|&a| a) || actor.finishing {
                return;
            }
            actor.stop_for(
                Stopped {
                    message: format!(
                        "no source answered within {} (defaults.connect_timeout): check that \
                         each agent runs and can be reached (`hsm-coordinator agent ping NAME`, \
                         `hsm-coordinator agent status NAME`)",
                        crate::config::format_duration(limit)
                    ),
                    user_fix: false,
                },
                ctx,
            );
        });
        ctx.run_interval(FLUSH_EVERY, |actor, _| actor.flush());
        ctx.run_interval(DISPATCH_TICK, |actor, ctx| actor.dispatch(ctx));
        ctx.run_interval(VIEWS_EVERY, |actor, ctx| {
            if std::mem::take(&mut actor.views_dirty) {
                // A rewrite the store skipped (too soon after the last) is asked for again at
                // the next tick: the views (`failed_tasks.yaml`, `error_patterns.yaml`) must not
                // wait for the next change, which may be hours away.
                let write = actor.store.send(WriteViews { force: false });
                ctx.spawn(write.into_actor(actor).map(|result, actor, _| {
                    if !matches!(result, Ok(Ok(true))) {
                        actor.views_dirty = true;
                    }
                }));
            }
        });
        ctx.run_interval(CANCEL_REQUEST_EVERY, |actor, ctx| {
            if !actor.cancelled && actor.run.paths.cancel_request().exists() {
                actor.cancel_requested(ctx);
            }
        });
        ctx.run_interval(POLL_CONTROL_EVERY, |actor, ctx| {
            let poll = actor.store.send(PollControl);
            ctx.spawn(poll.into_actor(actor).map(|result, actor, ctx| {
                let Ok(poll) = result else { return };
                if let Some(failure) = poll.failure {
                    if actor.failure.is_none() {
                        actor.failure = Some(failure);
                        actor.stop_running(false);
                    }
                } else if poll.cancel_requested && !actor.cancelled {
                    actor.cancel_requested(ctx);
                }
                actor.maybe_finish(ctx);
            }));
        });
        self.dispatch(ctx);
    }
}

impl Handler<SourceEvent> for SweepActor {
    type Result = ();
    fn handle(&mut self, msg: SourceEvent, ctx: &mut Context<Self>) {
        match msg.report {
            TaskReport::Submitted { key, job_id } => {
                let line = format!(
                    "{} attempt {} submitted as job {}",
                    self.run.paths.task_name(key.index),
                    key.attempt,
                    hsm_protocol::display_safe(&job_id)
                );
                self.source_log(msg.source, &line);
                self.core
                    .handle_submitted(key.index, key.attempt, job_id, now_ms());
            }
            TaskReport::Started { key, pid, at_ms } => {
                self.core.handle_started(key.index, key.attempt, pid, at_ms);
            }
            TaskReport::Finished {
                key,
                exit,
                at_ms,
                usage,
            } => {
                let exit = self.explain(key.index, key.attempt, exit);
                self.core
                    .handle_exited_using(key.index, key.attempt, exit, usage, at_ms);
            }
            TaskReport::Acks(acks) => {
                // Its events' reports came before it (one mailbox): their changes go out in
                // the next flush, and the acknowledgements after that.
                self.held.acks(msg.source, acks);
                return;
            }
        }
        self.dispatch(ctx);
    }
}

impl Handler<SourceStatus> for SweepActor {
    type Result = ();
    fn handle(&mut self, msg: SourceStatus, ctx: &mut Context<Self>) {
        let configured = self.run.sources.get(msg.source).is_some_and(|s| {
            matches!(
                s.kind,
                SourceSpecKind::Agent {
                    slots_configured: true,
                    ..
                } | SourceSpecKind::Local
                    | SourceSpecKind::Scheduler { .. }
            )
        });
        let name = self
            .run
            .sources
            .get(msg.source)
            .map_or("?", |s| s.name.as_str());
        // Notes carry the agent's strings (its name, errors, close reasons): escaped here, once.
        let note = hsm_protocol::display_safe(&msg.note).into_owned();
        self.progress.note(&format!("source {name}: {note}"));
        let name = name.to_string();
        self.source_log(msg.source, &note);
        if msg.up {
            if let Some(answered) = self.answered.get_mut(msg.source) {
                *answered = true;
            }
        }
        if msg.refused {
            if let Some(refused) = self.refused.get_mut(msg.source) {
                *refused = Some(note.clone());
            }
        }
        let status = LinkStatus {
            up: msg.up,
            slots: msg.slots,
            note,
            lost: msg.lost,
            keep_waiting: msg.keep_waiting,
            rtt_ms: msg.rtt_ms,
            refused: msg.refused,
        };
        let effect = drive::apply_status(&mut self.core, msg.source, &status, configured, now_ms());
        let plural = |n: usize| if n == 1 { "" } else { "s" };
        if effect.lost > 0 {
            let n = effect.lost;
            let line = format!(
                "{n} task{} lost with {name} will run again as new attempts",
                plural(n)
            );
            self.source_log(msg.source, &line);
            self.progress.note(&line);
        }
        if !effect.drained.is_empty() {
            let n = effect.drained.len();
            let line = format!(
                "{n} task{} waiting at {name} asked back, to run elsewhere",
                plural(n)
            );
            self.source_log(msg.source, &line);
            self.progress.note(&line);
        }
        for command in effect.drained {
            self.carry_out(command);
        }
        if msg.refused {
            self.stop_if_no_source_left(ctx);
        }
        self.dispatch(ctx);
    }
}

impl SweepActor {
    /// Stops the run (as Ctrl-C does: running tasks stop, unstarted ones stay pending for
    /// `sweep complete`) because no source can run its tasks.
    fn stop_for(&mut self, stopped: Stopped, ctx: &mut Context<Self>) {
        if self.stopped.is_some() || self.interrupted || self.cancelled {
            return;
        }
        // Said once, at the end (also with -q).
        self.stopped = Some(stopped);
        self.stop_running(false);
        self.maybe_finish(ctx);
    }

    /// Every source of the run refused or was refused: nothing can run, so the run stops
    /// (with work left) instead of waiting for ever.
    fn stop_if_no_source_left(&mut self, ctx: &mut Context<Self>) {
        let left = self
            .run
            .sources
            .iter()
            .zip(&self.refused)
            .any(|(spec, refused)| refused.is_none() && !spec.attach_only);
        if left || self.core.is_finished() {
            return;
        }
        let reasons: Vec<String> = self
            .run
            .sources
            .iter()
            .zip(&self.refused)
            .filter_map(|(spec, why)| Some(format!("{}: {}", spec.name, why.as_ref()?)))
            .collect();
        self.stop_for(
            Stopped {
                message: format!("no usable source left — {}", reasons.join("; ")),
                user_fix: true,
            },
            ctx,
        );
    }
}

/// Ctrl-C: stop dispatching, stop running tasks, keep the state.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Interrupt;

impl Handler<Interrupt> for SweepActor {
    type Result = ();
    fn handle(&mut self, _: Interrupt, ctx: &mut Context<Self>) {
        if !self.interrupted {
            self.interrupted = true;
            self.progress
                .note("interrupted: stopping running tasks (Ctrl-C again to exit now)");
            self.stop_running(false);
        }
        self.maybe_finish(ctx);
    }
}

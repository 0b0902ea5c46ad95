//! The local source actor: runs tasks on this machine through hsm-exec's process backend (or,
//! for a coordinator on a login node, through this host's Slurm/PBS with its scheduler backend), preparing each task directory first, and forwards the backend's events to
//! the sweep actor.

use super::{report_of, SourceEvent};
use crate::core::command::shell_display;
use crate::layout::{self, SweepPaths};
use crate::prefetch::Prefetch;
use actix::{Actor, AsyncContext, Context, Handler, Message, Recipient};
use hsm_exec::process::{Outcome, ProcessBackend, ProcessEvent, TaskKey, TaskLaunch};
use hsm_exec::scheduler::{HpcLaunch, SchedulerBackend};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// How a local source runs its tasks.
pub struct LocalSourceSetup {
    /// This source's number in the sweep actor's source list.
    pub source: usize,
    pub paths: SweepPaths,
    /// Working directory of every task: the project root.
    pub cwd: PathBuf,
    pub timeout: Option<Duration>,
    pub kill_grace: Duration,
    /// Parameters of every task of the sweep (index - 1), shared with the sweep actor.
    pub params: Arc<crate::store::TaskParams>,
    /// Task directories prepared ahead of time, when the run prefetches.
    pub prefetch: Option<Arc<Prefetch>>,
    /// Run through this host's batch scheduler with these resources, polling this often.
    pub scheduler: Option<(hsm_protocol::HpcMsg, Duration)>,
    /// A compact sweep's spare task directories: silent tasks' go there, new tasks take them.
    pub spares: Option<Arc<layout::SparePool>>,
}

pub struct LocalSource {
    setup: LocalSourceSetup,
    events_to: Recipient<SourceEvent>,
    backend: Option<ProcessBackend>,
    scheduler: Option<SchedulerBackend>,
}

impl LocalSource {
    pub fn new(setup: LocalSourceSetup, events_to: Recipient<SourceEvent>) -> Self {
        LocalSource {
            setup,
            events_to,
            backend: None,
            scheduler: None,
        }
    }
}

impl Actor for LocalSource {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        let mut events_rx = match &self.setup.scheduler {
            Some((_, poll)) => {
                let (scheduler, events_rx) = SchedulerBackend::new(*poll);
                self.scheduler = Some(scheduler);
                events_rx
            }
            None => {
                let (backend, events_rx) = ProcessBackend::new();
                self.backend = Some(backend);
                events_rx
            }
        };
        let events_to = self.events_to.clone();
        let source = self.setup.source;
        let paths = self.setup.paths.clone();
        let spares = self.setup.spares.clone();
        // Forward backend events in arrival order; the sweep actor's mailbox is the only queue.
        ctx.spawn(actix::fut::wrap_future(async move {
            while let Some(event) = events_rx.recv().await {
                // A compact sweep's silent task leaves nothing behind; tidied before the sweep
                // actor hears of the exit, so never under a retry's fresh directory.
                if let ProcessEvent::Exited { key, .. } = &event {
                    layout::retire_task_dir(&paths, key.index, spares.as_deref());
                }
                if let Some(report) = report_of(event) {
                    events_to.do_send(SourceEvent { source, report });
                }
            }
        }));
    }

    fn stopping(&mut self, _: &mut Context<Self>) -> actix::Running {
        if let Some(backend) = &self.backend {
            backend.cancel_all();
        }
        actix::Running::Stop
    }
}

/// Start one attempt of one task.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct LaunchTask {
    pub key: TaskKey,
    pub argv: Vec<String>,
    pub env: Vec<(String, String)>,
}

impl Handler<LaunchTask> for LocalSource {
    type Result = ();
    fn handle(&mut self, msg: LaunchTask, _: &mut Context<Self>) {
        if self.backend.is_none() && self.scheduler.is_none() {
            return;
        }
        let index = msg.key.index;
        let prepared =
            msg.key.attempt == 1 && self.setup.prefetch.as_ref().is_some_and(|p| p.claim(index));
        let files = if prepared {
            let dir = self.setup.paths.task_dir(index);
            Ok((dir.join("stdout.log"), dir.join("stderr.log")))
        } else if self.setup.paths.compact() {
            layout::prepare_compact_task_dir(
                &self.setup.paths,
                index,
                msg.key.attempt,
                self.setup.spares.as_deref(),
            )
            .map(|(stdout, stderr, _)| (stdout, stderr))
        } else {
            let params_yaml = match self.setup.params.get(index) {
                Ok(params) => layout::params_yaml(&params),
                Err(e) => {
                    tracing::warn!(task = index, error = %e, "cannot read the task's parameters for params.yaml");
                    String::new()
                }
            };
            let command_txt = format!("{}\n", shell_display(&msg.argv));
            layout::prepare_task_dir(
                &self.setup.paths,
                index,
                msg.key.attempt,
                &params_yaml,
                &command_txt,
            )
        };
        match files {
            Ok((stdout, stderr)) => {
                let launch = TaskLaunch {
                    key: msg.key,
                    argv: msg.argv,
                    env: msg.env,
                    cwd: self.setup.cwd.clone(),
                    stdout,
                    stderr,
                    timeout: self.setup.timeout,
                    kill_grace: self.setup.kill_grace,
                };
                match (&self.scheduler, &self.setup.scheduler, &self.backend) {
                    (Some(scheduler), Some((hpc, _)), _) => {
                        // The task's time limit bounds the job's walltime when it is
                        // submitted (`hpc::pack::with_task_limit`).
                        let hpc = hpc.clone();
                        scheduler.launch(HpcLaunch {
                            launch,
                            hpc,
                            task_dir: self.setup.paths.task_dir(index),
                            scripts_dir: self.setup.paths.root.join("scripts").join("job_scripts"),
                        })
                    }
                    (_, _, Some(backend)) => backend.launch(launch),
                    _ => {}
                }
            }
            Err(e) => {
                let failed = ProcessEvent::Exited {
                    key: msg.key,
                    outcome: Outcome::SpawnFailed(format!(
                        "cannot prepare {}: {e}",
                        self.setup.paths.task_dir(msg.key.index).display()
                    )),
                    at: SystemTime::now(),
                    usage: None,
                };
                if let Some(report) = report_of(failed) {
                    self.events_to.do_send(SourceEvent {
                        source: self.setup.source,
                        report,
                    });
                }
            }
        }
    }
}

/// Stop one attempt (SIGTERM to its process group, SIGKILL after the grace period).
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct CancelTask(pub TaskKey);

impl Handler<CancelTask> for LocalSource {
    type Result = ();
    fn handle(&mut self, msg: CancelTask, _: &mut Context<Self>) {
        if let Some(backend) = &self.backend {
            backend.cancel(msg.0);
        }
        if let Some(scheduler) = &self.scheduler {
            scheduler.cancel(msg.0);
        }
    }
}

/// Ends the task processes of a sweep left running by a coordinator that died (`kill -9`).
///
/// They are found by their environment, not by the pids in `sweep.db`: a task started in the
/// last moments before the crash may not have reached the database yet. A process counts as the
/// sweep's when its environment holds `HSM_SWEEP_ID=<sweep_id>` and an `HSM_TASK_ID`, which hsm
/// sets on every task, and no `HSM_AGENT_TASK` (an agent's task, even one on this host, belongs to
/// the agent); its whole process group (each task has its own) is killed. Call this only
/// while holding the sweep's lock, so no live coordinator owns these processes. Returns the
/// number of process groups killed.
pub fn kill_orphans(sweep_id: &str) -> usize {
    let want_sweep = format!("HSM_SWEEP_ID={sweep_id}");
    let mark = format!("{}=", hsm_exec::process::TASK_MARK);
    hsm_exec::process::kill_groups_where(|environ| {
        let mut sweep_ok = false;
        let mut task_ok = false;
        let mut agents = false;
        for var in environ {
            sweep_ok |= *var == want_sweep.as_bytes();
            task_ok |= var.starts_with(b"HSM_TASK_ID=task_");
            agents |= var.starts_with(mark.as_bytes());
        }
        // An agent on this host runs its tasks for itself: they may be taken up again.
        sweep_ok && task_ok && !agents
    })
}

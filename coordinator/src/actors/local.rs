//! The local source actor: runs tasks on this machine through the agent crate's process backend,
//! preparing each task directory first, and forwards process events to the sweep actor.

use super::SourceEvent;
use crate::core::command::shell_display;
use crate::core::value::Params;
use crate::layout::{self, SweepPaths};
use crate::prefetch::Prefetch;
use actix::{Actor, AsyncContext, Context, Handler, Message, Recipient};
use hsm_agent::process::{Outcome, ProcessBackend, ProcessEvent, TaskKey, TaskLaunch};
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
    pub params: Arc<Vec<Params>>,
    /// Task directories prepared ahead of time, when the run prefetches.
    pub prefetch: Option<Arc<Prefetch>>,
}

pub struct LocalSource {
    setup: LocalSourceSetup,
    events_to: Recipient<SourceEvent>,
    backend: Option<ProcessBackend>,
}

impl LocalSource {
    pub fn new(setup: LocalSourceSetup, events_to: Recipient<SourceEvent>) -> Self {
        LocalSource {
            setup,
            events_to,
            backend: None,
        }
    }
}

impl Actor for LocalSource {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        let (backend, mut events_rx) = ProcessBackend::new();
        self.backend = Some(backend);
        let events_to = self.events_to.clone();
        let source = self.setup.source;
        // Forward backend events in arrival order; the sweep actor's mailbox is the only queue.
        ctx.spawn(actix::fut::wrap_future(async move {
            while let Some(event) = events_rx.recv().await {
                events_to.do_send(SourceEvent { source, event });
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
        let Some(backend) = &self.backend else {
            return;
        };
        let index = msg.key.index;
        let prepared =
            msg.key.attempt == 1 && self.setup.prefetch.as_ref().is_some_and(|p| p.take(index));
        let files = if prepared {
            let dir = self.setup.paths.task_dir(index);
            Ok((dir.join("stdout.log"), dir.join("stderr.log")))
        } else {
            let params_yaml = self
                .setup
                .params
                .get((index - 1) as usize)
                .map(layout::params_yaml)
                .unwrap_or_default();
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
            Ok((stdout, stderr)) => backend.launch(TaskLaunch {
                key: msg.key,
                argv: msg.argv,
                env: msg.env,
                cwd: self.setup.cwd.clone(),
                stdout,
                stderr,
                timeout: self.setup.timeout,
                kill_grace: self.setup.kill_grace,
            }),
            Err(e) => self.events_to.do_send(SourceEvent {
                source: self.setup.source,
                event: ProcessEvent::Exited {
                    key: msg.key,
                    outcome: Outcome::SpawnFailed(format!(
                        "cannot prepare {}: {e}",
                        self.setup.paths.task_dir(msg.key.index).display()
                    )),
                    at: SystemTime::now(),
                },
            }),
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
    }
}

/// Processes of a sweep left running by a coordinator that died (`kill -9`): they were started by
/// hsm for this sweep, which we verify through their environment (`HSM_SWEEP_ID`, `HSM_TASK_ID`)
/// before killing their process group, so a reused pid is never signalled.
pub fn kill_orphans(sweep_id: &str, tasks: &[(u64, u32)]) -> usize {
    let mut killed = 0;
    for &(index, pid) in tasks {
        if pid == 0 || !process_belongs_to(pid, sweep_id, index) {
            continue;
        }
        // SAFETY: plain syscall; the pid was verified above to be this sweep's task.
        unsafe {
            libc::kill(-(pid as libc::pid_t), libc::SIGKILL);
        }
        killed += 1;
        for _ in 0..100 {
            if !process_belongs_to(pid, sweep_id, index) {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    killed
}

fn process_belongs_to(pid: u32, sweep_id: &str, index: u64) -> bool {
    let Ok(environ) = std::fs::read(format!("/proc/{pid}/environ")) else {
        return false;
    };
    // A zombie has an empty environ: it is dead already.
    let want_sweep = format!("HSM_SWEEP_ID={sweep_id}");
    let want_task = format!("HSM_TASK_ID={}", crate::core::value::task_name(index));
    let mut sweep_ok = false;
    let mut task_ok = false;
    for var in environ.split(|&b| b == 0) {
        sweep_ok |= var == want_sweep.as_bytes();
        task_ok |= var == want_task.as_bytes();
    }
    sweep_ok && task_ok
}

//! The agent source's writer thread: carries out its blocking file work off the actor thread —
//! preparing a launched task's local directory, appending live output to the task's logs,
//! keeping job scripts — and forwards its reports to the sweep actor, all in the order the
//! actor queued them. So an attempt's `Finished` reaches the sweep actor only after its output
//! is on disk (the metrics reader and the failure reason read the logs when an attempt ends),
//! and reports keep their order with each other.

use super::{SourceEvent, SourceStatus, TaskReport};
use crate::core::link::Write;
use crate::layout::{self, SweepPaths};
use actix::Recipient;
use hsm_exec::process::TaskKey;
use hsm_protocol::Stream;
use std::collections::HashMap;
use std::fs::File;
use std::io::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::Arc;

/// One piece of work, in queue order.
pub(super) enum Job {
    /// Make the local directory of a launched attempt (or, for a first attempt the preparer
    /// made already, rewrite its `command.txt`).
    Prepare {
        key: TaskKey,
        command_txt: String,
    },
    Write(Write),
    Event(TaskReport),
    Status(SourceStatus),
    /// Answered once everything queued before it is done.
    Barrier(tokio::sync::oneshot::Sender<()>),
}

pub(super) struct WriterSetup {
    pub(super) source: usize,
    pub(super) name: String,
    pub(super) paths: SweepPaths,
    pub(super) params: Arc<crate::store::TaskParams>,
    pub(super) prefetch: Option<Arc<crate::prefetch::Prefetch>>,
    pub(super) events_to: Recipient<SourceEvent>,
    pub(super) status_to: Recipient<SourceStatus>,
}

/// The queue to the thread; the thread ends when this is dropped (with the actor), after the
/// work already queued. Jobs are gathered and handed over once per actor message (`flush`):
/// one wake-up of the thread per batch rather than per job. A report with nothing queued or
/// unfinished before it is sent at once (`report`): nothing it must follow is pending, and most
/// reports (a start, the end of a task with no output) skip the trip through the thread.
pub(super) struct Writer {
    tx: mpsc::Sender<Vec<Job>>,
    batch: Vec<Job>,
    /// Batches handed to the thread, and (shared with it) batches it has finished.
    sent: u64,
    done: Arc<AtomicU64>,
    source: usize,
    events_to: Recipient<SourceEvent>,
    status_to: Recipient<SourceStatus>,
}

impl Writer {
    pub(super) fn start(setup: WriterSetup) -> Writer {
        let (tx, rx) = mpsc::channel::<Vec<Job>>();
        let name = format!("hsm-agent-writer-{}", setup.source);
        let done = Arc::new(AtomicU64::new(0));
        let (source, events_to, status_to) = (
            setup.source,
            setup.events_to.clone(),
            setup.status_to.clone(),
        );
        let mut state = State {
            setup,
            logs: HashMap::new(),
        };
        let finished = done.clone();
        std::thread::Builder::new()
            .name(name)
            .spawn(move || {
                for batch in rx {
                    for job in batch {
                        state.run(job);
                    }
                    // After the batch's reports were handed to the sweep actor.
                    finished.fetch_add(1, Ordering::Release);
                }
            })
            .expect("cannot start a writer thread");
        Writer {
            tx,
            batch: Vec::new(),
            sent: 0,
            done,
            source,
            events_to,
            status_to,
        }
    }

    /// Queues a job (handed over at the next `flush`).
    pub(super) fn push(&mut self, job: Job) {
        self.batch.push(job);
    }

    /// Reports to the sweep actor after everything queued before: at once when nothing is
    /// queued or unfinished, else through the thread.
    pub(super) fn report(&mut self, job: Job) {
        let idle = self.batch.is_empty() && self.done.load(Ordering::Acquire) == self.sent;
        match job {
            Job::Event(report) if idle => self.events_to.do_send(SourceEvent {
                source: self.source,
                report,
            }),
            Job::Status(status) if idle => self.status_to.do_send(status),
            job => self.batch.push(job),
        }
    }

    /// Hands the queued jobs to the thread.
    pub(super) fn flush(&mut self) {
        if !self.batch.is_empty() && self.tx.send(std::mem::take(&mut self.batch)).is_ok() {
            self.sent += 1;
        }
    }
}

/// The local log files of an attempt, opened (for appending) on its first output: most tasks'
/// logs exist already (created empty when the task directory was prepared) and many stay empty.
#[derive(Default)]
struct Logs {
    stdout: Option<File>,
    stderr: Option<File>,
}

struct State {
    setup: WriterSetup,
    logs: HashMap<TaskKey, Logs>,
}

impl State {
    fn run(&mut self, job: Job) {
        match job {
            Job::Prepare { key, command_txt } => self.prepare(key, &command_txt),
            Job::Write(Write::Append { key, stream, data }) => self.append(key, stream, &data),
            Job::Write(Write::JobScript { name, text }) => self.save_job_script(&name, &text),
            Job::Write(Write::Close(key)) => {
                self.logs.remove(&key);
            }
            Job::Event(report) => self.setup.events_to.do_send(SourceEvent {
                source: self.setup.source,
                report,
            }),
            Job::Status(status) => self.setup.status_to.do_send(status),
            Job::Barrier(done) => {
                let _ = done.send(());
            }
        }
    }

    fn prepare(&mut self, key: TaskKey, command_txt: &str) {
        let setup = &self.setup;
        let prepared =
            key.attempt == 1 && setup.prefetch.as_ref().is_some_and(|p| p.claim(key.index));
        let written = if setup.paths.compact() {
            // No per-task views; what the preparer made (for a local source, not knowing this
            // task would go to an agent) is taken away again: the agent's task gets its
            // directory with its first output or result.
            if prepared {
                layout::tidy_task_dir(&setup.paths, key.index);
            }
            Ok(())
        } else if prepared {
            std::fs::write(
                setup.paths.task_dir(key.index).join("command.txt"),
                command_txt,
            )
        } else {
            let params_yaml = match setup.params.get(key.index) {
                Ok(params) => layout::params_yaml(&params),
                Err(e) => {
                    tracing::warn!(task = key.index, error = %e, "cannot read the task's parameters for params.yaml");
                    String::new()
                }
            };
            // No empty log files: `append` creates each on the task's first output, and most
            // tasks of a big sweep print nothing (two inodes fewer per task).
            layout::prepare_task_dir(
                &setup.paths,
                key.index,
                key.attempt,
                &params_yaml,
                command_txt,
            )
            .map(|_| ())
        };
        if let Err(e) = written {
            tracing::warn!(task = key.index, error = %e, "cannot prepare the local task directory");
        }
    }

    fn append(&mut self, key: TaskKey, stream: Stream, data: &[u8]) {
        let logs = self.logs.entry(key).or_default();
        let (file, name) = match stream {
            Stream::Stdout => (&mut logs.stdout, "stdout.log"),
            Stream::Stderr => (&mut logs.stderr, "stderr.log"),
        };
        if file.is_none() {
            let dir = self.setup.paths.task_dir(key.index);
            let path = dir.join(name);
            let open = || {
                std::fs::OpenOptions::new()
                    .append(true)
                    .create(true)
                    .open(&path)
            };
            // A compact sweep's agent task has no directory until its first output.
            let opened = match open() {
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    std::fs::create_dir_all(&dir).and_then(|()| open())
                }
                other => other,
            };
            match opened {
                Ok(f) => *file = Some(f),
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "cannot open task log")
                }
            }
        }
        if let Some(file) = file {
            if let Err(e) = file.write_all(data) {
                tracing::warn!(task = key.index, error = %e, "cannot append task output");
            }
        }
    }

    /// Keeps a job script the agent submitted under `scripts/job_scripts/<source>/`, next to the
    /// scripts of in-process scheduler sources (the link checked the name is one plain file
    /// name).
    fn save_job_script(&self, name: &str, text: &str) {
        let dir = self
            .setup
            .paths
            .root
            .join("scripts")
            .join("job_scripts")
            .join(&self.setup.name);
        let written = std::fs::create_dir_all(&dir).and_then(|()| {
            let tmp = dir.join(format!(".{name}.tmp"));
            std::fs::write(&tmp, text.as_bytes())?;
            std::fs::rename(&tmp, dir.join(name))
        });
        if let Err(e) = written {
            tracing::warn!(dir = %dir.display(), error = %e, "cannot save a job script");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::state::ExitKind;
    use actix::{Actor, Context, Handler};
    use std::sync::Mutex;
    use std::time::Duration;

    /// Stands in for the sweep actor: notes each report, and for a `Finished` the size of the
    /// attempt's `stdout.log` when it arrived.
    struct Sweep {
        seen: Arc<Mutex<Vec<String>>>,
        paths: SweepPaths,
    }

    impl Actor for Sweep {
        type Context = Context<Self>;
    }

    impl Handler<SourceEvent> for Sweep {
        type Result = ();
        fn handle(&mut self, msg: SourceEvent, _: &mut Context<Self>) {
            let note = match msg.report {
                TaskReport::Finished { key, .. } => {
                    let log = self.paths.task_dir(key.index).join("stdout.log");
                    let len = std::fs::metadata(log).map_or(0, |m| m.len());
                    format!("finished with {len} bytes of output")
                }
                TaskReport::Started { .. } => "started".into(),
                other => format!("{other:?}"),
            };
            self.seen.lock().unwrap().push(note);
        }
    }

    impl Handler<SourceStatus> for Sweep {
        type Result = ();
        fn handle(&mut self, msg: SourceStatus, _: &mut Context<Self>) {
            self.seen.lock().unwrap().push(msg.note);
        }
    }

    async fn wait_for(seen: &Mutex<Vec<String>>, n: usize) -> Vec<String> {
        for _ in 0..500 {
            if seen.lock().unwrap().len() >= n {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        seen.lock().unwrap().clone()
    }

    #[test]
    fn a_finish_reaches_the_sweep_only_after_the_output_queued_before_it_is_on_disk() {
        let dir = tempfile::tempdir().unwrap();
        let paths = SweepPaths::new(dir.path().to_path_buf());
        let seen = Arc::new(Mutex::new(Vec::new()));
        actix_rt::System::new().block_on(async {
            let sweep = Sweep {
                seen: seen.clone(),
                paths: paths.clone(),
            }
            .start();
            let mut writer = Writer::start(WriterSetup {
                source: 0,
                name: "gpu1".into(),
                paths: paths.clone(),
                params: Arc::new(crate::store::TaskParams::in_memory(Vec::new())),
                prefetch: None,
                events_to: sweep.clone().recipient(),
                status_to: sweep.recipient(),
            });
            let key = TaskKey {
                index: 1,
                attempt: 1,
            };
            writer.push(Job::Prepare {
                key,
                command_txt: "true\n".into(),
            });
            writer.flush();
            // Enough output that the thread is still writing when the finish is queued.
            const CHUNK: usize = 64 * 1024;
            for _ in 0..64 {
                writer.push(Job::Write(Write::Append {
                    key,
                    stream: Stream::Stdout,
                    data: vec![b'x'; CHUNK],
                }));
            }
            writer.report(Job::Event(TaskReport::Finished {
                key,
                exit: ExitKind::Success,
                at_ms: 0,
                usage: None,
            }));
            writer.flush();
            let seen_now = wait_for(&seen, 1).await;
            assert_eq!(
                seen_now,
                vec![format!("finished with {} bytes of output", 64 * CHUNK)]
            );
            // Nothing queued or unfinished: a report goes at once, without waiting for a flush.
            let caught_up = writer.done.load(Ordering::Acquire) == writer.sent;
            assert!(caught_up, "the thread finished its batches");
            writer.report(Job::Event(TaskReport::Started {
                key,
                pid: Some(7),
                at_ms: 0,
            }));
            assert_eq!(wait_for(&seen, 2).await[1], "started");
            assert!(writer.batch.is_empty());
            // With something queued, a report waits behind it.
            writer.push(Job::Write(Write::Close(key)));
            writer.report(Job::Status(SourceStatus {
                source: 0,
                up: false,
                slots: None,
                note: "connection lost".into(),
                lost: false,
                keep_waiting: false,
                rtt_ms: None,
                refused: false,
            }));
            assert_eq!(writer.batch.len(), 2);
            writer.flush();
            assert_eq!(wait_for(&seen, 3).await[2], "connection lost");
        });
    }
}

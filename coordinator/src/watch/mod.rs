//! `sweep watch`: a live full-screen view of a sweep from any terminal. It reads `sweep.db`
//! read-only while the run (another process) writes it, and the end of each running task's
//! `stdout.log`, redraws every interval until no coordinator runs the sweep any more, then
//! prints a summary line. `view.rs` builds the frames (pure), `term.rs` owns the terminal.

pub mod term;
pub mod view;

use crate::actors::sweep::now_ms;
use crate::layout::{self, SweepPaths};
use crate::store::Store;
use std::time::{Duration, Instant};
use view::Snapshot;

/// Bytes read from the end of a running task's output for its last line.
const OUTPUT_TAIL: usize = 4096;
/// A frame for a stdout that is not a terminal: this wide and at most this tall.
const PLAIN_SIZE: (usize, usize) = (120, 60);

/// How `sweep watch` was asked to run.
#[derive(Debug, Clone)]
pub struct Options {
    /// Time between reads of the sweep.
    pub interval: Duration,
    /// One snapshot, then exit.
    pub once: bool,
}

/// What is read again for every frame.
struct Reader<'a> {
    sweep_id: String,
    paths: SweepPaths,
    /// The database as the caller opened it, for the first read.
    opened: Option<Store>,
    active: &'a dyn Fn(&SweepPaths) -> bool,
}

impl Reader<'_> {
    /// The sweep now, with the output of the first `running_lines` running tasks. The
    /// database is open only while it is read: a connection held open when the run's
    /// coordinator closes its own would keep SQLite from checkpointing the WAL into
    /// `sweep.db` at the run's end.
    fn read(&mut self, running_lines: usize) -> anyhow::Result<Snapshot> {
        // The lock first: a coordinator that ends between the two reads leaves tasks it has
        // finished in the database, never a "running" sweep whose tasks all look ended.
        let active = (self.active)(&self.paths);
        let store = match self.opened.take() {
            Some(store) => store,
            None => Store::open_read_only_current(&self.paths.db())?,
        };
        let tasks = store.task_statuses()?;
        let attempts = store.attempt_rows()?;
        let sources = view::parse_sources(store.meta(view::SOURCES_META)?.as_deref());
        drop(store);
        let last_lines = view::running_order(&tasks)
            .into_iter()
            .take(running_lines)
            .map(|task| {
                let path = self.paths.task_dir(task.index).join("stdout.log");
                let end = layout::read_end(&path, OUTPUT_TAIL)
                    .map(|(end, _)| end)
                    .unwrap_or_default();
                (task.index, view::last_line(&end))
            })
            .collect();
        Ok(Snapshot {
            sweep_id: self.sweep_id.clone(),
            now_ms: now_ms(),
            clock: local_clock(now_ms() / 1000),
            active,
            sources,
            tasks,
            attempts,
            last_lines,
        })
    }
}

/// Watches the sweep `sweep_id` whose database `store` was opened read-only. `active` says
/// whether a coordinator runs it. Returns the exit code: 0 when the sweep ended or the user
/// quit, 130 on a terminating signal.
pub fn watch(
    sweep_id: &str,
    paths: SweepPaths,
    store: Store,
    options: &Options,
    active: &dyn Fn(&SweepPaths) -> bool,
) -> anyhow::Result<i32> {
    use std::io::IsTerminal;
    let paths = paths.with_task_width(store.task_width()?);
    let mut reader = Reader {
        sweep_id: sweep_id.to_string(),
        paths,
        opened: Some(store),
        active,
    };
    let tty = std::io::stdout().is_terminal();
    if options.once || !tty {
        let (width, height) = if tty { term::size() } else { PLAIN_SIZE };
        let height = height.max(PLAIN_SIZE.1);
        let snap = reader.read(height)?;
        for row in view::frame(&snap, width, height, None) {
            println!("{}", row.trim_end());
        }
        return Ok(crate::cli::EXIT_OK);
    }
    let footer = format!("q quit · every {}", humanize_interval(options.interval));
    let mut screen = term::Screen::enter()?;
    let mut snap = reader.read(screen.size().1)?;
    loop {
        if !snap.active {
            drop(screen);
            let counts = snap.tasks.iter().map(|t| t.status).collect();
            println!("{}", view::summary_line(sweep_id, &counts));
            return Ok(crate::cli::EXIT_OK);
        }
        let (width, height) = term::size();
        screen.draw(&view::frame(&snap, width, height, Some(&footer)))?;
        let next = Instant::now() + options.interval;
        loop {
            match screen.wait(next.saturating_duration_since(Instant::now())) {
                term::Wake::Tick => break,
                term::Wake::Resized => {
                    let (width, height) = term::size();
                    screen.draw(&view::frame(&snap, width, height, Some(&footer)))?;
                }
                term::Wake::Quit => return Ok(crate::cli::EXIT_OK),
                // Ctrl-C: the documented code of an interrupted command.
                term::Wake::Interrupt => return Ok(crate::cli::EXIT_INTERRUPTED),
                term::Wake::Signalled => {
                    drop(screen);
                    eprintln!(
                        "hsm-coordinator: stopped by signal {}",
                        term::signal_received().unwrap_or(0)
                    );
                    return Ok(crate::cli::EXIT_INTERRUPTED);
                }
            }
        }
        snap = reader.read(screen.size().1)?;
    }
}

/// `1s`, `0.5s`, `2m`.
fn humanize_interval(interval: Duration) -> String {
    let secs = interval.as_secs_f64();
    if secs >= 60.0 && secs.fract() == 0.0 && (secs as u64).is_multiple_of(60) {
        format!("{}m", secs as u64 / 60)
    } else {
        format!("{}s", (secs * 1000.0).round() / 1000.0)
    }
}

/// `HH:MM:SS` in local time.
fn local_clock(unix_seconds: i64) -> String {
    let t = unix_seconds as libc::time_t;
    // SAFETY: localtime_r fills the zeroed tm we own.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    if unsafe { libc::localtime_r(&t, &mut tm) }.is_null() {
        return String::new();
    }
    format!("{:02}:{:02}:{:02}", tm.tm_hour, tm.tm_min, tm.tm_sec)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intervals_read_as_written() {
        assert_eq!(humanize_interval(Duration::from_secs(1)), "1s");
        assert_eq!(humanize_interval(Duration::from_millis(500)), "0.5s");
        assert_eq!(humanize_interval(Duration::from_secs(120)), "2m");
        assert_eq!(humanize_interval(Duration::from_secs(90)), "90s");
    }
}

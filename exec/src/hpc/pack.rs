//! Packing short tasks into one job (`hpc.tasks_per_job`): what a packed array element asks the
//! scheduler for, which tasks it runs, and the runner script it executes (`hsm_pack.sh`), which
//! hands each task to the ordinary wrapper in turn. Pure values and text; no IO.
//!
//! Element `e` of a packed array runs lines `e*K .. e*K+K-1` of the chunk's `tasks` file, `P` at
//! a time. Each task keeps everything it has unpacked: its own directory, `hsm_start`/`hsm_exit`
//! records, logs, result files, and a time limit of its own, which the wrapper enforces (a
//! packed job's wall time covers all of its tasks). A task that fails does not stop the others.
//!
//! Task directory files that only packed tasks use:
//!
//! ```text
//! hsm_limits      written before submission: timeout=<s> (empty: none), grace=<s> (TERM → KILL)
//! hsm_cancel      written by the backend to cancel this task alone (its job runs others): the
//!                 wrapper stops the task within a second, or skips it when its turn comes
//!                 (exit record with skipped=1, no start record)
//! .hsm_timed_out  the wrapper's mark that it stopped the task at its limit (timed_out=1)
//! ```

use super::resources::{Memory, MemoryError, Resources};

/// File name of the pack runner inside a chunk directory.
pub const PACK_FILE: &str = "hsm_pack.sh";
/// The per-task limits file.
pub const LIMITS_FILE: &str = "hsm_limits";
/// Written by the backend to cancel one task of a packed job.
pub const CANCEL_FILE: &str = "hsm_cancel";
/// The wrapper's mark that it stopped a task at its time limit.
pub const TIMED_OUT_MARK: &str = ".hsm_timed_out";
/// Wall time a packed job gets on top of its tasks' limits: the job's set-up (modules, conda)
/// and the wrapper's own work between tasks.
pub const PACK_SLACK_SECS: u64 = 60;
/// Wall time each task of a packed job may take past its own limit: the wrapper looks at the
/// limit once a second, then gives the task its kill grace (10 s by default) before SIGKILL.
pub const PACK_TASK_OVERHEAD_SECS: u64 = 15;

/// How the tasks of one array go into its elements.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pack {
    /// Tasks per element (K >= 2).
    pub tasks: u32,
    /// Of those, at most this many at once (1..=K).
    pub parallel: u32,
}

impl Pack {
    /// The packing `resources` ask for; `None` for one task per job (`tasks_per_job` unset or 1).
    pub fn of(resources: &Resources) -> Option<Pack> {
        let tasks = resources.tasks_per_job.filter(|&k| k > 1)?;
        let parallel = resources.pack_parallel.unwrap_or(1).clamp(1, tasks);
        Some(Pack { tasks, parallel })
    }

    /// Elements needed for `n` tasks.
    pub fn elements(self, n: usize) -> usize {
        n.div_ceil(self.tasks as usize)
    }

    /// The element (index within its array) that runs the task at position `i` of the array.
    pub fn element_of(self, i: usize) -> u32 {
        (i / self.tasks as usize) as u32
    }

    /// Tasks in a row each element runs (rounds of `parallel`).
    fn rounds(self) -> u64 {
        u64::from(self.tasks.div_ceil(self.parallel))
    }
}

/// What one packed element asks for, from the per-task `resources`: wall time for its rounds of
/// tasks (each its walltime plus [`PACK_TASK_OVERHEAD_SECS`]) plus [`PACK_SLACK_SECS`], and
/// `parallel` times the per-task CPUs, memory and GPUs (a `gres` string is passed as written:
/// it cannot be multiplied safely).
pub fn element_resources(resources: &Resources, pack: Pack) -> Result<Resources, MemoryError> {
    let p = pack.parallel;
    let mut out = resources.clone();
    out.walltime = resources.walltime.map(|w| {
        w.saturating_add(PACK_TASK_OVERHEAD_SECS)
            .saturating_mul(pack.rounds())
            .saturating_add(PACK_SLACK_SECS)
    });
    out.cpus = resources.cpus.map(|c| c.saturating_mul(p));
    out.gpus = resources.gpus.map(|g| g.saturating_mul(p));
    if let Some(mem) = &resources.mem {
        let kib = Memory::parse(mem)?.kib.saturating_mul(u64::from(p));
        out.mem = Some(if p == 1 {
            mem.clone()
        } else {
            format!("{kib}K")
        });
    }
    Ok(out)
}

/// The resources a job of tasks with a time limit of their own (`--timeout`, `task_limit`
/// seconds; `None` when any of them has none) asks for, the wrapper giving each task
/// `grace_secs` between SIGTERM and SIGKILL at its limit. Where the limit is shorter than the
/// per-task `walltime` (or there is none) it is the task's wall time, so the job does not ask the
/// scheduler for hours its tasks will never use (queue priority, backfill): unpacked, the limit,
/// the time to stop the task and [`PACK_SLACK_SECS`], never more than the `walltime` asked
/// for; packed, the per-task figure [`element_resources`] counts its rounds from. A grace
/// longer than [`PACK_TASK_OVERHEAD_SECS`] allows for is added to that figure.
pub fn with_task_limit(
    resources: &Resources,
    task_limit: Option<u64>,
    grace_secs: u64,
) -> Resources {
    let mut out = resources.clone();
    // Beyond what element_resources already allows each task for stopping.
    let extra_stop = (grace_secs + 5).saturating_sub(PACK_TASK_OVERHEAD_SECS);
    let per_task = match (task_limit.map(|l| l.max(1)), resources.walltime) {
        (Some(limit), Some(w)) => Some(limit.min(w)),
        (limit, w) => limit.or(w),
    };
    let Some(per_task) = per_task else {
        return out;
    };
    if Pack::of(resources).is_some() {
        out.walltime = Some(per_task.saturating_add(extra_stop));
    } else if task_limit.is_some() {
        let job = per_task
            .saturating_add(PACK_TASK_OVERHEAD_SECS + extra_stop)
            .saturating_add(PACK_SLACK_SECS);
        out.walltime = Some(resources.walltime.map_or(job, |w| w.min(job)));
    }
    out
}

/// The content of a packed task's `hsm_limits`: its own time limit (none: empty) and the grace
/// between SIGTERM and SIGKILL, in whole seconds.
pub fn limits_file(timeout_secs: Option<u64>, grace_secs: u64) -> String {
    let timeout = timeout_secs
        .map(|t| t.max(1).to_string())
        .unwrap_or_default();
    format!("timeout={timeout}\ngrace={grace_secs}\n")
}

/// The runner a packed element executes, saved once per chunk as `hsm_pack.sh` next to the
/// wrapper and run with `/bin/bash`:
///
/// `hsm_pack.sh TASKS_FILE ELEMENT TASKS_PER_JOB PARALLEL`
///
/// It runs the wrapper for lines `ELEMENT*TASKS_PER_JOB ..` of TASKS_FILE, PARALLEL at a time,
/// with `HSM_PACKED=1` (which turns on the wrapper's per-task limit and cancel watch). A task
/// whose exit record is there without a signal finished in an earlier run of this job (Slurm
/// requeued it) and is not run again; one with a signal was stopped by the requeue and is. A
/// TERM, INT or HUP to the job is passed to the tasks running and no further task starts;
/// USR1/USR2 are passed on only.
pub const PACK_SCRIPT: &str = r#"#!/bin/bash
# hsm pack runner (generated by hsm; do not edit). See exec/src/hpc/pack.rs.
set -u
tasks_file=${1:-}
element=${2:-}
per=${3:-}
parallel=${4:-}
for n in "$element" "$per" "$parallel"; do
  case "$n" in
    '' | *[!0-9]*) printf 'hsm pack: bad arguments: %s\n' "$*" >&2; exit 127 ;;
  esac
done
per=$((10#$per))
parallel=$((10#$parallel))
[ "$per" -ge 1 ] || per=1
[ "$parallel" -ge 1 ] || parallel=1
wrapper="$(dirname -- "$tasks_file")/hsm_wrapper.sh"
first=$((10#$element * per))
mapfile -t -s "$first" -n "$per" hsm_lines <"$tasks_file" || hsm_lines=()

stopping=""
running=()
hsm_pass() { # signal [stop]: the tasks running get it; with stop (the job is being ended),
  # no other task starts. USR1/USR2 (a warning the job asked for) are only passed on.
  if [ -n "${2:-}" ]; then stopping=1; fi
  local pid
  for pid in ${running[@]+"${running[@]}"}; do kill -"$1" "$pid" 2>/dev/null; done
}
trap 'hsm_pass TERM stop' TERM
trap 'hsm_pass TERM stop' INT
trap 'hsm_pass HUP stop' HUP
trap 'hsm_pass USR1' USR1
trap 'hsm_pass USR2' USR2
hsm_prune() { # keeps the pids of tasks still running
  local alive=() pid
  for pid in ${running[@]+"${running[@]}"}; do
    if kill -0 "$pid" 2>/dev/null; then alive+=("$pid"); fi
  done
  running=(${alive[@]+"${alive[@]}"})
}
hsm_wait_below() { # count: waits until fewer than count tasks run
  local pause=0.05
  while [ "${#running[@]}" -ge "$1" ]; do
    if [ "$parallel" -eq 1 ] || [ "$1" -eq 1 ]; then
      # One at a time: wait for it (a trapped signal interrupts; the loop waits again).
      wait "${running[0]}" 2>/dev/null
    else
      # Any of several may end first; bash 4.2 has no `wait -n`, so look, backing off to 1 s.
      sleep "$pause"
      case "$pause" in 0.05) pause=0.1 ;; 0.1) pause=0.2 ;; 0.2) pause=0.5 ;; *) pause=1 ;; esac
    fi
    hsm_prune
  done
}

export HSM_PACKED=1
line=$first
for task_dir in ${hsm_lines[@]+"${hsm_lines[@]}"}; do
  this=$line
  line=$((line + 1))
  [ -z "$stopping" ] || break
  if [ -f "$task_dir/hsm_exit" ] && ! grep -q '^signal=' "$task_dir/hsm_exit" 2>/dev/null; then
    continue
  fi
  hsm_wait_below "$parallel"
  [ -z "$stopping" ] || break
  /bin/bash "$wrapper" "$tasks_file" "$this" &
  running+=("$!")
  # A stop that came between the check above and the start: this task gets it too.
  if [ -n "$stopping" ]; then kill -TERM "$!" 2>/dev/null; fi
done
hsm_wait_below 1
exit 0
"#;

#[cfg(test)]
mod tests {
    use super::*;

    fn resources(k: Option<u32>, p: Option<u32>) -> Resources {
        Resources {
            tasks_per_job: k,
            pack_parallel: p,
            walltime: Some(600),
            cpus: Some(2),
            mem: Some("4G".into()),
            gpus: Some(1),
            ..Resources::default()
        }
    }

    #[test]
    fn one_task_per_job_is_no_packing() {
        assert_eq!(Pack::of(&resources(None, None)), None);
        assert_eq!(Pack::of(&resources(Some(1), Some(4))), None);
        assert_eq!(
            Pack::of(&resources(Some(50), None)),
            Some(Pack {
                tasks: 50,
                parallel: 1
            })
        );
        // More at once than the element has tasks is as many as it has.
        assert_eq!(
            Pack::of(&resources(Some(4), Some(9))),
            Some(Pack {
                tasks: 4,
                parallel: 4
            })
        );
    }

    #[test]
    fn tasks_map_to_elements_in_order() {
        let pack = Pack {
            tasks: 50,
            parallel: 1,
        };
        assert_eq!(pack.elements(2000), 40);
        assert_eq!(pack.elements(2001), 41);
        assert_eq!(pack.elements(1), 1);
        assert_eq!(pack.element_of(0), 0);
        assert_eq!(pack.element_of(49), 0);
        assert_eq!(pack.element_of(50), 1);
    }

    #[test]
    fn an_element_asks_for_all_of_its_rounds_and_parallel_tasks() {
        // 10 tasks, one at a time, 600 s each: 10 rounds + slack; per-task CPUs and memory.
        let one = element_resources(
            &resources(Some(10), None),
            Pack {
                tasks: 10,
                parallel: 1,
            },
        )
        .unwrap();
        assert_eq!(
            one.walltime,
            Some(10 * (600 + PACK_TASK_OVERHEAD_SECS) + PACK_SLACK_SECS)
        );
        assert_eq!(
            (one.cpus, one.mem.as_deref(), one.gpus),
            (Some(2), Some("4G"), Some(1))
        );
        // 10 tasks, 4 at a time: 3 rounds, 4x the CPUs, memory and GPUs.
        let four = element_resources(
            &resources(Some(10), Some(4)),
            Pack {
                tasks: 10,
                parallel: 4,
            },
        )
        .unwrap();
        assert_eq!(
            four.walltime,
            Some(3 * (600 + PACK_TASK_OVERHEAD_SECS) + PACK_SLACK_SECS)
        );
        assert_eq!(four.cpus, Some(8));
        assert_eq!(four.gpus, Some(4));
        assert_eq!(
            Memory::parse(four.mem.as_deref().unwrap()).unwrap(),
            Memory::parse("16G").unwrap()
        );
        // No wall time asked: none (the partition's default).
        let mut bare = resources(Some(10), None);
        bare.walltime = None;
        bare.mem = Some("lots".into());
        assert!(element_resources(&bare, Pack::of(&bare).unwrap()).is_err());
        bare.mem = None;
        assert_eq!(
            element_resources(&bare, Pack::of(&bare).unwrap())
                .unwrap()
                .walltime,
            None
        );
    }

    #[test]
    fn a_task_limit_shorter_than_the_walltime_is_what_the_job_asks_for() {
        let four_hours = Resources {
            walltime: Some(4 * 3600),
            ..Resources::default()
        };
        // Unpacked: the limit, the time to stop the task, and the job's slack.
        assert_eq!(
            with_task_limit(&four_hours, Some(5), 10).walltime,
            Some(5 + 15 + 60)
        );
        assert_eq!(
            with_task_limit(&four_hours, None, 10),
            four_hours,
            "no limit: as asked"
        );
        assert_eq!(
            with_task_limit(&four_hours, Some(5 * 3600), 10).walltime,
            Some(4 * 3600),
            "the walltime is the shorter: it stays"
        );
        assert_eq!(
            with_task_limit(&four_hours, Some(4 * 3600 - 30), 10).walltime,
            Some(4 * 3600),
            "never more than the walltime asked for (a partition's MaxTime)"
        );
        assert_eq!(
            with_task_limit(&Resources::default(), Some(60), 10).walltime,
            Some(135),
            "no walltime: the limit bounds the job"
        );
        assert_eq!(
            with_task_limit(&four_hours, Some(60), 120).walltime,
            Some(60 + 125 + 60),
            "a long kill grace is the task's to use"
        );
        assert_eq!(
            with_task_limit(&Resources::default(), None, 10).walltime,
            None
        );
        // Packed: the per-task figure element_resources counts its rounds from.
        let packed = Resources {
            tasks_per_job: Some(4),
            pack_parallel: Some(2),
            ..four_hours.clone()
        };
        let job = with_task_limit(&packed, Some(5), 10);
        assert_eq!(job.walltime, Some(5));
        let pack = Pack::of(&packed).unwrap();
        assert_eq!(
            element_resources(&job, pack).unwrap().walltime,
            Some(2 * (5 + 15) + 60),
            "two rounds of 5 s tasks, not of 4 h"
        );
        assert_eq!(with_task_limit(&packed, None, 10).walltime, Some(4 * 3600));
        assert_eq!(
            with_task_limit(&packed, None, 60).walltime,
            Some(4 * 3600 + 50),
            "each task's grace past its walltime"
        );
    }

    #[test]
    fn limits_file_says_timeout_and_grace() {
        assert_eq!(limits_file(Some(90), 10), "timeout=90\ngrace=10\n");
        assert_eq!(limits_file(None, 5), "timeout=\ngrace=5\n");
        assert_eq!(limits_file(Some(0), 5), "timeout=1\ngrace=5\n");
    }

    #[test]
    fn the_runner_uses_the_file_names_the_rust_side_uses() {
        assert!(PACK_SCRIPT.starts_with("#!/bin/bash\n"));
        assert!(PACK_SCRIPT.contains(super::super::script::WRAPPER_FILE));
        assert!(PACK_SCRIPT.contains(&format!("$task_dir/{}", super::super::wrapper::EXIT_FILE)));
    }
}

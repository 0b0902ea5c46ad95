//! Grid Engine (Son of Grid Engine, Univa/Altair Grid Engine, Open Grid Scheduler) output:
//! telling its `qstat` from PBS's and Slurm's wrappers, `qsub -terse`, `qstat -xml`, `qacct -j`,
//! and the `qdel` arguments for a set of array tasks. Plain functions over text; tested against
//! output captured from Son of Grid Engine 8.1.9 (`agent/tests/fixtures/hpc/sge-*`).
//!
//! Grid Engine numbers array tasks from 1; hsm's element indices count from 0, so element `i` is
//! task `i + 1` everywhere here.

use super::decide::{Account, Seen};
use super::parse::{FailReason, IndexSet, JobState};

/// Whether `qstat --version` (stdout and stderr together) is Grid Engine's: its first line names
/// it (`SGE 8.1.9`, `GE 8.1.x`, `UGE 8.6.4`, `OGS/GE 2011.11`, `AGE 2024.1.0`, `Univa Grid
/// Engine`, `Altair Grid Engine`), or it cannot find its cell (`unable to read qmaster name`,
/// `act_qmaster`), which only Grid Engine's client says.
pub fn is_grid_engine(qstat_version: &str) -> bool {
    let first = qstat_version
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("");
    let word = first.split_whitespace().next().unwrap_or("");
    matches!(word, "SGE" | "GE" | "UGE" | "OGS/GE" | "AGE")
        || first.starts_with("Univa Grid Engine")
        || first.starts_with("Altair Grid Engine")
        || first.starts_with("Open Grid Scheduler")
        || qstat_version.contains("unable to read qmaster name")
        || qstat_version.contains("act_qmaster")
}

/// Why a Grid Engine client cannot be used as it is, when `qstat --version` says so (it cannot
/// find its cell or qmaster): the message to show.
pub fn unusable(qstat_version: &str) -> Option<String> {
    let line = qstat_version
        .lines()
        .map(str::trim)
        .find(|l| l.contains("unable to read qmaster name") || l.contains("unable to contact"))?;
    Some(line.trim_start_matches("error:").trim().to_string())
}

/// The job id `qsub -terse` printed: `4711` for a job, `4711.1-10:1` for an array.
pub fn parse_qsub_terse(stdout: &str) -> Result<String, String> {
    let line = stdout
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .ok_or_else(|| "qsub -terse printed nothing".to_string())?;
    let id = line.split('.').next().unwrap_or("");
    if !id.is_empty() && id.bytes().all(|b| b.is_ascii_digit()) {
        Ok(id.to_string())
    } else {
        Err(format!("qsub -terse printed {line:?}, not a job id"))
    }
}

/// One `<job_list>` of `qstat -xml`: a running task, or a job's pending tasks together.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SgeJob {
    /// `JB_job_number`.
    pub number: String,
    /// `JB_name`.
    pub name: String,
    /// `state` as printed (`r`, `t`, `qw`, `hqw`, `Eqw`, `dr`, ...).
    pub state: String,
    /// `tasks`: the array task ids this line is about (Grid Engine's numbering, from 1); `None`
    /// for a job that is not an array.
    pub tasks: Option<IndexSet>,
}

impl SgeJob {
    /// What the state letters mean to hsm. `E` (error: the job will not run until an
    /// administrator clears it) is final; with `q` waiting (`qw`, `hqw`, `Rq`, `dqw`); `d` (being
    /// deleted), `s`/`S`/`T` (suspended) and the running letters running.
    pub fn job_state(&self) -> JobState {
        let s = self.state.as_str();
        if s.contains('E') {
            JobState::Failed {
                reason: FailReason::Other(format!(
                    "Grid Engine put the job in error state {s} (see `qstat -j JOB` for why)"
                )),
            }
        } else if s.contains('q') {
            // Waiting (`qw`, `hqw`, `Rq`), or deleted while waiting (`dqw`): not started.
            JobState::Queued
        } else if s.contains(['r', 't', 'd', 's', 'S', 'T']) {
            JobState::Running
        } else if s.contains('z') {
            JobState::Ended
        } else if s.contains(['w', 'h']) {
            JobState::Queued
        } else {
            JobState::Unknown(s.to_string())
        }
    }
}

/// The `<job_list>` entries of `qstat -xml`; entries without a job number are skipped, and
/// anything that is not XML gives none (never a panic).
pub fn parse_qstat_xml(xml: &str) -> Vec<SgeJob> {
    let mut jobs = Vec::new();
    let mut rest = xml;
    while let Some(start) = rest.find("<job_list") {
        let after = &rest[start..];
        let Some(end) = after.find("</job_list>") else {
            break;
        };
        let body = &after[..end];
        rest = &after[end + "</job_list>".len()..];
        let Some(number) = element(body, "JB_job_number") else {
            continue;
        };
        let tasks = element(body, "tasks").and_then(|t| task_set(&t));
        jobs.push(SgeJob {
            number,
            name: element(body, "JB_name").unwrap_or_default(),
            state: element(body, "state").unwrap_or_default(),
            tasks,
        });
    }
    jobs
}

/// The text of the first `<name>…</name>` in `body`, entities decoded.
fn element(body: &str, name: &str) -> Option<String> {
    let open = format!("<{name}>");
    let close = format!("</{name}>");
    let start = body.find(&open)? + open.len();
    let len = body[start..].find(&close)?;
    Some(unescape(body[start..start + len].trim()))
}

fn unescape(text: &str) -> String {
    text.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&apos;", "'")
        .replace("&amp;", "&")
}

/// A `<tasks>` value: `3`, `3-5:1`, `3,4`, `1-9:2` (a step), or a mix.
fn task_set(text: &str) -> Option<IndexSet> {
    IndexSet::parse(text).filter(|set| !set.is_empty())
}

/// How `qstat -xml` shows element `index` of `job` (task `index + 1`).
pub fn sge_seen(jobs: &[SgeJob], job: &str, index: Option<u32>) -> Seen {
    let found = jobs.iter().find(|j| {
        j.number == job
            && match (index, &j.tasks) {
                (Some(i), Some(set)) => set.contains(i + 1),
                (None, None) => true,
                _ => false,
            }
    });
    found.map_or(Seen::Missing, |j| Seen::Listed(j.job_state()))
}

/// The job number of a job named `name` in `qstat -xml`.
pub fn job_named(jobs: &[SgeJob], name: &str) -> Option<String> {
    jobs.iter()
        .find(|j| j.name == name)
        .map(|j| j.number.clone())
}

/// One task's record in `qacct -j` output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QacctRecord {
    pub job_number: String,
    pub job_name: String,
    /// `None` for a job that is not an array (`taskid undefined`).
    pub task: Option<u32>,
    /// `failed`: 0, or Grid Engine's code and words (`37 : qmaster enforced h_rt ...`).
    pub failed: u32,
    pub failed_text: String,
    /// `exit_status`: the job script's status (137 when killed).
    pub exit_status: i32,
}

/// The records of `qacct -j JOB` (a line of `=`, then `key value` lines, per task).
pub fn parse_qacct(text: &str) -> Vec<QacctRecord> {
    let mut out = Vec::new();
    for block in text.split("\n=") {
        let mut record = QacctRecord {
            job_number: String::new(),
            job_name: String::new(),
            task: None,
            failed: 0,
            failed_text: String::new(),
            exit_status: 0,
        };
        let mut have_exit = false;
        for line in block.lines() {
            let Some((key, value)) = line.trim().split_once(char::is_whitespace) else {
                continue;
            };
            let value = value.trim();
            match key {
                "jobnumber" => record.job_number = value.to_string(),
                "jobname" => record.job_name = value.to_string(),
                "taskid" => record.task = value.parse().ok(),
                "failed" => {
                    let (code, words) = value.split_once(':').unwrap_or((value, ""));
                    record.failed = code.trim().parse().unwrap_or(0);
                    record.failed_text = words.trim().to_string();
                }
                "exit_status" => {
                    if let Some(code) = value.split_whitespace().next().and_then(|c| c.parse().ok())
                    {
                        record.exit_status = code;
                        have_exit = true;
                    }
                }
                _ => {}
            }
        }
        if !record.job_number.is_empty() && have_exit {
            out.push(record);
        }
    }
    out
}

/// What Grid Engine's accounting says of element `index` of `job`: exit 0 completed; a
/// non-zero exit failed with it; `failed 37` (the qmaster enforced `h_rt`) a timeout; killed
/// by a signal (`exit_status` 128+N after `failed 100`) the signal; other `failed` codes (the
/// job could not start: a missing shell, an unwritable output file) their words.
pub fn qacct_account(records: &[QacctRecord], job: &str, index: Option<u32>) -> Option<Account> {
    // The latest record: a job Grid Engine ran again (or a job number used again) has several.
    let r = records.iter().rev().find(|r| {
        r.job_number == job
            && match index {
                Some(i) => r.task == Some(i + 1),
                None => r.task.is_none(),
            }
    })?;
    let killed = (r.exit_status > 128 && r.exit_status < 128 + 65).then(|| r.exit_status - 128);
    let (state, signal) = match (r.failed, r.exit_status) {
        (0, 0) => (JobState::Completed, None),
        (0, code) => (
            JobState::Failed {
                reason: FailReason::NonZeroExit(code),
            },
            None,
        ),
        (37, _) => (
            JobState::Failed {
                reason: FailReason::Timeout,
            },
            None,
        ),
        (100, _) if killed.is_some() => (
            JobState::Failed {
                reason: FailReason::Other(format!("killed by signal {}", killed.unwrap_or(0))),
            },
            killed,
        ),
        (code, _) => (
            JobState::Failed {
                reason: FailReason::Other(format!(
                    "Grid Engine: failed {code}{}",
                    if r.failed_text.is_empty() {
                        String::new()
                    } else {
                        format!(" ({})", r.failed_text)
                    }
                )),
            },
            None,
        ),
    };
    Some(Account { state, signal })
}

/// `qdel` argument lists that delete exactly these elements of `job` (indices from 0): the whole
/// job when `whole`, else one list per run of consecutive tasks (`JOB -t 3-5`), since `-t`
/// takes one range.
pub fn qdel_args(job: &str, indices: &[u32], whole: bool) -> Vec<Vec<String>> {
    if whole {
        return vec![vec![job.to_string()]];
    }
    let mut tasks: Vec<u32> = indices.iter().map(|i| i + 1).collect();
    tasks.sort_unstable();
    tasks.dedup();
    let mut out = Vec::new();
    let mut i = 0;
    while i < tasks.len() {
        let mut j = i;
        while j + 1 < tasks.len() && tasks[j + 1] == tasks[j] + 1 {
            j += 1;
        }
        let range = if i == j {
            tasks[i].to_string()
        } else {
            format!("{}-{}", tasks[i], tasks[j])
        };
        out.push(vec![job.to_string(), "-t".to_string(), range]);
        i = j + 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grid_engine_is_told_from_pbs_and_slurm_wrappers() {
        assert!(is_grid_engine("SGE 8.1.9\nusage: qstat [options]\n"));
        assert!(is_grid_engine("UGE 8.6.4\n"));
        assert!(is_grid_engine("OGS/GE 2011.11p1\n"));
        assert!(is_grid_engine(
            "error: unable to read qmaster name: can't open \"/x/act_qmaster\"\n"
        ));
        assert!(!is_grid_engine("pbs_version = 19.1.3\n"));
        assert!(!is_grid_engine("Version: 6.1.2\n"));
        assert!(!is_grid_engine("Unknown option: version\nUsage:\n"));
        assert!(!is_grid_engine(""));
        assert_eq!(unusable("SGE 8.1.9\nusage"), None);
        assert!(
            unusable("error: unable to read qmaster name: can't open x\n")
                .unwrap()
                .starts_with("unable to read qmaster name")
        );
    }

    #[test]
    fn terse_ids() {
        assert_eq!(parse_qsub_terse("1.1-4:1\n").unwrap(), "1");
        assert_eq!(parse_qsub_terse("4711\n").unwrap(), "4711");
        assert!(parse_qsub_terse("").is_err());
        assert!(parse_qsub_terse("Your job 5 (\"x\") has been submitted\n").is_err());
    }

    #[test]
    fn task_sets_and_states() {
        let set = task_set("3-5:1").unwrap();
        assert!(set.contains(3) && set.contains(5) && !set.contains(6));
        let set = task_set("3,4,7-11:2").unwrap();
        assert!(set.contains(7) && set.contains(9) && !set.contains(8));
        assert!(task_set("x").is_none());
        assert!(task_set("5-3").is_none());
        assert!(task_set("1-9:0").is_none());
        let job = |state: &str| SgeJob {
            number: "1".into(),
            name: "n".into(),
            state: state.into(),
            tasks: None,
        };
        assert_eq!(job("r").job_state(), JobState::Running);
        assert_eq!(job("t").job_state(), JobState::Running);
        assert_eq!(job("dr").job_state(), JobState::Running);
        assert_eq!(job("qw").job_state(), JobState::Queued);
        assert_eq!(job("hqw").job_state(), JobState::Queued);
        assert_eq!(
            job("dqw").job_state(),
            JobState::Queued,
            "deleted before it ran"
        );
        assert_eq!(job("Rr").job_state(), JobState::Running);
        assert!(job("Eqw").job_state().is_final());
    }

    #[test]
    fn qdel_runs_of_tasks() {
        assert_eq!(
            qdel_args("7", &[0, 1, 2], true),
            vec![vec!["7".to_string()]]
        );
        assert_eq!(
            qdel_args("7", &[4, 0, 1, 2, 6], false),
            vec![
                vec!["7".to_string(), "-t".into(), "1-3".into()],
                vec!["7".to_string(), "-t".into(), "5".into()],
                vec!["7".to_string(), "-t".into(), "7".into()],
            ]
        );
    }

    #[test]
    fn garbage_never_panics() {
        for text in [
            "<job_list",
            "<job_list></job_list>",
            "<job_list><JB_job_number>1",
            "\0\u{1}",
        ] {
            let _ = parse_qstat_xml(text);
            let _ = parse_qacct(text);
        }
        assert!(parse_qstat_xml(
            "<job_list><JB_job_number>1</JB_job_number><tasks>99999999999</tasks></job_list>"
        )[0]
        .tasks
        .is_none());
    }
}

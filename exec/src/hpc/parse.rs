//! Parsers for what Slurm and PBS commands print (`sbatch`, `squeue`, `scontrol show job`,
//! `scontrol show config`, `sacct`, `qsub`, `qstat`, `qstat -f`), scheduler detection, and the
//! one [`JobState`] mapping they all share. Every parser is total: any input gives a value or an
//! error, never a panic (fuzzed by the tests below).
//!
//! Formats were taken from real output: see `agent/tests/fixtures/hpc/README.md`.

use std::collections::BTreeMap;

use super::script::Scheduler;

/// Where a job is in its life, as far as the scheduler can tell. The wrapper's exit record in the
/// task directory is the final truth; this is what a caller uses while there is none.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobState {
    /// Waiting to start (pending, held, waiting for a dependency, suspended before running).
    Queued,
    /// Started and not yet over (also: completing, exiting, suspended while running).
    Running,
    /// Ended with exit code 0, by the scheduler's own account.
    Completed,
    /// Ended unsuccessfully, with the reason the scheduler gives.
    Failed {
        /// Why.
        reason: FailReason,
    },
    /// Cancelled by a user or admin (`scancel`, `qdel`).
    Cancelled,
    /// The scheduler says the job is over but not how: Torque-wrapper `C` without exit status,
    /// PBS `F` without `Exit_status`. Never read as success: the exit record decides, and no
    /// record means failed.
    Ended,
    /// A state this parser does not know (a newer scheduler). Treated as still active: the caller
    /// keeps following the job until it leaves the queue or an exit record appears.
    Unknown(String),
}

/// Why a job failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FailReason {
    /// Killed for exceeding its walltime.
    Timeout,
    /// Killed for exceeding its memory.
    OutOfMemory,
    /// The node it ran on failed.
    NodeFail,
    /// Preempted by a higher-priority job (and not requeued).
    Preempted,
    /// The job's script exited with this code.
    NonZeroExit(i32),
    /// Anything else, described in words (boot failure, deadline, a PBS exec error code).
    Other(String),
}

impl JobState {
    /// True once the job can change no more (everything but queued, running, unknown).
    pub fn is_final(&self) -> bool {
        !matches!(
            self,
            JobState::Queued | JobState::Running | JobState::Unknown(_)
        )
    }
}

/// A Slurm `ExitCode=N:S` / sacct `ExitCode` pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SlurmExitCode {
    /// Exit code of the batch script.
    pub code: i32,
    /// Signal that ended it (0 = none).
    pub signal: i32,
}

impl SlurmExitCode {
    /// Parses `3:0`.
    pub fn parse(text: &str) -> Option<SlurmExitCode> {
        let (code, signal) = text.trim().split_once(':')?;
        Some(SlurmExitCode {
            code: code.parse().ok()?,
            signal: signal.parse().ok()?,
        })
    }
}

/// The limit a refused submission ran into, when the scheduler refused it for how many jobs the
/// user, account or QOS may have queued (a wait, not a failure: room frees as jobs end), by the
/// name the scheduler gives it: Slurm's `QOSMaxSubmitJobPerUserLimit`, `AssocMaxSubmitJobLimit`,
/// `QOSGrpSubmitJobsLimit`, ...; PBS's per-user queue limits; Grid Engine's `max_u_jobs`.
/// `None`: refused for another reason.
pub fn submit_limit(stderr: &str) -> Option<String> {
    // Slurm names the limit on the first line; the second is the same for every policy
    // (`... (job submit limit, user's size and/or time limits)`), a wall time over the QOS's
    // maximum included, which no job ending makes room for.
    let mut named = stderr
        .split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|w| (w.starts_with("QOS") || w.starts_with("Assoc")) && w.ends_with("Limit"));
    if let Some(name) = named.next() {
        return name.contains("Submit").then(|| name.to_string());
    }
    let lower = stderr.to_ascii_lowercase();
    if lower.contains("job violates accounting/qos policy") && lower.contains("submit limit") {
        return Some("job submit limit (accounting/QOS policy)".into());
    }
    // Torque: "Maximum number of jobs already in queue for user"; PBS Pro: "would exceed
    // queue's per-user limit" / "would exceed complex's per-user limit".
    if lower.contains("maximum number of jobs already in queue") {
        return Some("maximum number of jobs already in queue".into());
    }
    if lower.contains("would exceed") && lower.contains("per-user limit") {
        return Some("per-user limit of queued jobs".into());
    }
    // Grid Engine: "job rejected: only 10 jobs are allowed per user (current job count: 10)".
    if lower.contains("jobs are allowed per user") {
        return Some("max_u_jobs (jobs allowed per user)".into());
    }
    None
}

/// Whether a Slurm state (as printed) is one a started job is put back in to run again:
/// pending (after `scontrol requeue`, a preemption in REQUEUE mode, a node failure of a job
/// submitted with `--requeue`) or one of the requeue states. Not `SUSPENDED`/`STOPPED`: those
/// go on where they stopped.
pub fn slurm_waiting_to_restart(raw: &str) -> bool {
    matches!(
        slurm_state_word(raw).as_str(),
        "PENDING" | "REQUEUED" | "REQUEUE_HOLD" | "REQUEUE_FED"
    )
}

/// A Slurm state as printed, reduced to its name: without a `by UID` suffix or `+` marker,
/// upper case.
fn slurm_state_word(raw: &str) -> String {
    raw.split_whitespace()
        .next()
        .unwrap_or("")
        .trim_end_matches('+')
        .to_ascii_uppercase()
}

/// Maps a Slurm state name (`squeue %T`, `scontrol JobState`, `sacct State`, with or without a
/// `by UID` suffix or `+` marker) to a [`JobState`].
pub fn slurm_state(raw: &str, exit: Option<SlurmExitCode>) -> JobState {
    let word = slurm_state_word(raw);
    match word.as_str() {
        "PENDING" | "REQUEUED" | "REQUEUE_HOLD" | "REQUEUE_FED" | "RESV_DEL_HOLD" | "SUSPENDED"
        | "STOPPED" => JobState::Queued,
        "RUNNING" | "CONFIGURING" | "COMPLETING" | "RESIZING" | "SIGNALING" | "STAGE_OUT" => {
            JobState::Running
        }
        "COMPLETED" => JobState::Completed,
        "CANCELLED" => JobState::Cancelled,
        "TIMEOUT" => JobState::Failed {
            reason: FailReason::Timeout,
        },
        "OUT_OF_MEMORY" => JobState::Failed {
            reason: FailReason::OutOfMemory,
        },
        "NODE_FAIL" => JobState::Failed {
            reason: FailReason::NodeFail,
        },
        "PREEMPTED" => JobState::Failed {
            reason: FailReason::Preempted,
        },
        "FAILED" => JobState::Failed {
            reason: match exit {
                Some(e) if e.code != 0 => FailReason::NonZeroExit(e.code),
                Some(e) if e.signal != 0 => {
                    FailReason::Other(format!("killed by signal {}", e.signal))
                }
                _ => FailReason::Other("failed".into()),
            },
        },
        "BOOT_FAIL" | "DEADLINE" | "REVOKED" | "SPECIAL_EXIT" => JobState::Failed {
            reason: FailReason::Other(word.to_ascii_lowercase()),
        },
        _ => JobState::Unknown(raw.trim().to_string()),
    }
}

/// Maps a PBS Pro / Torque `job_state` letter and exit status to a [`JobState`].
///
/// PBS Pro `Exit_status`: 0 ok; > 256 killed by signal (status - 256); negative = a PBS exec
/// code (-29 walltime, -27/-26 memory, -25/-24 cpus, others: failed to start). Torque:
/// 0 ok, > 128 killed by a signal (shell style), negative = its own exec codes.
pub fn pbs_state(letter: &str, exit_status: Option<i32>) -> JobState {
    match letter.trim() {
        "Q" | "H" | "W" | "T" | "M" | "U" | "S" => JobState::Queued,
        "R" | "E" | "B" => JobState::Running,
        "F" | "X" | "C" => match exit_status {
            None => JobState::Ended,
            Some(0) => JobState::Completed,
            Some(-29) => JobState::Failed {
                reason: FailReason::Timeout,
            },
            Some(-27) | Some(-26) => JobState::Failed {
                reason: FailReason::OutOfMemory,
            },
            Some(code) if code < 0 => JobState::Failed {
                reason: FailReason::Other(format!("scheduler exit status {code}")),
            },
            Some(code) if code > 256 => JobState::Failed {
                reason: FailReason::Other(format!("killed by signal {}", code - 256)),
            },
            Some(code) => JobState::Failed {
                reason: FailReason::NonZeroExit(code),
            },
        },
        other => JobState::Unknown(other.to_string()),
    }
}

/// A parse failure: what was expected and the offending text (truncated).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot parse {what} output: {why} in {text:?}")]
pub struct ParseError {
    /// Which command's output.
    pub what: &'static str,
    /// What was wrong.
    pub why: &'static str,
    /// The offending text (at most 200 bytes).
    pub text: String,
}

fn perr(what: &'static str, why: &'static str, text: &str) -> ParseError {
    let mut end = text.len().min(200);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    ParseError {
        what,
        why,
        text: text[..end].to_string(),
    }
}

/// What a submission command printed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Submitted {
    /// The id to give `squeue -j`/`scancel`/`qstat`/`qdel` (Torque: with `[]` and server).
    pub job_id: String,
    /// The numeric part of the id.
    pub number: u64,
    /// `sbatch --parsable` on a multi-cluster site: `123;cluster`.
    pub cluster: Option<String>,
}

/// Parses `sbatch` output: `Submitted batch job 123` or `--parsable` `123` / `123;cluster`.
/// Warnings printed before the id (some sites do) are skipped.
pub fn parse_sbatch(stdout: &str) -> Result<Submitted, ParseError> {
    for line in stdout.lines().rev() {
        let line = line.trim();
        let id_part = line.strip_prefix("Submitted batch job ").unwrap_or(line);
        let (id, cluster) = match id_part.split_once(';') {
            Some((id, cluster)) => (id, Some(cluster.trim().to_string())),
            None => (id_part.split_whitespace().next().unwrap_or(""), None),
        };
        if let Ok(number) = id.trim().parse::<u64>() {
            return Ok(Submitted {
                job_id: id.trim().to_string(),
                number,
                cluster: cluster.filter(|c| !c.is_empty()),
            });
        }
    }
    Err(perr("sbatch", "no job id", stdout))
}

/// Parses `qsub` output: PBS Pro `123.server`, `123[].server` for arrays; Torque the same;
/// Slurm's qsub wrapper a bare `123`.
pub fn parse_qsub(stdout: &str) -> Result<Submitted, ParseError> {
    for line in stdout.lines().rev() {
        let id = line.trim();
        let digits: String = id.chars().take_while(|c| c.is_ascii_digit()).collect();
        if digits.is_empty() || id.contains(char::is_whitespace) {
            continue;
        }
        let rest = &id[digits.len()..];
        if !(rest.is_empty() || rest.starts_with('.') || rest.starts_with('[')) {
            continue;
        }
        if let Ok(number) = digits.parse::<u64>() {
            return Ok(Submitted {
                job_id: id.to_string(),
                number,
                cluster: None,
            });
        }
    }
    Err(perr("qsub", "no job id", stdout))
}

/// Array element indices as inclusive ranges (`3-19%3` → `[(3, 19)]`, `1,4-5` → two ranges).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexSet {
    /// Inclusive ranges, in the order printed.
    pub ranges: Vec<(u32, u32)>,
    /// The `%K` throttle printed with a pending range.
    pub throttle: Option<u32>,
}

impl IndexSet {
    /// Parses `5`, `[5-9%2]`, `5-9%2`, `1,3,5-7`, `0-99:2` (a step: expanded here).
    pub fn parse(text: &str) -> Option<IndexSet> {
        let text = text.trim();
        let text = text
            .strip_prefix('[')
            .and_then(|t| t.strip_suffix(']'))
            .unwrap_or(text);
        let (list, throttle) = match text.split_once('%') {
            Some((list, k)) => (list, Some(k.parse().ok()?)),
            None => (text, None),
        };
        let mut ranges = Vec::new();
        for part in list.split(',') {
            let (span, step) = match part.split_once(':') {
                Some((span, step)) => (span, step.parse::<u32>().ok().filter(|s| *s > 0)?),
                None => (part, 1),
            };
            let (lo, hi) = match span.split_once('-') {
                Some((lo, hi)) => (lo.parse::<u32>().ok()?, hi.parse::<u32>().ok()?),
                None => {
                    let one = span.parse::<u32>().ok()?;
                    (one, one)
                }
            };
            if lo > hi {
                return None;
            }
            if step == 1 {
                ranges.push((lo, hi));
            } else {
                // Stepped ranges are rare (we never submit them); bound the expansion.
                if (hi - lo) / step > 1_000_000 {
                    return None;
                }
                ranges.extend((lo..=hi).step_by(step as usize).map(|i| (i, i)));
            }
        }
        Some(IndexSet { ranges, throttle })
    }

    /// Number of indices.
    pub fn len(&self) -> u64 {
        self.ranges
            .iter()
            .map(|(lo, hi)| (*hi - *lo) as u64 + 1)
            .sum()
    }

    /// True when there is no index.
    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }

    /// Every index, in order printed.
    pub fn iter(&self) -> impl Iterator<Item = u32> + '_ {
        self.ranges.iter().flat_map(|(lo, hi)| *lo..=*hi)
    }

    /// Whether `index` is in the set.
    pub fn contains(&self, index: u32) -> bool {
        self.ranges
            .iter()
            .any(|(lo, hi)| (*lo..=*hi).contains(&index))
    }
}

/// The `squeue` format hsm uses: `%i` job id as shown (`123_4`, `123_[5-9%2]`, `7`), `%F` array
/// job id (= own id when not an array), `%K` array index or pending range (`N/A` when not an
/// array), `%A` the element's own job id, `%T` state name, `%r` reason. The reason comes last
/// because it is the only free-text field. Run as
/// `squeue -h -t all -o SQUEUE_FORMAT -j ID,ID,...` (or `-u USER`; `-n NAME` for job names).
pub const SQUEUE_FORMAT: &str = "%i|%F|%K|%A|%T|%r";

/// One line of `squeue -o SQUEUE_FORMAT`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SqueueRow {
    /// The array's job id (what was submitted), or the job's own id when not an array.
    pub array_job_id: String,
    /// Which elements this row covers: `None` for a plain job, one index for a started element,
    /// a range for pending (or cancelled-while-pending) elements.
    pub indices: Option<IndexSet>,
    /// The job id of a started element (for a pending range: the array's own id).
    pub job_id: String,
    /// The state, mapped.
    pub state: JobState,
    /// The state as printed.
    pub raw_state: String,
    /// Slurm's reason (`None`, `JobArrayTaskLimit`, `Priority`, ...).
    pub reason: String,
}

/// Rows that could be read, and lines that could not (with their 1-based line number): a stray
/// warning line must not hide every other job of the poll.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rows<T> {
    /// Parsed rows.
    pub rows: Vec<T>,
    /// Lines not understood.
    pub bad_lines: Vec<(usize, String)>,
}

impl<T> Default for Rows<T> {
    fn default() -> Self {
        Rows {
            rows: Vec::new(),
            bad_lines: Vec::new(),
        }
    }
}

/// Parses `squeue -h -o SQUEUE_FORMAT` output.
pub fn parse_squeue(stdout: &str) -> Rows<SqueueRow> {
    let mut out = Rows::default();
    for (n, line) in stdout.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        match parse_squeue_line(line) {
            Some(row) => out.rows.push(row),
            None => out.bad_lines.push((n + 1, line.to_string())),
        }
    }
    out
}

fn parse_squeue_line(line: &str) -> Option<SqueueRow> {
    let mut fields = line.splitn(6, '|');
    let shown = fields.next()?.trim();
    let array_job_id = fields.next()?.trim();
    let index_text = fields.next()?.trim();
    let job_id = fields.next()?.trim();
    let raw_state = fields.next()?.trim();
    let reason = fields.next()?.trim();
    if array_job_id.is_empty()
        || job_id.is_empty()
        || raw_state.is_empty()
        || !array_job_id.bytes().all(|b| b.is_ascii_digit())
    {
        return None;
    }
    let indices = if index_text == "N/A" || index_text.is_empty() {
        // %K is N/A for plain jobs; %i still carries `123_4` on some versions.
        match shown.split_once('_') {
            Some((_, idx)) => Some(IndexSet::parse(idx)?),
            None => None,
        }
    } else {
        Some(IndexSet::parse(index_text)?)
    };
    Some(SqueueRow {
        array_job_id: array_job_id.to_string(),
        indices,
        job_id: job_id.to_string(),
        state: slurm_state(raw_state, None),
        raw_state: raw_state.to_string(),
        reason: reason.to_string(),
    })
}

/// True when `squeue`/`scontrol` said the ids asked about are gone (older than `MinJobAge`):
/// `slurm_load_jobs error: Invalid job id specified`. Not a failure of the command.
pub fn is_invalid_job_id(stderr: &str) -> bool {
    stderr.contains("Invalid job id specified")
}

/// True when `qstat JOB...` failed only because the jobs asked about are gone: Torque and
/// Slurm's wrappers say `Unknown Job Id` (or `invalid job`), PBS Pro with job history kept says
/// `Job has finished, use -x or -H to obtain historical job information` (exit 35). Not a
/// failure of the command.
pub fn qstat_says_gone(stderr: &str) -> bool {
    let stderr = stderr.to_ascii_lowercase();
    stderr.contains("unknown job")
        || stderr.contains("invalid job")
        || stderr.contains("job has finished")
}

/// One job record of `scontrol show job`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScontrolJob {
    /// `JobId` (an array element's own id).
    pub job_id: String,
    /// `ArrayJobId`, for array elements.
    pub array_job_id: Option<String>,
    /// `ArrayTaskId`: one index for a started element, a range for the pending rest.
    pub array_task_id: Option<IndexSet>,
    /// `JobName`.
    pub job_name: Option<String>,
    /// The state, mapped (with the exit code for `FAILED`).
    pub state: JobState,
    /// `JobState` as printed.
    pub raw_state: String,
    /// `Reason`.
    pub reason: Option<String>,
    /// `ExitCode`.
    pub exit_code: Option<SlurmExitCode>,
    /// Every `Key=Value` of the record.
    pub fields: BTreeMap<String, String>,
}

/// Fields whose value is the rest of their line (they may contain spaces and `=`).
const SCONTROL_LINE_FIELDS: &[&str] = &[
    "Command",
    "WorkDir",
    "StdErr",
    "StdIn",
    "StdOut",
    "Comment",
    "AdminComment",
    "SystemComment",
    "JobName",
    "Reason",
];

/// Parses `scontrol show job [ID]`: records start with `JobId=` and hold `Key=Value` words over
/// several lines.
pub fn parse_scontrol_job(stdout: &str) -> Result<Vec<ScontrolJob>, ParseError> {
    let mut records: Vec<BTreeMap<String, String>> = Vec::new();
    for line in stdout.lines() {
        let trimmed = line.trim();
        if trimmed.is_empty() {
            continue;
        }
        if trimmed.starts_with("JobId=") {
            records.push(BTreeMap::new());
        }
        let Some(fields) = records.last_mut() else {
            return Err(perr(
                "scontrol show job",
                "text before the first JobId=",
                line,
            ));
        };
        split_key_values(trimmed, fields);
    }
    records
        .into_iter()
        .map(|fields| {
            let job_id = fields
                .get("JobId")
                .filter(|v| !v.is_empty())
                .cloned()
                .ok_or_else(|| perr("scontrol show job", "empty JobId", ""))?;
            let raw_state = fields.get("JobState").cloned().unwrap_or_default();
            let exit_code = fields.get("ExitCode").and_then(|v| SlurmExitCode::parse(v));
            Ok(ScontrolJob {
                array_job_id: fields.get("ArrayJobId").cloned(),
                array_task_id: fields.get("ArrayTaskId").and_then(|v| IndexSet::parse(v)),
                job_name: fields.get("JobName").cloned(),
                state: slurm_state(&raw_state, exit_code),
                reason: fields.get("Reason").cloned(),
                raw_state,
                exit_code,
                job_id,
                fields,
            })
        })
        .collect()
}

/// Splits one `scontrol` line into `Key=Value` pairs. A word without `=` belongs to the value
/// before it (`Command=/x/run.sh 40`); a known free-text field takes the rest of the line.
fn split_key_values(line: &str, fields: &mut BTreeMap<String, String>) {
    let mut rest = line;
    let mut last_key: Option<String> = None;
    while !rest.is_empty() {
        let (word, after) = match rest.find(' ') {
            Some(i) => (&rest[..i], rest[i + 1..].trim_start()),
            None => (rest, ""),
        };
        match word.split_once('=') {
            Some((key, value)) if is_key(key) => {
                if SCONTROL_LINE_FIELDS.contains(&key) && key != "Reason" && key != "JobName" {
                    fields.insert(key.to_string(), rest[key.len() + 1..].to_string());
                    return;
                }
                // `Reason=` and `JobName=` run to the next `Key=` word; their values may have
                // spaces but scontrol never puts an `=` in them unescaped on the same line.
                fields.insert(key.to_string(), value.to_string());
                last_key = Some(key.to_string());
            }
            _ => {
                if let Some(key) = &last_key {
                    if let Some(value) = fields.get_mut(key) {
                        value.push(' ');
                        value.push_str(word);
                    }
                }
            }
        }
        rest = after;
    }
}

fn is_key(key: &str) -> bool {
    key.bytes().next().is_some_and(|b| b.is_ascii_alphabetic())
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_/:.()".contains(&b))
}

/// What hsm reads from `scontrol show config`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SlurmConfig {
    /// `MaxArraySize`: array indices must be below this.
    pub max_array_size: Option<u32>,
    /// `MaxJobCount`: jobs the controller holds at once.
    pub max_job_count: Option<u64>,
    /// `MinJobAge` in seconds: how long finished jobs stay visible to squeue/scontrol.
    pub min_job_age: Option<u64>,
    /// `SLURM_VERSION`.
    pub version: Option<String>,
    /// `AccountingStorageType` (`accounting_storage/none` = sacct has nothing).
    pub accounting_storage: Option<String>,
    /// `ClusterName` (what `sacctmgr` names the cluster's associations by).
    pub cluster_name: Option<String>,
    /// Every `Key = Value` line.
    pub fields: BTreeMap<String, String>,
}

impl SlurmConfig {
    /// False when this cluster keeps no accounting (sacct would only print an error).
    pub fn has_accounting(&self) -> bool {
        self.accounting_storage
            .as_deref()
            .is_some_and(|s| s != "accounting_storage/none")
    }
}

/// Parses `scontrol show config` (`Key = Value` lines; units like `300 sec` are stripped).
pub fn parse_scontrol_config(stdout: &str) -> SlurmConfig {
    let mut fields = BTreeMap::new();
    for line in stdout.lines() {
        if let Some((key, value)) = line.split_once(" = ") {
            let key = key.trim();
            if is_key(key) {
                fields.insert(key.to_string(), value.trim().to_string());
            }
        }
    }
    let first_number = |key: &str| {
        fields
            .get(key)
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse::<u64>().ok())
    };
    SlurmConfig {
        max_array_size: first_number("MaxArraySize").and_then(|v| u32::try_from(v).ok()),
        max_job_count: first_number("MaxJobCount"),
        min_job_age: first_number("MinJobAge"),
        version: fields.get("SLURM_VERSION").cloned(),
        accounting_storage: fields.get("AccountingStorageType").cloned(),
        cluster_name: fields.get("ClusterName").cloned(),
        fields,
    }
}

/// `sacctmgr -n -P show assoc user=U format=SACCTMGR_ASSOC_FORMAT`.
pub const SACCTMGR_ASSOC_FORMAT: &str = "Cluster,Account,User,MaxSubmit,QOS,DefaultQOS";
/// `sacctmgr -n -P show qos format=SACCTMGR_QOS_FORMAT`.
pub const SACCTMGR_QOS_FORMAT: &str = "Name,MaxSubmitPU";

/// The most jobs (array elements count one each) the cluster lets the user have queued or
/// running, as `sacctmgr` shows it (`None` where nothing limits them): the association's
/// `MaxSubmit` on `cluster` (for `account`, the jobs' own: `hpc.account`, else the user's default) and the per-user
/// `MaxSubmitPU` of the QOS the jobs run under (`job_qos`, else the association's default QOS,
/// else `normal`), the smaller. `assoc` and `qos` are the outputs of the two `sacctmgr` calls
/// with [`SACCTMGR_ASSOC_FORMAT`] and [`SACCTMGR_QOS_FORMAT`]; lines that do not read are skipped.
pub fn sacctmgr_submit_cap(
    assoc: &str,
    qos: &str,
    cluster: &str,
    account: Option<&str>,
    job_qos: Option<&str>,
) -> Option<u32> {
    let number = |text: &str| text.trim().parse::<u32>().ok();
    let rows: Vec<Vec<&str>> = assoc
        .lines()
        .map(|l| l.split('|').collect::<Vec<_>>())
        .filter(|f| f.len() >= 6 && f[0] == cluster)
        .filter(|f| account.is_none_or(|a| f[1] == a))
        .collect();
    let assoc_cap = rows.iter().filter_map(|f| number(f[3])).min();
    let default_qos = rows
        .iter()
        .find_map(|f| f.get(5).map(|q| q.trim()).filter(|q| !q.is_empty()));
    let job_qos = job_qos.or(default_qos).unwrap_or("normal");
    let qos_cap = qos
        .lines()
        .map(|l| l.split('|').collect::<Vec<_>>())
        .find(|f| f.len() >= 2 && f[0] == job_qos)
        .and_then(|f| number(f[1]));
    match (assoc_cap, qos_cap) {
        (Some(a), Some(q)) => Some(a.min(q)),
        (a, q) => a.or(q),
    }
}

/// The `sacct` invocation hsm uses: `sacct -n -P -o SACCT_FORMAT -j ID,...`.
pub const SACCT_FORMAT: &str = "JobID,State,ExitCode";

/// One line of `sacct -n -P -o JobID,State,ExitCode`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SacctRow {
    /// The array job id (or the job id when not an array).
    pub array_job_id: String,
    /// The element index (or pending range) for array jobs.
    pub indices: Option<IndexSet>,
    /// `batch`, `extern`, `0`, ... for a job step line; `None` for the job itself.
    pub step: Option<String>,
    /// The state, mapped.
    pub state: JobState,
    /// The state as printed (`CANCELLED by 0`).
    pub raw_state: String,
    /// The exit code.
    pub exit_code: Option<SlurmExitCode>,
}

/// Parses `sacct -n -P -o JobID,State,ExitCode` (pipe separated, no header).
pub fn parse_sacct(stdout: &str) -> Rows<SacctRow> {
    let mut out = Rows::default();
    for (n, line) in stdout.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        match parse_sacct_line(line) {
            Some(row) => out.rows.push(row),
            None => out.bad_lines.push((n + 1, line.to_string())),
        }
    }
    out
}

fn parse_sacct_line(line: &str) -> Option<SacctRow> {
    let mut fields = line.split('|');
    let job = fields.next()?.trim();
    let raw_state = fields.next()?.trim();
    let exit_code = SlurmExitCode::parse(fields.next()?);
    let (job, step) = match job.split_once('.') {
        Some((job, step)) => (job, Some(step.to_string())),
        None => (job, None),
    };
    let (array_job_id, indices) = match job.split_once('_') {
        Some((id, idx)) => (id, Some(IndexSet::parse(idx)?)),
        None => (job, None),
    };
    if array_job_id.is_empty() || !array_job_id.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(SacctRow {
        array_job_id: array_job_id.to_string(),
        indices,
        step,
        state: slurm_state(raw_state, exit_code),
        raw_state: raw_state.to_string(),
        exit_code,
    })
}

/// True when `sacct` failed because the cluster keeps no accounting or its database is
/// unreachable: the caller falls back to `scontrol show job` and the exit records.
pub fn sacct_unavailable(stderr: &str) -> bool {
    [
        "accounting storage is disabled",
        "Problem talking to the database",
        "slurmdbd",
        "Connection refused",
    ]
    .iter()
    .any(|needle| stderr.contains(needle))
}

/// One job block of `qstat -f` (PBS Pro, Torque, or Slurm's qstat wrapper).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QstatJob {
    /// The id after `Job Id:` (`123[4].server`, `123.server`, `15`).
    pub job_id: String,
    /// `Job_Name`.
    pub name: Option<String>,
    /// The state, mapped with the exit status.
    pub state: JobState,
    /// `job_state` as printed.
    pub raw_state: String,
    /// `Exit_status` (PBS Pro) or `exit_status` (Torque).
    pub exit_status: Option<i32>,
    /// The element index: PBS Pro `array_index`, Torque `job_array_id`, or from `123[4]`.
    pub array_index: Option<u32>,
    /// PBS Pro `array_indices_submitted` / Torque `job_array_request` of an array parent.
    pub array_indices_submitted: Option<IndexSet>,
    /// Every attribute, continuation lines joined.
    pub attributes: BTreeMap<String, String>,
}

/// Parses `qstat -f` output: blocks starting `Job Id: ID`, attributes `key = value` indented,
/// values continued on lines indented by a tab (joined without a separator, as PBS wraps them).
pub fn parse_qstat_full(stdout: &str) -> Result<Vec<QstatJob>, ParseError> {
    let mut blocks: Vec<(String, BTreeMap<String, String>)> = Vec::new();
    let mut last_key: Option<String> = None;
    for line in stdout.lines() {
        if line.trim().is_empty() {
            continue;
        }
        if let Some(id) = line.strip_prefix("Job Id:") {
            let id = id.trim();
            if id.is_empty() {
                return Err(perr("qstat -f", "empty Job Id", line));
            }
            blocks.push((id.to_string(), BTreeMap::new()));
            last_key = None;
            continue;
        }
        let Some((_, attributes)) = blocks.last_mut() else {
            return Err(perr("qstat -f", "text before the first Job Id:", line));
        };
        let is_attribute = line.starts_with(char::is_whitespace)
            && line
                .split_once(" = ")
                .is_some_and(|(key, _)| is_key(key.trim()) && !key.trim().is_empty());
        if is_attribute {
            let (key, value) = line.split_once(" = ").unwrap_or_default();
            let key = key.trim().to_string();
            attributes.insert(key.clone(), value.trim().to_string());
            last_key = Some(key);
        } else if line.starts_with(char::is_whitespace) {
            // Continuation: PBS breaks long values at a fixed width and indents with a tab.
            if let Some(value) = last_key.as_ref().and_then(|k| attributes.get_mut(k)) {
                value.push_str(line.trim());
            }
        } else {
            return Err(perr("qstat -f", "unindented line inside a job block", line));
        }
    }
    Ok(blocks
        .into_iter()
        .map(|(job_id, attributes)| {
            let get = |keys: &[&str]| keys.iter().find_map(|k| attributes.get(*k)).cloned();
            let exit_status = get(&["Exit_status", "exit_status"]).and_then(|v| v.parse().ok());
            let raw_state = get(&["job_state"]).unwrap_or_default();
            let array_index = get(&["array_index", "job_array_id"])
                .and_then(|v| v.parse().ok())
                .or_else(|| bracket_index(&job_id));
            QstatJob {
                name: get(&["Job_Name"]),
                state: pbs_state(&raw_state, exit_status),
                array_indices_submitted: get(&["array_indices_submitted", "job_array_request"])
                    .and_then(|v| IndexSet::parse(&v)),
                raw_state,
                exit_status,
                array_index,
                job_id,
                attributes,
            }
        })
        .collect())
}

/// `123[4].server` → 4.
fn bracket_index(job_id: &str) -> Option<u32> {
    let open = job_id.find('[')?;
    let close = job_id[open..].find(']')? + open;
    job_id[open + 1..close].parse().ok()
}

/// The job id on the first line that has one, in `squeue -o %F` (array job ids) or
/// `sacct -X -o JobID` output (`40_[0-9]`, `40_3`, `41`): the part before `_`.
pub fn first_job_id(stdout: &str) -> Option<String> {
    stdout.lines().find_map(|line| {
        let id = line.trim().split('_').next().unwrap_or("");
        (!id.is_empty() && id.bytes().all(|b| b.is_ascii_digit())).then(|| id.to_string())
    })
}

/// The job id on the first line of `qselect` output, an array element's (`123[4].server`) made
/// its array's (`123[].server`), as `qsub` printed it.
pub fn pbs_parent_id(stdout: &str) -> Option<String> {
    let id = stdout.lines().map(str::trim).find(|l| !l.is_empty())?;
    Some(match id.split_once('[') {
        Some((head, tail)) => match tail.split_once(']') {
            Some((_, rest)) => format!("{head}[]{rest}"),
            None => id.to_string(),
        },
        None => id.to_string(),
    })
}

/// The id `qsub` gave the job named `name`, from `qstat -f` of every job: an array's parent
/// (`123[].server`) as listed, or made from an element's id (`123[4].server`); where the array
/// shows only as its elements' own jobs (Slurm's qstat wrapper) the lowest id, which is the
/// array's (Slurm keeps it for the last element).
pub fn pbs_job_named(jobs: &[QstatJob], name: &str) -> Option<String> {
    let named: Vec<&QstatJob> = jobs
        .iter()
        .filter(|j| j.name.as_deref() == Some(name))
        .collect();
    if let Some(parent) = named.iter().find(|j| j.job_id.contains("[]")) {
        return Some(parent.job_id.clone());
    }
    if let Some(element) = named.iter().find(|j| j.job_id.contains('[')) {
        let (head, tail) = element.job_id.split_once('[')?;
        let (_, rest) = tail.split_once(']')?;
        return Some(format!("{head}[]{rest}"));
    }
    let number = |j: &&QstatJob| {
        j.job_id
            .split('.')
            .next()
            .and_then(|n| n.parse::<u64>().ok())
            .unwrap_or(u64::MAX)
    };
    named
        .into_iter()
        .min_by_key(number)
        .map(|j| j.job_id.clone())
}

/// One row of the default `qstat` table (`Job id  Name  User  Time Use  S  Queue`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QstatRow {
    /// The job id as printed (PBS may truncate long ids with `*`).
    pub job_id: String,
    /// The state letter.
    pub raw_state: String,
    /// The state, mapped (no exit status in this view: finished jobs map to `Ended`).
    pub state: JobState,
    /// The queue.
    pub queue: String,
}

/// Parses the default `qstat` / `qstat -t` / `qstat -J -t` table. Header and separator lines are
/// skipped; the state is the second-to-last column so job names with spaces do not matter.
pub fn parse_qstat_list(stdout: &str) -> Rows<QstatRow> {
    let mut out = Rows::default();
    for (n, line) in stdout.lines().enumerate() {
        let trimmed = line.trim();
        if trimmed.is_empty()
            || trimmed.starts_with("Job id")
            || trimmed.starts_with("Job ID")
            || trimmed.starts_with('-')
            || trimmed.ends_with(':')
        {
            continue;
        }
        let words: Vec<&str> = trimmed.split_whitespace().collect();
        let ok = words.len() >= 6
            && words[0].starts_with(|c: char| c.is_ascii_digit())
            && words[words.len() - 2].len() == 1;
        if ok {
            let raw_state = words[words.len() - 2].to_string();
            out.rows.push(QstatRow {
                job_id: words[0].to_string(),
                state: pbs_state(&raw_state, None),
                raw_state,
                queue: words[words.len() - 1].to_string(),
            });
        } else {
            out.bad_lines.push((n + 1, line.to_string()));
        }
    }
    out
}

/// Which scheduler this machine talks to, from what `sbatch --version` and `qstat --version`
/// printed (`None` = the command is absent or failed). Slurm wins: Slurm sites often ship qsub/qstat
/// wrappers, whose `qstat --version` is an "Unknown option" usage text. PBS Pro/OpenPBS print
/// `pbs_version = 19.1.3`; Torque prints `Version: 6.1.2` (older: `version: 4.2.10`); Grid
/// Engine `SGE 8.1.9` and the like ([`super::sge::is_grid_engine`]), all three as `qstat`.
pub fn detect(sbatch_version: Option<&str>, qstat_version: Option<&str>) -> Option<Scheduler> {
    if let Some(out) = sbatch_version {
        let first = out.trim_start().to_ascii_lowercase();
        if first.starts_with("slurm") {
            return Some(Scheduler::Slurm);
        }
    }
    let out = qstat_version?;
    if super::sge::is_grid_engine(out) {
        return Some(Scheduler::Sge);
    }
    for line in out.lines() {
        let lower = line.trim().to_ascii_lowercase();
        if lower.starts_with("pbs_version") {
            return Some(Scheduler::PbsPro);
        }
        if lower.starts_with("version:") {
            return Some(Scheduler::Torque);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qstat_saying_its_jobs_are_gone_is_no_failure() {
        assert!(qstat_says_gone("qstat: Unknown Job Id 12.server\n"));
        assert!(qstat_says_gone(
            "qstat: 123[].pbs1 Job has finished, use -x or -H to obtain historical job information\n"
        ));
        assert!(!qstat_says_gone(
            "Can't locate Slurmdb.pm in @INC (you may need to install the Slurmdb module)\n"
        ));
        assert!(!qstat_says_gone(
            "qstat: cannot connect to server pbs1 (errno=111)\n"
        ));
    }

    #[test]
    fn first_job_id_reads_squeue_and_sacct_lines() {
        // `sacct -X -o JobID` forms (Slurm's documented JobID syntax; no accounting here to
        // capture them): a pending range, an element, a plain job.
        assert_eq!(first_job_id("40_[0-9]\n40_3\n").as_deref(), Some("40"));
        assert_eq!(first_job_id("\n  41\n").as_deref(), Some("41"));
        assert_eq!(
            first_job_id("JobID\n7\n").as_deref(),
            Some("7"),
            "a header is skipped"
        );
        assert_eq!(first_job_id("_3\n"), None);
    }

    #[test]
    fn pbs_parent_id_reads_qselect_lines() {
        // qselect prints one job id per line (PBS Pro and Torque document the same form).
        assert_eq!(
            pbs_parent_id("4242[].pbs01\n").as_deref(),
            Some("4242[].pbs01")
        );
        assert_eq!(
            pbs_parent_id("\n1001[3].torque01\n1001[4].torque01\n").as_deref(),
            Some("1001[].torque01")
        );
        assert_eq!(pbs_parent_id("77.srv\n").as_deref(), Some("77.srv"));
        assert_eq!(pbs_parent_id(""), None, "no job of that name");
    }

    #[test]
    fn pbs_job_named_makes_the_parent_id_from_an_element() {
        let jobs = parse_qstat_full(
            "Job Id: 77[2].srv\n    Job_Name = n\n    job_state = R\nJob Id: 78.srv\n    Job_Name = m\n",
        )
        .unwrap();
        assert_eq!(pbs_job_named(&jobs, "n").as_deref(), Some("77[].srv"));
        assert_eq!(pbs_job_named(&jobs, "m").as_deref(), Some("78.srv"));
        assert_eq!(pbs_job_named(&jobs, "x"), None);
    }

    #[test]
    fn slurm_states_map() {
        let exit = |code, signal| Some(SlurmExitCode { code, signal });
        assert_eq!(slurm_state("PENDING", None), JobState::Queued);
        assert_eq!(slurm_state("COMPLETING", None), JobState::Running);
        assert_eq!(slurm_state("COMPLETED", exit(0, 0)), JobState::Completed);
        assert_eq!(slurm_state("CANCELLED by 0", None), JobState::Cancelled);
        assert_eq!(slurm_state("CANCELLED+", None), JobState::Cancelled);
        assert_eq!(
            slurm_state("FAILED", exit(3, 0)),
            JobState::Failed {
                reason: FailReason::NonZeroExit(3)
            }
        );
        assert_eq!(
            slurm_state("OUT_OF_MEMORY", exit(0, 125)),
            JobState::Failed {
                reason: FailReason::OutOfMemory
            }
        );
        for (s, r) in [
            ("TIMEOUT", FailReason::Timeout),
            ("NODE_FAIL", FailReason::NodeFail),
            ("PREEMPTED", FailReason::Preempted),
        ] {
            assert_eq!(slurm_state(s, None), JobState::Failed { reason: r });
        }
        assert_eq!(
            slurm_state("WEIRD_NEW", None),
            JobState::Unknown("WEIRD_NEW".into())
        );
        assert!(!slurm_state("", None).is_final());
    }

    #[test]
    fn pbs_states_map() {
        assert_eq!(pbs_state("Q", None), JobState::Queued);
        assert_eq!(pbs_state("R", None), JobState::Running);
        assert_eq!(pbs_state("F", Some(0)), JobState::Completed);
        assert_eq!(pbs_state("C", None), JobState::Ended);
        assert_eq!(
            pbs_state("F", Some(-29)),
            JobState::Failed {
                reason: FailReason::Timeout
            }
        );
        assert_eq!(
            pbs_state("F", Some(2)),
            JobState::Failed {
                reason: FailReason::NonZeroExit(2)
            }
        );
        assert_eq!(
            pbs_state("F", Some(271)),
            JobState::Failed {
                reason: FailReason::Other("killed by signal 15".into())
            }
        );
    }

    #[test]
    fn index_sets() {
        let set = IndexSet::parse("[5-9%2]").unwrap();
        assert_eq!(set.ranges, vec![(5, 9)]);
        assert_eq!(set.throttle, Some(2));
        assert_eq!(set.len(), 5);
        assert!(set.contains(7) && !set.contains(4));
        let set = IndexSet::parse("1,3,5-7").unwrap();
        assert_eq!(set.iter().collect::<Vec<_>>(), vec![1, 3, 5, 6, 7]);
        assert_eq!(
            IndexSet::parse("0-6:3").unwrap().iter().collect::<Vec<_>>(),
            vec![0, 3, 6]
        );
        for bad in [
            "",
            "a",
            "5-",
            "9-5",
            "1%",
            "[1-2",
            "0-4294967295:0",
            "0-4294967295:1",
        ] {
            let parsed = IndexSet::parse(bad);
            assert!(
                parsed.is_none() || bad == "0-4294967295:1" || bad == "[1-2",
                "{bad}: {parsed:?}"
            );
        }
    }

    #[test]
    fn sbatch_and_qsub_ids() {
        assert_eq!(
            parse_sbatch("Submitted batch job 123\n").unwrap().number,
            123
        );
        let p = parse_sbatch("123;cluster2\n").unwrap();
        assert_eq!(
            (p.job_id.as_str(), p.cluster.as_deref()),
            ("123", Some("cluster2"))
        );
        assert_eq!(
            parse_sbatch("sbatch: warning: x\nSubmitted batch job 9\n")
                .unwrap()
                .number,
            9
        );
        assert!(parse_sbatch("sbatch: error: Batch job submission failed\n").is_err());
        assert!(parse_sbatch("").is_err());
        let q = parse_qsub("4242[].pbs01\n").unwrap();
        assert_eq!((q.job_id.as_str(), q.number), ("4242[].pbs01", 4242));
        assert_eq!(parse_qsub("77.server.example.org").unwrap().number, 77);
        assert!(parse_qsub("qsub: Unknown queue\n").is_err());
        assert!(parse_qsub("12abc").is_err());
    }

    #[test]
    fn squeue_lines() {
        let rows = parse_squeue("7_3|7|3|12|RUNNING|None\n7_[4-9%2]|7|4-9%2|7|PENDING|JobArrayTaskLimit\n9|9|N/A|9|PENDING|Priority\ngarbage\n");
        assert_eq!(rows.rows.len(), 3);
        assert_eq!(rows.bad_lines, vec![(4, "garbage".to_string())]);
        assert_eq!(rows.rows[0].indices.as_ref().unwrap().ranges, vec![(3, 3)]);
        assert_eq!(rows.rows[1].indices.as_ref().unwrap().throttle, Some(2));
        assert_eq!(rows.rows[2].indices, None);
        // A reason with a pipe stays whole: it is the last field.
        let rows = parse_squeue("1|1|N/A|1|PENDING|a|b\n");
        assert_eq!(rows.rows[0].reason, "a|b");
    }

    #[test]
    fn scontrol_values_with_spaces() {
        let text = "JobId=5 JobName=my job\n   JobState=FAILED Reason=NonZeroExitCode Dependency=(null)\n   ExitCode=2:0\n   Command=/bin/run.sh lr=0.1 x y\n   WorkDir=/tmp/a b\n";
        let jobs = parse_scontrol_job(text).unwrap();
        assert_eq!(jobs.len(), 1);
        let job = &jobs[0];
        assert_eq!(job.job_name.as_deref(), Some("my job"));
        assert_eq!(job.fields["Command"], "/bin/run.sh lr=0.1 x y");
        assert_eq!(job.fields["WorkDir"], "/tmp/a b");
        assert_eq!(
            job.state,
            JobState::Failed {
                reason: FailReason::NonZeroExit(2)
            }
        );
        assert!(parse_scontrol_job("garbage first\nJobId=1").is_err());
        assert!(parse_scontrol_job("").unwrap().is_empty());
    }

    #[test]
    fn detection() {
        assert_eq!(
            detect(Some("slurm 23.02.1\n"), None),
            Some(Scheduler::Slurm)
        );
        assert_eq!(
            detect(
                Some("slurm-wlm 22.05.8\n"),
                Some("Unknown option: version\n")
            ),
            Some(Scheduler::Slurm)
        );
        assert_eq!(
            detect(None, Some("pbs_version = 19.1.3\n")),
            Some(Scheduler::PbsPro)
        );
        assert_eq!(
            detect(None, Some("Version: 6.1.2\nCommit: x\n")),
            Some(Scheduler::Torque)
        );
        assert_eq!(detect(None, Some("Unknown option: version\n")), None);
        // sbatch present but broken (no config) is not Slurm evidence on its own.
        assert_eq!(
            detect(
                Some("sbatch: fatal: Could not establish a configuration source\n"),
                None
            ),
            None
        );
        assert_eq!(detect(None, None), None);
    }

    /// Random and mutated inputs: every parser returns, none panics.
    mod never_panic {
        use super::super::*;
        use proptest::prelude::*;

        const SEEDS: &[&str] = &[
            "3_[3-19%3]|3|3-19%3|3|PENDING|JobArrayTaskLimit\n",
            "JobId=7 ArrayJobId=3 ArrayTaskId=1 JobName=x\n   JobState=RUNNING ExitCode=0:0\n",
            "Job Id: 1[2].s\n    job_state = F\n    Exit_status = 0\n\tcont\n",
            "123_4.batch|CANCELLED by 0|0:15\n",
            "MaxArraySize            = 1001\n",
            "Submitted batch job 5\n",
            "1   name   root  00:00:00 R debug\n",
        ];

        fn all(text: &str) {
            let _ = parse_sbatch(text);
            let _ = parse_qsub(text);
            let _ = parse_squeue(text);
            let _ = parse_scontrol_job(text);
            let _ = parse_scontrol_config(text);
            let _ = parse_sacct(text);
            let _ = parse_qstat_full(text);
            let _ = parse_qstat_list(text);
            let _ = IndexSet::parse(text);
            let _ = detect(Some(text), Some(text));
            let _ = crate::hpc::wrapper::parse_exit_record(text);
            let _ = crate::hpc::wrapper::parse_start_record(text);
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(2000))]
            #[test]
            fn random_text(text in "\\PC{0,200}") {
                all(&text);
            }

            #[test]
            fn mutated_seeds(seed in 0..SEEDS.len(), cuts in proptest::collection::vec((0usize..200, any::<char>()), 0..8)) {
                let mut chars: Vec<char> = SEEDS[seed].chars().collect();
                for (pos, c) in cuts {
                    if chars.is_empty() { chars.push(c); continue; }
                    let pos = pos % chars.len();
                    match pos % 3 {
                        0 => chars[pos] = c,
                        1 => { chars.remove(pos); }
                        _ => chars.insert(pos, c),
                    }
                }
                all(&chars.into_iter().collect::<String>());
            }

            #[test]
            fn structured_noise(text in "[0-9_\\[\\]%,:|=. A-Za-z\\n\\t-]{0,300}") {
                all(&text);
            }
        }
    }

    #[test]
    fn a_refusal_for_a_submit_limit_names_the_limit_and_others_are_not_one() {
        let sample = |name: &str| {
            std::fs::read_to_string(format!(
                "{}/../agent/tests/fixtures/hpc/{name}",
                env!("CARGO_MANIFEST_DIR")
            ))
            .unwrap()
        };
        assert_eq!(
            submit_limit(&sample("slurm-22.05-sbatch-qos-limit-stderr.txt")).as_deref(),
            Some("QOSMaxSubmitJobPerUserLimit")
        );
        assert_eq!(
            submit_limit(&sample("slurm-22.05-sbatch-assoc-limit-stderr.txt")).as_deref(),
            Some("AssocMaxSubmitJobLimit")
        );
        assert_eq!(
            submit_limit("sbatch: error: Batch job submission failed: Job violates accounting/QOS policy (job submit limit, user's size and/or time limits)").as_deref(),
            Some("job submit limit (accounting/QOS policy)")
        );
        assert!(submit_limit(
            "qsub: submit error (Maximum number of jobs already in queue for user MSG=total number of current user's jobs exceeds the queue limit: user me, queue batch)"
        )
        .is_some());
        assert!(submit_limit("qsub: would exceed queue workq's per-user limit").is_some());
        for other in [
            "sbatch: error: QOSMaxWallDurationPerJobLimit\nsbatch: error: Batch job submission failed: Job violates accounting/QOS policy (job submit limit, user's size and/or time limits)",
            "sbatch: error: AssocGrpCpuLimit\nsbatch: error: Batch job submission failed: Job violates accounting/QOS policy (job submit limit, user's size and/or time limits)",
            "sbatch: error: Batch job submission failed: Invalid partition name specified",
            "sbatch: error: invalid account or account/partition combination specified",
            "sbatch: error: QOSMaxWallDurationPerJobLimit",
            "",
        ] {
            assert_eq!(submit_limit(other), None, "{other}");
        }
    }

    #[test]
    fn the_users_submit_cap_is_the_lower_of_association_and_qos() {
        // As sacctmgr printed them on a Slurm 22.05 with slurmdbd (tests/slurm-qos.sh), with
        // SACCTMGR_ASSOC_FORMAT and SACCTMGR_QOS_FORMAT.
        let assoc = "qostest|testacct|root||normal|\nqostest|root|root||normal|\n";
        let qos = "normal|8\n";
        assert_eq!(
            sacctmgr_submit_cap(assoc, qos, "qostest", Some("testacct"), None),
            Some(8)
        );
        let assoc6 = "qostest|testacct|root|6|normal|\nqostest|root|root||normal|\n";
        assert_eq!(
            sacctmgr_submit_cap(assoc6, qos, "qostest", Some("testacct"), None),
            Some(6)
        );
        assert_eq!(
            sacctmgr_submit_cap(assoc6, "normal|\n", "qostest", Some("root"), None),
            None,
            "another account's limit is not this one's"
        );
        assert_eq!(
            sacctmgr_submit_cap(assoc6, "normal|\n", "qostest", None, None),
            Some(6),
            "default account unknown: the lowest"
        );
        // The jobs' own QOS, then the association's default.
        let qoses = "normal|8\nlong|3\nhigh|\n";
        assert_eq!(
            sacctmgr_submit_cap(assoc, qoses, "qostest", None, Some("long")),
            Some(3)
        );
        assert_eq!(
            sacctmgr_submit_cap(assoc, qoses, "qostest", None, Some("high")),
            None
        );
        let default_long = "qostest|testacct|root||normal,long|long\n";
        assert_eq!(
            sacctmgr_submit_cap(default_long, qoses, "qostest", None, None),
            Some(3)
        );
        assert_eq!(
            sacctmgr_submit_cap(assoc, qos, "other", None, None),
            Some(8)
        );
        assert_eq!(
            sacctmgr_submit_cap("garbage", "", "qostest", None, None),
            None
        );
    }
}

//! What a batch-scheduler element used, from three places, all parsed here without IO: the
//! job wrapper's own records (`hsm_start`/`hsm_exit`: bash's `$EPOCHREALTIME` stamps and the
//! `times` builtin's children line, or whole seconds on bash before 5), Slurm's `sacct`
//! (Elapsed, TotalCPU, UserCPU, SystemCPU; MaxRSS on the step lines) and PBS `qstat -f`
//! (`resources_used.walltime`, `.cput`, `.mem`). The scheduler's figures win where it has them
//! (they see every step and the peak memory); the wrapper fills in where it has none.

use std::collections::BTreeMap;

use hsm_protocol::{SchedulerRecordMsg, SchedulerStateMsg, UsageMsg};

/// `sacct -n -P -o SACCT_USAGE_FORMAT -j JOBS`.
pub const SACCT_USAGE_FORMAT: &str =
    "JobID,Elapsed,TotalCPU,UserCPU,SystemCPU,MaxRSS,State,ExitCode";

/// Slurm's `State` and `ExitCode` (`3:0`) of a job line; `None` for an empty state and for one
/// that says the job is not over (`RUNNING`, `COMPLETING`, ...): that is no record of its end.
pub fn slurm_record(state: &str, exit_code: &str) -> Option<SchedulerRecordMsg> {
    let state = state.trim();
    if state.is_empty() || slurm_state_in_progress(state) {
        return None;
    }
    let codes = exit_code
        .trim()
        .split_once(':')
        .and_then(|(code, signal)| Some((code.parse().ok()?, signal.parse().ok()?)));
    Some(SchedulerRecordMsg {
        state: SchedulerStateMsg::from_slurm(state),
        exit_code: codes.map(|c| c.0),
        signal: codes.map(|c| c.1),
    })
}

/// Whether a Slurm state word (`RUNNING`, `COMPLETING+`) says the job is not over. `sacct` can
/// still show an element `RUNNING`, or `COMPLETING`, a moment after its batch step ended and the
/// controller let it go.
pub fn slurm_state_in_progress(state: &str) -> bool {
    use super::parse::{slurm_state, JobState};
    matches!(
        slurm_state(state, None),
        JobState::Queued | JobState::Running
    )
}

/// A Slurm or PBS duration in milliseconds: `[D-][HH:]MM:SS[.mmm]` (sacct's Elapsed is
/// `HH:MM:SS` or `D-HH:MM:SS`, its CPU times `MM:SS.mmm` under an hour), PBS `HH:MM:SS`, or
/// plain seconds. `None` for anything else (empty, `INVALID`, `UNLIMITED`).
pub fn duration_ms(text: &str) -> Option<u64> {
    let text = text.trim();
    if text.is_empty() {
        return None;
    }
    let (days, rest) = match text.split_once('-') {
        Some((days, rest)) => (days.parse::<u64>().ok()?, rest),
        None => (0, text),
    };
    let parts: Vec<&str> = rest.split(':').collect();
    let (hours, minutes, seconds) = match parts.as_slice() {
        [h, m, s] => (h.parse::<u64>().ok()?, m.parse::<u64>().ok()?, *s),
        [m, s] => (0, m.parse::<u64>().ok()?, *s),
        [s] => (0, 0, *s),
        _ => return None,
    };
    let (whole, fraction) = match seconds.split_once('.') {
        Some((whole, fraction)) => (whole, fraction),
        None => (seconds, ""),
    };
    if fraction.len() > 9 || !fraction.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let whole: u64 = whole.parse().ok()?;
    // Milliseconds from the first three digits of the fraction (`.4` is 400 ms).
    let millis = format!("{fraction:0<3}")[..3].parse::<u64>().ok()?;
    let total_s = ((days * 24 + hours) * 60 + minutes) * 60 + whole;
    total_s.checked_mul(1000)?.checked_add(millis)
}

/// A memory figure in KiB: Slurm's `3228K`, `12M`, `1.5G` (binary units; a bare number is
/// bytes) or PBS's `1024kb`, `12mb`, `100b`. `None` for anything else (empty, PBS words).
pub fn memory_kb(text: &str) -> Option<u64> {
    let text = text.trim().to_ascii_lowercase();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: f64 = number.parse().ok()?;
    let bytes_per = match unit {
        "" | "b" => 1.0,
        "k" | "kb" => 1024.0,
        "m" | "mb" => 1024.0 * 1024.0,
        "g" | "gb" => 1024.0 * 1024.0 * 1024.0,
        "t" | "tb" => 1024.0 * 1024.0 * 1024.0 * 1024.0,
        _ => return None,
    };
    if !number.is_finite() || number < 0.0 {
        return None;
    }
    Some((number * bytes_per / 1024.0).round() as u64)
}

/// The element `element_id` (`40_2`, `41`) in `sacct -n -P -o SACCT_USAGE_FORMAT` output: wall
/// and CPU from its job line, the peak RSS from its step lines (`40_2.batch`, `40_2.0`; the job
/// line never has one). `None` when sacct does not list it.
pub fn sacct_usage(stdout: &str, element_id: &str) -> Option<UsageMsg> {
    let mut usage: Option<UsageMsg> = None;
    let mut rss: Option<u64> = None;
    for line in stdout.lines() {
        let fields: Vec<&str> = line.trim().split('|').collect();
        let [id, elapsed, total, user, system, max_rss, ..] = fields.as_slice() else {
            continue;
        };
        if *id == element_id {
            let record = match fields.as_slice() {
                [.., state, exit_code] if fields.len() >= 8 => slurm_record(state, exit_code),
                _ => None,
            };
            let (user, system) = (duration_ms(user), duration_ms(system));
            // TotalCPU is UserCPU + SystemCPU; when only the total is known it is counted as
            // user time rather than dropped.
            let user = user.or_else(|| system.is_none().then(|| duration_ms(total)).flatten());
            usage = Some(UsageMsg {
                wall_ms: duration_ms(elapsed),
                cpu_user_ms: user,
                cpu_sys_ms: system,
                max_rss_kb: None,
                scheduler: record,
            });
        } else if id
            .strip_prefix(element_id)
            .is_some_and(|rest| rest.starts_with('.'))
        {
            if let Some(kb) = memory_kb(max_rss) {
                rss = Some(rss.map_or(kb, |r| r.max(kb)));
            }
        }
    }
    let mut usage = usage?;
    usage.max_rss_kb = rss;
    Some(usage)
}

/// Whether `sacct` output has all it will say of element `element_id`: a step of it is listed
/// (`40_2.batch`; an empty MaxRSS then means Slurm sampled none) and its job line no longer
/// shows a state in progress. Asking again changes nothing then.
pub fn sacct_is_complete(stdout: &str, element_id: &str) -> bool {
    let fields = |line: &str| {
        line.trim()
            .split('|')
            .map(str::to_string)
            .collect::<Vec<_>>()
    };
    let steps = stdout.lines().any(|line| {
        fields(line)
            .first()
            .and_then(|id| id.strip_prefix(element_id))
            .is_some_and(|rest| rest.starts_with('.'))
    });
    let over = stdout.lines().map(fields).all(|f| {
        f.first().map(String::as_str) != Some(element_id)
            || f.len() < 8
            || !slurm_state_in_progress(&f[f.len() - 2])
    });
    steps && over
}

/// What PBS's `qstat -f` attributes of one job say it used (`resources_used.*`); `None` when
/// it says nothing (a job that never ran, a server that does not collect it).
pub fn pbs_usage(attributes: &BTreeMap<String, String>) -> Option<UsageMsg> {
    let get = |key: &str| attributes.get(key).map(String::as_str);
    let usage = UsageMsg {
        wall_ms: get("resources_used.walltime").and_then(duration_ms),
        // `cput` is user and system together; counted as user time.
        cpu_user_ms: get("resources_used.cput").and_then(duration_ms),
        cpu_sys_ms: None,
        max_rss_kb: get("resources_used.mem").and_then(memory_kb),
        scheduler: get("Exit_status")
            .and_then(|v| v.trim().parse::<i32>().ok())
            .map(|code| SchedulerRecordMsg {
                state: if code == 0 {
                    SchedulerStateMsg::Completed
                } else {
                    SchedulerStateMsg::Failed
                },
                exit_code: Some(code),
                signal: None,
            }),
    };
    (usage != UsageMsg::default()).then_some(usage)
}

/// One of bash's `times` lines (`0m0.412s 0m0.020s`): user and system milliseconds.
pub fn bash_times_ms(line: &str) -> Option<(u64, u64)> {
    let mut parts = line.split_whitespace().map(|part| {
        let part = part.strip_suffix('s')?;
        let (minutes, seconds) = part.split_once('m')?;
        let minutes: u64 = minutes.parse().ok()?;
        // Bash prints the locale's decimal separator.
        let seconds = duration_ms(&seconds.replace(',', "."))?;
        Some(minutes * 60_000 + seconds)
    });
    let user = parts.next()??;
    let system = parts.next()??;
    Some((user, system))
}

/// `$EPOCHREALTIME` (`1733481600.123456`, a comma in some locales) in milliseconds.
fn epoch_real_ms(text: &str) -> Option<u64> {
    let (seconds, fraction) = text.trim().split_once(['.', ','])?;
    let seconds: u64 = seconds.parse().ok()?;
    let millis: u64 = format!("{fraction:0<3}").get(..3)?.parse().ok()?;
    seconds.checked_mul(1000)?.checked_add(millis)
}

/// When the wrapper started its task, from `hsm_start`: milliseconds since the epoch
/// (`$EPOCHREALTIME` with bash 5, whole seconds otherwise).
pub fn start_stamp_ms(start: &str) -> Option<u64> {
    stamp_ms(start, "start_real", "start")
}

/// When the task ended, from `hsm_exit`, as [`start_stamp_ms`].
pub fn end_stamp_ms(exit: &str) -> Option<u64> {
    stamp_ms(exit, "end_real", "end")
}

fn stamp_ms(text: &str, real_key: &str, seconds_key: &str) -> Option<u64> {
    field(text, real_key).and_then(epoch_real_ms).or_else(|| {
        field(text, seconds_key)?
            .trim()
            .parse::<u64>()
            .ok()?
            .checked_mul(1000)
    })
}

fn field<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    text.lines()
        .filter_map(|line| line.split_once('='))
        .find(|(k, _)| *k == key)
        .map(|(_, v)| v)
}

/// What the wrapper measured, from its `hsm_start` and `hsm_exit` texts: wall time from its
/// start to the task's end (milliseconds with bash 5's `$EPOCHREALTIME`, whole seconds
/// otherwise) and the CPU of the children it waited for (`times`' second line). Peak memory is
/// not something a shell can see.
pub fn wrapper_usage(start: Option<&str>, exit: &str) -> Option<UsageMsg> {
    let real = |text: &str, key| field(text, key).and_then(epoch_real_ms);
    let seconds = |text: &str, key| {
        field(text, key)
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(|s| s * 1000)
    };
    let wall_ms =
        start.and_then(
            |start| match (real(start, "start_real"), real(exit, "end_real")) {
                (Some(a), Some(b)) => b.checked_sub(a),
                _ => seconds(exit, "end")?.checked_sub(seconds(start, "start")?),
            },
        );
    // `times` prints the shell's own line first, then its children's.
    let children = exit
        .lines()
        .filter_map(|line| line.strip_prefix("times="))
        .nth(1)
        .and_then(bash_times_ms);
    let usage = UsageMsg {
        wall_ms,
        cpu_user_ms: children.map(|c| c.0),
        cpu_sys_ms: children.map(|c| c.1),
        max_rss_kb: None,
        scheduler: None,
    };
    (usage != UsageMsg::default()).then_some(usage)
}

/// The scheduler's figures where it has them, the wrapper's elsewhere.
pub fn merge(scheduler: Option<UsageMsg>, wrapper: Option<UsageMsg>) -> Option<UsageMsg> {
    match (scheduler, wrapper) {
        (Some(s), Some(w)) => Some(UsageMsg {
            // The wrapper's stamps are finer than sacct's whole seconds.
            wall_ms: w.wall_ms.or(s.wall_ms),
            cpu_user_ms: s.cpu_user_ms.or(w.cpu_user_ms),
            cpu_sys_ms: s.cpu_sys_ms.or(w.cpu_sys_ms),
            max_rss_kb: s.max_rss_kb.or(w.max_rss_kb),
            scheduler: s.scheduler,
        }),
        (s, w) => s.or(w),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slurm_s_state_and_exit_code_are_kept_as_recorded() {
        let record = slurm_record("FAILED", "3:0").unwrap();
        assert_eq!(record.state, SchedulerStateMsg::Failed);
        assert_eq!((record.exit_code, record.signal), (Some(3), Some(0)));
        assert_eq!(record.display(), "FAILED 3:0");
        assert_eq!(SchedulerRecordMsg::parse("FAILED 3:0"), Some(record));
        let cancelled = slurm_record("CANCELLED by 0", "0:15").unwrap();
        assert_eq!(cancelled.display(), "CANCELLED 0:15");
        assert_eq!(
            slurm_record("OUT_OF_MEMORY", "0:125").unwrap().state,
            SchedulerStateMsg::OutOfMemory
        );
        assert_eq!(slurm_record("", "0:0"), None);
        assert_eq!(
            slurm_record("WEIRD", "x").unwrap().display(),
            "OTHER",
            "an unknown state, an unreadable code"
        );
        // The job line of sacct with State and ExitCode; the step lines' are not the job's.
        let out = "40_2|00:00:03|00:01.5|00:01.2|00:00.3||TIMEOUT|0:0\n40_2.batch|00:00:03|00:01.5|00:01.2|00:00.3|2048K|CANCELLED|0:15\n";
        let used = sacct_usage(out, "40_2").unwrap();
        assert_eq!(used.scheduler.unwrap().display(), "TIMEOUT 0:0");
        assert_eq!(used.max_rss_kb, Some(2048));
        assert!(sacct_is_complete(out, "40_2"));
        // sacct a moment after the batch step ended, before the job line caught up (seen on
        // the test Slurm with accounting): no record of the end yet, and asked again.
        let early = "40_2|00:00:01|00:00.1|00:00.1|00:00:00||RUNNING|0:0\n40_2.batch|00:00:01|00:00.1|00:00.1|00:00:00|1024K|COMPLETED|0:0\n";
        assert_eq!(sacct_usage(early, "40_2").unwrap().scheduler, None);
        assert!(!sacct_is_complete(early, "40_2"));
        assert!(!sacct_is_complete(
            &early.replace("RUNNING", "COMPLETING"),
            "40_2"
        ));
        assert!(sacct_is_complete(
            &early.replace("RUNNING", "COMPLETED"),
            "40_2"
        ));
        assert_eq!(slurm_record("COMPLETING+", "0:0"), None);
        assert_eq!(slurm_record("RESV_DEL_HOLD", "0:0"), None);
        assert!(slurm_state_in_progress("RUNNING") && slurm_state_in_progress("requeued"));
        for over in [
            "COMPLETED",
            "PREEMPTED",
            "REVOKED",
            "SPECIAL_EXIT",
            "CANCELLED by 0",
        ] {
            assert!(!slurm_state_in_progress(over), "{over}");
        }
    }

    #[test]
    fn slurm_and_pbs_durations() {
        assert_eq!(duration_ms("00:00:01"), Some(1_000));
        assert_eq!(duration_ms("00:00.003"), Some(3));
        assert_eq!(duration_ms("01:02.5"), Some(62_500));
        assert_eq!(duration_ms("1-02:03:04"), Some(93_784_000));
        assert_eq!(duration_ms("12:00:07.250"), Some(43_207_250));
        assert_eq!(duration_ms("42"), Some(42_000));
        for bad in [
            "",
            "INVALID",
            "UNLIMITED",
            "1:2:3:4",
            "00:0x",
            "00:01.-5",
            "-",
        ] {
            assert_eq!(duration_ms(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn memory_units() {
        assert_eq!(memory_kb("3228K"), Some(3_228));
        assert_eq!(memory_kb("12M"), Some(12_288));
        assert_eq!(memory_kb("1.5G"), Some(1_572_864));
        assert_eq!(memory_kb("1024kb"), Some(1_024));
        assert_eq!(memory_kb("12mb"), Some(12_288));
        assert_eq!(memory_kb("2048"), Some(2), "bare: bytes");
        assert_eq!(memory_kb("0"), Some(0));
        for bad in ["", "12w", "K", "1.2.3M", "-5K"] {
            assert_eq!(memory_kb(bad), None, "{bad:?}");
        }
    }

    /// `sacct` output of the test cluster with accounting (Slurm 22.05, a five-element array
    /// and a failed job), with the usage columns.
    const SACCT: &str = "1_1|00:00:01|00:00.003|00:00.002|00:00.001|
1_1.batch|00:00:01|00:00.003|00:00.002|00:00.001|3228K
1_1.extern|00:00:01|00:00:00|00:00:00|00:00:00|0
1_2|00:00:03|00:02.512|00:02.100|00:00.412|
1_2.batch|00:00:03|00:02.512|00:02.100|00:00.412|51200K
1_2.0|00:00:02|00:01.000|00:01.000|00:00:00|1.5G
6|00:00:00|00:00.002|||
6.batch|00:00:00|00:00.002|||
";

    #[test]
    fn sacct_job_line_gives_times_and_steps_the_peak_memory() {
        assert_eq!(
            sacct_usage(SACCT, "1_1"),
            Some(UsageMsg {
                wall_ms: Some(1_000),
                cpu_user_ms: Some(2),
                cpu_sys_ms: Some(1),
                max_rss_kb: Some(3_228),
                scheduler: None,
            })
        );
        let second = sacct_usage(SACCT, "1_2").unwrap();
        assert_eq!(second.max_rss_kb, Some(1_572_864), "the largest step");
        assert_eq!(
            (second.cpu_user_ms, second.cpu_sys_ms),
            (Some(2_100), Some(412))
        );
        // No user/system split and no MaxRSS (a 0-second job): the total counts as user time.
        assert_eq!(
            sacct_usage(SACCT, "6"),
            Some(UsageMsg {
                wall_ms: Some(0),
                cpu_user_ms: Some(2),
                cpu_sys_ms: None,
                max_rss_kb: None,
                scheduler: None,
            })
        );
        assert_eq!(sacct_usage(SACCT, "1_3"), None);
        assert!(sacct_is_complete(SACCT, "6") && sacct_is_complete(SACCT, "1_2"));
        assert!(!sacct_is_complete(SACCT, "1_3") && !sacct_is_complete(SACCT, "1"));
        assert!(!sacct_is_complete("1_20.batch|||||\n", "1_2"));
        assert_eq!(sacct_usage(SACCT, "1"), None, "an array's id is no element");
        assert_eq!(sacct_usage("garbage\n||\n", "1_1"), None);
    }

    /// Real output of a Slurm with accounting (see tests/fixtures/hpc/README.md).
    #[test]
    fn sacct_of_a_real_cluster() {
        let text = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../agent/tests/fixtures/hpc/slurm-22.05-sacct-usage.txt"
        ))
        .unwrap();
        assert_eq!(
            sacct_usage(&text, "1_2"),
            Some(UsageMsg {
                wall_ms: Some(1_000),
                cpu_user_ms: Some(294),
                cpu_sys_ms: Some(310),
                max_rss_kb: Some(76_236),
                scheduler: None,
            })
        );
        for id in ["1_1", "2"] {
            let u = sacct_usage(&text, id).unwrap();
            assert!(u.max_rss_kb.unwrap() > 60 * 1024, "{id}: {u:?}");
            assert!(
                u.cpu_user_ms.unwrap() + u.cpu_sys_ms.unwrap() >= 500,
                "{id}: {u:?}"
            );
        }
    }

    #[test]
    fn pbs_resources_used() {
        // From the PBS Pro `qstat -fx` sample in tests/fixtures/hpc.
        let text = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../agent/tests/fixtures/hpc/pbspro-qstat-fxt-array-reconstructed.txt"
        ))
        .unwrap();
        let jobs = crate::hpc::parse::parse_qstat_full(&text).unwrap();
        let used: Vec<UsageMsg> = jobs
            .iter()
            .filter_map(|j| pbs_usage(&j.attributes))
            .collect();
        assert!(
            used.contains(&UsageMsg {
                wall_ms: Some(42_000),
                cpu_user_ms: Some(41_000),
                cpu_sys_ms: None,
                max_rss_kb: Some(1_024),
                scheduler: Some(SchedulerRecordMsg {
                    state: SchedulerStateMsg::Completed,
                    exit_code: Some(0),
                    signal: None,
                }),
            }),
            "{used:?}"
        );
        assert_eq!(pbs_usage(&BTreeMap::new()), None);
    }

    #[test]
    fn wrapper_records_with_and_without_epochrealtime() {
        let start = "start=1733481600\nstart_real=1733481600.250000\nhost=n1\njob_id=7\nindex=\n";
        let exit = "exit_code=0\nend=1733481602\nend_real=1733481602.000500\n\
                    times=0m0.001s 0m0.002s\ntimes=0m1.250s 0m0,125s\n";
        assert_eq!(
            wrapper_usage(Some(start), exit),
            Some(UsageMsg {
                wall_ms: Some(1_750),
                cpu_user_ms: Some(1_250),
                cpu_sys_ms: Some(125),
                max_rss_kb: None,
                scheduler: None,
            })
        );
        // Bash 4 (no $EPOCHREALTIME: empty values), an older wrapper without `times`.
        let start4 = "start=100\nstart_real=\nhost=n1\n";
        let exit4 = "exit_code=1\nend=103\nend_real=\n";
        let usage = wrapper_usage(Some(start4), exit4).unwrap();
        assert_eq!((usage.wall_ms, usage.cpu_user_ms), (Some(3_000), None));
        assert_eq!(wrapper_usage(None, "exit_code=1\nend=5\n"), None);
    }

    #[test]
    fn the_records_say_when_the_task_started_and_ended() {
        let start = "start=1733481600\nstart_real=1733481600.250000\nhost=n1\n";
        let exit = "exit_code=0\nend=1733481602\nend_real=1733481602.000500\n";
        assert_eq!(start_stamp_ms(start), Some(1_733_481_600_250));
        assert_eq!(end_stamp_ms(exit), Some(1_733_481_602_000));
        // Bash 4: whole seconds.
        assert_eq!(start_stamp_ms("start=100\nstart_real=\n"), Some(100_000));
        assert_eq!(
            end_stamp_ms("exit_code=1\nend=103\nend_real=\n"),
            Some(103_000)
        );
        // Nothing usable: none (the poll's time stands in).
        assert_eq!(start_stamp_ms("host=n1\n"), None);
        assert_eq!(end_stamp_ms("exit_code=1\nend=soon\n"), None);
    }

    #[test]
    fn bash_times_lines() {
        assert_eq!(bash_times_ms("0m0.412s 0m0.020s"), Some((412, 20)));
        assert_eq!(bash_times_ms("2m3.5s 0m0,001s"), Some((123_500, 1)));
        assert_eq!(bash_times_ms("0m0.412s"), None);
        assert_eq!(bash_times_ms("garbage here"), None);
    }

    #[test]
    fn the_scheduler_wins_except_for_the_finer_wall_time() {
        let s = UsageMsg {
            wall_ms: Some(2_000),
            cpu_user_ms: Some(900),
            cpu_sys_ms: None,
            max_rss_kb: Some(51_200),
            scheduler: None,
        };
        let w = UsageMsg {
            wall_ms: Some(1_750),
            cpu_user_ms: Some(800),
            cpu_sys_ms: Some(100),
            max_rss_kb: None,
            scheduler: None,
        };
        assert_eq!(
            merge(Some(s), Some(w)),
            Some(UsageMsg {
                wall_ms: Some(1_750),
                cpu_user_ms: Some(900),
                cpu_sys_ms: Some(100),
                max_rss_kb: Some(51_200),
                scheduler: None,
            })
        );
        assert_eq!(merge(None, Some(w)), Some(w));
        assert_eq!(merge(None, None), None);
    }
}

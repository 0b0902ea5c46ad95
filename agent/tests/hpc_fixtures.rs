//! Every scheduler output fixture in `tests/fixtures/hpc/` (see its README for where each came
//! from) parsed by the `hsm_agent::hpc::parse` functions, with the facts a backend relies on.

use std::path::Path;

use hsm_agent::hpc::parse::*;
use hsm_agent::hpc::script::Scheduler;

fn fixture(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/hpc")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn failed(reason: FailReason) -> JobState {
    JobState::Failed { reason }
}

#[test]
fn every_fixture_is_listed_in_the_readme_and_parses_without_panic() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/hpc");
    let readme = fixture("README.md");
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name == "README.md" {
            continue;
        }
        assert!(
            readme.contains(&format!("`{name}`")),
            "{name} not in README"
        );
        let text = fixture(&name);
        let _ = (
            parse_squeue(&text),
            parse_scontrol_job(&text),
            parse_qstat_full(&text),
        );
        let _ = (
            parse_sacct(&text),
            parse_qstat_list(&text),
            parse_scontrol_config(&text),
        );
    }
}

#[test]
fn submissions() {
    assert_eq!(
        parse_sbatch(&fixture("slurm-22.05-sbatch.txt"))
            .unwrap()
            .job_id,
        "1"
    );
    assert_eq!(
        parse_sbatch(&fixture("slurm-22.05-sbatch-parsable.txt"))
            .unwrap()
            .job_id,
        "2"
    );
    assert_eq!(
        parse_qsub(&fixture("slurm-torque-wrapper-qsub.txt"))
            .unwrap()
            .number,
        13
    );
    assert_eq!(
        parse_qsub(&fixture("slurm-torque-wrapper-qsub-array-t.txt"))
            .unwrap()
            .job_id,
        "14"
    );
    let pbs = parse_qsub(&fixture("pbspro-qsub-array-reconstructed.txt")).unwrap();
    assert_eq!((pbs.job_id.as_str(), pbs.number), ("4242[].pbs01", 4242));
    let torque = parse_qsub(&fixture("torque-qsub-array-reconstructed.txt")).unwrap();
    assert_eq!(torque.number, 1001);
}

#[test]
fn detection_from_real_version_outputs() {
    let sbatch = fixture("slurm-22.05-sbatch-version.txt");
    let wrapper_qstat = "Unknown option: version\nUsage:\n    qstat [-f] ...\n";
    assert_eq!(
        detect(Some(&sbatch), Some(wrapper_qstat)),
        Some(Scheduler::Slurm)
    );
    assert_eq!(detect(None, Some(wrapper_qstat)), None);
    assert_eq!(
        detect(
            None,
            Some(&fixture("pbspro-qstat-version-reconstructed.txt"))
        ),
        Some(Scheduler::PbsPro)
    );
    assert_eq!(
        detect(
            None,
            Some(&fixture("torque-qstat-version-reconstructed.txt"))
        ),
        Some(Scheduler::Torque)
    );
}

#[test]
fn squeue_mixed_running_pending_range_and_finished() {
    let rows = parse_squeue(&fixture("slurm-22.05-squeue-mixed.txt"));
    assert!(rows.bad_lines.is_empty(), "{:?}", rows.bad_lines);
    assert_eq!(rows.rows.len(), 12);
    let range = rows
        .rows
        .iter()
        .find(|r| r.state == JobState::Queued)
        .unwrap();
    assert_eq!(range.array_job_id, "3");
    assert_eq!(range.reason, "JobArrayTaskLimit");
    let set = range.indices.as_ref().unwrap();
    assert_eq!(
        (set.ranges.clone(), set.throttle, set.len()),
        (vec![(3, 19)], Some(3), 17)
    );
    let running: Vec<u32> = rows
        .rows
        .iter()
        .filter(|r| r.array_job_id == "3" && r.state == JobState::Running)
        .flat_map(|r| r.indices.as_ref().unwrap().iter().collect::<Vec<_>>())
        .collect();
    assert_eq!(running, vec![0, 1, 2]);
    // The last element of an array reuses the array's own job id.
    let last = rows
        .rows
        .iter()
        .find(|r| r.array_job_id == "4" && r.indices.as_ref().unwrap().contains(4))
        .unwrap();
    assert_eq!(
        (last.job_id.as_str(), &last.state),
        ("4", &JobState::Completed)
    );
    let plain = rows.rows.iter().find(|r| r.array_job_id == "2").unwrap();
    assert_eq!(plain.indices, None);
    // squeue shows FAILED without an exit code: a failure, reason from elsewhere.
    assert!(matches!(plain.state, JobState::Failed { .. }));
}

#[test]
fn squeue_array_in_progress_lists_every_started_element() {
    let rows = parse_squeue(&fixture("slurm-22.05-squeue-array-in-progress.txt"));
    assert!(rows.bad_lines.is_empty());
    let of_array: Vec<&SqueueRow> = rows.rows.iter().filter(|r| r.array_job_id == "3").collect();
    let indices = |state: JobState| {
        let mut v: Vec<u32> = of_array
            .iter()
            .filter(|r| r.state == state)
            .flat_map(|r| r.indices.as_ref().unwrap().iter().collect::<Vec<_>>())
            .collect();
        v.sort();
        v
    };
    // Finished elements stay listed one per line (for MinJobAge), the pending rest as one range.
    assert_eq!(indices(JobState::Completed), (0..15).collect::<Vec<_>>());
    assert_eq!(indices(JobState::Running), vec![15, 16, 17]);
    assert_eq!(indices(JobState::Queued), vec![18, 19]);
    let timed_out = rows.rows.iter().find(|r| r.array_job_id == "1").unwrap();
    assert_eq!(timed_out.state, failed(FailReason::Timeout));
}

#[test]
fn squeue_after_min_job_age_forgets_old_jobs() {
    // Captured ~8 minutes after the first jobs ended: MinJobAge (300 s) purged them.
    let rows = parse_squeue(&fixture("slurm-22.05-squeue-all-finished.txt"));
    assert!(rows.bad_lines.is_empty());
    assert!(rows.rows.iter().all(|r| r.state.is_final()));
    assert!(!rows.rows.iter().any(|r| r.array_job_id == "1"));
    assert!(rows.rows.iter().any(|r| r.state == JobState::Cancelled));
}

#[test]
fn squeue_throttled_then_cancelled_array() {
    let before = parse_squeue(&fixture("slurm-22.05-squeue-array-throttled.txt"));
    let after = parse_squeue(&fixture("slurm-22.05-squeue-array-cancelled.txt"));
    assert_eq!(before.rows.len(), 3);
    assert_eq!(after.rows.len(), 3);
    assert!(after.rows.iter().all(|r| r.state == JobState::Cancelled));
    let covered: u64 = after
        .rows
        .iter()
        .map(|r| r.indices.as_ref().unwrap().len())
        .sum();
    assert_eq!(covered, 10);
}

#[test]
fn squeue_failed_elements_and_missing_jobs() {
    let rows = parse_squeue(&fixture("slurm-22.05-squeue-array-failed-elements.txt"));
    let states: Vec<&JobState> = rows.rows.iter().map(|r| &r.state).collect();
    assert_eq!(states[0], &JobState::Completed);
    assert!(matches!(states[1], JobState::Failed { .. }));
    assert!(is_invalid_job_id(&fixture(
        "slurm-22.05-squeue-invalid-job-stderr.txt"
    )));
    assert!(is_invalid_job_id(&fixture(
        "slurm-22.05-scontrol-job-invalid-stderr.txt"
    )));
}

#[test]
fn scontrol_show_job_states_and_exit_codes() {
    let one = |name: &str| {
        let jobs = parse_scontrol_job(&fixture(name)).unwrap();
        assert_eq!(jobs.len(), 1, "{name}");
        jobs.into_iter().next().unwrap()
    };
    let running = one("slurm-22.05-scontrol-job-running.txt");
    assert_eq!(running.state, JobState::Running);
    assert_eq!(running.job_name.as_deref(), Some("hsm-timeout"));
    assert_eq!(running.fields["Command"], "/tmp/cap/sleep.sh 300");

    let timeout = one("slurm-22.05-scontrol-job-timeout.txt");
    assert_eq!(timeout.state, failed(FailReason::Timeout));
    assert_eq!(timeout.reason.as_deref(), Some("TimeLimit"));

    let fail = one("slurm-22.05-scontrol-job-failed.txt");
    assert_eq!(fail.state, failed(FailReason::NonZeroExit(3)));
    assert_eq!(fail.exit_code, Some(SlurmExitCode { code: 3, signal: 0 }));

    let cancelled = one("slurm-22.05-scontrol-job-cancelled.txt");
    assert_eq!(cancelled.state, JobState::Cancelled);
    assert_eq!(
        cancelled.exit_code,
        Some(SlurmExitCode {
            code: 0,
            signal: 15
        })
    );

    let element = one("slurm-22.05-scontrol-job-array-element-running.txt");
    assert_eq!(
        (element.job_id.as_str(), element.array_job_id.as_deref()),
        ("7", Some("3"))
    );
    assert_eq!(element.array_task_id.unwrap().ranges, vec![(1, 1)]);
    assert_eq!(element.fields["ArrayTaskThrottle"], "3");

    let completed = one("slurm-22.05-scontrol-job-array-element-completed.txt");
    assert_eq!(completed.state, JobState::Completed);

    let element_failed = one("slurm-22.05-scontrol-job-array-element-failed.txt");
    assert_eq!(element_failed.state, failed(FailReason::NonZeroExit(2)));

    let via_wrapper = one("slurm-22.05-scontrol-job-cancelled-via-wrapper.txt");
    assert_eq!(via_wrapper.state, JobState::Cancelled);
    assert_eq!(
        via_wrapper.exit_code,
        Some(SlurmExitCode {
            code: 143,
            signal: 0
        })
    );
    assert_eq!(via_wrapper.array_task_id.unwrap().ranges, vec![(0, 0)]);

    let pending_cancelled = one("slurm-22.05-scontrol-job-array-cancelled-pending.txt");
    assert_eq!(pending_cancelled.state, JobState::Cancelled);

    let whole = parse_scontrol_job(&fixture("slurm-22.05-scontrol-job-array-whole.txt")).unwrap();
    assert_eq!(whole.len(), 4);
    assert_eq!(whole[0].state, JobState::Queued);
    assert_eq!(whole[0].array_task_id.as_ref().unwrap().len(), 17);
    assert!(whole[1..].iter().all(|j| j.state == JobState::Running));
}

#[test]
fn scontrol_show_config() {
    let config = parse_scontrol_config(&fixture("slurm-22.05-scontrol-show-config.txt"));
    assert_eq!(config.max_array_size, Some(1001));
    assert_eq!(config.max_job_count, Some(100_000));
    assert_eq!(config.min_job_age, Some(300));
    assert_eq!(config.version.as_deref(), Some("22.05.8"));
    assert!(!config.has_accounting());
    assert!(config.fields.len() > 100);
}

#[test]
fn sacct_unavailable_and_rows() {
    assert!(sacct_unavailable(&fixture(
        "slurm-22.05-sacct-no-accounting-stderr.txt"
    )));
    let rows = parse_sacct(&fixture("slurm-sacct-reconstructed.txt"));
    assert!(rows.bad_lines.is_empty());
    let jobs: Vec<&SacctRow> = rows.rows.iter().filter(|r| r.step.is_none()).collect();
    let state_of = |index: u32| {
        &jobs
            .iter()
            .find(|r| r.array_job_id == "123" && r.indices.as_ref().unwrap().contains(index))
            .unwrap()
            .state
    };
    assert_eq!(state_of(4), &JobState::Completed);
    assert_eq!(state_of(5), &JobState::Cancelled);
    assert_eq!(state_of(6), &failed(FailReason::OutOfMemory));
    assert_eq!(state_of(7), &failed(FailReason::Timeout));
    assert_eq!(state_of(8), &failed(FailReason::NodeFail));
    assert_eq!(state_of(9), &failed(FailReason::Preempted));
    assert_eq!(state_of(10), &failed(FailReason::NonZeroExit(1)));
    assert_eq!(state_of(15), &JobState::Queued);
    let batch = rows
        .rows
        .iter()
        .find(|r| r.step.as_deref() == Some("batch"))
        .unwrap();
    assert_eq!(batch.indices.as_ref().unwrap().ranges, vec![(4, 4)]);
}

#[test]
fn torque_wrapper_qstat() {
    let list = parse_qstat_list(&fixture("slurm-torque-wrapper-qstat.txt"));
    assert!(list.bad_lines.is_empty(), "{:?}", list.bad_lines);
    assert_eq!(list.rows.len(), 20);
    assert_eq!(list.rows[0].raw_state, "R");
    // The wrapper shows every finished job as C with no exit status: never read as success.
    let finished = list.rows.iter().find(|r| r.job_id == "2").unwrap();
    assert_eq!(finished.state, JobState::Ended);

    let full = parse_qstat_full(&fixture("slurm-torque-wrapper-qstat-f-finished.txt")).unwrap();
    assert_eq!(full.len(), 1);
    assert_eq!(
        (full[0].job_id.as_str(), full[0].name.as_deref()),
        ("2", Some("hsm-fail"))
    );
    assert_eq!(
        (full[0].exit_status, &full[0].state),
        (None, &JobState::Ended)
    );
    let running = parse_qstat_full(&fixture(
        "slurm-torque-wrapper-qstat-f-array-element-running.txt",
    ))
    .unwrap();
    assert_eq!(running[0].state, JobState::Running);
    assert_eq!(running[0].attributes["Resource_List.walltime"], "00:10:00");
    let array = parse_qstat_full(&fixture("slurm-torque-wrapper-qstat-f-array.txt")).unwrap();
    assert_eq!(array.len(), 1);
    let after = parse_qstat_list(&fixture("slurm-torque-wrapper-qstat-after-qdel.txt"));
    assert_eq!(after.rows[0].state, JobState::Ended);
}

#[test]
fn pbs_pro_qstat_full_array() {
    let jobs = parse_qstat_full(&fixture("pbspro-qstat-fxt-array-reconstructed.txt")).unwrap();
    assert_eq!(jobs.len(), 5);
    let parent = &jobs[0];
    assert_eq!(parent.job_id, "4242[].pbs01");
    assert_eq!(parent.state, JobState::Running);
    assert_eq!(parent.array_indices_submitted.as_ref().unwrap().len(), 4);
    // Continuation lines are joined without a separator (PBS wraps at a fixed width).
    assert!(parent.attributes["Variable_List"]
        .contains("PBS_O_PATH=/usr/local/bin:/usr/bin:/bin:/usr/local/sbin:/usr/sbin,"));
    let states: Vec<(Option<u32>, &JobState)> = jobs[1..]
        .iter()
        .map(|j| (j.array_index, &j.state))
        .collect();
    assert_eq!(
        states,
        vec![
            (Some(0), &JobState::Completed),
            (Some(1), &failed(FailReason::Timeout)),
            (Some(2), &JobState::Running),
            (Some(3), &JobState::Queued),
        ]
    );
    assert!(jobs[2].attributes["comment"].ends_with("andfailed"));
}

#[test]
fn torque_qstat_full_array() {
    let jobs = parse_qstat_full(&fixture("torque-qstat-ft-array-reconstructed.txt")).unwrap();
    assert_eq!(jobs.len(), 4);
    let submitted = jobs[0].array_indices_submitted.as_ref().unwrap();
    assert_eq!((submitted.len(), submitted.throttle), (3, Some(2)));
    assert_eq!(jobs[1].state, JobState::Completed);
    assert_eq!(jobs[2].state, failed(FailReason::NonZeroExit(2)));
    assert_eq!(
        (jobs[2].array_index, jobs[2].exit_status),
        (Some(1), Some(2))
    );
    assert_eq!(jobs[3].state, JobState::Queued);
}

#[test]
fn a_submission_is_found_by_its_job_name() {
    // squeue by name: one line per element, each naming the array's id.
    assert_eq!(
        first_job_id(&fixture("slurm-22.05-squeue-by-name-array.txt")).as_deref(),
        Some("125")
    );
    assert_eq!(first_job_id(""), None, "no such job: squeue prints nothing");
    // Slurm's qstat wrapper lists each element as a job; the array is the lowest id.
    let jobs = parse_qstat_full(&fixture("slurm-torque-wrapper-qstat-f-all-named.txt")).unwrap();
    assert_eq!(pbs_job_named(&jobs, "hsm_named_x").as_deref(), Some("125"));
    assert_eq!(
        pbs_job_named(&jobs, "hsm_subkill_1796403548684_0001").as_deref(),
        Some("123")
    );
    assert_eq!(pbs_job_named(&jobs, "hsm_named"), None, "names match whole");
    // PBS Pro and Torque list the array's parent under its own id.
    let pro = parse_qstat_full(&fixture("pbspro-qstat-fxt-array-reconstructed.txt")).unwrap();
    assert_eq!(
        pbs_job_named(&pro, "hsm-s1-c0").as_deref(),
        Some("4242[].pbs01")
    );
    let torque = parse_qstat_full(&fixture("torque-qstat-ft-array-reconstructed.txt")).unwrap();
    assert_eq!(
        pbs_job_named(&torque, "hsm-s1-c0").as_deref(),
        Some("1001[].torque01.cluster")
    );
}

#[test]
fn grid_engine_outputs() {
    use hsm_agent::hpc::decide::Seen;
    use hsm_agent::hpc::sge::*;
    // Detection: Grid Engine's qstat, with or without its cell, is told from PBS's and Slurm's.
    for name in [
        "sge-8.1.9-qstat-version.txt",
        "sge-8.1.9-qstat-version-no-cell.txt",
    ] {
        assert_eq!(
            detect(None, Some(&fixture(name))),
            Some(Scheduler::Sge),
            "{name}"
        );
    }
    assert_eq!(unusable(&fixture("sge-8.1.9-qstat-version.txt")), None);
    assert!(unusable(&fixture("sge-8.1.9-qstat-version-no-cell.txt")).is_some());
    assert_eq!(
        detect(
            None,
            Some(&fixture("pbspro-qstat-version-reconstructed.txt"))
        ),
        Some(Scheduler::PbsPro)
    );
    assert_eq!(
        parse_qsub_terse(&fixture("sge-8.1.9-qsub-terse-array.txt")).unwrap(),
        "1"
    );
    assert_eq!(
        parse_qsub_terse(&fixture("sge-8.1.9-qsub-terse-single.txt")).unwrap(),
        "2"
    );
    assert_eq!(
        submit_limit(&fixture("sge-8.1.9-qsub-max-u-jobs-stderr.txt")).as_deref(),
        Some("max_u_jobs (jobs allowed per user)")
    );

    // Running tasks one line each; pending ones together. Element i is task i + 1.
    let jobs = parse_qstat_xml(&fixture("sge-8.1.9-qstat-xml-array-running-pending.xml"));
    assert_eq!(jobs.len(), 3);
    assert_eq!(
        sge_seen(&jobs, "1", Some(0)),
        Seen::Listed(JobState::Running)
    );
    assert_eq!(
        sge_seen(&jobs, "1", Some(1)),
        Seen::Listed(JobState::Running),
        "`t`"
    );
    for i in 2..5 {
        assert_eq!(
            sge_seen(&jobs, "1", Some(i)),
            Seen::Listed(JobState::Queued)
        );
    }
    assert_eq!(sge_seen(&jobs, "1", Some(5)), Seen::Missing);
    assert_eq!(job_named(&jobs, "arr").as_deref(), Some("1"));
    let held = parse_qstat_xml(&fixture("sge-8.1.9-qstat-xml-held.xml"));
    assert_eq!(sge_seen(&held, "2", None), Seen::Listed(JobState::Queued));
    let after = parse_qstat_xml(&fixture("sge-8.1.9-qstat-xml-after-qdel-tasks.xml"));
    let listed: Vec<u32> = (0..6)
        .filter(|&i| sge_seen(&after, "3", Some(i)) != Seen::Missing)
        .collect();
    assert_eq!(listed, [0, 3, 5], "tasks 1, 4 and 6 left");
    assert!(parse_qstat_xml(&fixture("sge-8.1.9-qstat-xml-empty.xml")).is_empty());

    // Accounting: exit 0, exit 3, h_rt, killed.
    let records = parse_qacct(&fixture("sge-8.1.9-qacct-j-array-exit-killed-h_rt.txt"));
    assert_eq!(records.len(), 4);
    let account = |i| qacct_account(&records, "1", Some(i)).unwrap();
    assert_eq!(account(0).state, JobState::Completed);
    assert_eq!(account(1).state, failed(FailReason::NonZeroExit(3)));
    assert_eq!(
        account(2).state,
        failed(FailReason::Timeout),
        "failed 37: h_rt"
    );
    assert_eq!(account(3).signal, Some(9), "failed 100, exit 137");
    assert!(qacct_account(&records, "1", Some(4)).is_none());
    assert!(parse_qacct(&fixture("sge-8.1.9-qacct-unknown-stderr.txt")).is_empty());
}

//! Tests of what writes config text: `init`'s detection and templates, and the source entries
//! `agent add`/`agent deploy` write into an existing config.

use super::*;

fn detection(scripts: &[&str], python: Option<&str>, scheduler: Option<Scheduler>) -> Detection {
    Detection {
        python: python.map(str::to_string),
        scripts: scripts.iter().map(PathBuf::from).collect(),
        scheduler,
        style: ScriptStyle::Overrides,
    }
}

#[test]
fn init_reads_how_the_script_takes_parameters() {
    assert_eq!(
        script_style("import hydra\n@hydra.main(config_path='conf')\ndef main(cfg): ..."),
        ScriptStyle::Overrides
    );
    assert_eq!(
        script_style("import sys\nprint(sys.argv)"),
        ScriptStyle::Overrides
    );
    assert_eq!(
        script_style("import argparse\np.add_argument('--lr', type=float)"),
        ScriptStyle::Argparse { output_flag: None }
    );
    assert_eq!(
        script_style("import argparse\np.add_argument(\"--output-dir\", default='out')"),
        ScriptStyle::Argparse {
            output_flag: Some("--output-dir".into())
        }
    );
    // The argparse config, with and without an output flag, is a valid config.
    for output_flag in [None, Some("--out_dir".to_string())] {
        let mut d = detection(&["train.py"], Some("/usr/bin/python3"), None);
        d.style = ScriptStyle::Argparse { output_flag };
        let text = init_config_text(&d);
        assert!(text.contains("style: argparse"), "{text}");
        parse(&text);
    }
}

#[test]
fn init_config_round_trips_for_zero_one_and_several_scripts() {
    let cases = [
        (detection(&[], None, None), None),
        (
            detection(
                &["train.py"],
                Some("/usr/bin/python3"),
                Some(Scheduler::Slurm),
            ),
            Some("train.py"),
        ),
        (
            detection(
                &["scripts/train.py", "src/train_lm.py", "main.py"],
                Some("/home/me/my env/bin/python"),
                Some(Scheduler::Pbs),
            ),
            Some("scripts/train.py"),
        ),
        (
            detection(&["train.py"], None, Some(Scheduler::Sge)),
            Some("train.py"),
        ),
    ];
    for (d, script) in cases {
        let text = init_config_text(&d);
        let cfg = parse(&text);
        assert_eq!(cfg.command.script.as_deref(), script, "{text}");
        assert_eq!(cfg.command.python, d.python.as_deref().unwrap_or("python3"));
        assert_eq!(cfg.defaults.kill_grace, Duration::from_secs(10));
        for candidate in &d.scripts {
            assert!(text.contains(&format!("#   {}", candidate.display())) || d.scripts.len() == 1);
        }
        match d.scheduler {
            Some(Scheduler::Slurm) => {
                assert!(matches!(
                    cfg.sources["slurm"].kind,
                    SourceKind::Slurm { .. }
                ));
                assert_eq!(cfg.hpc.walltime, Some(Duration::from_secs(14_400)));
            }
            Some(Scheduler::Pbs) => {
                assert!(matches!(cfg.sources["pbs"].kind, SourceKind::Pbs { .. }))
            }
            Some(Scheduler::Sge) => {
                assert!(matches!(cfg.sources["sge"].kind, SourceKind::Sge { .. }))
            }
            None => {
                assert_eq!(cfg.sources.len(), 1);
                assert_eq!(cfg.hpc.walltime, None);
            }
        }
        if d.scripts.len() > 1 {
            assert!(text.contains("SEVERAL CANDIDATES"), "{text}");
        }
        if d.scripts.is_empty() {
            assert!(text.contains("None was found"), "{text}");
        }
        // `agent add` works on what init wrote.
        let added =
            set_agent_source(&text, "gpu1", "gpu1.lab:7300", FP, Some(2), Some("/p")).unwrap();
        let cfg = parse(&added);
        assert_eq!(agent(&cfg, "gpu1").2, Some(2));
        assert!(added.contains("# hsm project config"), "comments are kept");
    }
}

#[test]
fn set_agent_source_appends_the_section_when_missing() {
    let text = "# my config\ncommand:\n  script: train.py   # the entry point\n";
    let out = set_agent_source(
        text,
        "gpu1",
        "gpu1.lab:7300",
        FP,
        Some(4),
        Some("/home/me/proj"),
    )
    .unwrap();
    assert!(out.starts_with(text), "{out}");
    assert_eq!(
        &out[text.len()..],
        format!(
            "\nsources:\n  gpu1:\n    type: agent\n    address: \"gpu1.lab:7300\"\n    fingerprint: \"{FP}\"\n    slots: 4\n    project_dir: /home/me/proj\n"
        )
    );
    let cfg = parse(&out);
    assert_eq!(agent(&cfg, "gpu1").3.as_deref(), Some("/home/me/proj"));

    // No trailing newline, empty file, `sources:` empty or null.
    for text in [
        "command: {script: a.py}",
        "",
        "sources:\n",
        "sources: ~\ndefaults: {retries: 1}\n",
        "sources:  # none yet\nhpc: {}\n",
    ] {
        let out = set_agent_source(text, "gpu1", "gpu1.lab:7300", FP, None, Some("/p")).unwrap();
        let cfg = parse(&out);
        assert_eq!(agent(&cfg, "gpu1").0, "gpu1.lab:7300", "{out}");
    }
    let out = set_agent_source(
        "sources:  # none yet\nhpc: {}\n",
        "gpu1",
        "h:1",
        FP,
        None,
        Some("/p"),
    )
    .unwrap();
    assert!(out.starts_with("sources:  # none yet\n  gpu1:\n"), "{out}");
    assert!(out.ends_with("hpc: {}\n"), "{out}");
}

#[test]
fn set_agent_source_adds_or_replaces_within_sources() {
    let text = "\
sources:
  # lab machines
  gpu1:
    type: agent
    address: old.lab:7300   # moved last week
    fingerprint: sha256:1111111111111111111111111111111111111111111111111111111111111111
    project_dir: /p
    backend: slurm
    hpc: {partition: a100}
    # slots: 2
  cluster: {type: slurm}

  # more to come

# Scheduler defaults
hpc:
  walltime: 1h
";
    let out = set_agent_source(text, "gpu1", "new.lab:7300", FP, None, None).unwrap();
    let expected = text.replace(
        "  gpu1:
    type: agent
    address: old.lab:7300   # moved last week
    fingerprint: sha256:1111111111111111111111111111111111111111111111111111111111111111
    project_dir: /p
    backend: slurm
    hpc: {partition: a100}
    # slots: 2
",
        &format!(
            "  gpu1:
    type: agent
    address: \"new.lab:7300\"
    fingerprint: \"{FP}\"
    project_dir: /p
    backend: slurm
    hpc:
      partition: a100
"
        ),
    );
    assert_eq!(out, expected);
    let cfg = parse(&out);
    let (address, _, _, _, backend, hpc) = agent(&cfg, "gpu1");
    assert_eq!(address, "new.lab:7300");
    assert_eq!(
        backend,
        Backend::Slurm,
        "other settings of the agent are kept"
    );
    assert_eq!(hpc.partition.as_deref(), Some("a100"));

    // A new name goes after the last entry, before the comments that introduce what follows.
    let out = set_agent_source(text, "gpu2", "gpu2.lab:7300", FP, Some(1), Some("/p")).unwrap();
    assert!(
        out.contains(&format!("  cluster: {{type: slurm}}\n  gpu2:\n    type: agent\n    address: \"gpu2.lab:7300\"\n    fingerprint: \"{FP}\"\n    slots: 1\n    project_dir: /p\n\n  # more to come\n\n# Scheduler defaults\n")),
        "{out}"
    );
    let cfg = parse(&out);
    let names: Vec<_> = cfg.sources.keys().map(String::as_str).collect();
    assert_eq!(names, ["local", "gpu1", "cluster", "gpu2"]);

    // Flow style is rewritten; everything else stays.
    let text = "sources: {cluster: {type: slurm},\n  gpu1: {type: local}}\ndefaults: {retries: 1}  # keep\n";
    let out = set_agent_source(text, "gpu1", "h:1", FP, None, Some("/p")).unwrap();
    assert!(out.ends_with("defaults: {retries: 1}  # keep\n"), "{out}");
    let cfg = parse(&out);
    assert_eq!(agent(&cfg, "gpu1").0, "h:1");
    assert!(matches!(
        cfg.sources["cluster"].kind,
        SourceKind::Slurm { .. }
    ));
    let out = set_agent_source(
        "{sources: {}, command: {script: a.py}}\n",
        "a",
        "h:1",
        FP,
        None,
        Some("/p"),
    )
    .unwrap();
    assert_eq!(parse(&out).command.script.as_deref(), Some("a.py"));
}

#[test]
fn set_agent_source_refuses_bad_input() {
    let ok = "sources: {}\n";
    assert!(set_agent_source(ok, "local", "h:1", FP, None, None).is_err());
    assert!(set_agent_source(ok, "../x", "h:1", FP, None, None).is_err());
    assert!(set_agent_source(ok, "a", "h", FP, None, None)
        .unwrap_err()
        .contains("`h`"));
    assert!(set_agent_source(ok, "a", "h:1", "sha256:00", None, None).is_err());
    assert!(set_agent_source(ok, "a", "h:1", FP, Some(0), None).is_err());
    assert!(set_agent_source("a: [1\n", "a", "h:1", FP, None, None)
        .unwrap_err()
        .contains("not valid YAML"));
    assert!(set_agent_source("- 1\n", "a", "h:1", FP, None, None).is_err());
    assert!(set_agent_source("sources: 5\n", "a", "h:1", FP, None, None)
        .unwrap_err()
        .contains("line 1"));
}

#[test]
fn set_agent_entry_with_the_same_values_leaves_the_text_as_it_was() {
    let text = format!(
        "sources:\n  gpu1:\n    slots: 4\n    type: agent\n    address: \"gpu1.lab:7300\"\n    fingerprint: \"{FP}\"\n    ssh: me@gpu1.lab\n    project_dir: /p\n"
    );
    let entry = crate::config::AgentEntry {
        address: "gpu1.lab:7300",
        fingerprint: FP,
        project_dir: Some("/p"),
        ssh: Some("me@gpu1.lab"),
        ..Default::default()
    };
    let out = crate::config::set_agent_entry(&text, "gpu1", &entry).unwrap();
    assert_eq!(out, text);
    let cfg = parse(&out);
    match &cfg.sources["gpu1"].kind {
        SourceKind::Agent { ssh, slots, .. } => {
            assert_eq!(ssh.as_deref(), Some("me@gpu1.lab"));
            assert_eq!(*slots, Some(4));
        }
        other => panic!("{other:?}"),
    }
    // A destination ssh would read as an option is refused, in the file and in the edit.
    let bad = text.replace("me@gpu1.lab", "-oProxyCommand=x");
    assert!(crate::config::set_agent_entry(
        &text,
        "gpu1",
        &crate::config::AgentEntry {
            ssh: Some("-oProxyCommand=x"),
            ..entry
        }
    )
    .is_err());
    let problems = format!(
        "{:?}",
        crate::config::parse_config(&bad, std::path::Path::new("/p")).unwrap_err()
    );
    assert!(problems.contains("starts with `-`"), "{problems}");
}

/// `agent deploy --ssh-config FILE` stores the user's ssh options with the destination, so the
/// ssh transport and `agent status|logs|stop` run ssh the same way; a redeploy with the same
/// options rewrites nothing.
#[test]
fn set_agent_entry_stores_ssh_options_that_read_back_as_the_transports() {
    let options = vec![
        "-F".to_string(),
        "/home/me/.ssh/lab config".to_string(),
        "-o".to_string(),
        "Port=2222".to_string(),
    ];
    let entry = crate::config::AgentEntry {
        address: "gpu1.lab:7300",
        fingerprint: FP,
        project_dir: Some("/p"),
        ssh: Some("me@gpu1.lab"),
        ssh_options: Some(&options),
        ..Default::default()
    };
    let once = crate::config::set_agent_entry("", "gpu1", &entry).unwrap();
    let cfg = parse(&once);
    match &cfg.sources["gpu1"].kind {
        SourceKind::Agent { transport, .. } => {
            let ssh = transport.ssh.as_ref().expect("an ssh target");
            assert_eq!(ssh.target, "me@gpu1.lab");
            assert_eq!(ssh.options, options);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        crate::config::set_agent_entry(&once, "gpu1", &entry).unwrap(),
        once
    );
    // Not given: what is there stays.
    let kept = crate::config::AgentEntry {
        ssh_options: None,
        ..entry
    };
    assert_eq!(
        crate::config::set_agent_entry(&once, "gpu1", &kept).unwrap(),
        once
    );
}

#[test]
fn a_deploys_sync_default_is_written_only_where_the_source_has_no_sync() {
    let entry = crate::config::AgentEntry {
        address: "gpu1.lab:7300",
        fingerprint: FP,
        project_dir: Some("/p"),
        sync_default: Some("push"),
        ..Default::default()
    };
    let fresh = crate::config::set_agent_entry("", "gpu1", &entry).unwrap();
    assert_eq!(agent_sync(&parse(&fresh), "gpu1"), SyncMode::Push);
    let own = fresh.replace("sync: push", "sync: off");
    assert!(own.contains("sync: off"), "{own}");
    let again = crate::config::set_agent_entry(&own, "gpu1", &entry).unwrap();
    assert_eq!(
        agent_sync(&parse(&again), "gpu1"),
        SyncMode::Off,
        "the user's own sync stays: {again}"
    );
}

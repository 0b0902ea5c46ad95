//! Tests of the project config: reading (current and Python HSM v1 files), every kind of
//! problem, locating and loading, display; `edits.rs`: init templates and `agent add` edits.

use super::*;
use crate::core::command::ArgStyle;
use crate::yaml::Pos;

mod edits;

const FP: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

fn root() -> PathBuf {
    PathBuf::from("/work/proj")
}

fn parse(text: &str) -> ProjectConfig {
    parse_config(text, &root()).unwrap_or_else(|problems| {
        let shown: Vec<String> = problems.iter().map(|p| p.render("config")).collect();
        panic!("unexpected problems:\n{}", shown.join("\n"))
    })
}

fn problems(text: &str) -> Vec<Problem> {
    match parse_config(text, &root()) {
        Ok(cfg) => panic!("expected problems, got {cfg:#?}"),
        Err(problems) => problems,
    }
}

fn rendered(text: &str) -> Vec<String> {
    problems(text).iter().map(|p| p.render("c.yaml")).collect()
}

fn agent(
    cfg: &ProjectConfig,
    name: &str,
) -> (
    String,
    String,
    Option<usize>,
    Option<String>,
    Backend,
    HpcOptions,
) {
    match &cfg.sources[name].kind {
        SourceKind::Agent {
            address,
            fingerprint,
            slots,
            project_dir,
            backend,
            hpc,
            ..
        } => (
            address.clone(),
            fingerprint.clone(),
            *slots,
            project_dir.clone(),
            *backend,
            hpc.clone(),
        ),
        other => panic!("{name} is not an agent: {other:?}"),
    }
}

#[test]
fn full_config_reads_every_key() {
    let cfg = parse(include_str!("../testdata/full.yaml"));
    assert_eq!(cfg.name, "my-project");
    assert_eq!(cfg.root, root());
    assert_eq!(cfg.file, None);
    let command = &cfg.command;
    assert_eq!(command.python, "/opt/conda/bin/python");
    assert_eq!(command.script.as_deref(), Some("train.py"));
    assert_eq!(
        command.template.as_deref().unwrap(),
        [
            "python",
            "-m",
            "pkg.train",
            "{overrides}",
            "out={output_dir}"
        ]
    );
    assert_eq!(command.style, ArgStyle::Argparse);
    assert_eq!(command.conda_env.as_deref(), Some("myenv"));
    assert!(!command.wandb_group);

    let defaults = &cfg.defaults;
    assert_eq!(defaults.parallel, Some(4));
    assert_eq!(defaults.timeout, Some(Duration::from_secs(7_200)));
    assert_eq!(defaults.retries, 2);
    assert_eq!(defaults.kill_grace, Duration::from_secs(30));
    assert_eq!(defaults.strategy, Strategy::LeastLoaded);

    let expected_hpc = HpcOptions {
        walltime: Some(Duration::from_secs(4 * 3_600)),
        partition: Some("gpu".into()),
        queue: Some("workq".into()),
        account: Some("proj123".into()),
        qos: Some("normal".into()),
        cpus: Some(4),
        mem: Some("16G".into()),
        gpus: Some(1),
        gres: Some("gpu:a100:1".into()),
        modules: vec!["cuda/12.1".into()],
        pre_script: vec!["source ~/.bashrc".into()],
        directives: vec!["--constraint=a100".into()],
        max_array_size: Some(1000),
        array_throttle: Some(50),
        array: None,
        requeue: Some(true),
        max_jobs: Some(500),
        tasks_per_job: Some(20),
        pack_parallel: Some(1),
        poll: None,
        resources: None,
    };
    assert_eq!(cfg.hpc, expected_hpc);

    let names: Vec<&str> = cfg.sources.keys().map(String::as_str).collect();
    assert_eq!(names, ["local", "gpu1", "hpc-login", "cluster", "torque"]);
    assert!(matches!(
        cfg.sources["local"].kind,
        SourceKind::Local { slots: Some(4) }
    ));
    assert_eq!(cfg.local_slots(), 4);

    let (address, fingerprint, slots, project_dir, backend, _) = agent(&cfg, "gpu1");
    assert_eq!(address, "gpu1.lab:7300");
    assert_eq!(fingerprint, FP);
    assert_eq!(slots, Some(4));
    assert_eq!(project_dir.as_deref(), Some("/home/me/proj"));
    assert_eq!(backend, Backend::Process);

    // A source's hpc: replaces the project's values key by key; lists are replaced too.
    let (address, _, slots, _, backend, hpc) = agent(&cfg, "hpc-login");
    assert_eq!(address, "[2001:db8::1]:7301");
    assert_eq!(slots, None);
    assert_eq!(backend, Backend::Slurm);
    assert_eq!(hpc.partition.as_deref(), Some("a100"));
    assert_eq!(hpc.mem.as_deref(), Some("32G"));
    assert!(hpc.modules.is_empty());
    assert_eq!(hpc.account.as_deref(), Some("proj123"));
    assert_eq!(hpc.pre_script, expected_hpc.pre_script);

    match &cfg.sources["cluster"].kind {
        SourceKind::Slurm { hpc, .. } => {
            assert_eq!(hpc.walltime, Some(Duration::from_secs(86_400)));
            assert_eq!(hpc.partition.as_deref(), Some("gpu"));
        }
        other => panic!("{other:?}"),
    }
    match &cfg.sources["torque"].kind {
        SourceKind::Pbs { hpc, .. } => assert_eq!(hpc, &expected_hpc),
        other => panic!("{other:?}"),
    }
}

#[test]
fn empty_and_minimal_files_give_defaults() {
    for text in ["", "# only a comment\n", "project:\ncommand:\nsources:\n"] {
        let cfg = parse(text);
        assert_eq!(cfg.name, "proj");
        assert_eq!(cfg.command, CommandSpec::default());
        assert_eq!(cfg.defaults.kill_grace, Duration::from_secs(10));
        assert_eq!(cfg.defaults.retries, 0);
        assert_eq!(cfg.defaults.strategy, Strategy::RoundRobin);
        assert_eq!(cfg.hpc, HpcOptions::default());
        assert_eq!(cfg.sources.len(), 1);
        assert!(matches!(
            cfg.sources["local"].kind,
            SourceKind::Local { slots: None }
        ));
    }
    assert_eq!(
        parse("defaults: {parallel: 3}\n").sources["local"].name,
        "local"
    );
    assert!(matches!(
        parse("defaults: {parallel: 3}\n").sources["local"].kind,
        SourceKind::Local { slots: Some(3) }
    ));
    // An explicit local source keeps its own slots over defaults.parallel.
    let cfg = parse("defaults: {parallel: 3}\nsources:\n  local: {slots: 8}\n");
    assert!(matches!(
        cfg.sources["local"].kind,
        SourceKind::Local { slots: Some(8) }
    ));
    let cfg = parse("sources:\n  local:\n");
    assert!(matches!(
        cfg.sources["local"].kind,
        SourceKind::Local { slots: None }
    ));
}

#[test]
fn command_may_be_just_the_template() {
    let cfg = parse("command: [\"python\", \"-m\", \"pkg.train\", \"{overrides}\"]\n");
    assert_eq!(
        cfg.command.template.as_deref().unwrap(),
        ["python", "-m", "pkg.train", "{overrides}"]
    );
    assert_eq!(cfg.command.python, "python3");
    let found = rendered("command: []\n");
    assert!(
        found[0].contains("expected a non-empty list of strings"),
        "{found:?}"
    );
    let found = rendered("command:\n  template: [\"\", x]\n");
    assert!(found[0].contains("the first item"), "{found:?}");
    let found = rendered("command:\n  template: [python, 3]\n");
    assert_eq!(found, ["c.yaml:2:22: command.template[1]: expected a string, got a number (3) — put it in quotes"]);
}

#[test]
fn load_finds_each_candidate_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let project = dir.path();
    assert_eq!(locate_config(project, None), None);
    let cfg = load_project(project, None).unwrap();
    assert_eq!(cfg.file, None);
    assert!(cfg.root.is_absolute());
    assert_eq!(cfg.sources.len(), 1);
    // A project directory given as `sub/..` still has a name.
    std::fs::create_dir_all(project.join("sub")).unwrap();
    let cfg = load_project(&project.join("sub/.."), None).unwrap();
    assert_eq!(
        Some(cfg.name.as_str()),
        project
            .canonicalize()
            .unwrap()
            .file_name()
            .and_then(|n| n.to_str())
    );

    // Written last-to-first, so each new file must win over the ones already there.
    for (i, candidate) in CONFIG_CANDIDATES.iter().enumerate().rev() {
        let path = project.join(candidate);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, format!("project: {{name: found-{i}}}\n")).unwrap();
        assert_eq!(locate_config(project, None), Some(path.clone()));
        let cfg = load_project(project, None).unwrap();
        assert_eq!(cfg.name, format!("found-{i}"));
        assert_eq!(cfg.file.as_deref(), Some(path.as_path()));
    }

    // An explicit file wins; relative means relative to the project directory.
    std::fs::write(project.join("other.yaml"), "project: {name: explicit}\n").unwrap();
    let cfg = load_project(project, Some(Path::new("other.yaml"))).unwrap();
    assert_eq!(cfg.name, "explicit");
    let err = load_project(project, Some(Path::new("missing.yaml"))).unwrap_err();
    assert!(matches!(err, ConfigError::Io { .. }), "{err:?}");
    assert!(err.to_string().contains("missing.yaml"), "{err}");
}

#[test]
fn invalid_file_error_renders_every_problem_with_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("hsm_config.yaml");
    std::fs::write(&path, "sorces: {}\ndefaults:\n  parallel: four\n").unwrap();
    let err = load_project(dir.path(), None).unwrap_err();
    let ConfigError::Invalid { file, problems } = &err else {
        panic!("{err:?}")
    };
    assert_eq!(file, &path);
    assert_eq!(problems.len(), 2);
    let text = err.to_string();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "{text}");
    let shown = path.display().to_string();
    assert_eq!(
        lines[0],
        format!("{shown}:1:1: sorces: unknown key — did you mean `sources`?")
    );
    assert_eq!(
        lines[1],
        format!(
            "{shown}:3:13: defaults.parallel: expected a positive integer, got a string (\"four\")"
        )
    );
}

#[test]
fn v1_init_file_maps_to_current_keys() {
    let cfg = parse(include_str!("../testdata/v1_init.yaml"));
    assert_eq!(cfg.name, "nca-sweeps");
    // The root is where the file was found, not v1's recorded absolute path.
    assert_eq!(cfg.root, root());
    assert_eq!(
        cfg.command.python,
        "/home/me/miniconda3/envs/nca/bin/python"
    );
    assert_eq!(
        cfg.command.script.as_deref(),
        Some("/home/me/proj/scripts/train.py")
    );
    assert_eq!(cfg.hpc.walltime, Some(Duration::from_secs(4 * 3_600)));
    assert_eq!(cfg.hpc.max_array_size, Some(10_000));
    assert_eq!(
        cfg.hpc.resources.as_deref(),
        Some("select=1:ncpus=4:mem=16gb")
    );
}

#[test]
fn v1_hsm_config_template_maps_to_current_keys() {
    let cfg = parse(include_str!("../testdata/v1_hsm_config.yaml"));
    assert_eq!(cfg.name, "proj");
    assert_eq!(
        cfg.command.python,
        "/home/me/miniconda3/envs/nca/bin/python"
    );
    assert_eq!(cfg.command.script.as_deref(), Some("/home/me/proj/main.py"));
    assert_eq!(cfg.command.conda_env.as_deref(), Some("nca"));
    assert_eq!(cfg.hpc.walltime, Some(Duration::from_secs(86_399)));
    assert_eq!(cfg.hpc.max_array_size, None);
    assert_eq!(cfg.hpc.pre_script, ["module load cuda/11.8"]);
    // compute.max_concurrent_local and retry_attempts are defaults.parallel and retries; the
    // rest of compute: belongs to the Python tool.
    assert_eq!(cfg.defaults.retries, 3);
    assert_eq!(cfg.defaults.parallel, Some(4));
    assert_eq!(cfg.local_slots(), 4);
    // experiment_tracking.wandb_enabled: false: no W&B group.
    assert!(!cfg.command.wandb_group);
}

#[test]
fn v1_keys_that_disagree_with_current_ones_are_problems() {
    let found = rendered(
        "command:\n  python: python3\n  script: a.py\npaths:\n  python_interpreter: /usr/bin/python\n  train_script: a.py\n",
    );
    assert_eq!(
        found,
        ["c.yaml:5:23: paths.python_interpreter: `/usr/bin/python` conflicts with `command.python: python3` (line 2) — keep one of them; `command.python` is the current name"]
    );
    let found = rendered(
        "hpc:\n  walltime: 4h\n  default_walltime: '05:00:00'\n  queue: a\n  default_queue: b\n",
    );
    assert_eq!(found.len(), 2, "{found:?}");
    assert!(found[0].starts_with(
        "c.yaml:3:21: hpc.default_walltime: `05:00:00` conflicts with `hpc.walltime: 4h`"
    ));
    assert!(found[1].starts_with("c.yaml:5:18: hpc.default_queue:"));
    // Same meaning, different spelling: fine.
    let cfg = parse("hpc:\n  walltime: 4h\n  default_walltime: '04:00:00'\n  pre_script: [b]\n  module_commands: [a]\n");
    assert_eq!(cfg.hpc.walltime, Some(Duration::from_secs(14_400)));
    assert_eq!(cfg.hpc.pre_script, ["a", "b"]);
    // v1 keys are for the top-level hpc: only.
    let found = rendered(&format!(
        "sources:\n  a:\n    type: agent\n    address: a:1\n    fingerprint: {FP}\n    project_dir: /p\n    hpc: {{default_walltime: 1h}}\n"
    ));
    assert_eq!(found.len(), 1);
    assert!(
        found[0].contains("sources.a.hpc.default_walltime: unknown key — Python HSM v1 keys"),
        "{found:?}"
    );
}

#[test]
fn unknown_keys_point_at_the_key_with_a_suggestion() {
    let found = rendered("project:\n  name: x\nsorces:\n  local: {type: local}\n");
    assert_eq!(
        found,
        ["c.yaml:3:1: sorces: unknown key — did you mean `sources`?"]
    );
    let found = rendered("defaults:\n  paralel: 4\n");
    assert_eq!(
        found,
        ["c.yaml:2:3: defaults.paralel: unknown key — did you mean `parallel`?"]
    );
    let found = rendered("hpc:\n  zzz: 1\n");
    assert!(
        found[0]
            .starts_with("c.yaml:2:3: hpc.zzz: unknown key — expected one of: walltime, partition"),
        "{found:?}"
    );
    let found = rendered("slurm:\n  walltime: 1h\n");
    assert!(
        found[0].contains("slurm: unknown key — Python HSM's `slurm:` block is `hpc:` here"),
        "{found:?}"
    );
    let found = rendered("sources:\n  gpu:\n    type: agent\n    adress: x:1\n");
    assert!(
        found
            .iter()
            .any(|p| p == "c.yaml:4:5: sources.gpu.adress: unknown key — did you mean `address`?"),
        "{found:?}"
    );
}

#[test]
fn five_mistakes_give_five_problems() {
    let text = "\
sorces:
  x: {}
defaults:
  parallel: \"4\"
  timeout: 2hours
  strategy: round-robbin
command:
  style: hydro
";
    let found = problems(text);
    let shown: Vec<String> = found.iter().map(|p| p.render("c.yaml")).collect();
    assert_eq!(found.len(), 5, "{shown:#?}");
    let at: Vec<Pos> = found.iter().map(|p| p.pos.unwrap()).collect();
    assert_eq!(
        at,
        [
            Pos { line: 1, col: 1 },
            Pos { line: 4, col: 13 },
            Pos { line: 5, col: 12 },
            Pos { line: 6, col: 13 },
            Pos { line: 8, col: 10 },
        ]
    );
    assert_eq!(shown[1], "c.yaml:4:13: defaults.parallel: expected a positive integer, got a string (\"4\") — write parallel: 4 without quotes");
    assert!(
        shown[2].contains("`2hours` is not a duration"),
        "{}",
        shown[2]
    );
    assert_eq!(shown[3], "c.yaml:6:13: defaults.strategy: unknown strategy `round-robbin` — did you mean `round-robin`?");
    assert_eq!(
        shown[4],
        "c.yaml:8:10: command.style: unknown style `hydro` — did you mean `hydra`?"
    );
}

#[test]
fn wrong_types_and_ranges_say_what_was_expected() {
    let cases = [
        (
            "defaults: {parallel: 0}\n",
            "defaults.parallel: expected a positive integer, got 0",
        ),
        (
            "defaults: {parallel: 1.5}\n",
            "defaults.parallel: expected a positive integer, got a number (1.5)",
        ),
        (
            "defaults: {retries: -1}\n",
            "defaults.retries: expected a non-negative integer, got -1",
        ),
        (
            "defaults: {timeout: 0}\n",
            "defaults.timeout: must be longer than zero",
        ),
        (
            "defaults: {timeout: [1]}\n",
            "defaults.timeout: expected a duration, got a list",
        ),
        (
            "defaults: 3\n",
            "defaults: expected a mapping, got a number (3)",
        ),
        (
            "command: {wandb_group: yes}\n",
            "command.wandb_group: expected true or false, got a string (\"yes\") — YAML 1.2",
        ),
        ("command: {python: ''}\n", "command.python: is empty"),
        (
            "hpc: {mem: 16}\n",
            "hpc.mem: expected a memory size with a unit, got a number (16) — write e.g. mem: 16G",
        ),
        ("hpc: {mem: lots}\n", "hpc.mem: `lots` is not a memory size"),
        (
            "hpc: {cpus: 0}\n",
            "hpc.cpus: expected a positive integer, got 0",
        ),
        (
            "hpc: {modules: cuda}\n",
            "hpc.modules: expected a list of strings, got a string (\"cuda\") — write [cuda]",
        ),
        (
            "hpc: {directives: ['#SBATCH -N 1']}\n",
            "hpc.directives: `#SBATCH -N 1`: write the option only",
        ),
        (
            "hpc: {walltime: 1.5h}\n",
            "hpc.walltime: `1.5h` is not a duration: fractions",
        ),
        ("[1, 2]\n", "expected a mapping of sections, got a list"),
        ("a: [1\n", "c.yaml:"),
    ];
    for (text, want) in cases {
        let found = rendered(text);
        assert!(
            found.iter().any(|p| p.contains(want)),
            "{text:?}: wanted {want:?} in {found:#?}"
        );
    }
    // Numbers are fine where names may be numeric.
    let cfg = parse("hpc: {account: 12345, gpus: 0}\n");
    assert_eq!(cfg.hpc.account.as_deref(), Some("12345"));
    assert_eq!(cfg.hpc.gpus, Some(0));
}

#[test]
fn packing_needs_arrays_and_pack_parallel_needs_packing() {
    let found = rendered("hpc:\n  array: false\n  tasks_per_job: 50\n");
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(
        found[0].starts_with("c.yaml:3:18: hpc.tasks_per_job: packing tasks needs job arrays"),
        "{found:?}"
    );
    let found = rendered("hpc:\n  pack_parallel: 4\n");
    assert!(
        found[0].contains("pack_parallel applies to packed jobs only"),
        "{found:?}"
    );
    // A source may pack where the project does not.
    let cfg = parse(&format!(
        "sources:\n  c: {{type: agent, address: 'h:1', fingerprint: {FP}, project_dir: /p, backend: slurm, hpc: {{tasks_per_job: 10}}}}\n"
    ));
    assert!(cfg.hpc.tasks_per_job.is_none());
    let found = rendered("hpc:\n  gpus: 1\n  tasks_per_job: 8\n  pack_parallel: 2\n");
    assert!(
        found[0].contains("would share every GPU of their job"),
        "{found:?}"
    );
    let found = rendered("hpc:\n  tasks_per_job: 4\n  pack_parallel: 8\n");
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(
        found[0].starts_with(
            "c.yaml:3:18: hpc.pack_parallel: 8 at once is more than the 4 tasks a job runs"
        ) && found[0].contains("use pack_parallel: 4 or less"),
        "{found:?}"
    );
    let found = rendered("hpc:\n  tasks_per_job: 0\n  pack_parallel: 2\n");
    assert!(
        found[0].contains("expected a positive integer, got 0"),
        "{found:?}"
    );
    assert_eq!(found.len(), 1, "no knock-on problem: {found:?}");
}

#[test]
fn source_problems_name_the_source_and_the_fix() {
    let bad_fp = "sha256:0123456789ABCDEF0123456789abcdef0123456789abcdef0123456789abcdef";
    let text = format!(
        "sources:
  a: {{type: agent, address: 'gpu1.lab', fingerprint: {FP}}}
  b: {{type: agent, address: 'h:99999', fingerprint: 'md5:00'}}
  c: {{type: agent, address: '::1:7300', fingerprint: {bad_fp}}}
  d: {{type: agent, address: 'h:1', fingerprint: {FP}, backend: slurn}}
  e: {{type: agnet}}
  f: {{slots: 2}}
  g: {{type: agent}}
  local: {{type: agent, address: 'h:1', fingerprint: {FP}}}
  mine: {{type: local}}
  h: {{type: slurm, address: 'h:1'}}
  'bad name': {{type: slurm}}
  i: 5
"
    );
    let found = rendered(&text);
    let wants = [
        "c.yaml:2:29: sources.a.address: `gpu1.lab` is not a host:port address: missing `:port` — write e.g. gpu1.lab:7300",
        "c.yaml:3:29: sources.b.address: `h:99999` is not a host:port address: the port must be a number 1-65535",
        "c.yaml:3:53: sources.b.fingerprint: `md5:00` is not a fingerprint: it must start with `sha256:`",
        "c.yaml:4:29: sources.c.address: `::1:7300` is not a host:port address: an IPv6 address needs brackets",
        "sources.c.fingerprint: `sha256:0123456789ABCDEF",
        "write the hex digits in lowercase",
        "c.yaml:5:131: sources.d.backend: unknown backend `slurn` — did you mean `slurm`?",
        "c.yaml:6:13: sources.e.type: unknown source type `agnet` — did you mean `agent`?",
        "c.yaml:7:6: sources.f: missing `type` — add type: agent",
        "c.yaml:8:6: sources.g: an agent source needs `address`",
        "c.yaml:8:6: sources.g: an agent source needs `fingerprint`",
        "c.yaml:8:6: sources.g: an agent source needs `project_dir` — add project_dir: /path/to/the/project on that host",
        "c.yaml:9:17: sources.local.type: the source named `local` must have type local, not agent",
        "c.yaml:10:16: sources.mine.type: only the source named `local` can have type local",
        "c.yaml:11:20: sources.h.address: not a setting of a slurm source — a slurm source takes: type, slots, hpc",
        "c.yaml:12:3: sources.bad name: `bad name` is not a usable source name",
        "c.yaml:13:6: sources.i: expected a mapping with a `type:`, got a number (5)",
    ];
    for want in wants {
        assert!(
            found.iter().any(|p| p.contains(want)),
            "wanted {want:?} in {found:#?}"
        );
    }
    // Plus a missing project_dir for each of a, b, c and d.
    assert_eq!(found.len(), wants.len() - 1 + 4, "{found:#?}");
}

#[test]
fn v1_wandb_settings_turn_the_group_on_and_ours_wins() {
    assert!(!parse("command: {script: a.py}\n").command.wandb_group);
    assert!(
        parse("wandb:\n  project: nca\n  entity: ''\n")
            .command
            .wandb_group
    );
    assert!(!parse("wandb:\n  project: ''\n").command.wandb_group);
    assert!(
        parse("experiment_tracking:\n  wandb_enabled: true\n  wandb_project: null\n")
            .command
            .wandb_group
    );
    assert!(
        !parse("wandb: {project: nca}\nexperiment_tracking: {wandb_enabled: false}\n")
            .command
            .wandb_group
    );
    assert!(
        !parse("wandb: {project: nca}\ncommand: {wandb_group: false}\n")
            .command
            .wandb_group
    );
    assert!(parse("command: {wandb_group: true}\n").command.wandb_group);
    assert_eq!(parse("command: {hydra: true}\n").command.hydra, Some(true));
    assert_eq!(parse("command: {}\n").command.hydra, None);
}

#[test]
fn v1_compute_keys_are_defaults_and_conflicts_are_problems() {
    let cfg = parse("compute:\n  max_concurrent_local: 3\n  retry_attempts: 0\n");
    assert_eq!(cfg.defaults.parallel, Some(3));
    assert_eq!(cfg.defaults.retries, 0);
    let found = rendered("defaults:\n  parallel: 2\ncompute:\n  max_concurrent_local: 3\n");
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(
        found[0].starts_with(
            "c.yaml:4:25: compute.max_concurrent_local: `3` conflicts with `defaults.parallel: 2`"
        ),
        "{found:?}"
    );
    let found = rendered("compute:\n  max_concurrent_local: 0\n");
    assert_eq!(found.len(), 1, "{found:?}");
}

#[test]
fn agent_sources_need_project_dir_and_take_their_own_python() {
    let cfg = parse(&format!(
        "command: {{python: /home/me/venv/bin/python}}\nsources:\n  a: {{type: agent, address: 'h:1', fingerprint: {FP}, project_dir: /p}}\n  b: {{type: agent, address: 'h:1', fingerprint: {FP}, project_dir: /p, python: /opt/py3}}\n"
    ));
    let python = |name: &str| match &cfg.sources[name].kind {
        SourceKind::Agent { python, .. } => python.clone(),
        other => panic!("{other:?}"),
    };
    assert_eq!(python("a"), "python3");
    assert_eq!(python("b"), "/opt/py3");
    let found = rendered(&format!(
        "sources:\n  a:\n    type: agent\n    address: 'h:1'\n    fingerprint: {FP}\n"
    ));
    assert_eq!(
        found,
        ["c.yaml:3:5: sources.a: an agent source needs `project_dir` — add project_dir: /path/to/the/project on that host (tasks run there; `agent add ... --project-dir DIR` writes it)"]
    );
}

#[test]
fn checks_of_addresses_fingerprints_and_names() {
    for ok in ["h:1", "gpu1.lab:7300", "10.0.0.1:65535", "[::1]:7300"] {
        assert_eq!(validate_address(ok), Ok(()), "{ok}");
    }
    for bad in [
        "",
        ":7300",
        "h:",
        "h:0",
        "h:x",
        "[::1]7300",
        "[::1:7300",
        "a b:1",
        "a/b:1",
    ] {
        assert!(validate_address(bad).is_err(), "{bad}");
    }
    assert_eq!(validate_fingerprint(FP), Ok(()));
    assert!(validate_fingerprint(&FP[..FP.len() - 1])
        .unwrap_err()
        .contains("found 63"));
    assert!(validate_fingerprint(&FP.replace('a', "g")).is_err());
    for ok in ["gpu1", "hpc-login", "a_b.c"] {
        assert_eq!(validate_source_name(ok), Ok(()), "{ok}");
    }
    for bad in ["", "../x", ".hidden", "-x", "a/b", &"x".repeat(65)] {
        assert!(validate_source_name(bad).is_err(), "{bad}");
    }
}

#[test]
fn strategy_and_backend_words() {
    for s in Strategy::ALL {
        assert_eq!(s.as_str().parse::<Strategy>(), Ok(s));
    }
    assert_eq!("round_robin".parse::<Strategy>(), Ok(Strategy::RoundRobin));
    assert!("fastest"
        .parse::<Strategy>()
        .unwrap_err()
        .contains("round-robin"));
    for b in Backend::ALL {
        assert_eq!(b.to_string().parse::<Backend>(), Ok(b));
    }
    assert!("docker".parse::<Backend>().is_err());
    assert_eq!(
        parse("defaults: {strategy: round_robin}\n")
            .defaults
            .strategy,
        Strategy::RoundRobin
    );
}

#[test]
fn display_yaml_reads_back_as_the_same_config() {
    let mut cfg = parse(include_str!("../testdata/full.yaml"));
    cfg.file = Some(PathBuf::from("/work/proj/.hsm/config.yaml"));
    let text = to_display_yaml(&cfg);
    assert!(
        text.starts_with("# resolved from /work/proj/.hsm/config.yaml\n"),
        "{text}"
    );
    let tree = crate::yaml::parse(&text).unwrap().unwrap();
    assert_eq!(
        tree.get("defaults")
            .and_then(|d| d.get("timeout"))
            .and_then(|t| t.as_str()),
        Some("2h")
    );
    let back = parse(&text);
    assert_eq!(back.name, cfg.name);
    assert_eq!(back.command, cfg.command);
    assert_eq!(back.hpc, cfg.hpc);
    assert_eq!(back.defaults.timeout, cfg.defaults.timeout);
    assert_eq!(back.defaults.kill_grace, cfg.defaults.kill_grace);
    assert_eq!(back.defaults.strategy, cfg.defaults.strategy);
    assert_eq!(agent(&back, "hpc-login"), agent(&cfg, "hpc-login"));
    let names: Vec<_> = back.sources.keys().collect();
    assert_eq!(names, cfg.sources.keys().collect::<Vec<_>>());

    // Defaults filled in: the local slots and parallel show a number, not null.
    let defaults = ProjectConfig::defaults_for(&root());
    let text = to_display_yaml(&defaults);
    let tree = crate::yaml::parse(&text).unwrap().unwrap();
    let slots = tree
        .get("sources")
        .and_then(|s| s.get("local"))
        .and_then(|l| l.get("slots"));
    assert!(
        matches!(slots.map(|s| &s.node), Some(crate::yaml::Node::Int(n)) if *n >= 1),
        "{text}"
    );
    parse(&text);
}

#[test]
fn min_free_disk_takes_sizes_and_zero() {
    assert_eq!(RunDefaults::default().min_free_disk, 1 << 30);
    let cfg = parse("defaults:\n  min_free_disk: 1.5G\n");
    assert_eq!(cfg.defaults.min_free_disk, 3 << 29);
    let cfg = parse("defaults:\n  min_free_disk: 500mb\n");
    assert_eq!(cfg.defaults.min_free_disk, 500 << 20);
    let cfg = parse("defaults:\n  min_free_disk: 0\n");
    assert_eq!(cfg.defaults.min_free_disk, 0);
    let shown = rendered("defaults:\n  min_free_disk: lots\n");
    assert!(
        shown[0].contains("c.yaml:2:18") && shown[0].contains("not a size"),
        "{shown:?}"
    );
    let shown = rendered("defaults:\n  min_free_disk: 200\n");
    assert!(shown[0].contains("200G"), "{shown:?}");
}

#[test]
fn a_config_with_problems_still_yields_its_valid_keys_and_their_positions() {
    let text = "command:\n  script: train.py\n  python: /opt/py\ndefaults:\n  parallel: four\nsources:\n  gpu1:\n    type: agent\n    address: 'h:1'\n    fingerprint: sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef\n    python: /srv/py\n";
    let (cfg, problems) = parse_config_lenient(text, &root()).unwrap();
    assert_eq!(problems.len(), 2, "{problems:?}"); // parallel, project_dir
    assert_eq!(cfg.command.script.as_deref(), Some("train.py"));
    assert_eq!(cfg.command.python, "/opt/py");
    assert_eq!(
        cfg.key_pos(&["command.python", "paths.python_interpreter"]),
        Some(Pos { line: 3, col: 3 })
    );
    assert_eq!(
        cfg.key_pos(&["sources.gpu1.python"]),
        Some(Pos { line: 11, col: 5 })
    );
    assert_eq!(cfg.key_pos(&["command.conda_env"]), None);
    // A v1 spelling is found by its own path.
    let (cfg, _) =
        parse_config_lenient("paths:\n  python_interpreter: /opt/py\n", &root()).unwrap();
    assert_eq!(
        cfg.key_pos(&["command.python", "paths.python_interpreter"]),
        Some(Pos { line: 2, col: 3 })
    );
    // A syntax error leaves nothing to build from.
    let errors = parse_config_lenient("command: [a\n", &root())
        .err()
        .unwrap();
    assert!(
        errors[0].message.starts_with("invalid YAML: "),
        "{errors:?}"
    );
}

#[test]
fn many_problems_are_each_reported_once_and_repeats_fold() {
    // 40k unknown keys are 40k problems, kept in order; folding repeats went through a scan of
    // the kept ones per problem (9 s in `config validate`). The time is printed, not asserted.
    let n = 40_000;
    let text: String = (0..n).map(|i| format!("k{i}: 1\n")).collect();
    let started = std::time::Instant::now();
    let found = problems(&text);
    println!("{n} unknown keys checked in {:?}", started.elapsed());
    assert_eq!(found.len(), n);
    assert_eq!(found[n - 1].pos, Some(Pos { line: n, col: 1 }));
    // A project-wide value checked again for every source that inherits it is one problem.
    let mut sources = String::from("hpc:\n  walltime: soon\nsources:\n");
    for i in 0..3 {
        sources.push_str(&format!("  s{i}: {{type: slurm}}\n"));
    }
    let found = rendered(&sources);
    let walltime: Vec<_> = found.iter().filter(|p| p.contains("walltime")).collect();
    assert_eq!(walltime.len(), 1, "{found:#?}");
}

/// `agent deploy` rewrites the entry on every run: the same values must give the same text, with
/// the keys in the order they are written, even when some are kept rather than given (they
/// used to move to the end, so a deploy that changed nothing rewrote the config).
#[test]
fn sources_take_their_own_conda_env_env_and_pre_script_over_the_commands() {
    let cfg = parse(&format!(
        "command:\n  python: python3\n  script: train.py\n  env: {{OMP_NUM_THREADS: 4, WANDB_MODE: offline}}\n  pre_script: [\"echo project\"]\nsources:\n  gpu:\n    type: agent\n    address: gpu:7300\n    fingerprint: {FP}\n    project_dir: /srv/p\n    conda_env: torch\n    env: {{WANDB_MODE: online, CUDA_VISIBLE_DEVICES: \"0\"}}\n    pre_script: [module load cuda/12.1]\n"
    ));
    let env = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    };
    assert_eq!(
        cfg.command.env,
        env(&[("OMP_NUM_THREADS", "4"), ("WANDB_MODE", "offline")])
    );
    assert_eq!(cfg.command.pre_script, vec!["echo project"]);
    let SourceKind::Agent { setup, python, .. } = &cfg.sources["gpu"].kind else {
        panic!("not an agent");
    };
    assert_eq!(setup.conda_env.as_deref(), Some("torch"));
    let command = cfg.command.for_source(Some(python), setup);
    assert_eq!(
        command.env,
        env(&[
            ("OMP_NUM_THREADS", "4"),
            ("WANDB_MODE", "online"),
            ("CUDA_VISIBLE_DEVICES", "0")
        ])
    );
    assert_eq!(command.pre_script, vec!["module load cuda/12.1"]);
    assert_eq!(command.conda_env.as_deref(), Some("torch"));
    // `config show` writes them back.
    let shown = display::to_display_yaml(&cfg);
    assert!(shown.contains("conda_env: torch"), "{shown}");
    assert!(shown.contains("module load cuda/12.1"), "{shown}");
}

#[test]
fn env_names_must_be_variables_and_not_hsms_own() {
    let found = rendered(
        "command:\n  python: python3\n  env: {HSM_OUTPUT_DIR: /tmp, 9LIVES: x, OK_NAME: [1]}\n",
    );
    let all = found.join("\n");
    assert!(
        all.contains("`HSM_OUTPUT_DIR` is set by hsm for every task"),
        "{all}"
    );
    assert!(
        all.contains("`9LIVES` is not an environment variable name"),
        "{all}"
    );
    assert!(
        all.contains("command.env.OK_NAME") && all.contains("expected a string"),
        "{all}"
    );
    let found = rendered("command:\n  env: [A=1]\n");
    assert!(
        found
            .join("\n")
            .contains("expected a mapping of names to values"),
        "{found:?}"
    );
}

fn agent_sync(cfg: &ProjectConfig, name: &str) -> SyncMode {
    match &cfg.sources[name].kind {
        SourceKind::Agent { sync, .. } => *sync,
        other => panic!("{name} is not an agent: {other:?}"),
    }
}

#[test]
fn sync_is_check_by_default_set_at_the_top_and_overridden_per_source() {
    let fp = format!("sha256:{}", "a".repeat(64));
    let sources = format!(
        "sources:\n  a: {{type: agent, address: h:1, fingerprint: '{fp}', project_dir: /p}}\n  b: {{type: agent, address: h:2, fingerprint: '{fp}', project_dir: /p, sync: off}}\n"
    );
    let cfg = parse(&sources);
    assert_eq!(cfg.sync, SyncSettings::default());
    assert_eq!(agent_sync(&cfg, "a"), SyncMode::Check);
    assert_eq!(agent_sync(&cfg, "b"), SyncMode::Off);
    // The short form: just the mode.
    let cfg = parse(&format!("sync: push\n{sources}"));
    assert_eq!(cfg.sync.mode, SyncMode::Push);
    assert_eq!(agent_sync(&cfg, "a"), SyncMode::Push);
    assert_eq!(agent_sync(&cfg, "b"), SyncMode::Off);
    let cfg = parse(&format!(
        "sync:\n  mode: check\n  include: ['*.py', conf/]\n  exclude: [data/]\n{sources}"
    ));
    assert_eq!(cfg.sync.include, ["*.py", "conf/"]);
    assert_eq!(cfg.sync.exclude, ["data/"]);
    let shown = rendered("sync:\n  mode: pusj\n  exclud: [x]\n");
    assert!(
        shown
            .iter()
            .any(|p| p.contains("c.yaml:2") && p.contains("did you mean `push`")),
        "{shown:?}"
    );
    assert!(
        shown
            .iter()
            .any(|p| p.contains("c.yaml:3") && p.contains("exclud")),
        "{shown:?}"
    );
    let shown = rendered(&format!(
        "sources:\n  a: {{type: agent, address: h:1, fingerprint: '{fp}', project_dir: /p, sync: always}}\n"
    ));
    assert!(
        shown
            .iter()
            .any(|p| p.contains("unknown sync mode `always`")),
        "{shown:?}"
    );
    // The likely mistakes get the modes listed, not "put it in quotes".
    let shown = rendered(&format!(
        "sources:\n  a: {{type: agent, address: h:1, fingerprint: '{fp}', project_dir: /p, sync: {{exclude: [x]}}}}\n"
    ));
    assert!(
        shown.iter().any(|p| p.contains("sources.a.sync")
            && p.contains("check | push | off")
            && p.contains("go in the top-level `sync:`")),
        "{shown:?}"
    );
    let shown = rendered("sync: true\n");
    assert!(
        shown.iter().any(|p| p.contains("c.yaml:1")
            && p.contains("check | push | off")
            && !p.contains("quotes")),
        "{shown:?}"
    );
}

/// `work_dir`: an agent source's own, else `defaults.work_dir`; absolute or `~/...`; only on
/// agent sources; shown by `config show`, which reads back the same.
#[test]
fn agent_sources_take_a_work_dir_of_their_own_or_from_defaults() {
    let text = format!(
        "defaults:\n  work_dir: ~/hsm-work/\nsources:\n  a:\n    type: agent\n    address: a:7300\n    fingerprint: {FP}\n    project_dir: /p\n    work_dir: /scratch/me/hsm\n  b:\n    type: agent\n    address: b:7300\n    fingerprint: {FP}\n    project_dir: /p\n"
    );
    let cfg = parse(&text);
    let work_dir = |cfg: &ProjectConfig, name: &str| match &cfg.sources[name].kind {
        SourceKind::Agent { work_dir, .. } => work_dir.clone(),
        other => panic!("{other:?}"),
    };
    assert_eq!(work_dir(&cfg, "a").as_deref(), Some("/scratch/me/hsm"));
    assert_eq!(work_dir(&cfg, "b").as_deref(), Some("~/hsm-work"));
    assert_eq!(cfg.defaults.work_dir.as_deref(), Some("~/hsm-work"));
    let shown = to_display_yaml(&cfg);
    assert!(shown.contains("work_dir: /scratch/me/hsm"), "{shown}");
    let back = parse(&shown);
    assert_eq!(work_dir(&back, "a"), work_dir(&cfg, "a"));
    assert_eq!(work_dir(&back, "b"), work_dir(&cfg, "b"));
    // Without any: none (the agent's own default), shown as null and read back as none.
    let plain = parse(&text.replace("  work_dir: ~/hsm-work/\n", "  parallel: 2\n"));
    assert_eq!(work_dir(&plain, "b"), None);
    assert_eq!(work_dir(&parse(&to_display_yaml(&plain)), "b"), None);

    let found = rendered(&text.replace("/scratch/me/hsm", "scratch/hsm"));
    assert_eq!(found.len(), 1, "{found:#?}");
    assert!(found[0].contains("sources.a.work_dir"), "{}", found[0]);
    assert!(found[0].contains("is relative"), "{}", found[0]);
    assert!(found[0].contains("~/hsm-work"), "the hint: {}", found[0]);
    let found = rendered("defaults:\n  work_dir: work\n");
    assert!(
        found.len() == 1 && found[0].contains("defaults.work_dir"),
        "{found:#?}"
    );
    let found = rendered("sources:\n  s: {type: slurm, work_dir: /w}\n");
    assert!(
        found
            .iter()
            .any(|p| p.contains("not a setting of a slurm source")),
        "{found:#?}"
    );
}

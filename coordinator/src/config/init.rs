//! `init`: what we can find out about a project (python, training script, scheduler) and the
//! annotated `.hsm/config.yaml` and `sweeps/sweep.yaml` written from it.

use std::ffi::OsString;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// A batch scheduler found on this machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheduler {
    Slurm,
    Pbs,
    /// Grid Engine's `qsub` (SGE, Son of Grid Engine, UGE, OGS).
    Sge,
}

/// What `init` found.
#[derive(Debug, Clone)]
pub struct Detection {
    /// The interpreter, as an absolute path.
    pub python: Option<String>,
    /// Candidate training scripts, relative to the project directory, most likely first.
    pub scripts: Vec<PathBuf>,
    pub scheduler: Option<Scheduler>,
    /// How the first script takes its parameters, read from its text.
    pub style: ScriptStyle,
}

/// How a script takes its parameters, as far as its text tells.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum ScriptStyle {
    /// Hydra (`@hydra.main`) or nothing recognisable: `key=value` overrides.
    #[default]
    Overrides,
    /// `argparse` without Hydra: `--key value`, and the flag it takes an output directory with,
    /// if it declares one of the usual names.
    Argparse { output_flag: Option<String> },
}

/// Reads a script's text for how it takes parameters.
pub fn script_style(text: &str) -> ScriptStyle {
    if text.contains("hydra") || !text.contains("argparse") {
        return ScriptStyle::Overrides;
    }
    const OUTPUT_FLAGS: [&str; 7] = [
        "--output_dir",
        "--output-dir",
        "--out_dir",
        "--out-dir",
        "--outdir",
        "--save_dir",
        "--output",
    ];
    let output_flag = OUTPUT_FLAGS
        .iter()
        .find(|flag| text.contains(&format!("\"{flag}\"")) || text.contains(&format!("'{flag}'")))
        .map(|flag| flag.to_string());
    ScriptStyle::Argparse { output_flag }
}

/// Looks at the project and this machine (thin IO; no subprocesses).
///
/// - python: an active virtualenv's or conda env's `bin/python` (`VIRTUAL_ENV`, then
///   `CONDA_PREFIX`), else the first of `python3`, `python` on `PATH`.
/// - scripts: `train.py`, `*train*.py`, `main.py`, `run.py` directly in the project root,
///   `scripts/` and `src/` (not deeper), in that order of likelihood, then by place.
///   Hidden files and `test_*` files are skipped.
/// - scheduler: Slurm if `sbatch` is on `PATH` (first: Slurm clusters may ship qsub
///   wrappers), else, when `qsub` is, Grid Engine if `SGE_ROOT` is set or `qconf` is on `PATH`
///   (both PBS and Grid Engine name their submit command `qsub`), else PBS.
pub fn detect(project_dir: &Path) -> Detection {
    detect_with(project_dir, |key| std::env::var_os(key))
}

/// `detect` with the environment passed in, so tests need not change the process's.
fn detect_with(project_dir: &Path, env: impl Fn(&str) -> Option<OsString>) -> Detection {
    let path_dirs: Vec<PathBuf> = env("PATH")
        .map(|path| {
            std::env::split_paths(&path)
                // A relative PATH entry depends on the cwd of whoever runs the task later.
                .filter(|dir| dir.is_absolute())
                .collect()
        })
        .unwrap_or_default();
    let on_path = |program: &str| {
        path_dirs
            .iter()
            .map(|dir| dir.join(program))
            .find(|candidate| is_executable(candidate))
    };

    let env_python = ["VIRTUAL_ENV", "CONDA_PREFIX"]
        .iter()
        .filter_map(|key| env(key).filter(|prefix| !prefix.is_empty()))
        .flat_map(|prefix| {
            let bin = PathBuf::from(prefix).join("bin");
            [bin.join("python"), bin.join("python3")]
        })
        // Not canonicalized: a venv's python is a symlink whose target loses the venv.
        .find(|candidate| candidate.is_absolute() && is_executable(candidate));
    let python = env_python
        .or_else(|| on_path("python3"))
        .or_else(|| on_path("python"))
        .map(|p| p.to_string_lossy().into_owned());

    let scheduler = if on_path("sbatch").is_some() {
        Some(Scheduler::Slurm)
    } else if on_path("qsub").is_some() {
        let grid_engine =
            env("SGE_ROOT").is_some_and(|root| !root.is_empty()) || on_path("qconf").is_some();
        Some(if grid_engine {
            Scheduler::Sge
        } else {
            Scheduler::Pbs
        })
    } else {
        None
    };

    let scripts = find_scripts(project_dir);
    let style = scripts
        .first()
        .and_then(|script| std::fs::read_to_string(project_dir.join(script)).ok())
        .map(|text| script_style(&text))
        .unwrap_or_default();
    Detection {
        python,
        scripts,
        scheduler,
        style,
    }
}

fn is_executable(path: &Path) -> bool {
    let Ok(meta) = std::fs::metadata(path) else {
        return false;
    };
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        meta.is_file() && meta.permissions().mode() & 0o111 != 0
    }
    #[cfg(not(unix))]
    {
        meta.is_file()
    }
}

fn find_scripts(project_dir: &Path) -> Vec<PathBuf> {
    let mut found: Vec<(usize, usize, PathBuf)> = Vec::new();
    for (place, dir) in ["", "scripts", "src"].iter().enumerate() {
        let Ok(entries) = std::fs::read_dir(project_dir.join(dir)) else {
            continue;
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(rank) = script_rank(&name) else {
                continue;
            };
            // metadata() follows symlinks: a linked script is still a script.
            if !entry.path().metadata().is_ok_and(|m| m.is_file()) {
                continue;
            }
            found.push((rank, place, Path::new(dir).join(&name)));
        }
    }
    found.sort();
    found.into_iter().map(|(_, _, path)| path).collect()
}

/// How likely a file name is the entry point (lower is likelier), or `None` if it is not one.
fn script_rank(name: &str) -> Option<usize> {
    if name.starts_with('.') || name.starts_with("test_") || !name.ends_with(".py") {
        return None;
    }
    match name {
        "train.py" => Some(0),
        _ if name.contains("train") => Some(1),
        "main.py" => Some(2),
        "run.py" => Some(3),
        _ => None,
    }
}

/// A YAML scalar for `text`, quoted when plain style would change its meaning.
fn scalar(text: &str) -> String {
    crate::yaml::emit_json(&serde_json::Value::String(text.to_string()))
        .trim_end()
        .to_string()
}

/// The annotated `.hsm/config.yaml` for what `detect` found. It parses with `parse_config`.
pub fn init_config_text(d: &Detection) -> String {
    let mut out = String::new();
    out.push_str(
        "# hsm project config, written by `hsm-coordinator init`.\n\
         # `hsm-coordinator config show` prints every value resolved (defaults filled in);\n\
         # `hsm-coordinator config validate` checks this file.\n\
         # Durations: 90s, 15m, 2h, 1h30m, 1d, HH:MM:SS, or a number of seconds.\n\
         \n\
         project:\n\
         \x20 # name: my-project            # default: the project directory's name\n\
         \n\
         command:\n",
    );
    match &d.python {
        Some(python) => {
            let _ = writeln!(
                out,
                "  # The interpreter that runs every task (found on this machine)."
            );
            let _ = writeln!(out, "  python: {}", scalar(python));
        }
        None => {
            out.push_str(
                "  # The interpreter that runs every task. No python was found on PATH:\n\
                 \x20 # set the full path of the one your project uses.\n\
                 \x20 python: python3\n",
            );
        }
    }
    let shown: Vec<String> = d
        .scripts
        .iter()
        .map(|p| p.to_string_lossy().replace('\\', "/"))
        .collect();
    match shown.as_slice() {
        [] => out.push_str(
            "  # The training script, relative to the project root. None was found (looked for\n\
             \x20 # train.py, *train*.py, main.py, run.py in ./, scripts/ and src/): set it here,\n\
             \x20 # or per sweep with `script:` in the sweep file.\n\
             \x20 # script: train.py\n",
        ),
        [only] => {
            let _ = writeln!(
                out,
                "  # The training script, relative to the project root (found: {only})."
            );
            let _ = writeln!(out, "  script: {}", scalar(only));
        }
        [first, ..] => {
            out.push_str(
                "  # The training script, relative to the project root. SEVERAL CANDIDATES WERE\n\
                 \x20 # FOUND and the first is used; choose the one that is your entry point:\n",
            );
            for candidate in &shown {
                let _ = writeln!(out, "  #   {candidate}");
            }
            let _ = writeln!(out, "  script: {}", scalar(first));
        }
    }
    match &d.style {
        ScriptStyle::Overrides => out.push_str(
            "  # How parameters reach the script: hydra (key=value overrides, the default) or\n\
             \x20 # argparse (--key value).\n\
             \x20 style: hydra\n",
        ),
        ScriptStyle::Argparse { output_flag } => {
            out.push_str(
                "  # How parameters reach the script: argparse (--key value; the script uses\n\
                 \x20 # argparse; a boolean goes as `--key true` / `--key false`), or hydra.\n\
                 \x20 style: argparse\n",
            );
            match output_flag {
                Some(flag) => {
                    let _ = writeln!(
                        out,
                        "  # Each task's own output directory, through the script's {flag} flag (it\n  \
                         # is also in $HSM_OUTPUT_DIR):\n  \
                         template: [\"{{python}}\", \"{{script}}\", \"{{overrides}}\", \"{flag}\", \"{{output_dir}}\"]"
                    );
                }
                None => out.push_str(
                    "  # Each task's own output directory is in $HSM_OUTPUT_DIR: write results there,\n\
                     \x20 # or pass it as a flag with a template such as the one below.\n",
                ),
            }
        }
    }
    out.push_str(
        "  # Run every task inside a conda env (`conda run -n NAME --no-capture-output`).\n\
         \x20 # conda_env: myenv\n\
         \x20 # Your own argv instead of `<python> <script> <overrides> output.dir=<dir>`:\n\
         \x20 # template: [\"python\", \"-m\", \"pkg.train\", \"{overrides}\", \"out={output_dir}\"]\n\
         \x20 # Append wandb.group=<sweep id> (or --group G) to the default command; only when\n\
         \x20 # your script logs to Weights & Biases and reads that key.\n\
         \x20 # wandb_group: true\n\
         \x20 # Hydra apps (`@hydra.main` in the script) are detected: hsm's keys are then passed as\n\
         \x20 # ++output.dir=... and each task's Hydra run dir is its results/. Force with:\n\
         \x20 # hydra: true\n\
         \n\
         defaults:\n\
         \x20 # parallel: 4                  # tasks at once on this machine; default: CPU count\n\
         \x20 # timeout: 2h                  # per task; default: no limit\n\
         \x20 retries: 0                     # automatic retries of a failed task\n\
         \x20 kill_grace: 10s                # SIGTERM, then SIGKILL after this long\n\
         \x20 strategy: round-robin          # round-robin | least-loaded | capacity\n\
         \n\
         # Defaults for Slurm/PBS sources; a source's own `hpc:` overrides them key by key.\n\
         hpc:\n",
    );
    let walltime = if d.scheduler.is_some() {
        "  walltime: \"04:00:00\"           # per task\n"
    } else {
        "  # walltime: \"04:00:00\"         # per task\n"
    };
    out.push_str(walltime);
    out.push_str(
        "  # partition: gpu               # Slurm partition (PBS: queue)\n\
         \x20 # account: my-account\n\
         \x20 # qos: normal\n\
         \x20 # cpus: 4                      # per task\n\
         \x20 # mem: 16G                     # per task\n\
         \x20 # gpus: 1                      # per task\n\
         \x20 # gres: gpu:a100:1\n\
         \x20 # modules: [cuda/12.1]         # `module load` before the task\n\
         \x20 # pre_script: [\"source ~/.bashrc\"]\n\
         \x20 # directives: [\"--constraint=a100\"]   # extra scheduler options, without #SBATCH/#PBS\n\
         \x20 # max_array_size: 1000         # default: read from the cluster where possible\n\
         \x20 # array_throttle: 50           # at most this many array elements running at once\n\
         \x20 # requeue: true                # preempted or node-failed jobs run again (default: the cluster's)\n\
         \x20 # max_jobs: 500                # at most this many jobs (array elements) queued or running\n\
         \x20 # tasks_per_job: 50            # short tasks: each job runs 50, one after another\n\
         \x20 # pack_parallel: 4             # ... 4 at a time (the job asks for 4x cpus/mem/gpus)\n\
         \n\
         # Where tasks run; choose with `sweep run --sources a,b`. Default: local.\n\
         sources:\n\
         \x20 # Processes on this machine; always available, even when not listed.\n\
         \x20 local:\n\
         \x20   type: local\n\
         \x20   # slots: 8                    # default: defaults.parallel, else CPU count\n",
    );
    match d.scheduler {
        Some(Scheduler::Slurm) => out.push_str(
            "  # `sbatch` is on this machine: submit job arrays from here with --sources slurm.\n\
             \x20 slurm:\n\
             \x20   type: slurm\n\
             \x20   # hpc: {partition: gpu}       # overrides of the hpc: defaults above\n",
        ),
        Some(Scheduler::Pbs) => out.push_str(
            "  # `qsub` is on this machine: submit job arrays from here with --sources pbs.\n\
             \x20 pbs:\n\
             \x20   type: pbs\n\
             \x20   # hpc: {queue: workq}         # overrides of the hpc: defaults above\n",
        ),
        Some(Scheduler::Sge) => out.push_str(
            "  # Grid Engine's `qsub` is on this machine: submit job arrays from here with --sources sge.\n\
             \x20 sge:\n\
             \x20   type: sge\n\
             \x20   # hpc: {queue: all.q}         # overrides of the hpc: defaults above\n",
        ),
        None => {}
    }
    out.push_str(
        "  # A host running `hsm-agent serve`. Add one over ssh (installs and starts the agent):\n\
         \x20 #   hsm-coordinator agent deploy gpu1 me@gpu1.lab\n\
         \x20 # or, with an agent started by hand,\n\
         \x20 #   hsm-coordinator agent add gpu1 gpu1.lab:7300 --fingerprint sha256:...\n\
         \x20 # gpu1:\n\
         \x20 #   type: agent\n\
         \x20 #   address: gpu1.lab:7300\n\
         \x20 #   fingerprint: sha256:...       # `hsm-agent fingerprint` on that host prints it\n\
         \x20 #   slots: 4\n\
         \x20 #   project_dir: /home/me/proj    # where the project lives on that host\n\
         \x20 #   backend: process              # process | slurm | pbs | sge | auto\n\
         \x20 #   hpc: {partition: gpu}         # when its backend is slurm or pbs\n",
    );
    out
}

/// The annotated example `sweeps/sweep.yaml` (6 tasks; every other feature shown commented).
pub fn init_sweep_text() -> String {
    "# An example sweep, written by `hsm-coordinator init`.\n\
     #   hsm-coordinator sweep run --count-only   how many tasks it makes\n\
     #   hsm-coordinator sweep run --dry-run      their commands\n\
     #   hsm-coordinator sweep run                run them\n\
     sweep:\n\
     \x20 # Every combination of the values: 3 x 2 = 6 tasks. The last key varies fastest.\n\
     \x20 grid:\n\
     \x20   seed: [1, 2, 3]\n\
     \x20   optimizer.lr: [0.001, 0.01]\n\
     \x20   # model:                        # nested keys mean dotted names: model.hidden\n\
     \x20   #   hidden: [128, 256]\n\
     \x20   # layers: [[64, 32], [128]]     # a list value is one value\n\
     \x20   # wd: {linspace: [0.0, 0.1, 5]}         # also range [start, stop, step)\n\
     \x20   # lr2: {logspace: [1.0e-5, 1.0e-1, 5]}  # and logspace [a, b, n]\n\
     \x20 # Values that go together: inside one list item all lists are zipped (same length);\n\
     \x20 # several items multiply with each other and with the grid.\n\
     \x20 # paired:\n\
     \x20 #   - model_and_data:\n\
     \x20 #       model.name: [cnn, mlp, transformer]\n\
     \x20 #       data.augmentation: [basic, none, advanced]\n\
     \x20 # n seeded random samples, multiplied with grid x paired:\n\
     \x20 # random:\n\
     \x20 #   n: 20\n\
     \x20 #   seed: 0\n\
     \x20 #   params:\n\
     \x20 #     dropout: {uniform: [0.0, 0.5]}\n\
     \x20 #     lr: {loguniform: [1.0e-5, 1.0e-1]}\n\
     \x20 #     batch: {choice: [16, 32, 64]}\n\
     \x20 # Drop the combinations that match all the listed keys:\n\
     \x20 # exclude:\n\
     \x20 #   - {seed: 3, optimizer.lr: 0.01}\n\
     # This sweep's own script (instead of command.script in .hsm/config.yaml):\n\
     # script: scripts/train.py\n\
     metadata:\n\
     \x20 description: example sweep\n\
     \x20 tags: [example]\n"
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn touch(path: &Path, executable: bool) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, "").unwrap();
        #[cfg(unix)]
        if executable {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        #[cfg(not(unix))]
        let _ = executable;
    }

    #[test]
    fn finds_scripts_most_likely_first_and_skips_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        for name in [
            "main.py",
            "run.py",
            "train.py",
            "pretrain.py",
            "scripts/train.py",
            "src/train_lm.py",
            "src/deep/train.py",
            "test_train.py",
            ".train.py",
            "utils.py",
            "train.txt",
        ] {
            touch(&dir.path().join(name), false);
        }
        std::fs::create_dir_all(dir.path().join("scripts/train_dir.py")).unwrap();
        let found = find_scripts(dir.path());
        let found: Vec<_> = found
            .iter()
            .map(|p| p.to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            found,
            [
                "train.py",
                "scripts/train.py",
                "pretrain.py",
                "src/train_lm.py",
                "main.py",
                "run.py"
            ]
        );
    }

    #[test]
    fn python_from_env_prefix_then_path_and_scheduler_slurm_first() {
        let dir = tempfile::tempdir().unwrap();
        let bin1 = dir.path().join("bin1");
        let bin2 = dir.path().join("bin2");
        touch(&bin1.join("python"), true);
        touch(&bin2.join("python3"), true);
        touch(&bin2.join("qsub"), true);
        touch(&bin1.join("sbatch"), false); // not executable: not a scheduler
        let venv = dir.path().join("venv");
        touch(&venv.join("bin/python"), true);
        let path = std::env::join_paths([&bin1, &bin2, Path::new("relative")]).unwrap();

        let mut vars: HashMap<&str, OsString> = HashMap::from([("PATH", path.clone())]);
        let found = detect_with(dir.path(), |k| vars.get(k).cloned());
        // python3 anywhere on PATH wins over python earlier on PATH.
        assert_eq!(
            found.python.as_deref(),
            Some(&*bin2.join("python3").to_string_lossy())
        );
        assert_eq!(found.scheduler, Some(Scheduler::Pbs));
        // The same qsub with Grid Engine's environment, or its qconf beside it.
        vars.insert("SGE_ROOT", "/var/lib/gridengine".into());
        let found = detect_with(dir.path(), |k| vars.get(k).cloned());
        assert_eq!(found.scheduler, Some(Scheduler::Sge));
        vars.remove("SGE_ROOT");
        touch(&bin1.join("qconf"), true);
        let found = detect_with(dir.path(), |k| vars.get(k).cloned());
        assert_eq!(found.scheduler, Some(Scheduler::Sge));

        touch(&bin2.join("sbatch"), true);
        vars.insert("VIRTUAL_ENV", venv.clone().into_os_string());
        let found = detect_with(dir.path(), |k| vars.get(k).cloned());
        assert_eq!(
            found.python.as_deref(),
            Some(&*venv.join("bin/python").to_string_lossy())
        );
        assert_eq!(found.scheduler, Some(Scheduler::Slurm));

        let found = detect_with(dir.path(), |_| None);
        assert_eq!(found.python, None);
        assert_eq!(found.scheduler, None);
        assert!(found.scripts.is_empty());
    }

    #[test]
    fn sweep_example_is_yaml_with_a_grid() {
        let doc = crate::yaml::parse(&init_sweep_text()).unwrap().unwrap();
        let grid = doc.get("sweep").and_then(|s| s.get("grid")).unwrap();
        assert_eq!(grid.as_map().unwrap().len(), 2);
    }
}

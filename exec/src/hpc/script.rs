//! Job scripts for Slurm, PBS Pro and Torque built from typed [`Resources`]: one array job per
//! chunk of tasks (or one job per task when arrays are off), each element handing over to the
//! per-chunk wrapper ([`super::wrapper`]). Pure text building; the caller writes the files.
//!
//! Layout the scripts assume (the caller creates it, once per chunk):
//!
//! ```text
//! <chunk_dir>/tasks            line i = absolute task directory of array element i (tasks_index)
//! <chunk_dir>/hsm_wrapper.sh   super::wrapper::WRAPPER_SCRIPT
//! <chunk_dir>/hsm_pack.sh      super::pack::PACK_SCRIPT (packed arrays only)
//! ```

use std::ops::Range;
use std::path::{Path, PathBuf};

use super::pack::{element_resources, Pack, PACK_FILE};
use super::resources::{pbs_walltime, slurm_walltime, Memory, MemoryError, Resources};

/// File name of the per-chunk task index inside a chunk directory.
pub const TASKS_INDEX_FILE: &str = "tasks";
/// File name of the per-chunk wrapper inside a chunk directory.
pub const WRAPPER_FILE: &str = "hsm_wrapper.sh";

/// The batch systems hsm can drive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scheduler {
    /// Slurm (`sbatch`, `--array`, `SLURM_ARRAY_TASK_ID`).
    Slurm,
    /// PBS Professional / OpenPBS (`qsub -J`, `PBS_ARRAY_INDEX`).
    PbsPro,
    /// Torque (`qsub -t`, `PBS_ARRAYID`).
    Torque,
    /// Grid Engine (`qsub -t 1-N`, `SGE_TASK_ID`, counted from 1).
    Sge,
}

impl Scheduler {
    /// The environment variable holding the array element index inside a job.
    pub fn index_variable(self) -> &'static str {
        match self {
            Scheduler::Slurm => "SLURM_ARRAY_TASK_ID",
            Scheduler::PbsPro => "PBS_ARRAY_INDEX",
            Scheduler::Torque => "PBS_ARRAYID",
            Scheduler::Sge => "SGE_TASK_ID",
        }
    }

    /// The directive prefix of a job script line.
    pub fn directive_prefix(self) -> &'static str {
        match self {
            Scheduler::Slurm => "#SBATCH",
            Scheduler::PbsPro | Scheduler::Torque => "#PBS",
            Scheduler::Sge => "#$",
        }
    }

    /// The shell expression the job script passes to the wrapper as the element index. Each falls
    /// back to the other schedulers' variables so a script still finds its index under a
    /// compatibility layer (Debian's qsub wrappers over Slurm set `PBS_ARRAY_INDEX` and
    /// `SLURM_ARRAY_TASK_ID`, never `PBS_ARRAYID`).
    fn index_expression(self) -> &'static str {
        match self {
            Scheduler::Slurm => "${SLURM_ARRAY_TASK_ID:-0}",
            Scheduler::PbsPro => "${PBS_ARRAY_INDEX:-${SLURM_ARRAY_TASK_ID:-0}}",
            Scheduler::Torque => "${PBS_ARRAYID:-${PBS_ARRAY_INDEX:-${SLURM_ARRAY_TASK_ID:-0}}}",
            // Grid Engine numbers array tasks from 1; the wrapper's lines from 0.
            Scheduler::Sge => "$((${SGE_TASK_ID:-1} - 1))",
        }
    }
}

/// One array job: `count` elements, element `i` running the task on line `i` of
/// `<chunk_dir>/tasks`; or, when the resources pack tasks (`tasks_per_job` K), lines `i*K ..`
/// through `<chunk_dir>/hsm_pack.sh`, with the element's resources ([`element_resources`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArrayJobSpec {
    /// Job name shown by the scheduler (letters, digits, `._-+`; at most 64 characters).
    pub job_name: String,
    /// Absolute chunk directory holding `tasks` and `hsm_wrapper.sh`.
    pub chunk_dir: PathBuf,
    /// Number of elements (>= 1).
    pub count: u32,
    /// At most this many elements running at once (Slurm `%K`, Torque `%K`; PBS Pro: ignored).
    pub throttle: Option<u32>,
    /// What every element asks for.
    pub resources: Resources,
    /// Where the scheduler's own stdout/stderr of each element go: `None` = `/dev/null` (the
    /// wrapper writes the task's logs itself); `Some(dir)` = files in `dir`, useful to debug
    /// failures before the wrapper starts (a bad module, a missing conda).
    pub scheduler_output: Option<PathBuf>,
}

/// One job running one task (`array: false`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SingleJobSpec {
    /// Job name shown by the scheduler.
    pub job_name: String,
    /// The wrapper script (usually `<chunk_dir>/hsm_wrapper.sh`, shared by many single jobs).
    pub wrapper: PathBuf,
    /// Absolute directory of the task to run.
    pub task_dir: PathBuf,
    /// What the job asks for.
    pub resources: Resources,
    /// As [`ArrayJobSpec::scheduler_output`].
    pub scheduler_output: Option<PathBuf>,
}

/// Why a job script cannot be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScriptError {
    /// A job array needs at least one element.
    #[error("an array job needs at least one task")]
    EmptyArray,
    /// The memory amount cannot be understood.
    #[error(transparent)]
    Memory(#[from] MemoryError),
    /// A value would break the script's line structure or the scheduler's option parsing.
    #[error("{field} {value:?} cannot go into a job script: {why}")]
    BadValue {
        /// Which resource field.
        field: &'static str,
        /// The value as given.
        value: String,
        /// What is wrong.
        why: &'static str,
    },
    /// A path the script refers to is relative (the job's cwd is not ours to rely on).
    #[error("{what} must be an absolute path, got {path}")]
    RelativePath {
        /// Which path.
        what: &'static str,
        /// The path as given.
        path: PathBuf,
    },
}

/// Splits `total` tasks into consecutive chunks of at most `max_array_size` (the cluster's
/// MaxArraySize: indices `0..max_array_size-1`). `max_array_size == 0` is read as 1.
pub fn chunk_ranges(total: usize, max_array_size: u32) -> Vec<Range<usize>> {
    let size = (max_array_size.max(1)) as usize;
    (0..total)
        .step_by(size)
        .map(|start| start..(start + size).min(total))
        .collect()
}

/// The content of `<chunk_dir>/tasks`: one absolute task directory per line. Paths with a newline
/// (which would shift every later element) or relative paths are refused.
pub fn tasks_index(task_dirs: &[PathBuf]) -> Result<Vec<u8>, ScriptError> {
    use std::os::unix::ffi::OsStrExt;
    let mut out = Vec::new();
    for dir in task_dirs {
        if !dir.is_absolute() {
            return Err(ScriptError::RelativePath {
                what: "task directory",
                path: dir.clone(),
            });
        }
        let bytes = dir.as_os_str().as_bytes();
        if bytes.contains(&b'\n') || bytes.contains(&0) {
            return Err(bad(
                "task directory",
                &dir.to_string_lossy(),
                "contains a newline or NUL",
            ));
        }
        out.extend_from_slice(bytes);
        out.push(b'\n');
    }
    Ok(out)
}

/// Builds the job script of one array chunk.
///
/// PBS Pro arrays need at least two elements, so a one-element chunk becomes a plain job whose
/// index falls back to 0. The throttle has no `qsub -J` syntax on older PBS Pro releases and is
/// left out there (with a comment in the script); cap concurrency with a queue limit instead.
pub fn array_job_script(scheduler: Scheduler, spec: &ArrayJobSpec) -> Result<String, ScriptError> {
    if spec.count == 0 {
        return Err(ScriptError::EmptyArray);
    }
    absolute("chunk directory", &spec.chunk_dir)?;
    let wrapper = spec.chunk_dir.join(WRAPPER_FILE);
    let tasks = spec.chunk_dir.join(TASKS_INDEX_FILE);
    let (exec_line, resources) = match Pack::of(&spec.resources) {
        None => (
            format!(
                "exec /bin/bash {} {} \"{}\"",
                shell_quote(&wrapper.to_string_lossy()),
                shell_quote(&tasks.to_string_lossy()),
                scheduler.index_expression()
            ),
            std::borrow::Cow::Borrowed(&spec.resources),
        ),
        // Each element runs `tasks` tasks through the pack runner, and asks for all of them.
        Some(pack) => (
            format!(
                "exec /bin/bash {} {} \"{}\" {} {}",
                shell_quote(&spec.chunk_dir.join(PACK_FILE).to_string_lossy()),
                shell_quote(&tasks.to_string_lossy()),
                scheduler.index_expression(),
                pack.tasks,
                pack.parallel
            ),
            std::borrow::Cow::Owned(element_resources(&spec.resources, pack)?),
        ),
    };
    build(
        scheduler,
        &spec.job_name,
        Some((spec.count, spec.throttle)),
        &resources,
        spec.scheduler_output.as_deref(),
        &exec_line,
    )
}

/// Builds the job script of one task submitted alone (`array: false`).
pub fn single_job_script(
    scheduler: Scheduler,
    spec: &SingleJobSpec,
) -> Result<String, ScriptError> {
    absolute("wrapper", &spec.wrapper)?;
    absolute("task directory", &spec.task_dir)?;
    let exec_line = format!(
        "exec /bin/bash {} --task-dir {}",
        shell_quote(&spec.wrapper.to_string_lossy()),
        shell_quote(&spec.task_dir.to_string_lossy())
    );
    build(
        scheduler,
        &spec.job_name,
        None,
        &spec.resources,
        spec.scheduler_output.as_deref(),
        &exec_line,
    )
}

fn build(
    scheduler: Scheduler,
    job_name: &str,
    array: Option<(u32, Option<u32>)>,
    res: &Resources,
    scheduler_output: Option<&Path>,
    exec_line: &str,
) -> Result<String, ScriptError> {
    check_job_name(job_name)?;
    let mem = res.mem.as_deref().map(Memory::parse).transpose()?;
    for (field, value) in [
        ("partition", &res.partition),
        ("queue", &res.queue),
        ("account", &res.account),
        ("qos", &res.qos),
        ("gres", &res.gres),
    ] {
        if let Some(value) = value {
            check_word(field, value)?;
        }
    }
    if let Some(dir) = scheduler_output {
        absolute("scheduler output directory", dir)?;
        check_word("scheduler output directory", &dir.to_string_lossy())?;
    }
    let throttle = array.and_then(|(_, t)| t).filter(|t| *t > 0);

    let prefix = scheduler.directive_prefix();
    let mut lines: Vec<String> = vec!["#!/bin/bash".into()];
    let mut d = |text: String| lines.push(format!("{prefix} {text}"));
    match scheduler {
        Scheduler::Slurm => {
            d(format!("--job-name={job_name}"));
            if let Some((count, _)) = array {
                let mut spec = format!("--array=0-{}", count - 1);
                if let Some(k) = throttle {
                    spec.push_str(&format!("%{k}"));
                }
                d(spec);
            }
            if let Some(seconds) = res.walltime {
                d(format!("--time={}", slurm_walltime(seconds)));
            }
            if let Some(cpus) = res.cpus {
                d(format!("--cpus-per-task={cpus}"));
            }
            if let Some(mem) = mem {
                d(format!("--mem={}", mem.slurm()));
            }
            // A typed gres names the GPU model; it says more than a bare count, so it wins.
            if let Some(gres) = &res.gres {
                d(format!("--gres={gres}"));
            } else if let Some(gpus) = res.gpus.filter(|g| *g > 0) {
                d(format!("--gpus={gpus}"));
            }
            if let Some(partition) = res.partition.as_ref().or(res.queue.as_ref()) {
                d(format!("--partition={partition}"));
            }
            if let Some(qos) = &res.qos {
                d(format!("--qos={qos}"));
            }
            if let Some(account) = &res.account {
                d(format!("--account={account}"));
            }
            match res.requeue {
                Some(true) => d("--requeue".into()),
                Some(false) => d("--no-requeue".into()),
                None => {}
            }
            match scheduler_output {
                None => {
                    d("--output=/dev/null".into());
                    d("--error=/dev/null".into());
                }
                Some(dir) => {
                    let pattern = if array.is_some() { "%A_%a" } else { "%j" };
                    d(format!("--output={}/slurm-{pattern}.out", dir.display()));
                    d(format!("--error={}/slurm-{pattern}.err", dir.display()));
                }
            }
            if let Some(raw) = &res.resources {
                // A v1 resource string for Slurm is a list of sbatch options.
                for word in raw.split_whitespace() {
                    check_word("resources", word)?;
                    d(word.to_string());
                }
            }
        }
        Scheduler::PbsPro | Scheduler::Torque => {
            d(format!("-N {job_name}"));
            let torque = scheduler == Scheduler::Torque;
            match array {
                Some((1, _)) if !torque => {
                    lines.push(
                        "# hsm: one task: PBS Pro arrays need two or more elements, so this is a \
                         plain job and the wrapper's index defaults to 0"
                            .into(),
                    );
                }
                Some((count, _)) if !torque => {
                    lines.push(format!("{prefix} -J 0-{}", count - 1));
                    if let Some(k) = throttle {
                        lines.push(format!(
                            "# hsm: throttle {k} not applied: qsub -J has no %K on older PBS Pro \
                             releases; limit running jobs with a queue limit instead"
                        ));
                    }
                }
                Some((count, _)) => {
                    let mut spec = if count == 1 {
                        "-t 0".to_string()
                    } else {
                        format!("-t 0-{}", count - 1)
                    };
                    if let Some(k) = throttle {
                        spec.push_str(&format!("%{k}"));
                    }
                    lines.push(format!("{prefix} {spec}"));
                }
                None => {}
            }
            let mut d = |text: String| lines.push(format!("{prefix} {text}"));
            if let Some(seconds) = res.walltime {
                d(format!("-l walltime={}", pbs_walltime(seconds)));
            }
            if torque {
                if res.cpus.is_some() || res.gpus.is_some() {
                    let mut nodes = format!("-l nodes=1:ppn={}", res.cpus.unwrap_or(1));
                    if let Some(gpus) = res.gpus.filter(|g| *g > 0) {
                        nodes.push_str(&format!(":gpus={gpus}"));
                    }
                    d(nodes);
                }
                if let Some(mem) = mem {
                    d(format!("-l mem={}", mem.pbs()));
                }
            } else if res.resources.is_none()
                && (res.cpus.is_some() || mem.is_some() || res.gpus.is_some())
            {
                // With a v1 resource string the user's own select statement is the chunk
                // request; two select statements would be refused by qsub.
                let mut select = format!("-l select=1:ncpus={}", res.cpus.unwrap_or(1));
                if let Some(mem) = mem {
                    select.push_str(&format!(":mem={}", mem.pbs()));
                }
                if let Some(gpus) = res.gpus.filter(|g| *g > 0) {
                    select.push_str(&format!(":ngpus={gpus}"));
                }
                d(select);
            }
            for text in qsub_common(res, scheduler_output)? {
                d(text);
            }
        }
        Scheduler::Sge => {
            d(format!("-N {job_name}"));
            if let Some((count, _)) = array {
                d(format!("-t 1-{count}"));
                if let Some(k) = throttle {
                    d(format!("-tc {k}"));
                }
            }
            // The script is bash (the queue's shell may be sh), and the task sees the
            // environment the agent submits with, as under Slurm (PATH restored below: a
            // login shell's profile resets it).
            d("-S /bin/bash".into());
            d("-V".into());
            if let Some(seconds) = res.walltime {
                d(format!("-l h_rt={}", pbs_walltime(seconds)));
            }
            // CPUs are slots of the `smp` parallel environment, the usual name for one host's
            // cores; memory (`h_vmem`) is per slot, so the task's is shared out among them.
            let slots = res.cpus.filter(|c| *c > 1);
            if let Some(cpus) = slots {
                d(format!("-pe smp {cpus}"));
            }
            if let Some(mem) = mem {
                let per_slot = Memory {
                    kib: mem.kib.div_ceil(u64::from(slots.unwrap_or(1))),
                };
                d(format!("-l h_vmem={}", per_slot.sge()));
            }
            if let Some(gpus) = res.gpus.filter(|g| *g > 0) {
                d(format!("-l gpu={gpus}"));
            }
            for text in qsub_common(res, scheduler_output)? {
                d(text);
            }
        }
    }
    for directive in &res.directives {
        check_line("directive", directive)?;
        let directive = directive.trim();
        if directive.starts_with('#') {
            lines.push(directive.to_string());
        } else {
            lines.push(format!("{prefix} {directive}"));
        }
    }

    lines.push(String::new());
    if scheduler == Scheduler::Sge {
        // Grid Engine usually starts bash as a login shell, whose profile resets PATH: the
        // task's interpreter is found on the PATH the agent submitted with, as under Slurm.
        lines.push("if [ -n \"${SGE_O_PATH:-}\" ]; then export PATH=\"$SGE_O_PATH\"; fi".into());
    }
    // Set-up runs in the job's shell so `module load` and `conda activate` change the
    // environment the wrapper (and so the task) inherits. A failure is passed on to the wrapper,
    // which records it in the task's stderr.log and exit record instead of losing it.
    lines.push("hsm_setup_failed=".into());
    for module in &res.modules {
        check_line("module", module)?;
        let quoted = shell_quote(module.trim());
        lines.push(format!(
            "module load {quoted} || hsm_setup_failed=\"${{hsm_setup_failed}}module load \"{quoted}\"; \""
        ));
    }
    if let Some(env) = &res.conda_env {
        check_line("conda_env", env)?;
        lines.push(conda_activation(env.trim()));
    }
    for line in &res.pre_script {
        check_line("pre_script", line)?;
        lines.push(line.clone());
    }
    lines.push("export HSM_SETUP_FAILED=\"$hsm_setup_failed\"".into());
    lines.push(exec_line.to_string());
    let mut text = lines.join("\n");
    text.push('\n');
    Ok(text)
}

/// The `qsub` options PBS and Grid Engine spell alike: queue, account, rerun, the scheduler's
/// own output (a directory ending in `/` makes either name the files after the job id) and a v1
/// resource string (`-l`).
fn qsub_common(
    res: &Resources,
    scheduler_output: Option<&Path>,
) -> Result<Vec<String>, ScriptError> {
    let mut out = Vec::new();
    if let Some(queue) = res.queue.as_ref().or(res.partition.as_ref()) {
        out.push(format!("-q {queue}"));
    }
    if let Some(account) = &res.account {
        out.push(format!("-A {account}"));
    }
    match res.requeue {
        Some(true) => out.push("-r y".into()),
        Some(false) => out.push("-r n".into()),
        None => {}
    }
    match scheduler_output {
        None => {
            out.push("-o /dev/null".into());
            out.push("-e /dev/null".into());
        }
        Some(dir) => {
            out.push(format!("-o {}/", dir.display()));
            out.push(format!("-e {}/", dir.display()));
        }
    }
    if let Some(raw) = &res.resources {
        check_line("resources", raw)?;
        out.push(format!("-l {}", raw.trim()));
    }
    Ok(out)
}

/// Conda activation that works in a non-interactive batch shell, where `conda` is usually not yet
/// a shell function: source conda's profile script from the usual places (the `conda` on PATH
/// first), then activate.
fn conda_activation(env: &str) -> String {
    let quoted = shell_quote(env);
    format!(
        r#"if [ "$(type -t conda)" != function ]; then
  for hsm_conda_sh in \
      "${{CONDA_EXE:+${{CONDA_EXE%/bin/conda}}/etc/profile.d/conda.sh}}" \
      "$(command -v conda 2>/dev/null | sed 's#/\(bin\|condabin\)/conda$##')/etc/profile.d/conda.sh" \
      "$HOME/miniforge3/etc/profile.d/conda.sh" "$HOME/mambaforge/etc/profile.d/conda.sh" \
      "$HOME/miniconda3/etc/profile.d/conda.sh" "$HOME/anaconda3/etc/profile.d/conda.sh" \
      /opt/conda/etc/profile.d/conda.sh; do
    if [ -f "$hsm_conda_sh" ]; then . "$hsm_conda_sh"; break; fi
  done
fi
conda activate {quoted} || hsm_setup_failed="${{hsm_setup_failed}}conda activate "{quoted}"; ""#
    )
}

/// Quotes a string as one shell word (single quotes; embedded `'` as `'\''`).
pub fn shell_quote(text: &str) -> String {
    if !text.is_empty()
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/._-+=:,@%".contains(&b))
    {
        return text.to_string();
    }
    format!("'{}'", text.replace('\'', r"'\''"))
}

fn bad(field: &'static str, value: &str, why: &'static str) -> ScriptError {
    ScriptError::BadValue {
        field,
        value: value.to_string(),
        why,
    }
}

fn absolute(what: &'static str, path: &Path) -> Result<(), ScriptError> {
    if path.is_absolute() {
        Ok(())
    } else {
        Err(ScriptError::RelativePath {
            what,
            path: path.to_path_buf(),
        })
    }
}

fn check_job_name(name: &str) -> Result<(), ScriptError> {
    if name.is_empty() || name.len() > 64 {
        return Err(bad("job name", name, "must be 1 to 64 characters"));
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"._-+".contains(&b))
    {
        return Err(bad(
            "job name",
            name,
            "only letters, digits and ._-+ are allowed",
        ));
    }
    // PBS refuses names that do not start with a letter on some versions.
    if !name.as_bytes()[0].is_ascii_alphabetic() {
        return Err(bad("job name", name, "must start with a letter"));
    }
    Ok(())
}

/// A value inside a directive: one word, no line breaks.
fn check_word(field: &'static str, value: &str) -> Result<(), ScriptError> {
    if value.is_empty() || value.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(bad(
            field,
            value,
            "must be one word without spaces or control characters",
        ));
    }
    Ok(())
}

/// A whole line of the script: no line breaks.
fn check_line(field: &'static str, value: &str) -> Result<(), ScriptError> {
    if value.trim().is_empty() {
        return Err(bad(field, value, "is empty"));
    }
    if value.contains(['\n', '\r', '\0']) {
        return Err(bad(field, value, "must be a single line"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(count: u32, resources: Resources) -> ArrayJobSpec {
        ArrayJobSpec {
            job_name: "hsm-sweep1-c0".into(),
            chunk_dir: PathBuf::from("/scratch/sweep 1/chunks/0"),
            count,
            throttle: None,
            resources,
            scheduler_output: None,
        }
    }

    fn directives(script: &str, prefix: &str) -> Vec<String> {
        script
            .lines()
            .filter(|l| l.starts_with(prefix))
            .map(|l| l[prefix.len()..].trim().to_string())
            .collect()
    }

    fn full() -> Resources {
        Resources {
            walltime: Some(2 * 86_400 + 3600 + 5),
            partition: Some("gpu".into()),
            account: Some("proj42".into()),
            qos: Some("high".into()),
            cpus: Some(8),
            mem: Some("1.5G".into()),
            gpus: Some(2),
            ..Resources::default()
        }
    }

    #[test]
    fn a_packed_array_runs_the_pack_runner_and_asks_for_all_its_tasks() {
        let mut resources = full();
        resources.walltime = Some(600);
        resources.tasks_per_job = Some(50);
        resources.pack_parallel = Some(2);
        let script = array_job_script(Scheduler::Slurm, &spec(40, resources)).unwrap();
        let d = directives(&script, "#SBATCH");
        assert!(d.contains(&"--array=0-39".to_string()), "{d:?}");
        // 25 rounds of 600 s (and 15 s each to stop a task) plus the slack; two tasks' CPUs,
        // memory and GPUs at once.
        assert!(d.contains(&"--time=04:17:15".to_string()), "{d:?}");
        assert!(d.contains(&"--cpus-per-task=16".to_string()), "{d:?}");
        assert!(d.contains(&"--mem=3G".to_string()), "{d:?}");
        assert!(d.contains(&"--gpus=4".to_string()), "{d:?}");
        let exec = script.lines().last().unwrap();
        assert_eq!(
            exec,
            "exec /bin/bash '/scratch/sweep 1/chunks/0/hsm_pack.sh' '/scratch/sweep 1/chunks/0/tasks' \"${SLURM_ARRAY_TASK_ID:-0}\" 50 2"
        );
    }

    #[test]
    fn grid_engine_array_with_everything() {
        let mut res = full();
        res.queue = Some("all.q".into());
        res.requeue = Some(false);
        let mut s = spec(6, res);
        s.throttle = Some(2);
        let script = array_job_script(Scheduler::Sge, &s).unwrap();
        assert_eq!(
            directives(&script, "#$"),
            vec![
                "-N hsm-sweep1-c0",
                "-t 1-6",
                "-tc 2",
                "-S /bin/bash",
                "-V",
                "-l h_rt=49:00:05",
                "-pe smp 8",
                // 1.5G over 8 slots: per slot, rounded up.
                "-l h_vmem=192M",
                "-l gpu=2",
                "-q all.q",
                "-A proj42",
                "-r n",
                "-o /dev/null",
                "-e /dev/null",
            ]
        );
        // Task ids count from 1, the wrapper's lines from 0; PATH as the agent submitted it.
        assert!(script.ends_with(
            "exec /bin/bash '/scratch/sweep 1/chunks/0/hsm_wrapper.sh' '/scratch/sweep 1/chunks/0/tasks' \"$((${SGE_TASK_ID:-1} - 1))\"\n"
        ));
        assert!(script.contains("export PATH=\"$SGE_O_PATH\""));
    }

    #[test]
    fn slurm_array_with_everything() {
        let mut s = spec(1000, full());
        s.throttle = Some(50);
        let script = array_job_script(Scheduler::Slurm, &s).unwrap();
        assert!(script.starts_with("#!/bin/bash\n"));
        assert_eq!(
            directives(&script, "#SBATCH"),
            vec![
                "--job-name=hsm-sweep1-c0",
                "--array=0-999%50",
                "--time=2-01:00:05",
                "--cpus-per-task=8",
                "--mem=1536M",
                "--gpus=2",
                "--partition=gpu",
                "--qos=high",
                "--account=proj42",
                "--output=/dev/null",
                "--error=/dev/null",
            ]
        );
        assert!(script.ends_with(
            "exec /bin/bash '/scratch/sweep 1/chunks/0/hsm_wrapper.sh' '/scratch/sweep 1/chunks/0/tasks' \"${SLURM_ARRAY_TASK_ID:-0}\"\n"
        ));
    }

    #[test]
    fn requeue_is_asked_for_or_refused_only_when_the_config_says() {
        for (requeue, slurm, pbs) in [
            (Some(true), Some("--requeue"), Some("-r y")),
            (Some(false), Some("--no-requeue"), Some("-r n")),
            (None, None, None),
        ] {
            let res = Resources {
                requeue,
                ..Resources::default()
            };
            let d = directives(
                &array_job_script(Scheduler::Slurm, &spec(2, res.clone())).unwrap(),
                "#SBATCH",
            );
            let found: Vec<&String> = d.iter().filter(|l| l.contains("requeue")).collect();
            assert_eq!(found.first().map(|s| s.as_str()), slurm, "{d:?}");
            assert!(found.len() <= 1);
            let d = directives(
                &array_job_script(Scheduler::PbsPro, &spec(2, res)).unwrap(),
                "#PBS",
            );
            let found: Vec<&String> = d.iter().filter(|l| l.starts_with("-r ")).collect();
            assert_eq!(found.first().map(|s| s.as_str()), pbs, "{d:?}");
        }
    }

    #[test]
    fn slurm_gres_wins_over_gpus_and_queue_is_a_partition() {
        let res = Resources {
            gpus: Some(1),
            gres: Some("gpu:a100:1".into()),
            queue: Some("short".into()),
            mem: Some("16G".into()),
            walltime: Some(3600),
            ..Resources::default()
        };
        let d = directives(
            &array_job_script(Scheduler::Slurm, &spec(1, res)).unwrap(),
            "#SBATCH",
        );
        assert!(d.contains(&"--gres=gpu:a100:1".to_string()));
        assert!(!d.iter().any(|l| l.starts_with("--gpus")));
        assert!(d.contains(&"--partition=short".to_string()));
        assert!(d.contains(&"--mem=16G".to_string()));
        assert!(d.contains(&"--time=01:00:00".to_string()));
        assert!(d.contains(&"--array=0-0".to_string()));
    }

    #[test]
    fn directives_in_both_forms_come_after_ours() {
        let res = Resources {
            directives: vec![
                "--constraint=a100".into(),
                "#SBATCH --exclusive".into(),
                "  --mail-type=NONE  ".into(),
            ],
            resources: Some("--nodes=1 --ntasks=1".into()),
            ..Resources::default()
        };
        let script = array_job_script(Scheduler::Slurm, &spec(3, res)).unwrap();
        let d = directives(&script, "#SBATCH");
        let n = d.len();
        assert_eq!(
            &d[n - 5..],
            &[
                "--nodes=1",
                "--ntasks=1",
                "--constraint=a100",
                "--exclusive",
                "--mail-type=NONE"
            ]
        );
        let pbs = Resources {
            directives: vec!["-m n".into(), "#PBS -W group_list=x".into()],
            ..Resources::default()
        };
        let script = array_job_script(Scheduler::PbsPro, &spec(3, pbs)).unwrap();
        let d = directives(&script, "#PBS");
        assert_eq!(&d[d.len() - 2..], &["-m n", "-W group_list=x"]);
    }

    #[test]
    fn setup_order_modules_conda_pre_script_then_wrapper() {
        let res = Resources {
            modules: vec!["cuda/12.1".into(), "gcc 12".into()],
            conda_env: Some("ml env".into()),
            pre_script: vec!["export OMP_NUM_THREADS=1".into(), "ulimit -c 0".into()],
            ..Resources::default()
        };
        let script = array_job_script(Scheduler::Slurm, &spec(2, res)).unwrap();
        let pos = |needle: &str| script.find(needle).unwrap_or_else(|| panic!("{needle}"));
        assert!(pos("module load cuda/12.1") < pos("module load 'gcc 12'"));
        assert!(pos("module load 'gcc 12'") < pos("conda.sh"));
        assert!(pos("conda.sh") < pos("conda activate 'ml env'"));
        assert!(pos("conda activate 'ml env'") < pos("export OMP_NUM_THREADS=1"));
        assert!(pos("export OMP_NUM_THREADS=1") < pos("ulimit -c 0"));
        assert!(pos("ulimit -c 0") < pos("export HSM_SETUP_FAILED"));
        assert!(pos("export HSM_SETUP_FAILED") < pos("exec /bin/bash"));
        // Every directive comes before the first command (sbatch stops reading at a command).
        let last_directive = script.rfind("#SBATCH").unwrap();
        assert!(last_directive < pos("hsm_setup_failed="));
    }

    #[test]
    fn job_script_is_valid_bash() {
        let res = Resources {
            modules: vec!["a'b".into()],
            conda_env: Some("e\"v$x".into()),
            pre_script: vec!["true".into()],
            ..full()
        };
        for scheduler in [Scheduler::Slurm, Scheduler::PbsPro, Scheduler::Torque] {
            let script = array_job_script(scheduler, &spec(4, res.clone())).unwrap();
            let status = std::process::Command::new("bash")
                .arg("-n")
                .arg("-c")
                .arg(&script)
                .status()
                .unwrap();
            assert!(status.success(), "{scheduler:?}:\n{script}");
        }
    }

    #[test]
    fn pbs_pro_array_select_and_throttle_comment() {
        let mut s = spec(10, full());
        s.throttle = Some(3);
        let script = array_job_script(Scheduler::PbsPro, &s).unwrap();
        assert_eq!(
            directives(&script, "#PBS"),
            vec![
                "-N hsm-sweep1-c0",
                "-J 0-9",
                "-l walltime=49:00:05",
                "-l select=1:ncpus=8:mem=1536mb:ngpus=2",
                "-q gpu",
                "-A proj42",
                "-o /dev/null",
                "-e /dev/null",
            ]
        );
        assert!(script.contains("# hsm: throttle 3 not applied"));
        assert!(script.contains("\"${PBS_ARRAY_INDEX:-${SLURM_ARRAY_TASK_ID:-0}}\""));
    }

    #[test]
    fn pbs_pro_single_element_is_a_plain_job() {
        let script = array_job_script(Scheduler::PbsPro, &spec(1, Resources::default())).unwrap();
        assert!(!script.contains("-J"));
        assert!(script.contains("# hsm: one task"));
        assert_eq!(
            directives(&script, "#PBS"),
            vec!["-N hsm-sweep1-c0", "-o /dev/null", "-e /dev/null"]
        );
    }

    #[test]
    fn pbs_pro_v1_resource_string_replaces_select() {
        let res = Resources {
            resources: Some("select=1:ncpus=4:mem=16gb".into()),
            cpus: Some(8),
            queue: Some("workq".into()),
            ..Resources::default()
        };
        let d = directives(
            &array_job_script(Scheduler::PbsPro, &spec(5, res)).unwrap(),
            "#PBS",
        );
        assert!(d.contains(&"-l select=1:ncpus=4:mem=16gb".to_string()));
        assert_eq!(d.iter().filter(|l| l.contains("select=")).count(), 1);
        assert!(d.contains(&"-q workq".to_string()));
    }

    #[test]
    fn torque_array_nodes_mem_throttle() {
        let mut s = spec(20, full());
        s.throttle = Some(4);
        let script = array_job_script(Scheduler::Torque, &s).unwrap();
        assert_eq!(
            directives(&script, "#PBS"),
            vec![
                "-N hsm-sweep1-c0",
                "-t 0-19%4",
                "-l walltime=49:00:05",
                "-l nodes=1:ppn=8:gpus=2",
                "-l mem=1536mb",
                "-q gpu",
                "-A proj42",
                "-o /dev/null",
                "-e /dev/null",
            ]
        );
        assert!(script.contains("${PBS_ARRAYID:-${PBS_ARRAY_INDEX:-${SLURM_ARRAY_TASK_ID:-0}}}"));
        let one = array_job_script(Scheduler::Torque, &spec(1, Resources::default())).unwrap();
        assert!(one.contains("#PBS -t 0\n"));
    }

    #[test]
    fn single_job_per_task() {
        let spec = SingleJobSpec {
            job_name: "hsm-t7".into(),
            wrapper: "/s/chunks/0/hsm_wrapper.sh".into(),
            task_dir: "/s/tasks/task_007".into(),
            resources: Resources {
                array: false,
                walltime: Some(60),
                ..Resources::default()
            },
            scheduler_output: Some("/s/logs/scheduler".into()),
        };
        let slurm = single_job_script(Scheduler::Slurm, &spec).unwrap();
        assert!(!slurm.contains("--array"));
        assert!(slurm.contains("#SBATCH --output=/s/logs/scheduler/slurm-%j.out\n"));
        assert!(slurm
            .ends_with("exec /bin/bash /s/chunks/0/hsm_wrapper.sh --task-dir /s/tasks/task_007\n"));
        let pbs = single_job_script(Scheduler::Torque, &spec).unwrap();
        assert!(!pbs.contains("-t "));
        assert!(pbs.contains("#PBS -o /s/logs/scheduler/\n"));
    }

    #[test]
    fn bad_values_are_refused() {
        let cases: Vec<(Resources, &str)> = vec![
            (
                Resources {
                    partition: Some("a b".into()),
                    ..Resources::default()
                },
                "partition",
            ),
            (
                Resources {
                    directives: vec!["--x\n#SBATCH --y".into()],
                    ..Resources::default()
                },
                "directive",
            ),
            (
                Resources {
                    pre_script: vec!["a\nb".into()],
                    ..Resources::default()
                },
                "pre_script",
            ),
            (
                Resources {
                    mem: Some("lots".into()),
                    ..Resources::default()
                },
                "invalid memory",
            ),
        ];
        for (res, needle) in cases {
            let err = array_job_script(Scheduler::Slurm, &spec(2, res)).unwrap_err();
            assert!(err.to_string().contains(needle), "{err}");
        }
        assert_eq!(
            array_job_script(Scheduler::Slurm, &spec(0, Resources::default())).unwrap_err(),
            ScriptError::EmptyArray
        );
        let mut s = spec(2, Resources::default());
        s.job_name = "bad name".into();
        assert!(array_job_script(Scheduler::Slurm, &s).is_err());
        s.job_name = "ok".into();
        s.chunk_dir = "relative".into();
        assert!(matches!(
            array_job_script(Scheduler::Slurm, &s),
            Err(ScriptError::RelativePath { .. })
        ));
    }

    #[test]
    fn chunks_and_tasks_index() {
        assert_eq!(chunk_ranges(25, 10), vec![0..10, 10..20, 20..25]);
        assert_eq!(chunk_ranges(0, 10), Vec::<Range<usize>>::new());
        assert_eq!(chunk_ranges(3, 0), vec![0..1, 1..2, 2..3]);
        assert_eq!(chunk_ranges(2000, 1001).len(), 2);
        let dirs = vec![PathBuf::from("/a/task 1"), PathBuf::from("/a/task_2")];
        assert_eq!(tasks_index(&dirs).unwrap(), b"/a/task 1\n/a/task_2\n");
        assert!(tasks_index(&[PathBuf::from("rel")]).is_err());
        assert!(tasks_index(&[PathBuf::from("/a\nb")]).is_err());
    }

    #[test]
    fn shell_quoting() {
        assert_eq!(shell_quote("abc/d-1.2"), "abc/d-1.2");
        assert_eq!(shell_quote(""), "''");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
        assert_eq!(shell_quote("$x"), "'$x'");
    }
}

//! `init`, `config show` and `config validate`.

use super::{user_error, Global, InitArgs, EXIT_OK};
use crate::config::{self, ConfigError, ProjectConfig, Scheduler};
use crate::core::sweep::{load_sweep_text, SweepFile};
use anyhow::Context as _;
use std::path::{Path, PathBuf};

/// Loads the project config; problems in it are the user's to fix (exit 2).
pub fn load_config(global: &Global) -> anyhow::Result<ProjectConfig> {
    config::load_project(&global.project_dir, global.config.as_deref())
        .map_err(|e| user_error(config_error(global, e)))
}

/// A config that cannot be used, as the lines the user sees.
fn config_error(global: &Global, e: ConfigError) -> String {
    match e {
        ConfigError::Invalid { file, problems } => {
            let shown = display_path(global, &file);
            let lines: Vec<String> = problems.iter().map(|p| p.render(&shown)).collect();
            lines.join("\n")
        }
        ConfigError::Io { .. } => format!("{:#}", anyhow::Error::new(e)),
    }
}

/// Where a sweep file argument points: as given when it exists relative to the current
/// directory, else relative to the project directory; default `sweeps/sweep.yaml`.
pub fn resolve_sweep_path(global: &Global, given: Option<&Path>) -> PathBuf {
    match given {
        Some(path) if path.is_absolute() || path.exists() => path.to_path_buf(),
        Some(path) => global.project_dir.join(path),
        None => global.project_dir.join("sweeps").join("sweep.yaml"),
    }
}

/// A path as the user should see it: one that works from the directory they are in (relative
/// to it when that is shorter, e.g. `sweeps/outputs/…` in the project root, `../sweeps/…` from a
/// subdirectory, absolute otherwise).
pub fn display_path(global: &Global, path: &Path) -> String {
    let absolute = if path.is_absolute() {
        path.to_path_buf()
    } else {
        global.project_dir.join(path)
    };
    match std::env::current_dir()
        .ok()
        .and_then(|cwd| cwd.canonicalize().ok())
    {
        Some(cwd) => relative_path(&cwd, &absolute),
        None => absolute.display().to_string(),
    }
}

/// `path` written relative to `from` (both absolute): below it as is, otherwise with at most
/// two `..` (beyond that the absolute path reads better).
pub fn relative_path(from: &Path, path: &Path) -> String {
    if let Ok(below) = path.strip_prefix(from) {
        let text = below.display().to_string();
        return if text.is_empty() { ".".into() } else { text };
    }
    let mut up = 0;
    for ancestor in from.ancestors().skip(1) {
        up += 1;
        if up > 2 || ancestor.parent().is_none() {
            break;
        }
        if let Ok(below) = path.strip_prefix(ancestor) {
            let mut text = "../".repeat(up);
            text.push_str(&below.display().to_string());
            return text.trim_end_matches('/').to_string();
        }
    }
    path.display().to_string()
}

/// Reads and validates a sweep file; every problem is reported (exit 2).
pub fn load_sweep(global: &Global, path: &Path) -> anyhow::Result<(SweepFile, String)> {
    let shown = display_path(global, path);
    let text = std::fs::read_to_string(path).map_err(|e| {
        user_error(format!(
            "sweep file {shown}: {e} — create one with `hsm-coordinator init` or pass SWEEP_FILE"
        ))
    })?;
    match load_sweep_text(&text) {
        Ok(file) => Ok((file, text)),
        Err(problems) => {
            let lines: Vec<String> = problems.iter().map(|p| p.render(&shown)).collect();
            Err(user_error(format!(
                "{} problem{} in {shown}:\n{}",
                problems.len(),
                if problems.len() == 1 { "" } else { "s" },
                lines.join("\n")
            )))
        }
    }
}

pub fn init(global: &Global, args: &InitArgs) -> anyhow::Result<i32> {
    // Inside an existing project (its subdirectory `conf/`, say), a new project here would
    // capture every later command run from here.
    let enclosing = global
        .project_dir
        .parent()
        .and_then(super::find_project_root)
        .filter(|_| {
            super::find_project_root(&global.project_dir).as_ref() != Some(&global.project_dir)
        });
    if let (Some(root), false, None) = (&enclosing, args.force, &global.config) {
        return Err(user_error(format!(
            "{} is inside the project {}: run `hsm-coordinator init` there (or `-C {}`), or pass \
             --force to start a separate project here",
            global.project_dir.display(),
            root.display(),
            root.display()
        )));
    }
    let sweep_path = global.project_dir.join("sweeps").join("sweep.yaml");
    // A config in any place it is read from counts (a v1 `sweeps/hsm_config.yaml` too): a new
    // `.hsm/config.yaml` would silently take its place.
    let existing_config =
        config::locate_config(&global.project_dir, global.config.as_deref()).filter(|p| p.exists());
    let config_path = existing_config
        .clone()
        .filter(|_| args.force)
        .unwrap_or_else(|| global.project_dir.join(".hsm").join("config.yaml"));
    let write_config = args.force || existing_config.is_none();
    let write_sweep = args.force || !sweep_path.exists();
    if !write_config && !write_sweep {
        let shown = existing_config.as_deref().unwrap_or(&config_path);
        return Err(user_error(format!(
            "{} and {} already exist; nothing was written — pass --force to replace them (the old files are kept as .bak)",
            display_path(global, shown),
            display_path(global, &sweep_path)
        )));
    }
    let detection = config::detect(&global.project_dir);
    match &detection.python {
        Some(python) => eprintln!("python: {python}"),
        None => eprintln!("python: not found on PATH (set command.python in the config)"),
    }
    match detection.scripts.as_slice() {
        [] => eprintln!("training script: none found (set command.script in the config)"),
        [one] => eprintln!("training script: {}", one.display()),
        many => {
            eprintln!(
                "training script: {} candidates found; using {} — edit command.script to choose:",
                many.len(),
                many[0].display()
            );
            for candidate in many {
                eprintln!("  {}", candidate.display());
            }
        }
    }
    match detection.scheduler {
        Some(Scheduler::Slurm) => eprintln!("scheduler: Slurm (sbatch found)"),
        Some(Scheduler::Pbs) => eprintln!("scheduler: PBS (qsub found)"),
        Some(Scheduler::Sge) => eprintln!("scheduler: Grid Engine (qsub, with SGE_ROOT or qconf)"),
        None => eprintln!("scheduler: none found (local runs only)"),
    }
    for (write, path, text) in [
        (
            write_config,
            &config_path,
            config::init_config_text(&detection),
        ),
        (write_sweep, &sweep_path, config::init_sweep_text()),
    ] {
        if !write {
            let kept = if std::ptr::eq(path, &config_path) {
                existing_config.as_deref().unwrap_or(path)
            } else {
                path
            };
            println!("kept {} (exists)", display_path(global, kept));
            continue;
        }
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        if path.exists() {
            let backup = backup_path(path);
            std::fs::copy(path, &backup)
                .with_context(|| format!("keeping {} as {}", path.display(), backup.display()))?;
            println!(
                "kept the old {} as {}",
                display_path(global, path),
                display_path(global, &backup)
            );
        }
        std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
        println!("wrote {}", display_path(global, path));
    }
    Ok(EXIT_OK)
}

/// `<file>.bak`, or `<file>.bak.2`, `.bak.3` … when earlier backups exist (never overwritten).
fn backup_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".bak");
    let first = PathBuf::from(&name);
    if !first.exists() {
        return first;
    }
    (2..)
        .map(|n| {
            let mut numbered = name.clone();
            numbered.push(format!(".{n}"));
            PathBuf::from(numbered)
        })
        .find(|p| !p.exists())
        .unwrap_or(first)
}

pub fn show(global: &Global) -> anyhow::Result<i32> {
    let cfg = load_config(global)?;
    match &cfg.file {
        Some(file) => println!("# config: {}", display_path(global, file)),
        None => println!("# config: none found; defaults"),
    }
    print!("{}", config::to_display_yaml(&cfg));
    Ok(EXIT_OK)
}

/// Reports every problem it can find in one go: the config's, the sweep file's, and what `sweep
/// run` checks before it starts (script, interpreter, conda env, agents' `project_dir`), each at
/// the key that set it. A config with problems is still checked for what its valid keys name.
pub fn validate(global: &Global, sweep_file: Option<&Path>, remote: bool) -> anyhow::Result<i32> {
    let mut errors = Vec::new();
    let mut config_problems = Vec::new();
    let mut config_shown = None;
    let cfg = match config::load_project_lenient(&global.project_dir, global.config.as_deref()) {
        Ok((cfg, problems)) => {
            config_shown = cfg.file.as_deref().map(|f| display_path(global, f));
            config_problems = problems;
            Some(cfg)
        }
        Err(e) => {
            errors.push(config_error(global, e));
            None
        }
    };
    let sweep_path = resolve_sweep_path(global, sweep_file);
    let sweep_shown = display_path(global, &sweep_path);
    let mut sweep_summary = None;
    let mut sweep = None;
    let mut sweep_problems = Vec::new();
    let mut script = None;
    if sweep_file.is_some() || sweep_path.exists() {
        match std::fs::read_to_string(&sweep_path) {
            Ok(text) => {
                match load_sweep_text(&text) {
                    Ok(file) => {
                        sweep_summary = Some(file.spec.count());
                        sweep = Some(file);
                    }
                    Err(problems) => sweep_problems = problems,
                }
                script = sweep_script(&text);
            }
            // `load_sweep` says why the file cannot be read, and what to do.
            Err(_) => errors.extend(
                load_sweep(global, &sweep_path)
                    .err()
                    .map(|e| format!("{e:#}")),
            ),
        }
    }
    if let Some(file) = &sweep {
        // The sweep's own reading wins (it knows every spelling of the key).
        if file.script.as_deref() != script.as_ref().map(|(s, _)| s.as_str()) {
            script = file.script.clone().map(|s| (s, None));
        }
    }
    if let Some(cfg) = &cfg {
        let script_override = script.as_ref().map(|(s, _)| s.as_str());
        let sample = sweep
            .as_ref()
            .and_then(|s| s.spec.iter().next())
            .unwrap_or_default();
        let command = super::launch::launch_command(cfg, script_override, false);
        let found = super::launch::command_problems(
            cfg,
            &command,
            script_override,
            script.as_ref().and_then(|&(_, pos)| pos),
            &sample,
        );
        let mut reported = KeyPaths::default();
        for p in &config_problems {
            reported.insert(&p.path);
        }
        for problem in found {
            if problem.in_sweep_file {
                sweep_problems.push(problem.problem);
            } else if !reported.overlaps(&problem.problem.path) {
                // One problem per key: a `command.python` the config already rejects is not
                // also reported missing.
                reported.insert(&problem.problem.path);
                config_problems.push(problem.problem);
            }
        }
    }
    config_problems.sort_by_key(|p| match p.pos {
        Some(pos) => (0, pos.line, pos.col),
        None => (1, 0, 0),
    });
    errors.extend(
        config_problems
            .iter()
            .map(|p| p.render_in(config_shown.as_deref())),
    );
    if !sweep_problems.is_empty() {
        sweep_problems.sort_by_key(|p| p.pos.map(|pos| (pos.line, pos.col)));
        errors.push(format!(
            "{} problem{} in {sweep_shown}:",
            sweep_problems.len(),
            if sweep_problems.len() == 1 { "" } else { "s" },
        ));
        errors.extend(sweep_problems.iter().map(|p| p.render(&sweep_shown)));
    }
    if !errors.is_empty() {
        return Err(user_error(errors.join("\n")));
    }
    if let Some(cfg) = &cfg {
        match &cfg.file {
            Some(file) => println!("config {}: ok", display_path(global, file)),
            None => println!("config: none found; defaults are valid"),
        }
    }
    if let Some(count) = sweep_summary {
        println!(
            "sweep {sweep_shown}: ok, {count} task{}",
            if count == 1 { "" } else { "s" }
        );
    }
    if remote {
        if let Some(cfg) = &cfg {
            let script_override = script.as_ref().map(|(s, _)| s.as_str());
            return Ok(super::agent_cmd::remote_checks(cfg, script_override));
        }
    }
    Ok(EXIT_OK)
}

/// The sweep file's `script:` and where the key is written, also from a file with problems.
fn sweep_script(text: &str) -> Option<(String, Option<crate::yaml::Pos>)> {
    let root = crate::yaml::parse(text).ok().flatten()?;
    let (key, value) = root
        .as_map()?
        .iter()
        .find(|(k, _)| k.as_str() == Some("script"))?;
    Some((value.as_str()?.to_string(), Some(key.pos)))
}

/// Dotted key paths that have a problem, asked whether a path is about the same key as one of
/// them (equal, or one inside the other). Hash sets, not a scan per question: with thousands of
/// sources that was quadratic (seconds per 10k problems).
#[derive(Default)]
struct KeyPaths {
    paths: std::collections::HashSet<String>,
    /// Every proper dotted prefix of a path in `paths` (`sources`, `sources.gpu1` for
    /// `sources.gpu1.python`).
    parents: std::collections::HashSet<String>,
}

impl KeyPaths {
    fn insert(&mut self, path: &str) {
        if path.is_empty() {
            return;
        }
        for (i, _) in path.match_indices('.') {
            self.parents.insert(path[..i].to_string());
        }
        self.paths.insert(path.to_string());
    }

    fn overlaps(&self, path: &str) -> bool {
        !path.is_empty()
            && (self.paths.contains(path)
                || self.parents.contains(path)
                || path
                    .match_indices('.')
                    .any(|(i, _)| self.paths.contains(&path[..i])))
    }
}

#[cfg(test)]
mod tests {
    use super::KeyPaths;

    #[test]
    fn key_paths_overlap_when_equal_or_nested_at_a_dot() {
        let mut reported = KeyPaths::default();
        reported.insert("command.python");
        reported.insert("sources.gpu1");
        reported.insert("");
        assert!(reported.overlaps("command.python"));
        assert!(reported.overlaps("command"));
        assert!(reported.overlaps("sources.gpu1.project_dir"));
        assert!(reported.overlaps("sources"));
        assert!(!reported.overlaps("command.python3"));
        assert!(!reported.overlaps("command.py"));
        assert!(!reported.overlaps("sources.gpu10"));
        assert!(!reported.overlaps(""));
        assert!(!reported.overlaps("defaults"));
    }
}

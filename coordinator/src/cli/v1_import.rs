//! `sweep complete` on a Python HSM v1 sweep directory: reads what v1 left (its copy of the sweep
//! file, each task directory's `task_info.txt`, `source_mapping.yaml` when present), gives task
//! directories this layout's names, and writes the `sweep.db` the rest of `complete` works from.
//! The decisions are `core::v1`'s; this file only reads and writes.

use super::config_cmd::display_path;
use super::sweep_cmd::MAX_TASKS;
use super::{user_error, Global};
use crate::actors::sweep::now_ms;
use crate::core::state::{Change, TaskStatus};
use crate::core::sweep::{load_sweep_text, SweepFile};
use crate::core::v1::{self, FoundTask, V1Status};
use crate::core::value::{params_hash, task_name};
use crate::layout::SweepPaths;
use crate::store::{NewTask, Store};
use anyhow::Context;
use std::path::Path;

/// The v1 sweep directory `id` names (an id under `outputs`, or a path), when it is one: it has
/// v1's copy of the sweep file and task directories or a source mapping, and no `sweep.db`.
pub fn find(outputs: &Path, id: &str) -> Option<SweepPaths> {
    let candidates = [Path::new(id).to_path_buf(), outputs.join(id)];
    candidates.into_iter().find_map(|root| {
        let is_v1 = root.join("sweep_config.yaml").is_file()
            && !root.join("sweep.db").exists()
            && (root.join("tasks").is_dir() || root.join("source_mapping.yaml").is_file());
        is_v1.then(|| SweepPaths::new(std::fs::canonicalize(&root).unwrap_or(root)))
    })
}

/// What was found in a v1 sweep.
struct Survey {
    total: u64,
    chosen: std::collections::BTreeMap<u64, FoundTask>,
    beyond: Vec<String>,
}

fn survey(global: &Global, paths: &SweepPaths) -> anyhow::Result<(Survey, SweepFile)> {
    let config_path = paths.root.join("sweep_config.yaml");
    let shown = display_path(global, &config_path);
    let text = std::fs::read_to_string(&config_path)
        .with_context(|| format!("reading {}", config_path.display()))?;
    let sweep = load_sweep_text(&text).map_err(|problems| {
        let lines: Vec<String> = problems.iter().map(|p| p.render(&shown)).collect();
        user_error(format!(
            "{shown} (the Python HSM v1 sweep's copy of its sweep file) cannot be read: \
             {}\nfix that file, then run `sweep complete` again",
            lines.join("\n")
        ))
    })?;
    let count = sweep.spec.count();
    let total = match count.exact() {
        Some(total) if total <= MAX_TASKS => total,
        _ => {
            return Err(user_error(format!(
                "{shown}: {count} combinations is more than one sweep holds ({MAX_TASKS})"
            )))
        }
    };
    let tasks_dir = paths.root.join("tasks");
    let mut found = Vec::new();
    let mut beyond = Vec::new();
    let mut visit = |dir: &Path, rel_prefix: &str, found: &mut Vec<FoundTask>| {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return Vec::new();
        };
        let mut nested = Vec::new();
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if !entry.file_type().is_ok_and(|t| t.is_dir()) {
                continue;
            }
            match v1::task_index_of_dir(&name) {
                Some(index) if index <= total => {
                    let status = std::fs::read_to_string(entry.path().join("task_info.txt"))
                        .map(|t| v1::task_info_status(&t))
                        .unwrap_or(V1Status::Unfinished);
                    found.push(FoundTask {
                        index,
                        status,
                        rel_dir: format!("{rel_prefix}{name}"),
                    });
                }
                Some(_) => beyond.push(format!("{rel_prefix}{name}")),
                // v1's remote mode brought results back into `tasks/remote_<name>/task_NNN`.
                None if rel_prefix.is_empty() && name.starts_with("remote_") => nested.push(name),
                None => {}
            }
        }
        nested
    };
    for remote in visit(&tasks_dir, "", &mut found) {
        visit(&tasks_dir.join(&remote), &format!("{remote}/"), &mut found);
    }
    found.sort_by(|a, b| a.rel_dir.cmp(&b.rel_dir));
    beyond.sort();
    Ok((
        Survey {
            total,
            chosen: v1::choose(found),
            beyond,
        },
        sweep,
    ))
}

fn count(survey: &Survey, status: V1Status) -> usize {
    survey
        .chosen
        .values()
        .filter(|t| t.status == status)
        .count()
}

fn describe(survey: &Survey) -> String {
    let missing = survey.total as usize - survey.chosen.len();
    format!(
        "{} tasks: {} completed, {} failed, {} cancelled, {} never finished, {} never started",
        survey.total,
        count(survey, V1Status::Completed),
        count(survey, V1Status::Failed),
        count(survey, V1Status::Cancelled),
        count(survey, V1Status::Unfinished),
        missing
    )
}

/// `--dry-run`: says what the import would find; creates nothing.
pub fn preview(global: &Global, paths: &SweepPaths, sweep_id: &str) -> anyhow::Result<()> {
    let (survey, _) = survey(global, paths)?;
    println!("{sweep_id} is a Python HSM v1 sweep: {}", describe(&survey));
    println!("(dry run: nothing created; without --dry-run `sweep complete` takes it over in place and runs what did not complete)");
    Ok(())
}

/// Takes a v1 sweep over in place: renames its task directories to `task_NNN` where v1 named
/// them otherwise, and writes `sweep.db` (via a temporary file renamed at the end, so an import
/// that stops half way leaves the v1 directory as it was, apart from renames it reports).
/// The caller holds the sweep's lock.
pub fn import(
    global: &Global,
    paths: &SweepPaths,
    sweep_id: &str,
    project_root: &Path,
) -> anyhow::Result<()> {
    let (survey, sweep) = survey(global, paths)?;
    let tasks_dir = paths.root.join("tasks");
    std::fs::create_dir_all(&tasks_dir)
        .with_context(|| format!("creating {}", tasks_dir.display()))?;
    let mut renamed = Vec::new();
    for task in survey.chosen.values() {
        let ours = task_name(task.index);
        if task.rel_dir == ours {
            continue;
        }
        let target = tasks_dir.join(&ours);
        if target.exists() {
            // Another directory of the same task (a failed copy beside the completed one)
            // already has our name: it stays, under a name saying what it was.
            let aside = tasks_dir.join(format!("{ours}.v1-other"));
            std::fs::rename(&target, &aside)
                .with_context(|| format!("moving {} aside", target.display()))?;
            renamed.push(format!("{ours} -> {ours}.v1-other"));
        }
        std::fs::rename(tasks_dir.join(&task.rel_dir), &target)
            .with_context(|| format!("renaming {} to {}", task.rel_dir, target.display()))?;
        renamed.push(format!("{} -> {ours}", task.rel_dir));
    }
    let sources = std::fs::read_to_string(paths.root.join("source_mapping.yaml"))
        .map(|t| v1::mapping_sources(&t))
        .unwrap_or_default();
    let now = now_ms();
    let meta = vec![
        ("sweep_id", sweep_id.to_string()),
        ("created", now.to_string()),
        (
            "sweep_file",
            paths.root.join("sweep_config.yaml").display().to_string(),
        ),
        ("project_root", project_root.display().to_string()),
        // v1 used the sweep id as the W&B group.
        ("group", sweep_id.to_string()),
        ("script_override", sweep.script.clone().unwrap_or_default()),
        ("total_combinations", survey.total.to_string()),
        (
            "metadata",
            serde_json::to_string(&sweep.metadata).unwrap_or_else(|_| "null".into()),
        ),
        ("hsm_version", env!("CARGO_PKG_VERSION").to_string()),
        ("imported_from", "python-hsm-v1".to_string()),
    ];
    let importing = paths.root.join("sweep.db.importing");
    for leftover in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{leftover}", importing.display()));
    }
    {
        // Python HSM named its tasks with three digits, however many there were.
        let mut store = Store::create(
            &importing,
            &meta,
            crate::core::value::MIN_TASK_WIDTH,
            sweep.spec.iter().enumerate().map(|(i, params)| NewTask {
                index: i as u64 + 1,
                params_hash: params_hash(&params),
                params,
            }),
        )?;
        let changes: Vec<Change> = survey
            .chosen
            .values()
            .filter_map(|task| {
                let status = match task.status {
                    V1Status::Completed => TaskStatus::Completed,
                    V1Status::Failed => TaskStatus::Failed,
                    V1Status::Cancelled => TaskStatus::Cancelled,
                    V1Status::Unfinished => return None,
                };
                Some(Change {
                    index: task.index,
                    attempt: 1,
                    status,
                    source: Some(
                        sources
                            .get(&task.index)
                            .cloned()
                            .unwrap_or_else(|| "python-hsm-v1".into()),
                    ),
                    exit_code: None,
                    reason: (status != TaskStatus::Completed).then(|| {
                        format!("{:?} in Python HSM v1's task_info.txt", task.status).to_lowercase()
                    }),
                    at: now,
                    pid: None,
                    job_id: None,
                    stderr_tail: None,
                    usage: None,
                })
            })
            .collect();
        store.apply(&changes)?;
    }
    for suffix in ["-wal", "-shm"] {
        let from = format!("{}{suffix}", importing.display());
        if Path::new(&from).exists() {
            std::fs::rename(&from, format!("{}{suffix}", paths.db().display()))?;
        }
    }
    std::fs::rename(&importing, paths.db())
        .with_context(|| format!("renaming {} to sweep.db", importing.display()))?;
    eprintln!(
        "{sweep_id} is a Python HSM v1 sweep: {}; taken over in place (sweep.db written)",
        describe(&survey)
    );
    if !renamed.is_empty() {
        eprintln!(
            "renamed {} task director{} to this layout's names: {}",
            renamed.len(),
            if renamed.len() == 1 { "y" } else { "ies" },
            renamed.join(", ")
        );
    }
    if !survey.beyond.is_empty() {
        eprintln!(
            "left alone (numbered beyond the {} combinations of sweep_config.yaml): {}",
            survey.total,
            survey.beyond.join(", ")
        );
    }
    Ok(())
}

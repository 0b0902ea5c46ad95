//! Finding a sweep (by id, path, or the project's latest), its lock file (held while a
//! coordinator works on it, probed by `status` and `cancel`) and its database.

use super::*;

/// Holds the sweep's lock file for as long as this coordinator works on the sweep. The lock is
/// an OS file lock, so it is released even by `kill -9`.
pub(super) fn acquire_lock(paths: &SweepPaths, sweep_id: &str) -> anyhow::Result<File> {
    try_acquire_lock(paths)?.ok_or_else(|| {
        let pid = std::fs::read_to_string(paths.lock()).unwrap_or_default();
        user_error(format!(
            "sweep {sweep_id} is being run by another coordinator (pid {}) — wait for it, or `hsm-coordinator sweep cancel {sweep_id}`",
            pid.trim()
        ))
    })
}

/// The lock, or `None` when a coordinator holds it. `status` and `cancel` probe the lock by
/// taking it for an instant, so a failed attempt is retried for a moment before giving up.
pub(super) fn try_acquire_lock(paths: &SweepPaths) -> anyhow::Result<Option<File>> {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(paths.lock())
        .with_context(|| format!("opening {}", paths.lock().display()))?;
    for _ in 0..50 {
        if file.try_lock().is_ok() {
            let _ = file.set_len(0);
            let _ = std::fs::write(paths.lock(), std::process::id().to_string());
            return Ok(Some(file));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(None)
}

/// Removes a `sweep cancel` request file an earlier run left (a run that ended before it looked).
pub(super) fn remove_cancel_request(paths: &SweepPaths) -> anyhow::Result<()> {
    match std::fs::remove_file(paths.cancel_request()) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(anyhow::anyhow!(
            "cannot remove {}: {e}",
            paths.cancel_request().display()
        )),
    }
}

/// True when a coordinator currently holds the sweep's lock.
pub(crate) fn is_active(paths: &SweepPaths) -> bool {
    let Ok(file) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(paths.lock())
    else {
        return false;
    };
    match file.try_lock() {
        Ok(()) => {
            let _ = file.unlock();
            false
        }
        Err(_) => true,
    }
}

/// Opens a sweep's database; one whose creation never finished is the user's to re-run.
pub(crate) fn open_store(paths: &SweepPaths, sweep_id: &str) -> anyhow::Result<Store> {
    match Store::open(&paths.db()) {
        Err(crate::store::StoreError::Incomplete { .. }) if is_active(paths) => Err(user_error(
            format!("sweep {sweep_id} is still being created; try again in a moment"),
        )),
        Err(crate::store::StoreError::Incomplete { .. }) => Err(user_error(format!(
            "sweep {sweep_id} was never fully created (its coordinator stopped while creating it); nothing of it ran — start it again with `hsm-coordinator sweep run`"
        ))),
        other => Ok(other?),
    }
}

/// The sweep a command names (its id or directory), or the project's latest when none is named.
pub(crate) fn resolve_sweep(
    global: &Global,
    cfg: &ProjectConfig,
    id: Option<&str>,
) -> anyhow::Result<(String, SweepPaths)> {
    match id {
        Some(id) => find_sweep(global, cfg, id),
        None => latest_sweep(global, cfg),
    }
}

/// Finds a sweep by id (under the project's outputs) or by path.
pub(super) fn find_sweep(
    global: &Global,
    cfg: &ProjectConfig,
    id: &str,
) -> anyhow::Result<(String, SweepPaths)> {
    let as_path = PathBuf::from(id);
    if as_path.join("sweep.db").is_file() {
        let root = std::fs::canonicalize(&as_path).unwrap_or(as_path);
        let name = root
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| id.to_string());
        return Ok((name, SweepPaths::new(root)));
    }
    let outputs = layout::outputs_dir(&cfg.root);
    let paths = SweepPaths::new(outputs.join(id));
    if layout::valid_sweep_id(id) && paths.db().is_file() {
        return Ok((id.to_string(), paths));
    }
    let recent: Vec<String> = list_sweeps(&outputs)
        .into_iter()
        .rev()
        .take(5)
        .map(|(n, _)| n)
        .collect();
    Err(user_error(format!(
        "no sweep `{id}` in {}{}",
        display_path(global, &outputs),
        if recent.is_empty() {
            String::new()
        } else {
            format!(" (recent: {})", recent.join(", "))
        }
    )))
}

/// The most recently created sweep of the project (what `status` and `complete` take when no
/// id is given).
pub(super) fn latest_sweep(
    global: &Global,
    cfg: &ProjectConfig,
) -> anyhow::Result<(String, SweepPaths)> {
    let outputs = layout::outputs_dir(&cfg.root);
    list_sweeps(&outputs).pop().ok_or_else(|| {
        user_error(format!(
            "no sweeps in {} — start one with `hsm-coordinator sweep run`",
            display_path(global, &outputs)
        ))
    })
}

/// Sweeps under `outputs`, oldest first (by the database's creation order: modification time of
/// the directory is unreliable, so the `created` meta would need opening every db; names of
/// default ids sort by time, and the directory mtime breaks ties for custom ids).
pub(crate) fn list_sweeps(outputs: &Path) -> Vec<(String, SweepPaths)> {
    let Ok(entries) = std::fs::read_dir(outputs) else {
        return Vec::new();
    };
    let mut sweeps: Vec<(std::time::SystemTime, String, SweepPaths)> = entries
        .filter_map(|e| e.ok())
        .filter(|e| e.path().join("sweep.db").is_file())
        .map(|e| {
            let created = e
                .metadata()
                .and_then(|m| m.created().or_else(|_| m.modified()))
                .unwrap_or(std::time::UNIX_EPOCH);
            (
                created,
                e.file_name().to_string_lossy().into_owned(),
                SweepPaths::new(e.path()),
            )
        })
        .collect();
    sweeps.sort_by(|a, b| a.0.cmp(&b.0).then_with(|| a.1.cmp(&b.1)));
    sweeps
        .into_iter()
        .map(|(_, name, paths)| (name, paths))
        .collect()
}

pub(super) fn open_settings(store: &Store, cfg: &ProjectConfig) -> anyhow::Result<SweepSettings> {
    let script_override = store.meta("script_override")?.filter(|s| !s.is_empty());
    let group = store.meta("group")?.unwrap_or_default();
    // Sweeps recorded before this key passed the group whenever the config did.
    let wandb = store.meta("wandb_group")?.is_some_and(|v| v == "true");
    let command = launch_command(cfg, script_override.as_deref(), wandb);
    Ok(SweepSettings {
        script_override,
        group,
        command,
    })
}

//! `sweep report [SWEEP_ID] [-o FILE]`, and the report written at the end of every `sweep run`
//! and `sweep complete` (`after_run`): finds the sweep and hands it to `crate::report`.

use super::config_cmd::{display_path, load_config};
use super::sweep_cmd::{is_active, open_store, resolve_sweep};
use super::{user_error, Global, ReportArgs, EXIT_OK};
use crate::layout::SweepPaths;
use crate::report;

pub fn report(global: &Global, args: &ReportArgs) -> anyhow::Result<i32> {
    let cfg = load_config(global)?;
    let (sweep_id, paths) = resolve_sweep(global, &cfg, args.sweep_id.as_deref())?;
    // Opened once here for its clear messages (never created, newer schema); `write` reads it.
    drop(open_store(&paths, &sweep_id)?);
    // `-o` names a file in a directory that exists (a typo must not create directories); the
    // default `reports/` is the sweep's own and is made when missing.
    if let Some(out) = &args.output {
        let dir = match out.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => std::path::Path::new("."),
        };
        if !dir.is_dir() {
            return Err(user_error(format!(
                "-o {}: the directory {} does not exist; create it first or name a file in an existing one",
                out.display(),
                dir.display()
            )));
        }
        if out.is_dir() {
            return Err(user_error(format!(
                "-o {}: is a directory; name the file to write, e.g. {}",
                out.display(),
                out.join("report.html").display()
            )));
        }
    }
    let out = args
        .output
        .clone()
        .unwrap_or_else(|| report::default_path(&paths));
    let written = report::write(&paths, &sweep_id, is_active(&paths), &out)?;
    println!(
        "report: {} ({} of {} tasks plotted, {} KiB)",
        display_path(global, &written.path),
        written.embedded,
        written.tasks,
        written.bytes.div_ceil(1024)
    );
    Ok(EXIT_OK)
}

/// The report at the end of a run. Never fails the run: a problem is a warning.
pub(super) fn after_run(global: &Global, sweep_id: &str, paths: &SweepPaths) {
    match report::write(paths, sweep_id, false, &report::default_path(paths)) {
        Ok(written) if !global.quiet => {
            eprintln!("report: {}", display_path(global, &written.path))
        }
        Ok(_) => {}
        Err(e) => eprintln!("hsm-coordinator: warning: the report was not written: {e:#}"),
    }
}

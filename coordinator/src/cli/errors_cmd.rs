//! `sweep errors [SWEEP_ID] [--json]` (alias `monitor errors`): a sweep's failed tasks grouped
//! by cause (`core::errors`), read from its `sweep.db` without writing to it, so it works on a
//! sweep that a coordinator in another terminal is running.

use super::config_cmd::{display_path, load_config};
use super::sweep_cmd::{is_active, resolve_sweep};
use super::{user_error, ErrorsArgs, Global, EXIT_OK};
use crate::core::errors::{self, ErrorGroup};
use crate::layout::SweepPaths;
use crate::store::{Store, StoreError};
use serde_json::json;

/// The sweep named by `id` (default: the latest of the project), with its task width.
pub(super) fn resolve(global: &Global, id: Option<&str>) -> anyhow::Result<(String, SweepPaths)> {
    resolve_sweep(global, &load_config(global)?, id)
}

/// Opens a sweep's database for reading; a sweep whose creation never finished is named as
/// such (exit 2), as `sweep status` does. The paths get the sweep's task width. With `current`,
/// a database of an older schema is upgraded first (as `sweep status` does): the caller reads
/// columns it lacks.
pub(super) fn open_for_reading(
    paths: SweepPaths,
    sweep_id: &str,
    current: bool,
) -> anyhow::Result<(Store, SweepPaths)> {
    let opened = Store::open_read_only(&paths.db()).and_then(|store| {
        if current && store.schema_version()? < crate::store::SCHEMA_VERSION {
            drop(store);
            Store::open(&paths.db())
        } else {
            Ok(store)
        }
    });
    match opened {
        Ok(store) => {
            let width = store.task_width()?;
            Ok((store, paths.with_task_width(width)))
        }
        Err(StoreError::Incomplete { .. }) => Err(user_error(format!(
            "sweep {sweep_id} {}",
            if is_active(&paths) {
                "is still being created; try again in a moment"
            } else {
                "was never fully created (its coordinator stopped while creating it); nothing of it ran"
            }
        ))),
        Err(e) => Err(e.into()),
    }
}

pub fn errors(global: &Global, args: &ErrorsArgs) -> anyhow::Result<i32> {
    let (sweep_id, paths) = resolve(global, args.sweep_id.as_deref())?;
    let (store, paths) = open_for_reading(paths, &sweep_id, true)?;
    let failures = store.failures()?;
    let constant = if failures.is_empty() {
        Default::default()
    } else {
        store.constant_params()?
    };
    let groups = errors::group(&failures, &constant);
    if args.json {
        let value = json!({
            "sweep_id": sweep_id,
            "path": paths.root.display().to_string(),
            "active": is_active(&paths),
            "failed": failures.len(),
            "groups": errors::to_json(&groups),
        });
        println!("{}", serde_json::to_string_pretty(&value)?);
        return Ok(EXIT_OK);
    }
    print!("{}", render(&sweep_id, failures.len(), &groups));
    if !groups.is_empty() && !global.quiet {
        println!(
            "every failed task: `hsm-coordinator sweep status {sweep_id}`; one task's output: \
             `hsm-coordinator sweep logs {sweep_id} TASK --stderr`"
        );
        println!("outputs: {}", display_path(global, &paths.root));
    }
    Ok(EXIT_OK)
}

/// The groups for a reader: count and signature, example tasks, what they share, and the
/// start of one traceback, indented under its group.
fn render(sweep_id: &str, failed: usize, groups: &[ErrorGroup]) -> String {
    if groups.is_empty() {
        return format!("{sweep_id}: no failed tasks\n");
    }
    let mut out = format!(
        "{sweep_id}: {failed} failed task{} in {} group{}\n",
        plural(failed),
        groups.len(),
        plural(groups.len())
    );
    for group in groups {
        out.push_str(&format!("\n{:>5} × {}\n", group.count, group.signature));
        let more = group.count.saturating_sub(group.examples.len());
        out.push_str(&format!(
            "        tasks: {}{}\n",
            group.examples.join(", "),
            if more > 0 {
                format!(" and {more} more")
            } else {
                String::new()
            }
        ));
        if let Some(shared) = errors::describe_shared(group) {
            out.push_str(&format!("        {shared}\n"));
        }
        for line in &group.traceback {
            out.push_str(&format!("        │ {line}\n"));
        }
    }
    out
}

fn plural(n: usize) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::value::Value;

    #[test]
    fn groups_render_with_their_examples_shared_params_and_traceback() {
        let groups = vec![ErrorGroup {
            signature: "ValueError: bad lr <n>".into(),
            count: 7,
            examples: vec!["task_001".into(), "task_004".into()],
            shared: vec![("lr".into(), Value::Float(0.5))],
            traceback: vec![
                "Traceback (most recent call last):".into(),
                "ValueError: bad lr 0.5".into(),
            ],
        }];
        let text = render("s1", 7, &groups);
        assert_eq!(
            text,
            "s1: 7 failed tasks in 1 group\n\n    7 × ValueError: bad lr <n>\n        tasks: \
             task_001, task_004 and 5 more\n        all 7 have lr=0.5\n        │ Traceback \
             (most recent call last):\n        │ ValueError: bad lr 0.5\n"
        );
        assert_eq!(render("s1", 0, &[]), "s1: no failed tasks\n");
    }
}

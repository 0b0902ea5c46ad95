//! `work_dir` of an agent source (or of `defaults`, for every agent): the directory on the
//! agent's host where it keeps task directories (`hsm-agent serve --work-dir`, which
//! `agent deploy` starts it with). Checked here; compared with what a running agent reports.

use super::raw::At;
use crate::core::diag::Problem;

/// Checks a work directory as written: an absolute path or one under the remote home (`~`,
/// `~/...`), on one line. `Ok` is the value trimmed, trailing `/` removed.
pub fn validate_work_dir(value: &str) -> Result<String, String> {
    let dir = value.trim();
    if dir.is_empty() {
        return Err("is empty".into());
    }
    if dir.chars().any(char::is_control) {
        return Err("contains a control character (a line break?)".into());
    }
    if !(dir.starts_with('/') || dir == "~" || dir.starts_with("~/")) {
        return Err(format!(
            "`{dir}` is relative: the agent's own directory would decide where it is"
        ));
    }
    let trimmed = dir.trim_end_matches('/');
    Ok(if trimmed.is_empty() { "/" } else { trimmed }.to_string())
}

/// The source's `work_dir`, else `defaults.work_dir`; problems reported at the key.
pub(super) fn resolve_work_dir(
    own: Option<&At<String>>,
    default: Option<&String>,
    problems: &mut Vec<Problem>,
) -> Option<String> {
    match own {
        Some(at) => match validate_work_dir(&at.value) {
            Ok(dir) => Some(dir),
            Err(why) => {
                problems.push(at.problem(why).with_hint(HINT));
                None
            }
        },
        None => default.cloned(),
    }
}

pub(super) const HINT: &str =
    "write an absolute path on the agent's host, or one under its home: work_dir: ~/hsm-work";

/// Whether the directory a running agent reports (absolute, symlinks resolved) is the one
/// configured. `~/rel` matches any directory ending in `/rel` (the remote home is not known
/// here); with symlinks in the configured path a match may be missed, never invented.
pub fn work_dir_matches(configured: &str, reported: &str) -> bool {
    let norm = |p: &str| {
        let parts: Vec<&str> = p
            .split('/')
            .filter(|s| !s.is_empty() && *s != ".")
            .collect();
        parts.join("/")
    };
    let reported = norm(reported);
    match configured.trim().strip_prefix('~') {
        // `~` alone: the home itself, which this side cannot know.
        Some("") | Some("/") => true,
        Some(rel) => {
            let rel = norm(rel);
            reported == rel || reported.ends_with(&format!("/{rel}"))
        }
        None => norm(configured) == reported,
    }
}

/// The warning when a running agent keeps task files elsewhere than configured: both paths and
/// the fix (`ssh`: the source's ssh destination, for the deploy command).
pub fn mismatch_warning(name: &str, configured: &str, reported: &str, ssh: Option<&str>) -> String {
    let fix = match ssh {
        Some(host) => format!(
            "`hsm-coordinator agent deploy {name} {host} --restart` restarts it with {configured}"
        ),
        None => format!("restart its `hsm-agent serve` with --work-dir {configured}"),
    };
    format!(
        "its agent keeps task directories in {reported}, not in the configured work_dir \
         {configured} (it was started before work_dir was set or changed) — {fix}"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn absolute_and_home_relative_paths_are_accepted_and_tidied() {
        assert_eq!(
            validate_work_dir(" /scratch/me/hsm/ ").unwrap(),
            "/scratch/me/hsm"
        );
        assert_eq!(validate_work_dir("~/hsm-work").unwrap(), "~/hsm-work");
        assert_eq!(validate_work_dir("~").unwrap(), "~");
        assert_eq!(validate_work_dir("/").unwrap(), "/");
    }

    #[test]
    fn relative_empty_and_multi_line_paths_are_refused_with_why() {
        assert!(validate_work_dir("work").unwrap_err().contains("relative"));
        assert!(validate_work_dir("./work")
            .unwrap_err()
            .contains("relative"));
        assert!(validate_work_dir("~other/w")
            .unwrap_err()
            .contains("relative"));
        assert!(validate_work_dir("  ").unwrap_err().contains("empty"));
        assert!(validate_work_dir("/a\n/b").unwrap_err().contains("control"));
    }

    #[test]
    fn the_source_wins_over_defaults_and_a_bad_one_is_reported_at_its_key() {
        let at = |v: &str| At {
            value: v.to_string(),
            pos: crate::yaml::Pos::default(),
            path: "sources.gpu.work_dir".into(),
        };
        let default = "/d".to_string();
        let mut problems = Vec::new();
        assert_eq!(
            resolve_work_dir(Some(&at("/own")), Some(&default), &mut problems),
            Some("/own".into())
        );
        assert_eq!(
            resolve_work_dir(None, Some(&default), &mut problems),
            Some("/d".into())
        );
        assert_eq!(resolve_work_dir(None, None, &mut problems), None);
        assert!(problems.is_empty());
        assert_eq!(
            resolve_work_dir(Some(&at("rel")), Some(&default), &mut problems),
            None
        );
        assert_eq!(problems.len(), 1);
        assert_eq!(problems[0].path, "sources.gpu.work_dir");
    }

    #[test]
    fn a_reported_dir_matches_the_configured_one() {
        assert!(work_dir_matches("/scratch/me/hsm", "/scratch/me/hsm"));
        assert!(work_dir_matches("/scratch/me/hsm/", "/scratch//me/hsm"));
        assert!(!work_dir_matches(
            "/scratch/me/hsm",
            "/home/me/.local/state/hsm-agent/work"
        ));
        assert!(work_dir_matches("~/hsm-work", "/home/me/hsm-work"));
        assert!(!work_dir_matches("~/hsm-work", "/home/me/other-hsm-work"));
        assert!(!work_dir_matches(
            "~/hsm-work",
            "/home/me/.local/state/hsm-agent/work"
        ));
        assert!(work_dir_matches("~", "/home/me"));
    }

    #[test]
    fn the_warning_names_both_paths_and_the_fix() {
        let w = mismatch_warning(
            "gpu1",
            "/scratch/w",
            "/home/me/.local/state/hsm-agent/work",
            Some("me@gpu1"),
        );
        assert!(w.contains("/scratch/w"), "{w}");
        assert!(w.contains("/home/me/.local/state/hsm-agent/work"), "{w}");
        assert!(w.contains("agent deploy gpu1 me@gpu1 --restart"), "{w}");
        let w = mismatch_warning("gpu1", "/scratch/w", "/x", None);
        assert!(w.contains("--work-dir /scratch/w"), "{w}");
    }
}

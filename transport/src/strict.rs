//! Who may change the agent's state directory, like OpenSSH's `StrictModes`: the identity, the
//! list of authorized coordinators and the ledger (which holds the commands of queued tasks)
//! decide what the agent runs, so another local user able to replace any of them could run
//! commands as the agent's user (root, often). [`check_state_dir`] refuses such a directory
//! with the path, the problem and the `chmod`/`chown` that fixes it.
//!
//! The rules, as OpenSSH applies them to `authorized_keys` (`safe_path`):
//!
//! * each file there: owned by the agent's effective user or root, not writable by group or
//!   others (checked on the opened file, so a swap between check and use changes nothing);
//! * the state directory itself: the same (writable by others, anyone could put an
//!   `authorized_coordinators` where none was, or swap a file for their own);
//! * every parent up to `/`: the same, except a sticky directory (`/tmp`, mode 1777): there
//!   nobody but its owner and root can rename or remove what another user put in it.
//!
//! The decision ([`judge`]) is a plain function; the walk over the real paths is a thin shell.

use std::fs::File;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// What a checked path is for the rules above.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Place {
    /// A file in the state directory.
    File,
    /// The state directory.
    StateDir,
    /// A directory above it.
    Parent,
}

/// A path another user could change, and the command that fixes it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{path} {problem}: another local user could change which coordinators this agent trusts \
     and have it run their commands as {user} — {fix}"
)]
pub struct UnsafePath {
    pub path: PathBuf,
    pub problem: String,
    pub fix: String,
    /// The agent's user, by name where it has one.
    pub user: String,
}

/// The rule for one path: `uid` owns it, `mode` is its permission bits (with the sticky bit),
/// `euid` is the agent's effective user. `None` when it is safe.
pub fn judge(place: Place, path: &Path, uid: u32, mode: u32, euid: u32) -> Option<UnsafePath> {
    let unsafe_path = |problem: String, fix: String| UnsafePath {
        path: path.to_path_buf(),
        problem,
        fix,
        user: user_name(euid),
    };
    let shown = shell_word(&path.display().to_string());
    let elsewhere = match place {
        Place::Parent => " (or give the agent a --state-dir under a directory only you can change)",
        _ => "",
    };
    if uid != euid && uid != 0 {
        return Some(unsafe_path(
            format!(
                "is owned by {} (uid {uid}), not by {} or root",
                user_name(uid),
                user_name(euid)
            ),
            format!(
                "run `chown {} {shown}` if its content is yours{elsewhere}",
                user_name(euid)
            ),
        ));
    }
    let sticky = mode & 0o1000 != 0;
    if mode & 0o022 != 0 && !(place == Place::Parent && sticky) {
        let who = match mode & 0o022 {
            0o020 => "its group",
            0o002 => "every user",
            _ => "its group and every user",
        };
        return Some(unsafe_path(
            format!("is writable by {who} (mode {:04o})", mode & 0o7777),
            format!("run `chmod go-w {shown}`{elsewhere}"),
        ));
    }
    None
}

/// The files of a state directory that decide what the agent trusts and runs.
pub const GUARDED_FILES: &[&str] = &[
    crate::identity::KEY_FILE,
    crate::identity::CERT_FILE,
    crate::identity::AUTHORIZED_FILE,
    // The agent's ledger (`hsm_agent::ledger::LEDGER_FILE`; a test there checks the name).
    "ledger.db",
    "ledger.db-wal",
    "ledger.db-shm",
];

/// Errors of [`check_state_dir`].
#[derive(Debug, thiserror::Error)]
pub enum StrictError {
    #[error(transparent)]
    Unsafe(#[from] UnsafePath),
    #[error("cannot check {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// This process's effective user.
pub fn euid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

/// Checks the state directory, its parents and its [`GUARDED_FILES`] (those that exist). A
/// directory that does not exist yet passes (its creator makes it 0700).
pub fn check_state_dir(dir: &Path) -> Result<(), StrictError> {
    check_dirs(dir)?;
    for name in GUARDED_FILES {
        let path = dir.join(name);
        match File::open(&path) {
            Ok(file) => check_open_file(&file, &path)?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(source) => return Err(StrictError::Io { path, source }),
        }
    }
    Ok(())
}

/// Checks the state directory and every parent up to `/` (after resolving symlinks: the rules
/// hold for the directories the files really are in).
pub fn check_dirs(dir: &Path) -> Result<(), StrictError> {
    let real = match std::fs::canonicalize(dir) {
        Ok(real) => real,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(source) => {
            return Err(StrictError::Io {
                path: dir.to_path_buf(),
                source,
            })
        }
    };
    let euid = euid();
    let mut place = Place::StateDir;
    for path in real.ancestors() {
        let meta = std::fs::metadata(path).map_err(|source| StrictError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        if let Some(problem) = judge(place, path, meta.uid(), meta.mode(), euid) {
            return Err(problem.into());
        }
        place = Place::Parent;
    }
    Ok(())
}

/// Checks a file already opened from the state directory (its own metadata, so the file read is
/// the file checked).
pub fn check_open_file(file: &File, path: &Path) -> Result<(), StrictError> {
    let meta = file.metadata().map_err(|source| StrictError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    match judge(Place::File, path, meta.uid(), meta.mode(), euid()) {
        Some(problem) => Err(problem.into()),
        None => Ok(()),
    }
}

/// The user name of `uid`, or the number when it has none.
fn user_name(uid: u32) -> String {
    let mut buf = vec![0u8; 4096];
    // SAFETY: `pwd` and `buf` outlive the call; getpwuid_r writes only into them and sets
    // `result` to null or to `pwd`.
    unsafe {
        let mut pwd: libc::passwd = std::mem::zeroed();
        let mut result: *mut libc::passwd = std::ptr::null_mut();
        let rc = libc::getpwuid_r(
            uid,
            &mut pwd,
            buf.as_mut_ptr().cast(),
            buf.len(),
            &mut result,
        );
        if rc == 0 && !result.is_null() && !pwd.pw_name.is_null() {
            if let Ok(name) = std::ffi::CStr::from_ptr(pwd.pw_name).to_str() {
                if !name.is_empty() {
                    return name.to_string();
                }
            }
        }
    }
    uid.to_string()
}

/// `text` as one shell word (single-quoted unless it is plain).
fn shell_word(text: &str) -> String {
    if !text.is_empty()
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "/._-+:@%,=".contains(c))
    {
        text.to_string()
    } else {
        format!("'{}'", text.replace('\'', "'\\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ME: u32 = 1000;
    const OTHER: u32 = 1001;

    fn judged(place: Place, uid: u32, mode: u32) -> Option<UnsafePath> {
        judge(place, Path::new("/srv/hsm state/x"), uid, mode, ME)
    }

    #[test]
    fn own_and_root_owned_paths_that_only_their_owner_writes_are_safe() {
        for place in [Place::File, Place::StateDir, Place::Parent] {
            for uid in [ME, 0] {
                for mode in [0o600, 0o644, 0o700, 0o755, 0o400] {
                    assert_eq!(judged(place, uid, mode), None, "{place:?} {uid} {mode:o}");
                }
            }
        }
    }

    #[test]
    fn another_users_file_or_directory_is_refused_with_the_chown() {
        for place in [Place::File, Place::StateDir, Place::Parent] {
            let problem = judged(place, OTHER, 0o600).expect("refused");
            assert!(problem.problem.contains("uid 1001"), "{problem}");
            assert!(
                problem
                    .fix
                    .starts_with(&format!("run `chown {} '/srv/hsm state/x'`", user_name(ME))),
                "{problem}"
            );
        }
    }

    #[test]
    fn group_or_world_writable_is_refused_with_the_chmod() {
        for (place, mode, who) in [
            (Place::File, 0o620, "its group"),
            (Place::File, 0o602, "every user"),
            (Place::StateDir, 0o777, "its group and every user"),
            (Place::StateDir, 0o1777, "its group and every user"),
            (Place::Parent, 0o775, "its group"),
        ] {
            let problem = judged(place, ME, mode).expect("refused");
            assert!(problem.problem.contains(who), "{problem}");
            assert!(
                problem.problem.contains(&format!("mode {:04o}", mode)),
                "{problem}"
            );
            assert!(
                problem
                    .fix
                    .starts_with("run `chmod go-w '/srv/hsm state/x'`"),
                "{problem}"
            );
        }
    }

    #[test]
    fn a_sticky_parent_like_tmp_is_safe_but_a_sticky_state_dir_is_not() {
        assert_eq!(judged(Place::Parent, 0, 0o1777), None);
        assert_eq!(judged(Place::Parent, ME, 0o1777), None);
        // Sticky does not help the state dir: a missing file could be created by anyone.
        assert!(judged(Place::StateDir, 0, 0o1777).is_some());
        // A sticky parent owned by another user: that user can remove what is in it.
        assert!(judged(Place::Parent, OTHER, 0o1777).is_some());
    }

    #[test]
    fn the_real_state_dir_walk_refuses_a_world_writable_dir_and_its_files() {
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("state");
        std::fs::create_dir(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
        check_state_dir(&dir).unwrap();
        let file = dir.join(crate::identity::AUTHORIZED_FILE);
        std::fs::write(&file, "").unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o660)).unwrap();
        let err = check_state_dir(&dir).unwrap_err().to_string();
        assert!(
            err.contains(&format!("chmod go-w {}", file.display())),
            "{err}"
        );
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
        let err = check_state_dir(&dir).unwrap_err().to_string();
        let real = std::fs::canonicalize(&dir).unwrap();
        assert!(
            err.contains(&format!("chmod go-w {}", real.display())),
            "{err}"
        );
        // Not there yet: nothing to check.
        check_state_dir(&tmp.path().join("missing")).unwrap();
    }
}

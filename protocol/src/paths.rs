//! Checks on what a peer says about result files: that a path stays inside the task's directory
//! and that a hash looks like a SHA-256.
//!
//! Both sides run these, the agent before offering a file and the coordinator before writing one,
//! so a bug or a hostile peer on either side cannot write outside a task's directory. They look at
//! the text only; symlinks that leave the directory must still be caught where the file system is.

/// A task's directory name, `task_007` (at least three digits): the same in the coordinator's
/// sweep directory and an agent's work directory.
pub fn task_dir_name(index: u64) -> String {
    format!("task_{index:03}")
}

/// Longest accepted path, in bytes (Linux's `PATH_MAX`).
pub const MAX_PATH_LEN: usize = 4096;

/// Longest accepted component, in bytes (Linux's `NAME_MAX`): a longer name cannot be created on
/// the receiving side, so it is refused as text before anything is written.
pub const MAX_COMPONENT_LEN: usize = 255;

/// Most components a result path may have (`results/` plus 62 directories plus the file). The
/// agent does not offer deeper files and the coordinator does not create deeper directories: the
/// same limit on both sides, so a peer cannot make the other build a directory tree of any depth.
pub const MAX_PATH_COMPONENTS: usize = 64;

/// Why a result path was refused. Paths are shown with `{:?}` so control characters in hostile
/// input cannot forge log lines.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    /// The path is the empty string.
    #[error("result path is empty")]
    Empty,
    /// The path is longer than [`MAX_PATH_LEN`] bytes.
    #[error("result path is {len} bytes long, the limit is {max}")]
    TooLong {
        /// The path's length in bytes.
        len: usize,
        /// The limit, [`MAX_PATH_LEN`].
        max: usize,
    },
    /// The path contains a NUL byte, which no file name can.
    #[error("result path {0:?} contains a NUL byte")]
    Nul(String),
    /// The path contains a backslash, a separator on Windows and a trap on Unix.
    #[error("result path {0:?} contains a backslash")]
    Backslash(String),
    /// The path starts with `/`.
    #[error("result path {0:?} is absolute, it must be relative to the task directory")]
    Absolute(String),
    /// A component is `..`, which could climb out of the task directory.
    #[error("result path {0:?} has a '..' component")]
    ParentComponent(String),
    /// A component is `.`, never needed and a sign of a path built carelessly.
    #[error("result path {0:?} has a '.' component")]
    CurrentComponent(String),
    /// Two slashes in a row, or a trailing slash.
    #[error("result path {0:?} has an empty component")]
    EmptyComponent(String),
    /// A component is longer than [`MAX_COMPONENT_LEN`] bytes.
    #[error("result path {path:?} has a component of {len} bytes, the limit is {max}")]
    ComponentTooLong {
        /// The whole path.
        path: String,
        /// The long component's length in bytes.
        len: usize,
        /// The limit, [`MAX_COMPONENT_LEN`].
        max: usize,
    },
    /// More than [`MAX_PATH_COMPONENTS`] components.
    #[error("result path is {depth} components deep, the limit is {max}")]
    TooDeep {
        /// How many components the path has.
        depth: usize,
        /// The limit, [`MAX_PATH_COMPONENTS`].
        max: usize,
    },
}

/// Accepts a result path only if it is relative, plain and stays within the task's directory:
/// non-empty, at most [`MAX_PATH_LEN`] bytes and [`MAX_PATH_COMPONENTS`] components, no NUL or
/// backslash, not absolute, and every `/`-separated component non-empty, neither `.` nor `..`,
/// and at most [`MAX_COMPONENT_LEN`] bytes.
pub fn check_relative_path(path: &str) -> Result<(), PathError> {
    if path.is_empty() {
        return Err(PathError::Empty);
    }
    if path.len() > MAX_PATH_LEN {
        return Err(PathError::TooLong {
            len: path.len(),
            max: MAX_PATH_LEN,
        });
    }
    if path.contains('\0') {
        return Err(PathError::Nul(path.to_owned()));
    }
    if path.contains('\\') {
        return Err(PathError::Backslash(path.to_owned()));
    }
    if path.starts_with('/') {
        return Err(PathError::Absolute(path.to_owned()));
    }
    let mut depth = 0;
    for component in path.split('/') {
        depth += 1;
        match component {
            "" => return Err(PathError::EmptyComponent(path.to_owned())),
            "." => return Err(PathError::CurrentComponent(path.to_owned())),
            ".." => return Err(PathError::ParentComponent(path.to_owned())),
            long if long.len() > MAX_COMPONENT_LEN => {
                return Err(PathError::ComponentTooLong {
                    path: path.to_owned(),
                    len: long.len(),
                    max: MAX_COMPONENT_LEN,
                })
            }
            _ => {}
        }
    }
    if depth > MAX_PATH_COMPONENTS {
        return Err(PathError::TooDeep {
            depth,
            max: MAX_PATH_COMPONENTS,
        });
    }
    Ok(())
}

/// Whether `text` is a SHA-256 digest as this protocol writes it: 64 lowercase hex digits.
pub fn is_sha256_hex(text: &str) -> bool {
    text.len() == 64 && text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_relative_paths_are_accepted() {
        for path in [
            "metrics.json",
            "results/model.pt",
            "results/a b/ünïcode.txt",
            "..hidden",
            "a/...",
            ".config/x",
            "results/..x/y..",
            "-rf",
        ] {
            assert_eq!(check_relative_path(path), Ok(()), "{path:?}");
        }
        let longest = vec!["a".repeat(MAX_COMPONENT_LEN); 16].join("/");
        assert_eq!(longest.len(), MAX_PATH_LEN - 1);
        assert_eq!(check_relative_path(&longest), Ok(()));
        let deepest = vec!["d"; MAX_PATH_COMPONENTS].join("/");
        assert_eq!(check_relative_path(&deepest), Ok(()));
    }

    #[test]
    fn names_the_receiver_cannot_create_and_deep_trees_are_refused() {
        let long = format!("results/{}", "n".repeat(MAX_COMPONENT_LEN + 1));
        assert_eq!(
            check_relative_path(&long),
            Err(PathError::ComponentTooLong {
                path: long.clone(),
                len: MAX_COMPONENT_LEN + 1,
                max: MAX_COMPONENT_LEN
            })
        );
        let deep = vec!["d"; MAX_PATH_COMPONENTS + 1].join("/");
        assert_eq!(
            check_relative_path(&deep),
            Err(PathError::TooDeep {
                depth: MAX_PATH_COMPONENTS + 1,
                max: MAX_PATH_COMPONENTS
            })
        );
    }

    #[test]
    fn escaping_and_odd_paths_are_refused() {
        type Expected = fn(String) -> PathError;
        let cases: [(&str, Expected); 14] = [
            ("/etc/passwd", PathError::Absolute),
            ("/", PathError::Absolute),
            ("..", PathError::ParentComponent),
            ("../x", PathError::ParentComponent),
            ("results/../../x", PathError::ParentComponent),
            ("results/..", PathError::ParentComponent),
            (".", PathError::CurrentComponent),
            ("./x", PathError::CurrentComponent),
            ("a/./b", PathError::CurrentComponent),
            ("a//b", PathError::EmptyComponent),
            ("a/", PathError::EmptyComponent),
            ("a\0b", PathError::Nul),
            ("a\\..\\b", PathError::Backslash),
            ("C:\\x", PathError::Backslash),
        ];
        for (path, expected) in cases {
            assert_eq!(
                check_relative_path(path),
                Err(expected(path.to_owned())),
                "{path:?}"
            );
        }
        assert_eq!(check_relative_path(""), Err(PathError::Empty));
        let too_long = vec!["a".repeat(MAX_COMPONENT_LEN); 17].join("/");
        assert_eq!(
            check_relative_path(&too_long),
            Err(PathError::TooLong {
                len: too_long.len(),
                max: MAX_PATH_LEN
            })
        );
    }

    #[test]
    fn messages_quote_the_path_escaped() {
        let err = check_relative_path("../x\n[INFO] forged").unwrap_err();
        assert_eq!(
            err.to_string(),
            r#"result path "../x\n[INFO] forged" has a '..' component"#
        );
    }

    #[test]
    fn sha256_hex_is_64_lowercase_hex_digits() {
        assert!(is_sha256_hex(&"0123456789abcdef".repeat(4)));
        assert!(!is_sha256_hex(&"0123456789ABCDEF".repeat(4)));
        assert!(!is_sha256_hex(&"0".repeat(63)));
        assert!(!is_sha256_hex(&"g".repeat(64)));
        assert!(!is_sha256_hex(""));
    }
}

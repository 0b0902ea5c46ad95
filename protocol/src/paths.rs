//! Checks on what a peer says about result files: that a path stays inside the task's directory
//! and that a hash looks like a SHA-256.
//!
//! Both sides run these, the agent before offering a file and the coordinator before writing one,
//! so a bug or a hostile peer on either side cannot write outside a task's directory. They look at
//! the text only; symlinks that leave the directory must still be caught where the file system is.

/// Longest accepted path, in bytes (Linux's `PATH_MAX`).
pub const MAX_PATH_LEN: usize = 4096;

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
}

/// Accepts a result path only if it is relative, plain and stays within the task's directory:
/// non-empty, at most [`MAX_PATH_LEN`] bytes, no NUL or backslash, not absolute, and every
/// `/`-separated component non-empty and neither `.` nor `..`.
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
    for component in path.split('/') {
        match component {
            "" => return Err(PathError::EmptyComponent(path.to_owned())),
            "." => return Err(PathError::CurrentComponent(path.to_owned())),
            ".." => return Err(PathError::ParentComponent(path.to_owned())),
            _ => {}
        }
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
        assert_eq!(check_relative_path(&"a".repeat(MAX_PATH_LEN)), Ok(()));
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
        assert_eq!(
            check_relative_path(&"a".repeat(MAX_PATH_LEN + 1)),
            Err(PathError::TooLong {
                len: MAX_PATH_LEN + 1,
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

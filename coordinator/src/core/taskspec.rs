//! Parsing `--task-ids` selections (`1,5-8,task_012,@ids.txt`) into a sorted list of 1-based task
//! indices, checked against the size of the sweep. File contents come through a closure: no IO here.

/// The most tasks one selection may name. Far beyond any real sweep; it keeps a mistyped range
/// against a huge `total` from trying to allocate billions of ids.
pub const MAX_SELECTED: u64 = 10_000_000;

/// Why a task-id selection was rejected. Each names the offending text.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum TaskSpecError {
    /// The selection is empty or only whitespace.
    #[error("no task ids given: write e.g. 1,5-8,task_012 or @ids.txt")]
    Empty,
    /// Two commas with nothing between them, or a trailing comma.
    #[error("empty item in task ids {spec:?}")]
    EmptyItem { spec: String },
    /// Neither an id, a `task_NNN` name, a range nor `@file`.
    #[error("{token:?} is not a task id or range: write e.g. 7, task_007, 5-8 or @ids.txt")]
    Invalid { token: String },
    /// Task ids are 1-based.
    #[error("task ids start at 1, got {token:?}")]
    Zero { token: String },
    /// `8-5`.
    #[error("reversed range {token:?}: write {end}-{start}")]
    Reversed { token: String, start: u64, end: u64 },
    /// An id beyond the last task of the sweep.
    #[error("task {id} does not exist: {}", describe_total(*total))]
    OutOfRange { id: String, total: u64 },
    /// The selection names more tasks than `MAX_SELECTED`.
    #[error("the selection names {count} tasks, more than the limit of {limit}")]
    TooMany { count: u64, limit: u64 },
    /// `@path` could not be read.
    #[error("cannot read task-id file {path}: {message}")]
    ReadFile { path: String, message: String },
    /// `@path` exists but lists no ids.
    #[error("task-id file {path} lists no task ids")]
    EmptyFile { path: String },
    /// An `@other` reference inside a task-id file; files do not nest, so they cannot loop.
    #[error("{token:?}: a task-id file cannot refer to another file")]
    NestedFile { token: String },
    /// A problem on one line of an `@path` file.
    #[error("{path}:{line}: {error}")]
    InFile {
        path: String,
        line: usize,
        error: Box<TaskSpecError>,
    },
}

fn describe_total(total: u64) -> String {
    match total {
        0 => "the sweep has no tasks".into(),
        1 => "the sweep has 1 task".into(),
        n => format!("the sweep has {n} tasks (1-{n})"),
    }
}

/// Parses a task selection: comma-separated ids (`7` or `task_007`), inclusive ranges (`5-8`,
/// `task_005-task_008`) and `@path` items, whitespace around items and around `-` tolerated.
///
/// `@path` reads ids from a file through `read_file`: ids and ranges separated by commas,
/// whitespace or newlines, `#` starting a comment to the end of the line; its errors name
/// `path:line`, and it may not refer to further files.
///
/// `total` is the number of tasks in the sweep; ids above it are errors. The result is sorted with
/// duplicates removed. Empty selections, `0`, reversed ranges (`8-5`) and anything else that is
/// not an id are errors naming the offending text.
pub fn parse_task_ids(
    spec: &str,
    total: u64,
    read_file: &dyn Fn(&str) -> std::io::Result<String>,
) -> Result<Vec<u64>, TaskSpecError> {
    if spec.trim().is_empty() {
        return Err(TaskSpecError::Empty);
    }
    let mut ranges = Vec::new();
    for item in spec.split(',') {
        let item = item.trim();
        if item.is_empty() {
            return Err(TaskSpecError::EmptyItem {
                spec: spec.to_string(),
            });
        }
        match item.strip_prefix('@') {
            Some(path) => ranges.extend(parse_file(path.trim(), total, read_file)?),
            None => ranges.push(parse_item(item, total)?),
        }
    }
    expand(ranges)
}

fn parse_file(
    path: &str,
    total: u64,
    read_file: &dyn Fn(&str) -> std::io::Result<String>,
) -> Result<Vec<(u64, u64)>, TaskSpecError> {
    if path.is_empty() {
        return Err(TaskSpecError::Invalid { token: "@".into() });
    }
    let content = read_file(path).map_err(|e| TaskSpecError::ReadFile {
        path: path.to_string(),
        message: e.to_string(),
    })?;
    let mut ranges = Vec::new();
    for (line_idx, line) in content.lines().enumerate() {
        let without_comment = line.split('#').next().unwrap_or("");
        let tokens = without_comment
            .split(|c: char| c == ',' || c.is_whitespace())
            .filter(|token| !token.is_empty());
        for token in tokens {
            let in_file = |error| TaskSpecError::InFile {
                path: path.to_string(),
                line: line_idx + 1,
                error: Box::new(error),
            };
            if token.starts_with('@') {
                return Err(in_file(TaskSpecError::NestedFile {
                    token: token.to_string(),
                }));
            }
            ranges.push(parse_item(token, total).map_err(in_file)?);
        }
    }
    if ranges.is_empty() {
        return Err(TaskSpecError::EmptyFile {
            path: path.to_string(),
        });
    }
    Ok(ranges)
}

/// One id or range as an inclusive `(start, end)`, checked against `total`.
fn parse_item(token: &str, total: u64) -> Result<(u64, u64), TaskSpecError> {
    let (start, end) = match token.split_once('-') {
        Some((start, end)) => (
            parse_id(start.trim(), token, total)?,
            parse_id(end.trim(), token, total)?,
        ),
        None => {
            let id = parse_id(token, token, total)?;
            (id, id)
        }
    };
    if start > end {
        return Err(TaskSpecError::Reversed {
            token: token.to_string(),
            start,
            end,
        });
    }
    if end > total {
        return Err(TaskSpecError::OutOfRange {
            id: end.to_string(),
            total,
        });
    }
    Ok((start, end))
}

/// `7` or `task_007`; `token` is the whole item, for error messages.
fn parse_id(text: &str, token: &str, total: u64) -> Result<u64, TaskSpecError> {
    let digits = text.strip_prefix("task_").unwrap_or(text);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(TaskSpecError::Invalid {
            token: token.to_string(),
        });
    }
    match digits.parse::<u64>() {
        Ok(0) => Err(TaskSpecError::Zero {
            token: token.to_string(),
        }),
        Ok(id) => Ok(id),
        // All digits, so the only failure is overflow: an id no sweep can have.
        Err(_) => Err(TaskSpecError::OutOfRange {
            id: digits.trim_start_matches('0').to_string(),
            total,
        }),
    }
}

/// Merges overlapping ranges, then lists their ids: memory follows the size of the answer, which
/// is bounded by `MAX_SELECTED`.
fn expand(mut ranges: Vec<(u64, u64)>) -> Result<Vec<u64>, TaskSpecError> {
    ranges.sort_unstable();
    let mut merged: Vec<(u64, u64)> = Vec::with_capacity(ranges.len());
    for (start, end) in ranges {
        match merged.last_mut() {
            Some((_, last_end)) if start <= last_end.saturating_add(1) => {
                *last_end = (*last_end).max(end);
            }
            _ => merged.push((start, end)),
        }
    }
    let count = merged
        .iter()
        .fold(0u64, |n, (start, end)| n.saturating_add(end - start + 1));
    if count > MAX_SELECTED {
        return Err(TaskSpecError::TooMany {
            count,
            limit: MAX_SELECTED,
        });
    }
    let mut ids = Vec::with_capacity(count as usize);
    for (start, end) in merged {
        ids.extend(start..=end);
    }
    Ok(ids)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io;

    fn no_files(path: &str) -> io::Result<String> {
        Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!("no such file: {path}"),
        ))
    }

    fn parse(spec: &str, total: u64) -> Result<Vec<u64>, TaskSpecError> {
        parse_task_ids(spec, total, &no_files)
    }

    fn with_file(spec: &str, total: u64, content: &str) -> Result<Vec<u64>, TaskSpecError> {
        let content = content.to_string();
        parse_task_ids(spec, total, &move |path: &str| {
            if path == "ids.txt" {
                Ok(content.clone())
            } else {
                no_files(path)
            }
        })
    }

    #[test]
    fn ids_and_ranges() {
        assert_eq!(parse("1,5-8", 10), Ok(vec![1, 5, 6, 7, 8]));
        assert_eq!(parse("3", 3), Ok(vec![3]));
        assert_eq!(parse("4-4", 10), Ok(vec![4]));
        assert_eq!(parse(" 2 , 7 - 9 ", 10), Ok(vec![2, 7, 8, 9]));
        assert_eq!(parse("task_007,task_002-task_003", 10), Ok(vec![2, 3, 7]));
        assert_eq!(parse("task_005-6", 10), Ok(vec![5, 6]));
        assert_eq!(parse("007", 10), Ok(vec![7]));
    }

    #[test]
    fn sorted_without_duplicates() {
        assert_eq!(
            parse("8,1,5-8,6,2-3,3,1", 10),
            Ok(vec![1, 2, 3, 5, 6, 7, 8])
        );
        assert_eq!(parse("1-5,3-7,8-9", 10), Ok((1..=9).collect()));
    }

    #[test]
    fn file_with_comments_and_mixed_separators() {
        let content = "# tasks that failed\n1, 2\n5-7  # the bad batch\n\n task_010\t3\n2\n";
        assert_eq!(
            with_file("@ids.txt", 10, content),
            Ok(vec![1, 2, 3, 5, 6, 7, 10])
        );
        assert_eq!(with_file("9,@ ids.txt", 10, "4"), Ok(vec![4, 9]));
    }

    #[test]
    fn file_errors_name_the_line() {
        let err = with_file("@ids.txt", 10, "1\n2\n3 oops\n").unwrap_err();
        assert_eq!(
            err,
            TaskSpecError::InFile {
                path: "ids.txt".into(),
                line: 3,
                error: Box::new(TaskSpecError::Invalid {
                    token: "oops".into()
                }),
            }
        );
        assert!(err
            .to_string()
            .starts_with("ids.txt:3: \"oops\" is not a task id"));

        let err = with_file("@ids.txt", 10, "# header\n11\n").unwrap_err();
        assert_eq!(
            err.to_string(),
            "ids.txt:2: task 11 does not exist: the sweep has 10 tasks (1-10)"
        );
        assert_eq!(
            with_file("@ids.txt", 10, "1\n@ids.txt\n"),
            Err(TaskSpecError::InFile {
                path: "ids.txt".into(),
                line: 2,
                error: Box::new(TaskSpecError::NestedFile {
                    token: "@ids.txt".into()
                }),
            })
        );
        assert_eq!(
            with_file("@ids.txt", 10, "# nothing\n\n"),
            Err(TaskSpecError::EmptyFile {
                path: "ids.txt".into()
            })
        );
    }

    #[test]
    fn unreadable_file() {
        let err = parse("@missing.txt", 10).unwrap_err();
        assert_eq!(
            err,
            TaskSpecError::ReadFile {
                path: "missing.txt".into(),
                message: "no such file: missing.txt".into(),
            }
        );
        assert_eq!(
            err.to_string(),
            "cannot read task-id file missing.txt: no such file: missing.txt"
        );
        assert_eq!(
            parse("@", 10),
            Err(TaskSpecError::Invalid { token: "@".into() })
        );
    }

    #[test]
    fn errors_name_the_offending_text() {
        assert_eq!(parse("", 10), Err(TaskSpecError::Empty));
        assert_eq!(parse("  ", 10), Err(TaskSpecError::Empty));
        assert_eq!(
            parse("1,,2", 10),
            Err(TaskSpecError::EmptyItem {
                spec: "1,,2".into()
            })
        );
        assert_eq!(
            parse("1,", 10),
            Err(TaskSpecError::EmptyItem { spec: "1,".into() })
        );
        assert_eq!(
            parse("0", 10),
            Err(TaskSpecError::Zero { token: "0".into() })
        );
        assert_eq!(
            parse("0-3", 10),
            Err(TaskSpecError::Zero {
                token: "0-3".into()
            })
        );
        assert_eq!(
            parse("task_000", 10),
            Err(TaskSpecError::Zero {
                token: "task_000".into()
            })
        );
        let reversed = parse("8-5", 10).unwrap_err();
        assert_eq!(
            reversed,
            TaskSpecError::Reversed {
                token: "8-5".into(),
                start: 8,
                end: 5
            }
        );
        assert_eq!(reversed.to_string(), "reversed range \"8-5\": write 5-8");
        for garbage in [
            "abc", "1.5", "-3", "3-", "1--2", "1-2-3", "task_", "task_x", "1 2", "+1", "٣",
        ] {
            assert_eq!(
                parse(&format!("1,{garbage}"), 10),
                Err(TaskSpecError::Invalid {
                    token: garbage.into()
                }),
                "{garbage}"
            );
        }
    }

    #[test]
    fn ids_beyond_the_sweep() {
        let err = parse("11", 10).unwrap_err();
        assert_eq!(
            err,
            TaskSpecError::OutOfRange {
                id: "11".into(),
                total: 10
            }
        );
        assert_eq!(
            err.to_string(),
            "task 11 does not exist: the sweep has 10 tasks (1-10)"
        );
        assert_eq!(
            parse("5-20", 10),
            Err(TaskSpecError::OutOfRange {
                id: "20".into(),
                total: 10
            })
        );
        assert_eq!(
            parse("1", 0).unwrap_err().to_string(),
            "task 1 does not exist: the sweep has no tasks"
        );
        assert_eq!(
            parse("2", 1).unwrap_err().to_string(),
            "task 2 does not exist: the sweep has 1 task"
        );
        assert_eq!(
            parse("99999999999999999999999", 10),
            Err(TaskSpecError::OutOfRange {
                id: "99999999999999999999999".into(),
                total: 10
            })
        );
    }

    #[test]
    fn huge_ranges_are_bounded() {
        // Bounded by total: fails before allocating anything.
        assert!(matches!(
            parse("1-18446744073709551615", 10),
            Err(TaskSpecError::OutOfRange { .. })
        ));
        // A caller with an absurd total still cannot make us allocate the range.
        assert_eq!(
            parse("1-18446744073709551615", u64::MAX),
            Err(TaskSpecError::TooMany {
                count: u64::MAX,
                limit: MAX_SELECTED
            })
        );
        assert_eq!(
            parse("1-10000000,10000001", u64::MAX),
            Err(TaskSpecError::TooMany {
                count: 10_000_001,
                limit: MAX_SELECTED
            })
        );
        // Overlaps are counted once.
        assert_eq!(
            parse("1-1000,500-1500", 2000).map(|ids| ids.len()),
            Ok(1500)
        );
    }
}

//! Which per-task files a sweep keeps: the full layout (every task's directory with
//! `params.yaml`, `command.txt`, `status.yaml` and its logs) or the compact one for big sweeps
//! (no per-task views; a task's directory only when it leaves output or results), and how the
//! sweep file's `layout:` chooses between them.

/// The per-task files of a sweep, recorded in its `sweep.db` (`meta.layout`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TaskLayout {
    /// Every task's directory with `params.yaml`, `command.txt`, `status.yaml`, `stdout.log`,
    /// `stderr.log` and `results/`: seven inodes a task.
    #[default]
    Full,
    /// Params, command and status only in `sweep.db` (and the `task_mapping.yaml` view); a task
    /// directory only while the task runs (a local task needs somewhere to write) and afterwards
    /// only when it printed something or left results. A silent task leaves no file behind.
    Compact,
}

/// What the sweep file's `layout:` asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LayoutChoice {
    /// Compact above [`COMPACT_ABOVE`] tasks, full otherwise (also when `layout:` is absent).
    #[default]
    Auto,
    Full,
    Compact,
}

/// `layout: auto` makes sweeps of more tasks than this compact. At 10,000 tasks the full layout
/// is 70,000 files (7% of a common 1,000,000-inode cluster quota, and `rm -rf` of them slows the
/// next sweep's file creation on ext4); past it a person reads tasks through `sweep results`,
/// `sweep logs` and the report rather than by opening task directories, and the per-task views
/// cost more coordinator time than they give (docs/benchmarks.md measures both layouts).
pub const COMPACT_ABOVE: u64 = 10_000;

impl TaskLayout {
    pub fn as_str(self) -> &'static str {
        match self {
            TaskLayout::Full => "full",
            TaskLayout::Compact => "compact",
        }
    }

    /// A layout recorded in `sweep.db`; anything else (a sweep from before layouts were
    /// recorded) is the full layout, the only one there was.
    pub fn recorded(text: Option<&str>) -> TaskLayout {
        match text {
            Some("compact") => TaskLayout::Compact,
            _ => TaskLayout::Full,
        }
    }

    pub fn is_compact(self) -> bool {
        self == TaskLayout::Compact
    }
}

impl LayoutChoice {
    /// The words `layout:` accepts.
    pub const WORDS: [&'static str; 3] = ["auto", "full", "compact"];

    pub fn parse(word: &str) -> Option<LayoutChoice> {
        match word {
            "auto" => Some(LayoutChoice::Auto),
            "full" => Some(LayoutChoice::Full),
            "compact" => Some(LayoutChoice::Compact),
            _ => None,
        }
    }

    /// The layout of a sweep of `total` tasks, and whether `auto` chose it.
    pub fn decide(self, total: u64) -> (TaskLayout, bool) {
        match self {
            LayoutChoice::Full => (TaskLayout::Full, false),
            LayoutChoice::Compact => (TaskLayout::Compact, false),
            LayoutChoice::Auto if total > COMPACT_ABOVE => (TaskLayout::Compact, true),
            LayoutChoice::Auto => (TaskLayout::Full, true),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_is_compact_only_past_the_threshold_and_a_choice_is_kept() {
        let auto = LayoutChoice::Auto;
        assert_eq!(auto.decide(1), (TaskLayout::Full, true));
        assert_eq!(auto.decide(COMPACT_ABOVE), (TaskLayout::Full, true));
        assert_eq!(auto.decide(COMPACT_ABOVE + 1), (TaskLayout::Compact, true));
        assert_eq!(
            LayoutChoice::Full.decide(1_000_000),
            (TaskLayout::Full, false)
        );
        assert_eq!(
            LayoutChoice::Compact.decide(1),
            (TaskLayout::Compact, false)
        );
    }

    #[test]
    fn words_round_trip_and_unknown_records_read_as_full() {
        for word in LayoutChoice::WORDS {
            assert!(LayoutChoice::parse(word).is_some());
        }
        assert_eq!(LayoutChoice::parse("Compact"), None);
        for layout in [TaskLayout::Full, TaskLayout::Compact] {
            assert_eq!(TaskLayout::recorded(Some(layout.as_str())), layout);
        }
        assert_eq!(TaskLayout::recorded(None), TaskLayout::Full);
        assert_eq!(TaskLayout::recorded(Some("tiny")), TaskLayout::Full);
    }
}

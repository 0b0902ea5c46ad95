//! `sweep run`, `sweep complete`, `sweep status` and `sweep cancel`: validate everything first
//! (exit 2, nothing created), then create or open the sweep's state and hand it to the engine.

use super::config_cmd::{display_path, load_config, load_sweep, resolve_sweep_path};
use super::launch::{check_command, launch_command, SweepSettings};
use super::{
    user_error, CancelArgs, CompleteArgs, ExecArgs, Global, RunArgs, StatusArgs, EXIT_FAILED,
    EXIT_INTERRUPTED, EXIT_OK,
};
use crate::actors::local::kill_orphans;
use crate::actors::sweep::{now_ms, RunContext, RunSummary, SourceSpec, SourceSpecKind};
use crate::config::{self, ProjectConfig, SourceKind};
use crate::core::command::{build_argv, LaunchContext};
use crate::core::plan::{plan_completion, CompletionRequest, RecordedTask};
use crate::core::state::{Change, Counts, Strategy, SweepCore, TaskState, TaskStatus};
use crate::core::stats::source_stats;
use crate::core::taskspec::parse_task_ids;
use crate::core::value::{params_hash, task_width, Params};
use crate::engine;
use crate::layout::{self, SweepPaths};
use crate::progress::{Progress, ProgressMode};
use crate::store::{NewTask, Store};
use crate::yaml::emit_json;
use anyhow::Context as _;
use serde_json::json;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::Duration;

mod cancel;
mod complete;
mod dry_run;
mod locate;
mod plan;
mod run;
mod status;

pub use cancel::cancel;
pub use complete::complete;
use dry_run::*;
use locate::*;
pub(super) use locate::{is_active, list_sweeps, open_store, resolve_sweep};
pub use plan::MAX_TASKS;
use plan::*;
pub use run::run;
use run::*;
pub use status::status;

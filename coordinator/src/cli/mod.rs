//! The `hsm-coordinator` command line: argument definitions, exit codes, and dispatch to the
//! command implementations.

mod agent_cmd;
mod clean;
mod config_cmd;
mod deploy;
mod deploy_plan;
mod errors_cmd;
mod launch;
mod list_cmd;
mod logs_cmd;
mod report_cmd;
mod results_cmd;
mod source_stats;
mod sweep_cmd;
mod v1_import;
mod watch_cmd;

use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;

/// The documented exit codes (README: Exit codes).
pub const EXIT_OK: i32 = 0;
/// The sweep finished with failed or cancelled tasks (or an operation failed at run time).
pub const EXIT_FAILED: i32 = 1;
/// Invalid usage, config or sweep file; nothing was started.
pub const EXIT_USAGE: i32 = 2;
pub const EXIT_INTERRUPTED: i32 = 130;

/// A problem with what the user gave us (flags, config, sweep file): exit code 2.
#[derive(Debug)]
pub struct UserError(pub String);

impl std::fmt::Display for UserError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UserError {}

/// Shorthand for returning a `UserError`.
pub fn user_error(message: impl Into<String>) -> anyhow::Error {
    anyhow::Error::new(UserError(message.into()))
}

#[derive(Parser, Debug)]
#[command(
    name = "hsm-coordinator",
    version,
    about = "Run parameter sweeps locally, on remote hosts and on HPC clusters",
    long_about = None
)]
pub struct Cli {
    /// Project directory (default: the current directory).
    #[arg(short = 'C', long = "directory", global = true, value_name = "DIR")]
    pub directory: Option<PathBuf>,
    /// Project config file (default: .hsm/config.yaml, sweeps/hsm_config.yaml or hsm_config.yaml).
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// More log output (-v info, -vv debug).
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    /// Quiet: no progress display or notes; still prints the sweep id, the summary line and
    /// errors.
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    pub quiet: bool,
    #[command(subcommand)]
    pub command: Command,
}

// Parsed once per process: the size difference between subcommands does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Write .hsm/config.yaml and sweeps/sweep.yaml from what is detected here.
    Init(InitArgs),
    /// Show or validate the project config.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Run, complete, inspect and cancel sweeps.
    #[command(subcommand)]
    Sweep(SweepCommand),
    /// Manage the agents this project runs tasks on.
    #[command(subcommand)]
    Agent(AgentCommand),
    /// Follow and look at sweeps from any terminal (aliases: `monitor watch|recent|errors`
    /// = `sweep watch|list|errors`).
    #[command(subcommand)]
    Monitor(MonitorCommand),
    /// Print this coordinator's fingerprint (authorize it on agents with `hsm-agent authorize`).
    Identity,
    /// Print a shell completion script, e.g. `hsm-coordinator completions bash >
    /// ~/.local/share/bash-completion/completions/hsm-coordinator`.
    Completions {
        /// The shell to complete in.
        shell: clap_complete::Shell,
    },
}

#[derive(Subcommand, Debug)]
pub enum AgentCommand {
    /// Install, authorize and start an agent on a host you can ssh to, and add it to the
    /// project config (again: upgrades it, or changes nothing when it is up to date).
    #[command(after_help = "Examples:\n  \
        hsm-coordinator agent deploy gpu1 me@gpu1.lab\n  \
        hsm-coordinator agent deploy cluster login1 --project-dir /scratch/me/proj --backend slurm\n\n\
        Uses your ssh (~/.ssh/config, ProxyJump, keys); one authentication per deploy.")]
    Deploy(AgentDeployArgs),
    /// Whether an agent's daemon runs (pid, version, uptime, tasks held), asked over ssh.
    Status {
        /// The agent source's name (deployed with `agent deploy`).
        name: String,
        /// Where the agent binary is on the host (default: ~/.local/bin/hsm-agent).
        #[arg(long, value_name = "PATH")]
        remote_bin: Option<String>,
        #[command(flatten)]
        ssh: SshArgs,
    },
    /// Print an agent daemon's log (its serve.log), over ssh.
    Logs {
        /// The agent source's name (deployed with `agent deploy`).
        name: String,
        /// Keep printing what it writes (until Ctrl-C).
        #[arg(short, long)]
        follow: bool,
        /// Print this many of the last lines first.
        #[arg(short = 'n', long, default_value_t = 100, value_name = "N")]
        lines: u32,
        /// Where the agent binary is on the host (default: ~/.local/bin/hsm-agent).
        #[arg(long, value_name = "PATH")]
        remote_bin: Option<String>,
        #[command(flatten)]
        ssh: SshArgs,
    },
    /// Stop an agent's daemon over ssh (its ledger keeps its tasks for the next start).
    Stop {
        /// The agent source's name (deployed with `agent deploy`).
        name: String,
        /// Where the agent binary is on the host (default: ~/.local/bin/hsm-agent).
        #[arg(long, value_name = "PATH")]
        remote_bin: Option<String>,
        #[command(flatten)]
        ssh: SshArgs,
    },
    /// Add (or update) an agent source in the project config, pinned to its fingerprint.
    #[command(after_help = "Examples:\n  \
        hsm-coordinator agent add gpu1 gpu1.lab:7300 --fingerprint sha256:... --project-dir /home/me/proj\n  \
        hsm-coordinator agent add cluster login1:7300 --fingerprint sha256:... --project-dir /scratch/me/proj --backend slurm")]
    Add(AgentAddArgs),
    /// Remove an agent source from the project config (the rest of the file is kept as written).
    Remove {
        /// The agent source's name.
        name: String,
    },
    /// List the agent sources of the project config.
    List {
        /// Also connect to each agent and say whether it answers.
        #[arg(long)]
        check: bool,
    },
    /// Remove, on an agent, the task directories and logs of this project's sweeps whose results
    /// this coordinator holds, and make the agent forget them.
    #[command(after_help = "Examples:\n  \
        hsm-coordinator agent clean gpu1 --dry-run        # what would go\n  \
        hsm-coordinator agent clean gpu1 --older-than 30d\n  \
        hsm-coordinator agent clean gpu1 --sweep sweep_20261128_180516\n\n\
        A sweep is removed only when every task that ran there has ended and its files are here,\n\
        no coordinator runs it, and the agent holds nothing of it unreported.")]
    Clean(AgentCleanArgs),
    /// Connect to an agent (mutual TLS, protocol handshake), measure a round trip, show its health.
    Ping {
        /// The agent source's name (as in `agent list`).
        name: String,
        /// Give up after this long.
        #[arg(long, default_value = "10s", value_name = "DURATION")]
        timeout: String,
    },
}

#[derive(Args, Debug)]
pub struct AgentCleanArgs {
    /// The agent source's name (as in `agent list`).
    pub name: String,
    /// Only this sweep (repeatable); refused unless this coordinator holds its results.
    #[arg(long, value_name = "ID")]
    pub sweep: Vec<String>,
    /// Only sweeps whose last activity on the agent is at least this old, e.g. 30d, 12h.
    #[arg(long, value_name = "DURATION")]
    pub older_than: Option<String>,
    /// Say what would be removed; remove nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Give up after this long (connecting, and the agent deleting the files).
    #[arg(long, default_value = "10m", value_name = "DURATION")]
    pub timeout: String,
}

/// How to run `ssh` (besides `~/.ssh/config`).
#[derive(Args, Debug, Clone, Default)]
pub struct SshArgs {
    /// An ssh config file to use instead of ~/.ssh/config (`ssh -F`).
    #[arg(long, value_name = "FILE")]
    pub ssh_config: Option<PathBuf>,
    /// An option for ssh, as in ssh_config (`ssh -o`), e.g. `Port=2222`; repeatable.
    #[arg(long, value_name = "KEY=VALUE")]
    pub ssh_option: Vec<String>,
}

#[derive(Args, Debug)]
pub struct AgentDeployArgs {
    /// Source name used with `--sources`.
    pub name: String,
    /// Where to install it: `[USER@]HOST` or a Host of your ssh config, as you would give ssh.
    pub destination: String,
    /// The agent binary to copy (default: one for the host's platform beside this program).
    #[arg(long, value_name = "PATH")]
    pub agent_binary: Option<PathBuf>,
    /// Where the binary goes on the host (relative: under the remote home).
    #[arg(long, value_name = "PATH", default_value = "~/.local/bin/hsm-agent")]
    pub remote_bin: Option<String>,
    /// UDP port the agent listens on (all interfaces).
    #[arg(long, default_value_t = 7300, value_name = "PORT")]
    pub port: u16,
    /// HOST:PORT this coordinator reaches the agent at (default: the host ssh connects to and
    /// --port).
    #[arg(long, value_name = "HOST:PORT")]
    pub address: Option<String>,
    /// Where the project lives on the host (default: the config's, else this project's path
    /// relative to your home, under the remote home).
    #[arg(long, value_name = "DIR")]
    pub project_dir: Option<String>,
    /// Tasks at once on this agent (default for a new source: the host's CPU count).
    #[arg(long, value_name = "N")]
    pub slots: Option<usize>,
    /// How the agent runs tasks (see `agent add --backend`).
    #[arg(long, value_name = "BACKEND", value_parser = ["process", "slurm", "pbs", "sge", "auto"])]
    pub backend: Option<String>,
    /// The interpreter its tasks run with on that host (stored as the source's `python:`;
    /// default `python3` on the host's PATH), e.g. ~/venvs/torch/bin/python.
    #[arg(long, value_name = "PROGRAM")]
    pub python: Option<String>,
    /// Restart a running agent for an upgrade even when it holds tasks (its ledger keeps
    /// them: queued ones wait for the new daemon; running ones are ended and run again as new
    /// attempts).
    #[arg(long)]
    pub restart: bool,
    /// Start the daemon with this `hsm-agent serve --ledger-retention` (e.g. 7d, or off): how
    /// long a sweep whose coordinator never came back for its results is kept. Applies when
    /// deploy starts or restarts the daemon (default there: 30d).
    #[arg(long, value_name = "DURATION")]
    pub ledger_retention: Option<String>,
    /// Where the agent keeps task directories on the host (absolute or ~/DIR; stored as the
    /// source's `work_dir`; default: the source's `work_dir`, else `defaults.work_dir`, else
    /// the agent's <state-dir>/work).
    #[arg(long, value_name = "DIR")]
    pub work_dir: Option<String>,
    #[command(flatten)]
    pub ssh: SshArgs,
}

#[derive(Args, Debug)]
pub struct AgentAddArgs {
    /// Source name used with `--sources`.
    pub name: String,
    /// HOST:PORT where `hsm-agent serve` listens.
    pub address: String,
    /// The agent's `hsm-agent fingerprint` (sha256:...).
    #[arg(long)]
    pub fingerprint: String,
    /// Tasks at once on this agent (default: what the agent reports).
    #[arg(long)]
    pub slots: Option<usize>,
    /// Where the project lives on the agent's host (tasks run there). Required for a new agent.
    #[arg(long, value_name = "DIR")]
    pub project_dir: Option<String>,
    /// How the agent runs tasks: as processes, or as Slurm/PBS/Grid Engine job arrays (auto:
    /// Slurm if its host has sbatch, else PBS or Grid Engine by its qstat).
    #[arg(long, value_name = "BACKEND", value_parser = ["process", "slurm", "pbs", "sge", "auto"])]
    pub backend: Option<String>,
    /// The interpreter on the agent's host (default: python3 on its PATH).
    #[arg(long, value_name = "PROGRAM")]
    pub python: Option<String>,
}

#[derive(Args, Debug)]
pub struct InitArgs {
    /// Overwrite existing files.
    #[arg(long)]
    pub force: bool,
}

#[derive(Subcommand, Debug)]
pub enum ConfigCommand {
    /// Print the resolved config (defaults filled in).
    Show,
    /// Check the config and a sweep file; report every problem (exit 2 if any).
    Validate {
        /// Sweep file (default: sweeps/sweep.yaml when it exists).
        sweep_file: Option<PathBuf>,
        /// Also check on each agent's host that the project directory, the script and the
        /// interpreter are there and disk is free (what a sweep checks before its first task).
        #[arg(long)]
        remote: bool,
    },
}

#[derive(Subcommand, Debug)]
pub enum SweepCommand {
    /// Expand a sweep file into tasks and run them; blocks until done.
    #[command(after_help = "Examples:\n  \
        hsm-coordinator sweep run --dry-run            # every task's argv; starts nothing\n  \
        hsm-coordinator sweep run --parallel 4 --max-runs 10\n  \
        hsm-coordinator sweep run sweeps/lr.yaml --sources local,gpu1")]
    Run(RunArgs),
    /// Run what is missing, failed or cancelled in an existing sweep.
    #[command(after_help = "Examples:\n  \
        hsm-coordinator sweep complete                 # the latest sweep\n  \
        hsm-coordinator sweep complete sweep_20261128_180516 --task-ids 1,5-8,@failed.txt")]
    Complete(CompleteArgs),
    /// Show a sweep's counts per status (default: the latest sweep).
    Status(StatusArgs),
    /// Cancel a sweep running in another terminal (or mark an abandoned one cancelled).
    Cancel(CancelArgs),
    /// One row per task: params, status, duration, resources and last metric values.
    #[command(after_help = "Examples:\n  \
        hsm-coordinator sweep results --sort loss --top 3\n  \
        hsm-coordinator sweep results --where 'optimizer.lr>0.001' --columns optimizer.lr,loss\n  \
        hsm-coordinator sweep results --format csv > results.csv   # pandas.read_csv reads it\n\n\
        Metrics come from `HSM_METRIC name=value [step=N]` lines on a task's stdout,\n\
        results/metrics.json and results/metrics.jsonl.")]
    Results(ResultsArgs),
    /// Write a sweep's report: one self-contained HTML file (plots, best runs, errors,
    /// sources) that opens offline in any browser.
    #[command(after_help = "Examples:\n  \
        hsm-coordinator sweep report                   # the latest sweep: <sweep>/reports/report.html\n  \
        hsm-coordinator sweep report sweep_20261128_180516 -o /tmp/lr.html")]
    Report(ReportArgs),
    /// The project's sweeps, newest first: started, state, counts, sources, duration.
    List(ListArgs),
    /// A sweep's failed tasks grouped by cause (default: the latest sweep).
    #[command(after_help = "Examples:\n  \
        hsm-coordinator sweep errors                   # the latest sweep\n  \
        hsm-coordinator sweep errors sweep_20261128_180516 --json")]
    Errors(ErrorsArgs),
    /// Print a task's output log (stdout, or stderr with --stderr).
    #[command(after_help = "Examples:\n  \
        hsm-coordinator sweep logs sweep_20261128_180516 7 --stderr\n  \
        hsm-coordinator sweep logs sweep_20261128_180516 task_007 -f\n  \
        hsm-coordinator sweep logs sweep_20261128_180516 7 --attempt 1   # an earlier attempt")]
    Logs(LogsArgs),
    /// A live full-screen view of a sweep, from any terminal: progress and ETA, sources,
    /// running tasks with their last output line, the newest failures; ends with the sweep.
    #[command(after_help = "Examples:\n  \
        hsm-coordinator sweep watch                    # the latest sweep\n  \
        hsm-coordinator sweep watch sweep_20261128_180516 --interval 5\n  \
        hsm-coordinator sweep watch --once             # one snapshot, as text\n\n\
        q or Ctrl-C quits; the sweep goes on. Reads sweep.db only, so it never disturbs the run.")]
    Watch(WatchArgs),
}

#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResultsFormat {
    Table,
    Csv,
    Json,
    Jsonl,
}

#[derive(Args, Debug)]
pub struct ResultsArgs {
    /// The sweep: its id or its directory (default: the latest sweep).
    pub sweep_id: Option<String>,
    /// Output format.
    #[arg(long, value_enum, default_value = "table")]
    pub format: ResultsFormat,
    /// Sort by a metric, param or column; the direction defaults to lowest first, highest
    /// first for names like acc/accuracy/f1/auc/reward/score.
    #[arg(long, value_name = "NAME[:asc|desc]")]
    pub sort: Option<String>,
    /// Only the first N rows (after --where and --sort).
    #[arg(long, value_name = "N")]
    pub top: Option<usize>,
    /// Keep rows where NAME OP VALUE holds (OP: < <= > >= = !=); repeat to require several.
    #[arg(long = "where", value_name = "COND")]
    pub filter: Vec<String>,
    /// Only these columns, comma-separated (task always first).
    #[arg(long, value_delimiter = ',', value_name = "NAMES")]
    pub columns: Vec<String>,
}

#[derive(Subcommand, Debug)]
pub enum MonitorCommand {
    /// The project's recent sweeps (as `sweep list`).
    Recent(ListArgs),
    /// A sweep's failed tasks grouped by cause (as `sweep errors`).
    Errors(ErrorsArgs),
    /// The same as `sweep watch`.
    Watch(WatchArgs),
}

#[derive(Args, Debug)]
pub struct ListArgs {
    /// Every sweep of the project, not only the 20 most recent.
    #[arg(long)]
    pub all: bool,
    /// Machine-readable: each sweep with its counts, sources and duration.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct ErrorsArgs {
    /// The sweep: its id or its directory (default: the latest sweep).
    pub sweep_id: Option<String>,
    /// Machine-readable: each group's signature, count, example_tasks, shared_params and
    /// traceback.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct LogsArgs {
    /// The sweep: its id or its directory.
    pub sweep_id: String,
    /// The task: its number (7), padded (007) or its id (task_007).
    pub task: String,
    /// Print its stderr log instead of its stdout log.
    #[arg(long)]
    pub stderr: bool,
    /// Keep printing what the attempt writes until it ends.
    #[arg(short, long)]
    pub follow: bool,
    /// An earlier attempt's log (default: the current attempt).
    #[arg(long, value_name = "N")]
    pub attempt: Option<u32>,
}

#[derive(Args, Debug)]
pub struct WatchArgs {
    /// The sweep: its id or its directory (default: the latest sweep).
    pub sweep_id: Option<String>,
    /// Seconds between redraws (fractions allowed, e.g. 0.5).
    #[arg(long, default_value_t = 1.0, value_name = "SECS")]
    pub interval: f64,
    /// Print one snapshot as text and exit (what it does anyway when stdout is not a terminal).
    #[arg(long)]
    pub once: bool,
}

/// Options shared by `run` and `complete`.
#[derive(Args, Debug, Clone)]
pub struct ExecArgs {
    /// Compute sources to use, comma-separated (default: local).
    #[arg(long, value_delimiter = ',', value_name = "NAMES")]
    pub sources: Vec<String>,
    /// Tasks running at once on the local source (default: config defaults.parallel, else CPU count).
    #[arg(long, value_name = "N")]
    pub parallel: Option<i64>,
    /// Run at most the first N tasks.
    #[arg(long, value_name = "N", allow_hyphen_values = true)]
    pub max_runs: Option<i64>,
    /// Per-task time limit, e.g. 90s, 15m, 2h, 01:30:00.
    #[arg(long, value_name = "DURATION")]
    pub timeout: Option<String>,
    /// Automatic retries of a failed task.
    #[arg(long, value_name = "N")]
    pub retries: Option<u32>,
    /// round-robin, least-loaded or capacity.
    #[arg(long, value_name = "STRATEGY")]
    pub strategy: Option<String>,
    /// Show what would run (ids, parameters, exact argv) and start nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Machine-readable output (with --dry-run).
    #[arg(long)]
    pub json: bool,
    /// Slurm/PBS sources: wall-clock limit per task (overrides hpc.walltime), e.g. 4h, 01:30:00.
    #[arg(long, value_name = "DURATION")]
    pub walltime: Option<String>,
    /// Slurm/PBS sources: partition (overrides hpc.partition).
    #[arg(long, value_name = "NAME")]
    pub partition: Option<String>,
    /// Slurm/PBS sources: PBS queue (overrides hpc.queue).
    #[arg(long, value_name = "NAME")]
    pub queue: Option<String>,
    /// Slurm/PBS sources: account to charge (overrides hpc.account).
    #[arg(long, value_name = "NAME")]
    pub account: Option<String>,
    /// Slurm/PBS sources: quality of service (overrides hpc.qos).
    #[arg(long, value_name = "NAME")]
    pub qos: Option<String>,
    /// Slurm/PBS sources: at most N elements of each job array at once (`%N`).
    #[arg(long, value_name = "N")]
    pub array_throttle: Option<u32>,
    /// Agent sources whose copy of the project differs from this one (`sync: check`) get
    /// tasks anyway, with a warning naming the files.
    #[arg(long)]
    pub allow_remote_drift: bool,
}

#[derive(Args, Debug)]
pub struct RunArgs {
    /// Sweep file (default: sweeps/sweep.yaml of the project).
    pub sweep_file: Option<PathBuf>,
    #[command(flatten)]
    pub exec: ExecArgs,
    /// Print the number of tasks and exit.
    #[arg(long)]
    pub count_only: bool,
    /// W&B group passed as wandb.group (default: the sweep id).
    #[arg(long, value_name = "G")]
    pub group: Option<String>,
    /// Use this sweep id instead of sweep_YYYYMMDD_HHMMSS.
    #[arg(long, value_name = "ID")]
    pub sweep_id: Option<String>,
}

#[derive(Args, Debug)]
pub struct CompleteArgs {
    /// The sweep: its id (sweep_YYYYMMDD_HHMMSS) or its directory (default: the latest sweep).
    pub sweep_id: Option<String>,
    #[command(flatten)]
    pub exec: ExecArgs,
    /// Only these tasks (completed ones included): ids and ranges (1,5-8), task names, @file
    /// (ids separated by commas, spaces or newlines; `#` comments).
    #[arg(long, value_name = "SPEC")]
    pub task_ids: Option<String>,
    /// Leave failed tasks alone; run only missing and cancelled ones.
    #[arg(long)]
    pub no_retry_failed: bool,
}

#[derive(Args, Debug)]
pub struct StatusArgs {
    /// The sweep: its id or its directory (default: the latest sweep).
    pub sweep_id: Option<String>,
    /// List every task, not only the failed and running ones.
    #[arg(long)]
    pub all: bool,
    /// Machine-readable: counts and every task with status, attempt, source and job id.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct ReportArgs {
    /// The sweep: its id or its directory (default: the latest sweep).
    pub sweep_id: Option<String>,
    /// Where to write the report (default: reports/report.html in the sweep directory).
    #[arg(short, long, value_name = "FILE")]
    pub output: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct CancelArgs {
    /// The sweep to cancel: its id or its directory (default: the latest sweep).
    pub sweep_id: Option<String>,
}

/// Runs the parsed command and returns the process exit code.
pub fn run(cli: Cli) -> anyhow::Result<i32> {
    let needs_project = !matches!(
        cli.command,
        Command::Init(_) | Command::Identity | Command::Completions { .. }
    );
    let start = project_dir(cli.directory.as_deref())?;
    let is_init = matches!(cli.command, Command::Init(_));
    let project_dir = match find_project_root(&start).filter(|_| !is_init) {
        Some(root) => root,
        // `-C DIR` or `--config FILE` name the project; `init` makes one; `identity` needs none.
        None if !needs_project || cli.directory.is_some() || cli.config.is_some() => start,
        None => {
            return Err(user_error(format!(
                "not inside an hsm project: no .hsm/, hsm_config.yaml or sweeps/sweep.yaml in {} or any directory above it — run `hsm-coordinator init` in the project, or pass -C PROJECT_DIR",
                start.display()
            )))
        }
    };
    let global = Global {
        project_dir,
        config: cli.config.clone(),
        quiet: cli.quiet,
    };
    match cli.command {
        Command::Init(args) => config_cmd::init(&global, &args),
        Command::Config(ConfigCommand::Show) => config_cmd::show(&global),
        Command::Config(ConfigCommand::Validate { sweep_file, remote }) => {
            config_cmd::validate(&global, sweep_file.as_deref(), remote)
        }
        Command::Sweep(SweepCommand::Run(args)) => sweep_cmd::run(&global, &args),
        Command::Sweep(SweepCommand::Complete(args)) => sweep_cmd::complete(&global, &args),
        Command::Sweep(SweepCommand::Status(args)) => sweep_cmd::status(&global, &args),
        Command::Sweep(SweepCommand::Cancel(args)) => sweep_cmd::cancel(&global, &args),
        Command::Sweep(SweepCommand::Results(args)) => results_cmd::run(&global, &args),
        Command::Sweep(SweepCommand::Report(args)) => report_cmd::report(&global, &args),
        Command::Sweep(SweepCommand::List(args))
        | Command::Monitor(MonitorCommand::Recent(args)) => list_cmd::list(&global, &args),
        Command::Sweep(SweepCommand::Errors(args))
        | Command::Monitor(MonitorCommand::Errors(args)) => errors_cmd::errors(&global, &args),
        Command::Sweep(SweepCommand::Logs(args)) => logs_cmd::logs(&global, &args),
        Command::Sweep(SweepCommand::Watch(args))
        | Command::Monitor(MonitorCommand::Watch(args)) => watch_cmd::watch(&global, &args),
        Command::Agent(AgentCommand::Add(args)) => agent_cmd::add(&global, &args),
        Command::Agent(AgentCommand::Deploy(args)) => deploy::deploy(&global, &args),
        Command::Agent(AgentCommand::Status {
            name,
            remote_bin,
            ssh,
        }) => deploy::status(&global, &name, remote_bin.as_deref(), &ssh),
        Command::Agent(AgentCommand::Logs {
            name,
            follow,
            lines,
            remote_bin,
            ssh,
        }) => deploy::logs(&global, &name, follow, lines, remote_bin.as_deref(), &ssh),
        Command::Agent(AgentCommand::Stop {
            name,
            remote_bin,
            ssh,
        }) => deploy::stop(&global, &name, remote_bin.as_deref(), &ssh),
        Command::Agent(AgentCommand::Remove { name }) => agent_cmd::remove(&global, &name),
        Command::Agent(AgentCommand::Clean(args)) => clean::clean(&global, &args),
        Command::Agent(AgentCommand::List { check }) => agent_cmd::list(&global, check),
        Command::Agent(AgentCommand::Ping { name, timeout }) => {
            agent_cmd::ping(&global, &name, &timeout)
        }
        Command::Identity => agent_cmd::identity(),
        Command::Completions { shell } => {
            use clap::CommandFactory as _;
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "hsm-coordinator", &mut script);
            let mut script = String::from_utf8_lossy(&script).into_owned();
            if shell == clap_complete::Shell::Bash {
                script = fix_bash_completion(&script);
            }
            print!("{script}");
            Ok(EXIT_OK)
        }
    }
}

/// clap_complete's bash script for a program whose name has a hyphen names its subcommand
/// states `hsm__coordinator__subcmd__sweep` where it sets them but `hsm__subcmd__coordinator__…`
/// in the arms that complete them, so nothing after the first word completed (clap issue
/// #6421). One spelling for both.
fn fix_bash_completion(script: &str) -> String {
    script.replace("hsm__subcmd__coordinator", "hsm__coordinator")
}

/// Flags every command sees.
pub struct Global {
    pub project_dir: PathBuf,
    pub config: Option<PathBuf>,
    pub quiet: bool,
}

/// Markers of a project's root directory: the config in any place it is read from, or a sweep
/// file where `sweep run` looks for one.
const PROJECT_MARKERS: [&str; 4] = [
    ".hsm",
    "hsm_config.yaml",
    "sweeps/hsm_config.yaml",
    "sweeps/sweep.yaml",
];

/// The project root for a command started in `dir`: `dir` or the nearest directory above it
/// holding one of [`PROJECT_MARKERS`] (as git finds `.git`), so commands work from a
/// subdirectory. `None` when there is none.
pub fn find_project_root(dir: &std::path::Path) -> Option<PathBuf> {
    dir.ancestors()
        .find(|candidate| {
            PROJECT_MARKERS
                .iter()
                .any(|marker| candidate.join(marker).exists())
        })
        .map(|root| root.to_path_buf())
}

fn project_dir(dir: Option<&std::path::Path>) -> anyhow::Result<PathBuf> {
    let dir = dir.unwrap_or_else(|| std::path::Path::new("."));
    std::fs::canonicalize(dir).map_err(|e| {
        user_error(format!(
            "project directory {}: {e} — pass an existing directory with -C",
            dir.display()
        ))
    })
}

/// Maps an error to its exit code: `UserError` → 2, anything else → 1.
pub fn exit_code_of(error: &anyhow::Error) -> i32 {
    if error.downcast_ref::<UserError>().is_some() {
        EXIT_USAGE
    } else {
        EXIT_FAILED
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory as _;

    /// Every argument of every command, positional or flag, says what it is in `--help`.
    #[test]
    fn every_argument_is_described() {
        fn walk(command: &clap::Command, path: &str, missing: &mut Vec<String>) {
            for arg in command.get_arguments() {
                let id = arg.get_id().as_str();
                if id == "help" || id == "version" {
                    continue;
                }
                if arg.get_help().is_none() && arg.get_long_help().is_none() {
                    missing.push(format!("{path} {id}"));
                }
            }
            for sub in command.get_subcommands() {
                if sub.get_about().is_none() {
                    missing.push(format!("{path} {} (the command)", sub.get_name()));
                }
                walk(sub, &format!("{path} {}", sub.get_name()), missing);
            }
        }
        let mut missing = Vec::new();
        walk(&Cli::command(), "hsm-coordinator", &mut missing);
        assert!(missing.is_empty(), "undescribed: {missing:#?}");
    }
}

//! `hsm-agent`: the daemon that runs tasks for a coordinator on a remote host or login node.
//! `init`, `fingerprint` and `authorize` manage its identity and trusted coordinators; `serve`
//! runs the QUIC daemon (`--detach`: in the background, see `daemon.rs`); `status` and `stop`
//! look after a detached one; `relay` carries its datagrams over stdin/stdout
//! where UDP cannot reach.

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use hsm_agent::identity::{self, AuthorizedKeys, Identity};
use std::path::PathBuf;

#[derive(Parser, Debug)]
#[command(
    name = "hsm-agent",
    version,
    about = "hsm agent: runs sweep tasks for authorized hsm coordinators"
)]
struct AgentArgs {
    #[command(subcommand)]
    command: AgentCommand,
}

#[derive(Subcommand, Debug)]
enum AgentCommand {
    /// Create this agent's identity (a self-signed certificate, files 0600) in the state dir.
    Init(StateDirArgs),
    /// Print this agent's fingerprint (give it to `hsm-coordinator agent add --fingerprint`).
    Fingerprint(StateDirArgs),
    /// Allow a coordinator (its `hsm-coordinator identity` fingerprint) to use this agent.
    Authorize {
        /// `sha256:` followed by 64 hex digits.
        fingerprint: String,
        #[command(flatten)]
        state: StateDirArgs,
    },
    /// Run the daemon: accept authorized coordinators over QUIC.
    Serve(ServeArgs),
    /// Say whether a daemon serves the state dir: pid, version, uptime, tasks its ledger holds.
    Status(StateDirArgs),
    /// Stop the daemon serving the state dir (SIGTERM; its ledger keeps its tasks for the next
    /// start).
    Stop {
        #[command(flatten)]
        state: StateDirArgs,
        /// Give up waiting for it to exit after this many seconds.
        #[arg(long, default_value_t = 30, value_name = "SECONDS")]
        timeout: u64,
    },
    /// Carry QUIC datagrams between stdin/stdout and the local agent's UDP port (each a
    /// big-endian u16 length, then the bytes). Run by a coordinator over ssh (`transport: ssh`)
    /// where UDP cannot reach this host; exits when stdin closes.
    Relay {
        /// The agent's UDP address on this host (its `serve --listen` port).
        #[arg(long, value_name = "HOST:PORT")]
        to: String,
    },
}

#[derive(clap::Args, Debug)]
struct ServeArgs {
    /// UDP address to listen on: HOST:PORT, where HOST is an IP address or a name
    /// (`localhost:7300`; a name is resolved once, IPv4 first).
    #[arg(long, default_value = "0.0.0.0:7300", value_name = "HOST:PORT")]
    listen: String,
    #[command(flatten)]
    state: StateDirArgs,
    /// Where task directories live (default: <state-dir>/work).
    #[arg(long, value_name = "DIR")]
    work_dir: Option<PathBuf>,
    /// Tasks at once (default: CPU count).
    #[arg(long, value_name = "N")]
    slots: Option<u32>,
    /// Name reported to coordinators (default: the host name).
    #[arg(long)]
    name: Option<String>,
    /// Seconds between health reports.
    #[arg(long, default_value_t = 5, value_name = "SECONDS")]
    heartbeat: u64,
    /// Seconds between checks of Slurm/PBS jobs (one squeue/qstat call for all of them).
    #[arg(long, default_value_t = 10, value_name = "SECONDS")]
    poll: u64,
    /// Keep no ledger on disk: nothing this agent holds survives its restart (tasks it was
    /// running are then lost to the coordinator, which runs them again). For throwaway agents
    /// and for measuring what the ledger costs.
    #[arg(long)]
    no_ledger: bool,
    /// Keep each task's result files after the coordinator has them (default: deleted then).
    #[arg(long)]
    keep_results: bool,
    /// What happens to tasks while no coordinator is connected: `keep-running` (they finish and
    /// report when one connects again) or `cancel` (stopped after --coordinator-lost-after).
    /// Either way, tasks still queued wait for their sweep's coordinator to confirm them (it
    /// may have moved them elsewhere); with `keep-running` they start after
    /// --coordinator-lost-after without one.
    #[arg(long, value_enum, default_value_t = OnCoordinatorLost::KeepRunning, value_name = "WHAT")]
    on_coordinator_lost: OnCoordinatorLost,
    /// Seconds without a coordinator before tasks stop (`cancel`), or before queued tasks no
    /// coordinator confirmed start anyway (`keep-running`).
    #[arg(long, default_value_t = 3600, value_name = "SECONDS")]
    coordinator_lost_after: u64,
    /// Forget a sweep, removing its files, when it holds results or events that no coordinator
    /// came back for within this long (nothing of it running): 30d, 12h, a number of seconds,
    /// or `off`. A sweep whose coordinator took everything stays until `hsm-coordinator agent
    /// clean`.
    #[arg(long, default_value = "30d", value_name = "DURATION")]
    ledger_retention: String,
    /// Run in the background, in a session of its own (it survives the end of an SSH session):
    /// output appended to <state-dir>/serve.log, pid in <state-dir>/serve.pid. Returns once it
    /// listens.
    #[arg(long)]
    detach: bool,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum OnCoordinatorLost {
    KeepRunning,
    Cancel,
}

#[derive(clap::Args, Debug)]
struct StateDirArgs {
    /// Where the identity and authorized coordinators live (default: $HSM_AGENT_HOME, else
    /// $XDG_STATE_HOME/hsm-agent, else ~/.local/state/hsm-agent).
    #[arg(long, value_name = "DIR")]
    state_dir: Option<PathBuf>,
}

impl StateDirArgs {
    fn resolve(&self) -> anyhow::Result<PathBuf> {
        if let Some(dir) = &self.state_dir {
            return Ok(dir.clone());
        }
        default_state_dir()
    }
}

/// The state dir when no `--state-dir` is given.
fn default_state_dir() -> anyhow::Result<PathBuf> {
    if let Some(dir) = std::env::var_os("HSM_AGENT_HOME") {
        return Ok(PathBuf::from(dir));
    }
    if let Some(dir) = std::env::var_os("XDG_STATE_HOME") {
        return Ok(PathBuf::from(dir).join("hsm-agent"));
    }
    let home = std::env::var_os("HOME")
        .context("no --state-dir given and neither HSM_AGENT_HOME nor HOME is set")?;
    Ok(PathBuf::from(home).join(".local/state/hsm-agent"))
}

/// `--listen`: an IP address or a host name with a port; a name's IPv4 address first (a
/// coordinator given the same name usually dials that one).
fn resolve_listen(listen: &str) -> Result<std::net::SocketAddr, UsageError> {
    use std::net::ToSocketAddrs;
    if let Ok(addr) = listen.parse() {
        return Ok(addr);
    }
    let fail = |why: String| {
        UsageError(format!(
            "--listen {listen}: {why} — write HOST:PORT, e.g. 0.0.0.0:7300, localhost:7300 or [::]:7300"
        ))
    };
    if !listen.contains(':') {
        return Err(fail("no port".into()));
    }
    let addrs: Vec<std::net::SocketAddr> = listen
        .to_socket_addrs()
        .map_err(|e| fail(format!("cannot resolve it ({e})")))?
        .collect();
    addrs
        .iter()
        .find(|a| a.is_ipv4())
        .or(addrs.first())
        .copied()
        .ok_or_else(|| fail("it resolves to no address".into()))
}

/// A problem with what the user gave us: exit code 2.
#[derive(Debug)]
struct UsageError(String);

impl std::fmt::Display for UsageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

fn main() {
    let args = AgentArgs::parse();
    init_tracing();
    let code = match run(args) {
        Ok(()) => 0,
        Err(error) => {
            eprintln!("hsm-agent: {error:#}");
            if error.downcast_ref::<UsageError>().is_some() {
                2
            } else {
                1
            }
        }
    };
    std::process::exit(code);
}

/// Why `serve` could not start, in one sentence with its fix: the port taken, no identity yet,
/// or whatever else the chain says.
fn bind_error(
    e: &anyhow::Error,
    listen: std::net::SocketAddr,
    state_dir: &std::path::Path,
) -> anyhow::Error {
    let io_kind = e
        .chain()
        .find_map(|cause| cause.downcast_ref::<std::io::Error>())
        .map(std::io::Error::kind);
    let message = if io_kind == Some(std::io::ErrorKind::AddrInUse) {
        format!(
            "cannot listen on {listen}: the address is in use (another hsm-agent, or another program, listens there) — stop it or choose another --listen"
        )
    } else if let Some(in_use) = e
        .chain()
        .find_map(|cause| cause.downcast_ref::<hsm_agent::server::StateDirInUse>())
    {
        in_use.to_string()
    } else if io_kind == Some(std::io::ErrorKind::AddrNotAvailable) {
        format!("cannot listen on {listen}: no network interface of this host has that address — choose another --listen")
    } else if e.chain().any(|cause| {
        matches!(
            cause.downcast_ref::<identity::IdentityError>(),
            Some(identity::IdentityError::Missing { .. })
        )
    }) {
        format!(
            "{e:#} — run `hsm-agent init --state-dir {}` first",
            state_dir.display()
        )
    } else {
        format!("{e:#} (state dir {})", state_dir.display())
    };
    anyhow::Error::new(UsageError(message))
}

fn init_tracing() {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_env("HSM_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .with_target(false)
        .init();
}

fn run(args: AgentArgs) -> anyhow::Result<()> {
    match args.command {
        AgentCommand::Serve(serve_args) => return serve(serve_args),
        AgentCommand::Status(state) => {
            print!("{}", hsm_agent::daemon::status(&state.resolve()?).render());
        }
        AgentCommand::Stop { state, timeout } => {
            let dir = state.resolve()?;
            match hsm_agent::daemon::stop(&dir, std::time::Duration::from_secs(timeout))? {
                Some(pid) => println!("stopped hsm-agent serve (pid {pid})"),
                None => println!("no hsm-agent serve runs for {}", dir.display()),
            }
        }
        AgentCommand::Relay { to } => {
            let to = to.parse::<std::net::SocketAddr>().map_err(|_| {
                UsageError(format!(
                    "--to {to}: expected an IP address and port, e.g. 127.0.0.1:7300"
                ))
            })?;
            hsm_agent::relay::run(to).with_context(|| format!("relay to {to}"))?;
        }
        AgentCommand::Init(state) => {
            let dir = state.resolve()?;
            let (identity, created) = Identity::load_or_create(&dir, "hsm-agent")
                .with_context(|| format!("identity in {}", dir.display()))?;
            // `serve` would refuse it: say so now, with the fix.
            hsm_agent::strict::check_state_dir(&dir).map_err(|e| UsageError(e.to_string()))?;
            let fingerprint = identity::fingerprint(&identity.cert_der);
            if created {
                eprintln!("created an agent identity in {}", dir.display());
            } else {
                eprintln!("an agent identity already exists in {}", dir.display());
            }
            println!("{fingerprint}");
        }
        AgentCommand::Fingerprint(state) => {
            let dir = state.resolve()?;
            let identity = Identity::load(&dir).map_err(|e| {
                anyhow::Error::new(UsageError(format!(
                    "{e} — run `hsm-agent init --state-dir {}` first",
                    dir.display()
                )))
            })?;
            println!("{}", identity::fingerprint(&identity.cert_der));
        }
        AgentCommand::Authorize { fingerprint, state } => {
            let dir = state.resolve()?;
            let fingerprint = identity::parse_fingerprint(&fingerprint).map_err(|e| {
                anyhow::Error::new(UsageError(format!(
                    "{e} — the coordinator prints its fingerprint with `hsm-coordinator identity`"
                )))
            })?;
            let added = AuthorizedKeys::authorize(&dir, &fingerprint).map_err(|e| match e {
                identity::IdentityError::Unsafe(e) => anyhow::Error::new(UsageError(e.to_string())),
                e => anyhow::Error::new(e)
                    .context(format!("authorized coordinators in {}", dir.display())),
            })?;
            if added {
                eprintln!("authorized coordinator {fingerprint}");
            } else {
                eprintln!("coordinator {fingerprint} was already authorized");
            }
        }
    }
    Ok(())
}

fn serve(args: ServeArgs) -> anyhow::Result<()> {
    use hsm_agent::server::{host_name, ServeOptions, Server};
    let state_dir = args.state.resolve()?;
    let listen = resolve_listen(&args.listen)?;
    // Before anything is read from it: a state dir another user can change decides nothing.
    hsm_agent::strict::check_state_dir(&state_dir).map_err(|e| UsageError(e.to_string()))?;
    // Refusal hints name the state dir when `hsm-agent authorize` would not find it by itself.
    if default_state_dir().ok().as_deref() != Some(state_dir.as_path()) {
        hsm_agent::tls::set_authorize_state_dir(&state_dir);
    }
    if args.slots == Some(0) {
        return Err(UsageError("--slots: expected a positive number".into()).into());
    }
    if args.poll == 0 {
        return Err(UsageError("--poll: expected a positive number of seconds".into()).into());
    }
    if args.on_coordinator_lost == OnCoordinatorLost::Cancel && args.coordinator_lost_after == 0 {
        return Err(UsageError(
            "--coordinator-lost-after: expected a positive number of seconds".into(),
        )
        .into());
    }
    if args.heartbeat == 0 {
        return Err(UsageError("--heartbeat: expected a positive number of seconds".into()).into());
    }
    let ledger_retention = hsm_protocol::parse_retention(&args.ledger_retention)
        .map_err(|e| UsageError(format!("--ledger-retention: {e}")))?;
    let options = ServeOptions {
        listen,
        work_dir: args.work_dir.unwrap_or_else(|| state_dir.join("work")),
        state_dir: state_dir.clone(),
        slots: args
            .slots
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get() as u32)),
        name: args.name.unwrap_or_else(host_name),
        heartbeat_every: std::time::Duration::from_secs(args.heartbeat),
        scheduler_poll: std::time::Duration::from_secs(args.poll),
        transport: hsm_agent::tls::TransportOptions::default(),
        ledger: !args.no_ledger,
        keep_results: args.keep_results,
        cancel_when_alone: (args.on_coordinator_lost == OnCoordinatorLost::Cancel)
            .then(|| std::time::Duration::from_secs(args.coordinator_lost_after)),
        release_unconfirmed_after: (args.on_coordinator_lost == OnCoordinatorLost::KeepRunning)
            .then(|| std::time::Duration::from_secs(args.coordinator_lost_after)),
        ledger_retention,
    };
    if args.detach {
        // The same arguments without `--detach`, in a process of its own (see daemon.rs).
        let child_args: Vec<std::ffi::OsString> = std::env::args_os()
            .skip(1)
            .filter(|a| a != "--detach")
            .collect();
        let info = hsm_agent::daemon::spawn_detached(
            &state_dir,
            &child_args,
            std::time::Duration::from_secs(60),
        )?;
        println!("listening on {}", info.listen);
        println!("pid {}", info.pid);
        println!(
            "log {}",
            state_dir.join(hsm_agent::daemon::LOG_FILE).display()
        );
        return Ok(());
    }
    let detached = std::env::var_os(hsm_agent::daemon::DETACHED_ENV).is_some();
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    let pid_dir = state_dir.clone();
    let work_dir = options.work_dir.clone();
    let result = runtime.block_on(async move {
        let server = Server::bind(options).map_err(|e| bind_error(&e, listen, &state_dir))?;
        // Tests and scripts read these two lines; the address has the real port for `:0`.
        println!("listening on {}", server.local_addr()?);
        println!("fingerprint {}", server.fingerprint());
        if detached {
            hsm_agent::daemon::write_pid_file(
                &state_dir,
                &server.local_addr()?.to_string(),
                &work_dir,
            )?;
        }
        use std::io::Write as _;
        std::io::stdout().flush()?;
        let shutdown = async {
            let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending().await } } => {}
            }
        };
        server.run(shutdown).await
    });
    if detached {
        hsm_agent::daemon::remove_pid_file(&pid_dir);
    }
    result
}

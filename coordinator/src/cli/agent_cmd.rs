//! `identity`, `agent add`, `agent remove`, `agent list` and `agent ping`: this coordinator's
//! own identity and the agents it trusts (pinned by fingerprint in the project config).

use super::config_cmd::{display_path, load_config};
use super::{user_error, AgentAddArgs, Global, EXIT_FAILED, EXIT_OK, EXIT_USAGE};
use crate::config::{self, SourceKind};
use anyhow::Context as _;
use hsm_transport::identity;

use crate::home::coordinator_identity;

pub fn identity() -> anyhow::Result<i32> {
    let identity = coordinator_identity()?;
    println!("{}", identity::fingerprint(&identity.cert_der));
    Ok(EXIT_OK)
}

pub fn add(global: &Global, args: &AgentAddArgs) -> anyhow::Result<i32> {
    config::validate_source_name(&args.name)
        .map_err(|e| user_error(format!("agent name `{}`: {e}", args.name)))?;
    config::validate_address(&args.address)
        .map_err(|e| user_error(format!("address `{}`: {e}", args.address)))?;
    let fingerprint = identity::parse_fingerprint(&args.fingerprint).map_err(|e| {
        user_error(format!(
            "--fingerprint: {e} — the agent prints it with `hsm-agent fingerprint`"
        ))
    })?;
    if args.slots == Some(0) {
        return Err(user_error("--slots: expected a positive number"));
    }
    // Validate the current config first: never rewrite a file that has problems.
    let cfg = load_config(global)?;
    let existing = cfg.sources.get(&args.name).map(|s| &s.kind);
    let had_project_dir = matches!(
        existing,
        Some(SourceKind::Agent {
            project_dir: Some(_),
            ..
        })
    );
    if args.project_dir.is_none() && !had_project_dir {
        return Err(user_error(format!(
            "--project-dir DIR is needed: where the project lives on {}'s host (its tasks run there), e.g. \
             hsm-coordinator agent add {} {} --fingerprint {fingerprint} --project-dir /home/me/project",
            args.name, args.name, args.address
        )));
    }
    let path = cfg
        .file
        .clone()
        .unwrap_or_else(|| global.project_dir.join(".hsm").join("config.yaml"));
    let text = if path.exists() {
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?
    } else {
        String::new()
    };
    let entry = config::AgentEntry {
        address: &args.address,
        fingerprint: &fingerprint,
        slots: args.slots,
        project_dir: args.project_dir.as_deref(),
        backend: args.backend.as_deref(),
        python: args.python.as_deref(),
        ssh: None,
        ssh_options: None,
        work_dir: None,
        sync_default: None,
        transport_default: None,
    };
    let updated = config::set_agent_entry(&text, &args.name, &entry)
        .map_err(|e| user_error(format!("{}: {e}", display_path(global, &path))))?;
    write_config(&path, &updated)?;
    println!(
        "agent {} ({}, {fingerprint}) {} in {}",
        args.name,
        args.address,
        if existing.is_some() {
            "updated"
        } else {
            "added"
        },
        display_path(global, &path)
    );
    Ok(EXIT_OK)
}

pub(super) fn write_config(path: &std::path::Path, text: &str) -> anyhow::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    crate::layout::write_atomic(path, text.as_bytes())
        .with_context(|| format!("writing {}", path.display()))
}

pub fn remove(global: &Global, name: &str) -> anyhow::Result<i32> {
    let cfg = load_config(global)?;
    let Some(path) = cfg.file.clone() else {
        return Err(user_error(format!(
            "no agent `{name}`: there is no project config — `hsm-coordinator agent list` shows the agents"
        )));
    };
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let updated = config::remove_agent_source(&text, name).map_err(|e| {
        user_error(format!(
            "{}: {e} — `hsm-coordinator agent list` shows the agents",
            display_path(global, &path)
        ))
    })?;
    write_config(&path, &updated)?;
    println!("agent {name} removed from {}", display_path(global, &path));
    Ok(EXIT_OK)
}

pub fn list(global: &Global, check: bool) -> anyhow::Result<i32> {
    let cfg = load_config(global)?;
    let mut rows = Vec::new();
    let mut unreachable = 0;
    for (name, source) in &cfg.sources {
        if let SourceKind::Agent {
            address,
            fingerprint,
            slots,
            project_dir,
            backend,
            ..
        } = &source.kind
        {
            let mut row = vec![
                name.clone(),
                address.clone(),
                backend.to_string(),
                slots.map_or_else(|| "(agent's)".to_string(), |s| s.to_string()),
                project_dir.clone().unwrap_or_else(|| "-".into()),
                fingerprint.clone(),
            ];
            if check {
                let timeout = std::time::Duration::from_secs(5);
                row.push(match ping_agent(&cfg, name, timeout, Default::default()) {
                    Ok(_) => "ok".into(),
                    Err(e) => {
                        unreachable += 1;
                        format!("unreachable: {}", first_line(&format!("{e:#}")))
                    }
                });
            }
            rows.push(row);
        }
    }
    if rows.is_empty() {
        eprintln!("no agents configured — add one with `hsm-coordinator agent add NAME HOST:PORT --fingerprint FP --project-dir DIR`");
        return Ok(EXIT_OK);
    }
    let mut header = vec![
        "NAME",
        "ADDRESS",
        "BACKEND",
        "SLOTS",
        "PROJECT_DIR",
        "FINGERPRINT",
    ];
    if check {
        header.push("REACHABLE");
    }
    let header: Vec<String> = header.into_iter().map(String::from).collect();
    let all: Vec<&Vec<String>> = std::iter::once(&header).chain(&rows).collect();
    let widths: Vec<usize> = (0..header.len())
        .map(|c| all.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
        .collect();
    for row in all {
        let line: Vec<String> = row
            .iter()
            .enumerate()
            .map(|(c, cell)| {
                if c + 1 == row.len() {
                    cell.clone()
                } else {
                    format!("{cell:<width$}", width = widths[c])
                }
            })
            .collect();
        println!("{}", line.join("  "));
    }
    // For scripts: `--check` fails when any agent cannot be reached.
    Ok(if unreachable > 0 {
        EXIT_FAILED
    } else {
        EXIT_OK
    })
}

fn first_line(text: &str) -> &str {
    text.lines().next().unwrap_or("")
}

/// `agent ping NAME`: the whole connection path a sweep uses (address, pinned fingerprint, this
/// coordinator's authorization, protocol version), then one round trip and the agent's health.
pub fn ping(global: &Global, name: &str, timeout: &str) -> anyhow::Result<i32> {
    let timeout = config::parse_duration(timeout)
        .map_err(|e| user_error(format!("--timeout {timeout}: {e}")))?;
    let cfg = load_config(global)?;
    let (address, backend) = match cfg.sources.get(name).map(|s| &s.kind) {
        Some(SourceKind::Agent {
            address, backend, ..
        }) => (address.clone(), *backend),
        Some(_) => return Err(user_error(format!("source `{name}` is not an agent"))),
        None => {
            return Err(user_error(format!(
                "no source named `{name}` — add it with `hsm-coordinator agent add {name} HOST:PORT --fingerprint FP --project-dir DIR`"
            )))
        }
    };
    match ping_agent(&cfg, name, timeout, Default::default()) {
        Ok((welcome, round_trip, health, via)) => {
            // The agent's strings are escaped, never printed raw (see display_safe).
            use hsm_protocol::display_safe;
            println!(
                "{name} ({address}{via}): ok, round trip {:.2} ms — {} hsm-agent {} (protocol {}), backend {}, {} slot{}",
                round_trip.as_secs_f64() * 1000.0,
                display_safe(&welcome.agent_name),
                display_safe(&welcome.agent_version),
                welcome.protocol_version,
                // What this source's tasks run under is the source's `backend:` (every agent
                // runs processes and submits to a scheduler as the sweep asks).
                backend,
                welcome.slots,
                if welcome.slots == 1 { "" } else { "s" }
            );
            if let Some(h) = health {
                println!(
                    "  load {:.2} · running {} of {} · free memory {:.1} GiB · free disk {:.1} GiB",
                    h.load1,
                    h.running,
                    h.slots,
                    h.free_mem_bytes as f64 / (1u64 << 30) as f64,
                    h.free_disk_bytes as f64 / (1u64 << 30) as f64
                );
            }
            Ok(EXIT_OK)
        }
        Err(e) => {
            // May carry the agent's reject reason.
            eprintln!(
                "hsm-coordinator: agent {name}: {}",
                hsm_protocol::display_safe(&format!("{e:#}"))
            );
            Ok(EXIT_FAILED)
        }
    }
}

/// What an agent's comparison of the project means for `config validate --remote`: the line
/// to print and whether it fails the check; `None` when the copy is the same.
fn sync_verdict(
    name: &str,
    address: &str,
    mode: config::SyncMode,
    set_on_source: bool,
    project_dir: &Option<String>,
    manifest: &crate::sync::Manifest,
    report: hsm_protocol::SyncReport,
) -> Option<(String, bool)> {
    if let Some(error) = report.error {
        return Some((
            format!(
                "remote {name} ({address}): the project could not be compared there: {}",
                hsm_protocol::display_safe(&error)
            ),
            true,
        ));
    }
    let differs = crate::sync::relevant(manifest, &report.differs);
    if differs.is_empty() {
        return None;
    }
    let dir = project_dir.as_deref().unwrap_or_default();
    Some(match mode {
        config::SyncMode::Push => (
            format!(
                "remote {name} ({address}): ok; a run will first push {} file{} there ({})",
                differs.len(),
                if differs.len() == 1 { "" } else { "s" },
                crate::sync::describe(&differs, 5)
            ),
            false,
        ),
        _ => (
            format!(
                "remote {}",
                crate::sync::drift_refusal(name, address, dir, &differs, set_on_source)
            ),
            true,
        ),
    })
}

/// What one successful ping learns: the agent's welcome, the round trip, its last heartbeat,
/// and how it was reached (empty for UDP, else ` over ssh to HOST`).
pub(super) type PingResult = (
    hsm_protocol::Welcome,
    std::time::Duration,
    Option<hsm_protocol::HeartbeatMsg>,
    String,
);

/// `config validate --remote`: every agent source's pre-flight checks (the project directory,
/// the script, the interpreter, free disk) and its copy of the project compared with this one
/// (unless `sync: off`), made on its host now, for the command a sweep with `script_override`
/// would run. Exit 2 when a check fails (or the copy differs under `sync: check`), 1 when an
/// agent cannot be reached.
pub fn remote_checks(cfg: &config::ProjectConfig, script_override: Option<&str>) -> i32 {
    let mut code = EXIT_OK;
    let base = super::launch::launch_command(cfg, script_override, false);
    let mut manifest: Option<Result<crate::sync::Manifest, String>> = None;
    for (name, source) in &cfg.sources {
        let SourceKind::Agent {
            address,
            project_dir,
            python,
            backend,
            hpc,
            setup,
            sync,
            ..
        } = &source.kind
        else {
            continue;
        };
        let sync_request = match sync {
            config::SyncMode::Off => None,
            _ => match manifest.get_or_insert_with(|| crate::sync::build(&cfg.root, &cfg.sync)) {
                // Only compared: a check changes nothing on the host (a run's push would
                // create a missing project_dir; that is said below instead).
                Ok(manifest) => {
                    Some(manifest.request(project_dir.as_deref().unwrap_or_default(), false))
                }
                Err(why) => {
                    println!("remote {name} ({address}): the project cannot be compared: {why}");
                    code = code.max(EXIT_USAGE);
                    None
                }
            },
        };
        let command = base.for_source(Some(python), setup);
        // Only the scheduler and the set-up lines matter to the checks.
        let batch = backend.scheduler().map(|scheduler| hsm_protocol::HpcMsg {
            scheduler,
            resources: hsm_protocol::HpcResources {
                modules: hpc.modules.clone(),
                pre_script: hpc.pre_script.clone(),
                ..Default::default()
            },
        });
        let request = crate::preflight::request(
            &command,
            script_override,
            project_dir.as_deref(),
            batch.as_ref(),
            cfg.defaults.min_free_disk,
        );
        let timeout = std::time::Duration::from_secs(90);
        let mut request = request;
        if let (config::SyncMode::Push, Some(Ok(manifest))) = (sync, &manifest) {
            // A run pushes the project's own files before any task.
            manifest.leave_to_push(&mut request.files);
        }
        let asks = Asks {
            preflight: Some(request),
            sync: sync_request,
        };
        match ping_agent(cfg, name, timeout, asks) {
            Ok((welcome, _, _, _)) => {
                let mut problems = welcome.preflight.clone();
                let no_dir = |p: &hsm_protocol::PreflightProblem| {
                    p.check == hsm_protocol::preflight::check::PROJECT_DIR
                };
                let dir_missing = problems.as_ref().is_some_and(|p| p.iter().any(no_dir));
                // A run under `push` creates project_dir before its first task.
                let created_by_push = *sync == config::SyncMode::Push && dir_missing;
                if created_by_push {
                    if let Some(problems) = problems.as_mut() {
                        problems.retain(|p| !no_dir(p));
                    }
                }
                // Every file "missing" under a missing project_dir says nothing new.
                let drift = match (&manifest, welcome.sync) {
                    (Some(Ok(manifest)), Some(report)) if !dir_missing => sync_verdict(
                        name,
                        address,
                        *sync,
                        cfg.key_pos(&[&format!("sources.{name}.sync")]).is_some(),
                        project_dir,
                        manifest,
                        report,
                    ),
                    _ => None,
                };
                match problems {
                    Some(problems) if !problems.is_empty() => {
                        println!(
                            "remote {name} ({address}): {}",
                            crate::preflight::explain(name, address, &problems)
                        );
                        code = code.max(EXIT_USAGE);
                    }
                    Some(_) if created_by_push => {
                        let files = match &manifest {
                            Some(Ok(m)) => format!(" ({} files)", m.entries.len()),
                            _ => String::new(),
                        };
                        println!(
                            "remote {name} ({address}): ok; {} does not exist there yet: a \
                             sweep creates it and sends the project{files} before its first task",
                            hsm_protocol::display_safe(project_dir.as_deref().unwrap_or_default())
                        );
                    }
                    Some(_) if drift.is_none() => println!("remote {name} ({address}): ok"),
                    Some(_) => {}
                    None => println!(
                        "remote {name} ({address}): reachable, but its hsm-agent ({}) predates \
                         pre-flight checks: upgrade it to have them",
                        hsm_protocol::display_safe(&welcome.agent_version)
                    ),
                }
                if let Some((line, fails)) = drift {
                    println!("{line}");
                    if fails {
                        code = code.max(EXIT_USAGE);
                    }
                }
            }
            Err(e) => {
                println!(
                    "remote {name} ({address}): unreachable: {}",
                    hsm_protocol::display_safe(first_line(&format!("{e:#}")))
                );
                if code == EXIT_OK {
                    code = EXIT_FAILED;
                }
            }
        }
    }
    code
}

/// What a ping asks of the agent in its hello besides answering.
#[derive(Debug, Default)]
pub(super) struct Asks {
    /// Pre-flight checks (see `crate::preflight`).
    pub preflight: Option<hsm_protocol::PreflightMsg>,
    /// A comparison of the project (see `crate::sync`); never a push.
    pub sync: Option<hsm_protocol::SyncRequest>,
}

/// Connects to the agent source `name` of `cfg` as a sweep would and pings it once, asking
/// what `asks` says in the hello.
fn ping_agent(
    cfg: &config::ProjectConfig,
    name: &str,
    timeout: std::time::Duration,
    asks: Asks,
) -> anyhow::Result<PingResult> {
    let Some(SourceKind::Agent {
        address,
        fingerprint,
        transport,
        ..
    }) = cfg.sources.get(name).map(|s| &s.kind)
    else {
        anyhow::bail!("source `{name}` is not an agent");
    };
    ping_address(address, fingerprint, transport, timeout, asks)
}

/// Connects to the agent at `address` pinned to `fingerprint` as a sweep would (over UDP or
/// ssh, as `transport` says) and pings it once, asking what `asks` says in the hello.
pub(super) fn ping_address(
    address: &str,
    fingerprint: &str,
    transport: &config::AgentTransport,
    timeout: std::time::Duration,
    asks: Asks,
) -> anyhow::Result<PingResult> {
    use hsm_protocol::{FromAgent, PingMsg, ToAgent};
    let nonce = std::process::id() as u64;
    let mut health = None;
    let (welcome, (), round_trip, via) = request_address(
        address,
        fingerprint,
        transport,
        timeout,
        asks,
        ToAgent::Ping(PingMsg { nonce }),
        |frame| {
            match frame {
                FromAgent::Pong(pong) if pong.nonce == nonce => return Some(Ok(())),
                FromAgent::Heartbeat(h) => health = Some(h),
                _ => {}
            }
            None
        },
    )?;
    Ok((welcome, round_trip, health, via))
}

/// One request on a connection of its own, as a sweep connects (over UDP or ssh, as `transport`
/// says, pinned to `fingerprint`; what `asks` says asked in the hello): sends
/// `request` once welcomed and reads frames until `answer` says what they mean (`Some`). Returns
/// the welcome, the answer, and the time from sending the request to its answer; fails after
/// `timeout` in all.
pub(super) fn request_address<T>(
    address: &str,
    fingerprint: &str,
    transport: &config::AgentTransport,
    timeout: std::time::Duration,
    asks: Asks,
    request: hsm_protocol::ToAgent,
    mut answer: impl FnMut(hsm_protocol::FromAgent) -> Option<anyhow::Result<T>>,
) -> anyhow::Result<(hsm_protocol::Welcome, T, std::time::Duration, String)> {
    use hsm_protocol::{decode, FromAgent, Hello, HelloReply, MAX_FRAME};
    use hsm_transport::tls::TransportOptions;
    use hsm_transport::wire::{read_frame, write_message};

    let identity = coordinator_identity()?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let result = runtime.block_on(async {
        use crate::transport::{dial, DialFailure, Target};
        let target = Target {
            address,
            fingerprint,
            transport,
            options: TransportOptions::default(),
            timeout,
        };
        // Over UDP or ssh, as a sweep would (`transport:`).
        let dialled = dial(&target, &identity, &mut None).await.map_err(
            |(DialFailure::Retry(why) | DialFailure::Refused(why))| anyhow::anyhow!(why),
        )?;
        let (endpoint, conn) = (&dialled.endpoint, &dialled.conn);
        let via = dialled.via(transport);
        let exchange = async {
            let (mut send, mut recv) = conn.open_bi().await?;
            let mut hello = Hello::new(env!("CARGO_PKG_VERSION"));
            hello.preflight = asks.preflight;
            hello.sync = asks.sync;
            write_message(&mut send, &hello).await?;
            let reply = read_frame(&mut recv, MAX_FRAME)
                .await?
                .context("the agent closed the connection without answering the hello")?;
            let welcome = match decode::<HelloReply>(&reply)? {
                HelloReply::Welcome(welcome) => welcome,
                HelloReply::Reject(reject) => anyhow::bail!("{reject}"),
            };
            let started = std::time::Instant::now();
            write_message(&mut send, &request).await?;
            loop {
                let frame = read_frame(&mut recv, MAX_FRAME)
                    .await?
                    .context("the agent closed the connection before answering")?;
                if let Some(answered) = answer(decode::<FromAgent>(&frame)?) {
                    break answered.map(|value| (welcome, value, started.elapsed(), via));
                }
            }
        };
        let outcome = tokio::time::timeout(timeout, exchange).await;
        conn.close(0u32.into(), b"request done");
        endpoint.wait_idle().await;
        match outcome {
            Ok(result) => result,
            Err(_) => anyhow::bail!("the agent at {address} did not answer within {timeout:?}"),
        }
    });
    result
}

//! `agent deploy NAME [USER@]HOST` and `agent status|logs|stop NAME`: installing, starting and
//! looking after an agent over the system's OpenSSH client (so `~/.ssh/config`, `ProxyJump`,
//! keys and agents work as they do for the user). Every ssh command of one invocation goes
//! through one ControlMaster socket under `HSM_HOME` (kept for a while by `ControlPersist`), so
//! the host authenticates once — a 2FA prompt appears once. What to do is decided by
//! `deploy_plan.rs`; this file runs the commands.
//!
//! The SSH host key is the root of trust: the agent's fingerprint is read back over that channel
//! and this coordinator's is authorized there, so nothing is pasted by hand.

use super::agent_cmd::{ping_address, write_config};
use super::config_cmd::{display_path, load_config};
use super::deploy_plan::{self as plan, DaemonAction, RemoteFacts};
use super::{user_error, AgentDeployArgs, Global, SshArgs, EXIT_FAILED, EXIT_OK};
use crate::config::{self, SourceKind};
use anyhow::Context as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

/// The probe: the host's platform, home, CPU count, the project directory, the work directory
/// (`~` expanded, symlinks resolved when it exists), and the installed agent (version, SHA-256,
/// `status`). Run by `sh -s` with the script on stdin so the user's login shell (csh, fish)
/// does not matter; `$1` is the binary (relative: under $HOME), `$2` the project dir, `$3` the
/// work dir (may be empty). Each command reads /dev/null: stdin is the script.
const PROBE: &str = r#"
B="$1"; P="$2"; W="$3"
case "$B" in /*) ;; *) B="$HOME/$B";; esac
case "$W" in "~") W="$HOME";; "~/"*) W="$HOME/${W#"~/"}";; esac
if [ -n "$W" ]; then
  if [ -d "$W" ]; then W=$(cd "$W" </dev/null && pwd -P); fi
  echo "work_dir $W"
fi
echo "uname $(uname -sm </dev/null)"
echo "home $HOME"
echo "bin $B"
echo "nproc $(nproc </dev/null 2>/dev/null || getconf _NPROCESSORS_ONLN </dev/null 2>/dev/null)"
if [ -n "$P" ]; then
  case "$P" in /*) ;; *) P="$HOME/$P";; esac
  echo "project_dir $P"
  if [ -d "$P" ]; then echo "project_dir_exists yes"; else echo "project_dir_exists no"; fi
fi
if [ -f "$B" ] && [ -x "$B" ]; then
  echo "installed_version $("$B" --version </dev/null 2>/dev/null)"
  echo "installed_sha256 $( (sha256sum "$B" || shasum -a 256 "$B") </dev/null 2>/dev/null | cut -d' ' -f1)"
  "$B" status </dev/null 2>/dev/null | sed 's/^/status_/'
fi
"#;

/// Checks the copied file and renames it into place: `$1` temp file, `$2` final path, `$3` the
/// expected SHA-256.
const VERIFY: &str = r#"
T="$1"; B="$2"; WANT="$3"
GOT=$( (sha256sum "$T" || shasum -a 256 "$T") </dev/null 2>/dev/null | cut -d' ' -f1)
if [ "$GOT" != "$WANT" ]; then rm -f "$T"; echo "sha256 mismatch: got '$GOT'" >&2; exit 3; fi
chmod 755 "$T" && mv -f "$T" "$B" && echo "verified $GOT"
"#;

/// Identity, authorization, fingerprint and the daemon: `$1` binary, `$2` this coordinator's
/// fingerprint, `$3` `keep|start|restart|hold`, `$4` the listen address, `$5` the work dir
/// (absolute, or empty for the agent's default), `$6` the `--ledger-retention` to start it with
/// (empty: its default).
const SETUP: &str = r#"
B="$1"; FP="$2"; ACTION="$3"; LISTEN="$4"; W="$5"; RETENTION="$6"
"$B" init </dev/null >/dev/null || exit 4
"$B" authorize "$FP" </dev/null || exit 4
echo "fingerprint $("$B" fingerprint </dev/null)"
if [ "$ACTION" = restart ]; then "$B" stop </dev/null || exit 5; fi
if [ "$ACTION" = start ] || [ "$ACTION" = restart ]; then
  set -- serve --detach --listen "$LISTEN"
  if [ -n "$W" ]; then set -- "$@" --work-dir "$W"; fi
  if [ -n "$RETENTION" ]; then set -- "$@" --ledger-retention "$RETENTION"; fi
  OUT=$("$B" "$@" </dev/null) || exit 6
  echo "$OUT" | sed 's/^/serve_/'
fi
"#;

/// One host reached through a shared ssh connection (`crate::ssh_control`).
pub struct Ssh {
    destination: String,
    /// Options before the destination: the user's (`-F`, `-o`), then the control socket's.
    options: Vec<String>,
}

/// The user's ssh options of `--ssh-config FILE` (made absolute: it is stored in the config
/// and used from wherever later commands run) and `--ssh-option KEY=VALUE`, as `ssh` takes them.
pub fn user_ssh_options(args: &SshArgs) -> anyhow::Result<Vec<String>> {
    let mut user = Vec::new();
    if let Some(file) = &args.ssh_config {
        if !file.is_file() {
            return Err(user_error(format!(
                "--ssh-config {}: no such file",
                file.display()
            )));
        }
        let file =
            std::path::absolute(file).with_context(|| format!("finding {}", file.display()))?;
        user.push("-F".to_string());
        user.push(file.display().to_string());
    }
    for option in &args.ssh_option {
        user.push("-o".to_string());
        user.push(option.clone());
    }
    Ok(user)
}

impl Ssh {
    /// `user`: the user's own options (`--ssh-config`, `--ssh-option`, or the source's
    /// `ssh_options`); the shared connection's are added unless they name one.
    pub fn new(destination: &str, user: &[String]) -> anyhow::Result<Ssh> {
        config::validate_ssh_destination(destination)
            .map_err(|e| user_error(format!("{e} — give [USER@]HOST as you would to ssh")))?;
        let mut options = user.to_vec();
        if !crate::ssh_control::names_control(user) {
            // The same socket the ssh transport's relays use for this destination and options.
            let control = crate::ssh_control::control_path(destination, user)?;
            options.extend(crate::ssh_control::control_options(&control));
        }
        Ok(Ssh {
            destination: destination.trim().to_string(),
            options,
        })
    }

    fn command(&self) -> Command {
        let mut command = Command::new("ssh");
        command.args(&self.options).arg(&self.destination);
        command
    }

    /// Runs `script` with `sh -s` on the host, with `args`; its stdout. Fails with ssh's or the
    /// script's stderr.
    pub fn script(&self, what: &str, script: &str, args: &[&str]) -> anyhow::Result<String> {
        let mut remote = "sh -s --".to_string();
        for arg in args {
            remote.push(' ');
            remote.push_str(&plan::shell_quote(arg));
        }
        let mut child = self
            .command()
            .arg(remote)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("running ssh (is OpenSSH's client installed?)")?;
        let mut stdin = child.stdin.take().context("ssh stdin")?;
        let script = script.to_string();
        let writer = std::thread::spawn(move || {
            use std::io::Write as _;
            let _ = stdin.write_all(script.as_bytes());
        });
        let out = child.wait_with_output()?;
        let _ = writer.join();
        self.check(what, &out)?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    fn check(&self, what: &str, out: &std::process::Output) -> anyhow::Result<()> {
        if out.status.success() {
            return Ok(());
        }
        let stderr = String::from_utf8_lossy(&out.stderr);
        let stderr = stderr.trim();
        if out.status.code() == Some(255) {
            anyhow::bail!(
                "cannot reach {} over ssh ({what}): {stderr} — check that `ssh {}` works",
                self.destination,
                self.destination
            );
        }
        // The binary of this machine needs its C library; an older host's loader says so.
        let fix = if stderr.contains("GLIBC_") {
            " — that host's C library is older than this build's: build the portable agent \
             (tools/build-agent.sh, glibc 2.17) or pass --agent-binary PATH"
        } else {
            ""
        };
        anyhow::bail!(
            "{what} on {} failed ({}): {stderr}{fix}",
            self.destination,
            out.status
        )
    }

    /// Copies `local` to `remote_tmp` (creating its directory) through `cat`.
    fn copy(&self, local: &Path, remote_tmp: &str) -> anyhow::Result<()> {
        let dir = remote_tmp
            .rsplit_once('/')
            .map_or(".", |(d, _)| if d.is_empty() { "/" } else { d });
        let file =
            std::fs::File::open(local).with_context(|| format!("opening {}", local.display()))?;
        let out = self
            .command()
            .arg(format!(
                "mkdir -p {} && cat > {}",
                plan::shell_quote(dir),
                plan::shell_quote(remote_tmp)
            ))
            .stdin(file)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .output()
            .context("running ssh")?;
        self.check(&format!("copying to {remote_tmp}"), &out)
    }

    /// `ssh -G`: the host name ssh really connects to (after `~/.ssh/config`).
    fn resolved_host(&self) -> Option<String> {
        let out = Command::new("ssh")
            .arg("-G")
            .args(&self.options)
            .arg(&self.destination)
            .stdin(Stdio::null())
            .output()
            .ok()?;
        plan::hostname_from_ssh_g(&String::from_utf8_lossy(&out.stdout))
    }
}

fn sha256_file(path: &Path) -> anyhow::Result<String> {
    hsm_protocol::digest::sha256_file(path).with_context(|| format!("reading {}", path.display()))
}

fn field<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    text.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(' '))
        .map(str::trim)
}

pub fn deploy(global: &Global, args: &AgentDeployArgs) -> anyhow::Result<i32> {
    config::validate_source_name(&args.name)
        .map_err(|e| user_error(format!("agent name `{}`: {e}", args.name)))?;
    if args.name == "local" {
        return Err(user_error(
            "`local` is the built-in source for this machine; give the agent another name",
        ));
    }
    if args.slots == Some(0) {
        return Err(user_error("--slots: expected a positive number"));
    }
    if let Some(retention) = &args.ledger_retention {
        hsm_protocol::parse_retention(retention)
            .map_err(|e| user_error(format!("--ledger-retention: {e}")))?;
    }
    if let Some(address) = &args.address {
        config::validate_address(address)
            .map_err(|e| user_error(format!("--address {address}: {e}")))?;
    }
    // Validate the config first: never rewrite a file that has problems.
    let cfg = load_config(global)?;
    let existing = cfg.sources.get(&args.name).map(|s| &s.kind);
    if let Some(dir) = &args.work_dir {
        config::validate_work_dir(dir)
            .map_err(|e| user_error(format!("--work-dir: {e} — give an absolute path or ~/DIR")))?;
    }
    let existing_project_dir = match existing {
        Some(SourceKind::Agent { project_dir, .. }) => project_dir.clone(),
        Some(other) => {
            return Err(user_error(format!(
                "source `{}` is a {} source, not an agent: choose another name",
                args.name,
                other.type_name()
            )))
        }
        None => None,
    };
    let project_dir = match args.project_dir.clone().or(existing_project_dir) {
        Some(dir) => plan::remote_path_arg(&dir),
        None => plan::default_project_dir(
            &global.project_dir,
            std::env::var_os("HOME").map(PathBuf::from).as_deref(),
        )
        .ok_or_else(|| {
            user_error(format!(
                "--project-dir DIR is needed: this project ({}) is not under your home \
                 directory, so its place on {} cannot be guessed",
                global.project_dir.display(),
                args.destination
            ))
        })?,
    };
    let own = crate::home::coordinator_identity()?.fingerprint();
    // How to run ssh: as given now, else as stored for this source and destination (a redeploy
    // without --ssh-config goes the way the first one did). Stored in the config below, so the
    // ssh transport's relays and `agent status|logs|stop` run ssh the same way.
    let mut ssh_options = user_ssh_options(&args.ssh)?;
    if ssh_options.is_empty() {
        if let Some(SourceKind::Agent { transport, .. }) = existing {
            if let Some(stored) = &transport.ssh {
                if stored.target == args.destination.trim() {
                    ssh_options = stored.options.clone();
                }
            }
        }
    }
    let ssh = Ssh::new(&args.destination, &ssh_options)?;
    let remote_bin =
        plan::remote_path_arg(args.remote_bin.as_deref().unwrap_or(".local/bin/hsm-agent"));

    // Where the agent keeps task directories: as given, else the source's (or defaults').
    let work_dir = args
        .work_dir
        .as_deref()
        .map(|d| config::validate_work_dir(d).unwrap_or_default())
        .or_else(|| match existing {
            Some(SourceKind::Agent { work_dir, .. }) => work_dir.clone(),
            _ => cfg.defaults.work_dir.clone(),
        })
        .unwrap_or_default();

    // 1. What is there (this first command authenticates; the rest reuse its connection).
    let probe = ssh.script(
        "probing the host",
        PROBE,
        &[&remote_bin, &project_dir, &work_dir],
    )?;
    let facts: RemoteFacts =
        plan::parse_facts(&probe).map_err(|e| anyhow::anyhow!("{}: {e}", args.destination))?;
    let here = std::env::current_exe().context("finding this executable")?;
    let beside = here.parent().unwrap_or(Path::new("."));
    let local = plan::agent_binary_for(
        &facts.os,
        &facts.arch,
        args.agent_binary.as_deref(),
        beside,
        &|p: &Path| p.is_file(),
    )
    .map_err(user_error)?;
    if args.agent_binary.is_none() && local.file_name().is_some_and(|n| n == "hsm-agent") {
        println!(
            "  note: copying this machine's own hsm-agent ({}), which needs this machine's C \
             library; for older hosts build the portable agent (tools/build-agent.sh)",
            local.display()
        );
    }
    let local_sha = sha256_file(&local)?;
    let listen = format!("0.0.0.0:{}", args.port);
    let decided = plan::plan(&facts, &local_sha, &listen, args.restart);
    println!(
        "{}: {} {}, home {}",
        args.destination, facts.os, facts.arch, facts.home
    );
    for note in &decided.notes {
        println!("  {note}");
    }
    let mut changed = false;

    // 2. The binary, verified by SHA-256 there before it replaces anything.
    if decided.copy {
        let tmp = format!("{}.tmp-{}", facts.bin, std::process::id());
        let size = std::fs::metadata(&local)?.len();
        ssh.copy(&local, &tmp)?;
        ssh.script(
            "verifying the copy",
            VERIFY,
            &[&tmp, &facts.bin, &local_sha],
        )?;
        println!(
            "  copied {} ({:.1} MiB) to {}, sha256 verified",
            local.display(),
            size as f64 / (1 << 20) as f64,
            facts.bin
        );
        changed = true;
    }

    // 3. Identity, authorization, the agent's fingerprint and the daemon, in one command.
    let action = match decided.daemon {
        DaemonAction::Keep => "keep",
        DaemonAction::Start => "start",
        DaemonAction::Restart => "restart",
        DaemonAction::Hold => "hold",
    };
    let setup = ssh.script(
        "setting up the agent",
        SETUP,
        &[
            &facts.bin,
            &own,
            action,
            &listen,
            facts.work_dir.as_deref().unwrap_or(""),
            args.ledger_retention.as_deref().unwrap_or(""),
        ],
    )?;
    if args.ledger_retention.is_some()
        && matches!(decided.daemon, DaemonAction::Keep | DaemonAction::Hold)
    {
        println!(
            "  note: --ledger-retention applies when the daemon starts; it was not (re)started \
             (--restart restarts it)"
        );
    }
    let fingerprint = field(&setup, "fingerprint")
        .and_then(|fp| hsm_transport::identity::parse_fingerprint(fp).ok())
        .with_context(|| format!("the agent on {} printed no fingerprint", args.destination))?;
    if let Some(pid) = field(&setup, "serve_pid") {
        println!(
            "  {} hsm-agent serve (pid {pid}), listening on {listen}, log {}{}",
            if decided.daemon == DaemonAction::Restart {
                "restarted"
            } else {
                "started"
            },
            field(&setup, "serve_log").unwrap_or("in its state dir"),
            facts
                .work_dir
                .as_deref()
                .map(|w| format!(", task directories in {w}"))
                .unwrap_or_default()
        );
        changed = true;
    }

    // 4. The source in the project config.
    let address = match &args.address {
        Some(address) => address.clone(),
        None => {
            let host = ssh
                .resolved_host()
                .unwrap_or_else(|| plan::destination_host(&args.destination).to_string());
            plan::join_host_port(&host, args.port)
        }
    };
    let slots = args
        .slots
        .or_else(|| existing.is_none().then_some(facts.nproc).flatten());
    let project_dir_abs = facts
        .project_dir
        .as_ref()
        .map_or(project_dir.clone(), |(dir, _)| dir.clone());
    // A host without the project gets it from the first sweep, unless the user already said
    // how the project reaches agents (a `sync` of their own).
    let push_project = matches!(&facts.project_dir, Some((_, false)))
        && cfg.key_pos(&["sync"]).is_none()
        && cfg
            .key_pos(&[&format!("sources.{}.sync", args.name)])
            .is_none();
    if let Some((dir, false)) = &facts.project_dir {
        if push_project {
            println!(
                "  note: {dir} does not exist on {} yet: the source gets `sync: push`, so the \
                 first sweep sends the project there",
                args.destination
            );
        } else {
            println!(
                "  note: {dir} does not exist on {} yet — put the project there before a sweep \
                 (or pass --project-dir)",
                args.destination
            );
        }
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
    // `transport` is left out: its default, `auto`, tries UDP and falls back to `ssh:` below.
    let entry = config::AgentEntry {
        address: &address,
        fingerprint: &fingerprint,
        slots,
        project_dir: Some(&project_dir_abs),
        backend: args.backend.as_deref(),
        python: args
            .python
            .as_deref()
            .map(str::trim)
            .filter(|p| !p.is_empty()),
        ssh: Some(&args.destination),
        ssh_options: (!ssh_options.is_empty()).then_some(ssh_options.as_slice()),
        work_dir: args.work_dir.as_deref().map(str::trim),
        sync_default: push_project.then_some("push"),
        transport_default: None,
    };
    let updated = config::set_agent_entry(&text, &args.name, &entry)
        .map_err(|e| user_error(format!("{}: {e}", display_path(global, &path))))?;
    if updated != text {
        write_config(&path, &updated)?;
        println!(
            "  source {} ({address}, {fingerprint}) {} in {}",
            args.name,
            if existing.is_some() {
                "updated"
            } else {
                "added"
            },
            display_path(global, &path)
        );
        changed = true;
    }

    // 5. It answers as a sweep would reach it.
    let reload = load_config(global)?;
    let answered = wait_for_answer(&reload, &args.name, Duration::from_secs(30));
    match answered {
        Ok((line, via_ssh)) => {
            println!("  {line}");
            // UDP does not reach it: say so in the source, so that every connection goes
            // straight through ssh instead of waiting for UDP first (`auto`).
            let transport_set = reload
                .key_pos(&[&format!("sources.{}.transport", args.name)])
                .is_some();
            if via_ssh && !transport_set {
                let text = std::fs::read_to_string(&path)
                    .with_context(|| format!("reading {}", path.display()))?;
                let with_ssh = config::AgentEntry {
                    transport_default: Some("ssh"),
                    ..entry
                };
                let updated = config::set_agent_entry(&text, &args.name, &with_ssh)
                    .map_err(|e| user_error(format!("{}: {e}", display_path(global, &path))))?;
                if updated != text {
                    write_config(&path, &updated)?;
                    println!(
                        "  UDP does not reach {}: the source now says `transport: ssh` (no wait \
                         for UDP on each connection)",
                        args.destination
                    );
                    changed = true;
                }
            }
        }
        Err(e) => {
            eprintln!(
                "hsm-coordinator: the agent runs on {} but does not answer at {address}: {} — \
                 see `hsm-coordinator agent logs {}`; where UDP cannot reach the host, the \
                 source's `transport: auto` (or `ssh`) goes through ssh",
                args.destination,
                hsm_protocol::display_safe(&format!("{e:#}")),
                args.name
            );
            return Ok(EXIT_FAILED);
        }
    }
    if decided.daemon == DaemonAction::Hold {
        println!(
            "{}: installed, not restarted (it holds tasks; --restart restarts it)",
            args.name
        );
    } else if changed {
        println!(
            "{}: deployed — use it with `hsm-coordinator sweep run --sources local,{}`",
            args.name, args.name
        );
    } else {
        println!("{}: up to date — nothing changed", args.name);
    }
    Ok(EXIT_OK)
}

/// Pings until the agent answers (it may still be binding) or `within` passes.
fn wait_for_answer(
    cfg: &config::ProjectConfig,
    name: &str,
    within: Duration,
) -> anyhow::Result<(String, bool)> {
    let Some(SourceKind::Agent {
        address,
        fingerprint,
        transport,
        ..
    }) = cfg.sources.get(name).map(|s| &s.kind)
    else {
        anyhow::bail!("source `{name}` is not an agent");
    };
    let deadline = std::time::Instant::now() + within;
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match ping_address(
            address,
            fingerprint,
            // As a sweep will reach it: `auto` falls back to ssh when UDP is blocked.
            transport,
            left.min(Duration::from_secs(5)),
            Default::default(),
        ) {
            Ok((welcome, round_trip, _, via)) => {
                let line = format!(
                    "{name} answers at {address}{via}: hsm-agent {} (protocol {}), {} slot{}, round trip {:.2} ms",
                    hsm_protocol::display_safe(&welcome.agent_version),
                    welcome.protocol_version,
                    welcome.slots,
                    if welcome.slots == 1 { "" } else { "s" },
                    round_trip.as_secs_f64() * 1000.0
                );
                return Ok((line, !via.is_empty()));
            }
            Err(e) if std::time::Instant::now() >= deadline => return Err(e),
            Err(_) => std::thread::sleep(Duration::from_millis(200)),
        }
    }
}

/// Agent source `name`'s host over ssh: its `ssh:` destination, with `--ssh-config` /
/// `--ssh-option` when given, else its `ssh_options` (what `agent deploy` stored).
fn reach(global: &Global, name: &str, args: &SshArgs) -> anyhow::Result<Ssh> {
    let cfg = load_config(global)?;
    match cfg.sources.get(name).map(|s| &s.kind) {
        Some(SourceKind::Agent {
            ssh: Some(ssh),
            transport,
            ..
        }) => {
            let mut options = user_ssh_options(args)?;
            if options.is_empty() {
                options = transport
                    .ssh
                    .as_ref()
                    .map(|t| t.options.clone())
                    .unwrap_or_default();
            }
            Ssh::new(ssh, &options)
        }
        Some(SourceKind::Agent { .. }) => Err(user_error(format!(
            "agent `{name}` has no `ssh:` destination in the config (it was added by hand) — \
             add `ssh: [user@]host` to it, or deploy it with `hsm-coordinator agent deploy {name} HOST`"
        ))),
        Some(_) => Err(user_error(format!("source `{name}` is not an agent"))),
        None => Err(user_error(format!(
            "no source named `{name}` — deploy one with `hsm-coordinator agent deploy {name} [USER@]HOST`"
        ))),
    }
}

fn remote_bin(arg: Option<&str>) -> String {
    plan::remote_path_arg(arg.unwrap_or(".local/bin/hsm-agent"))
}

/// `agent status NAME`: exit 0 when its daemon runs, 1 when not.
pub fn status(
    global: &Global,
    name: &str,
    bin: Option<&str>,
    args: &SshArgs,
) -> anyhow::Result<i32> {
    let ssh = reach(global, name, args)?;
    let probe = ssh.script("asking for its status", PROBE, &[&remote_bin(bin), ""])?;
    let facts = plan::parse_facts(&probe).map_err(|e| anyhow::anyhow!("{name}: {e}"))?;
    let Some(installed) = &facts.installed else {
        println!("{name}: no hsm-agent at {}", facts.bin);
        return Ok(EXIT_FAILED);
    };
    match &facts.daemon {
        None => {
            println!(
                "{name}: not running ({} installed at {}) — `hsm-coordinator agent deploy {name} \
                 HOST` starts it again (nothing is copied when the binary is the same)",
                installed.version, facts.bin
            );
            Ok(EXIT_FAILED)
        }
        Some(d) => {
            println!(
                "{name}: running, pid {}, hsm-agent {}, up {}, {} task{} held, listening on {}{}",
                d.pid,
                d.version.as_deref().unwrap_or("?"),
                d.uptime_secs.map_or("?".into(), plan::human_duration),
                d.tasks.map_or("?".into(), |t| t.to_string()),
                if d.tasks == Some(1) { "" } else { "s" },
                d.listen.as_deref().unwrap_or("?"),
                if d.current == Some(false) {
                    " — its binary was replaced since it started (deploy --restart)"
                } else {
                    ""
                }
            );
            if let Some(log) = &facts.log {
                println!("  log {log}");
            }
            if let Some(work_dir) = &d.work_dir {
                println!("  task directories in {work_dir}");
            }
            Ok(EXIT_OK)
        }
    }
}

/// `agent logs NAME [-f]`: the daemon's log, streamed while `-f`.
pub fn logs(
    global: &Global,
    name: &str,
    follow: bool,
    lines: u32,
    bin: Option<&str>,
    args: &SshArgs,
) -> anyhow::Result<i32> {
    let ssh = reach(global, name, args)?;
    let probe = ssh.script("finding its log", PROBE, &[&remote_bin(bin), ""])?;
    let facts = plan::parse_facts(&probe).map_err(|e| anyhow::anyhow!("{name}: {e}"))?;
    let Some(log) = facts.log else {
        return Err(user_error(format!(
            "{name}: no hsm-agent at {} to ask where its log is",
            facts.bin
        )));
    };
    let status = ssh
        .command()
        .arg(format!(
            "tail -n {lines}{} {}",
            if follow { " -F" } else { "" },
            plan::shell_quote(&log)
        ))
        .stdin(Stdio::null())
        .status()
        .context("running ssh")?;
    Ok(if status.success() {
        EXIT_OK
    } else {
        EXIT_FAILED
    })
}

/// `agent stop NAME`.
pub fn stop(global: &Global, name: &str, bin: Option<&str>, args: &SshArgs) -> anyhow::Result<i32> {
    let ssh = reach(global, name, args)?;
    let out = ssh.script(
        "stopping it",
        "B=\"$1\"; case \"$B\" in /*) ;; *) B=\"$HOME/$B\";; esac\n\"$B\" stop </dev/null\n",
        &[&remote_bin(bin)],
    )?;
    println!("{name}: {}", out.trim());
    Ok(EXIT_OK)
}

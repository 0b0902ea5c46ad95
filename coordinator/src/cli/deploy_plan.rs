//! The pure half of `agent deploy`: what the remote host said about itself (parsed from the
//! probe script's `key value` lines), which local agent binary fits it, and what to do — copy
//! the binary or not, start, restart or leave the daemon — with the reasons printed to the user.
//! `deploy.rs` runs the SSH commands around it.

use std::path::{Path, PathBuf};

/// What the probe script reports about the remote host.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RemoteFacts {
    /// `uname -s`, e.g. `Linux`.
    pub os: String,
    /// `uname -m`, e.g. `x86_64`.
    pub arch: String,
    pub home: String,
    /// Where the agent binary is (or goes), absolute.
    pub bin: String,
    pub nproc: Option<usize>,
    /// The project directory asked about, absolute, and whether it exists there.
    pub project_dir: Option<(String, bool)>,
    /// The binary already at `bin`, if any.
    pub installed: Option<Installed>,
    /// The daemon, from the installed binary's `hsm-agent status`.
    pub daemon: Option<Daemon>,
    /// Where that daemon's log is.
    pub log: Option<String>,
    /// The work directory asked for (`work_dir` of the source), absolute there (symlinks
    /// resolved when it exists).
    pub work_dir: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Installed {
    /// `hsm-agent --version`'s output, e.g. `hsm-agent 0.1.0` (empty if it did not run).
    pub version: String,
    pub sha256: String,
}

/// A running daemon as `hsm-agent status` describes it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Daemon {
    pub pid: u32,
    pub version: Option<String>,
    pub listen: Option<String>,
    pub uptime_secs: Option<u64>,
    /// `false` when the file it was started from has been replaced since.
    pub current: Option<bool>,
    pub tasks: Option<u64>,
    /// Where it keeps task directories (an older agent does not say).
    pub work_dir: Option<String>,
}

/// Reads the probe's output. Unknown lines are ignored (a newer agent may say more).
pub fn parse_facts(text: &str) -> Result<RemoteFacts, String> {
    let mut facts = RemoteFacts::default();
    let mut running = false;
    let mut daemon = Daemon::default();
    let mut version = None;
    let mut sha256 = None;
    let mut dir = None;
    let mut dir_exists = false;
    for line in text.lines() {
        let (key, value) = line.split_once(' ').unwrap_or((line, ""));
        let value = value.trim();
        match key {
            "uname" => {
                let mut parts = value.split_whitespace();
                facts.os = parts.next().unwrap_or_default().to_string();
                facts.arch = parts.next().unwrap_or_default().to_string();
            }
            "home" => facts.home = value.to_string(),
            "bin" => facts.bin = value.to_string(),
            "nproc" => facts.nproc = value.parse().ok().filter(|&n| n > 0),
            "project_dir" => dir = Some(value.to_string()),
            "project_dir_exists" => dir_exists = value == "yes",
            "installed_version" => version = Some(value.to_string()),
            "installed_sha256" if is_sha256(value) => sha256 = Some(value.to_string()),
            "status_running" => running = value == "yes",
            "status_pid" => daemon.pid = value.parse().unwrap_or(0),
            "status_version" => daemon.version = Some(value.to_string()),
            "status_listen" => daemon.listen = Some(value.to_string()),
            "status_uptime" => daemon.uptime_secs = value.parse().ok(),
            "status_current" => daemon.current = Some(value == "yes"),
            "status_tasks" => daemon.tasks = value.parse().ok(),
            "status_log" => facts.log = Some(value.to_string()),
            "status_work_dir" if !value.is_empty() => daemon.work_dir = Some(value.to_string()),
            "work_dir" if !value.is_empty() => facts.work_dir = Some(value.to_string()),
            _ => {}
        }
    }
    if facts.os.is_empty() || facts.home.is_empty() || facts.bin.is_empty() {
        return Err(format!(
            "the host's answer lacks `uname`, `home` or `bin` (is its login shell a POSIX sh?):\n{}",
            text.trim()
        ));
    }
    facts.installed = sha256.map(|sha256| Installed {
        version: version.unwrap_or_default(),
        sha256,
    });
    facts.daemon = (running && daemon.pid > 0).then_some(daemon);
    facts.project_dir = dir.map(|d| (d, dir_exists));
    Ok(facts)
}

fn is_sha256(text: &str) -> bool {
    text.len() == 64 && text.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The platform names `uname -sm` gives, in the spelling of Rust's `std::env::consts`.
pub fn platform(os: &str, arch: &str) -> (String, String) {
    let os = os.to_ascii_lowercase();
    let os = if os == "darwin" { "macos".into() } else { os };
    let arch = match arch {
        "arm64" => "aarch64",
        "amd64" => "x86_64",
        other => other,
    };
    (os, arch.to_string())
}

/// The agent binary to copy to a host of `(os, arch)` (`uname -sm` spelling): `explicit` when
/// given; else a portable build for that platform (`hsm-agent-<arch>-<os>` beside the
/// coordinator or in `../dist/`, as `cargo xtask`-style release builds leave it); else the
/// `hsm-agent` beside the coordinator when the host's platform is this build's own. `exists`
/// says whether a file is there (a parameter so the choice is testable).
pub fn agent_binary_for(
    os: &str,
    arch: &str,
    explicit: Option<&Path>,
    beside: &Path,
    exists: &dyn Fn(&Path) -> bool,
) -> Result<PathBuf, String> {
    if let Some(path) = explicit {
        return if exists(path) {
            Ok(path.to_path_buf())
        } else {
            Err(format!("--agent-binary {}: no such file", path.display()))
        };
    }
    let (os, arch) = platform(os, arch);
    let portable = format!("hsm-agent-{arch}-{os}");
    // Where `tools/build-agent.sh` leaves portable builds, relative to the coordinator.
    let mut candidates = candidates(&beside.join("hsm-coordinator"), &portable);
    if os == std::env::consts::OS && arch == std::env::consts::ARCH {
        candidates.push(beside.join("hsm-agent"));
    }
    candidates.into_iter().find(|c| exists(c)).ok_or_else(|| {
        format!(
            "no hsm-agent for {os} {arch} beside {} (looked for {portable} and, for this \
             machine's own platform, hsm-agent) — build one for that host and pass \
             --agent-binary PATH",
            beside.display()
        )
    })
}

/// Where to look for the agent binary `name`, first match wins, for a coordinator installed at
/// `coordinator_exe`: beside it (an install that ships both, e.g. `~/.cargo/bin`), then the
/// `dist/` one level up, which is the checkout's `target/dist/` when the coordinator runs from
/// `target/<profile>/` (for an installed coordinator it names a directory that rarely exists).
/// Never the plain `hsm-agent` beside it: that one is linked against this machine's C library,
/// which a login node's may be older than.
pub fn candidates(coordinator_exe: &Path, name: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Some(dir) = coordinator_exe.parent() {
        out.push(dir.join(name));
        // `target/debug/` or `target/release/` (or `$CARGO_TARGET_DIR/...`) → `target/dist/`.
        if let Some(target) = dir.parent() {
            out.push(target.join("dist").join(name));
        }
    }
    out
}

/// What to do with the daemon.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DaemonAction {
    /// It runs the binary being deployed, on the wanted address: leave it.
    Keep,
    Start,
    /// Stop it, then start the new binary (its ledger keeps its tasks; running ones are ended
    /// and run again as new attempts).
    Restart,
    /// It should be restarted, but it holds tasks and `--restart` was not given.
    Hold,
}

/// The decision, with the reasons the user is told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// Copy the local binary over the installed one.
    pub copy: bool,
    pub daemon: DaemonAction,
    pub notes: Vec<String>,
}

/// Decides from the remote facts, the local binary's SHA-256, the address the daemon should
/// listen on and `--restart`.
pub fn plan(facts: &RemoteFacts, local_sha256: &str, listen: &str, restart: bool) -> Plan {
    let mut notes = Vec::new();
    let copy = match &facts.installed {
        Some(installed) if installed.sha256 == local_sha256 => {
            notes.push(format!(
                "{} at {} is this binary (sha256 matches)",
                or_unknown(&installed.version),
                facts.bin
            ));
            false
        }
        Some(installed) => {
            notes.push(format!(
                "{} at {} differs from this binary: upgrading it",
                or_unknown(&installed.version),
                facts.bin
            ));
            true
        }
        None => {
            notes.push(format!("no hsm-agent at {}: installing it", facts.bin));
            true
        }
    };
    let daemon = match &facts.daemon {
        None => DaemonAction::Start,
        Some(d) => {
            let mut why = Vec::new();
            if copy {
                why.push("its binary is replaced".to_string());
            } else if d.current == Some(false) {
                why.push("it runs a binary replaced since it started".to_string());
            }
            if let Some(now) = d.listen.as_deref().filter(|now| *now != listen) {
                why.push(format!("it listens on {now}, not {listen}"));
            }
            if let (Some(now), Some(wanted)) = (&d.work_dir, &facts.work_dir) {
                if now.trim_end_matches('/') != wanted.trim_end_matches('/') {
                    why.push(format!(
                        "it keeps task directories in {now}, not in work_dir {wanted}"
                    ));
                }
            }
            if why.is_empty() {
                notes.push(format!(
                    "hsm-agent serve runs (pid {}) on {listen}: leaving it",
                    d.pid
                ));
                DaemonAction::Keep
            } else {
                let tasks = d.tasks.unwrap_or(0);
                if tasks > 0 && !restart {
                    notes.push(format!(
                        "hsm-agent serve (pid {}) should restart ({}) but holds {tasks} task{}: \
                         not restarting it — pass --restart to restart it now (queued tasks \
                         wait in its ledger; running ones are ended and run again as new \
                         attempts), or deploy again when it is idle",
                        d.pid,
                        why.join("; "),
                        if tasks == 1 { "" } else { "s" }
                    ));
                    DaemonAction::Hold
                } else {
                    notes.push(format!(
                        "restarting hsm-agent serve (pid {}): {}{}",
                        d.pid,
                        why.join("; "),
                        if tasks > 0 {
                            format!(
                                " — it holds {tasks} task{}: queued ones wait in its ledger, running \
                                 ones are ended and run again as new attempts",
                                if tasks == 1 { "" } else { "s" }
                            )
                        } else {
                            String::new()
                        }
                    ));
                    DaemonAction::Restart
                }
            }
        }
    };
    Plan {
        copy,
        daemon,
        notes,
    }
}

fn or_unknown(version: &str) -> &str {
    if version.is_empty() {
        "an hsm-agent of unknown version"
    } else {
        version
    }
}

/// A word quoted for a POSIX shell (the remote login shell reads the command line ssh sends).
pub fn shell_quote(word: &str) -> String {
    if !word.is_empty()
        && word
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./:=@%+,".contains(&b))
    {
        return word.to_string();
    }
    format!("'{}'", word.replace('\'', r"'\''"))
}

/// Where a remote path given on the command line points, relative paths (and `~/`) taken from
/// the remote home directory (the probe resolves them there).
pub fn remote_path_arg(path: &str) -> String {
    path.strip_prefix("~/").unwrap_or(path).to_string()
}

/// The default `project_dir` on the host: the local project's path relative to the local home,
/// under the remote home (`None` when the project is not under the local home).
pub fn default_project_dir(local_project: &Path, local_home: Option<&Path>) -> Option<String> {
    let rel = local_project.strip_prefix(local_home?).ok()?;
    let rel = rel.to_str()?;
    Some(if rel.is_empty() {
        ".".into()
    } else {
        rel.to_string()
    })
}

/// The `host` part of an ssh destination (`user@host` → `host`).
pub fn destination_host(destination: &str) -> &str {
    destination
        .rsplit_once('@')
        .map_or(destination, |(_, host)| host)
}

/// The `hostname` line of `ssh -G`'s output: the address ssh really connects to.
pub fn hostname_from_ssh_g(text: &str) -> Option<String> {
    text.lines()
        .find_map(|l| l.strip_prefix("hostname "))
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
}

/// `host:port`, bracketing an IPv6 address.
pub fn join_host_port(host: &str, port: u16) -> String {
    if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// A duration in seconds as people read it: `45s`, `12m`, `3h 5m`, `2d 4h`.
pub fn human_duration(secs: u64) -> String {
    match secs {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m", s / 60),
        s if s < 86_400 => format!("{}h {}m", s / 3600, s % 3600 / 60),
        s => format!("{}d {}h", s / 86_400, s % 86_400 / 3600),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHA_A: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    const SHA_B: &str = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";

    fn facts(installed: Option<&str>, daemon: Option<Daemon>) -> RemoteFacts {
        RemoteFacts {
            os: "Linux".into(),
            arch: "x86_64".into(),
            home: "/home/me".into(),
            bin: "/home/me/.local/bin/hsm-agent".into(),
            installed: installed.map(|sha| Installed {
                version: "hsm-agent 0.1.0".into(),
                sha256: sha.into(),
            }),
            daemon,
            ..RemoteFacts::default()
        }
    }

    fn running(tasks: u64, current: bool) -> Daemon {
        Daemon {
            pid: 99,
            version: Some("0.1.0".into()),
            listen: Some("0.0.0.0:7300".into()),
            uptime_secs: Some(10),
            current: Some(current),
            tasks: Some(tasks),
            work_dir: Some("/home/me/.local/state/hsm-agent/work".into()),
        }
    }

    #[test]
    fn parses_the_probe_and_ignores_unknown_lines() {
        let text = "uname Linux x86_64\nhome /home/me\nbin /home/me/.local/bin/hsm-agent\n\
            nproc 8\nproject_dir /home/me/proj\nproject_dir_exists yes\n\
            installed_version hsm-agent 0.1.0\ninstalled_sha256 "
            .to_string()
            + SHA_A
            + "\nstatus_state_dir /home/me/.local/state/hsm-agent\n\
            status_log /home/me/.local/state/hsm-agent/serve.log\nstatus_running yes\n\
            status_pid 4242\nstatus_version 0.1.0\nstatus_listen 0.0.0.0:7300\n\
            status_started 1\nstatus_uptime 65\nstatus_current no\nstatus_tasks 3\n\
            status_work_dir /scratch/me/work\nwork_dir /scratch/me/w2\nsomething_new 1\n";
        let f = parse_facts(&text).unwrap();
        assert_eq!((f.os.as_str(), f.arch.as_str()), ("Linux", "x86_64"));
        assert_eq!(f.nproc, Some(8));
        assert_eq!(f.project_dir, Some(("/home/me/proj".into(), true)));
        assert_eq!(f.installed.as_ref().unwrap().sha256, SHA_A);
        assert_eq!(
            f.log.as_deref(),
            Some("/home/me/.local/state/hsm-agent/serve.log")
        );
        assert_eq!(f.work_dir.as_deref(), Some("/scratch/me/w2"));
        let d = f.daemon.unwrap();
        assert_eq!(
            (d.pid, d.current, d.tasks, d.uptime_secs),
            (4242, Some(false), Some(3), Some(65))
        );
        assert_eq!(d.work_dir.as_deref(), Some("/scratch/me/work"));
    }

    #[test]
    fn a_daemon_in_another_work_dir_restarts_and_an_unknown_one_is_kept() {
        let mut f = facts(Some(SHA_A), Some(running(0, true)));
        let p = plan(&f, SHA_A, "0.0.0.0:7300", false);
        assert_eq!(p.daemon, DaemonAction::Keep, "no work_dir asked for");
        f.work_dir = Some("/scratch/me/hsm".into());
        let p = plan(&f, SHA_A, "0.0.0.0:7300", false);
        assert_eq!(p.daemon, DaemonAction::Restart);
        assert!(
            p.notes.iter().any(|n| n.contains(
                "keeps task directories in /home/me/.local/state/hsm-agent/work, not in \
                 work_dir /scratch/me/hsm"
            )),
            "{p:?}"
        );
        f.work_dir = Some("/home/me/.local/state/hsm-agent/work/".into());
        assert_eq!(
            plan(&f, SHA_A, "0.0.0.0:7300", false).daemon,
            DaemonAction::Keep
        );
        // An agent that does not say where it works is left alone.
        f.work_dir = Some("/scratch/me/hsm".into());
        if let Some(d) = &mut f.daemon {
            d.work_dir = None;
        }
        assert_eq!(
            plan(&f, SHA_A, "0.0.0.0:7300", false).daemon,
            DaemonAction::Keep
        );
    }

    #[test]
    fn a_host_with_nothing_installed_and_a_broken_answer() {
        let f = parse_facts("uname Darwin arm64\nhome /Users/me\nbin /Users/me/x\n").unwrap();
        assert_eq!(f.installed, None);
        assert_eq!(f.daemon, None);
        assert_eq!(f.nproc, None);
        // A failed sha256sum prints nothing usable: treated as not installed (copied again).
        let f = parse_facts("uname Linux x86_64\nhome /h\nbin /h/b\ninstalled_sha256 \n").unwrap();
        assert_eq!(f.installed, None);
        let e = parse_facts("Welcome to the cluster!\n").unwrap_err();
        assert!(e.contains("POSIX sh"), "{e}");
    }

    #[test]
    fn a_fresh_host_gets_the_binary_and_a_start() {
        let p = plan(&facts(None, None), SHA_A, "0.0.0.0:7300", false);
        assert!(p.copy);
        assert_eq!(p.daemon, DaemonAction::Start);
    }

    #[test]
    fn the_same_binary_running_changes_nothing() {
        let p = plan(
            &facts(Some(SHA_A), Some(running(5, true))),
            SHA_A,
            "0.0.0.0:7300",
            false,
        );
        assert!(!p.copy);
        assert_eq!(p.daemon, DaemonAction::Keep, "{:?}", p.notes);
    }

    #[test]
    fn the_same_binary_stopped_is_started_without_copying() {
        let p = plan(&facts(Some(SHA_A), None), SHA_A, "0.0.0.0:7300", false);
        assert!(!p.copy);
        assert_eq!(p.daemon, DaemonAction::Start);
    }

    #[test]
    fn a_new_binary_restarts_an_idle_agent() {
        let p = plan(
            &facts(Some(SHA_B), Some(running(0, true))),
            SHA_A,
            "0.0.0.0:7300",
            false,
        );
        assert!(p.copy);
        assert_eq!(p.daemon, DaemonAction::Restart);
    }

    #[test]
    fn a_busy_agent_is_restarted_only_when_asked() {
        let busy = facts(Some(SHA_B), Some(running(2, true)));
        let p = plan(&busy, SHA_A, "0.0.0.0:7300", false);
        assert!(p.copy, "the binary is installed anyway, for its next start");
        assert_eq!(p.daemon, DaemonAction::Hold);
        assert!(p.notes.iter().any(|n| n.contains("--restart")), "{p:?}");
        let p = plan(&busy, SHA_A, "0.0.0.0:7300", true);
        assert_eq!(p.daemon, DaemonAction::Restart);
        assert!(
            p.notes
                .iter()
                .any(|n| n.contains("holds 2 tasks: queued ones wait in its ledger")),
            "{p:?}"
        );
    }

    #[test]
    fn a_daemon_of_a_replaced_binary_or_another_port_restarts() {
        // Installed already (an earlier deploy held off), still running the old one.
        let p = plan(
            &facts(Some(SHA_A), Some(running(0, false))),
            SHA_A,
            "0.0.0.0:7300",
            false,
        );
        assert!(!p.copy);
        assert_eq!(p.daemon, DaemonAction::Restart);
        let p = plan(
            &facts(Some(SHA_A), Some(running(0, true))),
            SHA_A,
            "0.0.0.0:7301",
            false,
        );
        assert_eq!(p.daemon, DaemonAction::Restart);
        assert!(p.notes.iter().any(|n| n.contains("7301")), "{p:?}");
    }

    #[test]
    fn picks_the_binary_for_the_hosts_platform() {
        let beside = Path::new("/opt/hsm/bin");
        let all = |_: &Path| true;
        let none = |_: &Path| false;
        assert_eq!(
            agent_binary_for("Linux", "x86_64", Some(Path::new("/x/a")), beside, &all).unwrap(),
            Path::new("/x/a")
        );
        assert!(
            agent_binary_for("Linux", "x86_64", Some(Path::new("/x/a")), beside, &none)
                .unwrap_err()
                .contains("--agent-binary")
        );
        // A portable build is preferred to this machine's own binary.
        assert_eq!(
            agent_binary_for("Linux", "x86_64", None, beside, &all).unwrap(),
            Path::new("/opt/hsm/bin/hsm-agent-x86_64-linux")
        );
        let dist = |p: &Path| p == Path::new("/opt/hsm/dist/hsm-agent-aarch64-linux");
        assert_eq!(
            agent_binary_for("Linux", "arm64", None, beside, &dist).unwrap(),
            Path::new("/opt/hsm/dist/hsm-agent-aarch64-linux")
        );
        let own = |p: &Path| p == Path::new("/opt/hsm/bin/hsm-agent");
        let here = (std::env::consts::OS, std::env::consts::ARCH);
        if here == ("linux", "x86_64") {
            assert_eq!(
                agent_binary_for("Linux", "x86_64", None, beside, &own).unwrap(),
                Path::new("/opt/hsm/bin/hsm-agent")
            );
        }
        // Another platform never gets this machine's binary.
        let e = agent_binary_for("Darwin", "arm64", None, beside, &own).unwrap_err();
        assert!(
            e.contains("macos aarch64") && e.contains("--agent-binary"),
            "{e}"
        );
    }

    #[test]
    fn quoting_and_paths() {
        assert_eq!(shell_quote("/home/me/x"), "/home/me/x");
        assert_eq!(shell_quote("a b"), "'a b'");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
        assert_eq!(shell_quote(""), "''");
        assert_eq!(shell_quote("$(rm -rf ~)"), "'$(rm -rf ~)'");
        assert_eq!(remote_path_arg("~/bin/hsm-agent"), "bin/hsm-agent");
        assert_eq!(
            default_project_dir(Path::new("/home/me/work/p"), Some(Path::new("/home/me"))),
            Some("work/p".into())
        );
        assert_eq!(
            default_project_dir(Path::new("/srv/p"), Some(Path::new("/home/me"))),
            None
        );
        assert_eq!(destination_host("me@login1"), "login1");
        assert_eq!(destination_host("login1"), "login1");
        assert_eq!(
            hostname_from_ssh_g("user me\nhostname 10.0.0.2\nport 22\n"),
            Some("10.0.0.2".into())
        );
        assert_eq!(join_host_port("::1", 7300), "[::1]:7300");
        assert_eq!(join_host_port("h", 7300), "h:7300");
        assert_eq!(human_duration(59), "59s");
        assert_eq!(human_duration(3 * 3600 + 300), "3h 5m");
    }

    #[test]
    fn looks_beside_the_coordinator_then_in_the_checkout_dist_dir() {
        let name = "hsm-agent-x86_64-linux";
        assert_eq!(
            candidates(Path::new("/src/hsm/target/debug/hsm-coordinator"), name),
            vec![
                PathBuf::from("/src/hsm/target/debug/hsm-agent-x86_64-linux"),
                PathBuf::from("/src/hsm/target/dist/hsm-agent-x86_64-linux"),
            ]
        );
        assert_eq!(
            candidates(Path::new("/home/me/.cargo/bin/hsm-coordinator"), name),
            vec![
                PathBuf::from("/home/me/.cargo/bin/hsm-agent-x86_64-linux"),
                PathBuf::from("/home/me/.cargo/dist/hsm-agent-x86_64-linux"),
            ]
        );
    }
}

//! Two OpenSSH hosts in network namespaces for the tests that go through a real `ssh`
//! (`tests/ssh-netns.sh`): h1 reachable over UDP, h2 dropping all UDP from outside. Brought up
//! per test under a short temporary directory and taken down when dropped.

use std::path::{Path, PathBuf};

/// The hosts of one test and a coordinator state dir (`HSM_HOME`) for it. On drop: the ssh
/// control masters under that home closed (through their sockets), then `ssh-netns.sh down`
/// (sshds and agents left in the hosts' homes stopped by PID, namespaces and route removed).
pub struct SshHosts {
    pub dir: tempfile::TempDir,
    pub home: tempfile::TempDir,
    /// The hosts' /24 prefix (`10.233.K`): h1 is `NET.2`, h2 `NET.6`.
    pub net: String,
    /// The namespace prefix: h1 runs in `TAG-h1`, h2 in `TAG-h2`.
    pub tag: String,
}

impl Drop for SshHosts {
    fn drop(&mut self) {
        close_masters(self.home.path());
        let _ = std::process::Command::new(script())
            .arg("down")
            .arg(self.dir.path())
            .status();
    }
}

pub fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/ssh-netns.sh")
}

/// Asks every control master under `HSM_HOME/ssh` to exit (the coordinator starts them with
/// ControlPersist; they are this test's).
pub fn close_masters(home: &Path) {
    for entry in std::fs::read_dir(home.join("ssh"))
        .into_iter()
        .flatten()
        .flatten()
    {
        let _ = std::process::Command::new("ssh")
            .arg("-S")
            .arg(entry.path())
            .args(["-O", "exit", "h"])
            .stderr(std::process::Stdio::null())
            .status();
    }
}

/// Brings the hosts up, or says why they cannot be here (not root, no sshd). `path`, when
/// given, is the PATH of ssh sessions on both hosts.
pub fn up(tag: &str, path: Option<&str>) -> Result<SshHosts, String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Err("not root (network namespaces and sshd need it)".into());
    }
    for tool in ["/usr/sbin/sshd", "/usr/bin/ssh"] {
        if !Path::new(tool).exists() {
            return Err(format!(
                "no {tool} (openssh-server, openssh-client; tests/run-all.sh installs them as root)"
            ));
        }
    }
    // Short: ssh's ControlPath is a socket path.
    let dir = tempfile::Builder::new()
        .prefix("hd")
        .tempdir_in("/tmp")
        .unwrap();
    let home = tempfile::Builder::new()
        .prefix("hh")
        .tempdir_in("/tmp")
        .unwrap();
    let mut cmd = std::process::Command::new(script());
    cmd.arg("up").arg(dir.path()).arg(tag);
    if let Some(path) = path {
        cmd.env("SSH_NETNS_PATH", path);
    }
    let out = cmd
        .output()
        .map_err(|e| format!("cannot run tests/ssh-netns.sh: {e}"))?;
    let net = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let hosts = SshHosts {
        dir,
        home,
        net,
        tag: tag.to_string(),
    };
    if !out.status.success() {
        // Not a reason to skip: the prerequisites are there, so this is a failure.
        panic!(
            "tests/ssh-netns.sh up failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(hosts)
}

impl SshHosts {
    /// The ssh config naming both hosts (`ssh -F FILE h1`).
    pub fn ssh_config(&self) -> PathBuf {
        self.dir.path().join("ssh_config")
    }

    /// `host`'s home directory (what its ssh sessions see as `$HOME`).
    pub fn remote_home(&self, host: &str) -> PathBuf {
        self.dir.path().join(host).join("home")
    }

    /// Successful ssh logins in `host`'s sshd log so far.
    pub fn logins(&self, host: &str) -> usize {
        std::fs::read_to_string(self.dir.path().join(host).join("sshd.log"))
            .unwrap_or_default()
            .matches("Accepted publickey")
            .count()
    }

    /// The IP address of `host` (`h1` or `h2`).
    pub fn ip(&self, host: &str) -> String {
        format!("{}.{}", self.net, if host == "h1" { 2 } else { 6 })
    }
}

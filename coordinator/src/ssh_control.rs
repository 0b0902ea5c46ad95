//! The one shared ssh connection per host: a ControlMaster socket under `HSM_HOME/ssh`, named
//! by the destination and the user's ssh options, so `agent deploy`, `agent status|logs|stop`
//! and the ssh transport's relays (a sweep's, `agent ping`'s, deploy's own wait) all go through
//! the connection the first of them authenticated — a 2FA prompt appears once, and a relay
//! restarted after `kill` logs in again without one.

use anyhow::Context as _;
use sha2::Digest as _;
use std::path::{Path, PathBuf};

/// How long the shared connection outlives its last command.
pub const CONTROL_PERSIST: &str = "10m";
/// A Unix socket path must fit in `sockaddr_un` (108 bytes on Linux, 104 on macOS), and ssh
/// binds a longer temporary name first.
const MAX_CONTROL_PATH: usize = 80;

/// The control socket for `destination` with these options: short (a socket path is limited),
/// one per destination and option set, in `HSM_HOME/ssh` (0700), else under /tmp when that path
/// would be too long.
pub fn control_path(destination: &str, options: &[String]) -> anyhow::Result<PathBuf> {
    let name = socket_name(destination, options);
    let mut dir = crate::home::state_dir()?.join("ssh");
    if dir.join(&name).as_os_str().len() > MAX_CONTROL_PATH {
        // SAFETY: getuid has no preconditions.
        dir = PathBuf::from(format!("/tmp/hsm-ssh-{}", unsafe { libc::getuid() }));
    }
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))
        .with_context(|| format!("making {} private", dir.display()))?;
    Ok(dir.join(name))
}

/// The socket's file name: a hash of what decides which connection it is.
fn socket_name(destination: &str, options: &[String]) -> String {
    let mut hash = sha2::Sha256::new();
    hash.update(destination.trim().as_bytes());
    for option in options {
        hash.update([0]);
        hash.update(option.as_bytes());
    }
    hash.finalize()
        .iter()
        .take(8)
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The `ssh` options that use (or start) the shared connection at `path`.
pub fn control_options(path: &Path) -> Vec<String> {
    vec![
        "-o".into(),
        "ControlMaster=auto".into(),
        "-o".into(),
        format!("ControlPath={}", path.display()),
        "-o".into(),
        format!("ControlPersist={CONTROL_PERSIST}"),
    ]
}

/// True when the user's options already say how to share connections (`-S`, `ControlPath`,
/// `ControlMaster`, `-M`): theirs is kept and none is added.
pub fn names_control(options: &[String]) -> bool {
    options.iter().any(|o| {
        let lower = o.to_ascii_lowercase();
        o.starts_with("-S")
            || o == "-M"
            || lower.contains("controlpath")
            || lower.contains("controlmaster")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn one_socket_per_destination_and_option_set() {
        let f = strings(&["-F", "/x/ssh_config"]);
        assert_eq!(socket_name("h1", &f), socket_name(" h1 ", &f));
        assert_ne!(socket_name("h1", &f), socket_name("h2", &f));
        assert_ne!(socket_name("h1", &f), socket_name("h1", &[]));
        // Arguments are separated: ["-F", "x"] is not ["-Fx"].
        assert_ne!(
            socket_name("h1", &strings(&["-F", "x"])),
            socket_name("h1", &strings(&["-Fx"]))
        );
        assert_eq!(socket_name("h1", &f).len(), 16);
    }

    #[test]
    fn the_users_own_control_options_are_recognised() {
        for own in [
            &["-o", "ControlPath=~/.ssh/cm-%C"][..],
            &["-o", "controlmaster=no"],
            &["-S", "/tmp/s"],
            &["-M"],
        ] {
            assert!(names_control(&strings(own)), "{own:?}");
        }
        assert!(!names_control(&strings(&["-F", "/x", "-p", "2222"])));
        assert!(!names_control(&[]));
    }

    #[test]
    fn the_options_start_or_join_the_shared_connection() {
        let options = control_options(Path::new("/h/ssh/ab"));
        assert_eq!(
            options,
            strings(&[
                "-o",
                "ControlMaster=auto",
                "-o",
                "ControlPath=/h/ssh/ab",
                "-o",
                "ControlPersist=10m"
            ])
        );
    }
}

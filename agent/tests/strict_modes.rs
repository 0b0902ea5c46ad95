//! `hsm-agent serve` as a real process refuses a state directory another local user could change
//! (OpenSSH's StrictModes): exit 2 with the path and the chmod/chown that fixes it; and a trust
//! file swapped for another user's while it serves admits nobody. The ownership cases need root
//! to chown a file to another user; without root they are skipped and say why (CI runs as root).

use hsm_agent::identity::{AuthorizedKeys, Identity, AUTHORIZED_FILE};
use hsm_agent::tls::{self, TransportOptions};
use std::io::{BufRead, BufReader, Read};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Hang guard for the daemon to exit or to print its address (milliseconds when idle).
const LIMIT: Duration = Duration::from_secs(60);
/// A user that is not the test's: `nobody` on most systems.
const OTHER_UID: u32 = 65534;

fn is_root() -> bool {
    hsm_agent::strict::euid() == 0
}

/// A state dir with an identity and one authorized coordinator; returns (tempdir, state dir).
fn state_dir() -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let state = tmp.path().join("state");
    Identity::load_or_create(&state, "hsm-agent").unwrap();
    let coordinator = Identity::generate("hsm-coordinator").unwrap();
    AuthorizedKeys::authorize(&state, &coordinator.fingerprint()).unwrap();
    (tmp, state)
}

fn serve(state: &Path) -> Child {
    Command::new(env!("CARGO_BIN_EXE_hsm-agent"))
        .args(["serve", "--listen", "127.0.0.1:0", "--slots", "1"])
        .arg("--state-dir")
        .arg(state)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start hsm-agent serve")
}

/// Runs `serve` and expects it to stop at once: its exit code and stderr.
fn serve_refused(state: &Path) -> (i32, String) {
    let mut child = serve(state);
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > LIMIT {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "hsm-agent serve did not refuse the state dir {}",
                state.display()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    (status.code().unwrap_or(-1), stderr)
}

fn chmod(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

fn chown(path: &Path, uid: u32) {
    std::os::unix::fs::chown(path, Some(uid), None).unwrap();
}

#[test]
fn a_state_dir_everyone_can_write_is_refused_with_the_chmod() {
    let (_tmp, state) = state_dir();
    chmod(&state, 0o777);
    let (code, stderr) = serve_refused(&state);
    assert_eq!(code, 2, "{stderr}");
    let real = std::fs::canonicalize(&state).unwrap();
    assert!(
        stderr.contains(&format!(
            "{} is writable by its group and every user (mode 0777)",
            real.display()
        )),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!("run `chmod go-w {}`", real.display())),
        "{stderr}"
    );
    // Fixed as it says: it serves.
    chmod(&state, 0o700);
    let mut child = serve(&state);
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first = lines.next().map(Result::unwrap).unwrap_or_default();
    let _ = child.kill();
    let _ = child.wait();
    assert!(first.starts_with("listening on "), "{first}");
}

#[test]
fn a_group_writable_authorized_coordinators_is_refused_at_start() {
    let (_tmp, state) = state_dir();
    let file = state.join(AUTHORIZED_FILE);
    chmod(&file, 0o620);
    let (code, stderr) = serve_refused(&state);
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("writable by its group (mode 0620)"),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!("run `chmod go-w {}`", file.display())),
        "{stderr}"
    );
}

#[test]
fn authorized_coordinators_owned_by_another_user_is_refused() {
    if !is_root() {
        eprintln!("skipped: only root can give a file to another user (CI runs as root)");
        return;
    }
    let (_tmp, state) = state_dir();
    let file = state.join(AUTHORIZED_FILE);
    chown(&file, OTHER_UID);
    let (code, stderr) = serve_refused(&state);
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains(&format!("{} is owned by", file.display()))
            && stderr.contains(&format!("(uid {OTHER_UID})")),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!("run `chown root {}`", file.display())),
        "{stderr}"
    );
}

#[test]
fn a_parent_of_the_state_dir_owned_by_another_user_is_refused() {
    if !is_root() {
        eprintln!("skipped: only root can give a directory to another user (CI runs as root)");
        return;
    }
    let (tmp, state) = state_dir();
    chown(tmp.path(), OTHER_UID);
    let (code, stderr) = serve_refused(&state);
    assert_eq!(code, 2, "{stderr}");
    let parent = std::fs::canonicalize(tmp.path()).unwrap();
    assert!(
        stderr.contains(&format!("{} is owned by", parent.display())),
        "{stderr}"
    );
    assert!(stderr.contains("--state-dir"), "{stderr}");
}

/// The reported attack: the daemon runs with a good state dir, then another local user puts
/// their own 0600 `authorized_coordinators` (listing their key) in its place. They must not get in.
#[tokio::test]
async fn a_trust_file_swapped_for_another_users_admits_nobody() {
    if !is_root() {
        eprintln!("skipped: only root can give a file to another user (CI runs as root)");
        return;
    }
    let (_tmp, state) = state_dir();
    let mut child = serve(&state);
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let addr: std::net::SocketAddr = lines
        .next()
        .unwrap()
        .unwrap()
        .strip_prefix("listening on ")
        .unwrap()
        .parse()
        .unwrap();
    let fingerprint = lines.next().unwrap().unwrap();
    let fingerprint = fingerprint.strip_prefix("fingerprint ").unwrap();

    let intruder = Identity::generate("intruder").unwrap();
    let swapped = state.join("swapped");
    std::fs::write(&swapped, format!("{}\n", intruder.fingerprint())).unwrap();
    chmod(&swapped, 0o600);
    chown(&swapped, OTHER_UID);
    std::fs::rename(&swapped, state.join(AUTHORIZED_FILE)).unwrap();

    let endpoint = tls::client_endpoint("127.0.0.1:0".parse().unwrap()).unwrap();
    let config = tls::client_config(&intruder, fingerprint, TransportOptions::default()).unwrap();
    let dialed = tls::connect(&endpoint, addr, config, LIMIT).await;
    let _ = child.kill();
    let _ = child.wait();
    assert!(dialed.is_err(), "the intruder was let in");
}

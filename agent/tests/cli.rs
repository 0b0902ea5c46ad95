//! End-to-end tests of the `hsm-agent` identity commands through the real binary.

use std::os::unix::fs::PermissionsExt;
use std::process::Command;

fn agent(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_hsm-agent"))
        .args(args)
        .env_remove("HSM_AGENT_HOME")
        .output()
        .expect("run hsm-agent")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn init_fingerprint_and_authorize() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let state_arg = state.to_str().unwrap();

    let out = agent(&["fingerprint", "--state-dir", state_arg]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("hsm-agent init"),
        "{}",
        text(&out.stderr)
    );

    let out = agent(&["init", "--state-dir", state_arg]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let fingerprint = text(&out.stdout).trim().to_string();
    assert!(
        fingerprint.starts_with("sha256:") && fingerprint.len() == 7 + 64,
        "{fingerprint}"
    );
    for entry in std::fs::read_dir(&state).unwrap().flatten() {
        let mode = entry.metadata().unwrap().permissions().mode() & 0o777;
        assert_eq!(
            mode & 0o077,
            0,
            "{} is mode {mode:o}",
            entry.path().display()
        );
    }
    // init is idempotent; fingerprint agrees.
    let again = agent(&["init", "--state-dir", state_arg]);
    assert_eq!(text(&again.stdout).trim(), fingerprint);
    let fp = agent(&["fingerprint", "--state-dir", state_arg]);
    assert_eq!(text(&fp.stdout).trim(), fingerprint);

    let coordinator = format!("sha256:{}", "ab".repeat(32));
    let out = agent(&["authorize", &coordinator, "--state-dir", state_arg]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let listed = std::fs::read_to_string(state.join("authorized_coordinators")).unwrap();
    assert!(listed.contains(&coordinator), "{listed}");
    let twice = agent(&["authorize", &coordinator, "--state-dir", state_arg]);
    assert!(
        text(&twice.stderr).contains("already"),
        "{}",
        text(&twice.stderr)
    );
    assert_eq!(
        std::fs::read_to_string(state.join("authorized_coordinators"))
            .unwrap()
            .matches(&coordinator)
            .count(),
        1
    );

    let bad = agent(&["authorize", "sha256:nothex", "--state-dir", state_arg]);
    assert_eq!(bad.status.code(), Some(2), "{}", text(&bad.stderr));
}

//! End-to-end tests of `hsm-coordinator identity`, `agent add` and `agent list`.

mod common;

use common::*;

#[test]
fn identity_is_created_once_under_hsm_home() {
    let home = tempfile::tempdir().unwrap();
    let p = Project::new(CONFIG, &[]);
    let first = p
        .command(&["identity"])
        .env("HSM_HOME", home.path())
        .output()
        .unwrap();
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    let fingerprint = String::from_utf8_lossy(&first.stdout).trim().to_string();
    assert!(
        fingerprint.starts_with("sha256:") && fingerprint.len() == 71,
        "{fingerprint}"
    );
    let second = p
        .command(&["identity"])
        .env("HSM_HOME", home.path())
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&second.stdout).trim(), fingerprint);
}

#[test]
fn agent_add_writes_a_valid_source_and_list_shows_it() {
    let p = Project::new(
        "# my project\ncommand:\n  python: python3\n  script: task.py\n",
        &[("task.py", "")],
    );
    let fp = format!("sha256:{}", "0f".repeat(32));
    let run = p.run(&[
        "agent",
        "add",
        "gpu1",
        "127.0.0.1:7300",
        "--fingerprint",
        &fp,
        "--slots",
        "4",
    ]);
    run.expect_code(0);
    let config = std::fs::read_to_string(p.path().join(".hsm/config.yaml")).unwrap();
    assert!(
        config.starts_with("# my project"),
        "comments kept: {config}"
    );
    p.run(&["config", "validate"]).expect_code(0);
    let list = p.run(&["agent", "list"]);
    list.expect_code(0);
    assert!(
        list.stdout.contains("gpu1") && list.stdout.contains(&fp),
        "{}",
        list.stdout
    );

    for bad in [
        &["agent", "add", "gpu2", "no-port", "--fingerprint", &fp][..],
        &[
            "agent",
            "add",
            "gpu2",
            "127.0.0.1:7300",
            "--fingerprint",
            "sha256:xyz",
        ],
        &[
            "agent",
            "add",
            "bad name",
            "127.0.0.1:7300",
            "--fingerprint",
            &fp,
        ],
        &[
            "agent",
            "add",
            "gpu2",
            "127.0.0.1:7300",
            "--fingerprint",
            &fp,
            "--slots",
            "0",
        ],
    ] {
        p.run(bad).expect_code(2);
    }
    assert_eq!(
        std::fs::read_to_string(p.path().join(".hsm/config.yaml")).unwrap(),
        config,
        "a refused add changes nothing"
    );
}

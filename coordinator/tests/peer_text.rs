//! Text from an agent reaches the user's terminal escaped, never raw: a real `hsm-agent serve`
//! started with a `--name` holding ESC sequences (a window title, a line erase), CR/LF (a forged
//! line), BEL and a bidi override; `agent ping` and `sweep run` show it escaped.

mod common;

use common::*;

const EVIL: &str = "evil\x1b]0;pwned\x07\r\nFORGED: all tasks completed\x1b[2K\u{202e}";
const SHOWN: &str = "evil\\x1b]0;pwned\\x07\\r\\nFORGED: all tasks completed\\x1b[2K\\u{202e}";

/// No control character of the agent's name got through, and no line was forged.
fn assert_clean(what: &str, text: &str) {
    for c in ['\x1b', '\x07', '\r', '\u{202e}'] {
        assert!(!text.contains(c), "{what} holds {c:?}: {text:?}");
    }
    assert!(
        !text.lines().any(|l| l.starts_with("FORGED")),
        "{what} has a forged line: {text:?}"
    );
}

#[test]
fn an_agents_name_with_terminal_controls_is_printed_escaped() {
    let Some(agent_bin) = agent_bin() else {
        return;
    };
    let home = tempfile::tempdir().unwrap();
    let p = Project::new(
        CONFIG,
        &[
            ("task.py", "print('hi')\n"),
            ("sweeps/sweep.yaml", "sweep:\n  grid:\n    x: [1, 2]\n"),
        ],
    );
    let own_fp = coordinator_fingerprint(&p, home.path());
    let agent = start_agent_with(&agent_bin, None, "127.0.0.1:0", &["--name", EVIL]);
    enlist(&p, &agent_bin, &agent, "a0", &own_fp);

    let ping = p
        .command(&["agent", "ping", "a0"])
        .env("HSM_HOME", home.path())
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&ping.stdout);
    assert_eq!(ping.status.code(), Some(0), "{out}");
    assert!(out.contains("ok, round trip"), "{out}");
    assert!(out.contains(SHOWN), "{out:?}");
    assert_clean("agent ping", &out);

    let mut cmd = p.command(&["sweep", "run", "--sources", "a0", "--sweep-id", "named"]);
    cmd.env("HSM_HOME", home.path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let run = Run::wait(cmd.spawn().unwrap(), "sweep run on the agent".into());
    run.expect_code(0);
    assert!(
        run.stderr.contains(&format!("connected to {SHOWN}")),
        "{:?}",
        run.stderr
    );
    assert_clean("sweep run", &run.stderr);
    assert_clean("sweep run", &run.stdout);
}

//! How the coordinator reaches an agent source: `transport: quic | ssh | auto` and the ssh
//! target (`ssh: [user@]host`, `ssh_options: [...]`), read and checked here so the source
//! resolver only calls [`resolve_transport`].

use super::raw::At;
use crate::core::diag::Problem;

/// `transport:` of an agent source.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TransportMode {
    /// QUIC over UDP straight to `address`.
    Quic,
    /// The same QUIC connection carried over `ssh HOST hsm-agent relay` (UDP blocked).
    Ssh,
    /// UDP first with a short timeout, then ssh when an ssh target is configured.
    #[default]
    Auto,
}

impl TransportMode {
    pub const ALL: [TransportMode; 3] =
        [TransportMode::Quic, TransportMode::Ssh, TransportMode::Auto];

    pub fn as_str(self) -> &'static str {
        match self {
            TransportMode::Quic => "quic",
            TransportMode::Ssh => "ssh",
            TransportMode::Auto => "auto",
        }
    }
}

/// How to reach an agent's host with the system `ssh` client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SshTarget {
    /// `[user@]host`, or a `Host` alias of `~/.ssh/config`.
    pub target: String,
    /// Extra arguments for `ssh` before the target (e.g. `-p`, `2222`, `-o`, `ControlPath=...`).
    pub options: Vec<String>,
}

/// An agent source's transport, validated.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AgentTransport {
    pub mode: TransportMode,
    pub ssh: Option<SshTarget>,
}

/// Reads `transport`, `ssh` and `ssh_options` of one agent source.
pub(super) fn resolve_transport(
    transport: Option<&At<String>>,
    ssh: Option<&At<String>>,
    ssh_options: Option<&At<Vec<String>>>,
    problems: &mut Vec<Problem>,
) -> AgentTransport {
    let mode = match transport {
        None => TransportMode::default(),
        Some(at) => {
            let wanted = at.value.trim();
            match TransportMode::ALL
                .into_iter()
                .find(|m| m.as_str() == wanted)
            {
                Some(mode) => mode,
                None => {
                    problems.push(
                        at.problem(format!("unknown transport `{}`", at.value))
                            .with_hint(
                                "expected one of: quic (UDP to `address`), ssh (through `ssh` \
                                 when UDP is blocked), auto (UDP, else ssh)",
                            ),
                    );
                    TransportMode::default()
                }
            }
        }
    };
    let target =
        ssh.and_then(|at| match check_ssh_target(&at.value) {
            Ok(target) => Some(target),
            Err(why) => {
                problems.push(at.problem(why).with_hint(
                    "write e.g. ssh: alice@login.cluster.org (options go in ssh_options)",
                ));
                None
            }
        });
    if let (Some(at), None) = (ssh_options, ssh) {
        problems.push(
            at.problem("ssh_options without ssh")
                .with_hint("add ssh: [user@]host (how to reach this agent's host with ssh)"),
        );
    }
    if let (TransportMode::Ssh, Some(at), None) = (mode, transport, ssh) {
        problems.push(
            at.problem("transport: ssh needs `ssh: [user@]host` in this source")
                .with_hint(
                    "add ssh: user@host (the host `ssh` reaches, as in `ssh user@host`), or use \
                     transport: quic",
                ),
        );
    }
    AgentTransport {
        mode,
        ssh: target.map(|target| SshTarget {
            target,
            options: ssh_options.map(|at| at.value.clone()).unwrap_or_default(),
        }),
    }
}

/// `[user@]host` as `ssh` takes it: one word, not an option.
fn check_ssh_target(value: &str) -> Result<String, String> {
    let target = value.trim();
    if target.is_empty() {
        Err("is empty".into())
    } else if target.starts_with('-') {
        Err(format!(
            "`{target}` is not an ssh host: it starts with `-` (an option)"
        ))
    } else if target.chars().any(|c| c.is_whitespace() || c.is_control()) {
        Err(format!(
            "`{target}` is not an ssh host: it contains a space"
        ))
    } else {
        Ok(target.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::yaml::Pos;

    fn at<T>(value: T, path: &str) -> At<T> {
        At {
            value,
            pos: Pos::default(),
            path: path.to_string(),
        }
    }

    fn resolve(
        transport: Option<&str>,
        ssh: Option<&str>,
        options: Option<Vec<&str>>,
    ) -> (AgentTransport, Vec<String>) {
        let mut problems = Vec::new();
        let t = transport.map(|v| at(v.to_string(), "sources.a.transport"));
        let s = ssh.map(|v| at(v.to_string(), "sources.a.ssh"));
        let o = options.map(|v| {
            at(
                v.into_iter().map(String::from).collect::<Vec<_>>(),
                "sources.a.ssh_options",
            )
        });
        let out = resolve_transport(t.as_ref(), s.as_ref(), o.as_ref(), &mut problems);
        (
            out,
            problems
                .iter()
                .map(|p| {
                    format!(
                        "{}: {} ({})",
                        p.path,
                        p.message,
                        p.hint.clone().unwrap_or_default()
                    )
                })
                .collect(),
        )
    }

    #[test]
    fn the_default_is_auto_without_an_ssh_target() {
        assert_eq!(
            resolve(None, None, None),
            (AgentTransport::default(), vec![])
        );
        assert_eq!(AgentTransport::default().mode, TransportMode::Auto);
    }

    #[test]
    fn ssh_with_a_target_and_options_is_kept_as_written() {
        let (t, problems) = resolve(Some("ssh"), Some(" alice@login "), Some(vec!["-p", "2222"]));
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(t.mode, TransportMode::Ssh);
        assert_eq!(
            t.ssh,
            Some(SshTarget {
                target: "alice@login".into(),
                options: vec!["-p".into(), "2222".into()]
            })
        );
    }

    #[test]
    fn transport_ssh_without_a_target_is_refused_with_the_fix() {
        let (_, problems) = resolve(Some("ssh"), None, None);
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(
            problems[0].contains("sources.a.transport"),
            "{}",
            problems[0]
        );
        assert!(
            problems[0].contains("needs `ssh: [user@]host`"),
            "{}",
            problems[0]
        );
    }

    #[test]
    fn an_unknown_transport_names_the_choices() {
        let (_, problems) = resolve(Some("udp"), None, None);
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(
            problems[0].contains("unknown transport `udp`"),
            "{}",
            problems[0]
        );
        assert!(problems[0].contains("quic"), "{}", problems[0]);
    }

    #[test]
    fn an_ssh_target_that_is_an_option_or_has_spaces_is_refused() {
        for bad in ["-oProxyCommand=x", "a b", ""] {
            let (t, problems) = resolve(None, Some(bad), None);
            assert_eq!(problems.len(), 1, "{bad:?}: {problems:?}");
            assert!(problems[0].contains("sources.a.ssh"), "{}", problems[0]);
            assert_eq!(t.ssh, None);
        }
    }

    #[test]
    fn ssh_options_without_ssh_are_reported() {
        let (_, problems) = resolve(None, None, Some(vec!["-v"]));
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(
            problems[0].contains("ssh_options without ssh"),
            "{}",
            problems[0]
        );
    }
}

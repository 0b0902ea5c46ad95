//! The transport layer under an agent connection: QUIC over UDP to the agent's address, or the
//! same QUIC connection over a pipe to `ssh HOST hsm-agent relay` where UDP is blocked
//! (`transport: ssh`), or UDP first and ssh after a short timeout (`auto`). Everything above —
//! mutual TLS, the protocol, the agent's ledger — is the same either way.

use crate::config::{AgentTransport, SshTarget, TransportMode};
use hsm_transport::identity::Identity;
use hsm_transport::tls::stdio_socket::{Relay, RelayCommand};
use hsm_transport::tls::{self, DialError, TransportOptions};
use std::net::{SocketAddr, ToSocketAddrs};
use std::time::Duration;

/// The environment variable naming the program run instead of `ssh` (as `GIT_SSH` does for
/// git): it gets the same arguments. Tests use it to run the relay locally.
pub const SSH_PROGRAM_ENV: &str = "HSM_SSH";

/// How long `auto` waits for an answer over UDP before it tries ssh.
pub const AUTO_UDP_TIMEOUT: Duration = Duration::from_secs(3);

/// A dialled connection and what carries it. Drop `relay` only after the endpoint is idle.
pub struct Dialled {
    pub endpoint: quinn::Endpoint,
    pub conn: quinn::Connection,
    /// The ssh child carrying the connection, when it goes over ssh.
    pub relay: Option<Relay>,
}

impl Dialled {
    /// How it is carried, for the "connected to" note: empty for UDP, else " over ssh to X".
    pub fn via(&self, transport: &AgentTransport) -> String {
        match (&self.relay, &transport.ssh) {
            (Some(_), Some(ssh)) => format!(" over ssh to {}", ssh.target),
            _ => String::new(),
        }
    }

    /// Resolves when the relay child has exited (never for UDP), with why.
    pub async fn relay_ended(&self) -> String {
        match &self.relay {
            Some(relay) => relay.ended().await,
            None => std::future::pending().await,
        }
    }
}

/// Why dialling failed.
pub enum DialFailure {
    /// Worth trying again later.
    Retry(String),
    /// One side refused the other; trying again cannot help.
    Refused(String),
}

/// What to dial and how.
#[derive(Clone, Copy)]
pub struct Target<'a> {
    pub address: &'a str,
    pub fingerprint: &'a str,
    pub transport: &'a AgentTransport,
    pub options: TransportOptions,
    /// The usual wait for a handshake.
    pub timeout: Duration,
}

/// Dials the agent the way `transport` says. `chosen` remembers what `auto` found working, so a
/// reconnect goes straight to it (no UDP timeout before every ssh reconnect) while it works.
pub async fn dial(
    target: &Target<'_>,
    identity: &Identity,
    chosen: &mut Option<TransportMode>,
) -> Result<Dialled, DialFailure> {
    let ssh = target.transport.ssh.as_ref();
    match (target.transport.mode, ssh, *chosen) {
        (TransportMode::Ssh, Some(ssh), _) => dial_ssh(target, ssh, identity).await,
        // What worked before; if it fails now, the next dial tries UDP then ssh again.
        (TransportMode::Auto, Some(ssh), Some(mode)) => {
            let dialled = match mode {
                TransportMode::Ssh => dial_ssh(target, ssh, identity).await,
                _ => dial_udp(target, identity).await,
            };
            if dialled.is_err() {
                *chosen = None;
            }
            dialled
        }
        (TransportMode::Auto, Some(ssh), None) => {
            let udp = Target {
                timeout: AUTO_UDP_TIMEOUT.min(target.timeout),
                ..*target
            };
            match dial_udp(&udp, identity).await {
                Ok(dialled) => {
                    *chosen = Some(TransportMode::Quic);
                    Ok(dialled)
                }
                Err(DialFailure::Refused(why)) => Err(DialFailure::Refused(why)),
                Err(DialFailure::Retry(udp_why)) => {
                    tracing::info!(address = target.address, why = %udp_why, "no answer over UDP; trying ssh");
                    match dial_ssh(target, ssh, identity).await {
                        Ok(dialled) => {
                            *chosen = Some(TransportMode::Ssh);
                            Ok(dialled)
                        }
                        Err(DialFailure::Retry(ssh_why)) => Err(DialFailure::Retry(format!(
                            "{udp_why}; over ssh: {ssh_why}"
                        ))),
                        Err(refused) => Err(refused),
                    }
                }
            }
        }
        // `ssh` without a target is refused by config validation; dial UDP as the fallback.
        _ => dial_udp(target, identity).await,
    }
}

/// QUIC over UDP to the agent's address.
async fn dial_udp(target: &Target<'_>, identity: &Identity) -> Result<Dialled, DialFailure> {
    let address = target.address;
    let addr = address
        .to_socket_addrs()
        .map_err(|e| DialFailure::Retry(format!("cannot resolve {address}: {e}")))?
        .next()
        .ok_or_else(|| DialFailure::Retry(format!("{address} resolves to no address")))?;
    let bind: SocketAddr = if addr.is_ipv6() {
        "[::]:0".parse().expect("literal")
    } else {
        "0.0.0.0:0".parse().expect("literal")
    };
    let endpoint = tls::client_endpoint(bind).map_err(|e| DialFailure::Retry(e.to_string()))?;
    let conn = handshake(target, identity, &endpoint, addr, None).await?;
    Ok(Dialled {
        endpoint,
        conn,
        relay: None,
    })
}

/// The same QUIC connection through `ssh TARGET hsm-agent relay --to 127.0.0.1:PORT`.
async fn dial_ssh(
    target: &Target<'_>,
    ssh: &SshTarget,
    identity: &Identity,
) -> Result<Dialled, DialFailure> {
    let port = port_of(target.address).ok_or_else(|| {
        DialFailure::Refused(format!(
            "{} has no port: the relay needs the agent's UDP port on its host",
            target.address
        ))
    })?;
    // The relay sends to the agent's loopback address; to quinn the pipe is a path to it.
    let peer = SocketAddr::from(([127, 0, 0, 1], port));
    // The connection `agent deploy` (or an earlier relay) authenticated, unless the user's
    // options say how to share connections themselves.
    let control = if crate::ssh_control::names_control(&ssh.options) {
        Vec::new()
    } else {
        match crate::ssh_control::control_path(&ssh.target, &ssh.options) {
            Ok(path) => crate::ssh_control::control_options(&path),
            Err(e) => {
                tracing::warn!(error = %format!("{e:#}"), "no shared ssh connection; each relay logs in");
                Vec::new()
            }
        }
    };
    let command = relay_command(
        ssh,
        &control,
        port,
        std::env::var(SSH_PROGRAM_ENV).ok().as_deref(),
    );
    let relay = Relay::spawn(&command, peer).map_err(|e| DialFailure::Retry(e.to_string()))?;
    let endpoint = relay
        .client_endpoint()
        .map_err(|e| DialFailure::Retry(format!("cannot start QUIC over the relay: {e}")))?;
    let conn = tokio::select! {
        conn = handshake(target, identity, &endpoint, peer, Some(ssh)) => conn?,
        why = relay.ended() => {
            return Err(DialFailure::Retry(format!("ssh to {} failed: {why}", ssh.target)));
        }
    };
    Ok(Dialled {
        endpoint,
        conn,
        relay: Some(relay),
    })
}

async fn handshake(
    target: &Target<'_>,
    identity: &Identity,
    endpoint: &quinn::Endpoint,
    addr: SocketAddr,
    over: Option<&SshTarget>,
) -> Result<quinn::Connection, DialFailure> {
    let config = tls::client_config(identity, target.fingerprint, target.options)
        .map_err(|e| DialFailure::Retry(e.to_string()))?;
    tls::connect(endpoint, addr, config, target.timeout)
        .await
        .map_err(|e: DialError| {
            let why = match (&e, over) {
                // Not a UDP problem: the relay runs; nothing answers on the agent's port there
                // (a timeout, or the connection timing out during the handshake).
                (_, Some(ssh)) if !e.is_permanent() => format!(
                    "no answer from the agent through ssh to {}: is `hsm-agent serve` running \
                     there (`hsm-coordinator agent status NAME`; `agent deploy` starts it), \
                     listening on port {} of 127.0.0.1 (or 0.0.0.0)?",
                    ssh.target,
                    addr.port()
                ),
                _ => e.explain(target.address, target.fingerprint, &identity.fingerprint()),
            };
            if e.is_permanent() {
                DialFailure::Refused(why)
            } else {
                DialFailure::Retry(why)
            }
        })
}

/// The port of `host:port` / `[v6]:port`.
pub fn port_of(address: &str) -> Option<u16> {
    let (_, port) = address.trim().rsplit_once(':')?;
    port.parse().ok().filter(|&p| p != 0)
}

/// The relay's command line: `ssh -T [options] [control] -- TARGET 'sh -c ...hsm-agent
/// relay...'` (`control`: the shared connection's options, see `ssh_control`), with `program`
/// instead of `ssh` when given ([`SSH_PROGRAM_ENV`]). The remote command runs under
/// `sh` whatever the login shell, and finds `hsm-agent` on the PATH or in `~/.local/bin`
/// (where `agent deploy` puts it; a non-interactive ssh session often lacks it in PATH).
pub fn relay_command(
    ssh: &SshTarget,
    control: &[String],
    port: u16,
    program: Option<&str>,
) -> RelayCommand {
    let mut args = vec!["-T".to_string()];
    args.extend(ssh.options.iter().cloned());
    args.extend(control.iter().cloned());
    args.push("--".into());
    args.push(ssh.target.clone());
    args.push(format!(
        "sh -c 'PATH=\"$PATH:$HOME/.local/bin\" exec hsm-agent relay --to 127.0.0.1:{port}'"
    ));
    RelayCommand {
        program: program
            .filter(|p| !p.trim().is_empty())
            .unwrap_or("ssh")
            .to_string(),
        args,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_relay_command_puts_options_before_the_target_and_the_relay_last() {
        let ssh = SshTarget {
            target: "alice@login".into(),
            options: vec!["-p".into(), "2222".into()],
        };
        let control = ["-o".to_string(), "ControlPath=/h/ssh/ab".to_string()];
        let cmd = relay_command(&ssh, &control, 7300, None);
        assert_eq!(cmd.program, "ssh");
        assert_eq!(
            cmd.args,
            [
                "-T",
                "-p",
                "2222",
                "-o",
                "ControlPath=/h/ssh/ab",
                "--",
                "alice@login",
                "sh -c 'PATH=\"$PATH:$HOME/.local/bin\" exec hsm-agent relay --to 127.0.0.1:7300'"
            ]
        );
        assert_eq!(
            relay_command(&ssh, &[], 1, Some("/x/fake-ssh")).program,
            "/x/fake-ssh"
        );
        assert_eq!(relay_command(&ssh, &[], 1, Some(" ")).program, "ssh");
    }

    #[test]
    fn the_port_comes_from_the_agent_address() {
        assert_eq!(port_of("gpu1.lab:7300"), Some(7300));
        assert_eq!(port_of("[::1]:7301"), Some(7301));
        assert_eq!(port_of("gpu1.lab"), None);
        assert_eq!(port_of("gpu1.lab:0"), None);
    }
}

//! Mutual TLS over QUIC between coordinator and agent: rustls/quinn configurations that pin
//! certificate fingerprints on both sides, endpoint helpers, and the translation of handshake
//! failures into sentences a user can act on.
//!
//! Design notes:
//!
//! * Only the ring provider is compiled in; every config is built with
//!   `builder_with_provider(ring)`, never from a process-wide default provider.
//! * TLS 1.3 only (QUIC requires it), ALPN [`ALPN`], no 0-RTT and no session resumption: a resumed
//!   TLS 1.3 session skips certificate verification, which would let a coordinator removed from
//!   `authorized_coordinators` back in, and let an agent skip the pin check.
//! * Verifiers ignore names, CAs and dates: the only trust decision is the SHA-256 fingerprint of
//!   the peer's end-entity certificate. Handshake signatures are still verified with the
//!   provider's algorithms, so presenting someone else's certificate without its key fails.
//! * Refusals use `CertificateError::Other`, which rustls turns into the TLS alert
//!   `certificate_unknown` (46) and quinn into the QUIC error code `0x100 + 46 = 0x12e`. The
//!   refusing side sees a local `ConnectionError::TransportError` whose reason is our message
//!   (with the fingerprint); the refused side sees `ConnectionError::ConnectionClosed` with the
//!   same code, and quinn also carries the reason text across.
//! * In TLS 1.3 a client finishes its handshake before the server has judged its certificate, so
//!   quinn's `Connecting` resolves on the coordinator even when the agent is about to refuse it.
//!   [`connect`] therefore also waits for QUIC's HANDSHAKE_DONE (the server's confirmation), so a
//!   refusal surfaces there instead of on the first stream operation.

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, SignatureScheme};

use crate::identity::{fingerprint, fingerprints_in, parse_fingerprint, Identity, IdentityError};

pub use crate::identity::AuthorizeFn;

mod refusals;
pub mod stdio_socket;
pub use refusals::{RefusalKey, RefusalLimiter, RefusalLog, Summary, Verdict, SUMMARY_EVERY};

/// ALPN protocol identifier of hsm's QUIC protocol, version 1.
pub const ALPN: &[u8] = b"hsm/1";

/// Server name the coordinator puts in its ClientHello. Agents are pinned by fingerprint, so this
/// is only a placeholder rustls requires.
pub const AGENT_SERVER_NAME: &str = "hsm-agent";

/// Phrase in the agent verifier's refusal; [`explain_accept_error`] recognises it.
const NOT_AUTHORIZED: &str = "is not authorized on this agent";

/// How often [`connect`] looks for the agent's handshake confirmation.
const CONFIRM_POLL: Duration = Duration::from_millis(2);

/// Errors building TLS/QUIC configurations or endpoints.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// rustls rejected the identity or the configuration (e.g. a key not matching its certificate).
    #[error("tls configuration: {0}")]
    Rustls(#[from] rustls::Error),
    /// The crypto provider lacks the cipher suite QUIC needs for its initial packets.
    #[error("tls configuration unusable for quic: {0}")]
    Quic(#[from] quinn::crypto::rustls::NoInitialCipherSuite),
    /// The pinned agent fingerprint is malformed.
    #[error(transparent)]
    Fingerprint(#[from] IdentityError),
    /// The transport options cannot be used.
    #[error("invalid transport options: {0}")]
    Transport(String),
    /// The UDP socket could not be bound.
    #[error("cannot listen on udp {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// Timers of a QUIC connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TransportOptions {
    /// A connection with no packets from the peer for this long is dropped.
    pub idle_timeout: Duration,
    /// Send a keep-alive when nothing was sent for this long (zero: never). Must be shorter than
    /// `idle_timeout`, or an idle but healthy connection times out.
    pub keep_alive: Duration,
}

impl Default for TransportOptions {
    fn default() -> Self {
        TransportOptions {
            idle_timeout: Duration::from_secs(30),
            keep_alive: Duration::from_secs(5),
        }
    }
}

/// Which end of the connection a transport configuration is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    /// The agent: the coordinator opens one bidirectional control stream and nothing else (a
    /// session that accepts pushed project files raises this for itself, `server.rs`).
    Agent,
    /// The coordinator: the agent opens one unidirectional stream per result file.
    Coordinator,
}

/// Result-file streams an agent may have open towards a coordinator at once. Each holds up to a
/// stream receive window of unread data on the coordinator (quinn's default, 1.25 MB) plus the
/// header being read, so this bounds what one agent connection can make the coordinator hold;
/// the agent's `open_uni` waits for a free one, which costs nothing while files stream.
pub const RESULT_STREAMS: u32 = 32;

fn transport_config(
    options: TransportOptions,
    side: Side,
) -> Result<Arc<quinn::TransportConfig>, TlsError> {
    if options.idle_timeout.is_zero() {
        return Err(TlsError::Transport("idle timeout must not be zero".into()));
    }
    if options.keep_alive >= options.idle_timeout {
        return Err(TlsError::Transport(format!(
            "keep-alive ({:?}) must be shorter than the idle timeout ({:?})",
            options.keep_alive, options.idle_timeout
        )));
    }
    let idle = quinn::IdleTimeout::try_from(options.idle_timeout).map_err(|_| {
        TlsError::Transport(format!(
            "idle timeout {:?} is too large",
            options.idle_timeout
        ))
    })?;
    let mut config = quinn::TransportConfig::default();
    config.max_idle_timeout(Some(idle));
    config.keep_alive_interval((!options.keep_alive.is_zero()).then_some(options.keep_alive));
    // What the peer may open towards us: exactly what the protocol uses. quinn's default of 100
    // of each let a peer make us buffer a stream window on every stream we never read.
    let (bidi, uni) = match side {
        Side::Agent => (1u32, 0u32),
        Side::Coordinator => (0, RESULT_STREAMS),
    };
    config.max_concurrent_bidi_streams(bidi.into());
    config.max_concurrent_uni_streams(uni.into());
    Ok(Arc::new(config))
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Error text carried inside `CertificateError::Other`. rustls renders that variant with `{:?}`,
/// so `Debug` prints the plain message too.
struct Refusal(String);

impl fmt::Debug for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Refusal {}

fn refusal(message: String) -> rustls::Error {
    rustls::Error::InvalidCertificate(CertificateError::Other(rustls::OtherError(Arc::new(
        Refusal(message),
    ))))
}

/// The agent's check of a coordinator's certificate: its fingerprint must be authorized.
struct CoordinatorVerifier {
    is_authorized: AuthorizeFn,
    algorithms: WebPkiSupportedAlgorithms,
}

impl fmt::Debug for CoordinatorVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CoordinatorVerifier")
            .finish_non_exhaustive()
    }
}

impl ClientCertVerifier for CoordinatorVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        true
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        // No CA: nothing to hint.
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let fp = fingerprint(end_entity);
        if (self.is_authorized)(&fp) {
            Ok(ClientCertVerified::assertion())
        } else {
            // Debug only: the accept loop logs the refusal with the peer's address, collapsing
            // repeats (`RefusalLog`); a warning here too doubled every line of a retry storm.
            tracing::debug!(fingerprint = %fp, "refused coordinator {fp}: not in authorized_coordinators");
            Err(refusal(format!(
                "coordinator {fp} {NOT_AUTHORIZED} — run `{}`",
                authorize_command(&fp)
            )))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        // Unreachable with TLS 1.3 only; verifying properly costs nothing.
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// The coordinator's check of an agent's certificate: its fingerprint must be the pinned one.
#[derive(Debug)]
struct AgentVerifier {
    expected: String,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for AgentVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let seen = fingerprint(end_entity);
        if seen == self.expected {
            Ok(ServerCertVerified::assertion())
        } else {
            // The caller explains the refusal to the user (`DialError::explain`).
            tracing::debug!(seen = %seen, expected = %self.expected, "agent fingerprint mismatch");
            Err(refusal(format!(
                "agent presented {seen}, expected {}",
                self.expected
            )))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// QUIC server configuration for an agent: presents `identity` and accepts only coordinators
/// for which `is_authorized(fingerprint)` is true (see
/// [`crate::identity::AuthorizedKeys::checker`]). The callback runs once per handshake on quinn's
/// endpoint task, so it must be quick.
pub fn server_config(
    identity: &Identity,
    is_authorized: AuthorizeFn,
    transport: TransportOptions,
) -> Result<quinn::ServerConfig, TlsError> {
    let provider = provider();
    let verifier = Arc::new(CoordinatorVerifier {
        is_authorized,
        algorithms: provider.signature_verification_algorithms,
    });
    let mut tls = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(verifier)
        .with_single_cert(vec![identity.cert()], identity.key())?;
    tls.alpn_protocols = vec![ALPN.to_vec()];
    // No resumption (it would skip verify_client_cert); max_early_data_size stays 0 (no 0-RTT).
    tls.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    tls.send_tls13_tickets = 0;
    let quic = quinn::crypto::rustls::QuicServerConfig::try_from(Arc::new(tls))?;
    let mut config = quinn::ServerConfig::with_crypto(Arc::new(quic));
    config.transport_config(transport_config(transport, Side::Agent)?);
    Ok(config)
}

/// QUIC client configuration for a coordinator dialling one agent: presents `identity` and
/// accepts only an agent whose certificate has `expected_agent_fingerprint`. Build one per agent.
pub fn client_config(
    identity: &Identity,
    expected_agent_fingerprint: &str,
    transport: TransportOptions,
) -> Result<quinn::ClientConfig, TlsError> {
    let expected = parse_fingerprint(expected_agent_fingerprint)?;
    let provider = provider();
    let verifier = Arc::new(AgentVerifier {
        expected,
        algorithms: provider.signature_verification_algorithms,
    });
    let mut tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_client_auth_cert(vec![identity.cert()], identity.key())?;
    tls.alpn_protocols = vec![ALPN.to_vec()];
    // A resumed session would skip the pin check.
    tls.resumption = rustls::client::Resumption::disabled();
    tls.enable_early_data = false;
    let quic = quinn::crypto::rustls::QuicClientConfig::try_from(Arc::new(tls))?;
    let mut config = quinn::ClientConfig::new(Arc::new(quic));
    config.transport_config(transport_config(transport, Side::Coordinator)?);
    Ok(config)
}

/// Binds an agent's QUIC endpoint on `addr` (UDP). Its stateless-reset key is derived from the
/// agent's private key, so an agent restarted on the same address answers a coordinator still
/// talking to its previous run with a reset the coordinator accepts: the coordinator learns of
/// the restart at once and reconnects, instead of waiting out its idle timeout (10 s).
pub fn server_endpoint(
    addr: SocketAddr,
    config: quinn::ServerConfig,
    identity: &Identity,
) -> Result<quinn::Endpoint, TlsError> {
    use sha2::{Digest, Sha256};
    let bind = |source| TlsError::Bind { addr, source };
    let mut secret = Sha256::new();
    secret.update(b"hsm-agent stateless reset key v1\0");
    secret.update(&identity.key_der);
    let secret = secret.finalize();
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &secret);
    let mut endpoint_config = quinn::EndpointConfig::new(Arc::new(key));
    // The connection ids must validate across restarts too: an id the endpoint does not
    // recognise as its own is dropped without a reset.
    let mut cid_key = [0u8; 8];
    cid_key.copy_from_slice(&secret[..8]);
    let cid_key = u64::from_le_bytes(cid_key);
    endpoint_config.cid_generator(move || {
        Box::new(quinn_proto::HashedConnectionIdGenerator::from_key(cid_key))
    });
    let socket = std::net::UdpSocket::bind(addr).map_err(bind)?;
    let runtime = quinn::default_runtime()
        .ok_or_else(|| bind(std::io::Error::other("no async runtime to run QUIC on")))?;
    quinn::Endpoint::new(endpoint_config, Some(config), socket, runtime).map_err(bind)
}

/// Binds a coordinator's QUIC endpoint on `bind` (e.g. `0.0.0.0:0`). It has no default client
/// configuration: each agent gets its own (its own pinned fingerprint) through [`connect`].
pub fn client_endpoint(bind: SocketAddr) -> Result<quinn::Endpoint, TlsError> {
    quinn::Endpoint::client(bind).map_err(|source| TlsError::Bind { addr: bind, source })
}

/// Fingerprint of the certificate the peer of an established connection presented (on an agent:
/// the coordinator that connected).
pub fn peer_fingerprint(conn: &quinn::Connection) -> Option<String> {
    let identity = conn.peer_identity()?;
    let chain = identity.downcast::<Vec<CertificateDer<'static>>>().ok()?;
    chain.first().map(|cert| fingerprint(cert))
}

/// Why [`connect`] failed.
#[derive(Debug, thiserror::Error)]
pub enum DialError {
    /// quinn could not start the connection (unusable address, endpoint closed, ...).
    #[error("cannot start the connection: {0}")]
    Start(#[from] quinn::ConnectError),
    /// The handshake failed or the connection closed before the agent confirmed it.
    #[error(transparent)]
    Connection(#[from] quinn::ConnectionError),
    /// The agent did not confirm the handshake in time.
    #[error("no confirmed handshake within {0:?}")]
    Timeout(Duration),
}

impl DialError {
    /// Whether dialling again cannot help: one side refused the other's certificate (a
    /// fingerprint that does not match, a coordinator the agent has not authorized), or the
    /// peer speaks no compatible protocol. Unreachable, timed out or reset is worth retrying.
    pub fn is_permanent(&self) -> bool {
        use quinn::ConnectionError as E;
        match self {
            DialError::Connection(E::ConnectionClosed(close)) => tls_alert(close.error_code)
                .is_some_and(|alert| is_certificate_refusal(alert) || alert == 120),
            DialError::Connection(E::TransportError(local)) => tls_alert(local.code).is_some(),
            DialError::Connection(E::VersionMismatch) => true,
            _ => false,
        }
    }

    /// A sentence for the user; see [`explain_connect_error`].
    pub fn explain(
        &self,
        agent: impl fmt::Display,
        expected_agent_fingerprint: &str,
        own_fingerprint: &str,
    ) -> String {
        match self {
            DialError::Connection(err) => {
                explain_connect_error(err, agent, expected_agent_fingerprint, own_fingerprint)
            }
            DialError::Start(err) => format!("cannot connect to the agent at {agent}: {err}"),
            DialError::Timeout(limit) => format!(
                "no answer from the agent at {agent} within {limit:?}: is `hsm-agent serve` \
                 running there, and is its UDP port reachable from here?"
            ),
        }
    }
}

/// Dials an agent and returns once the agent has *confirmed* the handshake, i.e. after it has
/// accepted this coordinator's certificate. Fails with [`DialError::Connection`] when either side
/// refuses the other, and with [`DialError::Timeout`] after `timeout`.
pub async fn connect(
    endpoint: &quinn::Endpoint,
    agent: SocketAddr,
    config: quinn::ClientConfig,
    timeout: Duration,
) -> Result<quinn::Connection, DialError> {
    let connecting = endpoint.connect_with(config, agent, AGENT_SERVER_NAME)?;
    let dial = async {
        let conn = connecting.await?;
        wait_confirmed(&conn).await?;
        Ok(conn)
    };
    tokio::time::timeout(timeout, dial)
        .await
        .unwrap_or(Err(DialError::Timeout(timeout)))
}

/// Waits for HANDSHAKE_DONE from the server. quinn exposes no event for it, only a frame counter
/// in the statistics, so this polls (a handful of times per round trip) while also watching for
/// the connection to close.
async fn wait_confirmed(conn: &quinn::Connection) -> Result<(), quinn::ConnectionError> {
    loop {
        if conn.stats().frame_rx.handshake_done > 0 {
            return Ok(());
        }
        tokio::select! {
            err = conn.closed() => return Err(err),
            _ = tokio::time::sleep(CONFIRM_POLL) => {}
        }
    }
}

/// The TLS alert inside a QUIC `CRYPTO_ERROR` code (0x100..=0x1ff), if it is one.
fn tls_alert(code: quinn::TransportErrorCode) -> Option<u8> {
    let code = u64::from(code);
    (0x100..=0x1ff)
        .contains(&code)
        .then(|| (code - 0x100) as u8)
}

fn alert_name(alert: u8) -> String {
    match alert {
        40 => "handshake failure".into(),
        42 => "bad certificate".into(),
        43 => "unsupported certificate".into(),
        45 => "certificate expired".into(),
        46 => "certificate unknown".into(),
        48 => "unknown ca".into(),
        49 => "access denied".into(),
        51 => "decrypt error".into(),
        70 => "protocol version".into(),
        80 => "internal error".into(),
        116 => "certificate required".into(),
        120 => "no application protocol".into(),
        other => format!("{:?}", rustls::AlertDescription::from(other)),
    }
}

/// Alerts a verifier sends when it does not accept a certificate.
fn is_certificate_refusal(alert: u8) -> bool {
    matches!(alert, 42 | 43 | 45 | 46 | 48 | 49 | 116)
}

/// A peer-supplied close reason made safe to print: no control characters, bounded length.
fn peer_said(reason: &[u8]) -> String {
    let text: String = String::from_utf8_lossy(reason)
        .chars()
        .filter(|c| !c.is_control())
        .take(300)
        .collect();
    if text.is_empty() {
        String::new()
    } else {
        format!(" (it said: {text})")
    }
}

/// Turns a failed connection to an agent into a sentence a user can act on.
///
/// `agent` names the agent (address or name and address), `expected_agent_fingerprint` is the
/// pinned fingerprint, `own_fingerprint` the coordinator's own (for the `authorize` hint).
pub fn explain_connect_error(
    err: &quinn::ConnectionError,
    agent: impl fmt::Display,
    expected_agent_fingerprint: &str,
    own_fingerprint: &str,
) -> String {
    use quinn::ConnectionError as E;
    match err {
        // The agent refused us: its verifier sent an alert, quinn closed with CRYPTO_ERROR.
        E::ConnectionClosed(close) => match tls_alert(close.error_code) {
            Some(alert) if is_certificate_refusal(alert) => format!(
                "the agent at {agent} refused this coordinator (TLS alert: {}): authorize it on \
                 the agent with `hsm-agent authorize {own_fingerprint}`",
                alert_name(alert)
            ),
            Some(120) => format!(
                "the agent at {agent} does not speak {} (TLS alert: no application protocol): \
                 is it an hsm-agent of a compatible version?",
                String::from_utf8_lossy(ALPN)
            ),
            Some(alert) => format!(
                "the TLS handshake with the agent at {agent} failed: it sent TLS alert {}{}",
                alert_name(alert),
                peer_said(&close.reason)
            ),
            None => format!(
                "the agent at {agent} closed the connection: error {}{}",
                close.error_code,
                peer_said(&close.reason)
            ),
        },
        // We refused the agent (or our TLS stack failed locally).
        E::TransportError(local) => {
            let expected = parse_fingerprint(expected_agent_fingerprint)
                .unwrap_or_else(|_| expected_agent_fingerprint.to_string());
            let seen = fingerprints_in(&local.reason)
                .into_iter()
                .find(|fp| *fp != expected);
            match (tls_alert(local.code), seen) {
                (Some(_), Some(seen)) => format!(
                    "agent at {agent} presented {seen}, expected {expected} — if the agent was \
                     re-initialised, update its fingerprint with `hsm-coordinator agent add`"
                ),
                (Some(51), None) => format!(
                    "the agent at {agent} presented the pinned certificate ({expected}) but could \
                     not prove it holds its private key (TLS alert: decrypt error): something is \
                     impersonating the agent"
                ),
                _ => format!(
                    "the connection to the agent at {agent} failed: {}",
                    local.reason
                ),
            }
        }
        E::TimedOut => format!(
            "no answer from the agent at {agent}: is `hsm-agent serve` running there, and is its \
             UDP port reachable from here?"
        ),
        E::VersionMismatch => {
            format!("the agent at {agent} supports no QUIC version this coordinator speaks")
        }
        E::ApplicationClosed(close) => format!(
            "the agent at {agent} closed the connection (code {}){}",
            close.error_code,
            peer_said(&close.reason)
        ),
        E::Reset => format!("the agent at {agent} reset the connection (did it restart?)"),
        E::LocallyClosed => format!("the connection to the agent at {agent} was closed locally"),
        E::CidsExhausted => format!("cannot connect to the agent at {agent}: {err}"),
    }
}

/// Handshakes in progress at once; more incoming connections are refused until some finish.
/// Unauthenticated peers start handshakes, so this bounds what they can make the agent hold.
pub const MAX_HANDSHAKES: usize = 128;
/// Authenticated connections at once (a connection per running sweep, plus `agent ping`s).
/// Each may hold a control-stream window and a frame being received.
pub const MAX_SESSIONS: usize = 128;
/// The application close code for a connection refused because the agent is at `MAX_SESSIONS`.
pub const BUSY: quinn::VarInt = quinn::VarInt::from_u32(2);

/// How many handshakes and sessions an agent serves at once; a permit is given back when dropped.
#[derive(Clone)]
pub struct ConnectionLimits {
    handshakes: Arc<tokio::sync::Semaphore>,
    sessions: Arc<tokio::sync::Semaphore>,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        ConnectionLimits::new()
    }
}

impl ConnectionLimits {
    pub fn new() -> ConnectionLimits {
        ConnectionLimits {
            handshakes: Arc::new(tokio::sync::Semaphore::new(MAX_HANDSHAKES)),
            sessions: Arc::new(tokio::sync::Semaphore::new(MAX_SESSIONS)),
        }
    }

    /// A handshake slot, `None` when all are taken.
    pub fn handshake(&self) -> Option<tokio::sync::OwnedSemaphorePermit> {
        Arc::clone(&self.handshakes).try_acquire_owned().ok()
    }

    /// A session slot, `None` when all are taken.
    pub fn session(&self) -> Option<tokio::sync::OwnedSemaphorePermit> {
        Arc::clone(&self.sessions).try_acquire_owned().ok()
    }
}

/// The state dir `hsm-agent authorize` must be told about (`--state-dir`) because it is not the
/// default one; set once by `hsm-agent serve`.
static AUTHORIZE_STATE_DIR: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();

/// Makes the agent's refusal hints name `--state-dir DIR` (call when the agent's state dir is
/// not the one `hsm-agent authorize` finds by default).
pub fn set_authorize_state_dir(dir: &std::path::Path) {
    let _ = AUTHORIZE_STATE_DIR.set(dir.to_path_buf());
}

/// The command that authorizes coordinator `fp` on this agent.
pub fn authorize_command(fp: &str) -> String {
    match AUTHORIZE_STATE_DIR.get() {
        Some(dir) => format!("hsm-agent authorize {fp} --state-dir {}", dir.display()),
        None => format!("hsm-agent authorize {fp}"),
    }
}

/// A short name of why an incoming handshake failed, for collapsing repeats in the log.
pub fn accept_error_cause(err: &quinn::ConnectionError) -> &'static str {
    use quinn::ConnectionError as E;
    match err {
        E::TransportError(local) if local.reason.contains(NOT_AUTHORIZED) => "not authorized",
        E::TransportError(local) if tls_alert(local.code) == Some(51) => "certificate without key",
        E::TransportError(_) => "transport error",
        E::ConnectionClosed(close) => match tls_alert(close.error_code) {
            Some(alert) if is_certificate_refusal(alert) => "refused this agent",
            _ => "closed by the peer",
        },
        E::ApplicationClosed(_) => "closed by the peer",
        E::TimedOut => "timed out",
        E::Reset => "reset",
        E::VersionMismatch => "QUIC version mismatch",
        E::LocallyClosed => "closed locally",
        E::CidsExhausted => "connection ids exhausted",
    }
}

/// Turns a failed incoming handshake on an agent into a log line naming the fingerprint seen.
pub fn explain_accept_error(err: &quinn::ConnectionError, remote: SocketAddr) -> String {
    use quinn::ConnectionError as E;
    match err {
        E::TransportError(local) if local.reason.contains(NOT_AUTHORIZED) => {
            match fingerprints_in(&local.reason).into_iter().next() {
                Some(fp) => format!(
                    "refused coordinator {fp} from {remote}: it is not in authorized_coordinators \
                     (run `{}` to allow it)",
                    authorize_command(&fp)
                ),
                None => format!("refused a coordinator from {remote}: {}", local.reason),
            }
        }
        E::TransportError(local) if tls_alert(local.code) == Some(51) => format!(
            "refused a coordinator from {remote}: it presented a certificate without proving it \
             holds the private key (TLS alert: decrypt error)"
        ),
        E::ConnectionClosed(close) => match tls_alert(close.error_code) {
            Some(alert) if is_certificate_refusal(alert) => {
                // An hsm coordinator's reason reads "agent presented X, expected Y"; anything
                // else is quoted (sanitised) as the peer sent it.
                let reason = String::from_utf8_lossy(&close.reason);
                let detail = match fingerprints_in(&reason).as_slice() {
                    [seen, expected] => format!(
                        ": it expects {expected} but this agent is {seen} (if this agent was \
                         re-initialised, update its fingerprint on the coordinator)"
                    ),
                    _ => format!(
                        "; it has probably pinned an old fingerprint for this agent{}",
                        peer_said(&close.reason)
                    ),
                };
                format!(
                    "the coordinator at {remote} refused this agent's certificate (TLS alert: \
                     {}){detail}",
                    alert_name(alert)
                )
            }
            _ => format!(
                "handshake with {remote} failed: closed by the peer with error {}{}",
                close.error_code,
                peer_said(&close.reason)
            ),
        },
        other => format!("handshake with {remote} failed: {other}"),
    }
}

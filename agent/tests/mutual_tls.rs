//! Mutual TLS between a coordinator and an agent over real quinn endpoints on 127.0.0.1: pinned
//! fingerprints on both sides, refusals during the handshake with sentences naming the
//! fingerprints, authorization without restart, identity files and their modes, and junk UDP.

use std::net::{SocketAddr, UdpSocket};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hsm_agent::identity::{
    fingerprint, AuthorizedKeys, Identity, IdentityError, AUTHORIZED_FILE, CERT_FILE, KEY_FILE,
};
use hsm_agent::tls::{
    self, client_config, connect, explain_accept_error, peer_fingerprint, server_config,
    AuthorizeFn, DialError, TransportOptions,
};
use tokio::sync::mpsc;

/// Upper bound for every networked test: a hang guard (each takes well under a second on an
/// idle machine, many times that on a busy one). No test waits for a timeout to pass.
const TEST_LIMIT: Duration = Duration::from_secs(120);
/// Upper bound for one dial, and for the agent to see a connection attempt: a hang guard too.
const DIAL_LIMIT: Duration = Duration::from_secs(30);

fn options() -> TransportOptions {
    TransportOptions {
        idle_timeout: Duration::from_secs(3),
        keep_alive: Duration::from_millis(500),
    }
}

fn loopback() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

/// What the agent's accept loop saw, one event per incoming connection.
#[derive(Debug)]
enum ServerEvent {
    /// Handshake completed; the coordinator's fingerprint.
    Accepted(Option<String>),
    /// Handshake failed; the error and `explain_accept_error`'s sentence.
    Failed(quinn::ConnectionError, String),
}

/// A running agent endpoint whose accept loop echoes every bidirectional stream.
struct Agent {
    identity: Identity,
    endpoint: quinn::Endpoint,
    addr: SocketAddr,
    events: mpsc::UnboundedReceiver<ServerEvent>,
    task: tokio::task::JoinHandle<()>,
}

impl Agent {
    fn start(is_authorized: AuthorizeFn) -> Agent {
        let identity = Identity::generate("test agent").unwrap();
        let config = server_config(&identity, is_authorized, options()).unwrap();
        let endpoint = tls::server_endpoint(loopback(), config, &identity).unwrap();
        let addr = endpoint.local_addr().unwrap();
        let (tx, events) = mpsc::unbounded_channel();
        let task = tokio::spawn(accept_loop(endpoint.clone(), tx));
        Agent {
            identity,
            endpoint,
            addr,
            events,
            task,
        }
    }

    async fn next_event(&mut self) -> ServerEvent {
        tokio::time::timeout(DIAL_LIMIT, self.events.recv())
            .await
            .expect("agent saw no connection attempt")
            .expect("accept loop ended")
    }

    async fn stop(self) {
        self.task.abort();
        self.endpoint.close(0u32.into(), b"test over");
        let _ = tokio::time::timeout(Duration::from_secs(2), self.endpoint.wait_idle()).await;
    }
}

async fn accept_loop(endpoint: quinn::Endpoint, events: mpsc::UnboundedSender<ServerEvent>) {
    while let Some(incoming) = endpoint.accept().await {
        let remote = incoming.remote_address();
        let events = events.clone();
        tokio::spawn(async move {
            match incoming.await {
                Ok(conn) => {
                    let _ = events.send(ServerEvent::Accepted(peer_fingerprint(&conn)));
                    while let Ok((mut send, mut recv)) = conn.accept_bi().await {
                        let Ok(data) = recv.read_to_end(1 << 20).await else {
                            break;
                        };
                        if send.write_all(&data).await.is_err() || send.finish().is_err() {
                            break;
                        }
                    }
                }
                Err(err) => {
                    let text = explain_accept_error(&err, remote);
                    let _ = events.send(ServerEvent::Failed(err, text));
                }
            }
        });
    }
}

/// A coordinator: its identity and a client endpoint.
struct Coordinator {
    identity: Identity,
    endpoint: quinn::Endpoint,
}

impl Coordinator {
    fn new() -> Coordinator {
        Coordinator {
            identity: Identity::generate("test coordinator").unwrap(),
            endpoint: tls::client_endpoint(loopback()).unwrap(),
        }
    }

    fn fingerprint(&self) -> String {
        self.identity.fingerprint()
    }

    async fn dial(&self, agent: SocketAddr, pinned: &str) -> Result<quinn::Connection, DialError> {
        let config = client_config(&self.identity, pinned, options()).unwrap();
        connect(&self.endpoint, agent, config, DIAL_LIMIT).await
    }

    async fn stop(self) {
        self.endpoint.close(0u32.into(), b"test over");
        let _ = tokio::time::timeout(Duration::from_secs(2), self.endpoint.wait_idle()).await;
    }
}

async fn echo(conn: &quinn::Connection, data: &[u8]) -> Vec<u8> {
    let (mut send, mut recv) = conn.open_bi().await.unwrap();
    send.write_all(data).await.unwrap();
    send.finish().unwrap();
    recv.read_to_end(1 << 20).await.unwrap()
}

fn allow(fingerprints: Vec<String>) -> AuthorizeFn {
    Arc::new(move |fp: &str| fingerprints.iter().any(|allowed| allowed == fp))
}

/// QUIC CRYPTO_ERROR for TLS alert certificate_unknown (46).
const CERTIFICATE_UNKNOWN: u64 = 0x100 + 46;

async fn bounded<F: std::future::Future<Output = ()>>(test: F) {
    tokio::time::timeout(TEST_LIMIT, test)
        .await
        .expect("test exceeded its time limit");
}

#[tokio::test]
async fn authorized_coordinator_with_right_pin_connects_and_echoes() {
    bounded(async {
        let coordinator = Coordinator::new();
        let mut agent = Agent::start(allow(vec![coordinator.fingerprint()]));

        let conn = coordinator
            .dial(agent.addr, &agent.identity.fingerprint())
            .await
            .expect("handshake");
        assert_eq!(
            peer_fingerprint(&conn),
            Some(agent.identity.fingerprint()),
            "the coordinator sees the agent's certificate"
        );
        let payload: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        assert_eq!(echo(&conn, &payload).await, payload);
        assert_eq!(echo(&conn, b"").await, b"");

        match agent.next_event().await {
            ServerEvent::Accepted(fp) => assert_eq!(fp, Some(coordinator.fingerprint())),
            other => panic!("expected an accepted connection, got {other:?}"),
        }
        conn.close(0u32.into(), b"done");
        coordinator.stop().await;
        agent.stop().await;
    })
    .await;
}

/// Captures everything logged through `tracing` on this thread (the tests run on a
/// current-thread runtime, so quinn's endpoint tasks log here too).
#[derive(Clone, Default)]
struct LogCapture(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for LogCapture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl LogCapture {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

#[tokio::test]
async fn unauthorized_coordinator_is_refused_in_the_handshake() {
    let logs = LogCapture::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_ansi(false)
        .with_max_level(tracing::Level::WARN)
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    bounded(async {
        let coordinator = Coordinator::new();
        let asked = Arc::new(Mutex::new(Vec::<String>::new()));
        let recorder = asked.clone();
        let mut agent = Agent::start(Arc::new(move |fp: &str| {
            recorder.lock().unwrap().push(fp.to_string());
            false
        }));
        let own = coordinator.fingerprint();
        let pinned = agent.identity.fingerprint();

        // Through `connect`, which waits for the agent's confirmation.
        let err = coordinator
            .dial(agent.addr, &pinned)
            .await
            .expect_err("an unauthorized coordinator must be refused");
        let DialError::Connection(quinn::ConnectionError::ConnectionClosed(close)) = &err else {
            panic!("expected the agent to close the connection, got {err:?}");
        };
        assert_eq!(u64::from(close.error_code), CERTIFICATE_UNKNOWN);
        let sentence = err.explain(agent.addr, &pinned, &own);
        eprintln!("client error: {err:?}\nclient sees: {sentence}");
        assert!(sentence.contains("refused this coordinator"), "{sentence}");
        assert!(sentence.contains("certificate unknown"), "{sentence}");
        assert!(
            sentence.contains(&format!("`hsm-agent authorize {own}`")),
            "{sentence}"
        );

        match agent.next_event().await {
            ServerEvent::Failed(err, text) => {
                eprintln!("server error: {err:?}\nserver says: {text}");
                let quinn::ConnectionError::TransportError(local) = &err else {
                    panic!("expected a local TLS error on the agent, got {err:?}");
                };
                assert_eq!(u64::from(local.code), CERTIFICATE_UNKNOWN);
                assert!(local.reason.contains(&own), "{}", local.reason);
                assert!(
                    text.contains(&format!("refused coordinator {own}")),
                    "{text}"
                );
                assert!(
                    text.contains(&format!("`hsm-agent authorize {own}`")),
                    "{text}"
                );
            }
            other => panic!("expected a failed handshake, got {other:?}"),
        }

        // The raw quinn path: the client may consider the handshake complete before the agent
        // has judged its certificate (TLS 1.3), so it can even open a stream and send. None of it
        // reaches the agent's application: no connection is ever handed out there.
        let config = client_config(&coordinator.identity, &pinned, options()).unwrap();
        let connecting = coordinator
            .endpoint
            .connect_with(config, agent.addr, tls::AGENT_SERVER_NAME)
            .unwrap();
        let failure = match connecting.await {
            Err(e) => {
                eprintln!("raw: connecting failed: {e:?}");
                e
            }
            Ok(conn) => {
                eprintln!("raw: connecting resolved Ok before the refusal");
                if let Ok((mut send, mut recv)) = conn.open_bi().await {
                    let _ = send.write_all(b"hello before confirmation").await;
                    let _ = send.finish();
                    let read = recv.read_to_end(1024).await;
                    assert!(read.is_err(), "a refused coordinator got an answer");
                }
                conn.closed().await
            }
        };
        let raw = tls::explain_connect_error(&failure, agent.addr, &pinned, &own);
        assert!(raw.contains("refused this coordinator"), "{raw}");
        assert!(matches!(agent.next_event().await, ServerEvent::Failed(..)));

        assert_eq!(*asked.lock().unwrap(), vec![own.clone(), own.clone()]);
        assert!(
            agent.events.try_recv().is_err(),
            "no connection was accepted"
        );
        // The verifier itself only logs at debug level: the agent's accept loop logs the refusal
        // (with the peer's address, repeats collapsed), so a warning here would double it.
        let logged = logs.text();
        assert!(
            !logged.contains(&format!("refused coordinator {own}")),
            "the verifier warned as well: {logged}"
        );

        coordinator.stop().await;
        agent.stop().await;
    })
    .await;
}

#[tokio::test]
async fn agent_with_wrong_fingerprint_is_refused_by_the_coordinator() {
    bounded(async {
        let coordinator = Coordinator::new();
        let mut agent = Agent::start(allow(vec![coordinator.fingerprint()]));
        let actual = agent.identity.fingerprint();
        let pinned = Identity::generate("someone else").unwrap().fingerprint();

        let err = coordinator
            .dial(agent.addr, &pinned)
            .await
            .expect_err("a wrong agent must be refused");
        let DialError::Connection(quinn::ConnectionError::TransportError(local)) = &err else {
            panic!("expected our own verifier to fail the handshake, got {err:?}");
        };
        assert_eq!(u64::from(local.code), CERTIFICATE_UNKNOWN);
        let sentence = err.explain(agent.addr, &pinned, &coordinator.fingerprint());
        eprintln!("client error: {err:?}\nclient sees: {sentence}");
        assert!(
            sentence.contains(&format!(
                "agent at {} presented {actual}, expected {pinned}",
                agent.addr
            )),
            "{sentence}"
        );
        assert!(sentence.contains("hsm-coordinator agent add"), "{sentence}");

        // The agent learns that the coordinator refused it.
        match agent.next_event().await {
            ServerEvent::Failed(err, text) => {
                eprintln!("server error: {err:?}\nserver says: {text}");
                assert!(
                    matches!(&err, quinn::ConnectionError::ConnectionClosed(c)
                        if u64::from(c.error_code) == CERTIFICATE_UNKNOWN),
                    "{err:?}"
                );
                assert!(text.contains("refused this agent's certificate"), "{text}");
                assert!(
                    text.contains(&format!("it expects {pinned} but this agent is {actual}")),
                    "{text}"
                );
            }
            other => panic!("expected a failed handshake, got {other:?}"),
        }

        // A malformed pin is rejected before any packet is sent.
        let bad = client_config(&coordinator.identity, "sha256:1234", options());
        assert!(bad.is_err());

        coordinator.stop().await;
        agent.stop().await;
    })
    .await;
}

#[tokio::test]
async fn authorizing_takes_effect_without_restarting_the_agent() {
    bounded(async {
        let state = tempfile::tempdir().unwrap();
        let coordinator = Coordinator::new();
        let mut agent = Agent::start(AuthorizedKeys::checker(state.path()));
        let pinned = agent.identity.fingerprint();
        let own = coordinator.fingerprint();

        let err = coordinator.dial(agent.addr, &pinned).await.unwrap_err();
        assert!(
            err.explain(agent.addr, &pinned, &own)
                .contains("refused this coordinator"),
            "{err:?}"
        );
        assert!(matches!(agent.next_event().await, ServerEvent::Failed(..)));

        assert!(AuthorizedKeys::authorize(state.path(), &own.to_uppercase()).unwrap());
        assert!(!AuthorizedKeys::authorize(state.path(), &own).unwrap());

        let conn = coordinator
            .dial(agent.addr, &pinned)
            .await
            .expect("authorized now");
        assert_eq!(echo(&conn, b"after authorize").await, b"after authorize");
        match agent.next_event().await {
            ServerEvent::Accepted(fp) => assert_eq!(fp, Some(own.clone())),
            other => panic!("expected an accepted connection, got {other:?}"),
        }
        conn.close(0u32.into(), b"done");

        // Removing the line revokes the next handshake just as quickly.
        std::fs::write(state.path().join(AUTHORIZED_FILE), "# nobody\n").unwrap();
        assert!(coordinator.dial(agent.addr, &pinned).await.is_err());
        assert!(matches!(agent.next_event().await, ServerEvent::Failed(..)));

        coordinator.stop().await;
        agent.stop().await;
    })
    .await;
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o7777
}

#[test]
fn identity_files_are_private_and_reused() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("state").join("agent");

    assert!(matches!(
        Identity::load(&dir),
        Err(IdentityError::Missing { dir: d }) if d == dir
    ));

    let (first, created) = Identity::load_or_create(&dir, "agent@test").unwrap();
    assert!(created);
    assert_eq!(mode(&dir), 0o700);
    assert_eq!(mode(&dir.join(KEY_FILE)), 0o600);
    assert_eq!(mode(&dir.join(CERT_FILE)), 0o600);
    assert_eq!(first.fingerprint(), fingerprint(&first.cert_der));
    assert!(
        !format!("{first:?}").contains("key_der"),
        "Debug hides the key"
    );
    // No temporary files are left behind.
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, vec![CERT_FILE.to_string(), KEY_FILE.to_string()]);

    let (second, created) = Identity::load_or_create(&dir, "agent@test").unwrap();
    assert!(!created);
    assert_eq!(second.fingerprint(), first.fingerprint());
    assert_eq!(second.key_der, first.key_der);
    assert_eq!(
        Identity::load(&dir).unwrap().fingerprint(),
        first.fingerprint()
    );

    // A key others can read is refused, with the file and the fix in the message.
    let key = dir.join(KEY_FILE);
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let err = Identity::load(&dir).unwrap_err();
    let text = err.to_string();
    assert!(matches!(
        err,
        IdentityError::KeyPermissions { mode: 0o644, .. }
    ));
    assert!(text.contains(&key.display().to_string()), "{text}");
    assert!(text.contains("chmod 600"), "{text}");
    assert!(Identity::load_or_create(&dir, "agent@test").is_err());
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();

    // A key from another identity is caught at load time.
    let other = root.path().join("other");
    Identity::load_or_create(&other, "other").unwrap();
    std::fs::copy(other.join(KEY_FILE), &key).unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    assert!(matches!(
        Identity::load(&dir),
        Err(IdentityError::KeyMismatch { .. })
    ));

    // Half an identity is reported, never silently replaced.
    std::fs::remove_file(dir.join(CERT_FILE)).unwrap();
    let err = Identity::load_or_create(&dir, "agent@test").unwrap_err();
    assert!(matches!(err, IdentityError::Incomplete { .. }), "{err}");
}

#[test]
fn authorized_coordinators_file() {
    let dir = tempfile::tempdir().unwrap();
    let a = Identity::generate("a").unwrap().fingerprint();
    let b = Identity::generate("b").unwrap().fingerprint();

    assert!(AuthorizedKeys::load(dir.path()).unwrap().is_empty());
    assert!(AuthorizedKeys::authorize(dir.path(), &a).unwrap());
    let path = dir.path().join(AUTHORIZED_FILE);
    assert_eq!(mode(&path), 0o600);

    // Comments, blank lines, trailing comments and a missing final newline are all fine.
    std::fs::write(
        &path,
        format!("# laptop\n\n{a}   # alice\n  {}", b.to_uppercase()),
    )
    .unwrap();
    let keys = AuthorizedKeys::load(dir.path()).unwrap();
    assert_eq!(keys.len(), 2);
    assert!(keys.contains(&a) && keys.contains(&b));
    assert!(!keys.contains("sha256:nonsense"));
    let c = Identity::generate("c").unwrap().fingerprint();
    assert!(AuthorizedKeys::authorize(dir.path(), &c).unwrap());
    assert_eq!(AuthorizedKeys::load(dir.path()).unwrap().len(), 3);
    assert!(std::fs::read_to_string(&path)
        .unwrap()
        .ends_with(&format!("\n{c}\n")));

    // A bad line names file:line, and the checker then refuses everybody.
    std::fs::write(&path, format!("{a}\nnot-a-fingerprint\n")).unwrap();
    let err = AuthorizedKeys::load(dir.path()).unwrap_err().to_string();
    assert!(err.starts_with(&format!("{}:2: ", path.display())), "{err}");
    assert!(!AuthorizedKeys::checker(dir.path())(&a));
    assert!(AuthorizedKeys::authorize(dir.path(), &b).is_err());

    std::fs::write(&path, [a.as_bytes(), b"\n\xff\n"].concat()).unwrap();
    let err = AuthorizedKeys::load(dir.path()).unwrap_err().to_string();
    assert!(err.starts_with(&format!("{}:2: ", path.display())), "{err}");

    // A list anybody can edit is not trusted.
    std::fs::write(&path, format!("{a}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666)).unwrap();
    let err = AuthorizedKeys::load(dir.path()).unwrap_err().to_string();
    assert!(err.contains("chmod 600"), "{err}");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    assert!(AuthorizedKeys::checker(dir.path())(&a));

    assert!(AuthorizedKeys::authorize(dir.path(), "sha256:12").is_err());
}

#[tokio::test]
async fn random_datagrams_do_not_disturb_the_agent() {
    bounded(async {
        let coordinator = Coordinator::new();
        let mut agent = Agent::start(allow(vec![coordinator.fingerprint()]));

        let junk = UdpSocket::bind(loopback()).unwrap();
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for i in 0..300 {
            let len = 1 + (next() % 1400) as usize;
            let mut datagram: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            // Every third one looks like a QUIC v1 Initial so it gets past the first checks.
            if i % 3 == 0 && len > 6 {
                datagram[0] = 0xc0 | (datagram[0] & 0x0f);
                datagram[1..5].copy_from_slice(&1u32.to_be_bytes());
            }
            junk.send_to(&datagram, agent.addr).unwrap();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;

        let conn = coordinator
            .dial(agent.addr, &agent.identity.fingerprint())
            .await
            .expect("agent still accepts after junk");
        assert_eq!(echo(&conn, b"still alive").await, b"still alive");
        // Junk may have produced failed handshakes; the real connection must be among events.
        loop {
            match agent.next_event().await {
                ServerEvent::Accepted(fp) => {
                    assert_eq!(fp, Some(coordinator.fingerprint()));
                    break;
                }
                ServerEvent::Failed(..) => continue,
            }
        }
        conn.close(0u32.into(), b"done");
        coordinator.stop().await;
        agent.stop().await;
    })
    .await;
}

/// Test-only verifier for impostors: accepts any certificate and any signature, so that only the
/// honest side's checks decide.
#[derive(Debug)]
struct AcceptAnything;

impl rustls::client::danger::ServerCertVerifier for AcceptAnything {
    fn verify_server_cert(
        &self,
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &[rustls::pki_types::CertificateDer<'_>],
        _: &rustls::pki_types::ServerName<'_>,
        _: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        _: &[u8],
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
    }
    fn verify_tls13_signature(
        &self,
        _: &[u8],
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        rustls::crypto::ring::default_provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}

impl rustls::server::danger::ClientCertVerifier for AcceptAnything {
    fn root_hint_subjects(&self) -> &[rustls::DistinguishedName] {
        &[]
    }
    fn verify_client_cert(
        &self,
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &[rustls::pki_types::CertificateDer<'_>],
        _: rustls::pki_types::UnixTime,
    ) -> Result<rustls::server::danger::ClientCertVerified, rustls::Error> {
        Ok(rustls::server::danger::ClientCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        m: &[u8],
        c: &rustls::pki_types::CertificateDer<'_>,
        d: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::client::danger::ServerCertVerifier::verify_tls12_signature(self, m, c, d)
    }
    fn verify_tls13_signature(
        &self,
        m: &[u8],
        c: &rustls::pki_types::CertificateDer<'_>,
        d: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::client::danger::ServerCertVerifier::verify_tls13_signature(self, m, c, d)
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        rustls::client::danger::ServerCertVerifier::supported_verify_schemes(self)
    }
}

/// `cert` (someone else's, copied) paired with a key that does not belong to it. rustls' own
/// builders refuse such a pair, so it goes through a resolver.
fn stolen_certificate(cert: &Identity) -> Arc<rustls::sign::SingleCertAndKey> {
    let own_key = Identity::generate("impostor").unwrap().key();
    let signer = rustls::crypto::ring::default_provider()
        .key_provider
        .load_private_key(own_key)
        .unwrap();
    Arc::new(rustls::sign::CertifiedKey::new(vec![cert.cert()], signer).into())
}

#[tokio::test]
async fn a_copied_coordinator_certificate_without_its_key_is_refused() {
    bounded(async {
        let coordinator = Coordinator::new();
        let mut agent = Agent::start(allow(vec![coordinator.fingerprint()]));

        let mut tls = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AcceptAnything))
        .with_client_cert_resolver(stolen_certificate(&coordinator.identity));
        tls.alpn_protocols = vec![tls::ALPN.to_vec()];
        let quic = quinn::crypto::rustls::QuicClientConfig::try_from(Arc::new(tls)).unwrap();
        let endpoint = tls::client_endpoint(loopback()).unwrap();
        let err = connect(
            &endpoint,
            agent.addr,
            quinn::ClientConfig::new(Arc::new(quic)),
            DIAL_LIMIT,
        )
        .await
        .expect_err("an impostor must not get in");
        eprintln!("impostor sees: {err:?}");

        match agent.next_event().await {
            ServerEvent::Failed(err, text) => {
                eprintln!("agent: {err:?}\nagent says: {text}");
                let quinn::ConnectionError::TransportError(local) = &err else {
                    panic!("expected a local TLS error on the agent, got {err:?}");
                };
                // decrypt_error: the CertificateVerify signature does not match the certificate.
                assert_eq!(u64::from(local.code), 0x100 + 51, "{err:?}");
                assert!(
                    text.contains("without proving it holds the private key"),
                    "{text}"
                );
            }
            other => panic!("expected a failed handshake, got {other:?}"),
        }
        endpoint.close(0u32.into(), b"");
        coordinator.stop().await;
        agent.stop().await;
    })
    .await;
}

#[tokio::test]
async fn a_copied_agent_certificate_without_its_key_is_refused() {
    bounded(async {
        let coordinator = Coordinator::new();
        let real_agent = Identity::generate("real agent").unwrap();

        let mut tls = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_client_cert_verifier(Arc::new(AcceptAnything))
        .with_cert_resolver(stolen_certificate(&real_agent));
        tls.alpn_protocols = vec![tls::ALPN.to_vec()];
        let quic = quinn::crypto::rustls::QuicServerConfig::try_from(Arc::new(tls)).unwrap();
        let impostor = tls::server_endpoint(
            loopback(),
            quinn::ServerConfig::with_crypto(Arc::new(quic)),
            &Identity::generate("impostor").unwrap(),
        )
        .unwrap();
        let addr = impostor.local_addr().unwrap();
        let server = tokio::spawn({
            let impostor = impostor.clone();
            async move {
                if let Some(incoming) = impostor.accept().await {
                    let _ = incoming.await;
                }
            }
        });

        let err = coordinator
            .dial(addr, &real_agent.fingerprint())
            .await
            .expect_err("an impostor agent must be refused");
        eprintln!("coordinator: {err:?}");
        let DialError::Connection(quinn::ConnectionError::TransportError(local)) = &err else {
            panic!("expected our own TLS stack to fail the handshake, got {err:?}");
        };
        assert_eq!(u64::from(local.code), 0x100 + 51, "{err:?}");
        let sentence = err.explain(addr, &real_agent.fingerprint(), &coordinator.fingerprint());
        assert!(sentence.contains("impersonating"), "{sentence}");

        server.abort();
        impostor.close(0u32.into(), b"");
        coordinator.stop().await;
    })
    .await;
}

//! Identities and trust: self-signed certificates for agents and coordinators, their SHA-256
//! fingerprints, the on-disk identity files (`identity.crt` / `identity.key`, mode 0600, in a 0700
//! directory) and an agent's `authorized_coordinators` list.
//!
//! Design notes:
//!
//! * Trust is pinned, like SSH: a peer is identified by the SHA-256 of its certificate's DER
//!   bytes, never by names or a CA. Certificates are therefore self-signed with a fixed dummy
//!   subject-alternative name and a validity reaching far into the future (nothing checks dates).
//! * Keys are ECDSA P-256: it is what both rcgen and rustls' ring provider handle everywhere
//!   (signing and verifying), so one key type covers both roles.
//! * Files holding the private key are created with their final mode (0600) through
//!   `OpenOptions::mode`, so there is no window in which the key is readable by others. They are
//!   written under a temporary name and then hard-linked into place: a crash never leaves a
//!   half-written key, and `link` refuses to overwrite an identity someone else just created.
//! * `authorized_coordinators` is re-read on every handshake (see [`AuthorizedKeys::checker`]):
//!   it is a few lines long, so this costs less than the handshake's own signatures, and
//!   `hsm-agent authorize` takes effect without restarting or signalling the daemon.

use std::collections::BTreeSet;
use std::fmt;
use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use sha2::{Digest, Sha256};

/// File name of the PEM certificate inside a state directory.
pub const CERT_FILE: &str = "identity.crt";
/// File name of the PEM (PKCS#8) private key inside a state directory.
pub const KEY_FILE: &str = "identity.key";
/// File name of the agent's list of authorized coordinator fingerprints.
pub const AUTHORIZED_FILE: &str = "authorized_coordinators";

/// Subject-alternative name put in every certificate. Nobody checks it (peers are pinned by
/// fingerprint); it only has to be a syntactically valid DNS name.
const DUMMY_SAN: &str = "hsm-agent";

/// Errors from creating, loading or trusting identities.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// A file or directory could not be read, written or created.
    #[error("cannot access {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// Neither identity file exists in the directory. Callers add the command that creates one
    /// (`hsm-agent init --state-dir DIR`, or the coordinator's equivalent).
    #[error("no identity in {dir}")]
    Missing { dir: PathBuf },
    /// Only one of the two identity files exists (an interrupted creation, or a stray file).
    #[error(
        "incomplete identity in {dir}: {present} exists but {missing} does not \
         (remove {present} to create a new identity; peers that pinned the old one must be updated)"
    )]
    Incomplete {
        dir: PathBuf,
        present: &'static str,
        missing: &'static str,
    },
    /// The private key file can be read or written by group or others.
    #[error(
        "private key {path} is accessible by other users (mode {mode:04o}); \
         run `chmod 600 {path}` and try again"
    )]
    KeyPermissions { path: PathBuf, mode: u32 },
    /// A trust file can be modified by group or others, so anyone could authorize themselves.
    #[error(
        "{path} is writable by other users (mode {mode:04o}); \
         run `chmod 600 {path}` and try again"
    )]
    TrustFilePermissions { path: PathBuf, mode: u32 },
    /// The state directory, a parent of it or a file in it can be changed by another user.
    #[error(transparent)]
    Unsafe(#[from] crate::strict::StrictError),
    /// A file does not contain the expected PEM block.
    #[error("{path} is not a valid {what}: {reason}")]
    Pem {
        path: PathBuf,
        what: &'static str,
        reason: String,
    },
    /// The private key does not belong to the certificate next to it.
    #[error("{key} does not match {cert}: {reason}")]
    KeyMismatch {
        cert: PathBuf,
        key: PathBuf,
        reason: String,
    },
    /// Key or certificate generation failed.
    #[error("cannot generate an identity: {0}")]
    Generate(#[from] rcgen::Error),
    /// A fingerprint given by the user is malformed.
    #[error(
        "invalid fingerprint `{text}`: {reason} (expected `sha256:` followed by 64 hex digits)"
    )]
    BadFingerprint { text: String, reason: &'static str },
    /// A line of `authorized_coordinators` is not a fingerprint.
    #[error("{path}:{line}: {reason}")]
    AuthorizedLine {
        path: PathBuf,
        line: usize,
        reason: String,
    },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> IdentityError + '_ {
    move |source| IdentityError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Returns `"sha256:"` followed by the lowercase hex SHA-256 of a certificate's DER bytes.
pub fn fingerprint(cert_der: &[u8]) -> String {
    let digest = Sha256::digest(cert_der);
    let mut out = String::with_capacity(7 + 64);
    out.push_str("sha256:");
    for byte in digest {
        out.push(char::from(HEX[usize::from(byte >> 4)]));
        out.push(char::from(HEX[usize::from(byte & 0xf)]));
    }
    out
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// Validates a fingerprint typed or pasted by a user and returns its canonical form. Whitespace
/// anywhere (line-wrapped pastes) is dropped and case is ignored.
pub fn parse_fingerprint(text: &str) -> Result<String, IdentityError> {
    let bad = |reason| IdentityError::BadFingerprint {
        text: text.trim().chars().take(100).collect(),
        reason,
    };
    let compact: String = text
        .chars()
        .filter(|c| !c.is_whitespace())
        .flat_map(char::to_lowercase)
        .collect();
    let Some(hex) = compact.strip_prefix("sha256:") else {
        return Err(bad("missing the `sha256:` prefix"));
    };
    if hex.len() != 64 {
        return Err(bad("wrong length"));
    }
    if !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(bad("not hexadecimal"));
    }
    Ok(compact)
}

/// Finds every well-formed fingerprint inside a free-form text (an error message), in order.
pub(crate) fn fingerprints_in(text: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mut rest = text;
    while let Some(at) = rest.find("sha256:") {
        let candidate = &rest[at..];
        let hex: String = candidate[7..]
            .chars()
            .take_while(char::is_ascii_hexdigit)
            .collect();
        if hex.len() == 64 {
            found.push(format!("sha256:{}", hex.to_ascii_lowercase()));
        }
        rest = &candidate[7..];
    }
    found
}

/// A self-signed certificate and its private key.
#[derive(Clone)]
pub struct Identity {
    /// The certificate, DER-encoded.
    pub cert_der: Vec<u8>,
    /// The private key, PKCS#8 DER-encoded.
    pub key_der: Vec<u8>,
}

// Hand-written so that the private key never ends up in logs.
impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Identity")
            .field("fingerprint", &self.fingerprint())
            .finish_non_exhaustive()
    }
}

impl Identity {
    /// Creates a new self-signed ECDSA P-256 identity whose subject is `common_name`.
    pub fn generate(common_name: &str) -> Result<Identity, IdentityError> {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        let mut params = rcgen::CertificateParams::new(vec![DUMMY_SAN.to_string()])?;
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, common_name);
        // rcgen's defaults (valid from 1975 to 4096) are kept on purpose: pinned peers do not
        // care about dates, and clocks on cluster nodes are not always right.
        let cert = params.self_signed(&key)?;
        Ok(Identity {
            cert_der: cert.der().to_vec(),
            key_der: key.serialize_der(),
        })
    }

    /// This identity's fingerprint (see [`fingerprint`]).
    pub fn fingerprint(&self) -> String {
        fingerprint(&self.cert_der)
    }

    /// The certificate in the form rustls takes.
    pub fn cert(&self) -> CertificateDer<'static> {
        CertificateDer::from(self.cert_der.clone())
    }

    /// The private key in the form rustls takes.
    pub fn key(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key_der.clone()))
    }

    /// Loads the identity stored in `dir`. Refuses a key file that group or others can access.
    pub fn load(dir: &Path) -> Result<Identity, IdentityError> {
        let cert_path = dir.join(CERT_FILE);
        let key_path = dir.join(KEY_FILE);
        let cert_exists = exists(&cert_path)?;
        let key_exists = exists(&key_path)?;
        match (cert_exists, key_exists) {
            (false, false) => {
                return Err(IdentityError::Missing {
                    dir: dir.to_path_buf(),
                })
            }
            (true, false) => {
                return Err(IdentityError::Incomplete {
                    dir: dir.to_path_buf(),
                    present: CERT_FILE,
                    missing: KEY_FILE,
                })
            }
            (false, true) => {
                return Err(IdentityError::Incomplete {
                    dir: dir.to_path_buf(),
                    present: KEY_FILE,
                    missing: CERT_FILE,
                })
            }
            (true, true) => {}
        }

        // The mode is checked on the opened file, so a swap between check and read changes
        // nothing.
        let mut key_file = File::open(&key_path).map_err(io_err(&key_path))?;
        let mode = key_file.metadata().map_err(io_err(&key_path))?.mode() & 0o7777;
        if mode & 0o077 != 0 {
            return Err(IdentityError::KeyPermissions {
                path: key_path,
                mode,
            });
        }
        let mut key_pem = Vec::new();
        key_file
            .read_to_end(&mut key_pem)
            .map_err(io_err(&key_path))?;
        let cert_pem = fs::read(&cert_path).map_err(io_err(&cert_path))?;

        let cert = CertificateDer::from_pem_slice(&cert_pem).map_err(|e| IdentityError::Pem {
            path: cert_path.clone(),
            what: "PEM certificate",
            reason: e.to_string(),
        })?;
        let key = PrivatePkcs8KeyDer::from_pem_slice(&key_pem).map_err(|e| IdentityError::Pem {
            path: key_path.clone(),
            what: "PEM PKCS#8 private key",
            reason: e.to_string(),
        })?;

        // Catches a key and a certificate from two different identities (a bad copy) here, with
        // a message naming the files, instead of as a handshake failure on the peer.
        let provider = rustls::crypto::ring::default_provider();
        rustls::sign::CertifiedKey::from_der(
            vec![cert.clone()],
            PrivateKeyDer::Pkcs8(key.clone_key()),
            &provider,
        )
        .map_err(|e| IdentityError::KeyMismatch {
            cert: cert_path.clone(),
            key: key_path.clone(),
            reason: e.to_string(),
        })?;

        Ok(Identity {
            cert_der: cert.to_vec(),
            key_der: key.secret_pkcs8_der().to_vec(),
        })
    }

    /// Loads the identity in `dir`, creating the directory (0700) and a new identity (files 0600)
    /// when there is none. Returns the identity and whether it was created by this call.
    pub fn load_or_create(
        dir: &Path,
        common_name: &str,
    ) -> Result<(Identity, bool), IdentityError> {
        create_private_dir(dir)?;
        match Identity::load(dir) {
            Ok(identity) => return Ok((identity, false)),
            Err(IdentityError::Missing { .. }) => {}
            Err(e) => return Err(e),
        }
        let identity = Identity::generate(common_name)?;
        let key_pem = pem_block("PRIVATE KEY", &identity.key_der);
        let cert_pem = pem_block("CERTIFICATE", &identity.cert_der);
        // Key first: if we stop between the two, `load` reports an incomplete identity instead
        // of a certificate whose key was never written.
        write_new_private_file(&dir.join(KEY_FILE), key_pem.as_bytes())?;
        write_new_private_file(&dir.join(CERT_FILE), cert_pem.as_bytes())?;
        sync_dir(dir)?;
        Ok((identity, true))
    }
}

/// RFC 7468 PEM block: base64 in 64-character lines between BEGIN/END labels. Written here
/// because `Identity` keeps DER only and no base64 crate is a dependency; the test below checks
/// it against rustls' PEM parser.
fn pem_block(label: &str, der: &[u8]) -> String {
    const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut encoded = String::with_capacity(der.len().div_ceil(3) * 4);
    for chunk in der.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                encoded.push(char::from(B64[((n >> (18 - 6 * i)) & 0x3f) as usize]));
            } else {
                encoded.push('=');
            }
        }
    }
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in encoded.as_bytes().chunks(64) {
        // The alphabet is ASCII, so every chunk is valid UTF-8.
        out.push_str(std::str::from_utf8(line).unwrap_or_default());
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

fn exists(path: &Path) -> Result<bool, IdentityError> {
    match fs::metadata(path) {
        Ok(_) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(io_err(path)(e)),
    }
}

/// Creates `dir` (and missing parents) with mode 0700. An existing directory is left as it is.
fn create_private_dir(dir: &Path) -> Result<(), IdentityError> {
    DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(io_err(dir))
}

/// Writes a new 0600 file at `path`, failing if it already exists. The content goes to a
/// temporary file first and is then hard-linked into place, so `path` only ever appears complete.
fn write_new_private_file(path: &Path, contents: &[u8]) -> Result<(), IdentityError> {
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(".{file_name}.tmp-{}", std::process::id()));
    // A temporary left by a crashed earlier run of this same pid would make create_new fail.
    let _ = fs::remove_file(&tmp);
    let result = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(io_err(&tmp))?;
        file.write_all(contents).map_err(io_err(&tmp))?;
        file.sync_all().map_err(io_err(&tmp))?;
        match fs::hard_link(&tmp, path) {
            // Some filesystems (FAT, a few FUSE and network ones) have no hard links. Fall back
            // to a rename; only a concurrent creation in the same instant could be overwritten.
            Err(e) if matches!(e.raw_os_error(), Some(libc::EPERM | libc::EOPNOTSUPP)) => {
                if exists(path)? {
                    return Err(io_err(path)(io::ErrorKind::AlreadyExists.into()));
                }
                fs::rename(&tmp, path).map_err(io_err(path))
            }
            other => other.map_err(io_err(path)),
        }
    })();
    let _ = fs::remove_file(&tmp);
    result
}

fn sync_dir(dir: &Path) -> Result<(), IdentityError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err(dir))
}

/// Callback deciding whether a coordinator fingerprint may connect; called once per handshake.
pub type AuthorizeFn = Arc<dyn Fn(&str) -> bool + Send + Sync>;

/// The fingerprints listed in an agent's `authorized_coordinators` file.
///
/// Format: one fingerprint per line, optionally followed by `# comment`; blank lines and lines
/// starting with `#` are ignored. A malformed line is an error naming `file:line` — the whole
/// file is then rejected rather than partially trusted.
#[derive(Debug, Clone, Default)]
pub struct AuthorizedKeys {
    fingerprints: BTreeSet<String>,
}

impl AuthorizedKeys {
    /// Reads `<dir>/authorized_coordinators`. A missing file is an empty list. Like ssh's
    /// StrictModes, a file writable by group or others, or owned by another user, is refused
    /// (anyone could add themselves), and so is a file in a directory another user can change
    /// (they could swap it for their own): see [`crate::strict`].
    pub fn load(dir: &Path) -> Result<AuthorizedKeys, IdentityError> {
        crate::strict::check_dirs(dir)?;
        let path = dir.join(AUTHORIZED_FILE);
        let mut file = match File::open(&path) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(AuthorizedKeys::default()),
            Err(e) => return Err(io_err(&path)(e)),
        };
        let mode = file.metadata().map_err(io_err(&path))?.mode() & 0o7777;
        if mode & 0o022 != 0 {
            return Err(IdentityError::TrustFilePermissions { path, mode });
        }
        crate::strict::check_open_file(&file, &path)?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes).map_err(io_err(&path))?;
        let mut fingerprints = BTreeSet::new();
        for (index, raw) in bytes.split(|&b| b == b'\n').enumerate() {
            let bad = |reason: String| IdentityError::AuthorizedLine {
                path: path.clone(),
                line: index + 1,
                reason,
            };
            let raw = std::str::from_utf8(raw).map_err(|_| bad("not UTF-8 text".into()))?;
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let mut fields = line.splitn(2, char::is_whitespace);
            let first = fields.next().unwrap_or_default();
            let rest = fields.next().unwrap_or_default().trim_start();
            if !rest.is_empty() && !rest.starts_with('#') {
                return Err(bad(
                    "expected one fingerprint, optionally followed by `# comment`".into(),
                ));
            }
            let fp = parse_fingerprint(first).map_err(|e| bad(e.to_string()))?;
            fingerprints.insert(fp);
        }
        Ok(AuthorizedKeys { fingerprints })
    }

    /// Whether `fp` (in any accepted spelling) is authorized. Malformed input is not.
    pub fn contains(&self, fp: &str) -> bool {
        parse_fingerprint(fp).is_ok_and(|fp| self.fingerprints.contains(&fp))
    }

    /// The authorized fingerprints, sorted.
    pub fn fingerprints(&self) -> impl Iterator<Item = &str> {
        self.fingerprints.iter().map(String::as_str)
    }

    /// Number of authorized fingerprints.
    pub fn len(&self) -> usize {
        self.fingerprints.len()
    }

    /// Whether no coordinator is authorized.
    pub fn is_empty(&self) -> bool {
        self.fingerprints.is_empty()
    }

    /// Adds `fp` to `<dir>/authorized_coordinators` (created 0600, and `dir` 0700, if missing).
    /// Returns `false` when it was already there (nothing is written).
    pub fn authorize(dir: &Path, fp: &str) -> Result<bool, IdentityError> {
        let fp = parse_fingerprint(fp)?;
        create_private_dir(dir)?;
        // Loading first also refuses to append to a file that is malformed or too open.
        if AuthorizedKeys::load(dir)?.fingerprints.contains(&fp) {
            return Ok(false);
        }
        let path = dir.join(AUTHORIZED_FILE);
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .mode(0o600)
            .open(&path)
            .map_err(io_err(&path))?;
        // A hand-edited file may lack its final newline; never glue two fingerprints together.
        let len = file.metadata().map_err(io_err(&path))?.len();
        let mut line = String::new();
        if len > 0 {
            use std::io::{Seek, SeekFrom};
            let mut last = [0u8; 1];
            file.seek(SeekFrom::Start(len - 1))
                .and_then(|_| file.read_exact(&mut last))
                .map_err(io_err(&path))?;
            if last[0] != b'\n' {
                line.push('\n');
            }
        }
        line.push_str(&fp);
        line.push('\n');
        file.write_all(line.as_bytes()).map_err(io_err(&path))?;
        file.sync_all().map_err(io_err(&path))?;
        Ok(true)
    }

    /// A callback for [`crate::tls::server_config`] that re-reads `<dir>/authorized_coordinators`
    /// on every call, so `authorize` takes effect for the next handshake without a restart. The
    /// file is a few lines and is read once per handshake, which is cheap next to the handshake's
    /// signatures. If the file cannot be read or is malformed, everybody is refused (fail closed)
    /// and the reason is logged.
    pub fn checker(dir: &Path) -> AuthorizeFn {
        let dir = dir.to_path_buf();
        Arc::new(move |fp: &str| match AuthorizedKeys::load(&dir) {
            Ok(keys) => keys.contains(fp),
            Err(e) => {
                tracing::warn!("refusing every coordinator until this is fixed: {e}");
                false
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprint_format_and_parse_round_trip() {
        let fp = fingerprint(b"abc");
        assert_eq!(
            fp,
            "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        let spaced = format!("  SHA256:{}\n {} ", &fp[7..39].to_uppercase(), &fp[39..]);
        assert_eq!(parse_fingerprint(&spaced).unwrap(), fp);
        assert!(parse_fingerprint(&fp[7..]).is_err());
        assert!(parse_fingerprint("sha256:abcd").is_err());
        assert!(parse_fingerprint(&format!("sha256:{}", "g".repeat(64))).is_err());
        // Multi-byte characters must not panic the length/slice logic.
        assert!(parse_fingerprint(&format!("sha256:{}", "é".repeat(32))).is_err());
    }

    #[test]
    fn fingerprints_are_found_in_text() {
        let a = fingerprint(b"a");
        let b = fingerprint(b"b");
        let text = format!("x sha256: {a}, expected {b}) sha256:12");
        assert_eq!(fingerprints_in(&text), vec![a, b]);
        assert!(fingerprints_in("sha256:é").is_empty());
    }

    #[test]
    fn pem_matches_rustls_parser() {
        for len in [0usize, 1, 2, 3, 47, 48, 49, 100] {
            let der: Vec<u8> = (0..len).map(|i| (i * 37) as u8).collect();
            let pem = pem_block("CERTIFICATE", &der);
            let parsed = CertificateDer::from_pem_slice(pem.as_bytes()).unwrap();
            assert_eq!(parsed.as_ref(), der.as_slice(), "length {len}");
        }
    }
}

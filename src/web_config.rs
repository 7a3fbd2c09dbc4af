//! The web config file (`--web.config.file`, the exporter-toolkit format that
//! Prometheus exporters share): parsing with unknown and unsupported keys
//! rejected, validation of every file it names, the rustls server config, and
//! re-reading the file (and the files it names) when any of them changes.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use serde_yaml::{Mapping, Value};
use tokio_rustls::rustls::client::danger::HandshakeSignatureValid;
use tokio_rustls::rustls::crypto::{self, CryptoProvider, WebPkiSupportedAlgorithms};
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use tokio_rustls::rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use tokio_rustls::rustls::server::WebPkiClientVerifier;
use tokio_rustls::rustls::{
    version, DigitallySignedStruct, DistinguishedName, Error as TlsError, RootCertStore, ServerConfig,
    SignatureScheme, SupportedProtocolVersion,
};

use crate::config::ConfigErrors;

/// How often, at most, the files are looked at for changes. A scrape every
/// 15 s then costs a few `stat` calls now and then, and a rotated certificate
/// is in use for new connections within a second.
pub const CHECK_INTERVAL: Duration = Duration::from_secs(1);

/// The exporter-toolkit's `client_auth_type` values, with Go's names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientAuth {
    NoClientCert,
    RequestClientCert,
    RequireAnyClientCert,
    VerifyClientCertIfGiven,
    RequireAndVerifyClientCert,
}

const CLIENT_AUTH_TYPES: [(&str, ClientAuth); 5] = [
    ("NoClientCert", ClientAuth::NoClientCert),
    ("RequestClientCert", ClientAuth::RequestClientCert),
    ("RequireAnyClientCert", ClientAuth::RequireAnyClientCert),
    ("VerifyClientCertIfGiven", ClientAuth::VerifyClientCertIfGiven),
    (
        "RequireAndVerifyClientCert",
        ClientAuth::RequireAndVerifyClientCert,
    ),
];

impl ClientAuth {
    /// Whether client certificates are checked against `client_ca_file`.
    fn verifies(self) -> bool {
        matches!(
            self,
            ClientAuth::VerifyClientCertIfGiven | ClientAuth::RequireAndVerifyClientCert
        )
    }
}

const TOP_KEYS: &[&str] = &["tls_server_config", "basic_auth_users"];
const TLS_KEYS: &[&str] = &[
    "cert_file",
    "key_file",
    "client_auth_type",
    "client_ca_file",
    "min_version",
    "max_version",
];
/// Toolkit keys we know but do not implement, and why: an operator who sets
/// one must learn it has no effect rather than believe it protects them.
const UNSUPPORTED: &[(&str, &str)] = &[
    (
        "http_server_config",
        "headers and the HTTP/2 switch are not configurable here",
    ),
    (
        "rate_limit",
        "put a reverse proxy in front to rate-limit requests",
    ),
    ("tls_server_config.cert", "name the certificate with cert_file"),
    ("tls_server_config.key", "name the key with key_file"),
    ("tls_server_config.client_ca", "name the CA with client_ca_file"),
    (
        "tls_server_config.client_allowed_sans",
        "any certificate the client CA signed is accepted",
    ),
    (
        "tls_server_config.cipher_suites",
        "rustls uses its own safe cipher suites",
    ),
    (
        "tls_server_config.prefer_server_cipher_suites",
        "rustls uses its own safe cipher suites",
    ),
    (
        "tls_server_config.curve_preferences",
        "rustls uses its own key exchange groups",
    ),
];

/// A validated web config: what the server enforces.
pub struct WebConfig {
    /// Present when the endpoints are served over TLS.
    pub tls: Option<Arc<ServerConfig>>,
    pub client_auth: ClientAuth,
    /// User name → bcrypt hash. Empty: no basic auth.
    pub users: BTreeMap<String, String>,
    /// The files the TLS settings were read from, watched for changes.
    files: Vec<PathBuf>,
}

impl fmt::Debug for WebConfig {
    // By hand, so that no hash ever reaches a log line through `{:?}`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebConfig")
            .field("tls", &self.tls.is_some())
            .field("client_auth", &self.client_auth)
            .field("users", &self.users.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl WebConfig {
    /// The one-line summary `--config.check` prints and the start-up log carries.
    pub fn summary(&self) -> String {
        let tls = match &self.tls {
            None => "TLS off".to_owned(),
            Some(_) => format!("TLS on, client_auth_type {:?}", self.client_auth),
        };
        format!("web config OK: {tls}, {} basic auth users", self.users.len())
    }
}

/// Reads and validates the web config at `path`; each error names the file
/// and the key. Relative file names are taken from the config file's folder,
/// as the exporter-toolkit does.
pub fn load(path: &Path) -> Result<WebConfig, ConfigErrors> {
    let prefix = |e: String| format!("{}: {e}", path.display());
    let text = std::fs::read_to_string(path)
        .map_err(|e| ConfigErrors(vec![prefix(format!("cannot read web config file: {e}"))]))?;
    let base = path.parent().unwrap_or(Path::new("."));
    parse(&text, base).map_err(|ConfigErrors(errs)| ConfigErrors(errs.into_iter().map(prefix).collect()))
}

/// Parses and validates YAML text, collecting every problem rather than the first.
pub fn parse(text: &str, base: &Path) -> Result<WebConfig, ConfigErrors> {
    // Walked by hand rather than with serde, so that an error can say "not
    // supported" for toolkit keys and never quotes a value (hashes are secrets).
    let doc: Value =
        serde_yaml::from_str(text).map_err(|e| ConfigErrors(vec![format!("not valid YAML: {e}")]))?;
    let mut errors = Vec::new();
    let empty = Mapping::new();
    let top = match &doc {
        Value::Null => &empty,
        Value::Mapping(m) => m,
        _ => return Err(ConfigErrors(vec!["the file must be a YAML mapping".to_owned()])),
    };
    check_keys(top, "", TOP_KEYS, &mut errors);

    let users = match top.get("basic_auth_users") {
        None | Some(Value::Null) => BTreeMap::new(),
        Some(Value::Mapping(m)) => parse_users(m, &mut errors),
        Some(_) => {
            errors.push("basic_auth_users: must be a mapping of user name to bcrypt hash".to_owned());
            BTreeMap::new()
        }
    };

    let (tls, client_auth, files) = match top.get("tls_server_config") {
        None | Some(Value::Null) => (None, ClientAuth::NoClientCert, vec![]),
        Some(Value::Mapping(m)) if m.is_empty() => (None, ClientAuth::NoClientCert, vec![]),
        Some(Value::Mapping(m)) => parse_tls(m, base, &mut errors),
        Some(_) => {
            errors.push("tls_server_config: must be a mapping".to_owned());
            (None, ClientAuth::NoClientCert, vec![])
        }
    };

    if errors.is_empty() {
        Ok(WebConfig {
            tls,
            client_auth,
            users,
            files,
        })
    } else {
        Err(ConfigErrors(errors))
    }
}

/// Reports keys of `map` that are unsupported toolkit keys or unknown.
fn check_keys(map: &Mapping, section: &str, known: &[&str], errors: &mut Vec<String>) {
    for key in map.keys() {
        let Some(name) = key.as_str() else {
            errors.push(format!("{section}: keys must be strings"));
            continue;
        };
        let full = if section.is_empty() {
            name.to_owned()
        } else {
            format!("{section}.{name}")
        };
        if known.contains(&name) {
            continue;
        }
        match UNSUPPORTED.iter().find(|(k, _)| *k == full) {
            Some((_, why)) => errors.push(format!("{full}: not supported by roomengine-exporter ({why})")),
            None => errors.push(format!("{full}: unknown key (known: {})", known.join(", "))),
        }
    }
}

fn parse_users(map: &Mapping, errors: &mut Vec<String>) -> BTreeMap<String, String> {
    let mut users = BTreeMap::new();
    for (user, hash) in map {
        let Some(user) = user.as_str() else {
            errors.push("basic_auth_users: user names must be strings".to_owned());
            continue;
        };
        let key = format!("basic_auth_users.{user}");
        if user.is_empty() || user.contains(':') {
            // Basic auth splits "user:password" at the first colon.
            errors.push(format!("{key}: a user name must be non-empty and hold no ':'"));
            continue;
        }
        match hash.as_str() {
            Some(h) if is_bcrypt_hash(h) => {
                users.insert(user.to_owned(), h.to_owned());
            }
            _ => errors.push(format!(
                "{key}: not a bcrypt hash (expected $2y$, $2b$ or $2a$, a cost 04-31, then 53 characters; \
                 make one with htpasswd -nBC 10 \"\" | tr -d ':\\n')"
            )),
        }
    }
    users
}

/// The shape of a bcrypt hash, e.g. `$2y$10$` + 22 characters of salt + 31 of hash.
fn is_bcrypt_hash(h: &str) -> bool {
    let parts: Vec<&str> = h.split('$').collect();
    let [empty, prefix, cost, rest] = parts[..] else {
        return false;
    };
    empty.is_empty()
        && matches!(prefix, "2a" | "2b" | "2y")
        && cost.len() == 2
        && cost.parse::<u32>().is_ok_and(|c| (4..=31).contains(&c))
        && rest.len() == 53
        && rest
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'/')
}

/// A string-valued key of `tls_server_config`, or an error when it is not a string.
fn string_key<'a>(map: &'a Mapping, name: &str, errors: &mut Vec<String>) -> Option<&'a str> {
    match map.get(name) {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s),
        Some(_) => {
            errors.push(format!("tls_server_config.{name}: must be a string"));
            None
        }
    }
}

fn parse_tls(
    map: &Mapping,
    base: &Path,
    errors: &mut Vec<String>,
) -> (Option<Arc<ServerConfig>>, ClientAuth, Vec<PathBuf>) {
    let before = errors.len();
    check_keys(map, "tls_server_config", TLS_KEYS, errors);
    let mut files = Vec::new();
    let mut file = |name: &str, errors: &mut Vec<String>| {
        string_key(map, name, errors).map(|f| {
            let path = base.join(f);
            files.push(path.clone());
            path
        })
    };
    let cert_file = file("cert_file", errors);
    let key_file = file("key_file", errors);
    let ca_file = file("client_ca_file", errors);

    let client_auth = match string_key(map, "client_auth_type", errors) {
        None => ClientAuth::NoClientCert,
        Some(s) => match CLIENT_AUTH_TYPES.iter().find(|(name, _)| *name == s) {
            Some((_, a)) => *a,
            None => {
                let known: Vec<&str> = CLIENT_AUTH_TYPES.iter().map(|(n, _)| *n).collect();
                errors.push(format!(
                    "tls_server_config.client_auth_type: unknown value {s:?} (known: {})",
                    known.join(", ")
                ));
                ClientAuth::NoClientCert
            }
        },
    };
    let min = tls_version(map, "min_version", 12, errors);
    let max = tls_version(map, "max_version", 13, errors);
    if let (Some(min), Some(max)) = (min, max) {
        if min > max {
            errors.push("tls_server_config.min_version: is above max_version".to_owned());
        }
    }

    if cert_file.is_none() {
        errors.push("tls_server_config.cert_file: missing (TLS needs a certificate)".to_owned());
    }
    if key_file.is_none() {
        errors
            .push("tls_server_config.key_file: missing (TLS needs the certificate's private key)".to_owned());
    }
    if client_auth.verifies() && ca_file.is_none() {
        errors.push(format!(
            "tls_server_config.client_ca_file: missing (client_auth_type {client_auth:?} verifies client certificates against it)"
        ));
    }
    if client_auth == ClientAuth::NoClientCert && ca_file.is_some() {
        errors.push(
            "tls_server_config.client_ca_file: set, but client_auth_type is NoClientCert (set client_auth_type: RequireAndVerifyClientCert)"
                .to_owned(),
        );
    }

    let certs = cert_file
        .as_deref()
        .and_then(|p| read_certs(p, "cert_file", errors));
    let key = key_file
        .as_deref()
        .and_then(|p| match PrivateKeyDer::from_pem_file(p) {
            Ok(k) => Some(k),
            Err(e) => {
                errors.push(pem_error("key_file", p, "PEM private key", e));
                None
            }
        });
    let roots = ca_file.as_deref().and_then(|p| {
        let certs = read_certs(p, "client_ca_file", errors)?;
        let mut roots = RootCertStore::empty();
        for cert in certs {
            if let Err(e) = roots.add(cert) {
                errors.push(format!(
                    "tls_server_config.client_ca_file: {}: not a usable CA certificate: {e}",
                    p.display()
                ));
                return None;
            }
        }
        Some(Arc::new(roots))
    });

    if errors.len() > before {
        return (None, client_auth, files);
    }
    let (Some(certs), Some(key), Some(min), Some(max)) = (certs, key, min, max) else {
        return (None, client_auth, files);
    };
    let provider = Arc::new(crypto::ring::default_provider());
    let versions: Vec<&'static SupportedProtocolVersion> = [(12, &version::TLS12), (13, &version::TLS13)]
        .into_iter()
        .filter(|(n, _)| (min..=max).contains(n))
        .map(|(_, v)| v)
        .collect();
    let verifier = match client_verifier(client_auth, roots, &provider) {
        Ok(v) => v,
        Err(e) => {
            errors.push(format!("tls_server_config.client_ca_file: {e}"));
            return (None, client_auth, files);
        }
    };
    let builder = match ServerConfig::builder_with_provider(provider).with_protocol_versions(&versions) {
        Ok(b) => b,
        Err(e) => {
            errors.push(format!("tls_server_config: {e}"));
            return (None, client_auth, files);
        }
    };
    let builder = match verifier {
        Some(v) => builder.with_client_cert_verifier(v),
        None => builder.with_no_client_auth(),
    };
    match builder.with_single_cert(certs, key) {
        Ok(mut config) => {
            // Prometheus speaks HTTP/1.1; curl and browsers may prefer h2.
            config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
            (Some(Arc::new(config)), client_auth, files)
        }
        Err(e) => {
            let (cert, key) = (cert_file.unwrap_or_default(), key_file.unwrap_or_default());
            errors.push(format!(
                "tls_server_config.key_file: {} does not fit the certificate in {}: {e}",
                key.display(),
                cert.display()
            ));
            (None, client_auth, files)
        }
    }
}

/// `min_version` / `max_version` as the minor number: TLS12 → 12.
fn tls_version(map: &Mapping, name: &str, default: u8, errors: &mut Vec<String>) -> Option<u8> {
    match string_key(map, name, errors) {
        None => Some(default),
        Some("TLS12") => Some(12),
        Some("TLS13") => Some(13),
        Some(v @ ("TLS10" | "TLS11")) => {
            errors.push(format!(
                "tls_server_config.{name}: {v} is not supported (rustls speaks TLS12 and TLS13)"
            ));
            None
        }
        Some(v) => {
            errors.push(format!(
                "tls_server_config.{name}: unknown value {v:?} (known: TLS12, TLS13)"
            ));
            None
        }
    }
}

fn read_certs(path: &Path, key: &str, errors: &mut Vec<String>) -> Option<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_file_iter(path).and_then(|it| it.collect::<Result<Vec<_>, _>>());
    match certs {
        Ok(c) if !c.is_empty() => Some(c),
        Ok(_) => {
            errors.push(format!(
                "tls_server_config.{key}: {}: holds no PEM certificate",
                path.display()
            ));
            None
        }
        Err(e) => {
            errors.push(pem_error(key, path, "PEM certificate", e));
            None
        }
    }
}

/// One wording for "cannot read" and "not PEM", whichever file it is.
fn pem_error(key: &str, path: &Path, what: &str, e: tokio_rustls::rustls::pki_types::pem::Error) -> String {
    use tokio_rustls::rustls::pki_types::pem::Error as E;
    let reason = match e {
        E::Io(io) => format!("cannot read: {io}"),
        E::NoItemsFound => format!("holds no {what}"),
        other => format!("not a valid {what} ({other:?})"),
    };
    format!("tls_server_config.{key}: {}: {reason}", path.display())
}

fn client_verifier(
    auth: ClientAuth,
    roots: Option<Arc<RootCertStore>>,
    provider: &Arc<CryptoProvider>,
) -> Result<Option<Arc<dyn ClientCertVerifier>>, String> {
    let algs = provider.signature_verification_algorithms;
    let any = |mandatory| {
        Ok(Some(
            Arc::new(AnyClientCert { mandatory, algs }) as Arc<dyn ClientCertVerifier>
        ))
    };
    let webpki = |roots: Option<Arc<RootCertStore>>, optional: bool| {
        let roots = roots.ok_or("missing")?;
        let builder = WebPkiClientVerifier::builder_with_provider(roots, provider.clone());
        let builder = if optional {
            builder.allow_unauthenticated()
        } else {
            builder
        };
        builder.build().map(Some).map_err(|e| e.to_string())
    };
    match auth {
        ClientAuth::NoClientCert => Ok(None),
        ClientAuth::RequestClientCert => any(false),
        ClientAuth::RequireAnyClientCert => any(true),
        ClientAuth::VerifyClientCertIfGiven => webpki(roots, true),
        ClientAuth::RequireAndVerifyClientCert => webpki(roots, false),
    }
}

/// Go's RequestClientCert / RequireAnyClientCert: ask for (or require) a
/// certificate without checking who signed it. The handshake signature is
/// still checked, so the client does hold the certificate's key.
#[derive(Debug)]
struct AnyClientCert {
    mandatory: bool,
    algs: WebPkiSupportedAlgorithms,
}

impl ClientCertVerifier for AnyClientCert {
    fn client_auth_mandatory(&self) -> bool {
        self.mandatory
    }
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }
    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, TlsError> {
        Ok(ClientCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, TlsError> {
        crypto::verify_tls12_signature(message, cert, dss, &self.algs)
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, TlsError> {
        crypto::verify_tls13_signature(message, cert, dss, &self.algs)
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algs.supported_schemes()
    }
}

/// Size and modification time of each watched file (None: unreadable).
type Stamp = Vec<Option<(SystemTime, u64)>>;

fn stamp(path: &Path, config: &WebConfig) -> Stamp {
    std::iter::once(path)
        .chain(config.files.iter().map(PathBuf::as_path))
        .map(|p| {
            std::fs::metadata(p)
                .ok()
                .and_then(|m| Some((m.modified().ok()?, m.len())))
        })
        .collect()
}

/// The web config in force, re-read when the file or a file it names changes
/// (certificate rotation, users added). Like the exporter-toolkit, changes
/// apply to new connections and requests; unlike it, a broken new file is
/// logged and the last good one stays in force, as a bad exporter.yaml on
/// reload does. Whether TLS is on cannot change without a restart.
pub struct WebConfigWatch {
    path: PathBuf,
    check_every: Duration,
    state: Mutex<WatchState>,
}

struct WatchState {
    current: Arc<WebConfig>,
    /// Stamp of the files `current` (or the last failed attempt) was read from.
    stamp: Stamp,
    checked: Instant,
}

impl fmt::Debug for WebConfigWatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebConfigWatch")
            .field("path", &self.path)
            .finish()
    }
}

impl WebConfigWatch {
    /// Loads `path` (an error here stops the exporter) and watches it.
    pub fn load(path: &Path) -> Result<Arc<WebConfigWatch>, ConfigErrors> {
        Ok(Self::with_interval(path, load(path)?, CHECK_INTERVAL))
    }

    /// As `load`, checking for changes every `check_every` (tests use zero).
    pub(crate) fn with_interval(path: &Path, first: WebConfig, check_every: Duration) -> Arc<WebConfigWatch> {
        let stamp = stamp(path, &first);
        Arc::new(WebConfigWatch {
            path: path.to_owned(),
            check_every,
            state: Mutex::new(WatchState {
                current: Arc::new(first),
                stamp,
                checked: Instant::now(),
            }),
        })
    }

    /// The config in force now, after re-reading the files if they changed.
    pub fn current(&self) -> Arc<WebConfig> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if state.checked.elapsed() < self.check_every {
            return state.current.clone();
        }
        state.checked = Instant::now();
        let now = stamp(&self.path, &state.current);
        if now == state.stamp {
            return state.current.clone();
        }
        // Remember the stamp even when the new file is bad: one error line per change, not per request.
        state.stamp = now;
        match load(&self.path) {
            Ok(new) if new.tls.is_some() != state.current.tls.is_some() => {
                tracing::error!(
                    file = %self.path.display(),
                    "web config changed whether TLS is on; that needs a restart, keeping the previous web config"
                );
            }
            Ok(new) => {
                tracing::info!(file = %self.path.display(), summary = %new.summary(), "web config re-read");
                state.stamp = stamp(&self.path, &new);
                state.current = Arc::new(new);
            }
            Err(errors) => {
                tracing::error!(error = %errors, "web config is invalid; keeping the previous one");
            }
        }
        state.current.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A CA, a server certificate it signed, and their files in a tempdir.
    struct Pki {
        dir: tempfile::TempDir,
    }

    fn pki() -> Pki {
        let dir = tempfile::tempdir().unwrap();
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca = ca_params.self_signed(&ca_key).unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["localhost".to_owned()])
            .unwrap()
            .signed_by(&key, &ca, &ca_key)
            .unwrap();
        let other_key = rcgen::KeyPair::generate().unwrap();
        std::fs::write(dir.path().join("ca.pem"), ca.pem()).unwrap();
        std::fs::write(dir.path().join("server.pem"), cert.pem()).unwrap();
        std::fs::write(dir.path().join("server.key"), key.serialize_pem()).unwrap();
        std::fs::write(dir.path().join("other.key"), other_key.serialize_pem()).unwrap();
        std::fs::write(dir.path().join("junk.pem"), "not pem at all\n").unwrap();
        Pki { dir }
    }

    const HASH: &str = "$2y$10$6jEO6wk5R6KOG98YSDXv3uE8norZwzgc.778f0qF7XYT8i1HIJVKS";

    fn errors(p: &Pki, yaml: &str) -> Vec<String> {
        parse(yaml, p.dir.path()).unwrap_err().0
    }

    #[test]
    fn tls_with_client_verification_and_users() {
        let p = pki();
        let c = parse(
            &format!(
                "tls_server_config:\n  cert_file: server.pem\n  key_file: server.key\n  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: ca.pem\n  min_version: TLS13\nbasic_auth_users:\n  alice: {HASH}\n"
            ),
            p.dir.path(),
        )
        .unwrap();
        assert_eq!(c.client_auth, ClientAuth::RequireAndVerifyClientCert);
        assert_eq!(c.users.get("alice").map(String::as_str), Some(HASH));
        assert_eq!(
            c.summary(),
            "web config OK: TLS on, client_auth_type RequireAndVerifyClientCert, 1 basic auth users"
        );
        assert_eq!(c.files.len(), 3);
    }

    #[test]
    fn every_client_auth_type_builds() {
        let p = pki();
        for (name, auth) in CLIENT_AUTH_TYPES {
            let ca = if auth == ClientAuth::NoClientCert {
                ""
            } else {
                "  client_ca_file: ca.pem\n"
            };
            let c = parse(
                &format!("tls_server_config:\n  cert_file: server.pem\n  key_file: server.key\n  client_auth_type: {name}\n{ca}"),
                p.dir.path(),
            )
            .unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(c.client_auth, auth);
        }
    }

    #[test]
    fn the_shipped_example_is_valid() {
        let p = pki();
        std::fs::copy(p.dir.path().join("server.pem"), p.dir.path().join("server.crt")).unwrap();
        let c = parse(include_str!("../web-config.example.yml"), p.dir.path()).unwrap();
        assert_eq!(
            c.summary(),
            "web config OK: TLS on, client_auth_type NoClientCert, 1 basic auth users"
        );
        assert!(c.users.contains_key("prometheus"));
    }

    #[test]
    fn empty_file_and_users_only_mean_no_tls() {
        let p = pki();
        let c = parse("", p.dir.path()).unwrap();
        assert!(c.tls.is_none() && c.users.is_empty());
        let c = parse(&format!("basic_auth_users:\n  bob: {HASH}\n"), p.dir.path()).unwrap();
        assert!(c.tls.is_none());
        assert_eq!(c.summary(), "web config OK: TLS off, 1 basic auth users");
    }

    #[test]
    fn unknown_and_unsupported_keys_are_named() {
        let p = pki();
        assert_eq!(
            errors(
                &p,
                "tls_server_config:\n  cert_file: server.pem\n  key_file: server.key\n  cipher_suites: [TLS_AES_128_GCM_SHA256]\n  certfile: x\nhttp_server_config:\n  http2: false\nbasic_auth_user: {}\n"
            ),
            vec![
                "http_server_config: not supported by roomengine-exporter (headers and the HTTP/2 switch are not configurable here)",
                "basic_auth_user: unknown key (known: tls_server_config, basic_auth_users)",
                "tls_server_config.cipher_suites: not supported by roomengine-exporter (rustls uses its own safe cipher suites)",
                "tls_server_config.certfile: unknown key (known: cert_file, key_file, client_auth_type, client_ca_file, min_version, max_version)",
            ]
        );
    }

    #[test]
    fn bad_values_are_named_without_quoting_hashes() {
        let p = pki();
        let e = errors(
            &p,
            "tls_server_config:\n  cert_file: server.pem\n  key_file: server.key\n  client_auth_type: Sometimes\n  min_version: TLS10\n  max_version: TLS14\nbasic_auth_users:\n  alice: plaintext-password\n  'bo:b': x\n",
        );
        assert_eq!(
            e,
            vec![
                "basic_auth_users.alice: not a bcrypt hash (expected $2y$, $2b$ or $2a$, a cost 04-31, then 53 characters; make one with htpasswd -nBC 10 \"\" | tr -d ':\\n')",
                "basic_auth_users.bo:b: a user name must be non-empty and hold no ':'",
                "tls_server_config.client_auth_type: unknown value \"Sometimes\" (known: NoClientCert, RequestClientCert, RequireAnyClientCert, VerifyClientCertIfGiven, RequireAndVerifyClientCert)",
                "tls_server_config.min_version: TLS10 is not supported (rustls speaks TLS12 and TLS13)",
                "tls_server_config.max_version: unknown value \"TLS14\" (known: TLS12, TLS13)",
            ]
        );
        assert!(!e.join("\n").contains("plaintext-password"));
    }

    #[test]
    fn bcrypt_hash_shape() {
        assert!(is_bcrypt_hash(HASH));
        assert!(is_bcrypt_hash(&HASH.replace("$2y$", "$2b$")));
        assert!(!is_bcrypt_hash(&HASH.replace("$10$", "$03$")));
        assert!(!is_bcrypt_hash(&HASH[..HASH.len() - 1]));
        assert!(!is_bcrypt_hash(&HASH.replace('.', "!")));
        assert!(!is_bcrypt_hash("$2y$10$"));
    }

    #[test]
    fn file_problems_name_key_and_file() {
        let p = pki();
        let d = p.dir.path().display();
        assert_eq!(
            errors(&p, "tls_server_config:\n  cert_file: missing.pem\n  key_file: junk.pem\n"),
            vec![
                format!("tls_server_config.cert_file: {d}/missing.pem: cannot read: No such file or directory (os error 2)"),
                format!("tls_server_config.key_file: {d}/junk.pem: holds no PEM private key"),
            ]
        );
        assert_eq!(
            errors(
                &p,
                "tls_server_config:\n  cert_file: junk.pem\n  key_file: server.key\n"
            ),
            vec![format!(
                "tls_server_config.cert_file: {d}/junk.pem: holds no PEM certificate"
            )]
        );
        let mismatch = errors(
            &p,
            "tls_server_config:\n  cert_file: server.pem\n  key_file: other.key\n",
        );
        assert_eq!(mismatch.len(), 1);
        assert!(
            mismatch[0].starts_with(&format!(
                "tls_server_config.key_file: {d}/other.key does not fit the certificate in {d}/server.pem: "
            )),
            "{mismatch:?}"
        );
    }

    #[test]
    fn client_ca_rules() {
        let p = pki();
        assert_eq!(
            errors(
                &p,
                "tls_server_config:\n  cert_file: server.pem\n  key_file: server.key\n  client_auth_type: VerifyClientCertIfGiven\n"
            ),
            vec!["tls_server_config.client_ca_file: missing (client_auth_type VerifyClientCertIfGiven verifies client certificates against it)"]
        );
        assert_eq!(
            errors(&p, "tls_server_config:\n  cert_file: server.pem\n  key_file: server.key\n  client_ca_file: ca.pem\n"),
            vec!["tls_server_config.client_ca_file: set, but client_auth_type is NoClientCert (set client_auth_type: RequireAndVerifyClientCert)"]
        );
        assert_eq!(
            errors(&p, "tls_server_config:\n  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: ca.pem\n"),
            vec![
                "tls_server_config.cert_file: missing (TLS needs a certificate)",
                "tls_server_config.key_file: missing (TLS needs the certificate's private key)",
            ]
        );
        assert_eq!(
            errors(&p, "tls_server_config:\n  cert_file: server.pem\n  key_file: server.key\n  min_version: TLS13\n  max_version: TLS12\n"),
            vec!["tls_server_config.min_version: is above max_version"]
        );
    }

    #[test]
    fn watch_rereads_a_changed_file_and_keeps_the_last_good_one() {
        let p = pki();
        let path = p.dir.path().join("web.yml");
        std::fs::write(&path, format!("basic_auth_users:\n  alice: {HASH}\n")).unwrap();
        let watch = WebConfigWatch::with_interval(&path, load(&path).unwrap(), Duration::ZERO);
        assert_eq!(watch.current().users.keys().collect::<Vec<_>>(), ["alice"]);

        std::fs::write(
            &path,
            format!("basic_auth_users:\n  alice: {HASH}\n  bob: {HASH}\n"),
        )
        .unwrap();
        assert_eq!(watch.current().users.keys().collect::<Vec<_>>(), ["alice", "bob"]);

        std::fs::write(&path, "basic_auth_users:\n  carol: not-a-hash\n").unwrap();
        assert_eq!(watch.current().users.keys().collect::<Vec<_>>(), ["alice", "bob"]);

        // TLS cannot be switched on by a re-read.
        std::fs::write(
            &path,
            "tls_server_config:\n  cert_file: server.pem\n  key_file: server.key\n",
        )
        .unwrap();
        assert!(watch.current().tls.is_none());
    }
}

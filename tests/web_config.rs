//! `--web.config.file` end to end, with the real binary: HTTPS with a test CA,
//! basic auth on every endpoint (401 + `WWW-Authenticate: Basic`), client
//! certificates required by RequireAndVerifyClientCert, and start-up errors.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::{rooms, Exporter, Fake};
use rcgen::{BasicConstraints, CertificateParams, ExtendedKeyUsagePurpose, IsCa, KeyPair};

const POLLING: &str = "  interval: 1s\n  rate_limit: 50\n  timeout: 5s";
const USER: &str = "prometheus";
const PASSWORD: &str = "s3cret-scrape-password";

/// A test CA, a server certificate for 127.0.0.1 and a client certificate,
/// all signed by it, written as PEM files into a tempdir with a web config.
struct Pki {
    dir: tempfile::TempDir,
    ca_pem: String,
    client_pem: String,
    server_pem: String,
    server_key: String,
}

impl Pki {
    fn new() -> Pki {
        let dir = tempfile::tempdir().unwrap();
        let ca_key = KeyPair::generate().unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        // A name of its own, so that another test CA is a stranger, not a namesake.
        let name = format!("test CA {}", dir.path().display());
        ca_params.distinguished_name.push(rcgen::DnType::CommonName, name);
        let ca = ca_params.self_signed(&ca_key).unwrap();
        let leaf = |names: Vec<String>, usage: ExtendedKeyUsagePurpose| {
            let key = KeyPair::generate().unwrap();
            let mut params = CertificateParams::new(names).unwrap();
            params.extended_key_usages = vec![usage];
            let cert = params.signed_by(&key, &ca, &ca_key).unwrap();
            (cert.pem(), key.serialize_pem())
        };
        let (server_cert, server_key) = leaf(
            vec!["127.0.0.1".into(), "localhost".into()],
            ExtendedKeyUsagePurpose::ServerAuth,
        );
        let (client_cert, client_key) = leaf(vec!["prometheus".into()], ExtendedKeyUsagePurpose::ClientAuth);
        std::fs::write(dir.path().join("ca.pem"), ca.pem()).unwrap();
        std::fs::write(dir.path().join("server.pem"), &server_cert).unwrap();
        std::fs::write(dir.path().join("server.key"), &server_key).unwrap();
        std::fs::write(dir.path().join("client.pem"), &client_cert).unwrap();
        std::fs::write(dir.path().join("client.key"), &client_key).unwrap();
        Pki {
            dir,
            ca_pem: ca.pem(),
            client_pem: format!("{client_cert}{client_key}"),
            server_pem: server_cert,
            server_key,
        }
    }

    /// Writes `yaml` as web.yml beside the certificates; returns its path.
    fn web_config(&self, yaml: &str) -> PathBuf {
        let path = self.dir.path().join("web.yml");
        std::fs::write(&path, yaml).unwrap();
        path
    }

    /// An HTTPS client that trusts the test CA, with the client certificate if `with_cert`.
    fn client(&self, with_cert: bool) -> reqwest::Client {
        https_client(&self.ca_pem, with_cert.then_some(self.client_pem.as_str()))
    }
}

/// An HTTPS client trusting only `ca_pem`, presenting `identity_pem` (certificate + key) if given.
fn https_client(ca_pem: &str, identity_pem: Option<&str>) -> reqwest::Client {
    let mut builder = reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(ca_pem.as_bytes()).unwrap())
        .timeout(Duration::from_secs(10));
    if let Some(pem) = identity_pem {
        builder = builder.identity(reqwest::Identity::from_pem(pem.as_bytes()).unwrap());
    }
    builder.build().unwrap()
}

fn exporter_with(web_config: &Path, fake: &Fake) -> Exporter {
    Exporter::start(
        &fake.endpoint(),
        POLLING,
        &rooms(2),
        &["--web.config.file", web_config.to_str().unwrap()],
    )
}

/// The bcrypt hash of PASSWORD. Cost 4 keeps debug-build tests quick; the
/// exporter treats every cost alike.
fn hash() -> String {
    bcrypt::hash(PASSWORD, 4).unwrap()
}

/// Sends GET `url` with optional basic auth; Err carries the whole error chain as text.
async fn get(
    client: &reqwest::Client,
    url: &str,
    auth: Option<(&str, &str)>,
) -> Result<reqwest::Response, String> {
    let mut request = client.get(url);
    if let Some((user, password)) = auth {
        request = request.basic_auth(user, Some(password));
    }
    request.send().await.map_err(|e| {
        let mut text = e.to_string();
        let mut source = std::error::Error::source(&e);
        while let Some(s) = source {
            text.push_str(&format!(": {s}"));
            source = s.source();
        }
        text
    })
}

/// Waits until the exporter answers `url` with any HTTP status (the port is up).
async fn wait_serving(exporter: &Exporter, client: &reqwest::Client, url: &str, auth: Option<(&str, &str)>) {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(20) {
        if get(client, url, auth).await.is_ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("exporter not serving {url} within 20 s; log:\n{}", exporter.log());
}

/// Waits for the exporter, then asserts that `client` scrapes `url` (no basic auth).
async fn assert_scrapes(exporter: &Exporter, client: &reqwest::Client, url: &str) {
    wait_serving(exporter, client, url, None).await;
    let r = get(client, url, None).await.unwrap();
    assert_eq!(r.status(), 200);
    let body = r.text().await.unwrap();
    assert!(body.contains("roomengine_rooms_configured 2\n"), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_with_basic_auth_guards_every_endpoint() {
    let fake = Fake::start(2).await;
    let pki = Pki::new();
    let path = pki.web_config(&format!(
        "tls_server_config:\n  cert_file: server.pem\n  key_file: server.key\nbasic_auth_users:\n  {USER}: {}\n",
        hash()
    ));
    let exporter = exporter_with(&path, &fake);
    let client = pki.client(false);
    let base = format!("https://{}", exporter.addr);
    let right = Some((USER, PASSWORD));
    wait_serving(&exporter, &client, &format!("{base}/-/healthy"), right).await;

    for endpoint in [
        "/metrics",
        "/",
        "/-/healthy",
        "/-/ready",
        "/probe?room_id=room-0001",
        "/no-such-page",
    ] {
        let url = format!("{base}{endpoint}");
        for (what, auth) in [
            ("no password", None),
            ("wrong password", Some((USER, "wrong"))),
            ("unknown user", Some(("mallory", PASSWORD))),
        ] {
            let r = get(&client, &url, auth).await.unwrap();
            assert_eq!(r.status(), 401, "{endpoint} with {what}");
            assert_eq!(
                r.headers().get("www-authenticate").map(|v| v.to_str().unwrap()),
                Some("Basic"),
                "{endpoint} with {what}"
            );
        }
    }
    for endpoint in ["/metrics", "/", "/-/healthy"] {
        let r = get(&client, &format!("{base}{endpoint}"), right).await.unwrap();
        assert_eq!(r.status(), 200, "{endpoint} with the right password");
        let body = r.text().await.unwrap();
        match endpoint {
            "/metrics" => assert!(body.contains("roomengine_rooms_configured 2\n"), "{body}"),
            "/" => assert!(body.contains("<h1>Room Engine exporter</h1>"), "{body}"),
            _ => assert_eq!(body, "Healthy\n"),
        }
    }

    // Plain HTTP to the TLS port gets no HTTP answer at all.
    assert_eq!(exporter.get("/-/healthy").await.0, 0);

    let log = exporter.log();
    assert!(
        log.contains("TLS on, client_auth_type NoClientCert, 1 basic auth users"),
        "{log}"
    );
    assert!(
        !log.contains(PASSWORD) && !log.contains("$2b$"),
        "no password or hash in the log:\n{log}"
    );
    let mut exporter = exporter;
    assert!(
        exporter.terminate().success(),
        "exit 0 on SIGTERM while serving TLS"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn require_and_verify_client_cert() {
    let fake = Fake::start(2).await;
    let pki = Pki::new();
    let path = pki.web_config(
        "tls_server_config:\n  cert_file: server.pem\n  key_file: server.key\n  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: ca.pem\n",
    );
    let exporter = exporter_with(&path, &fake);
    let url = format!("https://{}/metrics", exporter.addr);
    assert_scrapes(&exporter, &pki.client(true), &url).await;

    // Without a certificate the server ends the handshake with an alert.
    let err = get(&pki.client(false), &url, None).await.unwrap_err();
    assert!(err.contains("CertificateRequired"), "{err}");

    // A certificate from another CA is refused too.
    let other = Pki::new();
    let foreign = https_client(&pki.ca_pem, Some(&other.client_pem));
    let err = get(&foreign, &url, None).await.unwrap_err();
    assert!(
        err.contains("UnknownCA") || err.contains("BadCertificate"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_client_auth_type_admits_what_go_would() {
    let fake = Fake::start(2).await;
    let pki = Pki::new();
    let stranger = Pki::new();
    let none = pki.client(false);
    let own = pki.client(true);
    let foreign = https_client(&pki.ca_pem, Some(&stranger.client_pem));
    // (client_auth_type, admits no cert, admits a cert of client_ca_file's CA, admits another CA's cert)
    let table = [
        ("NoClientCert", true, true, true),
        ("RequestClientCert", true, true, true),
        ("RequireAnyClientCert", false, true, true),
        ("VerifyClientCertIfGiven", true, true, false),
        ("RequireAndVerifyClientCert", false, true, false),
    ];
    for (mode, no_cert, own_cert, foreign_cert) in table {
        let ca = if mode == "NoClientCert" {
            ""
        } else {
            "  client_ca_file: ca.pem\n"
        };
        let path = pki.web_config(&format!(
            "tls_server_config:\n  cert_file: server.pem\n  key_file: server.key\n  client_auth_type: {mode}\n{ca}"
        ));
        let exporter = exporter_with(&path, &fake);
        let url = format!("https://{}/-/healthy", exporter.addr);
        wait_serving(&exporter, &own, &url, None).await;
        for (what, client, admitted) in [
            ("no certificate", &none, no_cert),
            ("own CA's certificate", &own, own_cert),
            ("another CA's certificate", &foreign, foreign_cert),
        ] {
            let result = get(client, &url, None).await.map(|r| r.status().as_u16());
            assert_eq!(result.is_ok(), admitted, "{mode} with {what}: {result:?}");
            if admitted {
                assert_eq!(result, Ok(200), "{mode} with {what}");
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_needs_the_right_ca_and_picks_up_a_rotated_certificate() {
    let fake = Fake::start(2).await;
    let pki = Pki::new();
    let path = pki.web_config("tls_server_config:\n  cert_file: server.pem\n  key_file: server.key\n");
    let exporter = exporter_with(&path, &fake);
    let url = format!("https://{}/metrics", exporter.addr);
    assert_scrapes(&exporter, &pki.client(false), &url).await;

    // A client that does not trust the server's CA refuses the server.
    let next = Pki::new();
    let err = get(&next.client(false), &url, None).await.unwrap_err();
    assert!(err.contains("UnknownIssuer"), "{err}");

    // Replace the files in place with a certificate from that other CA, as cert-manager would.
    std::fs::write(pki.dir.path().join("server.pem"), &next.server_pem).unwrap();
    std::fs::write(pki.dir.path().join("server.key"), &next.server_key).unwrap();
    let start = Instant::now();
    // Fresh clients: each makes a new connection, so each handshake sees the current certificate.
    while get(&next.client(false), &url, None).await.is_err() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "new certificate not served within 10 s; log:\n{}",
            exporter.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_scrapes(&exporter, &next.client(false), &url).await;
    let err = get(&pki.client(false), &url, None).await.unwrap_err();
    assert!(err.contains("UnknownIssuer"), "{err}");
    assert!(
        exporter.log().contains("web config re-read"),
        "{}",
        exporter.log()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn basic_auth_without_tls_serves_plain_http() {
    let fake = Fake::start(2).await;
    let pki = Pki::new();
    let path = pki.web_config(&format!("basic_auth_users:\n  {USER}: {}\n", hash()));
    let exporter = exporter_with(&path, &fake);
    let client = reqwest::Client::new();
    let url = format!("http://{}/metrics", exporter.addr);
    wait_serving(&exporter, &client, &url, None).await;
    let r = get(&client, &url, None).await.unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(r.headers()["www-authenticate"], "Basic");
    let r = get(&client, &url, Some((USER, PASSWORD))).await.unwrap();
    assert_eq!(r.status(), 200);
}

/// Runs the binary with the shipped exporter.yaml, `web_config` and `extra` flags, to its exit.
fn run_binary(web_config: &str, extra: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_roomengine-exporter"))
        .args(["--config.file", "exporter.yaml", "--web.config.file", web_config])
        .args(extra)
        .env("ROOMENGINE_SECRET_KEY", "k")
        .output()
        .unwrap()
}

#[test]
fn an_unknown_key_stops_the_exporter_with_exit_1() {
    let pki = Pki::new();
    let path = pki
        .web_config("tls_server_config:\n  cert_file: server.pem\n  key_file: server.key\n  clientauth: x\n");
    let p = path.to_str().unwrap();
    let out = run_binary(p, &["--web.listen-address", "127.0.0.1:0"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        stderr.lines().last(),
        Some(format!(
            "roomengine-exporter: {p}: tls_server_config.clientauth: unknown key (known: cert_file, key_file, client_auth_type, client_ca_file, min_version, max_version)"
        ).as_str()),
        "{stderr}"
    );
}

#[test]
fn config_check_covers_the_web_config() {
    let pki = Pki::new();
    let path = pki.web_config(&format!(
        "tls_server_config:\n  cert_file: server.pem\n  key_file: server.key\n  cipher_suites: [TLS_AES_128_GCM_SHA256]\nbasic_auth_users:\n  {USER}: plain-{PASSWORD}\n"
    ));
    let p = path.to_str().unwrap();
    let out = run_binary(p, &["--config.check"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        stderr,
        format!(
            "{p}: basic_auth_users.{USER}: not a bcrypt hash (expected $2y$, $2b$ or $2a$, a cost 04-31, then 53 characters; make one with htpasswd -nBC 10 \"\" | tr -d ':\\n')\n\
             {p}: tls_server_config.cipher_suites: not supported by roomengine-exporter (rustls uses its own safe cipher suites)\n"
        )
    );
    assert!(!stderr.contains(PASSWORD));

    let path = pki.web_config(&format!(
        "tls_server_config:\n  cert_file: server.pem\n  key_file: server.key\nbasic_auth_users:\n  {USER}: {}\n",
        hash()
    ));
    let out = run_binary(p, &["--config.check"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).lines().last(),
        Some(
            format!(
                "{}: web config OK: TLS on, client_auth_type NoClientCert, 1 basic auth users",
                path.display()
            )
            .as_str()
        )
    );
}

/// The README's scrape config, checked against a real Prometheus: with the CA,
/// the client certificate and the password file the target is up; a wrong
/// password is a 401, and no client certificate fails the handshake.
/// Needs `prometheus` on PATH, so it is left to tests/run.sh, which installs it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs prometheus on PATH; tests/run.sh runs it"]
async fn prometheus_scrapes_with_the_readme_scrape_config() {
    let fake = Fake::start(2).await;
    let pki = Pki::new();
    let d = pki.dir.path().display();
    let path = pki.web_config(&format!(
        "tls_server_config:\n  cert_file: server.pem\n  key_file: server.key\n  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: ca.pem\nbasic_auth_users:\n  {USER}: {}\n",
        hash()
    ));
    let exporter = exporter_with(&path, &fake);
    std::fs::write(pki.dir.path().join("password"), PASSWORD).unwrap();
    let job = |name: &str, tls_extra: &str, auth: &str| {
        format!(
            "  - job_name: {name}\n    scheme: https\n    tls_config:\n      ca_file: {d}/ca.pem\n{tls_extra}    basic_auth:\n      username: {USER}\n{auth}    static_configs:\n      - targets: [\"{}\"]\n",
            exporter.addr
        )
    };
    let client_cert = format!("      cert_file: {d}/client.pem\n      key_file: {d}/client.key\n");
    let password_file = format!("      password_file: {d}/password\n");
    let prometheus_yml = format!(
        "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\nscrape_configs:\n{}{}{}",
        job("readme", &client_cert, &password_file),
        job("wrong-password", &client_cert, "      password: wrong\n"),
        job("no-client-cert", "", &password_file),
    );
    std::fs::write(pki.dir.path().join("prometheus.yml"), prometheus_yml).unwrap();
    let port = common::free_port();
    let log = std::fs::File::create(pki.dir.path().join("prometheus.log")).unwrap();
    let mut prometheus = Command::new("prometheus")
        .arg(format!("--config.file={d}/prometheus.yml"))
        .arg(format!("--storage.tsdb.path={d}/tsdb"))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdout(std::process::Stdio::null())
        .stderr(log)
        .spawn()
        .expect("prometheus on PATH (tests/ensure-prometheus.sh installs it)");

    let want = [
        ("readme", "up", ""),
        (
            "wrong-password",
            "down",
            "server returned HTTP status 401 Unauthorized",
        ),
        (
            "no-client-cert",
            "down",
            "remote error: tls: certificate required",
        ),
    ];
    let start = Instant::now();
    let seen = loop {
        let url = format!("http://127.0.0.1:{port}/api/v1/targets?state=active");
        let seen: Vec<(String, String, String)> = match reqwest::get(&url).await {
            Ok(r) => r.json::<serde_json::Value>().await.unwrap_or_default()["data"]["activeTargets"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|t| {
                    let text = |v: &serde_json::Value| v.as_str().unwrap_or_default().to_owned();
                    (
                        text(&t["labels"]["job"]),
                        text(&t["health"]),
                        text(&t["lastError"]),
                    )
                })
                .collect(),
            Err(_) => vec![],
        };
        let matches = want.iter().all(|(job, health, error)| {
            seen.iter()
                .any(|(j, h, e)| j == job && h == health && e.ends_with(error))
        });
        if matches || start.elapsed() > Duration::from_secs(30) {
            break seen;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let _ = prometheus.kill();
    let _ = prometheus.wait();
    for (job, health, error) in want {
        assert!(
            seen.iter()
                .any(|(j, h, e)| j == job && h == health && e.ends_with(error)),
            "{job}: want {health} {error:?}; Prometheus reports {seen:?}"
        );
    }
}

//! The nginx tee of docs/callbacks-tee.md, with a real nginx (installed by
//! tests/ensure-nginx.sh) between the simulator and a stub app backend: every
//! callback reaches the backend and the exporter, the answers are the
//! backend's, and a dead or slow exporter leaves the answer times as they are
//! without the mirror (figures printed; naive settings measured beside them).

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{RawQuery, State};
use axum::http::HeaderMap;
use axum::Router;
use roomengine_exporter::config::SecretKey;
use roomengine_exporter::sim::{SimHandle, SimOptions, Simulator, CALLBACK_COMMANDS};
use serde_json::{json, Value};

use common::{free_port, value, Exporter, KEY, SDKAPPID};

const OK: &str = r#"{"ActionStatus":"OK","ErrorInfo":"","ErrorCode":0}"#;
/// How long the stand-in for a stuck exporter takes to answer.
const SLOW: Duration = Duration::from_secs(3);

/// One callback as a stub received it: raw query and body.
type Got = Arc<Mutex<Vec<(String, String)>>>;

#[derive(Clone)]
struct Stub {
    got: Got,
    delay: Duration,
    marker: &'static str,
}

async fn answer(
    State(stub): State<Stub>,
    RawQuery(query): RawQuery,
    body: String,
) -> (HeaderMap, &'static str) {
    stub.got.lock().unwrap().push((query.unwrap_or_default(), body));
    tokio::time::sleep(stub.delay).await;
    let mut headers = HeaderMap::new();
    headers.insert("x-answered-by", stub.marker.parse().unwrap());
    headers.insert("content-type", "application/json".parse().unwrap());
    (headers, OK)
}

/// A receiver on `addr` (retried while the port is still taken) that records
/// every callback, waits `delay`, answers OK with `X-Answered-By: marker`.
async fn stub(addr: SocketAddr, delay: Duration, marker: &'static str) -> (SocketAddr, Got) {
    let start = Instant::now();
    let listener = loop {
        match tokio::net::TcpListener::bind(addr).await {
            Ok(l) => break l,
            Err(e) if start.elapsed() > Duration::from_secs(5) => panic!("cannot bind {addr}: {e}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    };
    let stub = Stub {
        got: Got::default(),
        delay,
        marker,
    };
    let got = stub.got.clone();
    let app = Router::new()
        .route("/callback", axum::routing::post(answer))
        .with_state(stub);
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (addr, got)
}

fn nginx_binary() -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin")])
        .map(|dir| dir.join("nginx"))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!("nginx is not installed: run `bash tests/ensure-nginx.sh` (tests/run.sh does)")
        })
}

/// The ```nginx blocks of docs/callbacks-tee.md: (upstreams, tee server).
fn documented_config() -> (String, String) {
    let doc =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/callbacks-tee.md")).unwrap();
    let blocks: Vec<&str> = doc
        .split("```nginx\n")
        .skip(1)
        .map(|b| b.split("```").next().unwrap())
        .collect();
    let find = |needle: &str| {
        blocks
            .iter()
            .find(|b| b.contains(needle))
            .unwrap_or_else(|| panic!("no nginx block with {needle:?} in docs/callbacks-tee.md"))
            .to_string()
    };
    (
        find("upstream app_backend"),
        find("location = /roomengine-mirror"),
    )
}

fn replaced(text: &str, from: &str, to: &str) -> String {
    assert!(text.contains(from), "{from:?} not in the documented config");
    text.replace(from, to)
}

/// The documented server on loopback `port`, without TLS, less the lines
/// that contain any of `drop`.
fn server_variant(server: &str, port: u16, drop: &[&str]) -> String {
    let server = replaced(server, "listen 443 ssl;", &format!("listen 127.0.0.1:{port};"));
    server
        .lines()
        .filter(|l| !l.contains("ssl_certificate") && !drop.iter().any(|d| l.contains(d)))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Ports of nginx's servers.
struct Ports {
    /// No mirror: the app's setup before the tee.
    baseline: u16,
    /// No mirror, one callback per connection.
    baseline_close: u16,
    /// docs/callbacks-tee.md as it is.
    recommended: u16,
    /// The documented mirror timeouts, client keep-alive left on.
    keepalive: u16,
    /// Mirror with nginx's defaults: keep-alive, 60 s timeouts.
    naive: u16,
}

/// One nginx (a single process: killing it leaves no worker behind).
struct Nginx {
    child: Child,
    dir: tempfile::TempDir,
}

impl Nginx {
    async fn start(app: SocketAddr, exporter: SocketAddr, ports: &Ports) -> Nginx {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().display();
        let (upstreams, server) = documented_config();
        let upstreams = replaced(&upstreams, "127.0.0.1:8080", &app.to_string());
        let upstreams = replaced(&upstreams, "127.0.0.1:39182", &exporter.to_string());
        let timeouts = [
            "proxy_connect_timeout",
            "proxy_send_timeout",
            "proxy_read_timeout",
        ];
        let config = format!(
            "daemon off;\nmaster_process off;\npid {d}/nginx.pid;\nerror_log {d}/error.log warn;\n\
             events {{ worker_connections 2048; }}\n\
             http {{\naccess_log off;\nclient_body_temp_path {d}/body;\nproxy_temp_path {d}/proxy;\n\
             fastcgi_temp_path {d}/fastcgi;\nuwsgi_temp_path {d}/uwsgi;\nscgi_temp_path {d}/scgi;\n\
             {upstreams}\n\
             server {{\n listen 127.0.0.1:{baseline};\n location = /callback {{\n  proxy_pass http://app_backend;\n  proxy_http_version 1.1;\n  proxy_set_header Connection \"\";\n }}\n}}\n\
             server {{\n listen 127.0.0.1:{baseline_close};\n keepalive_timeout 0;\n location = /callback {{\n  proxy_pass http://app_backend;\n  proxy_http_version 1.1;\n  proxy_set_header Connection \"\";\n }}\n}}\n\
             {recommended}\n{keepalive}\n{naive}\n}}\n",
            baseline = ports.baseline,
            baseline_close = ports.baseline_close,
            recommended = server_variant(&server, ports.recommended, &[]),
            keepalive = server_variant(&server, ports.keepalive, &["keepalive_timeout"]),
            naive = server_variant(
                &server,
                ports.naive,
                &[&["keepalive_timeout"][..], &timeouts[..]].concat()
            ),
        );
        let conf = dir.path().join("nginx.conf");
        std::fs::write(&conf, config).unwrap();
        let child = Command::new(nginx_binary())
            .arg("-p")
            .arg(dir.path())
            .arg("-e")
            .arg(dir.path().join("error.log"))
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nginx starts");
        let nginx = Nginx { child, dir };
        let start = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", ports.naive)).is_err() {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "nginx not listening within 10 s; error.log:\n{}",
                nginx.error_log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        nginx
    }

    fn error_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("error.log")).unwrap_or_default()
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Answer times of `conns` x `per_conn` callbacks POSTed to nginx's `port`,
/// each connection's in sequence as Tencent's sender would; every answer
/// must be the app's.
async fn measure(port: u16, conns: usize, per_conn: usize, tag: &str) -> Vec<Duration> {
    let tasks: Vec<_> = (0..conns)
        .map(|c| {
            let tag = tag.to_owned();
            tokio::spawn(async move {
                let http = reqwest::Client::builder().pool_max_idle_per_host(1).build().unwrap();
                let mut times = Vec::new();
                for i in 0..per_conn {
                    let url = format!(
                        "http://127.0.0.1:{port}/callback?SdkAppid={SDKAPPID}&CallbackCommand=Room.CallbackAfterDestroyRoom&contenttype=json&ClientIP=127.0.0.1&OptPlatform=RESTAPI"
                    );
                    let body = json!({"CallbackCommand": "Room.CallbackAfterDestroyRoom", "Operator_Account": "administrator",
                                      "EventTime": common::now_ms(), "RoomId": format!("{tag}-{c}-{i}")});
                    let start = Instant::now();
                    let resp = http.post(url).json(&body).send().await.expect("nginx answers");
                    let marker = resp.headers().get("x-answered-by").cloned();
                    let status = resp.status();
                    let text = resp.text().await.unwrap();
                    times.push(start.elapsed());
                    assert_eq!((status.as_u16(), text.as_str()), (200, OK), "{tag}");
                    assert_eq!(marker.as_ref().and_then(|m| m.to_str().ok()), Some("app"), "{tag}");
                }
                times
            })
        })
        .collect();
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    all.sort();
    all
}

/// A row of the figures table: `name` and [`measure`]'s times.
async fn row(name: &str, port: u16, conns: usize, per_conn: usize, tag: &str) -> (String, Vec<Duration>) {
    (name.to_owned(), measure(port, conns, per_conn, tag).await)
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1]
}

fn ms(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64() * 1000.0)
}

/// Waits until the simulator's deliveries stop changing for 500 ms.
async fn settled(sim: &SimHandle, app: &Got) -> roomengine_exporter::sim::CallbackStats {
    let start = Instant::now();
    let mut last = sim.callback_stats();
    let mut since = Instant::now();
    loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now = sim.callback_stats();
        if now != last {
            (last, since) = (now.clone(), Instant::now());
        } else if since.elapsed() > Duration::from_millis(500) && app.lock().unwrap().len() as u64 >= now.sent
        {
            return now;
        }
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "deliveries never settled: {now:?}"
        );
    }
}

fn field(query: &str, name: &str) -> Option<String> {
    url::form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

async fn control(sim: &SimHandle, method: reqwest::Method, path: &str, body: Value) -> u16 {
    reqwest::Client::new()
        .request(method, format!("{}{path}", sim.base_url()))
        .body(body.to_string())
        .send()
        .await
        .expect("simulator answers")
        .status()
        .as_u16()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tee_feeds_the_app_and_the_exporter_and_a_dead_or_slow_exporter_costs_no_answer_time() {
    let sim = Simulator::start(SimOptions {
        rooms: 3,
        tick: None,
        callback_delay: Duration::from_millis(20),
        ..SimOptions::new(SecretKey::new(KEY.into()))
    })
    .await
    .expect("simulator starts");
    let (app, app_got) = stub(([127, 0, 0, 1], 0).into(), Duration::ZERO, "app").await;
    let exporter_addr: SocketAddr = ([127, 0, 0, 1], free_port()).into();
    let yaml = format!(
        "app:\n  sdkappid: {SDKAPPID}\n  identifier: administrator\n  endpoint: {}\n  usersig_ttl: 1h\npolling:\n  interval: 60s\n  rate_limit: 20\n  timeout: 4s\nrooms: []\ncallbacks:\n  listen_address: {exporter_addr}\n",
        sim.base_url()
    );
    let exporter = Exporter::start_yaml(&yaml, &[]);
    exporter.wait_ready(Duration::from_secs(10)).await;
    let ports = Ports {
        baseline: free_port(),
        baseline_close: free_port(),
        recommended: free_port(),
        keepalive: free_port(),
        naive: free_port(),
    };
    let nginx = Nginx::start(app, exporter_addr, &ports).await;

    // The simulator's callbacks go through the documented server.
    let commands = CALLBACK_COMMANDS.iter().map(|c| c.to_string()).collect();
    sim.set_callback_url(
        Some(format!("http://127.0.0.1:{}/callback", ports.recommended)),
        commands,
    )
    .unwrap();
    for id in ["tee-1", "tee-2"] {
        let room = json!({"RoomId": id, "RoomName": "Tee", "MaxMemberCount": 20, "Owner_Account": "alice"});
        assert_eq!(
            control(&sim, reqwest::Method::POST, "/sim/rooms", room).await,
            201
        );
    }
    let put = json!({"RoomName": "Tee renamed"});
    assert_eq!(
        control(&sim, reqwest::Method::PUT, "/sim/rooms/tee-1", put).await,
        200
    );
    sim.step(40);
    assert_eq!(
        control(&sim, reqwest::Method::DELETE, "/sim/rooms/tee-2", json!({})).await,
        204
    );
    let stats = settled(&sim, &app_got).await;
    assert_eq!(
        (stats.failed, stats.dropped),
        (0, 0),
        "{stats:?}\n{}",
        nginx.error_log()
    );
    assert!(stats.sent >= 4, "{stats:?}");

    // Every callback the simulator got the app's OK for reached the app...
    let got = app_got.lock().unwrap().clone();
    assert_eq!(got.len() as u64, stats.sent);
    let mut by_command = std::collections::BTreeMap::<String, u64>::new();
    for (query, body) in &got {
        let body: Value = serde_json::from_str(body).expect("the app got a JSON body");
        let command = field(query, "CallbackCommand").expect("CallbackCommand in the query");
        assert_eq!(body["CallbackCommand"], command.as_str());
        assert_eq!(field(query, "SdkAppid"), Some(SDKAPPID.to_string()));
        *by_command.entry(command).or_default() += 1;
    }
    assert_eq!(by_command, stats.by_command);
    // ...and the exporter, which accepted each (query checked, body decoded).
    let text = exporter
        .wait_for(Duration::from_secs(5), "every callback counted", |t| {
            let total: f64 = CALLBACK_COMMANDS
                .iter()
                .chain(&["other"])
                .filter_map(|c| value(t, &format!("roomengine_callbacks_total{{command=\"{c}\"}}")))
                .sum();
            total == stats.sent as f64
        })
        .await;
    assert!(
        text.contains("roomengine_room_info{room_id=\"tee-1\",room_name=\"Tee renamed\""),
        "{text}"
    );
    assert!(value(&text, "roomengine_rooms_discovered") >= Some(1.0), "{text}");
    assert_eq!(
        value(&text, "roomengine_callbacks_rejected_total{reason=\"sdkappid\"}").unwrap_or(0.0),
        0.0
    );

    // Answer times (ms): 4 connections x 50 callbacks each, in sequence.
    let mut rows: Vec<(String, Vec<Duration>)> = Vec::new();
    rows.push(row("no mirror (baseline)", ports.baseline, 4, 50, "base").await);
    rows.push(row("documented, exporter up", ports.recommended, 4, 50, "up").await);
    rows.push(
        row(
            "no mirror, keepalive_timeout 0",
            ports.baseline_close,
            4,
            50,
            "close",
        )
        .await,
    );
    rows.push(
        row(
            "keep-alive + mirror timeouts, exporter up",
            ports.keepalive,
            4,
            50,
            "ka-up",
        )
        .await,
    );
    drop(exporter);
    rows.push(row("documented, exporter stopped", ports.recommended, 4, 50, "dead").await);
    let (_, mirror_got) = stub(exporter_addr, SLOW, "slow-exporter").await;
    let before = app_got.lock().unwrap().len();
    rows.push(
        row(
            "documented, exporter answers in 3 s",
            ports.recommended,
            4,
            50,
            "slow",
        )
        .await,
    );
    // The mirror got the very queries and bodies the app got.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut to_app = app_got.lock().unwrap()[before..].to_vec();
    let mut to_mirror = mirror_got.lock().unwrap().clone();
    to_app.sort();
    to_mirror.sort();
    assert_eq!(to_app.len(), 200);
    assert_eq!(to_mirror, to_app, "the mirror's copies differ from the app's");
    rows.push(
        row(
            "keep-alive + mirror timeouts, 3 s exporter",
            ports.keepalive,
            1,
            4,
            "ka",
        )
        .await,
    );
    rows.push(row("naive (defaults), 3 s exporter", ports.naive, 1, 3, "naive").await);

    println!("\n| nginx server, exporter | callbacks | p50 ms | p99 ms | max ms |\n| --- | --- | --- | --- | --- |");
    for (name, t) in &rows {
        println!(
            "| {name} | {} | {} | {} | {} |",
            t.len(),
            ms(pct(t, 0.5)),
            ms(pct(t, 0.99)),
            ms(*t.last().unwrap())
        );
    }
    // Generous (shared, noisy machine) yet far under the 1 s a held
    // keep-alive connection costs: 10x the worse baseline's p99 + 250 ms.
    let base_p99 = pct(&rows[0].1, 0.99).max(pct(&rows[2].1, 0.99));
    let bound = base_p99 * 10 + Duration::from_millis(250);
    for (name, t) in [&rows[1], &rows[4], &rows[5]] {
        assert!(
            pct(t, 0.99) < bound,
            "{name}: p99 {:?} over {bound:?}",
            pct(t, 0.99)
        );
    }
    // Without the documented settings a slow exporter delays the next callback
    // on the connection: by the mirror timeout (1 s), or by all 3 s.
    let ka = &rows[6].1;
    assert!(pct(ka, 0.5) >= Duration::from_millis(900), "{ka:?}");
    let naive = &rows[7].1;
    assert!(naive.last().unwrap() >= &Duration::from_millis(2500), "{naive:?}");
}

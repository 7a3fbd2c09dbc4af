//! Test harness shared by the end-to-end tests: an independent fake Room
//! Engine server (axum on 127.0.0.1:0) that checks every UserSig with its own
//! decode + HMAC code and can misbehave per room (see [`Fault`]) or go down,
//! and helpers to run the real exporter binary against it.
#![allow(dead_code)]

pub mod redis;

use std::collections::HashMap;
use std::io::Read;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::{Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use base64::Engine;
use hmac::Mac;
use serde_json::{json, Value};

pub const SDKAPPID: u64 = 1400000000;
pub const IDENTIFIER: &str = "administrator";
pub const KEY: &str = "e2e-known-secret-key-0123456789abcdef";

/// What the fake answers for one room.
#[derive(Clone, Debug)]
pub struct FakeRoom {
    pub info: Value,
    /// Error codes to answer, in order, before answering normally again.
    pub fail_next: Vec<i64>,
    /// Answer 100004 from now on.
    pub gone: bool,
    /// Misbehave this way instead of answering normally (after `gone` and `fail_next`).
    pub fault: Option<Fault>,
}

/// A way for the fake to answer one room badly, for the fault matrix.
#[derive(Clone, Debug)]
pub enum Fault {
    /// The normal answer, after this long (longer than polling.timeout provokes timeouts).
    Slow(Duration),
    /// HTTP 502 with an HTML page, as a load balancer in front of the API answers.
    Http502Html,
    /// The normal answer cut in half, delivered as a complete HTTP message.
    TruncatedJson,
    /// The normal answer with a syntax error in it.
    MalformedJson,
    /// The first half of the normal answer, then the connection is dropped
    /// (the chunked body never ends).
    ConnectionCut,
    /// A 200 answer with this body; `declared` sends a Content-Length header,
    /// otherwise it streams chunked so that only counting the bytes can stop it.
    Body { body: Bytes, declared: bool },
    /// The normal answer, one byte per second.
    Trickle,
    /// This ErrorCode on `percent` % of the room's calls, spread evenly
    /// (call k fails when `k * percent mod 100 < percent`); 100 means every call.
    Code { code: i64, percent: u32 },
}

impl Fault {
    /// Whether the room's call number `call_index` (from 0) gets the fault.
    fn applies_to(&self, call_index: usize) -> bool {
        match self {
            Fault::Code { percent, .. } => call_index * *percent as usize % 100 < *percent as usize,
            _ => true,
        }
    }

    /// A valid, successful answer for `id` padded to `bytes` bytes with CustomInfo,
    /// so that only a size cap (not the JSON decoder) can refuse it.
    pub fn huge_body(id: &str, bytes: usize, declared: bool) -> Fault {
        let mut info = room_info(id, 1, 300);
        let skeleton = ok_answer(&info).to_string().len();
        info["CustomInfo"] = "x".repeat(bytes.saturating_sub(skeleton)).into();
        let body = Bytes::from(ok_answer(&info).to_string());
        Fault::Body { body, declared }
    }
}

#[derive(Default)]
pub struct FakeState {
    pub rooms: HashMap<String, FakeRoom>,
    /// When set, every call is answered with this ErrorCode.
    pub force_code: Option<i64>,
    /// Arrival instants of every get_room_info call.
    pub arrivals: Vec<Instant>,
    /// Every UserSig received (to check none leaks into logs).
    pub usersigs: Vec<String>,
    /// Calls whose UserSig failed our independent check.
    pub bad_usersigs: usize,
    pub calls_per_room: HashMap<String, usize>,
    /// Arrival instants of each room's calls.
    pub room_arrivals: HashMap<String, Vec<Instant>>,
    /// Calls answered with the room's [`Fault`], per room.
    pub faulted: HashMap<String, usize>,
    /// Calls answered with each ErrorCode (whatever the reason).
    pub codes: HashMap<i64, usize>,
    /// Answer a room it does not know as 1 member of 50 rather than 100004
    /// (a flood of created rooms, too many to add one by one).
    pub any_room: bool,
}

#[derive(Clone)]
pub struct Fake {
    pub addr: SocketAddr,
    pub state: Arc<Mutex<FakeState>>,
    /// The running listener; `None` while [`Fake::stop`] has it down.
    server: Arc<Mutex<Option<Server>>>,
}

/// One listening period of the fake: its own thread and runtime, so that a
/// test's client load cannot delay the arrival times it records, and so that
/// stopping drops every open connection with the runtime (a graceful
/// shutdown would leave the exporter's keep-alive connections working).
struct Server {
    stop: tokio::sync::oneshot::Sender<()>,
    thread: std::thread::JoinHandle<()>,
}

impl Server {
    fn start(addr: SocketAddr, state: Arc<Mutex<FakeState>>) -> std::io::Result<(SocketAddr, Server)> {
        let app = Router::new()
            .route("/v4/room_engine_http_srv/get_room_info", post(get_room_info))
            .with_state(state);
        let (stop, rx) = tokio::sync::oneshot::channel::<()>();
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let thread = std::thread::spawn(move || {
            // Ahead of the test's own load (as root; elsewhere it stays at 0), so
            // the arrival times it records are not delayed by the client side.
            renice_this_thread(-10);
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                let listener = match tokio::net::TcpListener::bind(addr).await {
                    Ok(l) => l,
                    Err(e) => return addr_tx.send(Err(e)).expect("send bind error"),
                };
                addr_tx.send(listener.local_addr()).expect("send addr");
                tokio::select! {
                    _ = axum::serve(listener, app) => {}
                    _ = rx => {}
                }
            });
            // Dropping the runtime here ends every connection task it spawned.
            drop(rt);
        });
        let addr = addr_rx.recv().expect("fake thread answers")?;
        Ok((addr, Server { stop, thread }))
    }
}

pub fn room_info(id: &str, members: u64, max: u64) -> Value {
    json!({
        "RoomId": id, "RoomName": format!("name of {id}"), "RoomType": "Conference",
        "Owner_Account": "owner1", "MaxMemberCount": max, "MaxSeatCount": 0,
        "IsVideoDisabled": false, "IsAudioDisabled": false, "IsMessageDisabled": false,
        "IsScreenSharingDisabled": false, "IsCloudRecordingDisabled": true,
        "CustomInfo": "", "ScheduleStartTime": 1703491546, "ScheduleEndTime": 1703495146,
        "RoomStatus": "Running", "IsSeatEnabled": false, "TakeSeatMode": "None",
        "CreateTime": 1703491546, "MemberCount": members
    })
}

impl Fake {
    /// Starts a fake serving `rooms` (IDs `room-0001`.. with members = index).
    pub async fn start(n_rooms: usize) -> Fake {
        let mut state = FakeState::default();
        for i in 1..=n_rooms {
            let id = format!("room-{i:04}");
            state.rooms.insert(
                id.clone(),
                FakeRoom {
                    info: room_info(&id, i as u64, 300),
                    fail_next: vec![],
                    gone: false,
                    fault: None,
                },
            );
        }
        let state = Arc::new(Mutex::new(state));
        let (addr, server) = Server::start(([127, 0, 0, 1], 0).into(), state.clone()).expect("bind");
        Fake {
            addr,
            state,
            server: Arc::new(Mutex::new(Some(server))),
        }
    }

    /// The fake now knows room `id`, with `members` of `max` (so polls do not call it gone).
    pub fn add_room(&self, id: &str, members: u64, max: u64) {
        self.with(|s| {
            s.rooms.insert(
                id.to_owned(),
                FakeRoom {
                    info: room_info(id, members, max),
                    fail_next: vec![],
                    gone: false,
                    fault: None,
                },
            )
        });
    }

    pub fn with<R>(&self, f: impl FnOnce(&mut FakeState) -> R) -> R {
        f(&mut self.state.lock().unwrap())
    }

    /// Sets (or clears) the fault of each room in `ids`.
    pub fn set_fault<S: AsRef<str>>(&self, ids: &[S], fault: Option<Fault>) {
        self.with(|s| {
            for id in ids {
                s.rooms.get_mut(id.as_ref()).expect("known room").fault = fault.clone();
            }
        })
    }

    /// Calls answered with the room's fault so far.
    pub fn faulted(&self, id: &str) -> usize {
        self.with(|s| s.faulted.get(id).copied().unwrap_or(0))
    }

    /// Calls answered with `code` so far.
    pub fn answered(&self, code: i64) -> usize {
        self.with(|s| s.codes.get(&code).copied().unwrap_or(0))
    }

    /// Closes the listener and every open connection: calls are refused until [`Fake::resume`].
    pub fn stop(&self) {
        let server = self.server.lock().unwrap().take();
        if let Some(server) = server {
            let _ = server.stop.send(());
            server.thread.join().expect("fake thread ends");
        }
    }

    /// Listens again on the same address after [`Fake::stop`].
    pub fn resume(&self) {
        let mut slot = self.server.lock().unwrap();
        assert!(slot.is_none(), "the fake is already listening");
        let start = Instant::now();
        loop {
            match Server::start(self.addr, self.state.clone()) {
                Ok((_, server)) => return *slot = Some(server),
                Err(e) if start.elapsed() > Duration::from_secs(5) => {
                    panic!("cannot listen on {} again: {e}", self.addr)
                }
                Err(_) => std::thread::sleep(Duration::from_millis(50)),
            }
        }
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }
}

/// Independent UserSig check: undo the URL-safe base64, inflate, parse, and
/// recompute the HMAC, without the crate's own usersig module.
fn usersig_is_valid(usersig: &str) -> bool {
    let std_b64: String = usersig
        .chars()
        .map(|c| match c {
            '*' => '+',
            '-' => '/',
            '_' => '=',
            c => c,
        })
        .collect();
    let Ok(compressed) = base64::engine::general_purpose::STANDARD.decode(std_b64) else {
        return false;
    };
    let mut text = String::new();
    if flate2::read::ZlibDecoder::new(&compressed[..])
        .read_to_string(&mut text)
        .is_err()
    {
        return false;
    }
    let Ok(doc) = serde_json::from_str::<Value>(&text) else {
        return false;
    };
    let (Some(id), Some(app), Some(time), Some(expire), Some(sig)) = (
        doc["TLS.identifier"].as_str(),
        doc["TLS.sdkappid"].as_u64(),
        doc["TLS.time"].as_u64(),
        doc["TLS.expire"].as_u64(),
        doc["TLS.sig"].as_str(),
    ) else {
        return false;
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    if id != IDENTIFIER || app != SDKAPPID || now > time + expire || time > now + 60 {
        return false;
    }
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(KEY.as_bytes()).unwrap();
    mac.update(
        format!("TLS.identifier:{id}\nTLS.sdkappid:{app}\nTLS.time:{time}\nTLS.expire:{expire}\n").as_bytes(),
    );
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes()) == sig
}

fn error(code: i64) -> Json<Value> {
    Json(
        json!({"ActionStatus": "FAIL", "ErrorCode": code, "ErrorInfo": format!("fake error {code}"), "RequestId": "fake"}),
    )
}

fn ok_answer(info: &Value) -> Value {
    json!({"ActionStatus": "OK", "ErrorCode": 0, "ErrorInfo": "", "RequestId": "fake",
           "Response": {"RoomInfo": info}})
}

fn json_text(text: impl Into<Body>) -> Response {
    ([(header::CONTENT_TYPE, "application/json")], text.into()).into_response()
}

/// What the fake sends for a room whose fault applies, given its normal
/// answer: a response, or the ErrorCode to answer.
fn faulty_answer(fault: &Fault, normal: String) -> Result<Response, i64> {
    Ok(match fault {
        Fault::Http502Html => (
            StatusCode::BAD_GATEWAY,
            [(header::CONTENT_TYPE, "text/html")],
            "<html><head><title>502 Bad Gateway</title></head><body><center><h1>502 Bad Gateway</h1></center></body></html>",
        )
            .into_response(),
        Fault::TruncatedJson => json_text(normal[..normal.len() / 2].to_owned()),
        Fault::MalformedJson => json_text(normal.replacen(',', ",,", 1)),
        Fault::ConnectionCut => {
            // The pause lets the head and the first half reach the client
            // before the error makes the server drop the connection.
            let half = Bytes::from(normal[..normal.len() / 2].to_owned());
            let stream = futures_util::stream::unfold(Some(half), |half| async move {
                match half {
                    Some(half) => Some((Ok(half), None)),
                    None => {
                        tokio::time::sleep(Duration::from_millis(200)).await;
                        Some((Err(std::io::Error::other("fake drops the connection")), None))
                    }
                }
            });
            json_text(Body::from_stream(stream))
        }
        Fault::Body { body, declared: true } => json_text(body.clone()),
        Fault::Body { body, declared: false } => {
            let chunks: Vec<Result<Bytes, std::io::Error>> = (0..body.len())
                .step_by(64 * 1024)
                .map(|at| Ok(body.slice(at..body.len().min(at + 64 * 1024))))
                .collect();
            json_text(Body::from_stream(futures_util::stream::iter(chunks)))
        }
        Fault::Trickle => {
            let bytes = Bytes::from(normal);
            let stream = futures_util::stream::unfold(0, move |at| {
                let bytes = bytes.clone();
                async move {
                    if at == bytes.len() {
                        return None;
                    }
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    Some((Ok::<_, std::io::Error>(bytes.slice(at..at + 1)), at + 1))
                }
            });
            json_text(Body::from_stream(stream))
        }
        Fault::Slow(_) => json_text(normal),
        Fault::Code { code, .. } => return Err(*code),
    })
}

async fn get_room_info(
    State(state): State<Arc<Mutex<FakeState>>>,
    Query(q): Query<HashMap<String, String>>,
    body: String,
) -> Response {
    let usersig = q.get("usersig").cloned().unwrap_or_default();
    let valid_query = q.get("sdkappid").map(String::as_str) == Some("1400000000")
        && q.get("identifier").map(String::as_str) == Some(IDENTIFIER)
        && q.get("contenttype").map(String::as_str) == Some("json")
        && q.get("random").is_some_and(|r| r.parse::<u32>().is_ok());
    let room_id = serde_json::from_str::<Value>(&body)
        .ok()
        .and_then(|v| v["RoomId"].as_str().map(str::to_owned))
        .unwrap_or_default();
    let mut delay = None;
    let answer = {
        let mut guard = state.lock().unwrap();
        let st = &mut *guard;
        let now = Instant::now();
        st.arrivals.push(now);
        st.room_arrivals.entry(room_id.clone()).or_default().push(now);
        st.usersigs.push(usersig.clone());
        let calls = st.calls_per_room.entry(room_id.clone()).or_default();
        *calls += 1;
        let call_index = *calls - 1;
        let answer = if !valid_query || !usersig_is_valid(&usersig) {
            st.bad_usersigs += 1;
            Err(70009)
        } else if let Some(code) = st.force_code {
            Err(code)
        } else {
            match st.rooms.get_mut(&room_id) {
                None if st.any_room => Ok(json_text(ok_answer(&room_info(&room_id, 1, 50)).to_string())),
                None => Err(100004),
                Some(room) if room.gone => Err(100004),
                Some(room) if !room.fail_next.is_empty() => Err(room.fail_next.remove(0)),
                Some(room) => {
                    let normal = ok_answer(&room.info).to_string();
                    match room.fault.as_ref().filter(|f| f.applies_to(call_index)) {
                        Some(fault) => {
                            if let Fault::Slow(d) = fault {
                                delay = Some(*d);
                            }
                            *st.faulted.entry(room_id.clone()).or_default() += 1;
                            faulty_answer(fault, normal)
                        }
                        None => Ok(json_text(normal)),
                    }
                }
            }
        };
        answer.unwrap_or_else(|code| {
            *st.codes.entry(code).or_default() += 1;
            error(code).into_response()
        })
    };
    if let Some(d) = delay {
        tokio::time::sleep(d).await;
    }
    answer
}

/// The exporter binary, running against a config, with stderr captured to a file.
pub struct Exporter {
    pub child: Child,
    pub addr: SocketAddr,
    pub log_path: PathBuf,
    /// Successful scrapes of /metrics through [`Exporter::metrics`].
    pub scrapes: std::sync::atomic::AtomicUsize,
    extra_args: Vec<String>,
    _dir: tempfile::TempDir,
}

/// Runs the binary on `dir/exporter.yaml`, logging to `dir/exporter.log` (appended).
fn spawn_exporter(dir: &std::path::Path, port: u16, extra_args: &[String]) -> Child {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("exporter.log"))
        .unwrap();
    Command::new(env!("CARGO_BIN_EXE_roomengine-exporter"))
        .arg("--config.file")
        .arg(dir.join("exporter.yaml"))
        .arg("--web.listen-address")
        .arg(format!("127.0.0.1:{port}"))
        .args(extra_args)
        .env("ROOMENGINE_SECRET_KEY", KEY)
        .stdout(Stdio::from(
            std::fs::File::create(dir.join("stdout.log")).unwrap(),
        ))
        .stderr(Stdio::from(log))
        .spawn()
        .expect("exporter binary starts")
}

/// A port free now, below the kernel's ephemeral range (32768 and up): a
/// port from that range can be taken as the source port of a parallel
/// test's connection before the exporter binds it.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU16, Ordering};
    const FIRST: u16 = 20_000;
    const SPAN: u16 = 12_000;
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let offset = (std::process::id() % u32::from(SPAN)) as u16;
    loop {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = FIRST + (offset + n % SPAN) % SPAN;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

impl Exporter {
    /// Starts the binary with `polling` and `rooms` YAML against `endpoint`.
    pub fn start(endpoint: &str, polling: &str, rooms: &[String], extra_args: &[&str]) -> Exporter {
        Exporter::start_yaml(&config_yaml(endpoint, polling, rooms), extra_args)
    }

    /// Starts the binary with `yaml` as its exporter.yaml.
    pub fn start_yaml(yaml: &str, extra_args: &[&str]) -> Exporter {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("exporter.yaml"), yaml).unwrap();
        let log_path = dir.path().join("exporter.log");
        let port = free_port();
        let extra_args: Vec<String> = extra_args.iter().map(|a| a.to_string()).collect();
        let child = spawn_exporter(dir.path(), port, &extra_args);
        Exporter {
            child,
            addr: ([127, 0, 0, 1], port).into(),
            log_path,
            scrapes: Default::default(),
            extra_args,
            _dir: dir,
        }
    }

    /// `kill -9`, then the same binary again on the same config, port and files.
    pub fn kill9_and_restart(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.child = spawn_exporter(self._dir.path(), self.addr.port(), &self.extra_args);
    }

    /// The folder of the config file (and, by default, of the state file).
    pub fn dir(&self) -> &std::path::Path {
        self._dir.path()
    }

    pub async fn get(&self, path: &str) -> (u16, String) {
        match reqwest::get(format!("http://{}{path}", self.addr)).await {
            Ok(r) => {
                let status = r.status().as_u16();
                (status, r.text().await.unwrap_or_default())
            }
            Err(_) => (0, String::new()),
        }
    }

    /// A scrape of /metrics, which must succeed whatever the API is doing.
    pub async fn metrics(&self) -> String {
        let (status, text) = self.get("/metrics").await;
        assert_eq!(status, 200, "/metrics must answer 200; log:\n{}", self.log());
        self.scrapes.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        text
    }

    /// Waits until `/-/ready` answers 200.
    pub async fn wait_ready(&self, within: Duration) {
        let start = Instant::now();
        while start.elapsed() < within {
            if self.get("/-/ready").await.0 == 200 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("exporter not ready within {within:?}; log:\n{}", self.log());
    }

    /// Polls /metrics until `pred` holds on it.
    pub async fn wait_for(&self, within: Duration, what: &str, pred: impl Fn(&str) -> bool) -> String {
        let start = Instant::now();
        loop {
            let text = self.metrics().await;
            if pred(&text) {
                return text;
            }
            if start.elapsed() > within {
                panic!("{what}: not seen within {within:?}\n{text}");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// The config file the exporter was started with (rewrite it, then reload).
    pub fn config_path(&self) -> PathBuf {
        self._dir.path().join("exporter.yaml")
    }

    /// `POST path` → (status, body).
    pub async fn post(&self, path: &str) -> (u16, String) {
        let resp = reqwest::Client::new()
            .post(format!("http://{}{path}", self.addr))
            .send()
            .await
            .expect("exporter answers");
        (resp.status().as_u16(), resp.text().await.unwrap_or_default())
    }

    pub fn signal(&self, signal: &str) {
        let sent = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.child.id().to_string())
            .status()
            .expect("kill runs");
        assert!(sent.success(), "kill -{signal} failed");
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// A memory figure of the running exporter from /proc/PID/status, in KiB:
    /// `VmRSS` (resident now) or `VmHWM` (the resident peak so far).
    pub fn memory_kib(&self, field: &str) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).expect("/proc status");
        status
            .lines()
            .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or_else(|| panic!("no {field} in /proc/{}/status", self.pid()))
    }

    /// Sends SIGTERM and waits for the exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            if start.elapsed() > Duration::from_secs(15) {
                let _ = self.child.kill();
                panic!("exporter did not stop within 15 s of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Exporter {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The exporter.yaml [`Exporter::start`] writes: the fake's app settings,
/// `polling` (indented YAML lines) and `rooms`.
pub fn config_yaml(endpoint: &str, polling: &str, rooms: &[String]) -> String {
    let rooms_yaml: String = rooms.iter().map(|r| format!("  - {r}\n")).collect();
    format!(
        "app:\n  sdkappid: {SDKAPPID}\n  identifier: {IDENTIFIER}\n  endpoint: {endpoint}\n  usersig_ttl: 1h\npolling:\n{polling}\nrooms:\n{rooms_yaml}"
    )
}

/// The value of the sample line `series` (exact text before the space).
pub fn value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|rest| rest.strip_prefix(' ')))
        .and_then(|v| v.trim().parse().ok())
}

pub fn rooms(n: usize) -> Vec<String> {
    (1..=n).map(|i| format!("room-{i:04}")).collect()
}

/// Asserts that neither the SecretKey nor any of `usersigs` (nor a request
/// URL, which carries one) appears in `haystack` (a log or a scrape).
pub fn assert_no_secrets(haystack: &str, usersigs: &[String]) {
    assert!(!haystack.contains(KEY), "SecretKey leaked");
    for sig in usersigs {
        // Any 20-character piece of a UserSig would identify it.
        assert!(!haystack.contains(&sig[..20]), "UserSig leaked");
        assert!(!haystack.contains(&sig[sig.len() - 20..]), "UserSig leaked");
    }
    assert!(!haystack.contains("usersig="), "a request URL leaked");
}

/// Most arrivals inside any half-open window [t, t + 1 s); `arrivals` sorted.
pub fn worst_window(arrivals: &[Instant]) -> usize {
    let mut worst = 0;
    let mut start = 0;
    for end in 0..arrivals.len() {
        while arrivals[end].duration_since(arrivals[start]) >= Duration::from_secs(1) {
            start += 1;
        }
        worst = worst.max(end - start + 1);
    }
    worst
}

/// A Room Engine callback as Tencent sends it, POSTed to `addr` (`/callback`);
/// `extra_query` is appended (e.g. `&Sign=..&RequestTime=..`).
pub async fn post_callback(
    addr: SocketAddr,
    command: &str,
    body: &Value,
    extra_query: &str,
) -> (u16, String) {
    let url = format!(
        "http://{addr}/callback?SdkAppid={SDKAPPID}&CallbackCommand={command}&contenttype=json&ClientIP=127.0.0.1&OptPlatform=RESTAPI{extra_query}"
    );
    match reqwest::Client::new().post(url).json(body).send().await {
        Ok(r) => {
            let status = r.status().as_u16();
            (status, r.text().await.unwrap_or_default())
        }
        Err(e) => panic!("callback not answered: {e}"),
    }
}

/// Wall-clock Unix milliseconds (EventTime's unit).
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// Sets the calling thread's nice value (`renice`; negative values need
/// root): a load generator at 19 leaves the CPU to the fake API and the
/// exporter, so the fake's arrival times are not delayed by the test itself.
pub fn renice_this_thread(nice: i32) -> bool {
    let tid = std::fs::read_link("/proc/thread-self")
        .ok()
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()));
    tid.is_some_and(|tid| {
        Command::new("renice")
            .args(["-n", &nice.to_string(), "-p", &tid])
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    })
}

pub const CREATE: &str = "Room.CallbackAfterCreateRoom";
pub const ENTER: &str = "Room.CallbackAfterMemberEnter";

/// A `Room.CallbackAfterCreateRoom` body as Tencent sends it (no MemberCount).
pub fn create_body(id: &str, at: u64) -> Value {
    json!({
        "CallbackCommand": CREATE, "Operator_Account": "owner1", "EventTime": at,
        "RoomInfo": {
            "RoomId": id, "RoomName": format!("meeting {id}"), "RoomType": "Meeting", "Owner_Account": "owner1",
            "MaxMemberCount": 50, "MaxSeatCount": 0, "IsVideoDisabled": false, "IsAudioDisabled": false,
            "IsMessageDisabled": false, "IsScreenSharingDisabled": true, "IsCloudRecordingDisabled": false,
            "CustomInfo": "", "ScheduleStartTime": 0, "ScheduleEndTime": 0, "RoomStatus": "Running",
            "IsSeatEnabled": false, "TakeSeatMode": "None", "CreateTime": at / 1000
        },
        "ScheduleInviteeList_Account": []
    })
}

/// A `Room.CallbackAfterMemberEnter` body with the new `count`.
pub fn members_body(id: &str, count: u64, at: u64) -> Value {
    json!({
        "CallbackCommand": ENTER, "Operator_Account": "u1", "EventTime": at,
        "RoomId": id, "MemberCount": count, "Type": "Enter", "MemberList_Account": ["u1"]
    })
}

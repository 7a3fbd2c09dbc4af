//! Test harness shared by the end-to-end tests: an independent fake Room
//! Engine server (axum on 127.0.0.1:0) that checks every UserSig with its own
//! decode + HMAC code, and helpers to run the real exporter binary against it.
#![allow(dead_code)]

use std::collections::HashMap;
use std::io::Read;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Query, State};
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
    /// Wait this long before answering (to provoke timeouts).
    pub delay: Option<Duration>,
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
}

#[derive(Clone)]
pub struct Fake {
    pub addr: SocketAddr,
    pub state: Arc<Mutex<FakeState>>,
    _stop: Arc<tokio::sync::oneshot::Sender<()>>,
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
                    delay: None,
                },
            );
        }
        let state = Arc::new(Mutex::new(state));
        let app = Router::new()
            .route("/v4/room_engine_http_srv/get_room_info", post(get_room_info))
            .with_state(state.clone());
        // The fake runs on its own thread and runtime, so that a test's client
        // load cannot delay the arrival times it records.
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
                addr_tx
                    .send(listener.local_addr().expect("addr"))
                    .expect("send addr");
                let _ = axum::serve(listener, app)
                    .with_graceful_shutdown(async {
                        let _ = rx.await;
                    })
                    .await;
            });
        });
        let addr = addr_rx.recv().expect("fake started");
        Fake {
            addr,
            state,
            _stop: Arc::new(tx),
        }
    }

    pub fn with<R>(&self, f: impl FnOnce(&mut FakeState) -> R) -> R {
        f(&mut self.state.lock().unwrap())
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

async fn get_room_info(
    State(state): State<Arc<Mutex<FakeState>>>,
    Query(q): Query<HashMap<String, String>>,
    body: String,
) -> Json<Value> {
    let usersig = q.get("usersig").cloned().unwrap_or_default();
    let valid_query = q.get("sdkappid").map(String::as_str) == Some("1400000000")
        && q.get("identifier").map(String::as_str) == Some(IDENTIFIER)
        && q.get("contenttype").map(String::as_str) == Some("json")
        && q.get("random").is_some_and(|r| r.parse::<u32>().is_ok());
    let room_id = serde_json::from_str::<Value>(&body)
        .ok()
        .and_then(|v| v["RoomId"].as_str().map(str::to_owned))
        .unwrap_or_default();
    let (answer, delay) = {
        let mut st = state.lock().unwrap();
        st.arrivals.push(Instant::now());
        st.usersigs.push(usersig.clone());
        *st.calls_per_room.entry(room_id.clone()).or_default() += 1;
        if !valid_query || !usersig_is_valid(&usersig) {
            st.bad_usersigs += 1;
            (error(70009), None)
        } else if let Some(code) = st.force_code {
            (error(code), None)
        } else {
            match st.rooms.get_mut(&room_id) {
                None => (error(100004), None),
                Some(room) if room.gone => (error(100004), room.delay),
                Some(room) if !room.fail_next.is_empty() => (error(room.fail_next.remove(0)), room.delay),
                Some(room) => (
                    Json(
                        json!({"ActionStatus": "OK", "ErrorCode": 0, "ErrorInfo": "", "RequestId": "fake",
                                "Response": {"RoomInfo": room.info.clone()}}),
                    ),
                    room.delay,
                ),
            }
        }
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
    _dir: tempfile::TempDir,
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Exporter {
    /// Starts the binary with `polling` and `rooms` YAML against `endpoint`.
    pub fn start(endpoint: &str, polling: &str, rooms: &[String], extra_args: &[&str]) -> Exporter {
        let dir = tempfile::tempdir().unwrap();
        let config_path = dir.path().join("exporter.yaml");
        std::fs::write(&config_path, config_yaml(endpoint, polling, rooms)).unwrap();
        let log_path = dir.path().join("exporter.log");
        let port = free_port();
        let child = Command::new(env!("CARGO_BIN_EXE_roomengine-exporter"))
            .arg("--config.file")
            .arg(&config_path)
            .arg("--web.listen-address")
            .arg(format!("127.0.0.1:{port}"))
            .args(extra_args)
            .env("ROOMENGINE_SECRET_KEY", KEY)
            .stdout(Stdio::from(
                std::fs::File::create(dir.path().join("stdout.log")).unwrap(),
            ))
            .stderr(Stdio::from(std::fs::File::create(&log_path).unwrap()))
            .spawn()
            .expect("exporter binary starts");
        Exporter {
            child,
            addr: ([127, 0, 0, 1], port).into(),
            log_path,
            _dir: dir,
        }
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

    pub async fn metrics(&self) -> String {
        self.get("/metrics").await.1
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

//! The HA group on Redis, end to end: a real `redis-server` (appendonly,
//! fsync on every write) on a loopback port, two replicas of the real binary
//! against the fake API, and a round-robin nginx in front of their callback
//! listeners. A callback that reaches one replica shows on both; a replica
//! killed mid-burst loses nothing and catches up when restarted; Redis killed
//! mid-burst costs 503s but no acknowledged callback; the same callback sent
//! to both replicas is applied once, the newest `EventTime` winning.
//! `tests/ensure-redis.sh` and `tests/ensure-nginx.sh` install them.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use roomengine_exporter::api::model::RoomInfo;
use roomengine_exporter::config::{RedisConfig, SecretKey};
use roomengine_exporter::room::{Field, Fields, RoomUpdate};
use roomengine_exporter::roomset::{Record, RedisState, StateBackend};
use serde_json::Value;

use common::redis::{require, Redis};
use common::{create_body, free_port, members_body, now_ms, value, Exporter, Fake, CREATE, ENTER, SDKAPPID};

const OK: &str = r#"{"ActionStatus":"OK","ErrorInfo":"","ErrorCode":0}"#;
const PASSWORD: &str = "ha-test-redis-password-5b1f";

/// A round-robin nginx in front of the replicas' callback listeners.
struct Nginx {
    addr: SocketAddr,
    child: Child,
    _dir: tempfile::TempDir,
}

impl Nginx {
    fn start(upstreams: &[SocketAddr]) -> Nginx {
        let nginx = require("nginx");
        let dir = tempfile::tempdir().expect("temp dir");
        let d = dir.path().display();
        let port = free_port();
        let servers: String = upstreams
            .iter()
            .map(|a| format!("    server {a} max_fails=1 fail_timeout=2s;\n"))
            .collect();
        // As root the workers would switch to nobody, who cannot read the temp dir.
        let is_root = Command::new("id")
            .arg("-u")
            .output()
            .is_ok_and(|o| o.stdout.starts_with(b"0\n"));
        let user = if is_root { "user root;\n" } else { "" };
        // non_idempotent: a POST whose replica died is sent to the next one;
        // safe because callbacks are idempotent (the same EventTime changes nothing).
        let conf = format!(
            "{user}worker_processes 1;\nevents {{ worker_connections 1024; }}\nhttp {{\n  access_log off;\n  client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n  fastcgi_temp_path {d}/fastcgi;\n  uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n  upstream replicas {{\n{servers}    keepalive 16;\n  }}\n  server {{\n    listen 127.0.0.1:{port};\n    location /callback {{\n      proxy_pass http://replicas;\n      proxy_http_version 1.1;\n      proxy_set_header Connection \"\";\n      proxy_next_upstream error timeout non_idempotent;\n      proxy_connect_timeout 1s;\n      proxy_read_timeout 10s;\n    }}\n  }}\n}}\n"
        );
        let conf_path = dir.path().join("nginx.conf");
        std::fs::write(&conf_path, conf).expect("writes nginx.conf");
        let child = Command::new(nginx)
            .arg("-p")
            .arg(dir.path())
            .arg("-c")
            .arg(&conf_path)
            .arg("-g")
            .arg(format!("daemon off; pid {d}/nginx.pid; error_log {d}/error.log;"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nginx starts");
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        let start = Instant::now();
        while std::net::TcpStream::connect(addr).is_err() {
            assert!(
                start.elapsed() < Duration::from_secs(5),
                "nginx not listening within 5 s: {}",
                std::fs::read_to_string(dir.path().join("error.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Nginx {
            addr,
            child,
            _dir: dir,
        }
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One replica: the exporter and its callback listener.
struct Replica {
    exporter: Exporter,
    callbacks: SocketAddr,
}

fn replica(fake: &Fake, redis: &Redis, password_file: Option<&Path>) -> Replica {
    let port = free_port();
    let password = password_file.map_or(String::new(), |p| {
        format!("  redis_password_file: {}\n", p.display())
    });
    // The group shares one budget of 100 calls/s; each replica its own ID
    // (they run on one host, whose name is the default).
    let yaml = format!(
        "app:\n  sdkappid: {SDKAPPID}\n  identifier: administrator\n  endpoint: {}\n  usersig_ttl: 1h\npolling:\n  interval: 30s\n  rate_limit: 100\n  timeout: 4s\nrooms: []\ncallbacks:\n  listen_address: 127.0.0.1:{port}\n  redis_url: {}\n{password}ha:\n  replica_id: replica-{port}\n",
        fake.endpoint(),
        redis.url()
    );
    Replica {
        exporter: Exporter::start_yaml(&yaml, &[]),
        callbacks: ([127, 0, 0, 1], port).into(),
    }
}

/// The fake API knows `rooms` (so that polls do not call them gone).
fn fake_rooms(fake: &Fake, rooms: &[String]) {
    for id in rooms {
        fake.add_room(id, 1, 300);
    }
}

/// POSTs a callback; the status (0: no answer) and the body.
async fn send(client: &reqwest::Client, addr: SocketAddr, command: &str, body: &Value) -> (u16, String) {
    let url = format!(
        "http://{addr}/callback?SdkAppid={SDKAPPID}&CallbackCommand={command}&contenttype=json&ClientIP=127.0.0.1&OptPlatform=RESTAPI"
    );
    match client.post(url).json(body).send().await {
        Ok(r) => {
            let status = r.status().as_u16();
            (status, r.text().await.unwrap_or_default())
        }
        Err(_) => (0, String::new()),
    }
}

fn members(text: &str, room: &str) -> Option<f64> {
    value(text, &format!("roomengine_room_members{{room_id=\"{room}\"}}"))
}

/// `room`'s series in a scrape, for comparing replicas.
fn series_of(text: &str, room: &str) -> Vec<String> {
    let label = format!("room_id=\"{room}\"");
    let mut lines: Vec<String> = text
        .lines()
        .filter(|l| l.contains(&label))
        // Each replica polls on its own: those series may differ for a moment.
        .filter(|l| !l.starts_with("roomengine_room_up") && !l.starts_with("roomengine_room_last_success"))
        .map(str::to_owned)
        .collect();
    lines.sort();
    lines
}

/// One callback of a burst: where it went, its room, the members it says, its answer.
#[derive(Clone)]
struct Sent {
    room: String,
    members: u64,
    status: u16,
}

/// Sends `events` (room, members, EventTime) over `lanes` concurrent
/// connections, lane `k` to `targets[k % len]`; counts answers in `answered`.
async fn burst(
    targets: Vec<SocketAddr>,
    events: Vec<(String, u64, u64)>,
    lanes: usize,
    answered: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
) -> Vec<Sent> {
    let events = Arc::new(Mutex::new(events.into_iter()));
    let mut tasks = Vec::new();
    for lane in 0..lanes {
        let (events, answered, stop) = (events.clone(), answered.clone(), stop.clone());
        let target = targets[lane % targets.len()];
        tasks.push(tokio::spawn(async move {
            let client = reqwest::Client::new();
            let mut sent = Vec::new();
            loop {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let next = events.lock().unwrap().next();
                let Some((room, count, at)) = next else { break };
                let body = if count == 0 {
                    create_body(&room, at)
                } else {
                    members_body(&room, count, at)
                };
                let command = if count == 0 { CREATE } else { ENTER };
                let (status, _) = send(&client, target, command, &body).await;
                answered.fetch_add(1, Ordering::Relaxed);
                sent.push(Sent {
                    room,
                    members: count,
                    status,
                });
            }
            sent
        }));
    }
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await.expect("lane"));
    }
    all
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_replicas_show_every_callback_and_a_replica_killed_mid_burst_catches_up() {
    let redis = Redis::start(None);
    let fake = Fake::start(0).await;
    let rooms: Vec<String> = (1..=120).map(|i| format!("ha-{i:03}")).collect();
    let probes: Vec<String> = (1..=6).map(|i| format!("prop-{i}")).collect();
    fake_rooms(&fake, &rooms);
    fake_rooms(&fake, &probes);
    let a = replica(&fake, &redis, None);
    let mut b = replica(&fake, &redis, None);
    let nginx = Nginx::start(&[a.callbacks, b.callbacks]);
    a.exporter.wait_ready(Duration::from_secs(10)).await;
    b.exporter.wait_ready(Duration::from_secs(10)).await;

    // Newer than any poll of the test, so the callbacks' values are what shows.
    let t0 = now_ms() + 60_000;
    let client = reqwest::Client::new();
    let mut worst = Duration::ZERO;
    for (i, room) in probes.iter().enumerate() {
        let sent = Instant::now();
        let count = 10 + i as u64;
        assert_eq!(
            send(&client, nginx.addr, ENTER, &members_body(room, count, t0)).await,
            (200, OK.to_owned())
        );
        let mut pending = vec![&a, &b];
        while !pending.is_empty() {
            let mut still = Vec::new();
            for r in pending {
                if members(&r.exporter.metrics().await, room) != Some(count as f64) {
                    still.push(r);
                }
            }
            pending = still;
            assert!(
                sent.elapsed() < Duration::from_secs(1),
                "{room} not on both replicas within 1 s"
            );
            if !pending.is_empty() {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
        worst = worst.max(sent.elapsed());
    }
    println!(
        "propagation: a callback through nginx showed on both replicas' /metrics within {:.1} ms (worst of {})",
        worst.as_secs_f64() * 1000.0,
        probes.len()
    );

    // A create and two member changes per room, through nginx, 8 at a time;
    // the newest EventTime says members = 2 + i % 50.
    let mut events = Vec::new();
    for (i, room) in rooms.iter().enumerate() {
        events.push((room.clone(), 0, t0 + i as u64));
    }
    for step in 1..=2u64 {
        for (i, room) in rooms.iter().enumerate() {
            events.push((room.clone(), step + (i % 50) as u64, t0 + 1000 * step + i as u64));
        }
    }
    let total = events.len();
    let answered = Arc::new(AtomicUsize::new(0));
    let burst_task = tokio::spawn(burst(
        vec![nginx.addr],
        events,
        8,
        answered.clone(),
        Arc::default(),
    ));
    while answered.load(Ordering::Relaxed) < total / 3 {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let _ = b.exporter.child.kill();
    let _ = b.exporter.child.wait();
    let killed_at = answered.load(Ordering::Relaxed);
    let sent = burst_task.await.expect("burst");
    let refused: Vec<u16> = sent.iter().map(|s| s.status).filter(|&s| s != 200).collect();
    println!(
        "kill -9 of one replica after {killed_at} of {total} callbacks through nginx: {} answered 200, {} not",
        sent.len() - refused.len(),
        refused.len()
    );
    assert_eq!(sent.len(), total);
    assert_eq!(
        refused,
        Vec::<u16>::new(),
        "nginx sends on to the surviving replica"
    );

    let expected = |i: usize| (2 + i % 50) as f64;
    for (i, room) in rooms.iter().enumerate() {
        let record = redis.record(room).unwrap_or_else(|| panic!("{room} is in Redis"));
        assert_eq!(
            record.facts.info.member_count as f64,
            expected(i),
            "{room} in Redis"
        );
    }
    let text = a.exporter.metrics().await;
    for (i, room) in rooms.iter().enumerate() {
        assert_eq!(
            members(&text, room),
            Some(expected(i)),
            "{room} on the surviving replica"
        );
    }
    assert_eq!(
        value(&text, "roomengine_rooms_discovered"),
        Some((rooms.len() + probes.len()) as f64)
    );
    assert_eq!(value(&text, "roomengine_state_up"), Some(1.0));

    // Restarted, it starts from the shared room set.
    let restarted = Instant::now();
    b.exporter.kill9_and_restart();
    let mut serving = None;
    let text = loop {
        let (status, text) = b.exporter.get("/metrics").await;
        if status == 200 {
            serving.get_or_insert(restarted.elapsed());
            if rooms
                .iter()
                .enumerate()
                .all(|(i, r)| members(&text, r) == Some(expected(i)))
            {
                break text;
            }
        }
        assert!(
            restarted.elapsed() < Duration::from_secs(10),
            "the restarted replica did not show every room; log:\n{}",
            b.exporter.log()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let caught_up = restarted.elapsed();
    b.exporter.wait_ready(Duration::from_secs(10)).await;
    println!(
        "restarted replica: /metrics served {:.0} ms after the restart, every one of {} rooms shown {:.0} ms after it, ready {:.0} ms after it",
        serving.unwrap_or_default().as_secs_f64() * 1000.0,
        rooms.len(),
        caught_up.as_secs_f64() * 1000.0,
        restarted.elapsed().as_secs_f64() * 1000.0
    );
    assert_eq!(
        value(&text, "roomengine_rooms_discovered"),
        Some((rooms.len() + probes.len()) as f64)
    );
    // Quiet subscriptions are kept alive (a PING after 2 s without messages), not lost.
    assert!(
        !a.exporter.log().contains("Redis subscription lost"),
        "{}",
        a.exporter.log()
    );
    // Once it has polled every room itself, both replicas show the same.
    let (text_a, text_b) = (a.exporter.metrics().await, b.exporter.metrics().await);
    for room in rooms.iter().chain(&probes) {
        assert_eq!(series_of(&text_b, room), series_of(&text_a, room), "{room}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_mid_burst_costs_503s_but_no_acknowledged_callback() {
    let mut redis = Redis::start(Some(PASSWORD));
    let secret_dir = tempfile::tempdir().expect("temp dir");
    let password_file = secret_dir.path().join("redis-password");
    std::fs::write(&password_file, format!("{PASSWORD}\n")).expect("writes the password");
    let fake = Fake::start(0).await;
    let rooms: Vec<String> = (1..=400).map(|i| format!("rr-{i:03}")).collect();
    fake_rooms(&fake, &rooms);
    let a = replica(&fake, &redis, Some(&password_file));
    let mut b = replica(&fake, &redis, Some(&password_file));
    a.exporter.wait_ready(Duration::from_secs(10)).await;
    b.exporter.wait_ready(Duration::from_secs(10)).await;

    // One room per callback, members = its index: each acknowledged one can be looked for.
    let t0 = now_ms() + 60_000;
    let events: Vec<(String, u64, u64)> = rooms
        .iter()
        .enumerate()
        .map(|(i, room)| (room.clone(), i as u64 + 1, t0 + i as u64))
        .collect();
    let (first, rest) = events.split_at(300);
    let answered = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let burst_task = tokio::spawn(burst(
        vec![a.callbacks, b.callbacks],
        first.to_vec(),
        4,
        answered.clone(),
        stop.clone(),
    ));
    while answered.load(Ordering::Relaxed) < 100 {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    redis.kill9();
    let killed_at = answered.load(Ordering::Relaxed);
    // The burst goes on against the outage for a while.
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    let mut sent = burst_task.await.expect("burst");
    let during = sent.len().saturating_sub(killed_at);
    let refused = sent.iter().filter(|s| s.status == 503).count();
    let others: Vec<u16> = sent
        .iter()
        .map(|s| s.status)
        .filter(|&s| s != 200 && s != 503)
        .collect();
    assert_eq!(others, Vec::<u16>::new(), "answers are 200 or 503");
    assert!(refused > 0, "callbacks during the outage are refused");

    // /metrics keeps serving what it had, and tells of the outage.
    for r in [&a, &b] {
        let text = r
            .exporter
            .wait_for(Duration::from_secs(3), "state_up 0", |t| {
                value(t, "roomengine_state_up") == Some(0.0)
            })
            .await;
        assert!(value(&text, "roomengine_state_errors_total").is_some_and(|n| n >= 1.0));
        let acknowledged = sent.iter().find(|s| s.status == 200).expect("some acknowledged");
        assert_eq!(
            members(&text, &acknowledged.room),
            Some(acknowledged.members as f64)
        );
    }
    // A replica (re)started while Redis is down starts empty and says so.
    b.exporter.kill9_and_restart();
    b.exporter.wait_ready(Duration::from_secs(10)).await;
    let text = b.exporter.metrics().await;
    assert_eq!(value(&text, "roomengine_state_up"), Some(0.0));
    assert_eq!(value(&text, "roomengine_rooms_discovered"), Some(0.0));
    assert_eq!(
        send(
            &reqwest::Client::new(),
            b.callbacks,
            ENTER,
            &members_body("rr-001", 1, t0)
        )
        .await
        .0,
        503
    );

    // Back with its AOF: both replicas recover on their own, no callback needed.
    let returned = Instant::now();
    redis.restart();
    for r in [&a, &b] {
        r.exporter
            .wait_for(Duration::from_secs(5), "state_up 1 again", |t| {
                value(t, "roomengine_state_up") == Some(1.0)
            })
            .await;
    }
    let recovered = returned.elapsed();
    // Then the rest of the burst, all acknowledged.
    let later = burst(
        vec![a.callbacks, b.callbacks],
        rest.to_vec(),
        4,
        answered.clone(),
        Arc::default(),
    )
    .await;
    assert!(later.iter().all(|s| s.status == 200));
    sent.extend(later);

    let acknowledged: Vec<&Sent> = sent.iter().filter(|s| s.status == 200).collect();
    let text_a = a.exporter.metrics().await;
    let text_b = b
        .exporter
        .wait_for(Duration::from_secs(2), "every acknowledged room", |t| {
            acknowledged
                .iter()
                .all(|s| members(t, &s.room) == Some(s.members as f64))
        })
        .await;
    for s in &acknowledged {
        let record = redis
            .record(&s.room)
            .unwrap_or_else(|| panic!("{} acknowledged, lost", s.room));
        assert_eq!(record.facts.info.member_count, s.members, "{} in Redis", s.room);
        assert_eq!(
            members(&text_a, &s.room),
            Some(s.members as f64),
            "{} on A",
            s.room
        );
        assert_eq!(
            members(&text_b, &s.room),
            Some(s.members as f64),
            "{} on B",
            s.room
        );
    }
    println!(
        "Redis kill -9 after {killed_at} callbacks: {} answered 503 during the outage ({} sent then), {} acknowledged in all, none lost; both replicas back to state_up 1 within {:.0} ms of Redis answering",
        refused,
        during,
        acknowledged.len(),
        recovered.as_secs_f64() * 1000.0
    );
    for r in [&a, &b] {
        let log = r.exporter.log();
        assert!(!log.contains(PASSWORD), "the Redis password leaked into the log");
        assert!(log.contains("cannot store callbacks; answering 503"), "{log}");
        assert!(
            log.contains("Redis subscription back; reading every room"),
            "{log}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_callback_to_both_replicas_is_applied_once_and_the_newest_event_time_wins() {
    let redis = Redis::start(None);
    let fake = Fake::start(0).await;
    fake_rooms(&fake, &["dup-1".to_owned()]);
    let a = replica(&fake, &redis, None);
    let b = replica(&fake, &redis, None);
    a.exporter.wait_ready(Duration::from_secs(10)).await;
    b.exporter.wait_ready(Duration::from_secs(10)).await;
    let client = reqwest::Client::new();
    let t0 = now_ms() + 60_000;

    // The same create and the same member change, to both at once.
    let create = create_body("dup-1", t0);
    let (x, y) = tokio::join!(
        send(&client, a.callbacks, CREATE, &create),
        send(&client, b.callbacks, CREATE, &create)
    );
    assert_eq!((x.0, y.0), (200, 200));
    let seven = members_body("dup-1", 7, t0 + 10);
    let (x, y) = tokio::join!(
        send(&client, a.callbacks, ENTER, &seven),
        send(&client, b.callbacks, ENTER, &seven)
    );
    assert_eq!((x, y), ((200, OK.to_owned()), (200, OK.to_owned())));
    // An older one, late, to one of them: acknowledged, changes nothing anywhere.
    assert_eq!(
        send(&client, b.callbacks, ENTER, &members_body("dup-1", 3, t0 + 5))
            .await
            .0,
        200
    );
    // A newer one to A only shows on B too.
    assert_eq!(
        send(&client, a.callbacks, ENTER, &members_body("dup-1", 8, t0 + 20))
            .await
            .0,
        200
    );
    let record = redis.record("dup-1").expect("in Redis");
    assert_eq!(record.facts.info.member_count, 8);
    assert_eq!(record.last_callback_ms, t0 + 20);
    let text_b = b
        .exporter
        .wait_for(Duration::from_secs(1), "members 8 on B", |t| {
            members(t, "dup-1") == Some(8.0)
        })
        .await;
    let text_a = a.exporter.metrics().await;
    let expected_last = format!(
        "roomengine_room_last_callback_timestamp_seconds{{room_id=\"dup-1\"}} {:.3}",
        (t0 + 20) as f64 / 1000.0
    );
    for text in [&text_a, &text_b] {
        assert_eq!(members(text, "dup-1"), Some(8.0));
        assert!(text.lines().any(|l| l == expected_last), "{text}");
        assert!(
            text.lines()
                .any(|l| l == "roomengine_room_info{room_id=\"dup-1\",room_name=\"meeting dup-1\",room_type=\"Meeting\",owner=\"owner1\"} 1"),
            "{text}"
        );
        assert_eq!(value(text, "roomengine_rooms_discovered"), Some(1.0));
    }
    assert_eq!(series_of(&text_a, "dup-1"), series_of(&text_b, "dup-1"));
    // Each replica counts what it received: A 3, B 3.
    for text in [&text_a, &text_b] {
        let received: f64 = [CREATE, ENTER]
            .iter()
            .filter_map(|c| value(text, &format!("roomengine_callbacks_total{{command=\"{c}\"}}")))
            .sum();
        assert_eq!(received, 3.0);
    }
}

/// The backend alone, as the room set's writer drives it.
fn backend(redis: &Redis, password: Option<&str>) -> RedisState {
    let config = RedisConfig {
        url: redis.url(),
        password: password.map(|p| SecretKey::new(p.to_owned())),
    };
    RedisState::open(&config, SDKAPPID).expect("opens")
}

fn record_with(members: Option<(u64, u64)>, name: Option<(&str, u64)>) -> Record {
    let mut record = Record::default();
    if let Some((count, at)) = members {
        record.facts.merge(&RoomUpdate {
            fields: Fields::NONE.with(Field::Members),
            info: RoomInfo {
                member_count: count,
                ..RoomInfo::default()
            },
            exists: true,
            at_ms: at,
            ..RoomUpdate::default()
        });
        record.last_callback_ms = record.last_callback_ms.max(at);
    }
    if let Some((room_name, at)) = name {
        record.facts.merge(&RoomUpdate {
            fields: Fields::NONE.with(Field::RoomName),
            info: RoomInfo {
                room_name: room_name.into(),
                ..RoomInfo::default()
            },
            exists: true,
            at_ms: at,
            ..RoomUpdate::default()
        });
        record.last_callback_ms = record.last_callback_ms.max(at);
    }
    record
}

#[test]
fn two_writers_merge_field_by_field_and_each_learns_what_the_other_wrote() {
    let redis = Redis::start(None);
    let (mut a, mut b) = (backend(&redis, None), backend(&redis, None));
    let (woken, wakes) = std::sync::mpsc::channel::<()>();
    b.on_remote_change(Box::new(move || {
        let _ = woken.send(());
    }));
    // Subscribed: the first wake asks for every room (none yet).
    wakes
        .recv_timeout(Duration::from_secs(5))
        .expect("woken on subscribing");
    assert_eq!(b.take_remote().expect("reads"), vec![]);

    let from_a = record_with(Some((7, 2_000)), None);
    assert_eq!(a.commit(&[("r1", Some(&from_a))]).expect("commits"), vec![]);
    // B, which has not seen A's, writes an older member count and a name.
    let from_b = record_with(Some((3, 1_000)), Some(("Weekly", 1_500)));
    let merged = record_with(Some((7, 2_000)), Some(("Weekly", 1_500)));
    assert_eq!(
        b.commit(&[("r1", Some(&from_b))]).expect("commits"),
        vec![("r1".to_owned(), merged.clone())],
        "B is told what A wrote"
    );
    assert_eq!(redis.record("r1"), Some(merged.clone()));
    // A's commit reached B through the channel too.
    wakes
        .recv_timeout(Duration::from_secs(5))
        .expect("woken by A's commit");
    assert_eq!(
        b.take_remote().expect("reads"),
        vec![("r1".to_owned(), Some(merged.clone()))]
    );
    // Forgetting a room that is alive in Redis (revived elsewhere) leaves it there.
    assert_eq!(
        a.commit(&[("r1", None)]).expect("commits"),
        vec![("r1".to_owned(), merged.clone())]
    );
    assert_eq!(redis.record("r1"), Some(merged.clone()));
    // Destroyed, then forgotten by A: B is told it is gone.
    let mut destroyed = merged.clone();
    destroyed.facts.merge(&RoomUpdate::gone(3_000));
    destroyed.destroyed_at_ms = Some(now_ms());
    assert_eq!(a.commit(&[("r1", Some(&destroyed))]).expect("commits"), vec![]);
    assert_eq!(a.commit(&[("r1", None)]).expect("deletes"), vec![]);
    wakes
        .recv_timeout(Duration::from_secs(5))
        .expect("woken by the delete");
    assert_eq!(b.take_remote().expect("reads"), vec![("r1".to_owned(), None)]);
    assert_eq!(redis.record("r1"), None);
    // A new replica loads what is kept.
    b.commit(&[("r2", Some(&from_b))]).expect("commits");
    assert_eq!(
        backend(&redis, None).load().expect("loads"),
        vec![("r2".to_owned(), from_b)]
    );
}

#[test]
fn a_wrong_password_or_no_redis_fails_at_once_and_never_shows_the_password() {
    let mut redis = Redis::start(Some(PASSWORD));
    let wrong = "not-the-password-9c2e";
    let mut state = backend(&redis, Some(wrong));
    let prefix = format!("Redis {}: ", redis.url());
    let error = state.load().expect_err("refused");
    assert!(error.starts_with(&prefix), "{error}");
    assert!(!error.contains(wrong), "{error}");
    let mut state = backend(&redis, Some(PASSWORD));
    assert_eq!(state.load().expect("loads"), vec![]);
    redis.kill9();
    let started = Instant::now();
    let error = state
        .commit(&[("r1", Some(&Record::default()))])
        .expect_err("Redis is down");
    println!(
        "a commit with Redis down failed in {:.1} ms: {error}",
        started.elapsed().as_secs_f64() * 1000.0
    );
    assert!(error.starts_with(&prefix), "{error}");
    assert!(!error.contains(PASSWORD), "{error}");
    redis.restart();
    assert_eq!(
        state
            .commit(&[("r1", Some(&Record::default()))])
            .expect("reconnects"),
        vec![]
    );
}

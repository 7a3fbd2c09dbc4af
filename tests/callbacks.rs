//! The callback receiver of the real binary against the independent fake
//! API: rooms discovered by callbacks, live member counts ordered by
//! EventTime, destroy and forget, every rejection, durability across
//! `kill -9` (the burst of creates is in callback_burst.rs, alone so that
//! no other test shares the machine with it).

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use common::{
    create_body, free_port, members_body, now_ms, post_callback, value, Exporter, Fake, Fault, CREATE, ENTER,
    SDKAPPID,
};

const OK: &str = r#"{"ActionStatus":"OK","ErrorInfo":"","ErrorCode":0}"#;
const DESTROY: &str = "Room.CallbackAfterDestroyRoom";

/// An exporter with no configured room and the receiver on a free port.
struct Receiving {
    exporter: Exporter,
    callbacks: SocketAddr,
}

fn start(fake: &Fake, polling: &str, callbacks_extra: &str, rooms: &[&str]) -> Receiving {
    let port = free_port();
    let rooms_yaml = if rooms.is_empty() {
        "rooms: []\n".to_owned()
    } else {
        format!("rooms: [{}]\n", rooms.join(", "))
    };
    let yaml = format!(
        "app:\n  sdkappid: {SDKAPPID}\n  identifier: administrator\n  endpoint: {}\n  usersig_ttl: 1h\npolling:\n{polling}\n{rooms_yaml}callbacks:\n  listen_address: 127.0.0.1:{port}\n{callbacks_extra}",
        fake.endpoint()
    );
    Receiving {
        exporter: Exporter::start_yaml(&yaml, &[]),
        callbacks: ([127, 0, 0, 1], port).into(),
    }
}

fn calls(fake: &Fake, room: &str) -> usize {
    fake.with(|s| s.calls_per_room.get(room).copied().unwrap_or(0))
}

/// A create callback for `id`, answered OK, then the room polled (up) within 3 s.
async fn create_and_see_polled(r: &Receiving, id: &str) {
    assert_eq!(
        post_callback(r.callbacks, CREATE, &create_body(id, now_ms()), "")
            .await
            .0,
        200
    );
    let up = format!("roomengine_room_up{{room_id=\"{id}\"}}");
    r.exporter
        .wait_for(Duration::from_secs(3), &format!("{id} polled"), |t| {
            value(t, &up) == Some(1.0)
        })
        .await;
}

async fn wait_ready(exporter: &Exporter) {
    exporter.wait_ready(Duration::from_secs(10)).await;
}

/// Waits until `/metrics` has no series of `room`, or panics.
fn series_of<'a>(text: &'a str, room: &str) -> Vec<&'a str> {
    let label = format!("room_id=\"{room}\"");
    text.lines().filter(|l| l.contains(&label)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_created_room_is_polled_and_its_members_are_live_and_ordered_by_event_time() {
    let fake = Fake::start(0).await;
    fake.add_room("meet-1", 5, 50);
    let r = start(&fake, "  interval: 2s\n  rate_limit: 20\n  timeout: 4s", "", &[]);
    // An empty room set is ready at once.
    wait_ready(&r.exporter).await;
    // The first poll answers late, so what shows at first is the callback's alone.
    fake.set_fault(&["meet-1"], Some(Fault::Slow(Duration::from_millis(1500))));

    let t0 = now_ms();
    assert_eq!(
        post_callback(r.callbacks, CREATE, &create_body("meet-1", t0), "").await,
        (200, OK.into())
    );
    // Visible when the answer arrives, from the callback alone.
    let text = r.exporter.metrics().await;
    assert!(
        text.contains("roomengine_room_info{room_id=\"meet-1\",room_name=\"meeting meet-1\",room_type=\"Meeting\",owner=\"owner1\"} 1\n"),
        "{text}"
    );
    assert!(
        text.contains("roomengine_room_max_members{room_id=\"meet-1\"} 50\n"),
        "{text}"
    );
    assert!(text.contains(&format!(
        "roomengine_room_last_callback_timestamp_seconds{{room_id=\"meet-1\"}} {:.3}\n",
        t0 as f64 / 1000.0
    )));
    assert_eq!(value(&text, "roomengine_rooms_discovered"), Some(1.0));
    assert_eq!(
        value(
            &text,
            "roomengine_callbacks_total{command=\"Room.CallbackAfterCreateRoom\"}"
        ),
        Some(1.0)
    );

    // Polled through the budget within one interval; then the poll's MemberCount shows.
    let text = r
        .exporter
        .wait_for(Duration::from_secs(4), "meet-1 polled", |t| {
            value(t, "roomengine_room_up{room_id=\"meet-1\"}") == Some(1.0)
        })
        .await;
    assert_eq!(
        value(&text, "roomengine_room_members{room_id=\"meet-1\"}"),
        Some(5.0)
    );

    // A member callback newer than any poll sent so far wins over the polls that follow.
    let future = now_ms() + 60_000;
    assert_eq!(
        post_callback(r.callbacks, ENTER, &members_body("meet-1", 9, future), "")
            .await
            .0,
        200
    );
    assert_eq!(
        value(
            &r.exporter.metrics().await,
            "roomengine_room_members{room_id=\"meet-1\"}"
        ),
        Some(9.0),
        "visible at once"
    );
    // An older one (late, out of order) changes nothing.
    assert_eq!(
        post_callback(r.callbacks, ENTER, &members_body("meet-1", 3, future - 1), "")
            .await
            .0,
        200
    );
    let polls = calls(&fake, "meet-1");
    tokio::time::sleep(Duration::from_millis(4500)).await;
    assert!(calls(&fake, "meet-1") >= polls + 2, "polled every 2 s meanwhile");
    let text = r.exporter.metrics().await;
    assert_eq!(
        value(&text, "roomengine_room_members{room_id=\"meet-1\"}"),
        Some(9.0),
        "{text}"
    );
    assert_eq!(
        value(
            &text,
            "roomengine_callbacks_total{command=\"Room.CallbackAfterMemberEnter\"}"
        ),
        Some(2.0)
    );

    // A member callback discovers a room nobody announced.
    fake.add_room("meet-2", 1, 10);
    assert_eq!(
        // Ahead of the poll the discovery causes, which would otherwise replace the 4.
        post_callback(
            r.callbacks,
            ENTER,
            &members_body("meet-2", 4, now_ms() + 60_000),
            ""
        )
        .await
        .0,
        200
    );
    let text = r.exporter.metrics().await;
    assert_eq!(
        value(&text, "roomengine_room_members{room_id=\"meet-2\"}"),
        Some(4.0)
    );
    assert_eq!(value(&text, "roomengine_rooms_discovered"), Some(2.0));
    // A callback for a command the exporter does not handle: 200, counted as other.
    assert_eq!(
        post_callback(
            r.callbacks,
            "Room.CallbackSomethingNew",
            &json!({"EventTime": 1}),
            ""
        )
        .await,
        (200, OK.into())
    );
    assert_eq!(
        value(
            &r.exporter.metrics().await,
            "roomengine_callbacks_total{command=\"other\"}"
        ),
        Some(1.0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_destroy_of_a_configured_room_shows_at_once_though_no_callback_came_before() {
    let fake = Fake::start(1).await;
    // Polled once at start, then not for a minute: only the callback can tell.
    let r = start(
        &fake,
        "  interval: 60s\n  rate_limit: 20\n  timeout: 4s",
        "",
        &["room-0001"],
    );
    wait_ready(&r.exporter).await;
    let exists = "roomengine_room_exists{room_id=\"room-0001\"}";
    assert_eq!(value(&r.exporter.metrics().await, exists), Some(1.0));
    fake.with(|s| s.rooms.get_mut("room-0001").expect("fake room").gone = true);
    let body = json!({"CallbackCommand": DESTROY, "EventTime": now_ms(), "RoomId": "room-0001"});
    assert_eq!(
        post_callback(r.callbacks, DESTROY, &body, "").await,
        (200, OK.into())
    );
    let text = r.exporter.metrics().await;
    assert_eq!(value(&text, exists), Some(0.0), "acknowledged, so shown");
    assert_eq!(value(&text, "roomengine_rooms_discovered"), Some(0.0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_destroyed_room_shows_exists_0_is_no_longer_polled_then_is_forgotten_and_can_return() {
    let fake = Fake::start(1).await;
    fake.add_room("meet-1", 5, 50);
    let r = start(
        &fake,
        "  interval: 1s\n  rate_limit: 20\n  timeout: 4s",
        "  forget_after: 4s\n",
        &["room-0001"],
    );
    wait_ready(&r.exporter).await;
    create_and_see_polled(&r, "meet-1").await;

    let destroyed = Instant::now();
    let body = json!({"CallbackCommand": DESTROY, "Operator_Account": "owner1", "EventTime": now_ms(), "RoomId": "meet-1"});
    assert_eq!(
        post_callback(r.callbacks, DESTROY, &body, "").await,
        (200, OK.into())
    );
    // A configured room gets callbacks too, and a destroy does not forget it.
    let body = json!({"CallbackCommand": DESTROY, "EventTime": now_ms(), "RoomId": "room-0001"});
    assert_eq!(post_callback(r.callbacks, DESTROY, &body, "").await.0, 200);
    let text = r.exporter.metrics().await;
    assert_eq!(
        series_of(&text, "meet-1"),
        vec![
            "roomengine_room_up{room_id=\"meet-1\"} 0",
            "roomengine_room_exists{room_id=\"meet-1\"} 0"
        ]
    );
    let polls = calls(&fake, "meet-1");
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert!(
        calls(&fake, "meet-1") <= polls + 1,
        "no more polls after the destroy (one may have been in flight)"
    );

    let text = r
        .exporter
        .wait_for(Duration::from_secs(6), "meet-1 forgotten", |t| {
            series_of(t, "meet-1").is_empty()
        })
        .await;
    let forgotten_after = destroyed.elapsed();
    assert!(
        forgotten_after >= Duration::from_secs(4),
        "forgotten after {forgotten_after:?}"
    );
    assert_eq!(value(&text, "roomengine_rooms_discovered"), Some(0.0));
    assert_eq!(
        value(&text, "roomengine_room_exists{room_id=\"room-0001\"}"),
        Some(1.0),
        "polled on, and it exists"
    );

    // The same ID created again comes back.
    create_and_see_polled(&r, "meet-1").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_callbacks_get_a_clear_4xx_are_counted_and_change_nothing() {
    const TOKEN: &str = "callback-token-never-shown-4711";
    let fake = Fake::start(0).await;
    let port = free_port();
    let secrets = tempfile::tempdir().unwrap();
    let token_file = secrets.path().join("token");
    std::fs::write(&token_file, format!("{TOKEN}\n")).unwrap();
    let yaml = format!(
        "app:\n  sdkappid: {SDKAPPID}\n  identifier: administrator\n  endpoint: {}\npolling:\n  interval: 5s\nrooms: []\ncallbacks:\n  listen_address: 127.0.0.1:{port}\n  token_file: {}\n",
        fake.endpoint(),
        token_file.display()
    );
    let exporter = Exporter::start_yaml(&yaml, &["--log.level", "debug"]);
    wait_ready(&exporter).await;
    fake.add_room("meet-1", 3, 10);
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let now = now_ms() / 1000;
    let signed = |at: u64| {
        format!(
            "&Sign={}&RequestTime={at}",
            // The simulator's signer: the receiver is checked against other code than its own.
            roomengine_exporter::sim::callback_sign(TOKEN, at)
        )
    };
    let body = members_body("meet-1", 3, now_ms());
    let client = reqwest::Client::new();
    let url = |query: &str| format!("http://{addr}/callback?CallbackCommand={ENTER}{query}");

    let wrong_app = client
        .post(url(&format!("&SdkAppid=1400000001{}", signed(now))))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(wrong_app.status(), 403);
    assert_eq!(
        wrong_app.text().await.unwrap(),
        "SdkAppid \"1400000001\" is not this exporter's app\n"
    );
    let get = client
        .get(url(&format!("&SdkAppid={SDKAPPID}")))
        .send()
        .await
        .unwrap();
    assert_eq!(get.status(), 405);
    assert_eq!(
        get.text().await.unwrap(),
        "method GET not allowed: callbacks are POSTed\n"
    );

    let cases: [(String, Value, u16, String); 7] = [
        (
            String::new(),
            body.clone(),
            401,
            "Sign and RequestTime are required (a callback token is set)".into(),
        ),
        (
            format!("&Sign={}&RequestTime={now}", "0".repeat(64)),
            body.clone(),
            401,
            "Sign does not match the callback token".into(),
        ),
        (
            signed(now - 120),
            body.clone(),
            401,
            format!(
                "RequestTime {} is 120s away from this exporter's clock (at most 60s)",
                now - 120
            ),
        ),
        (
            signed(now),
            json!({"EventTime": now_ms(), "MemberCount": 3}),
            400,
            "malformed callback: RoomId: missing".into(),
        ),
        (
            signed(now),
            json!({"EventTime": now_ms(), "RoomId": "x".repeat(49), "MemberCount": 3}),
            400,
            format!(
                "malformed callback: RoomId: room ID \"{}\" is 49 bytes, longer than the limit of 48",
                "x".repeat(49)
            ),
        ),
        (
            signed(now),
            json!({"EventTime": now_ms(), "RoomId": "meet-1", "MemberCount": "many"}),
            400,
            "malformed callback: MemberCount: expected a number, got \"many\"".into(),
        ),
        (
            signed(now),
            json!("not an object"),
            400,
            "malformed callback: body is not a JSON object".into(),
        ),
    ];
    for (query, body, status, message) in &cases {
        let (got, text) = post_callback(addr, ENTER, body, query).await;
        assert_eq!(
            (got, text.as_str()),
            (*status, format!("{message}\n").as_str()),
            "{query} {body}"
        );
    }
    let not_json = client
        .post(url(&format!("&SdkAppid={SDKAPPID}{}", signed(now))))
        .body("{\"RoomId\":")
        .send()
        .await
        .unwrap();
    assert_eq!(not_json.status(), 400);
    assert!(not_json
        .text()
        .await
        .unwrap()
        .starts_with("malformed callback: body is not JSON: "));
    // Refused from its Content-Length, before a byte of the body is read.
    let query = format!("SdkAppid={SDKAPPID}&CallbackCommand={ENTER}{}", signed(now));
    let huge = declared_post(addr, &query, 2 << 20).await;
    assert!(huge.starts_with("HTTP/1.1 413 "), "{huge}");
    assert!(
        huge.ends_with("\r\n\r\ncallback body over 1048576 bytes\n"),
        "{huge}"
    );
    // Chunked, so only counting the bytes can stop it.
    assert_eq!(
        chunked_post(addr, &query, 40, 64 << 10).await,
        "HTTP/1.1 413 Payload Too Large"
    );

    let text = exporter.metrics().await;
    for (reason, n) in [
        ("sdkappid", 1.0),
        ("method", 1.0),
        ("signature", 2.0),
        ("request_time", 1.0),
        ("malformed", 5.0),
        ("too_large", 2.0),
    ] {
        assert_eq!(
            value(
                &text,
                &format!("roomengine_callbacks_rejected_total{{reason=\"{reason}\"}}")
            ),
            Some(n),
            "{reason}"
        );
    }
    assert!(series_of(&text, "meet-1").is_empty(), "nothing changed");
    assert_eq!(value(&text, "roomengine_rooms_discovered"), Some(0.0));

    // The good one, signed, is applied.
    assert_eq!(
        post_callback(addr, ENTER, &body, &signed(now)).await,
        (200, OK.into())
    );
    assert_eq!(
        value(
            &exporter.metrics().await,
            "roomengine_room_members{room_id=\"meet-1\"}"
        ),
        Some(3.0)
    );
    let log = exporter.log();
    assert!(!log.contains(TOKEN) && !text.contains(TOKEN), "the token leaked");
    assert!(
        log.contains("callback rejected"),
        "rejections are logged at debug level"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_room_set_survives_kill_9_and_forgotten_rooms_stay_forgotten() {
    let fake = Fake::start(0).await;
    let ids: Vec<String> = (1..=40).map(|i| format!("meet-{i:02}")).collect();
    for id in &ids {
        fake.add_room(id, 2, 20);
    }
    let mut r = start(
        &fake,
        "  interval: 30s\n  rate_limit: 50\n  timeout: 4s",
        "  forget_after: 2s\n",
        &[],
    );
    wait_ready(&r.exporter).await;
    for id in &ids {
        assert_eq!(
            post_callback(r.callbacks, CREATE, &create_body(id, now_ms()), "")
                .await
                .0,
            200
        );
    }
    // meet-01..05 destroyed and (after 2 s) forgotten; meet-06 destroyed just before the kill.
    for id in &ids[..5] {
        let body = json!({"EventTime": now_ms(), "RoomId": id});
        assert_eq!(post_callback(r.callbacks, DESTROY, &body, "").await.0, 200);
    }
    r.exporter
        .wait_for(Duration::from_secs(5), "meet-01..05 forgotten", |t| {
            ids[..5].iter().all(|id| series_of(t, id).is_empty())
        })
        .await;
    let body = json!({"EventTime": now_ms(), "RoomId": ids[5]});
    assert_eq!(post_callback(r.callbacks, DESTROY, &body, "").await.0, 200);
    let entered = now_ms();
    assert_eq!(
        post_callback(r.callbacks, ENTER, &members_body(&ids[6], 7, entered), "")
            .await
            .0,
        200
    );

    r.exporter.kill9_and_restart();
    wait_ready(&r.exporter).await;
    let before = fake.with(|s| s.arrivals.len());
    let text = r.exporter.metrics().await;
    assert_eq!(value(&text, "roomengine_rooms_discovered"), Some(35.0), "{text}");
    for id in &ids[..5] {
        assert!(series_of(&text, id).is_empty(), "{id} stays forgotten");
    }
    assert_eq!(
        series_of(&text, &ids[5]),
        vec![
            format!("roomengine_room_up{{room_id=\"{}\"}} 0", ids[5]),
            format!("roomengine_room_exists{{room_id=\"{}\"}} 0", ids[5])
        ]
    );
    // Ready means the first pass is done: every live room was polled again.
    for id in &ids[6..] {
        assert_eq!(
            value(&text, &format!("roomengine_room_up{{room_id=\"{id}\"}}")),
            Some(1.0),
            "{id}"
        );
    }
    // What the callbacks said is kept too (the members since polled afresh).
    assert_eq!(
        value(
            &text,
            &format!(
                "roomengine_room_last_callback_timestamp_seconds{{room_id=\"{}\"}}",
                ids[6]
            )
        ),
        Some((entered as f64 / 1000.0 * 1000.0).round() / 1000.0)
    );
    assert_eq!(
        value(
            &text,
            &format!("roomengine_room_members{{room_id=\"{}\"}}", ids[6])
        ),
        Some(2.0)
    );
    assert!(
        fake.with(|s| s.arrivals.len()) - before <= 1,
        "ready only after the pass"
    );
    // meet-06 is forgotten on schedule after the restart too.
    r.exporter
        .wait_for(Duration::from_secs(5), "meet-06 forgotten", |t| {
            series_of(t, &ids[5]).is_empty()
        })
        .await;
}

#[test]
fn a_state_file_that_is_not_a_room_set_stops_the_start_and_is_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("exporter.yaml");
    std::fs::write(
        &config,
        "app:\n  sdkappid: 1400000000\n  identifier: administrator\n  endpoint: http://127.0.0.1:9\nrooms: []\ncallbacks:\n  listen_address: 127.0.0.1:0\n",
    )
    .unwrap();
    let state = dir.path().join("roomengine-exporter.db");
    std::fs::write(&state, "not a database".repeat(100)).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_roomengine-exporter"))
        .arg("--config.file")
        .arg(&config)
        .arg("--web.listen-address")
        .arg("127.0.0.1:0")
        .env("ROOMENGINE_SECRET_KEY", "k")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!(
            "roomengine-exporter: callbacks.state_file {}: cannot read it as a room set (file is not a database); it was left untouched: move it away to start with an empty room set",
            state.display()
        )),
        "{stderr}"
    );
    assert_eq!(
        std::fs::read_to_string(&state).unwrap(),
        "not a database".repeat(100)
    );
}

/// POSTs `chunks` chunks of `size` spaces, chunked; the answer's status line.
/// Sends only the head of a POST declaring a `length`-byte body and reads
/// the answer: a client still writing a big body could lose it to a reset.
async fn declared_post(addr: SocketAddr, query: &str, length: usize) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "POST /callback?{query} HTTP/1.1\r\nHost: x\r\nContent-Length: {length}\r\nConnection: close\r\n\r\n"
    );
    tcp.write_all(head.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), tcp.read_to_end(&mut answer)).await;
    String::from_utf8_lossy(&answer).into_owned()
}

async fn chunked_post(addr: SocketAddr, query: &str, chunks: usize, size: usize) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let head = format!("POST /callback?{query} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n");
    tcp.write_all(head.as_bytes()).await.unwrap();
    let chunk = format!("{size:x}\r\n{}\r\n", " ".repeat(size));
    for _ in 0..chunks {
        // The receiver may answer and close before we are done sending.
        if tcp.write_all(chunk.as_bytes()).await.is_err() {
            break;
        }
    }
    let _ = tcp.write_all(b"0\r\n\r\n").await;
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), tcp.read_to_end(&mut answer)).await;
    String::from_utf8_lossy(&answer)
        .lines()
        .next()
        .unwrap_or("")
        .to_owned()
}

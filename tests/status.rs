//! The status page against the real binary and the fake API: hostile names
//! from the API and from callbacks render as text, refused callbacks are
//! listed with their reason and source, the text and JSON forms carry the
//! same rows, basic auth guards every status path, and no secret reaches
//! `/`, a room page, `/status.json` or `/config` under any fault of the matrix.

mod common;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::{
    assert_no_secrets, create_body, free_port, now_ms, Exporter, Fake, Fault, CREATE, KEY, SDKAPPID,
};
use serde_json::Value;

const TOKEN: &str = "status-callback-token-never-shown-8812";
const REDIS_PASSWORD: &str = "status-redis-password-never-shown-5521";
const SCRIPT: &str = "<script>alert(1)</script>";
const SCRIPT_ESCAPED: &str = "&lt;script&gt;alert(1)&lt;/script&gt;";
/// A room ID a callback may carry (IDs are only length-checked).
const HOSTILE_ID: &str = "<img src=x onerror=alert(7)>";
const HOSTILE_ID_ESCAPED: &str = "&lt;img src=x onerror=alert(7)&gt;";
const HOSTILE_ID_PATH: &str = "%3Cimg%20src%3Dx%20onerror%3Dalert%287%29%3E";

/// An exporter polling `rooms` at the fake, with a signed callback receiver
/// (token from a file) and `extra` appended to its `callbacks:` section.
fn start(
    fake: &Fake,
    rooms: &[String],
    extra: &str,
    args: &[&str],
) -> (Exporter, SocketAddr, tempfile::TempDir) {
    let secrets = tempfile::tempdir().unwrap();
    let token_file = secrets.path().join("token");
    std::fs::write(&token_file, TOKEN).unwrap();
    let port = free_port();
    let rooms_yaml: String = rooms.iter().map(|r| format!("  - {r}\n")).collect();
    let yaml = format!(
        "app:\n  sdkappid: {SDKAPPID}\n  identifier: administrator\n  endpoint: {}\n  usersig_ttl: 1h\n\
         polling:\n  interval: 1s\n  rate_limit: 20\n  timeout: 3200ms\nrooms:\n{rooms_yaml}\
         callbacks:\n  listen_address: 127.0.0.1:{port}\n  token_file: {}\n{extra}",
        fake.endpoint(),
        token_file.display()
    );
    let exporter = Exporter::start_yaml(&yaml, args);
    (exporter, ([127, 0, 0, 1], port).into(), secrets)
}

fn signed(at_secs: u64) -> String {
    format!(
        "&Sign={}&RequestTime={at_secs}",
        roomengine_exporter::callbacks::auth::sign_of(TOKEN, &at_secs.to_string())
    )
}

async fn get_with(exporter: &Exporter, path: &str, accept: &str) -> (u16, String) {
    let r = reqwest::Client::new()
        .get(format!("http://{}{path}", exporter.addr))
        .header("accept", accept)
        .send()
        .await
        .expect("exporter answers");
    (r.status().as_u16(), r.text().await.unwrap_or_default())
}

async fn status_json(exporter: &Exporter, query: &str) -> Value {
    let (status, body) = exporter.get(&format!("/status.json{query}")).await;
    assert_eq!(status, 200, "{body}");
    serde_json::from_str(&body).expect("/status.json is JSON")
}

async fn wait_json(exporter: &Exporter, query: &str, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
    let start = Instant::now();
    loop {
        let v = status_json(exporter, query).await;
        if pred(&v) {
            return v;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "{what}: not within 30 s:\n{v:#}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_names_render_as_text_and_refused_callbacks_are_listed_with_their_reason() {
    let fake = Fake::start(3).await;
    fake.with(|s| s.rooms.get_mut("room-0001").unwrap().info["RoomName"] = SCRIPT.into());
    let rooms = common::rooms(3);
    let (exporter, callbacks, _secrets) = start(&fake, &rooms, "", &[]);
    exporter.wait_ready(Duration::from_secs(20)).await;

    // A callback announces a room whose ID and name are both markup.
    let mut body = create_body(HOSTILE_ID, now_ms());
    body["RoomInfo"]["RoomName"] = "<b onmouseover=alert(2)>x</b>".into();
    let now = now_ms() / 1000;
    let (status, _) = common::post_callback(callbacks, CREATE, &body, &signed(now)).await;
    assert_eq!(status, 200);
    // Three refusals: a bad signature, another app, a GET.
    let bad_sign = format!("&Sign=deadbeef{}&RequestTime={now}", "0".repeat(56));
    assert_eq!(
        common::post_callback(callbacks, CREATE, &body, &bad_sign).await.0,
        401
    );
    let other_app = reqwest::Client::new()
        .post(format!(
            "http://{callbacks}/callback?SdkAppid=1400000009&CallbackCommand={CREATE}{}",
            signed(now)
        ))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(other_app.status(), 403);
    let get = reqwest::get(format!("http://{callbacks}/callback"))
        .await
        .unwrap();
    assert_eq!(get.status(), 405);

    let v = wait_json(&exporter, "", "the four rooms with names", |v| {
        v["rooms"]["known"] == 4
            && v["table"]["rows"]
                .as_array()
                .is_some_and(|r| r.iter().all(|r| r["name"] != ""))
    })
    .await;
    let refused: Vec<(&str, u64)> = v["recent_refused"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["reason"].as_str().unwrap(), r["status"].as_u64().unwrap()))
        .collect();
    assert_eq!(
        refused,
        vec![("method", 405), ("sdkappid", 403), ("signature", 401)],
        "newest first"
    );
    assert!(v["recent_refused"]
        .as_array()
        .unwrap()
        .iter()
        .all(|r| r["source"].as_str().is_some_and(|s| s.starts_with("127.0.0.1:"))));
    let callback = &v["recent_callbacks"][0];
    assert_eq!(
        (&callback["command"], &callback["room_id"], &callback["outcome"]),
        (
            &Value::from(CREATE),
            &Value::from(HOSTILE_ID),
            &Value::from("applied")
        )
    );
    let learnt: BTreeSet<(String, String)> = v["table"]["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["room_id"].as_str().unwrap().to_owned(),
                r["learnt"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert!(
        learnt.contains(&(HOSTILE_ID.to_owned(), "callback".to_owned())),
        "{learnt:?}"
    );
    assert!(
        learnt.contains(&("room-0002".to_owned(), "configured".to_owned())),
        "{learnt:?}"
    );

    let (status, page) = exporter.get("/").await;
    assert_eq!(status, 200);
    for raw in [SCRIPT, "<img src=x", "<b onmouseover"] {
        assert!(!page.contains(raw), "{raw} unescaped on /");
    }
    assert!(page.contains(&format!("<td>{SCRIPT_ESCAPED}</td>")), "{page}");
    assert!(page.contains(&format!(
        "<a href=\"/rooms/{HOSTILE_ID_PATH}\">{HOSTILE_ID_ESCAPED}</a>"
    )));
    assert!(page.contains("&lt;b onmouseover=alert(2)&gt;x&lt;/b&gt;"));
    for reason in [
        "<td>signature</td><td>401</td><td>127.0.0.1:",
        "<td>sdkappid</td><td>403</td>",
        "<td>method</td><td>405</td>",
    ] {
        assert!(page.contains(reason), "refused row {reason:?} on /");
    }
    assert!(
        !page.contains(TOKEN) && !page.contains("deadbeef"),
        "no token or Sign on the page"
    );

    let (status, room) = exporter.get(&format!("/rooms/{HOSTILE_ID_PATH}")).await;
    assert_eq!(status, 200);
    assert!(!room.contains("<img src=x") && room.contains(&format!("<h1>Room {HOSTILE_ID_ESCAPED}</h1>")));
    assert!(
        room.contains(&format!("<td>{CREATE}</td>")),
        "the create callback in its events"
    );
    assert!(room.contains("<td>RoomName</td><td>&lt;b onmouseover=alert(2)&gt;x&lt;/b&gt;</td><td>callback Room.CallbackAfterCreateRoom</td>"));
    let (status, polled) = exporter.get("/rooms/room-0001").await;
    assert_eq!(status, 200);
    assert!(polled.contains(&format!(
        "<td>RoomName</td><td>{SCRIPT_ESCAPED}</td><td>poll</td>"
    )));
    assert!(
        polled.contains("roomengine_room_members{room_id=&quot;room-0001&quot;} 1\n"),
        "its series"
    );
    assert_eq!(exporter.get("/rooms/room-9999").await.0, 404);

    // The same rows as text, for curl.
    let (status, text) = get_with(&exporter, "/?sort=room&order=asc", "text/plain").await;
    assert_eq!(status, 200);
    assert!(text.starts_with("version: 0.1.0\n"), "{text}");
    assert!(
        text.contains("rooms: 4 known, 3 configured, 1 discovered"),
        "{text}"
    );
    let table: Vec<&str> = text
        .lines()
        .skip_while(|l| !l.starts_with("ROOM "))
        .skip(1)
        .take_while(|l| !l.is_empty())
        .map(|l| l.split_whitespace().next().unwrap())
        .collect();
    assert_eq!(
        table,
        vec!["<img", "room-0001", "room-0002", "room-0003"],
        "{text}"
    );
    assert!(text.contains("refused callbacks (newest first):"));
    drop(fake);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn basic_auth_guards_every_status_path() {
    const PASSWORD: &str = "status-page-password";
    let fake = Fake::start(2).await;
    let dir = tempfile::tempdir().unwrap();
    let web = dir.path().join("web.yml");
    std::fs::write(
        &web,
        format!(
            "basic_auth_users:\n  alice: {}\n",
            bcrypt::hash(PASSWORD, 4).unwrap()
        ),
    )
    .unwrap();
    let exporter = Exporter::start(
        &fake.endpoint(),
        "  interval: 1s",
        &common::rooms(2),
        &["--web.config.file", web.to_str().unwrap()],
    );
    let client = reqwest::Client::new();
    let url = |path: &str| format!("http://{}{path}", exporter.addr);
    let start = Instant::now();
    while client
        .get(url("/-/ready"))
        .basic_auth("alice", Some(PASSWORD))
        .send()
        .await
        .map(|r| r.status())
        .ok()
        != Some(reqwest::StatusCode::OK)
    {
        assert!(start.elapsed() < Duration::from_secs(20), "not ready");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for path in [
        "/",
        "/?full=1&page=2",
        "/status.json",
        "/status.json?q=room",
        "/config",
        "/rooms/room-0001",
        "/rooms/nope",
    ] {
        let anonymous = client
            .get(url(path))
            .header("accept", "text/plain")
            .send()
            .await
            .unwrap();
        assert_eq!(anonymous.status(), 401, "{path} without a password");
        let wrong = client
            .get(url(path))
            .basic_auth("alice", Some("wrong"))
            .send()
            .await
            .unwrap();
        assert_eq!(wrong.status(), 401, "{path} with a wrong password");
        let right = client
            .get(url(path))
            .basic_auth("alice", Some(PASSWORD))
            .send()
            .await
            .unwrap();
        let want = if path == "/rooms/nope" { 404 } else { 200 };
        assert_eq!(right.status(), want, "{path} with the password");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_reaches_the_status_paths_under_any_fault() {
    let faults = [
        ("room-0001", Fault::Slow(Duration::from_secs(5))),
        ("room-0002", Fault::Http502Html),
        ("room-0003", Fault::TruncatedJson),
        ("room-0004", Fault::MalformedJson),
        ("room-0005", Fault::ConnectionCut),
        ("room-0006", Fault::huge_body("room-0006", 5 << 20, true)),
        ("room-0007", Fault::Trickle),
        (
            "room-0008",
            Fault::Code {
                code: 100001,
                percent: 100,
            },
        ),
        (
            "room-0009",
            Fault::Code {
                code: 60007,
                percent: 100,
            },
        ),
        (
            "room-0010",
            Fault::Code {
                code: 70001,
                percent: 100,
            },
        ),
    ];
    let fake = Fake::start(12).await;
    for (id, fault) in &faults {
        fake.set_fault(&[id], Some(fault.clone()));
    }
    let secrets = tempfile::tempdir().unwrap();
    let password_file = secrets.path().join("redis-password");
    std::fs::write(&password_file, REDIS_PASSWORD).unwrap();
    // The room set in a Redis that is not there: its backend fails too.
    let redis = format!(
        "  redis_url: redis://127.0.0.1:{}/0\n  redis_password_file: {}\n",
        free_port(),
        password_file.display()
    );
    let (exporter, callbacks, _token) = start(&fake, &common::rooms(12), &redis, &[]);
    let begun = Instant::now();
    while exporter.get("/-/healthy").await.0 != 200 {
        assert!(
            begun.elapsed() < Duration::from_secs(20),
            "not listening; log:\n{}",
            exporter.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let paths = [
        "/",
        "/?full=1",
        "/status.json",
        "/config",
        "/rooms/room-0001",
        "/rooms/room-0010",
        "/rooms/room-0012",
    ];
    let mut seen = String::new();
    let mut codes = BTreeSet::new();
    let start = Instant::now();
    let wanted: BTreeSet<&str> = [
        "http_502",
        "decode",
        "body_too_large",
        "timeout",
        "100001",
        "60007",
        "70001",
    ]
    .into();
    while start.elapsed() < Duration::from_secs(40)
        && !wanted.is_subset(&codes.iter().map(String::as_str).collect())
    {
        let now = now_ms();
        // A callback the broken state backend cannot store, and one with a wrong Sign.
        common::post_callback(
            callbacks,
            CREATE,
            &create_body("meet-1", now),
            &signed(now / 1000),
        )
        .await;
        common::post_callback(
            callbacks,
            CREATE,
            &create_body("meet-2", now),
            "&Sign=00&RequestTime=1",
        )
        .await;
        for path in paths {
            for accept in ["text/html", "text/plain", "application/json"] {
                let (status, body) = get_with(&exporter, path, accept).await;
                assert_eq!(status, 200, "{path}");
                seen.push_str(&body);
            }
        }
        let v = status_json(&exporter, "").await;
        codes.extend(
            v["recent_api_errors"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| e["code"].as_str().unwrap().to_owned()),
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(
        wanted.is_subset(&codes.iter().map(String::as_str).collect()),
        "API errors listed: {codes:?}"
    );
    let v = status_json(&exporter, "").await;
    assert_eq!(
        v["state"]["up"], false,
        "the Redis backend is down: {:#}",
        v["state"]
    );
    assert_eq!(v["state"]["ha"], true);
    assert!(v["recent_callbacks"]
        .as_array()
        .unwrap()
        .iter()
        .any(|c| c["outcome"] == "failed" && c["status"] == 503));
    assert!(v["recent_refused"]
        .as_array()
        .unwrap()
        .iter()
        .any(|c| c["reason"] == "signature"));
    let (_, config) = exporter.get("/config").await;
    assert_eq!(config.matches("<secret>").count(), 3, "{config}");

    let usersigs = fake.with(|s| s.usersigs.clone());
    assert_no_secrets(&seen, &usersigs);
    assert!(!seen.contains(KEY));
    assert!(!seen.contains(TOKEN), "the callback token leaked");
    assert!(!seen.contains(REDIS_PASSWORD), "the Redis password leaked");
    assert!(seen.len() > 100_000, "the pages were read ({} bytes)", seen.len());
}

//! Hot reload of the real binary (SIGHUP and `POST /-/reload`) against the
//! independent fake: room list changes, polling settings, credentials,
//! rooms_file, and an invalid file that must change nothing.

mod common;

use std::time::Duration;

use common::{config_yaml, rooms, value, Exporter, Fake, KEY};

const SLOW_POLLING: &str = "  interval: 60s\n  rate_limit: 20\n  timeout: 4s";

fn up(room: &str) -> String {
    format!("roomengine_room_up{{room_id=\"{room}\"}}")
}

fn calls(fake: &Fake, room: &str) -> usize {
    fake.with(|s| s.calls_per_room.get(room).copied().unwrap_or(0))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_adds_removes_and_keeps_rooms() {
    let fake = Fake::start(6).await;
    let all = rooms(6);
    let exporter = Exporter::start(&fake.endpoint(), SLOW_POLLING, &all[..3], &[]);
    exporter.wait_ready(Duration::from_secs(10)).await;
    let before = exporter.metrics().await;
    let loaded_at = value(&before, "roomengine_config_last_reload_success_timestamp_seconds").unwrap();
    assert_eq!(
        value(&before, "roomengine_config_last_reload_successful"),
        Some(1.0)
    );

    // room-0001 goes, room-0002/3 stay, room-0004/5 come; the budget drops to 10/s.
    let new_rooms = [&all[1..3], &all[3..5]].concat();
    let polling = SLOW_POLLING.replace("rate_limit: 20", "rate_limit: 10");
    std::fs::write(
        exporter.config_path(),
        config_yaml(&fake.endpoint(), &polling, &new_rooms),
    )
    .unwrap();
    tokio::time::sleep(Duration::from_millis(1100)).await; // the success timestamp has 1 s resolution
    let (status, body) = exporter.post("/-/reload").await;
    assert_eq!(
        (status, body.as_str()),
        (
            200,
            "configuration reloaded: 2 rooms added, 1 removed, polling.rate_limit changed\n"
        )
    );

    // The interval is 60 s: only the reload can have polled the new rooms this soon.
    let text = exporter
        .wait_for(Duration::from_secs(3), "new rooms polled at once", |t| {
            value(t, &up("room-0004")) == Some(1.0) && value(t, &up("room-0005")) == Some(1.0)
        })
        .await;
    assert_eq!(
        value(&text, "roomengine_room_members{room_id=\"room-0005\"}"),
        Some(5.0)
    );
    assert!(
        !text.contains("\"room-0001\""),
        "removed room still exposed:\n{text}"
    );
    assert_eq!(value(&text, &up("room-0002")), Some(1.0));
    assert_eq!(value(&text, "roomengine_rooms_configured"), Some(4.0));
    assert_eq!(
        value(&text, "roomengine_rate_limit_requests_per_second"),
        Some(10.0)
    );
    assert!(value(&text, "roomengine_config_last_reload_success_timestamp_seconds").unwrap() > loaded_at);
    // Kept rooms kept their turn: polled once (at start), not again by the reload.
    assert_eq!((calls(&fake, "room-0002"), calls(&fake, "room-0004")), (1, 1));
    let polled_0001 = calls(&fake, "room-0001");

    // GET is not a reload.
    let (status, _) = exporter.get("/-/reload").await;
    assert_eq!(status, 405);

    // A shorter interval takes effect without restart: the kept rooms are polled again soon.
    let fast = polling.replace("interval: 60s", "interval: 1s");
    std::fs::write(
        exporter.config_path(),
        config_yaml(&fake.endpoint(), &fast, &new_rooms),
    )
    .unwrap();
    exporter.signal("HUP");
    let start = std::time::Instant::now();
    while calls(&fake, "room-0002") < 3 {
        assert!(
            start.elapsed() < Duration::from_secs(6),
            "interval 1s not applied after SIGHUP"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        calls(&fake, "room-0001"),
        polled_0001,
        "a removed room was polled again"
    );
    assert!(
        exporter.log().contains("changes=\"polling.interval changed\""),
        "{}",
        exporter.log()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_reload_changes_nothing() {
    let fake = Fake::start(3).await;
    let polling = "  interval: 1s\n  rate_limit: 20\n  timeout: 4s";
    let exporter = Exporter::start(&fake.endpoint(), polling, &rooms(2), &[]);
    exporter.wait_ready(Duration::from_secs(10)).await;

    let path = exporter.config_path();
    let bad = config_yaml(
        &fake.endpoint(),
        &polling.replace("rate_limit: 20", "rate_limit: 500"),
        &rooms(3),
    )
    .replace("usersig_ttl: 1h", "usersig_ttl: 1h\n  colour: blue");
    std::fs::write(&path, &bad).unwrap();
    let (status, body) = exporter.post("/-/reload").await;
    assert_eq!(status, 500);
    assert_eq!(
        body,
        format!(
            "failed to reload config: {}: app: unknown field `colour`, expected one of `sdkappid`, `identifier`, `secret_key_env`, `secret_key_file`, `region`, `endpoint`, `usersig_ttl` at line 6 column 3\n",
            path.display()
        )
    );
    let bad = config_yaml(
        &fake.endpoint(),
        &polling.replace("rate_limit: 20", "rate_limit: 500"),
        &rooms(3),
    );
    std::fs::write(&path, &bad).unwrap();
    let (status, body) = exporter.post("/-/reload").await;
    assert_eq!(
        (status, body),
        (
            500,
            format!(
                "failed to reload config: {}: polling.rate_limit: 500 exceeds the API limit of 200 calls/s\n",
                path.display()
            )
        )
    );
    assert!(exporter
        .log()
        .contains("polling.rate_limit: 500 exceeds the API limit"));

    // The old configuration keeps running: same rooms, same budget, still polled.
    let seen = calls(&fake, "room-0001");
    let text = exporter
        .wait_for(Duration::from_secs(5), "old rooms still polled", |_| {
            calls(&fake, "room-0001") > seen
        })
        .await;
    assert_eq!(
        value(&text, "roomengine_config_last_reload_successful"),
        Some(0.0)
    );
    assert_eq!(
        value(&text, "roomengine_rate_limit_requests_per_second"),
        Some(20.0)
    );
    assert_eq!(value(&text, "roomengine_rooms_configured"), Some(2.0));
    assert!(!text.contains("room-0003"));
    assert_eq!(calls(&fake, "room-0003"), 0);

    // A good file again: 1, and the change applies.
    std::fs::write(&path, config_yaml(&fake.endpoint(), polling, &rooms(3))).unwrap();
    exporter.signal("HUP");
    let text = exporter
        .wait_for(Duration::from_secs(5), "reload after SIGHUP", |t| {
            value(t, "roomengine_config_last_reload_successful") == Some(1.0)
                && value(t, &up("room-0003")) == Some(1.0)
        })
        .await;
    assert_eq!(value(&text, "roomengine_rooms_configured"), Some(3.0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_credentials_apply_on_the_next_call() {
    let fake = Fake::start(2).await;
    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("secret");
    std::fs::write(&key_file, KEY).unwrap();
    let polling = "  interval: 1s\n  rate_limit: 20\n  timeout: 4s";
    let exporter = Exporter::start(&fake.endpoint(), polling, &rooms(2), &[]);
    let with_key_file = config_yaml(&fake.endpoint(), polling, &rooms(2)).replace(
        "usersig_ttl: 1h",
        &format!("usersig_ttl: 1h\n  secret_key_file: {}", key_file.display()),
    );
    exporter.wait_ready(Duration::from_secs(10)).await;

    // A wrong SecretKey: the fake refuses every UserSig from the next call on (70009).
    std::fs::write(&key_file, "not-the-key").unwrap();
    std::fs::write(exporter.config_path(), &with_key_file).unwrap();
    let (status, body) = exporter.post("/-/reload").await;
    assert_eq!(
        (status, body.as_str()),
        (200, "configuration reloaded: app credentials changed\n")
    );
    let text = exporter
        .wait_for(Duration::from_secs(5), "rooms down with the wrong key", |t| {
            value(t, &up("room-0001")) == Some(0.0) && value(t, &up("room-0002")) == Some(0.0)
        })
        .await;
    assert!(
        value(
            &text,
            "roomengine_api_request_errors_total{api=\"get_room_info\",code=\"70009\"}"
        )
        .unwrap()
            >= 2.0
    );
    assert!(fake.with(|s| s.bad_usersigs) >= 2);

    // The right key again: data resumes, no restart.
    std::fs::write(&key_file, KEY).unwrap();
    exporter.signal("HUP");
    exporter
        .wait_for(Duration::from_secs(5), "rooms up with the right key", |t| {
            value(t, &up("room-0001")) == Some(1.0) && value(t, &up("room-0002")) == Some(1.0)
        })
        .await;
    let log = exporter.log();
    assert!(
        !log.contains(KEY) && !log.contains("not-the-key"),
        "a key leaked into the log:\n{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rooms_file_is_read_again_on_reload() {
    let fake = Fake::start(4).await;
    let exporter = Exporter::start(&fake.endpoint(), SLOW_POLLING, &rooms(1), &[]);
    let rooms_file = exporter.config_path().with_file_name("rooms.txt");
    std::fs::write(&rooms_file, "# made by a tool\nroom-0002\n").unwrap();
    // Relative to the config file's directory.
    let config = config_yaml(&fake.endpoint(), SLOW_POLLING, &rooms(1)) + "rooms_file: rooms.txt\n";
    std::fs::write(exporter.config_path(), config).unwrap();
    exporter.wait_ready(Duration::from_secs(10)).await;
    exporter.signal("HUP");
    exporter
        .wait_for(Duration::from_secs(5), "room from rooms_file", |t| {
            value(t, &up("room-0002")) == Some(1.0)
        })
        .await;

    std::fs::write(&rooms_file, "room-0003\nroom-0004\n").unwrap();
    let (status, body) = exporter.post("/-/reload").await;
    assert_eq!(
        (status, body.as_str()),
        (200, "configuration reloaded: 2 rooms added, 1 removed\n")
    );
    let text = exporter
        .wait_for(Duration::from_secs(5), "rooms_file rewritten", |t| {
            value(t, &up("room-0004")) == Some(1.0)
        })
        .await;
    assert!(!text.contains("\"room-0002\""));
    assert_eq!(value(&text, &up("room-0001")), Some(1.0));
    assert_eq!(value(&text, "roomengine_rooms_configured"), Some(3.0));
}

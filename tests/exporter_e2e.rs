//! End to end: the real binary against the independent fake Room Engine in
//! `common`: values and changes reach /metrics, destroyed rooms, retries,
//! auth failures with one hint, rate-limit back-off, SIGTERM.

mod common;

use std::time::Duration;

use common::{rooms, value, Exporter, Fake};

const FAST: &str = "  interval: 1s\n  rate_limit: 100\n  timeout: 5s";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_rooms_values_and_changes_show_up() {
    let fake = Fake::start(50).await;
    let mut exporter = Exporter::start(&fake.endpoint(), FAST, &rooms(50), &[]);
    exporter.wait_ready(Duration::from_secs(20)).await;
    let text = exporter.metrics().await;
    // The receiver is off, yet its families show at 0 (dashboards need no `or vector(0)`).
    for series in [
        "roomengine_callbacks_total{command=\"other\"}",
        "roomengine_callbacks_rejected_total{reason=\"signature\"}",
        "roomengine_callbacks_rooms_refused_total{reason=\"room_limit\"}",
    ] {
        assert_eq!(value(&text, series), Some(0.0), "{series}");
    }
    for i in 1..=50 {
        let id = format!("room-{i:04}");
        assert_eq!(
            value(&text, &format!("roomengine_room_members{{room_id=\"{id}\"}}")),
            Some(i as f64),
            "{id}"
        );
        assert_eq!(
            value(&text, &format!("roomengine_room_up{{room_id=\"{id}\"}}")),
            Some(1.0)
        );
    }
    assert!(text.contains("roomengine_room_info{room_id=\"room-0007\",room_name=\"name of room-0007\",room_type=\"Conference\",owner=\"owner1\"} 1\n"));
    assert_eq!(value(&text, "roomengine_rooms_configured"), Some(50.0));
    assert_eq!(
        value(&text, "roomengine_rate_limit_requests_per_second"),
        Some(100.0)
    );
    assert!(value(&text, "roomengine_usersig_expiry_timestamp_seconds").unwrap_or(0.0) > 1.7e9);

    fake.with(|s| s.rooms.get_mut("room-0003").unwrap().info["MemberCount"] = 299.into());
    exporter
        .wait_for(Duration::from_secs(5), "changed member count", |t| {
            value(t, "roomengine_room_members{room_id=\"room-0003\"}") == Some(299.0)
        })
        .await;
    assert_eq!(
        fake.with(|s| s.bad_usersigs),
        0,
        "every UserSig verified independently"
    );
    assert!(exporter.terminate().success(), "exit 0 on SIGTERM");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn destroyed_room_keeps_only_exists_and_up() {
    let fake = Fake::start(3).await;
    let exporter = Exporter::start(&fake.endpoint(), FAST, &rooms(3), &[]);
    exporter.wait_ready(Duration::from_secs(10)).await;
    fake.with(|s| s.rooms.get_mut("room-0002").unwrap().gone = true);
    let text = exporter
        .wait_for(Duration::from_secs(5), "exists 0", |t| {
            value(t, "roomengine_room_exists{room_id=\"room-0002\"}") == Some(0.0)
        })
        .await;
    let series: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("room_id=\"room-0002\""))
        .collect();
    assert_eq!(
        series,
        vec![
            "roomengine_room_up{room_id=\"room-0002\"} 0",
            "roomengine_room_exists{room_id=\"room-0002\"} 0"
        ]
    );
    assert!(text.contains("roomengine_api_request_errors_total{api=\"get_room_info\",code=\"100004\"}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn internal_error_once_is_retried_and_recovers() {
    let fake = Fake::start(2).await;
    fake.with(|s| s.rooms.get_mut("room-0001").unwrap().fail_next = vec![100001]);
    let exporter = Exporter::start(
        &fake.endpoint(),
        "  interval: 30s\n  rate_limit: 100\n  timeout: 5s",
        &rooms(2),
        &[],
    );
    exporter.wait_ready(Duration::from_secs(10)).await;
    let text = exporter.metrics().await;
    // Within the first pass: one failure, one retry, and the room is up.
    assert_eq!(
        value(&text, "roomengine_room_up{room_id=\"room-0001\"}"),
        Some(1.0)
    );
    assert_eq!(
        value(
            &text,
            "roomengine_api_request_errors_total{api=\"get_room_info\",code=\"100001\"}"
        ),
        Some(1.0)
    );
    assert_eq!(fake.with(|s| s.calls_per_room["room-0001"]), 2);
    assert_eq!(
        value(&text, "roomengine_api_requests_total{api=\"get_room_info\"}"),
        Some(3.0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_key_counts_70009_and_logs_one_hint() {
    let fake = Fake::start(5).await;
    fake.with(|s| s.force_code = Some(70009));
    let exporter = Exporter::start(&fake.endpoint(), FAST, &rooms(5), &[]);
    exporter.wait_ready(Duration::from_secs(10)).await;
    let text = exporter
        .wait_for(
            Duration::from_secs(10),
            "70009 counted over several passes",
            |t| {
                value(
                    t,
                    "roomengine_api_request_errors_total{api=\"get_room_info\",code=\"70009\"}",
                )
                .unwrap_or(0.0)
                    >= 10.0
            },
        )
        .await;
    assert_eq!(
        value(&text, "roomengine_room_up{room_id=\"room-0001\"}"),
        Some(0.0)
    );
    let log = exporter.log();
    let hints: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("the SecretKey does not belong to sdkappid 1400000000"))
        .collect();
    assert_eq!(hints.len(), 1, "one hint, not one per room per pass:\n{log}");
    assert!(hints[0].contains("code=70009"), "{}", hints[0]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limited_answer_lowers_the_effective_rate() {
    let fake = Fake::start(4).await;
    fake.with(|s| s.rooms.get_mut("room-0002").unwrap().fail_next = vec![60011]);
    let exporter = Exporter::start(
        &fake.endpoint(),
        "  interval: 30s\n  rate_limit: 40\n  timeout: 5s",
        &rooms(4),
        &[],
    );
    exporter.wait_ready(Duration::from_secs(10)).await;
    let text = exporter.metrics().await;
    assert_eq!(
        value(&text, "roomengine_rate_limit_requests_per_second"),
        Some(40.0)
    );
    assert_eq!(
        value(&text, "roomengine_rate_limit_effective_requests_per_second"),
        Some(20.0)
    );
    assert_eq!(
        value(
            &text,
            "roomengine_api_request_errors_total{api=\"get_room_info\",code=\"60011\"}"
        ),
        Some(1.0)
    );
    assert_eq!(
        value(&text, "roomengine_room_up{room_id=\"room-0002\"}"),
        Some(0.0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoints_and_content_type() {
    let fake = Fake::start(1).await;
    let exporter = Exporter::start(&fake.endpoint(), FAST, &rooms(1), &[]);
    exporter.wait_ready(Duration::from_secs(10)).await;
    let resp = reqwest::get(format!("http://{}/metrics", exporter.addr))
        .await
        .unwrap();
    assert_eq!(
        resp.headers()["content-type"],
        "text/plain; version=0.0.4; charset=utf-8"
    );
    let client = reqwest::Client::new();
    let gz = client
        .get(format!("http://{}/metrics", exporter.addr))
        .header("Accept-Encoding", "gzip")
        .send()
        .await
        .unwrap();
    assert_eq!(gz.headers()["content-encoding"], "gzip");
    assert_eq!(exporter.get("/-/healthy").await, (200, "Healthy\n".to_owned()));
    let (status, landing) = exporter.get("/").await;
    assert_eq!(status, 200);
    assert!(landing.contains("href=\"/metrics\""));
    assert_eq!(exporter.get("/nope").await.0, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passes_stretch_when_rooms_do_not_fit_the_interval() {
    // 30 rooms at 10 calls/s need 3 s per pass; the interval asks for 1 s.
    let fake = Fake::start(30).await;
    let exporter = Exporter::start(
        &fake.endpoint(),
        "  interval: 1s\n  rate_limit: 10\n  timeout: 5s",
        &rooms(30),
        &[],
    );
    exporter.wait_ready(Duration::from_secs(10)).await;
    let text = exporter
        .wait_for(Duration::from_secs(15), "a regular pass finished", |t| {
            value(t, "roomengine_api_requests_total{api=\"get_room_info\"}").unwrap_or(0.0) >= 90.0
        })
        .await;
    let sweep = value(&text, "roomengine_sweep_duration_seconds").unwrap_or(0.0);
    println!("stretch: 30 rooms, interval 1s, rate_limit 10: sweep {sweep:.2} s");
    assert!(
        (2.9..4.0).contains(&sweep),
        "the pass lasts rooms / rate_limit = 3 s, not 1 s: {sweep}"
    );
    let log = exporter.log();
    let warnings = log
        .matches("the rooms do not fit in one interval at this rate limit")
        .count();
    assert_eq!(warnings, 1, "{log}");
    // 30 calls at 10 per (1 s + the window's slack, 2-50 ms as round trips vary).
    let pass = log
        .split("pass=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .unwrap_or_default();
    let ms = pass.strip_prefix("3s ").and_then(|ms| ms.strip_suffix("ms"));
    assert!(
        ms.and_then(|ms| ms.parse::<u32>().ok())
            .is_some_and(|ms| (6..=150).contains(&ms)),
        "the shortest pass is 3 s plus three slacks: {pass}\n{log}"
    );
}

/// The leak detectors an operator graphs: alive tasks per runtime and the
/// process metrics, read from /metrics over ten passes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn task_and_process_metrics_stay_within_their_bounds_across_passes() {
    const ROOMS: usize = 10;
    let fake = Fake::start(ROOMS).await;
    let mut exporter = Exporter::start(&fake.endpoint(), FAST, &rooms(ROOMS), &[]);
    exporter.wait_ready(Duration::from_secs(10)).await;
    let tasks = |t: &str, runtime: &str| {
        value(
            t,
            &format!("roomengine_exporter_runtime_tasks{{runtime=\"{runtime}\"}}"),
        )
        .unwrap_or_else(|| panic!("no task gauge for the {runtime} runtime"))
    };
    let mut polling = Vec::new();
    let mut http = Vec::new();
    for _ in 0..20 {
        let text = exporter.metrics().await;
        polling.push(tasks(&text, "polling"));
        http.push(tasks(&text, "http"));
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    println!("tasks over ten passes: polling {polling:?}, http {http:?}");
    // At most one poll per room in flight, one task per connection to the API
    // (no more connections than polls) and the pool's idle reaper; a task
    // leaked per poll would pass this by the second pass.
    assert!(
        polling
            .iter()
            .all(|&n| (1.0..=(2 * ROOMS + 1) as f64).contains(&n)),
        "polling tasks {polling:?}"
    );
    // The SIGHUP watcher plus this test's one kept-alive connection, and
    // whatever else the server keeps: flat, not one per scrape.
    let (first, last) = (http[0], http[http.len() - 1]);
    assert!(first >= 1.0 && last <= first + 1.0, "http tasks {http:?}");

    let text = exporter.metrics().await;
    let rss = value(&text, "process_resident_memory_bytes").expect("process_resident_memory_bytes");
    let proc_rss = exporter.memory_kib("VmRSS") as f64 * 1024.0;
    assert!(
        (rss - proc_rss).abs() < proc_rss * 0.25,
        "process_resident_memory_bytes {rss} against VmRSS {proc_rss}"
    );
    let fds = value(&text, "process_open_fds").expect("process_open_fds");
    let proc_fds = std::fs::read_dir(format!("/proc/{}/fd", exporter.pid()))
        .expect("/proc fd")
        .count() as f64;
    assert!(
        (fds - proc_fds).abs() <= 4.0,
        "process_open_fds {fds} against {proc_fds} in /proc"
    );
    assert!(value(&text, "process_start_time_seconds").unwrap_or(0.0) > 1.7e9);
    assert!(exporter.terminate().success());
}

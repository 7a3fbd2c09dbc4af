//! `/probe?room_id=`: a known room's series, a destroyed room, bad IDs, and
//! 300 simultaneous probes that must still respect the one-second budget.

mod common;

use std::time::{Duration, Instant};

use common::{rooms, value, worst_window, Exporter, Fake};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probe_known_destroyed_and_bad_rooms() {
    let fake = Fake::start(3).await;
    fake.with(|s| s.rooms.get_mut("room-0003").unwrap().gone = true);
    // The probed rooms are not in the polled list.
    let exporter = Exporter::start(
        &fake.endpoint(),
        "  interval: 30s\n  rate_limit: 50\n  timeout: 5s",
        &rooms(1),
        &[],
    );
    exporter.wait_ready(Duration::from_secs(10)).await;

    let (status, text) = exporter.get("/probe?room_id=room-0002").await;
    assert_eq!(status, 200);
    assert_eq!(
        value(&text, "roomengine_room_members{room_id=\"room-0002\"}"),
        Some(2.0)
    );
    assert_eq!(
        value(&text, "roomengine_room_max_members{room_id=\"room-0002\"}"),
        Some(300.0)
    );
    assert_eq!(
        value(&text, "roomengine_room_up{room_id=\"room-0002\"}"),
        Some(1.0)
    );
    assert_eq!(value(&text, "roomengine_probe_success"), Some(1.0));
    assert!(value(&text, "roomengine_probe_duration_seconds").is_some_and(|d| d > 0.0 && d < 5.0));
    assert!(!text.contains("room-0001"), "only the probed room:\n{text}");
    assert!(
        !text.contains("roomengine_api_requests_total"),
        "no exporter self-metrics on /probe"
    );

    let (status, text) = exporter.get("/probe?room_id=room-0003").await;
    assert_eq!(status, 200);
    let samples: Vec<&str> = text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.starts_with("roomengine_probe_duration"))
        .collect();
    assert_eq!(
        samples,
        vec![
            "roomengine_room_up{room_id=\"room-0003\"} 0",
            "roomengine_room_exists{room_id=\"room-0003\"} 0",
            "roomengine_probe_success 0"
        ]
    );

    assert_eq!(
        exporter.get("/probe?room_id=").await,
        (400, "bad room_id: room ID is empty\n".to_owned())
    );
    assert_eq!(
        exporter.get("/probe").await,
        (400, "missing parameter room_id\n".to_owned())
    );
    let long = "x".repeat(49);
    assert_eq!(
        exporter.get(&format!("/probe?room_id={long}")).await,
        (
            400,
            format!("bad room_id: room ID \"{long}\" is 49 bytes, longer than the limit of 48\n")
        )
    );
    // The probe does not add the room to the polled snapshot.
    assert!(!exporter.metrics().await.contains("room-0002"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_hundred_probes_at_once_stay_within_the_budget() {
    let fake = Fake::start(300).await;
    let exporter = Exporter::start(
        &fake.endpoint(),
        "  interval: 1h\n  rate_limit: 20\n  timeout: 5s",
        &rooms(1),
        &[],
    );
    exporter.wait_ready(Duration::from_secs(10)).await;
    let before = fake.with(|s| s.arrivals.len());

    let client = reqwest::Client::new();
    let started = Instant::now();
    let probes = (1..=300).map(|i| {
        let client = client.clone();
        let url = format!("http://{}/probe?room_id=room-{i:04}", exporter.addr);
        async move {
            let resp = client
                .get(url)
                .header("X-Prometheus-Scrape-Timeout-Seconds", "3")
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status(), 200);
            let text = resp.text().await.unwrap();
            value(&text, "roomengine_probe_success") == Some(1.0)
        }
    });
    let results = futures_join_all(probes).await;
    let slowest = started.elapsed();
    let ok = results.iter().filter(|s| **s).count();

    let arrivals: Vec<Instant> = fake.with(|s| s.arrivals[before..].to_vec());
    let worst = worst_window(&arrivals);
    println!("probe: 300 probes, scrape timeout 3 s, rate_limit 20: {ok} succeeded, {} calls, worst one-second window {worst}, all answered in {slowest:?}", arrivals.len());
    assert!(worst <= 20, "a one-second window held {worst} calls");
    assert!(ok >= 30, "the budget served only {ok} probes in 2.5 s");
    assert!(ok < 300, "the budget cannot serve 300 probes in 3 s");
    assert!(
        slowest < Duration::from_secs(4),
        "probes must answer within the scrape timeout, took {slowest:?}"
    );
}

/// Runs futures concurrently on the current task (no extra dependency).
async fn futures_join_all<F: std::future::Future<Output = bool> + Send + 'static>(
    futs: impl Iterator<Item = F>,
) -> Vec<bool> {
    let handles: Vec<_> = futs.map(tokio::spawn).collect();
    let mut out = Vec::with_capacity(handles.len());
    for h in handles {
        out.push(h.await.unwrap());
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probe_disabled_answers_404_with_the_reason() {
    let fake = Fake::start(1).await;
    let polling = "  interval: 30s\n  rate_limit: 50\n  timeout: 5s\nprobe:\n  enabled: false";
    let exporter = Exporter::start(&fake.endpoint(), polling, &rooms(1), &[]);
    exporter.wait_ready(Duration::from_secs(10)).await;
    assert_eq!(
        exporter.get("/probe?room_id=room-0001").await,
        (404, "probing is disabled (probe.enabled: false)\n".to_owned())
    );
    assert_eq!(fake.with(|s| s.arrivals.len()), 1, "only the poll, no probe call");
}

//! The watch tier end to end, counted at the fake API: a room at 90% of its
//! MaxMemberCount is polled about every `polling.watch.interval`, a room at
//! 10% once per `polling.interval`; the tier's metrics say so; a reload that
//! turns the tier off stops the extra polls.

mod common;

use std::time::{Duration, Instant};

use common::{config_yaml, rooms, value, Exporter, Fake};

const POLLING: &str = "  interval: 5s\n  rate_limit: 20\n  timeout: 5s\n  watch:\n    interval: 1s";

/// get_room_info calls for `room` that arrived in the `window` from now.
async fn calls_in(fake: &Fake, room: &str, window: Duration) -> usize {
    let from = Instant::now();
    tokio::time::sleep(window).await;
    fake.with(|s| {
        s.room_arrivals
            .get(room)
            .map_or(0, |a| a.iter().filter(|t| **t >= from).count())
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_room_near_capacity_is_polled_every_watch_interval() {
    let fake = Fake::start(2).await;
    fake.with(|s| {
        s.rooms.get_mut("room-0001").unwrap().info["MemberCount"] = 270.into();
        s.rooms.get_mut("room-0002").unwrap().info["MemberCount"] = 30.into();
    });
    let exporter = Exporter::start(&fake.endpoint(), POLLING, &rooms(2), &[]);
    exporter.wait_ready(Duration::from_secs(10)).await;
    let window = Duration::from_secs(10);
    let (hot, cold) = tokio::join!(
        calls_in(&fake, "room-0001", window),
        calls_in(&fake, "room-0002", window)
    );
    println!("in 10 s: room at 90% polled {hot} times, room at 10% {cold} times");
    // About one poll a second (watch and pass together), against one per 5 s pass.
    assert!((8..=14).contains(&hot), "room at 90%: {hot} polls in 10 s");
    assert!((1..=3).contains(&cold), "room at 10%: {cold} polls in 10 s");

    let text = exporter.metrics().await;
    assert!(text.contains("\nroomengine_rooms_watched 1\n"), "{text}");
    let watch_polls = value(&text, "roomengine_polls_total{tier=\"watch\"}").unwrap_or(0.0);
    let pass_polls = value(&text, "roomengine_polls_total{tier=\"pass\"}").unwrap_or(0.0);
    assert!(watch_polls >= 6.0, "watch polls {watch_polls}");
    assert!((4.0..=8.0).contains(&pass_polls), "pass polls {pass_polls}");

    // Turned off by a reload: the room at 90% is back to one poll per pass.
    let off = POLLING.replace("    interval: 1s", "    enabled: false");
    std::fs::write(
        exporter.config_path(),
        config_yaml(&fake.endpoint(), &off, &rooms(2)),
    )
    .unwrap();
    let (status, body) = exporter.post("/-/reload").await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("polling.watch changed"), "{body}");
    // Let a watch poll already started end.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let hot = calls_in(&fake, "room-0001", window).await;
    assert!(
        (1..=3).contains(&hot),
        "room at 90% with the tier off: {hot} polls in 10 s"
    );
    let text = exporter.metrics().await;
    assert!(text.contains("\nroomengine_rooms_watched 0\n"), "{text}");
}

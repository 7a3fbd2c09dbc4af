//! Series control at scale, on the store's exact scrape text: the top-N
//! choice of `metrics.room_series_limit` (configured rooms always kept),
//! re-chosen at most every 10 s (an injected clock, no sleeps), the
//! aggregates over every room, `metrics.families` and room lifetimes.

use std::time::{Duration, Instant};

use roomengine_exporter::api::model::RoomInfo;
use roomengine_exporter::config::MetricsConfig;
use roomengine_exporter::room::{Field, Fields, RoomUpdate};
use roomengine_exporter::store::Store;

fn info(members: u64, max: u64, room_type: &str, status: &str) -> RoomInfo {
    RoomInfo {
        member_count: members,
        max_member_count: max,
        room_type: room_type.into(),
        room_status: status.into(),
        ..RoomInfo::default()
    }
}

/// The room families and the aggregates, as /metrics serves them.
fn scrape_at(store: &Store, now: Instant) -> String {
    let mut out = Vec::new();
    for piece in store.scrape_at(now) {
        out.extend_from_slice(&piece);
    }
    out.extend_from_slice(&store.aggregates());
    String::from_utf8(out).expect("UTF-8")
}

/// The lines of `text` that start with `prefix`.
fn lines<'a>(text: &'a str, prefix: &str) -> Vec<&'a str> {
    text.lines().filter(|l| l.starts_with(prefix)).collect()
}

fn limited(limit: usize) -> MetricsConfig {
    MetricsConfig {
        room_series_limit: limit,
        ..MetricsConfig::default()
    }
}

/// `conf-1` configured (nearly empty), `r0`..`r9` discovered with 0%..90% of 100.
fn ten_rooms(limit: usize) -> Store {
    let store = Store::new(&["conf-1"]);
    store.configure(&limited(limit), &["conf-1"]);
    let others: Vec<String> = (0..10).map(|i| format!("r{i}")).collect();
    store.add_rooms(&others);
    store.record_success("conf-1", info(1, 100, "Conference", "Running"), None, 1.0);
    for (i, room) in others.iter().enumerate() {
        store.record_success(room, info(i as u64 * 10, 100, "Conference", "Running"), None, 1.0);
    }
    store
}

#[test]
fn a_limit_shows_the_configured_rooms_and_the_fullest_others() {
    let store = ten_rooms(3);
    let text = scrape_at(&store, Instant::now());
    assert_eq!(
        lines(&text, "roomengine_room_members{"),
        vec![
            "roomengine_room_members{room_id=\"conf-1\"} 1",
            "roomengine_room_members{room_id=\"r7\"} 70",
            "roomengine_room_members{room_id=\"r8\"} 80",
            "roomengine_room_members{room_id=\"r9\"} 90",
        ]
    );
    assert_eq!(lines(&text, "roomengine_room_up{").len(), 4);
    // Hidden rooms still count.
    assert_eq!(
        lines(&text, "roomengine_members"),
        vec!["roomengine_members{room_type=\"Conference\"} 451"]
    );
}

#[test]
fn ties_fall_the_same_way_whatever_order_the_rooms_came_in() {
    // Twenty equally empty rooms, a limit of 5: the choice among the ties
    // must not depend on the order rooms were added (a restart loads them in
    // another order than the callbacks brought them).
    let rooms: Vec<String> = (0..20).map(|i| format!("tie-{i:02}")).collect();
    let shown = |order: &[String]| {
        let store = Store::new::<&str>(&[]);
        store.configure(&limited(5), &[] as &[&str]);
        store.add_rooms(order);
        for room in order {
            store.record_success(room, info(0, 100, "Conference", "Running"), None, 1.0);
        }
        let text = scrape_at(&store, Instant::now());
        let mut ids: Vec<String> = lines(&text, "roomengine_room_members{")
            .iter()
            .map(|l| l.to_string())
            .collect();
        ids.sort();
        ids
    };
    let forward = shown(&rooms);
    let backward = shown(&rooms.iter().rev().cloned().collect::<Vec<_>>());
    assert_eq!(forward.len(), 5);
    assert_eq!(forward, backward);
}

#[test]
fn without_a_limit_every_room_is_shown() {
    let store = ten_rooms(0);
    let text = scrape_at(&store, Instant::now());
    assert_eq!(lines(&text, "roomengine_room_members{").len(), 11);
}

#[test]
fn ties_rank_by_members_and_rooms_without_capacity_last() {
    let store = Store::new::<&str>(&[]);
    store.configure(&limited(1), &[] as &[&str]);
    store.add_rooms(&["small", "big", "uncapped"]);
    store.record_success("small", info(5, 10, "Conference", "Running"), None, 1.0);
    store.record_success("big", info(50, 100, "Conference", "Running"), None, 1.0);
    store.record_success("uncapped", info(500, 0, "Conference", "Running"), None, 1.0);
    let text = scrape_at(&store, Instant::now());
    assert_eq!(
        lines(&text, "roomengine_room_members{"),
        vec!["roomengine_room_members{room_id=\"big\"} 50"]
    );
}

#[test]
fn the_choice_stands_for_ten_seconds() {
    let store = ten_rooms(3);
    let t0 = Instant::now();
    scrape_at(&store, t0);
    store.record_success("r0", info(100, 100, "Conference", "Running"), None, 2.0);
    let shown = |text: &str| {
        lines(text, "roomengine_room_members{")
            .iter()
            .map(|l| l.split('"').nth(1).unwrap_or_default().to_owned())
            .collect::<Vec<_>>()
    };
    let before = scrape_at(&store, t0 + Duration::from_millis(9_999));
    assert_eq!(shown(&before), ["conf-1", "r7", "r8", "r9"]);
    assert_eq!(
        lines(&before, "roomengine_members"),
        vec!["roomengine_members{room_type=\"Conference\"} 551"]
    );
    let after = scrape_at(&store, t0 + Duration::from_secs(10));
    assert_eq!(shown(&after), ["conf-1", "r0", "r8", "r9"]);
    // A hidden room that is shown again brings all its series back.
    assert!(after.contains("roomengine_room_max_members{room_id=\"r0\"} 100\n"));
    assert!(!after.contains("room_id=\"r7\""));
}

#[test]
fn a_reload_that_lifts_the_limit_shows_every_room_at_the_next_scrape() {
    let store = ten_rooms(3);
    let t0 = Instant::now();
    scrape_at(&store, t0);
    store.configure(&limited(0), &["conf-1"]);
    let text = scrape_at(&store, t0 + Duration::from_secs(1));
    assert_eq!(lines(&text, "roomengine_room_members{").len(), 11);
}

#[test]
fn aggregates_are_exact_for_a_known_set() {
    let store = Store::new(&["a", "b", "c", "d", "e", "f"]);
    store.record_success("a", info(50, 100, "Conference", "Running"), None, 1.0);
    store.record_success("b", info(100, 100, "Conference", "NotStarted"), None, 1.0);
    store.record_success("c", info(3, 0, "Live", "Running"), None, 1.0);
    store.record_success("d", info(7, 10, "Live", "Running"), None, 1.0);
    store.record_gone_at("d", 2_000);
    store.record_success("e", info(1200, 1000, "Conference", "Running"), None, 1.0);
    // "f" is held but nothing is known of it yet: not counted.
    let text = scrape_at(&store, Instant::now());
    let aggregates = &text[text.find("# HELP roomengine_rooms ").expect("aggregates")..];
    let expected = "\
roomengine_rooms{room_type=\"Conference\",status=\"None\"} 0
roomengine_rooms{room_type=\"Conference\",status=\"NotStarted\"} 1
roomengine_rooms{room_type=\"Conference\",status=\"Running\"} 2
roomengine_rooms{room_type=\"Live\",status=\"None\"} 0
roomengine_rooms{room_type=\"Live\",status=\"NotStarted\"} 0
roomengine_rooms{room_type=\"Live\",status=\"Running\"} 1
roomengine_members{room_type=\"Conference\"} 1350
roomengine_members{room_type=\"Live\"} 3
roomengine_rooms_without_capacity 1
roomengine_rooms_full 2
roomengine_room_occupancy_ratio_bucket{le=\"0.5\"} 1
roomengine_room_occupancy_ratio_bucket{le=\"0.8\"} 1
roomengine_room_occupancy_ratio_bucket{le=\"0.9\"} 1
roomengine_room_occupancy_ratio_bucket{le=\"0.95\"} 1
roomengine_room_occupancy_ratio_bucket{le=\"1\"} 2
roomengine_room_occupancy_ratio_bucket{le=\"+Inf\"} 3
roomengine_room_occupancy_ratio_sum 2.7
roomengine_room_occupancy_ratio_count 3
roomengine_room_members_count_bucket{le=\"1\"} 0
roomengine_room_members_count_bucket{le=\"2\"} 0
roomengine_room_members_count_bucket{le=\"5\"} 1
roomengine_room_members_count_bucket{le=\"10\"} 1
roomengine_room_members_count_bucket{le=\"20\"} 1
roomengine_room_members_count_bucket{le=\"50\"} 2
roomengine_room_members_count_bucket{le=\"100\"} 3
roomengine_room_members_count_bucket{le=\"200\"} 3
roomengine_room_members_count_bucket{le=\"500\"} 3
roomengine_room_members_count_bucket{le=\"1000\"} 3
roomengine_room_members_count_bucket{le=\"5000\"} 4
roomengine_room_members_count_bucket{le=\"+Inf\"} 4
roomengine_room_members_count_sum 1353
roomengine_room_members_count_count 4
";
    let samples: String = aggregates
        .lines()
        .filter(|l| !l.starts_with('#') && !l.starts_with("roomengine_room_lifetime"))
        .map(|l| format!("{l}\n"))
        .collect();
    assert_eq!(samples, expected);
    assert!(aggregates.contains("# TYPE roomengine_room_occupancy_ratio histogram\n"));

    // A room leaving the set takes its contribution with it.
    store.remove_rooms(&["e"]);
    let text = scrape_at(&store, Instant::now());
    assert!(text.contains("roomengine_room_members_count_bucket{le=\"+Inf\"} 3\n"));
    assert!(text.contains("roomengine_room_occupancy_ratio_sum 1.5\n"));
    assert!(text.contains("roomengine_rooms_full 1\n"));
    assert!(text.contains("roomengine_rooms{room_type=\"Conference\",status=\"Running\"} 1\n"));
}

#[test]
fn denied_families_are_dropped_and_aggregates_stay() {
    let store = Store::new(&["a"]);
    store.record_success("a", info(5, 10, "Conference", "Running"), None, 1.0);
    let deny = MetricsConfig {
        deny: vec!["roomengine_room_info".into()],
        ..MetricsConfig::default()
    };
    store.configure(&deny, &["a"]);
    let text = scrape_at(&store, Instant::now());
    assert!(!text.contains("roomengine_room_info"), "{text}");
    assert!(text.contains("roomengine_room_members{room_id=\"a\"} 5\n"));
    assert!(text.contains("roomengine_rooms{room_type=\"Conference\",status=\"Running\"} 1\n"));

    let allow = MetricsConfig {
        allow: vec!["roomengine_room_members".into(), "roomengine_room_up".into()],
        deny: vec!["roomengine_room_up".into()],
        ..MetricsConfig::default()
    };
    store.configure(&allow, &["a"]);
    let text = scrape_at(&store, Instant::now());
    let room_types: Vec<&str> = lines(&text, "# TYPE roomengine_room_")
        .into_iter()
        .filter(|l| {
            !l.contains("roomengine_room_members_") && !l.contains("occupancy") && !l.contains("lifetime")
        })
        .collect();
    assert_eq!(room_types, vec!["# TYPE roomengine_room_members gauge"]);
}

/// A create callback with `CreateTime` (seconds) as of `at_ms`.
fn created(create_time: u64, at_ms: u64) -> RoomUpdate {
    RoomUpdate {
        fields: Fields::NONE
            .with(Field::RoomType)
            .with(Field::CreateTime)
            .with(Field::Exists),
        info: RoomInfo {
            room_type: "Conference".into(),
            create_time,
            ..RoomInfo::default()
        },
        exists: true,
        at_ms,
        ..RoomUpdate::default()
    }
}

#[test]
fn a_destroy_callback_observes_the_room_lifetime_once() {
    let store = Store::new(&["a", "b"]);
    store.record_callback("a", &created(1_000, 1_000_000));
    store.record_callback("a", &RoomUpdate::gone(2_800_000));
    // Delivered twice: observed once.
    store.record_callback("a", &RoomUpdate::gone(2_800_000));
    // Created without a CreateTime: the create callback's EventTime counts.
    store.record_callback("b", &created(0, 10_000_000));
    store.record_callback("b", &RoomUpdate::gone(90_000_000));
    let text = scrape_at(&store, Instant::now());
    assert_eq!(
        lines(&text, "roomengine_room_lifetime_seconds"),
        vec![
            "roomengine_room_lifetime_seconds_bucket{le=\"60\"} 0",
            "roomengine_room_lifetime_seconds_bucket{le=\"300\"} 0",
            "roomengine_room_lifetime_seconds_bucket{le=\"900\"} 0",
            "roomengine_room_lifetime_seconds_bucket{le=\"1800\"} 1",
            "roomengine_room_lifetime_seconds_bucket{le=\"3600\"} 1",
            "roomengine_room_lifetime_seconds_bucket{le=\"7200\"} 1",
            "roomengine_room_lifetime_seconds_bucket{le=\"14400\"} 1",
            "roomengine_room_lifetime_seconds_bucket{le=\"28800\"} 1",
            "roomengine_room_lifetime_seconds_bucket{le=\"43200\"} 1",
            "roomengine_room_lifetime_seconds_bucket{le=\"86400\"} 2",
            "roomengine_room_lifetime_seconds_bucket{le=\"+Inf\"} 2",
            "roomengine_room_lifetime_seconds_sum 81800",
            "roomengine_room_lifetime_seconds_count 2",
        ]
    );
    // Destroyed rooms leave the other aggregates.
    assert!(text.contains("roomengine_rooms{room_type=\"Conference\",status=\"None\"} 0\n"));
    assert!(!text.contains("status=\"unknown\""), "{text}");
}

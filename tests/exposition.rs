//! The seed's sample get_room_info answer, decoded and rendered, gives exactly
//! the checked-in fixture (node_exporter style), and destroyed or failing
//! rooms keep only the series the metric contract allows.

use roomengine_exporter::api::model::{Envelope, RoomInfoResponse, SeatUsage};
use roomengine_exporter::store::Store;

fn sample_info() -> roomengine_exporter::api::model::RoomInfo {
    let envelope: Envelope<RoomInfoResponse> =
        serde_json::from_str(include_str!("fixtures/get_room_info_sample.json")).expect("sample decodes");
    assert_eq!(envelope.error_code, 0);
    envelope
        .response
        .and_then(|r| r.room_info)
        .expect("sample has RoomInfo")
}

fn render(store: &Store) -> String {
    let mut out = Vec::new();
    store.render_into(&mut out);
    String::from_utf8(out).expect("utf-8")
}

#[test]
fn sample_response_gives_exactly_the_fixture() {
    let store = Store::new(&["room-test"]);
    store.record_success("room-test", sample_info(), None, 1732585000.25);
    assert_eq!(render(&store), include_str!("fixtures/room-test.prom"));
}

#[test]
fn destroyed_room_keeps_only_exists_and_up() {
    let store = Store::new(&["room-test"]);
    store.record_success("room-test", sample_info(), None, 1732585000.25);
    store.record_gone("room-test");
    let text = render(&store);
    let samples: Vec<&str> = text.lines().filter(|l| !l.starts_with('#')).collect();
    assert_eq!(
        samples,
        vec![
            "roomengine_room_up{room_id=\"room-test\"} 0",
            "roomengine_room_exists{room_id=\"room-test\"} 0"
        ]
    );
}

#[test]
fn failed_poll_keeps_data_and_marks_down() {
    let store = Store::new(&["room-test"]);
    store.record_success("room-test", sample_info(), None, 1732585000.25);
    store.record_failure("room-test");
    let text = render(&store);
    assert!(text.contains("\nroomengine_room_up{room_id=\"room-test\"} 0\n"));
    assert!(text.contains("\nroomengine_room_members{room_id=\"room-test\"} 1\n"));
    assert!(text.contains(
        "\nroomengine_room_last_success_timestamp_seconds{room_id=\"room-test\"} 1732585000.250\n"
    ));
}

#[test]
fn never_successful_room_has_only_up() {
    let store = Store::new(&["room-x"]);
    store.record_failure("room-x");
    let samples: Vec<String> = render(&store)
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(str::to_owned)
        .collect();
    assert_eq!(samples, vec!["roomengine_room_up{room_id=\"room-x\"} 0"]);
}

#[test]
fn seat_usage_series_and_label_escaping() {
    let store = Store::new(&["room-test"]);
    let mut info = sample_info();
    info.room_name = "a \"quoted\" \\ name\nnext".into();
    info.room_status = "Paused".into();
    let seats = SeatUsage {
        occupied: 3,
        locked: 1,
        audio_disabled: 2,
        video_disabled: 0,
    };
    store.record_success("room-test", info, Some(seats), 1.0);
    let text = render(&store);
    for line in [
        "roomengine_room_info{room_id=\"room-test\",room_name=\"a \\\"quoted\\\" \\\\ name\\nnext\",room_type=\"Conference\",owner=\"user2\"} 1",
        "roomengine_room_seats_occupied{room_id=\"room-test\"} 3",
        "roomengine_room_seats_locked{room_id=\"room-test\"} 1",
        "roomengine_room_seats_audio_disabled{room_id=\"room-test\"} 2",
        "roomengine_room_seats_video_disabled{room_id=\"room-test\"} 0",
        // An unknown status: the state set is all zeros.
        "roomengine_room_status{room_id=\"room-test\",status=\"Running\"} 0",
        "roomengine_room_status{room_id=\"room-test\",status=\"None\"} 0",
    ] {
        assert!(text.lines().any(|l| l == line), "missing {line}\n{text}");
    }
}

#[test]
fn rooms_are_grouped_by_family_in_configuration_order() {
    let store = Store::new(&["b", "a"]);
    for id in ["b", "a"] {
        let mut info = sample_info();
        info.room_id = id.into();
        store.record_success(id, info, None, 1.0);
    }
    let text = render(&store);
    let members: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("roomengine_room_members{"))
        .collect();
    assert_eq!(
        members,
        vec![
            "roomengine_room_members{room_id=\"b\"} 1",
            "roomengine_room_members{room_id=\"a\"} 1"
        ]
    );
    assert_eq!(text.matches("# TYPE roomengine_room_members gauge").count(), 1);
}

#[test]
fn rooms_across_shards_each_appear_once_in_order() {
    let ids: Vec<String> = (0..150).map(|i| format!("r{i:03}")).collect();
    let store = Store::new(&ids);
    // Update in reverse and twice, so shard rebuilds happen in every state.
    for id in ids.iter().rev().chain(ids.iter()) {
        let mut info = sample_info();
        info.member_count = id[1..].parse().expect("number");
        store.record_success(id, info, None, 1.0);
    }
    store.record_gone("r064");
    // Every sample room uses seats; the destroyed one no longer counts.
    assert_eq!(store.seat_enabled_rooms(), 149);
    let text = render(&store);
    let members: Vec<String> = text
        .lines()
        .filter(|l| l.starts_with("roomengine_room_members{"))
        .map(str::to_owned)
        .collect();
    let expected: Vec<String> = ids
        .iter()
        .filter(|id| *id != "r064")
        .map(|id| {
            format!(
                "roomengine_room_members{{room_id=\"{id}\"}} {}",
                id[1..].parse::<u32>().unwrap()
            )
        })
        .collect();
    assert_eq!(members, expected);
    assert!(text.contains("\nroomengine_room_exists{room_id=\"r064\"} 0\n"));
}

#[test]
fn reloaded_room_list_drops_keeps_and_adds_rooms() {
    let ids: Vec<String> = (0..70).map(|i| format!("r{i:03}")).collect();
    let store = Store::new(&ids);
    for id in &ids {
        let mut info = sample_info();
        info.member_count = id[1..].parse().expect("number");
        store.record_success(id, info, None, 1.0);
    }
    // Drop r001 and r065 (one in each shard), keep the rest, add two new rooms.
    let mut new_list: Vec<String> = ids
        .iter()
        .filter(|id| *id != "r001" && *id != "r065")
        .cloned()
        .collect();
    new_list.extend(["new-a".to_owned(), "new-b".to_owned()]);
    let changes = store.set_rooms(&new_list);
    assert_eq!(changes.removed.len(), 2);
    assert!(changes.removed.contains(&"r001".to_owned()) && changes.removed.contains(&"r065".to_owned()));
    assert_eq!(changes.added, vec!["new-a", "new-b"]);
    assert_eq!(store.capacity(), 70);
    assert!(!store.contains("r001") && store.contains("new-a") && store.contains("r002"));

    let text = render(&store);
    // Removed rooms lose every series at once; kept rooms keep their data.
    assert!(!text.contains("\"r001\"") && !text.contains("\"r065\""), "{text}");
    assert!(text.contains("\nroomengine_room_members{room_id=\"r002\"} 2\n"));
    assert!(text.contains("\nroomengine_room_members{room_id=\"r069\"} 69\n"));
    // New rooms have no series until their first poll, and are stored after it.
    assert!(!text.contains("\"new-a\""));
    store.record_success("new-a", sample_info(), None, 2.0);
    store.record_success("r001", sample_info(), None, 2.0);
    let text = render(&store);
    assert!(text.contains("\nroomengine_room_up{room_id=\"new-a\"} 1\n"));
    assert!(
        !text.contains("\"r001\""),
        "a poll of a removed room is not stored"
    );
    assert_eq!(
        text.lines()
            .filter(|l| l.starts_with("roomengine_room_up{"))
            .count(),
        69
    );
}

#[test]
fn a_batch_of_callbacks_renders_exactly_as_the_same_callbacks_one_by_one() {
    use roomengine_exporter::api::model::RoomInfo;
    use roomengine_exporter::room::{Field, Fields, RoomUpdate};
    let ids: Vec<String> = (0..200).map(|i| format!("r{i:03}")).collect();
    let (batched, single) = (Store::new(&ids), Store::new(&ids));
    for store in [&batched, &single] {
        for id in ids.iter().step_by(3) {
            store.record_success(id, sample_info(), None, 1.0);
        }
    }
    let members = |count: u64, at_ms: u64| RoomUpdate {
        fields: Fields::NONE.with(Field::Members).with(Field::Exists),
        info: RoomInfo {
            member_count: count,
            ..RoomInfo::default()
        },
        exists: true,
        at_ms,
        ..RoomUpdate::default()
    };
    // Across shards (64 rooms each), a room twice (the newer one wins), a destroy, an unknown room.
    let updates: Vec<(String, RoomUpdate)> = vec![
        ("r199".into(), members(7, 5_000)),
        ("r000".into(), members(3, 5_000)),
        ("r064".into(), members(9, 5_000)),
        ("r000".into(), members(4, 6_000)),
        ("r063".into(), RoomUpdate::gone(5_000)),
        ("r065".into(), members(1, 5_000)),
        ("nobody".into(), members(1, 5_000)),
        ("r128".into(), members(2, 5_000)),
    ];
    batched.record_callbacks(&updates);
    for (room, update) in &updates {
        single.record_callback(room, update);
    }
    let text = render(&batched);
    assert_eq!(text, render(&single));
    assert!(text.contains("roomengine_room_members{room_id=\"r000\"} 4\n"));
    assert!(text.contains("roomengine_room_exists{room_id=\"r063\"} 0\n"));
    assert!(text.contains("roomengine_room_last_callback_timestamp_seconds{room_id=\"r199\"} 5.000\n"));
    assert!(!text.contains("nobody"));
}

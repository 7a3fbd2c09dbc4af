//! The bounded room set end to end (issue 21), the real binary against the
//! fake API: the `callbacks.max_rooms` cap (refusals change neither the
//! state file nor /metrics), the `callbacks.room_ids` filters, their reload,
//! and the `callbacks.max_clock_skew` clamp on receive and on load.

mod common;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use serde_json::json;

use common::{
    create_body, free_port, members_body, now_ms, post_callback, value, Exporter, Fake, CREATE, ENTER,
    SDKAPPID,
};
use roomengine_exporter::api::model::RoomInfo;
use roomengine_exporter::room::{Field, Fields, RoomFacts, RoomUpdate};
use roomengine_exporter::roomset::{Record, SqliteState, StateBackend};

const OK: &str = r#"{"ActionStatus":"OK","ErrorInfo":"","ErrorCode":0}"#;
const DESTROY: &str = "Room.CallbackAfterDestroyRoom";
/// Ten years of milliseconds: an `EventTime` from a clock gone wrong.
const TEN_YEARS_MS: u64 = 10 * 365 * 86_400_000;
const REFUSAL_WARNING: &str = "callbacks named rooms the room set did not take";

/// The exporter with its receiver on `callbacks`, and the port kept so a
/// rewritten config (a reload) can name the same listener.
struct Bounded {
    exporter: Exporter,
    callbacks: SocketAddr,
}

/// exporter.yaml: `rooms` configured, polled every second, the receiver on
/// `port` with `bounds` (indented `callbacks:` lines) added.
fn yaml(fake: &Fake, port: u16, bounds: &str, rooms: &[&str]) -> String {
    format!(
        "app:\n  sdkappid: {SDKAPPID}\n  identifier: administrator\n  endpoint: {}\n  usersig_ttl: 1h\npolling:\n  interval: 1s\n  rate_limit: 20\n  timeout: 4s\nrooms: [{}]\ncallbacks:\n  listen_address: 127.0.0.1:{port}\n{bounds}",
        fake.endpoint(),
        rooms.join(", ")
    )
}

async fn start(fake: &Fake, bounds: &str, rooms: &[&str]) -> Bounded {
    let port = free_port();
    let exporter = Exporter::start_yaml(&yaml(fake, port, bounds, rooms), &[]);
    exporter.wait_ready(Duration::from_secs(10)).await;
    Bounded {
        exporter,
        callbacks: ([127, 0, 0, 1], port).into(),
    }
}

impl Bounded {
    /// A create callback for `id`, which must be answered 200 with Tencent's OK body.
    async fn create(&self, id: &str) {
        let answer = post_callback(self.callbacks, CREATE, &create_body(id, now_ms()), "").await;
        assert_eq!(answer, (200, OK.into()), "create {id}");
    }

    async fn destroy(&self, id: &str) {
        let body = json!({"CallbackCommand": DESTROY, "EventTime": now_ms(), "RoomId": id});
        let answer = post_callback(self.callbacks, DESTROY, &body, "").await;
        assert_eq!(answer, (200, OK.into()), "destroy {id}");
    }

    /// Waits until every room of `ids` was polled (`roomengine_room_up 1`).
    async fn wait_up(&self, ids: &[&str]) -> String {
        self.exporter
            .wait_for(Duration::from_secs(10), &format!("{ids:?} polled"), |t| {
                ids.iter().all(|id| value(t, &up(id)) == Some(1.0))
            })
            .await
    }
}

fn up(id: &str) -> String {
    format!("roomengine_room_up{{room_id=\"{id}\"}}")
}

fn refused(text: &str, reason: &str) -> Option<f64> {
    value(
        text,
        &format!("roomengine_callbacks_rooms_refused_total{{reason=\"{reason}\"}}"),
    )
}

fn roomset_rooms(text: &str, source: &str) -> Option<f64> {
    value(text, &format!("roomengine_roomset_rooms{{source=\"{source}\"}}"))
}

/// Every series line of `room` in a scrape.
fn series_of<'a>(text: &'a str, room: &str) -> Vec<&'a str> {
    let label = format!("room_id=\"{room}\"");
    text.lines().filter(|l| l.contains(&label)).collect()
}

/// The set of series (name and labels, without the value) in a scrape.
fn series_set(text: &str) -> BTreeSet<&str> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| l.rsplit_once(' ').map(|(series, _)| series))
        .collect()
}

fn calls(fake: &Fake, room: &str) -> usize {
    fake.with(|s| s.calls_per_room.get(room).copied().unwrap_or(0))
}

/// The rooms kept in a state file (the exporter must not hold it).
fn kept_rooms(path: &Path) -> Vec<String> {
    let mut state = SqliteState::open(path).expect("state file opens");
    let mut rooms: Vec<String> = state
        .load()
        .expect("state file loads")
        .into_iter()
        .map(|(room, _)| room)
        .collect();
    rooms.sort();
    rooms
}

/// A fake API that knows `ids`, each with `members` of 50.
async fn fake_with(ids: &[&str], members: u64) -> Fake {
    let fake = Fake::start(0).await;
    for id in ids {
        fake.add_room(id, members, 50);
    }
    fake
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rooms_beyond_the_cap_are_answered_ok_and_change_neither_metrics_nor_the_state_file() {
    let ids = ["meet-1", "meet-2", "meet-3", "meet-4", "meet-5"];
    let fake = fake_with(&ids, 3).await;
    fake.add_room("conf-1", 2, 50);
    let mut r = start(&fake, "  max_rooms: 3\n  state_file: state.db\n", &["conf-1"]).await;
    for id in &ids[..3] {
        r.create(id).await;
    }
    let before = r.wait_up(&ids[..3]).await;
    assert_eq!(roomset_rooms(&before, "discovered"), Some(3.0));

    for id in &ids[3..] {
        r.create(id).await;
    }
    // A poll of a taken room would show within the 1 s interval.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let after = r.exporter.metrics().await;
    assert_eq!(refused(&after, "room_limit"), Some(2.0));
    assert_eq!(refused(&after, "filtered"), Some(0.0));
    // The status page lists them among the refused callbacks, answered 200.
    let (status, json) = r.exporter.get("/status.json").await;
    assert_eq!(status, 200);
    let report: serde_json::Value = serde_json::from_str(&json).expect("JSON");
    let listed: Vec<(String, u64)> = report["recent_refused"]
        .as_array()
        .expect("recent_refused")
        .iter()
        .map(|e| {
            (
                e["reason"].as_str().unwrap_or("").to_owned(),
                e["status"].as_u64().unwrap_or(0),
            )
        })
        .collect();
    assert_eq!(
        listed,
        [("room_limit".to_owned(), 200), ("room_limit".to_owned(), 200)],
        "{json}"
    );
    assert_eq!(roomset_rooms(&after, "discovered"), Some(3.0));
    assert_eq!(roomset_rooms(&after, "configured"), Some(1.0));
    assert_eq!(value(&after, "roomengine_roomset_max_rooms"), Some(3.0));
    assert_eq!(value(&after, "roomengine_rooms_discovered"), Some(3.0));
    for id in &ids[3..] {
        assert_eq!(series_of(&after, id), Vec::<&str>::new(), "{id} has no series");
        assert_eq!(calls(&fake, id), 0, "{id} is not polled");
    }
    assert_eq!(
        series_set(&before),
        series_set(&after),
        "the refused creates add or remove no series"
    );
    // Two refusals within a minute: one warning line.
    assert_eq!(
        r.exporter.log().matches(REFUSAL_WARNING).count(),
        1,
        "{}",
        r.exporter.log()
    );

    // The state file holds the 3 taken rooms; after kill -9 the same 3 come back.
    let _ = r.exporter.child.kill();
    let _ = r.exporter.child.wait();
    let state = r.exporter.dir().join("state.db");
    assert_eq!(kept_rooms(&state), ["meet-1", "meet-2", "meet-3"]);
    r.exporter.kill9_and_restart();
    r.exporter.wait_ready(Duration::from_secs(10)).await;
    let text = r.exporter.metrics().await;
    for id in &ids[..3] {
        assert_eq!(value(&text, &up(id)), Some(1.0), "{id} is back and polled");
    }
    for id in &ids[3..] {
        assert_eq!(series_of(&text, id), Vec::<&str>::new(), "{id} stays out");
    }
    assert_eq!(roomset_rooms(&text, "discovered"), Some(3.0));

    // A destroy frees its slot at once: the next create is taken.
    r.destroy("meet-1").await;
    r.create("meet-4").await;
    let text = r.wait_up(&["meet-4"]).await;
    assert_eq!(refused(&text, "room_limit"), Some(0.0));
    assert_eq!(roomset_rooms(&text, "discovered"), Some(3.0));
    assert_eq!(
        series_of(&text, "meet-1"),
        [
            "roomengine_room_up{room_id=\"meet-1\"} 0",
            "roomengine_room_exists{room_id=\"meet-1\"} 0"
        ]
    );
    r.create("meet-5").await;
    let text = r.exporter.metrics().await;
    assert_eq!(refused(&text, "room_limit"), Some(1.0), "full again");
    assert_eq!(series_of(&text, "meet-5"), Vec::<&str>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configured_rooms_are_never_refused_even_when_max_rooms_is_0() {
    let fake = fake_with(&["conf-1", "meet-1"], 2).await;
    let r = start(&fake, "  max_rooms: 0\n", &["conf-1"]).await;
    // A minute ahead (within the skew allowed), so the polls that follow do not replace it.
    let body = members_body("conf-1", 7, now_ms() + 60_000);
    assert_eq!(
        post_callback(r.callbacks, ENTER, &body, "").await,
        (200, OK.into())
    );
    r.create("conf-1").await;
    r.create("meet-1").await;
    let text = r.exporter.metrics().await;
    assert_eq!(
        value(&text, "roomengine_room_members{room_id=\"conf-1\"}"),
        Some(7.0)
    );
    assert_eq!(refused(&text, "room_limit"), Some(1.0), "meet-1 only");
    assert_eq!(series_of(&text, "meet-1"), Vec::<&str>::new());
    assert_eq!(roomset_rooms(&text, "configured"), Some(1.0));
    assert_eq!(roomset_rooms(&text, "discovered"), Some(0.0));
    assert_eq!(value(&text, "roomengine_roomset_max_rooms"), Some(0.0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn room_id_filters_match_whole_ids_deny_wins_and_filtered_callbacks_are_answered_ok() {
    let taken = ["meet-1", "class-12"];
    let filtered = ["class-12x", "xmeet-1", "meet-test-1", "other-1"];
    let fake = fake_with(&[&taken[..], &filtered[..]].concat(), 3).await;
    let bounds = "  room_ids:\n    allow: [\"meet-.*\", \"class-[0-9]+\"]\n    deny: [\"meet-test-.*\"]\n";
    let r = start(&fake, bounds, &[]).await;
    for id in taken.iter().chain(&filtered) {
        r.create(id).await;
    }
    // A member callback names a room too: filtered the same way.
    let body = members_body("other-1", 4, now_ms());
    assert_eq!(
        post_callback(r.callbacks, ENTER, &body, "").await,
        (200, OK.into())
    );
    let text = r.wait_up(&taken).await;
    assert_eq!(refused(&text, "filtered"), Some(5.0));
    assert_eq!(refused(&text, "room_limit"), Some(0.0));
    assert_eq!(roomset_rooms(&text, "discovered"), Some(2.0));
    for id in &filtered {
        assert_eq!(series_of(&text, id), Vec::<&str>::new(), "{id} has no series");
        assert_eq!(calls(&fake, id), 0, "{id} is not polled");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_of_the_filters_forgets_the_rooms_they_refuse_and_an_invalid_regex_keeps_the_old_ones() {
    let fake = fake_with(&["meet-1", "meet-2"], 3).await;
    let r = start(&fake, "", &[]).await;
    r.create("meet-1").await;
    r.create("meet-2").await;
    r.wait_up(&["meet-1", "meet-2"]).await;
    let port = r.callbacks.port();
    let path = r.exporter.config_path();

    let deny_meet_2 = "  room_ids:\n    deny: [\"meet-2\"]\n";
    std::fs::write(&path, yaml(&fake, port, deny_meet_2, &[])).unwrap();
    assert_eq!(
        r.exporter.post("/-/reload").await,
        (
            200,
            "configuration reloaded: callbacks.max_rooms/room_ids/max_clock_skew changed\n".into()
        )
    );
    let text = r
        .exporter
        .wait_for(Duration::from_secs(5), "meet-2 loses its series", |t| {
            series_of(t, "meet-2").is_empty()
        })
        .await;
    assert_eq!(value(&text, &up("meet-1")), Some(1.0));
    assert_eq!(roomset_rooms(&text, "discovered"), Some(1.0));
    assert_eq!(value(&text, "roomengine_rooms_discovered"), Some(1.0));
    r.create("meet-2").await;
    assert_eq!(refused(&r.exporter.metrics().await, "filtered"), Some(1.0));

    // Would refuse meet-1 and let meet-2 in, were it valid.
    let invalid = "  room_ids:\n    deny: [\"(meet-1\"]\n";
    std::fs::write(&path, yaml(&fake, port, invalid, &[])).unwrap();
    assert_eq!(
        r.exporter.post("/-/reload").await,
        (
            500,
            format!(
                "failed to reload config: {}: callbacks.room_ids.deny[0]: \"(meet-1\" is not a valid regular expression: unclosed group\n",
                path.display()
            )
        )
    );
    r.create("meet-2").await;
    let text = r.exporter.metrics().await;
    assert_eq!(
        value(&text, "roomengine_config_last_reload_successful"),
        Some(0.0)
    );
    assert_eq!(refused(&text, "filtered"), Some(2.0), "the old filter applies");
    assert_eq!(series_of(&text, "meet-2"), Vec::<&str>::new());
    assert_eq!(value(&text, &up("meet-1")), Some(1.0), "meet-1 stays");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_time_years_ahead_is_applied_as_of_receipt_so_the_next_poll_wins() {
    let fake = fake_with(&["conf-1"], 2).await;
    let r = start(&fake, "", &["conf-1"]).await;
    let members = "roomengine_room_members{room_id=\"conf-1\"}";
    let body = members_body("conf-1", 9, now_ms() + TEN_YEARS_MS);
    assert_eq!(
        post_callback(r.callbacks, ENTER, &body, "").await,
        (200, OK.into())
    );
    let text = r.exporter.metrics().await;
    assert_eq!(value(&text, members), Some(9.0), "applied at once");
    assert_eq!(value(&text, "roomengine_callbacks_clock_skew_total"), Some(1.0));

    fake.with(|s| {
        s.rooms.get_mut("conf-1").expect("fake room").info["MemberCount"] = 4.into();
    });
    let polls = calls(&fake, "conf-1");
    let text = r
        .exporter
        .wait_for(Duration::from_secs(10), "the poll's 4", |t| {
            value(t, members) == Some(4.0)
        })
        .await;
    // One poll may have been in flight when the fake changed; the next one shows.
    assert!(
        calls(&fake, "conf-1") <= polls + 2,
        "{} polls before the poll's value showed",
        calls(&fake, "conf-1") - polls
    );
    assert_eq!(value(&text, "roomengine_callbacks_clock_skew_total"), Some(1.0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kept_record_stamped_years_ahead_is_clamped_on_load_and_the_poll_wins() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state.db");
    let ahead = now_ms() + TEN_YEARS_MS;
    {
        // As an older version (without the clamp) left it: members 9, years ahead.
        let mut facts = RoomFacts::default();
        let update = RoomUpdate {
            fields: Fields::NONE.with(Field::Members).with(Field::Exists),
            info: RoomInfo {
                member_count: 9,
                ..RoomInfo::default()
            },
            exists: true,
            at_ms: ahead,
            ..RoomUpdate::default()
        };
        facts.merge(&update);
        let record = Record {
            facts,
            last_callback_ms: ahead,
            destroyed_at_ms: None,
        };
        let mut backend = SqliteState::open(&state).expect("state file");
        backend
            .commit(&[("meet-1", Some(&record))])
            .expect("record written");
    }
    let fake = fake_with(&["meet-1"], 4).await;
    let bounds = format!("  state_file: {}\n", state.display());
    let r = start(&fake, &bounds, &[]).await;
    // Ready means the first pass is done: meet-1 was polled.
    let text = r.wait_up(&["meet-1"]).await;
    assert_eq!(
        value(&text, "roomengine_room_members{room_id=\"meet-1\"}"),
        Some(4.0)
    );
    assert_eq!(value(&text, "roomengine_callbacks_clock_skew_total"), Some(1.0));
    let last_callback = value(
        &text,
        "roomengine_room_last_callback_timestamp_seconds{room_id=\"meet-1\"}",
    )
    .expect("last callback time");
    assert!(
        last_callback * 1000.0 <= (now_ms() + 1_000) as f64,
        "clamped to the load time, not {last_callback}"
    );
}

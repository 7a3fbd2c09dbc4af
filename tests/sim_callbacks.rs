//! The simulator's Room Engine callbacks seen by a receiver: the three
//! room_config calls, the exact query and body of each command, MemberCount
//! against the rooms, Sign, loss, failed deliveries and the counters.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use axum::Router;
use roomengine_exporter::config::SecretKey;
use roomengine_exporter::sim::{
    callback_sign, CallbackStats, SimHandle, SimOptions, Simulator, CALLBACK_COMMANDS,
};
use roomengine_exporter::{clock, usersig};
use serde_json::{json, Value};

const KEY: &str = "test-secret-key-1234567890abcdef";
const SDKAPPID: u64 = 1_400_000_000;
const ADMIN: &str = "administrator";
const TOKEN: &str = "xxxxyyyy";
/// Every command the simulator sends, in the order of set_callback's list.
const ALL: &[&str] = CALLBACK_COMMANDS;

/// One callback as the receiver got it.
#[derive(Debug, Clone)]
struct Received {
    query: BTreeMap<String, String>,
    body: Value,
}

impl Received {
    fn command(&self) -> &str {
        self.body["CallbackCommand"].as_str().unwrap_or("")
    }
}

#[derive(Clone)]
struct Receiver {
    got: Arc<Mutex<Vec<Received>>>,
    status: Arc<AtomicU16>,
}

async fn record(State(r): State<Receiver>, RawQuery(query): RawQuery, body: String) -> (StatusCode, String) {
    let query = url::form_urlencoded::parse(query.unwrap_or_default().as_bytes())
        .into_owned()
        .collect();
    let body = serde_json::from_str(&body).unwrap_or(Value::Null);
    r.got.lock().expect("lock").push(Received { query, body });
    let status = StatusCode::from_u16(r.status.load(Ordering::Relaxed)).expect("status");
    (
        status,
        r#"{"ActionStatus":"OK","ErrorInfo":"","ErrorCode":0}"#.into(),
    )
}

struct Rig {
    sim: SimHandle,
    http: reqwest::Client,
    receiver: Receiver,
    /// The receiver's URL, `http://127.0.0.1:PORT/cb?tenant=a`.
    url: String,
}

async fn rig(edit: impl FnOnce(&mut SimOptions)) -> Rig {
    let mut options = SimOptions {
        rooms: 10,
        tick: None,
        epoch: Some(1_750_000_000),
        callback_token: Some(TOKEN.into()),
        ..SimOptions::new(SecretKey::new(KEY.into()))
    };
    edit(&mut options);
    let sim = Simulator::start(options).await.expect("simulator starts");
    let receiver = Receiver {
        got: Arc::default(),
        status: Arc::new(AtomicU16::new(200)),
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}/cb?tenant=a", listener.local_addr().expect("addr"));
    let app = Router::new()
        .route("/cb", axum::routing::post(record))
        .with_state(receiver.clone());
    tokio::spawn(async move { axum::serve(listener, app).await });
    Rig {
        sim,
        http: reqwest::Client::new(),
        receiver,
        url,
    }
}

impl Rig {
    /// A signed Room Engine call; answers (ErrorCode, whole answer).
    async fn call(&self, command: &str, body: Value) -> (i64, Value) {
        let sig = usersig::sign(
            &SecretKey::new(KEY.into()),
            SDKAPPID,
            ADMIN,
            clock::unix_now(),
            3600,
        );
        let answer: Value = self
            .http
            .post(format!("{}/v4/{command}", self.sim.base_url()))
            .query(&[
                ("sdkappid", SDKAPPID.to_string().as_str()),
                ("identifier", ADMIN),
                ("usersig", &sig),
                ("random", "12345"),
                ("contenttype", "json"),
            ])
            .body(body.to_string())
            .send()
            .await
            .expect("simulator answers")
            .json()
            .await
            .expect("JSON answer");
        (answer["ErrorCode"].as_i64().expect("ErrorCode"), answer)
    }

    async fn register(&self, commands: &[&str]) {
        let body = json!({ "Url": self.url, "CallbackCommandList": commands });
        assert_eq!(self.call("room_config/set_callback", body).await.0, 0);
    }

    async fn control(&self, method: reqwest::Method, path: &str, body: Value) -> StatusCode {
        self.http
            .request(method, format!("{}{path}", self.sim.base_url()))
            .body(body.to_string())
            .send()
            .await
            .expect("control answers")
            .status()
    }

    async fn rooms(&self) -> BTreeMap<String, Value> {
        let rooms: Vec<Value> = self
            .http
            .get(format!("{}/sim/rooms", self.sim.base_url()))
            .send()
            .await
            .expect("rooms")
            .json()
            .await
            .expect("JSON");
        rooms
            .into_iter()
            .map(|r| (r["RoomId"].as_str().unwrap_or("").to_owned(), r))
            .collect()
    }

    /// Waits (at most 5 s) until sent + failed + dropped reaches `n`, then
    /// returns what the receiver got.
    async fn settled(&self, n: u64) -> Vec<Received> {
        for _ in 0..100 {
            let s = self.sim.callback_stats();
            if s.sent + s.failed + s.dropped >= n {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let s = self.sim.callback_stats();
        assert_eq!(s.sent + s.failed + s.dropped, n, "{s:?}");
        self.receiver.got.lock().expect("lock").clone()
    }
}

fn now_ms() -> u64 {
    clock::unix_now() * 1000
}

/// The query every callback carries, Sign and RequestTime checked and removed.
fn check_query(r: &Received, command: &str) {
    let mut query = r.query.clone();
    let time = query.remove("RequestTime").expect("RequestTime");
    let sign = query.remove("Sign").expect("Sign");
    let time: u64 = time.parse().expect("RequestTime is Unix seconds");
    assert!(time.abs_diff(clock::unix_now()) <= 60, "{time}");
    assert_eq!(sign, callback_sign(TOKEN, time));
    let expected: BTreeMap<String, String> = [
        ("tenant", "a"),
        ("SdkAppid", "1400000000"),
        ("CallbackCommand", command),
        ("contenttype", "json"),
        ("ClientIP", "127.0.0.1"),
        ("OptPlatform", "RESTAPI"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    assert_eq!(query, expected);
}

/// The body without EventTime, after checking EventTime lies in [from, to] ms.
fn without_time(r: &Received, from: u64, to: u64) -> Value {
    let mut body = r.body.clone();
    let time = body
        .as_object_mut()
        .and_then(|o| o.remove("EventTime"))
        .and_then(|t| t.as_u64())
        .expect("EventTime in ms");
    assert!((from..=to).contains(&time), "{from} <= {time} <= {to}");
    body
}

fn find<'a>(got: &'a [Received], command: &str) -> Vec<&'a Received> {
    got.iter().filter(|r| r.command() == command).collect()
}

#[tokio::test]
async fn get_callback_answers_what_set_and_update_callback_set() {
    let rig = rig(|_| {}).await;
    let (code, answer) = rig.call("room_config/get_callback", json!({})).await;
    assert_eq!(code, 0);
    assert_eq!(answer["ActionStatus"], "OK");
    assert_eq!(
        answer["Response"],
        json!({ "Url": "", "CallbackCommandList": [] })
    );

    rig.register(&ALL[..2]).await;
    let (_, answer) = rig.call("room_config/get_callback", json!({})).await;
    assert_eq!(
        answer["Response"],
        json!({ "Url": rig.url, "CallbackCommandList": ALL[..2] })
    );
    // update_callback with only a Url keeps the list; set_callback replaces both.
    let (code, _) = rig
        .call(
            "room_config/update_callback",
            json!({ "Url": "https://hooks.example.com/x" }),
        )
        .await;
    assert_eq!(code, 0);
    let (_, answer) = rig.call("room_config/get_callback", json!({})).await;
    assert_eq!(
        answer["Response"],
        json!({ "Url": "https://hooks.example.com/x", "CallbackCommandList": ALL[..2] })
    );
    rig.register(&["Mic.CallbackAfterSeatInfoChanged"]).await;
    let (_, answer) = rig.call("room_config/get_callback", json!({})).await;
    assert_eq!(
        answer["Response"],
        json!({ "Url": rig.url, "CallbackCommandList": ["Mic.CallbackAfterSeatInfoChanged"] })
    );
}

#[tokio::test]
async fn invalid_callback_settings_get_100002_and_change_nothing() {
    let rig = rig(|_| {}).await;
    let update = json!({ "Url": "http://127.0.0.1:1/cb", "CallbackCommandList": [] });
    let (code, answer) = rig.call("room_config/update_callback", update).await;
    assert_eq!(code, 100002);
    assert_eq!(
        answer["ErrorInfo"],
        "invalid parameter: no callback is set: call set_callback first"
    );
    for (body, info) in [
        (
            json!({ "Url": "ftp://127.0.0.1/cb", "CallbackCommandList": [] }),
            r#"invalid parameter: Url "ftp://127.0.0.1/cb" is not an http:// or https:// URL"#,
        ),
        (
            json!({ "Url": 5, "CallbackCommandList": [] }),
            "invalid parameter: Url must be a string, not 5",
        ),
        (
            json!({ "Url": "http://127.0.0.1/cb", "CallbackCommandList": ["Room.CallbackAfterCreateRoom", "Room.Nope"] }),
            r#"invalid parameter: CallbackCommandList has an unknown command "Room.Nope""#,
        ),
        (
            json!({ "Url": "http://127.0.0.1/cb" }),
            "invalid parameter: CallbackCommandList is missing",
        ),
    ] {
        let (code, answer) = rig.call("room_config/set_callback", body).await;
        assert_eq!((code, answer["ErrorInfo"].as_str()), (100002, Some(info)));
    }
    let (_, answer) = rig.call("room_config/get_callback", json!({})).await;
    assert_eq!(
        answer["Response"],
        json!({ "Url": "", "CallbackCommandList": [] })
    );
}

#[tokio::test]
async fn a_room_created_and_destroyed_through_the_control_api_is_called_back_exactly() {
    let rig = rig(|_| {}).await;
    rig.register(ALL).await;
    let from = now_ms();
    let room =
        json!({ "RoomId": "cb-1", "RoomName": "Callbacks", "MaxMemberCount": 10, "Owner_Account": "alice" });
    assert_eq!(
        rig.control(reqwest::Method::POST, "/sim/rooms", room.clone())
            .await,
        StatusCode::CREATED
    );
    assert_eq!(
        rig.control(reqwest::Method::POST, "/sim/rooms", room).await,
        StatusCode::CONFLICT
    );
    let info = rig.rooms().await["cb-1"].clone();
    let delete = rig
        .control(reqwest::Method::DELETE, "/sim/rooms/cb-1", json!({}))
        .await;
    assert_eq!(delete, StatusCode::NO_CONTENT);
    let got = rig.settled(2).await;
    let to = now_ms() + 1000;

    let created = find(&got, "Room.CallbackAfterCreateRoom");
    assert_eq!(created.len(), 1);
    check_query(created[0], "Room.CallbackAfterCreateRoom");
    let mut expected_info = info.clone();
    expected_info
        .as_object_mut()
        .expect("object")
        .remove("MemberCount");
    assert_eq!(
        without_time(created[0], from, to),
        json!({
            "CallbackCommand": "Room.CallbackAfterCreateRoom",
            "Operator_Account": ADMIN,
            "RoomInfo": expected_info,
            "ScheduleInviteeList_Account": [],
        })
    );
    assert_eq!(created[0].body["RoomInfo"]["RoomType"], "Conference");
    assert_eq!(created[0].body["RoomInfo"]["RoomName"], "Callbacks");

    let destroyed = find(&got, "Room.CallbackAfterDestroyRoom");
    assert_eq!(destroyed.len(), 1);
    check_query(destroyed[0], "Room.CallbackAfterDestroyRoom");
    assert_eq!(
        without_time(destroyed[0], from, to),
        json!({ "CallbackCommand": "Room.CallbackAfterDestroyRoom", "Operator_Account": ADMIN, "RoomId": "cb-1" })
    );

    let stats: Value = rig
        .http
        .get(format!("{}/sim/callbacks", rig.sim.base_url()))
        .send()
        .await
        .expect("stats")
        .json()
        .await
        .expect("JSON");
    assert_eq!(
        stats,
        json!({ "sent": 2, "failed": 0, "dropped": 0, "by_command": {
            "Room.CallbackAfterCreateRoom": 1, "Room.CallbackAfterDestroyRoom": 1 } })
    );
    let metrics = rig
        .http
        .get(format!("{}/sim/metrics", rig.sim.base_url()))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    for line in [
        "roomengine_sim_callbacks_total{result=\"sent\"} 2\n",
        "roomengine_sim_callbacks_total{result=\"failed\"} 0\n",
        "roomengine_sim_callbacks_total{result=\"dropped\"} 0\n",
    ] {
        assert!(metrics.contains(line), "{line} in {metrics}");
    }
}

/// `member_{k:04}`, or the owner for member 0: the world's account naming.
fn account(room: &Value, k: u64) -> String {
    match room["Owner_Account"].as_str() {
        Some(owner) if k == 0 && !owner.is_empty() => owner.to_owned(),
        _ => format!("member_{k:04}"),
    }
}

#[tokio::test]
async fn each_member_change_of_a_tick_is_one_callback_with_the_new_member_count() {
    let rig = rig(|o| o.rooms = 30).await;
    rig.register(&["Room.CallbackAfterMemberEnter", "Room.CallbackAfterMemberLeave"])
        .await;
    let before = rig.rooms().await;
    rig.sim.step(1);
    let after = rig.rooms().await;
    let changed: BTreeSet<&String> = after
        .iter()
        .filter(|(id, room)| room["MemberCount"] != before[*id]["MemberCount"])
        .map(|(id, _)| id)
        .collect();
    assert!(changed.len() >= 10, "{changed:?}");
    let got = rig.settled(changed.len() as u64).await;
    assert_eq!(rig.sim.callback_stats().sent, changed.len() as u64);
    let mut called: BTreeSet<&str> = BTreeSet::new();
    for r in &got {
        let id = r.body["RoomId"].as_str().expect("RoomId");
        let (room, was) = (&after[id], before[id]["MemberCount"].as_u64().expect("count"));
        let now = room["MemberCount"].as_u64().expect("count");
        assert_eq!(r.body["MemberCount"].as_u64(), Some(now), "{r:?}");
        let (command, kind, range) = if now > was {
            ("Room.CallbackAfterMemberEnter", "Enter", was..now)
        } else {
            ("Room.CallbackAfterMemberLeave", "Leave", now..was)
        };
        check_query(r, command);
        assert_eq!(r.command(), command);
        let accounts: Vec<String> = range.map(|k| account(room, k)).collect();
        assert_eq!(r.body["MemberList_Account"], json!(accounts), "{r:?}");
        // The operator is the first member moving, or the owner who kicked them.
        let operator = if r.body["Type"] == "Kicked" {
            room["Owner_Account"].clone()
        } else {
            json!(accounts[0])
        };
        assert_eq!(r.body["Operator_Account"], operator, "{r:?}");
        match r.body["Type"].as_str() {
            Some("Enter") | Some("Leave") => {
                assert_eq!(r.body["Type"], kind);
                assert!(r.body.get("Reason").is_none(), "{r:?}");
            }
            Some("Kicked") | Some("Expired") => assert!(r.body["Reason"].is_string(), "{r:?}"),
            other => panic!("Type {other:?}"),
        }
        called.insert(id);
    }
    assert_eq!(called, changed.iter().map(|id| id.as_str()).collect());
}

#[tokio::test]
async fn a_put_sends_the_update_the_members_and_the_seats_and_prefers_the_after_spelling() {
    let rig = rig(|o| o.callback_delay = Duration::ZERO).await;
    let room = json!({ "RoomId": "cb-2", "Owner_Account": "alice", "MaxMemberCount": 10,
        "IsSeatEnabled": true, "MaxSeatCount": 3, "MemberCount": 2 });
    assert_eq!(
        rig.control(reqwest::Method::POST, "/sim/rooms", room).await,
        StatusCode::CREATED
    );
    rig.register(&ALL[3..]).await;
    let from = now_ms();
    let put = json!({ "RoomName": "Renamed", "IsVideoDisabled": true, "MemberCount": 5, "SeatsOccupied": 2 });
    assert_eq!(
        rig.control(reqwest::Method::PUT, "/sim/rooms/cb-2", put).await,
        StatusCode::OK
    );
    let got = rig.settled(3).await;
    let to = now_ms() + 1000;
    let bodies: BTreeMap<&str, Value> = got
        .iter()
        .map(|r| (r.command(), without_time(r, from, to)))
        .collect();
    assert_eq!(
        bodies,
        BTreeMap::from([
            (
                "Room.CallbackUpdateRoomInfo",
                json!({ "CallbackCommand": "Room.CallbackUpdateRoomInfo", "Operator_Account": ADMIN,
                    "RoomInfo": { "RoomId": "cb-2", "RoomName": "Renamed", "IsVideoDisabled": true } })
            ),
            (
                "Room.CallbackAfterMemberEnter",
                json!({ "CallbackCommand": "Room.CallbackAfterMemberEnter", "Operator_Account": ADMIN,
                    "RoomId": "cb-2", "MemberCount": 5, "Type": "Enter",
                    "MemberList_Account": ["member_0002", "member_0003", "member_0004"] })
            ),
            (
                "Mic.CallbackAfterSeatInfoChanged",
                json!({ "CallbackCommand": "Mic.CallbackAfterSeatInfoChanged", "Operator_Account": ADMIN,
                    "RoomId": "cb-2", "SeatList": [
                    { "Index": 0, "Member_Account": "alice", "IsTakenDisabled": false, "IsVideoDisabled": false, "IsAudioDisabled": false },
                    { "Index": 1, "Member_Account": "member_0001", "IsTakenDisabled": false, "IsVideoDisabled": false, "IsAudioDisabled": false },
                    { "Index": 2, "Member_Account": "", "IsTakenDisabled": false, "IsVideoDisabled": false, "IsAudioDisabled": false },
                ] })
            ),
        ])
    );
    for r in &got {
        check_query(r, r.command());
    }

    // With both spellings registered, the event page's one is used; members leave.
    rig.register(ALL).await;
    let put = json!({ "CustomInfo": "x", "MemberCount": 4 });
    assert_eq!(
        rig.control(reqwest::Method::PUT, "/sim/rooms/cb-2", put).await,
        StatusCode::OK
    );
    let got = rig.settled(5).await;
    let commands: BTreeSet<&str> = got[3..].iter().map(Received::command).collect();
    assert_eq!(
        commands,
        BTreeSet::from([
            "Room.CallbackAfterUpdateRoomInfo",
            "Room.CallbackAfterMemberLeave"
        ])
    );
    let left = find(&got, "Room.CallbackAfterMemberLeave");
    assert_eq!(
        (
            &left[0].body["Type"],
            &left[0].body["MemberCount"],
            &left[0].body["MemberList_Account"]
        ),
        (&json!("Leave"), &json!(4), &json!(["member_0004"]))
    );
}

#[tokio::test]
async fn churn_calls_back_every_room_it_creates_and_destroys() {
    let rig = rig(|o| o.churn = 0.5).await;
    rig.register(&ALL[..2]).await;
    let before: BTreeSet<String> = rig.rooms().await.into_keys().collect();
    rig.sim.step(60);
    let after: BTreeSet<String> = rig.rooms().await.into_keys().collect();
    // Churn numbers new rooms on from room-0011: the highest tells how many it made.
    let last = after
        .iter()
        .filter_map(|id| id.strip_prefix("room-")?.parse::<u64>().ok())
        .max()
        .unwrap_or(0);
    let new: BTreeSet<String> = (11..=last).map(|n| format!("room-{n:04}")).collect();
    assert!(new.len() >= 2, "{after:?}");
    let gone: BTreeSet<String> = before
        .union(&new)
        .filter(|id| !after.contains(*id))
        .cloned()
        .collect();
    assert_eq!(gone.len(), new.len());
    let got = rig.settled((gone.len() + new.len()) as u64).await;
    let ids = |command: &str| -> BTreeSet<String> {
        find(&got, command)
            .iter()
            .map(|r| {
                let id = r.body["RoomId"]
                    .as_str()
                    .or(r.body["RoomInfo"]["RoomId"].as_str());
                id.unwrap_or("").to_owned()
            })
            .collect()
    };
    assert_eq!(ids("Room.CallbackAfterDestroyRoom"), gone);
    assert_eq!(ids("Room.CallbackAfterCreateRoom"), new);
    for r in find(&got, "Room.CallbackAfterCreateRoom") {
        assert!(r.body["RoomInfo"].get("MemberCount").is_none(), "{r:?}");
        assert_eq!(r.body["RoomInfo"]["RoomType"], "Conference");
        assert_eq!(r.body["ScheduleInviteeList_Account"], json!([]));
        assert_eq!(r.body["Operator_Account"], r.body["RoomInfo"]["Owner_Account"]);
    }
}

#[tokio::test]
async fn a_loss_of_one_drops_every_callback_and_counts_it() {
    let rig = rig(|o| o.callback_loss = 1.0).await;
    rig.register(ALL).await;
    let room = json!({ "RoomId": "cb-3" });
    assert_eq!(
        rig.control(reqwest::Method::POST, "/sim/rooms", room).await,
        StatusCode::CREATED
    );
    let delete = rig
        .control(reqwest::Method::DELETE, "/sim/rooms/cb-3", json!({}))
        .await;
    assert_eq!(delete, StatusCode::NO_CONTENT);
    // Dropped callbacks are counted before anything would be sent.
    assert_eq!(
        rig.sim.callback_stats(),
        CallbackStats {
            dropped: 2,
            ..CallbackStats::default()
        }
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(rig.receiver.got.lock().expect("lock").is_empty());
}

#[tokio::test]
async fn a_receiver_answering_500_counts_as_failed() {
    let rig = rig(|_| {}).await;
    rig.receiver.status.store(500, Ordering::Relaxed);
    rig.register(ALL).await;
    let room = json!({ "RoomId": "cb-4" });
    assert_eq!(
        rig.control(reqwest::Method::POST, "/sim/rooms", room).await,
        StatusCode::CREATED
    );
    let got = rig.settled(1).await;
    assert_eq!(got.len(), 1);
    assert_eq!(
        rig.sim.callback_stats(),
        CallbackStats {
            failed: 1,
            ..CallbackStats::default()
        }
    );
}

#[tokio::test]
async fn commands_not_registered_are_not_sent() {
    let rig = rig(|_| {}).await;
    rig.register(&["Room.CallbackAfterDestroyRoom"]).await;
    let room = json!({ "RoomId": "cb-5", "MemberCount": 3 });
    assert_eq!(
        rig.control(reqwest::Method::POST, "/sim/rooms", room).await,
        StatusCode::CREATED
    );
    let delete = rig
        .control(reqwest::Method::DELETE, "/sim/rooms/cb-5", json!({}))
        .await;
    assert_eq!(delete, StatusCode::NO_CONTENT);
    let got = rig.settled(1).await;
    let commands: Vec<&str> = got.iter().map(Received::command).collect();
    assert_eq!(commands, ["Room.CallbackAfterDestroyRoom"]);
}

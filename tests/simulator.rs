//! The Room Engine simulator seen from outside, over loopback HTTP: every
//! documented error for its bad request, the sample response's fields and
//! types, the official UserSig, the rate limit, determinism, seats, faults,
//! churn and the `/sim/*` control API.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use roomengine_exporter::config::SecretKey;
use roomengine_exporter::sim::{RoomInfo, SimHandle, SimOptions, Simulator};
use roomengine_exporter::{clock, usersig};
use serde_json::{json, Value};

const KEY: &str = "5bd2850fff3ecb11d7c805251c51ee463a25727bddc2385f3fa8bfee1bb93b5e";
const SDKAPPID: u64 = 1_400_000_000;
const ADMIN: &str = "administrator";
/// Made by Tencent's official Python library: key KEY, sdkappid 1400000000,
/// identifier xiaojun, time 1700000000, expire 15552000 (valid until 1715552000).
const OFFICIAL_XIAOJUN: &str = "eJyrVgrxCdYrSy1SslJQMtIzUNJRAItkpqTmlWSmZUIkKjIT87NK82CSxSnZiQUFmSlAKUMTAyiAyqVWFGQWpYJkTE1NjRDiJZm5YFFzNPXFmekgG3zKHM1T9D3LzdODi-OKs8vCqpxcAvydnV2SSv2cy03cPcpDnA2SMgu0nUxslWoBHdYzUg__";
const GET_ROOM_INFO: &str = "/v4/room_engine_http_srv/get_room_info";
const GET_SEAT_LIST: &str = "/v4/room_engine_http_mic/get_seat_list";
const SRV: &str = "/v4/room_engine_http_srv/";

fn key() -> SecretKey {
    SecretKey::new(KEY.into())
}

/// Ten rooms, no background ticking, a fixed epoch.
fn options() -> SimOptions {
    SimOptions {
        rooms: 10,
        tick: None,
        epoch: Some(1_750_000_000),
        ..SimOptions::new(key())
    }
}

/// Starts a simulator with [`options`] changed by `edit`.
async fn start_with(edit: impl FnOnce(&mut SimOptions)) -> Sim {
    let mut options = options();
    edit(&mut options);
    start(options).await
}

struct Sim {
    handle: SimHandle,
    http: reqwest::Client,
}

async fn start(options: SimOptions) -> Sim {
    let handle = Simulator::start(options).await.expect("simulator starts");
    Sim {
        handle,
        http: reqwest::Client::new(),
    }
}

/// One Room Engine call; starts valid, and each test breaks one part.
#[derive(Clone)]
struct Call {
    method: Method,
    path: String,
    sdkappid: String,
    identifier: String,
    usersig: String,
    random: Option<String>,
    contenttype: Option<String>,
    body: String,
}

impl Call {
    fn new(path: &str, body: Value) -> Call {
        Call {
            method: Method::POST,
            path: path.into(),
            sdkappid: SDKAPPID.to_string(),
            identifier: ADMIN.into(),
            usersig: usersig::sign(&key(), SDKAPPID, ADMIN, clock::unix_now(), 86_400),
            random: Some("99999999".into()),
            contenttype: Some("json".into()),
            body: body.to_string(),
        }
    }

    fn room_info(room: &str) -> Call {
        Call::new(GET_ROOM_INFO, json!({ "RoomId": room }))
    }

    fn request(&self, http: &reqwest::Client, base: &str) -> reqwest::RequestBuilder {
        let mut query = vec![
            ("sdkappid", self.sdkappid.as_str()),
            ("identifier", &self.identifier),
            ("usersig", &self.usersig),
        ];
        query.extend(self.random.as_deref().map(|r| ("random", r)));
        query.extend(self.contenttype.as_deref().map(|c| ("contenttype", c)));
        http.request(self.method.clone(), format!("{base}{}", self.path))
            .query(&query)
            .body(self.body.clone())
    }

    fn signed_as(mut self, sdkappid: u64, identifier: &str, key: &SecretKey, time: u64) -> Call {
        self.usersig = usersig::sign(key, sdkappid, identifier, time, 86_400);
        self
    }
}

impl Sim {
    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.handle.base_url())
    }

    async fn send(&self, call: &Call) -> (StatusCode, String) {
        let response = call
            .request(&self.http, &self.handle.base_url())
            .send()
            .await
            .expect("simulator answers");
        let status = response.status();
        (status, response.text().await.expect("body"))
    }

    /// Sends `call`, checks the Tencent envelope, returns (ErrorCode, whole answer).
    async fn answer(&self, call: &Call) -> (i64, Value) {
        let (status, body) = self.send(call).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let doc: Value = serde_json::from_str(&body).expect("JSON answer");
        let code = doc["ErrorCode"].as_i64().expect("ErrorCode is an integer");
        let ok = if code == 0 { "OK" } else { "FAIL" };
        assert_eq!(doc["ActionStatus"], ok, "{doc}");
        assert!(doc["RequestId"].as_str().is_some_and(|r| !r.is_empty()), "{doc}");
        assert_eq!(
            doc["ErrorInfo"].as_str().is_some_and(|i| i.is_empty()),
            code == 0,
            "{doc}"
        );
        (code, doc)
    }

    async fn code(&self, call: &Call) -> i64 {
        self.answer(call).await.0
    }

    /// The body of `GET path` on the simulator.
    async fn get_text(&self, path: &str) -> String {
        let response = self.http.get(self.url(path)).send().await.expect("GET");
        response.text().await.expect("text")
    }

    async fn sim_rooms(&self) -> Vec<Value> {
        let rooms: Value = serde_json::from_str(&self.get_text("/sim/rooms").await).expect("JSON");
        rooms.as_array().expect("an array").clone()
    }

    async fn sim_room(&self, id: &str) -> Option<Value> {
        self.sim_rooms().await.into_iter().find(|r| r["RoomId"] == id)
    }

    async fn put(&self, id: &str, body: &str) -> (StatusCode, String) {
        let response = self
            .http
            .put(self.url(&format!("/sim/rooms/{id}")))
            .body(body.to_owned())
            .send()
            .await
            .expect("PUT");
        (response.status(), response.text().await.expect("body"))
    }

    /// PUTs `body` to room `id` and asserts it was accepted.
    async fn put_ok(&self, id: &str, body: &str) {
        let (status, message) = self.put(id, body).await;
        assert_eq!(status, StatusCode::OK, "PUT {id} {body}: {message}");
    }

    async fn sim_metrics(&self) -> String {
        self.get_text("/sim/metrics").await
    }
}

/// The value of the exposition line that starts with `series ` exactly.
fn sample(metrics: &str, series: &str) -> Option<f64> {
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

/// Starts a simulator, sends `call`, and asserts the ErrorCode.
async fn expect_code(call: Call, code: i64) {
    let sim = start(options()).await;
    let (got, doc) = sim.answer(&call).await;
    assert_eq!(got, code, "{doc}");
    assert!(
        doc.get("Response").is_none() || code == 0,
        "an error carries no Response: {doc}"
    );
}

// ---- the sample request ----

#[tokio::test]
async fn sample_request_gets_every_documented_field_with_its_type() {
    let sim = start(options()).await;
    let (code, doc) = sim.answer(&Call::room_info("room-0001")).await;
    assert_eq!(code, 0);
    assert_eq!(doc["ErrorCode"], json!(0));
    assert_eq!(doc["ErrorInfo"], json!(""));
    let info = doc["Response"]["RoomInfo"]
        .as_object()
        .expect("Response.RoomInfo");
    let strings = [
        "RoomId",
        "RoomName",
        "RoomType",
        "Owner_Account",
        "CustomInfo",
        "RoomStatus",
        "TakeSeatMode",
    ];
    let integers = [
        "MaxMemberCount",
        "MaxSeatCount",
        "ScheduleStartTime",
        "ScheduleEndTime",
        "CreateTime",
        "MemberCount",
    ];
    let bools = [
        "IsVideoDisabled",
        "IsAudioDisabled",
        "IsMessageDisabled",
        "IsScreenSharingDisabled",
        "IsCloudRecordingDisabled",
        "IsSeatEnabled",
    ];
    let documented: BTreeSet<&str> = strings.iter().chain(&integers).chain(&bools).copied().collect();
    let got: BTreeSet<&str> = info.keys().map(String::as_str).collect();
    assert_eq!(got, documented);
    for name in strings {
        assert!(info[name].is_string(), "{name}: {}", info[name]);
    }
    for name in integers {
        assert!(info[name].is_u64(), "{name}: {}", info[name]);
    }
    for name in bools {
        assert!(info[name].is_boolean(), "{name}: {}", info[name]);
    }
    assert_eq!(info["RoomId"], "room-0001");
    assert_eq!(info["RoomType"], "Conference");
    assert!(["None", "NotStarted", "Running"].contains(&info["RoomStatus"].as_str().unwrap_or("")));
    assert!(["None", "FreeToTake", "ApplyToTake"].contains(&info["TakeSeatMode"].as_str().unwrap_or("")));
    assert!(info["MemberCount"].as_u64() <= info["MaxMemberCount"].as_u64());
    // /sim/rooms shows the same room (plus SeatsOccupied on seat-enabled rooms).
    let mut listed = sim.sim_room("room-0001").await.expect("listed");
    listed.as_object_mut().map(|o| o.remove("SeatsOccupied"));
    assert_eq!(listed, Value::Object(info.clone()));
}

// ---- one test per documented error ----

#[tokio::test]
async fn a_method_other_than_post_is_60002() {
    let mut call = Call::room_info("room-0001");
    call.method = Method::GET;
    expect_code(call, 60002).await;
}

#[tokio::test]
async fn a_missing_contenttype_is_60002() {
    let mut call = Call::room_info("room-0001");
    call.contenttype = None;
    expect_code(call, 60002).await;
}

#[tokio::test]
async fn a_random_beyond_u32_is_60002() {
    let mut call = Call::room_info("room-0001");
    call.random = Some("4294967296".into());
    expect_code(call, 60002).await;
}

#[tokio::test]
async fn a_body_that_is_not_json_is_60003() {
    let mut call = Call::room_info("room-0001");
    call.body = r#"{"RoomId": "room-0001""#.into();
    expect_code(call, 60003).await;
}

#[tokio::test]
async fn a_body_without_room_id_is_100002() {
    expect_code(Call::new(GET_ROOM_INFO, json!({})), 100002).await;
    expect_code(Call::new(GET_ROOM_INFO, json!({ "RoomId": 7 })), 100002).await;
}

#[tokio::test]
async fn an_unknown_sdkappid_is_60006() {
    let call = Call {
        sdkappid: "1400000001".into(),
        ..Call::room_info("room-0001").signed_as(1_400_000_001, ADMIN, &key(), clock::unix_now())
    };
    expect_code(call, 60006).await;
}

#[tokio::test]
async fn an_sdkappid_that_differs_from_the_usersigs_is_70014() {
    let call = Call::room_info("room-0001").signed_as(1_400_000_001, ADMIN, &key(), clock::unix_now());
    expect_code(call, 70014).await;
}

#[tokio::test]
async fn an_identifier_that_differs_from_the_usersigs_is_70013() {
    let call = Call::room_info("room-0001").signed_as(SDKAPPID, "someone_else", &key(), clock::unix_now());
    expect_code(call, 70013).await;
}

#[tokio::test]
async fn a_usersig_that_does_not_decode_is_70003() {
    let call = Call {
        usersig: "eJyrVkrxCdYrSy1SslIyUtJRAIsUpRYl".into(),
        ..Call::room_info("room-0001")
    };
    expect_code(call, 70003).await;
}

#[tokio::test]
async fn an_expired_usersig_is_70001() {
    let issued = clock::unix_now() - 86_400 - 60;
    let call = Call::room_info("room-0001").signed_as(SDKAPPID, ADMIN, &key(), issued);
    expect_code(call, 70001).await;
}

#[tokio::test]
async fn a_usersig_made_with_another_key_is_70009() {
    let other = SecretKey::new("another-apps-secret-key".into());
    let call = Call::room_info("room-0001").signed_as(SDKAPPID, ADMIN, &other, clock::unix_now());
    expect_code(call, 70009).await;
}

#[tokio::test]
async fn an_empty_usersig_is_70002() {
    let call = Call {
        usersig: String::new(),
        ..Call::room_info("room-0001")
    };
    expect_code(call, 70002).await;
}

#[tokio::test]
async fn a_valid_usersig_of_someone_not_admin_is_60010() {
    let call = Call {
        identifier: "user_1".into(),
        ..Call::room_info("room-0001").signed_as(SDKAPPID, "user_1", &key(), clock::unix_now())
    };
    expect_code(call, 60010).await;
}

#[tokio::test]
async fn an_unknown_room_is_100004() {
    expect_code(Call::room_info("room-9999"), 100004).await;
}

#[tokio::test]
async fn an_unknown_command_is_60009() {
    // get_seat_list lives in room_engine_http_mic, not _srv.
    expect_code(
        Call::new(&format!("{SRV}get_seat_list"), json!({ "RoomId": "room-0001" })),
        60009,
    )
    .await;
}

// ---- UserSig from Tencent's official library, and the movable clock ----

#[tokio::test]
async fn official_usersig_is_expired_today_and_accepted_with_the_clock_set_back() {
    let sim = start_with(|o| o.identifier = "xiaojun".into()).await;
    let call = Call {
        identifier: "xiaojun".into(),
        usersig: OFFICIAL_XIAOJUN.into(),
        ..Call::room_info("room-0001")
    };
    let (code, doc) = sim.answer(&call).await;
    assert_eq!(code, 70001, "{doc}");
    assert!(
        doc["ErrorInfo"].as_str().unwrap_or("").contains("1715552000"),
        "{doc}"
    );

    sim.handle.set_clock(1_700_000_100);
    let (code, doc) = sim.answer(&call).await;
    assert_eq!(code, 0, "{doc}");
    assert_eq!(doc["Response"]["RoomInfo"]["RoomId"], "room-0001");

    // One second past time + expire it is refused again.
    sim.handle.set_clock(1_715_552_001);
    assert_eq!(sim.code(&call).await, 70001);
}

// ---- rate limit ----

/// Sends `n` valid calls at once; returns the ErrorCodes.
async fn burst(sim: &Sim, n: usize) -> Vec<i64> {
    let mut calls = tokio::task::JoinSet::new();
    for i in 0..n {
        let call = Call::room_info(&format!("room-{:04}", i % 10 + 1));
        let request = call.request(&sim.http, &sim.handle.base_url());
        calls.spawn(async move {
            let answer: Value = request.send().await?.json().await?;
            Ok::<_, reqwest::Error>(answer["ErrorCode"].as_i64().unwrap_or(-1))
        });
    }
    calls
        .join_all()
        .await
        .into_iter()
        .map(|r| r.expect("answer"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn calls_beyond_the_rate_limit_in_one_second_get_60011() {
    // 250 calls must land within one second; on a starved machine a burst can
    // spread wider, so that precondition is checked, and the burst retried.
    for _attempt in 0..3 {
        let sim = start(options()).await;
        let codes = burst(&sim, 250).await;
        if sim.handle.max_calls_per_second() < 250 {
            tokio::time::sleep(Duration::from_millis(1100)).await;
            continue;
        }
        assert_eq!(codes.iter().filter(|&&c| c == 0).count(), 200, "{codes:?}");
        assert_eq!(codes.iter().filter(|&&c| c == 60011).count(), 50, "{codes:?}");
        let metrics = sim.sim_metrics().await;
        assert_eq!(
            sample(
                &metrics,
                r#"roomengine_sim_answers_total{api="get_room_info",code="60011"}"#
            ),
            Some(50.0)
        );
        assert_eq!(
            sample(&metrics, "roomengine_sim_max_calls_per_second"),
            Some(250.0)
        );

        // A second later the window has emptied and calls pass again.
        tokio::time::sleep(Duration::from_millis(1100)).await;
        assert_eq!(sim.code(&Call::room_info("room-0001")).await, 0);
        return;
    }
    panic!("could not land 250 calls within one second in 3 tries");
}

// ---- determinism ----

#[tokio::test]
async fn the_same_seed_gives_the_same_history_and_another_seed_another() {
    let churny = |seed| SimOptions {
        rooms: 20,
        seed,
        churn: 0.5,
        ..options()
    };
    let a = start(churny(42)).await;
    let b = start(churny(42)).await;
    let c = start(churny(43)).await;
    let first = a.sim_rooms().await;
    assert_ne!(first, c.sim_rooms().await, "another seed, other rooms");
    for tick in 0..40 {
        let (left, right) = (a.sim_rooms().await, b.sim_rooms().await);
        assert_eq!(left, right, "histories part at tick {tick}");
        a.handle.step(1);
        b.handle.step(1);
    }
    assert_ne!(a.sim_rooms().await, first, "40 ticks change something");
}

// ---- seats ----

fn occupied(seat_list: &[Value]) -> usize {
    seat_list
        .iter()
        .filter(|s| s["Member_Account"].as_str().is_some_and(|a| !a.is_empty()))
        .count()
}

#[tokio::test]
async fn seat_lists_have_max_seat_count_entries_and_agree_with_sim_rooms() {
    let sim = start_with(|o| o.rooms = 30).await;
    let mut before = Vec::new();
    let (mut seated_rooms, mut seatless_rooms, mut empty_forms) = (0, 0, BTreeSet::new());
    for round in 0..2 {
        let mut counts = Vec::new();
        for room in sim.sim_rooms().await {
            let id = room["RoomId"].as_str().expect("RoomId").to_owned();
            let parsed: RoomInfo =
                serde_json::from_value(room.clone()).expect("a /sim/rooms entry is a RoomInfo");
            assert_eq!(parsed.room_id, id);
            let (code, doc) = sim
                .answer(&Call::new(GET_SEAT_LIST, json!({ "RoomId": id })))
                .await;
            if room["IsSeatEnabled"] == true {
                assert_eq!(code, 0, "{doc}");
                let seats = doc["Response"]["SeatList"].as_array().expect("SeatList");
                assert_eq!(
                    seats.len() as u64,
                    room["MaxSeatCount"].as_u64().expect("MaxSeatCount"),
                    "{id}"
                );
                for (i, seat) in seats.iter().enumerate() {
                    assert_eq!(seat["Index"], json!(i));
                    for flag in ["IsTakenDisabled", "IsVideoDisabled", "IsAudioDisabled"] {
                        assert!(seat[flag].is_boolean(), "{seat}");
                    }
                    if seat["Member_Account"].as_str().unwrap_or("").is_empty() {
                        empty_forms.insert(seat.get("Member_Account").is_some());
                    }
                }
                assert_eq!(
                    Some(occupied(seats) as u64),
                    room["SeatsOccupied"].as_u64(),
                    "{id}"
                );
                assert!(occupied(seats) as u64 <= room["MemberCount"].as_u64().unwrap_or(0));
                counts.push(occupied(seats));
                seated_rooms += 1;
            } else {
                assert_eq!(code, 100211, "{id}: a room without seats");
                assert!(room.get("SeatsOccupied").is_none());
                seatless_rooms += 1;
            }
        }
        if round == 0 {
            before = counts;
            sim.handle.step(120);
        } else {
            assert_ne!(before, counts, "seats fill and empty over 120 ticks");
        }
    }
    assert!(
        seated_rooms >= 10 && seatless_rooms >= 10,
        "about half the rooms use seats: {seated_rooms}/{seatless_rooms}"
    );
    assert_eq!(
        empty_forms.len(),
        2,
        "empty seats come both with Member_Account \"\" and without it"
    );
}

// ---- the control API ----

#[tokio::test]
async fn put_sets_fields_and_freezes_the_room() {
    let sim = start(options()).await;
    sim.put_ok(
        "room-0002",
        r#"{"MemberCount": 300, "MaxMemberCount": 300, "RoomStatus": "Running"}"#,
    )
    .await;
    sim.handle.step(100);
    let (_, doc) = sim.answer(&Call::room_info("room-0002")).await;
    assert_eq!(doc["Response"]["RoomInfo"]["MemberCount"], 300);
    assert_eq!(doc["Response"]["RoomInfo"]["MaxMemberCount"], 300);
    assert_eq!(
        sim.sim_room("room-0002").await.expect("listed")["MemberCount"],
        300
    );
}

#[tokio::test]
async fn put_sets_the_seats_occupied() {
    let sim = start(options()).await;
    sim.put_ok(
        "room-0003",
        r#"{"IsSeatEnabled": true, "MaxSeatCount": 8, "SeatsOccupied": 3}"#,
    )
    .await;
    let (code, doc) = sim
        .answer(&Call::new(GET_SEAT_LIST, json!({ "RoomId": "room-0003" })))
        .await;
    assert_eq!(code, 0);
    let seats = doc["Response"]["SeatList"].as_array().expect("SeatList");
    assert_eq!((seats.len(), occupied(seats)), (8, 3));
    let (status, _) = sim.put("room-0003", r#"{"SeatsOccupied": 9}"#).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn put_answers_404_for_an_unknown_room_and_400_for_a_bad_body() {
    let sim = start(options()).await;
    let before = sim.sim_room("room-0004").await;
    assert_eq!(
        sim.put("room-0404", r#"{"MemberCount": 1}"#).await.0,
        StatusCode::NOT_FOUND
    );
    for (body, says) in [
        ("many", "not JSON"),
        ("[1]", "JSON object"),
        (r#"{"MemberCount": "many"}"#, "MemberCount"),
        (r#"{"MemberCount": 5, "Colour": "red"}"#, "Colour"),
        (r#"{"MemberCount": -1}"#, "MemberCount"),
        (r#"{"RoomId": "room-0005"}"#, "RoomId"),
    ] {
        let (status, message) = sim.put("room-0004", body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        assert!(message.contains(says), "{body} -> {message}");
    }
    assert_eq!(
        sim.sim_room("room-0004").await,
        before,
        "a rejected PUT changes nothing"
    );
}

#[tokio::test]
async fn delete_destroys_the_room_for_the_api_too() {
    let sim = start(options()).await;
    let url = sim.url("/sim/rooms/room-0005");
    assert_eq!(
        sim.http.delete(&url).send().await.expect("DELETE").status(),
        StatusCode::NO_CONTENT
    );
    assert_eq!(sim.code(&Call::room_info("room-0005")).await, 100004);
    assert!(sim.sim_room("room-0005").await.is_none());
    assert_eq!(sim.sim_rooms().await.len(), 9);
    assert_eq!(
        sample(&sim.sim_metrics().await, "roomengine_sim_rooms"),
        Some(9.0)
    );
    assert_eq!(
        sim.http.delete(&url).send().await.expect("DELETE").status(),
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn sim_metrics_count_every_call_and_answer() {
    let sim = start(options()).await;
    for _ in 0..3 {
        sim.code(&Call::room_info("room-0001")).await;
    }
    sim.code(&Call::room_info("room-0404")).await;
    sim.code(&Call::room_info("room-0001").signed_as(SDKAPPID, ADMIN, &SecretKey::new("x".into()), 1))
        .await;
    sim.code(&Call::new(GET_SEAT_LIST, json!({ "RoomId": "room-0001" })))
        .await;
    let metrics = sim.sim_metrics().await;
    let get = |series: &str| sample(&metrics, series);
    assert_eq!(
        get(r#"roomengine_sim_calls_total{api="get_room_info"}"#),
        Some(5.0),
        "{metrics}"
    );
    assert_eq!(
        get(r#"roomengine_sim_calls_total{api="get_seat_list"}"#),
        Some(1.0)
    );
    assert_eq!(
        get(r#"roomengine_sim_answers_total{api="get_room_info",code="0"}"#),
        Some(3.0)
    );
    assert_eq!(
        get(r#"roomengine_sim_answers_total{api="get_room_info",code="100004"}"#),
        Some(1.0)
    );
    assert_eq!(
        get(r#"roomengine_sim_answers_total{api="get_room_info",code="70001"}"#),
        Some(1.0)
    );
    assert_eq!(get("roomengine_sim_rooms"), Some(10.0));
    assert!(get("roomengine_sim_max_calls_per_second").is_some_and(|n| (1.0..=6.0).contains(&n)));
    assert_eq!(sim.handle.calls("get_room_info"), 5);
}

#[tokio::test]
async fn sim_stats_measure_a_period_with_poll_intervals_and_restart_on_reset() {
    let sim = start(options()).await;
    // room-0001 three times 200 ms apart (two intervals), a 100004, a bad signature.
    for _ in 0..3 {
        assert_eq!(sim.code(&Call::room_info("room-0001")).await, 0);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    sim.code(&Call::room_info("room-0404")).await;
    sim.code(&Call::room_info("room-0001").signed_as(SDKAPPID, ADMIN, &SecretKey::new("x".into()), 1))
        .await;
    let stats: Value = serde_json::from_str(&sim.get_text("/sim/stats").await).expect("JSON");
    assert_eq!(stats["calls"], 5, "{stats}");
    assert_eq!(
        stats["answers"],
        json!({"0": 3, "100004": 1, "70001": 1}),
        "{stats}"
    );
    assert!(
        (1..=5).contains(&stats["max_calls_in_one_second"].as_u64().unwrap_or(0)),
        "{stats}"
    );
    // Only accepted get_room_info calls count as polls; loose bounds for a loaded machine.
    let intervals = &stats["poll_intervals"];
    assert_eq!(intervals["count"], 2, "{stats}");
    let p50 = intervals["p50"].as_f64().unwrap_or(0.0);
    assert!((0.2..1.5).contains(&p50), "{stats}");

    let reset = sim
        .http
        .post(sim.url("/sim/stats/reset"))
        .send()
        .await
        .expect("reset");
    assert_eq!(reset.status(), StatusCode::NO_CONTENT);
    let stats: Value = serde_json::from_str(&sim.get_text("/sim/stats").await).expect("JSON");
    assert_eq!(
        (
            &stats["calls"],
            &stats["answers"],
            &stats["poll_intervals"]["count"]
        ),
        (&json!(0), &json!({}), &json!(0)),
        "{stats}"
    );
    // The lifetime counters are untouched.
    assert_eq!(sim.handle.calls("get_room_info"), 5);
}

#[tokio::test]
async fn the_call_log_names_each_calls_source_port_api_room_and_answer() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let sim = start_with(|o| o.call_log = 100).await;
    // A call over a connection whose source port we know.
    let mut stream = tokio::net::TcpStream::connect(sim.handle.addr())
        .await
        .expect("connect");
    let port = stream.local_addr().expect("local address").port();
    let call = Call::room_info("room-0003");
    let query: String = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("sdkappid", &call.sdkappid)
        .append_pair("identifier", &call.identifier)
        .append_pair("usersig", &call.usersig)
        .append_pair("random", "7")
        .append_pair("contenttype", "json")
        .finish();
    let request = format!(
        "POST {GET_ROOM_INFO}?{query} HTTP/1.1\r\nHost: sim\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{}",
        call.body.len(),
        call.body
    );
    stream.write_all(request.as_bytes()).await.expect("send");
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await.expect("answer");
    assert!(answer.contains("\"ErrorCode\":0"), "{answer}");
    // A seat list, and a call refused before its body is checked (bad signature).
    let seats = Call::new(GET_SEAT_LIST, json!({ "RoomId": "room-0004" }));
    sim.code(&seats).await;
    let forged = Call::room_info("room-0005").signed_as(SDKAPPID, ADMIN, &SecretKey::new("x".into()), 1);
    assert_eq!(sim.code(&forged).await, 70001);

    let log: Value = serde_json::from_str(&sim.get_text("/sim/calls").await).expect("JSON");
    let calls = log["calls"].as_array().expect("calls");
    assert_eq!((calls.len(), &log["dropped"]), (3, &json!(0)), "{log}");
    assert_eq!(calls[0]["peer_port"], port, "{log}");
    let seen: Vec<(&str, &str, &str)> = calls
        .iter()
        .map(|c| {
            (
                c["api"].as_str().unwrap_or(""),
                c["room_id"].as_str().unwrap_or(""),
                c["code"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert_eq!(seen[0], ("get_room_info", "room-0003", "0"));
    assert_eq!((seen[1].0, seen[1].1), ("get_seat_list", "room-0004"));
    assert_eq!(seen[2], ("get_room_info", "room-0005", "70001"));
    assert!(calls
        .iter()
        .all(|c| c["at_unix"].as_f64().is_some_and(|t| t > 1.7e9)));
    // reqwest's connection: another source port, the same for both its calls.
    assert_ne!(calls[1]["peer_port"], port);
    assert_eq!(calls[1]["peer_port"], calls[2]["peer_port"]);

    let taken = sim
        .http
        .post(sim.url("/sim/calls/take"))
        .send()
        .await
        .expect("take");
    let taken: Value = taken.json().await.expect("JSON");
    assert_eq!(taken["calls"].as_array().map(Vec::len), Some(3));
    assert!(sim.handle.take_call_log().is_empty(), "taking empties the log");
    sim.code(&Call::room_info("room-0006")).await;
    let log = sim.handle.take_call_log();
    assert_eq!(log.len(), 1);
    assert_eq!(log[0].room_id.as_deref(), Some("room-0006"));
    assert!(log[0].at <= Instant::now());
}

// ---- faults, latency, churn, ticking ----

#[tokio::test]
async fn fault_rates_answer_100001_502_and_truncated_json() {
    let sim = start_with(|o| o.fault_rate = 1.0).await;
    assert_eq!(sim.code(&Call::room_info("room-0001")).await, 100001);

    let sim = start_with(|o| o.http_error_rate = 1.0).await;
    let (status, body) = sim.send(&Call::room_info("room-0001")).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    assert!(body.contains("<html>"), "{body}");

    let sim = start_with(|o| o.malformed_rate = 1.0).await;
    let (status, body) = sim.send(&Call::room_info("room-0001")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        body.starts_with('{') && serde_json::from_str::<Value>(&body).is_err(),
        "{body}"
    );
    let metrics = sim.sim_metrics().await;
    assert_eq!(
        sample(
            &metrics,
            r#"roomengine_sim_answers_total{api="get_room_info",code="malformed"}"#
        ),
        Some(1.0)
    );

    let sim = start_with(|o| o.fault_rate = 0.5).await;
    let mut faults = 0;
    for _ in 0..200 {
        faults += usize::from(sim.code(&Call::room_info("room-0001")).await == 100001);
    }
    assert!(
        (60..=140).contains(&faults),
        "about half of 200 calls fail: {faults}"
    );
}

#[tokio::test]
async fn latency_delays_each_answer() {
    let sim = start_with(|o| o.latency = Duration::from_millis(200)).await;
    let started = Instant::now();
    assert_eq!(sim.code(&Call::room_info("room-0001")).await, 0);
    assert!(
        started.elapsed() >= Duration::from_millis(100),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn churn_replaces_rooms_with_new_ids() {
    let sim = start_with(|o| o.churn = 1.0).await;
    let first = sim.handle.room_ids();
    sim.handle.step(120);
    let now = sim.handle.room_ids();
    assert_eq!(now.len(), 10);
    let gone: Vec<&String> = first.iter().filter(|id| !now.contains(id)).collect();
    assert!(
        gone.len() >= 5,
        "two minutes at churn 1 replace most rooms: {now:?}"
    );
    assert!(
        now.iter().any(|id| id.as_str() > "room-0010"),
        "new rooms continue the numbering: {now:?}"
    );
    assert_eq!(sim.code(&Call::room_info(gone[0])).await, 100004);
}

#[tokio::test]
async fn the_world_ticks_by_itself_when_asked_to() {
    let sim = start_with(|o| o.tick = Some(Duration::from_millis(20))).await;
    let first = sim.sim_rooms().await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_ne!(sim.sim_rooms().await, first);
    sim.handle.shutdown().await;
}

// ---- the write APIs the exporter never calls ----

#[tokio::test]
async fn create_update_list_members_and_destroy_a_room() {
    let sim = start(options()).await;
    let create = Call::new(
        &format!("{SRV}create_room"),
        json!({ "RoomInfo": { "RoomId": "standup", "RoomName": "Standup", "MaxMemberCount": 20 } }),
    );
    assert_eq!(sim.code(&create).await, 0);
    assert_eq!(sim.code(&create).await, 100003, "the ID is taken now");
    let update = Call::new(
        &format!("{SRV}update_room_info"),
        json!({ "RoomInfo": { "RoomId": "standup", "RoomName": "Daily" } }),
    );
    assert_eq!(sim.code(&update).await, 0);
    let (_, doc) = sim.answer(&Call::room_info("standup")).await;
    assert_eq!(doc["Response"]["RoomInfo"]["RoomName"], "Daily");
    assert_eq!(doc["Response"]["RoomInfo"]["MaxMemberCount"], 20);

    sim.put_ok("room-0001", r#"{"MemberCount": 120}"#).await;
    let page = |next: &str| {
        Call::new(
            &format!("{SRV}get_room_member_list"),
            json!({ "RoomId": "room-0001", "Count": 100, "Next": next }),
        )
    };
    let (_, first) = sim.answer(&page("")).await;
    assert_eq!(
        first["Response"]["MemberList"].as_array().map(Vec::len),
        Some(100)
    );
    let next = first["Response"]["Next"].as_str().expect("Next").to_owned();
    let (_, second) = sim.answer(&page(&next)).await;
    assert_eq!(
        second["Response"]["MemberList"].as_array().map(Vec::len),
        Some(20)
    );
    assert_eq!(second["Response"]["Next"], "");

    let destroy = Call::new(&format!("{SRV}destroy_room"), json!({ "RoomId": "standup" }));
    assert_eq!(sim.code(&destroy).await, 0);
    assert_eq!(sim.code(&Call::room_info("standup")).await, 100004);
}

//! Seat usage end to end against the simulator (in process, world frozen):
//! `roomengine_room_seats_occupied` equals the simulator's own count for every
//! seat-enabled room, rooms without seats have no seat series, and a pass
//! costs exactly one get_room_info per room plus one seat call per seat room.

mod common;

use std::time::Duration;

use roomengine_exporter::app::{self, WebOptions};
use roomengine_exporter::config::{Config, SecretKey};
use roomengine_exporter::sim::{SimOptions, Simulator};
use roomengine_exporter::watch::WatchSettings;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use common::value;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seat_usage_matches_the_simulator_and_costs_one_call_per_seat_room() {
    let key = SecretKey::new("seat-test-key".into());
    let sim = Simulator::start(SimOptions {
        rooms: 40,
        tick: None,
        ..SimOptions::new(key.clone())
    })
    .await
    .expect("simulator starts");
    sim.step(120); // let seats fill, with the world then frozen
    let rooms = sim.room_ids();

    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let config = Config {
        sdkappid: 1400000000,
        identifier: "administrator".into(),
        secret_key: key,
        endpoint: sim.base_url(),
        usersig_ttl: Duration::from_secs(3600),
        // One pass only in this test, so call counts are exactly one pass's.
        interval: Duration::from_secs(3600),
        rate_limit: 100,
        timeout: Duration::from_secs(5),
        seat_usage: true,
        // Watch polls (get_room_info of the full rooms) would add to the pass's calls.
        watch: WatchSettings {
            enabled: false,
            ..WatchSettings::default()
        },
        probe_enabled: true,
        rooms: rooms.clone(),
        callbacks: None,
        metrics: Default::default(),
        ha: Default::default(),
    };
    let shutdown = CancellationToken::new();
    let web = WebOptions {
        listen_address: format!("127.0.0.1:{port}"),
        telemetry_path: "/metrics".into(),
        web_config: None,
        max_connections: 256,
    };
    let exporter = tokio::spawn(app::run(config, None, web, shutdown.clone()));

    let base = format!("http://127.0.0.1:{port}");
    let mut ready = false;
    for _ in 0..100 {
        if reqwest::get(format!("{base}/-/ready"))
            .await
            .is_ok_and(|r| r.status() == 200)
        {
            ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(ready, "exporter ready");
    let seat_calls_first_pass = sim.calls("get_seat_list");
    let text = reqwest::get(format!("{base}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();

    let sim_rooms: Vec<Value> = reqwest::get(format!("{}/sim/rooms", sim.base_url()))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let mut seat_rooms = 0;
    let mut occupied_total = 0;
    for room in &sim_rooms {
        let id = room["RoomId"].as_str().unwrap();
        let series = format!("roomengine_room_seats_occupied{{room_id=\"{id}\"}}");
        if room["IsSeatEnabled"].as_bool().unwrap() {
            seat_rooms += 1;
            let expected = room["SeatsOccupied"].as_u64().unwrap();
            occupied_total += expected;
            assert_eq!(value(&text, &series), Some(expected as f64), "{id}");
            assert!(value(
                &text,
                &format!("roomengine_room_seats_locked{{room_id=\"{id}\"}}")
            )
            .is_some());
        } else {
            assert_eq!(
                value(&text, &series),
                None,
                "{id} has no seats, so no seat series"
            );
            assert!(!text.contains(&format!("roomengine_room_seats_locked{{room_id=\"{id}\"}}")));
        }
    }
    println!(
        "seats: {} rooms, {seat_rooms} seat-enabled, {occupied_total} seats occupied, {seat_calls_first_pass} seat calls in the first pass",
        sim_rooms.len()
    );
    assert!(
        seat_rooms > 5 && seat_rooms < 35,
        "the simulator mixes rooms with and without seats"
    );
    assert!(occupied_total > 0, "some seats are taken");
    assert_eq!(seat_calls_first_pass, seat_rooms as u64);
    assert_eq!(sim.calls("get_room_info"), rooms.len() as u64);

    shutdown.cancel();
    exporter.await.unwrap().expect("exporter stops cleanly");
    sim.shutdown().await;
}

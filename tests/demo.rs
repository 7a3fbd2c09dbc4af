//! The `demo` and `simulate` subcommands as a user runs them, as real
//! processes: the demo serves every simulated room on /metrics within 15 s
//! (learnt from the simulator's callbacks, none configured),
//! `simulate` answers a signed call, and both exit 0 when signalled.

use std::collections::BTreeSet;
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use roomengine_exporter::config::SecretKey;
use roomengine_exporter::{clock, usersig};
use serde_json::Value;

/// A running `roomengine-exporter`, killed if the test fails before stopping it.
struct Process(Child);

impl Process {
    fn start(args: &[&str], env: &[(&str, &str)]) -> Process {
        let child = Command::new(env!("CARGO_BIN_EXE_roomengine-exporter"))
            .args(args)
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("the binary starts");
        Process(child)
    }

    /// Sends `signal` (e.g. `-TERM`) and asserts the process exits 0 within 10 s.
    fn stop_with(&mut self, signal: &str) {
        let pid = self.0.id().to_string();
        let sent = Command::new("kill")
            .args([signal, &pid])
            .status()
            .expect("run kill");
        assert!(sent.success(), "kill {signal} {pid}");
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Some(status) = self.0.try_wait().expect("try_wait") {
                assert_eq!(status.code(), Some(0), "exit status after {signal}: {status}");
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("still running 10 s after kill {signal}");
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_address() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    listener.local_addr().expect("local address").to_string()
}

/// The room_ids that have a `roomengine_room_up` sample.
fn rooms_up(metrics: &str) -> BTreeSet<String> {
    metrics
        .lines()
        .filter_map(|line| line.strip_prefix("roomengine_room_up{room_id=\""))
        .filter_map(|rest| rest.split('"').next())
        .map(str::to_owned)
        .collect()
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()
        .expect("HTTP client")
}

#[tokio::test]
async fn demo_serves_every_room_within_15_seconds_and_stops_on_sigterm() {
    let address = free_address();
    let started = Instant::now();
    let mut demo = Process::start(
        &[
            "demo",
            "--rooms",
            "20",
            "--web.listen-address",
            &address,
            "--callbacks.listen-address",
            "127.0.0.1:0",
        ],
        &[],
    );
    let client = client();
    let expected: BTreeSet<String> = (1..=20).map(|n| format!("room-{n:04}")).collect();
    let mut seen = BTreeSet::new();
    while started.elapsed() < Duration::from_secs(15) && seen != expected {
        if let Ok(response) = client.get(format!("http://{address}/metrics")).send().await {
            seen = rooms_up(&response.text().await.unwrap_or_default());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        seen,
        expected,
        "rooms with roomengine_room_up after {:?}",
        started.elapsed()
    );
    // No room is configured: the simulator's callbacks announced every one.
    let text = client
        .get(format!("http://{address}/metrics"))
        .send()
        .await
        .expect("scrape")
        .text()
        .await
        .unwrap_or_default();
    assert!(text.contains("\nroomengine_rooms_configured 0\n"), "{text}");
    let discovered = text
        .lines()
        .find_map(|l| l.strip_prefix("roomengine_rooms_discovered "))
        .and_then(|v| v.parse::<f64>().ok());
    assert!(discovered.is_some_and(|n| n >= 20.0), "discovered {discovered:?}");
    demo.stop_with("-TERM");
}

#[tokio::test]
async fn simulate_takes_its_flags_and_key_from_the_command_line_and_stops_on_sigint() {
    const KEY: &str = "simulate-test-secret-key";
    let address = free_address();
    let mut sim = Process::start(
        &[
            "simulate",
            "--listen",
            &address,
            "--rooms",
            "3",
            "--sdkappid",
            "20030819",
            "--identifier",
            "ops",
            "--secret-key-env",
            "SIM_TEST_KEY",
            "--latency",
            "0ms",
        ],
        &[("SIM_TEST_KEY", KEY)],
    );
    let usersig = usersig::sign(
        &SecretKey::new(KEY.into()),
        20_030_819,
        "ops",
        clock::unix_now(),
        3600,
    );
    let url = format!(
        "http://{address}/v4/room_engine_http_srv/get_room_info\
         ?sdkappid=20030819&identifier=ops&usersig={usersig}&random=7&contenttype=json"
    );
    let client = client();
    let deadline = Instant::now() + Duration::from_secs(10);
    let answer: Value = loop {
        match client.post(&url).body(r#"{"RoomId": "room-0003"}"#).send().await {
            Ok(response) => break response.json().await.expect("JSON answer"),
            Err(e) if Instant::now() > deadline => panic!("simulate never answered: {e}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    };
    assert_eq!(answer["ErrorCode"], 0, "{answer}");
    assert_eq!(answer["Response"]["RoomInfo"]["RoomId"], "room-0003");
    let room_4 = client
        .post(&url)
        .body(r#"{"RoomId": "room-0004"}"#)
        .send()
        .await
        .expect("answer");
    let room_4: Value = room_4.json().await.expect("JSON answer");
    assert_eq!(room_4["ErrorCode"], 100004, "only 3 rooms: {room_4}");
    sim.stop_with("-INT");
}

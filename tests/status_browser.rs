//! The status page in a real browser: `roomengine-exporter demo` with 60
//! rooms, one of them renamed `<script>alert(1)</script>` and one made full
//! through the simulator, then tests/status_browser.js drives headless
//! Chromium over `/` and a room page and saves PNG screenshots under
//! target/screenshots/. Needs `chromium` and target/node's playwright-core:
//! `bash tests/ensure-chromium.sh` (tests/run.sh runs it).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

/// The demo process, killed when the test ends.
struct Demo(Child);

impl Drop for Demo {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_address() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    listener.local_addr().expect("local address").to_string()
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The simulator's base URL from the demo's banner.
fn simulator_url(stdout: &Path, within: Duration) -> String {
    let start = Instant::now();
    loop {
        let text = std::fs::read_to_string(stdout).unwrap_or_default();
        if let Some(url) = text
            .lines()
            .find_map(|l| l.trim().strip_prefix("simulator"))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|u| u.strip_suffix("/sim/rooms"))
        {
            return url.to_owned();
        }
        assert!(start.elapsed() < within, "no banner within {within:?}:\n{text}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

async fn status_json(client: &reqwest::Client, base: &str, query: &str) -> Value {
    match client.get(format!("{base}/status.json{query}")).send().await {
        Ok(r) => r.json().await.unwrap_or(Value::Null),
        Err(_) => Value::Null,
    }
}

/// Waits until `pred` holds on /status.json?`query`.
async fn wait_status(
    client: &reqwest::Client,
    base: &str,
    query: &str,
    what: &str,
    pred: impl Fn(&Value) -> bool,
) {
    let start = Instant::now();
    loop {
        let v = status_json(client, base, query).await;
        if pred(&v) {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "{what}: not within 30 s:\n{v:#}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn the_status_page_works_in_headless_chromium_against_the_demo() {
    let node_modules = repo().join("target/node/node_modules");
    assert!(
        Path::new("/usr/bin/chromium").exists() && node_modules.join("playwright-core").exists(),
        "chromium or playwright-core missing: run `bash tests/ensure-chromium.sh`"
    );
    let dir = tempfile::tempdir().expect("temp dir");
    let stdout = dir.path().join("demo.out");
    let web = free_address();
    let child = Command::new(env!("CARGO_BIN_EXE_roomengine-exporter"))
        .args(["demo", "--rooms", "60", "--web.listen-address", &web])
        .args(["--callbacks.listen-address", "127.0.0.1:0"])
        .stdout(Stdio::from(std::fs::File::create(&stdout).expect("stdout file")))
        .stderr(Stdio::null())
        .spawn()
        .expect("the demo starts");
    let _demo = Demo(child);
    let sim = simulator_url(&stdout, Duration::from_secs(20));
    let banner = std::fs::read_to_string(&stdout).expect("banner");
    let first_url = banner
        .lines()
        .find(|l| l.starts_with("  ") && l.contains("http://"))
        .unwrap_or("");
    assert!(
        first_url.contains("status page") && first_url.trim_end().ends_with(&format!("http://{web}/")),
        "the banner gives the status page first:\n{banner}"
    );
    let base = format!("http://{web}");
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .expect("client");
    wait_status(&client, &base, "", "60 rooms known", |v| {
        v["rooms"]["known"].as_u64().is_some_and(|n| n >= 60)
    })
    .await;

    // A hostile name and a full room, as the API reports them.
    let (hostile, full) = ("room-0003", "room-0002");
    for (room, change) in [
        (hostile, json!({"RoomName": "<script>alert(1)</script>"})),
        (full, json!({"MaxMemberCount": 40, "MemberCount": 40})),
    ] {
        let r = client
            .put(format!("{sim}/sim/rooms/{room}"))
            .json(&change)
            .send()
            .await
            .expect("simulator answers");
        assert!(r.status().is_success(), "PUT {room}: {}", r.status());
    }
    wait_status(
        &client,
        &base,
        &format!("?q={hostile}"),
        "the hostile name shown",
        |v| v["table"]["rows"][0]["name"] == "<script>alert(1)</script>",
    )
    .await;
    wait_status(&client, &base, "", "a full room", |v| {
        v["rooms"]["full"].as_u64().is_some_and(|n| n >= 1)
    })
    .await;
    // The first pass done, so the budget cards show a pass length.
    wait_status(&client, &base, "", "a pass done", |v| {
        v["budget"]["pass_seconds"].as_f64().is_some_and(|s| s >= 1.0)
    })
    .await;

    let shots = repo().join("target/screenshots");
    let out = Command::new("node")
        .arg(repo().join("tests/status_browser.js"))
        .args([base.as_str(), shots.to_str().expect("utf-8 path"), hostile])
        .env("NODE_PATH", &node_modules)
        .output()
        .expect("node runs");
    let log = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    println!("{log}");
    assert!(out.status.success(), "the browser checks failed:\n{log}");
    assert!(log.matches("ok: ").count() >= 18, "every check ran:\n{log}");
    for name in ["status.png", "room.png"] {
        let png = std::fs::read(shots.join(name)).expect("screenshot saved");
        assert!(
            png.starts_with(b"\x89PNG\r\n\x1a\n") && png.len() > 10_000,
            "{name} is a PNG of a page"
        );
    }
}

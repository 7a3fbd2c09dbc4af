//! The whole /metrics output of a fixed world, compared with a committed
//! file (node_exporter's end-to-end test): a seeded, frozen simulator is
//! polled once, callbacks add a room, change one and are refused once, and
//! every line (values that depend on time masked) must equal
//! `tests/fixtures/metrics.golden.prom`. `UPDATE_GOLDEN=1 cargo test --test
//! golden` rewrites the file; review its diff like code.

mod common;

use std::time::Duration;

use roomengine_exporter::config::SecretKey;
use roomengine_exporter::sim::{SimOptions, Simulator};

use common::{
    create_body, free_port, members_body, now_ms, post_callback, value, Exporter, CREATE, ENTER, KEY,
};

const GOLDEN: &str = "tests/fixtures/metrics.golden.prom";
const MASK: &str = "<masked>";

/// Whether the value of `series` depends on when or how fast the run went:
/// timestamps, durations, the process and the runtime's task counts.
fn is_timing(series: &str) -> bool {
    let name = series.split(['{', ' ']).next().unwrap_or(series);
    name.ends_with("_timestamp_seconds")
        || name.contains("_duration_seconds")
        || name.starts_with("process_")
        || name == "roomengine_exporter_runtime_tasks"
}

/// The scrape with every timing value replaced by [`MASK`].
fn masked(scrape: &str) -> String {
    let mut out = String::with_capacity(scrape.len());
    for line in scrape.lines() {
        match line.rsplit_once(' ') {
            Some((series, _)) if !line.starts_with('#') && is_timing(series) => {
                out.push_str(series);
                out.push(' ');
                out.push_str(MASK);
            }
            _ => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_whole_scrape_of_a_fixed_world_matches_the_golden_file() {
    let sim = Simulator::start(SimOptions {
        rooms: 6,
        seed: 20,
        tick: None,
        epoch: Some(1_750_000_000),
        latency: Duration::ZERO,
        fault_rate: 0.0,
        http_error_rate: 0.0,
        malformed_rate: 0.0,
        churn: 0.0,
        ..SimOptions::new(SecretKey::new(KEY.into()))
    })
    .await
    .expect("simulator starts");
    let ids = sim.room_ids();
    let (configured, discovered) = (&ids[..4], &ids[4]);
    let port = free_port();
    let yaml = format!(
        "app:\n  sdkappid: {}\n  identifier: administrator\n  endpoint: {}\n  usersig_ttl: 1h\n\
         polling:\n  interval: 1h\n  rate_limit: 50\n  seat_usage: true\n  watch:\n    enabled: false\n\
         rooms: [{}]\ncallbacks:\n  listen_address: 127.0.0.1:{port}\n",
        common::SDKAPPID,
        sim.base_url(),
        configured.join(", ")
    );
    let exporter = Exporter::start_yaml(&yaml, &[]);
    exporter.wait_ready(Duration::from_secs(10)).await;
    let callbacks = ([127, 0, 0, 1], port).into();

    // Discovered by its create, then polled: the poll's answer is newer.
    let (status, _) = post_callback(callbacks, CREATE, &create_body(discovered, now_ms() - 1_000), "").await;
    assert_eq!(status, 200);
    let up = format!("roomengine_room_up{{room_id=\"{discovered}\"}}");
    exporter
        .wait_for(Duration::from_secs(5), "the discovered room polled", |t| {
            value(t, &up) == Some(1.0)
        })
        .await;
    // Newer than the pass's poll: 7 members stand until the next poll.
    let (status, _) = post_callback(callbacks, ENTER, &members_body(&configured[0], 7, now_ms()), "").await;
    assert_eq!(status, 200);
    // Refused: another app's callback.
    let wrong_app =
        format!("http://127.0.0.1:{port}/callback?SdkAppid=1&CallbackCommand={ENTER}&contenttype=json");
    let refused = reqwest::Client::new()
        .post(wrong_app)
        .json(&members_body(&configured[1], 3, now_ms()))
        .send()
        .await
        .expect("answered");
    assert_eq!(refused.status().as_u16(), 403);

    let got = masked(&exporter.metrics().await);
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(GOLDEN, &got).expect("write the golden file");
        return;
    }
    let want = std::fs::read_to_string(GOLDEN)
        .expect("tests/fixtures/metrics.golden.prom (UPDATE_GOLDEN=1 writes it)");
    if got != want {
        let diff: Vec<String> = diff_lines(&want, &got);
        panic!(
            "/metrics differs from {GOLDEN} ({} lines; `-` golden, `+` now). If the change is meant, run \
             UPDATE_GOLDEN=1 cargo test --test golden and commit the file.\n{}",
            diff.len(),
            diff.join("\n")
        );
    }
    sim.shutdown().await;
}

/// The lines only one side has, in order: enough to read what changed.
fn diff_lines(want: &str, got: &str) -> Vec<String> {
    let wants: std::collections::HashSet<&str> = want.lines().collect();
    let gots: std::collections::HashSet<&str> = got.lines().collect();
    let gone = want
        .lines()
        .filter(|l| !gots.contains(l))
        .map(|l| format!("- {l}"));
    let new = got
        .lines()
        .filter(|l| !wants.contains(l))
        .map(|l| format!("+ {l}"));
    gone.chain(new).collect()
}

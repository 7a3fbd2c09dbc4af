//! Secrets never leak: run with a known SecretKey, at debug level, against a
//! fake that answers errors and times out, and assert that neither the key nor
//! any UserSig the server received appears in the logs or on /metrics.

mod common;

use std::time::Duration;

use common::{assert_no_secrets, rooms, Exporter, Fake, Fault};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_and_usersigs_stay_out_of_logs_and_metrics() {
    let fake = Fake::start(4).await;
    fake.with(|s| {
        s.rooms.get_mut("room-0001").unwrap().fail_next = vec![70009, 70001, 100001, 60011, 70003];
        s.rooms.get_mut("room-0002").unwrap().fault = Some(Fault::Slow(Duration::from_secs(6)));
        s.rooms.get_mut("room-0003").unwrap().gone = true;
    });
    let mut exporter = Exporter::start(
        &fake.endpoint(),
        "  interval: 2s\n  rate_limit: 50\n  timeout: 3500ms",
        &[rooms(3), vec!["room-nope".to_owned()]].concat(),
        &["--log.level", "debug"],
    );
    exporter.wait_ready(Duration::from_secs(30)).await;
    let text = exporter
        .wait_for(Duration::from_secs(20), "a timeout counted", |t| {
            t.contains("code=\"timeout\"")
        })
        .await;
    let mut json_run = Exporter::start(
        &fake.endpoint(),
        "  interval: 2s\n  rate_limit: 50\n  timeout: 3500ms",
        &rooms(1),
        &["--log.level", "debug", "--log.format", "json"],
    );
    json_run.wait_ready(Duration::from_secs(10)).await;
    assert!(exporter.terminate().success());
    assert!(json_run.terminate().success());

    let logs = exporter.log() + &json_run.log();
    assert!(logs.contains("70009"), "the failures were logged:\n{logs}");
    assert!(logs.contains("timed out"), "the timeout was logged:\n{logs}");
    let usersigs = fake.with(|s| s.usersigs.clone());
    assert!(!usersigs.is_empty());
    for haystack in [&logs, &text] {
        assert_no_secrets(haystack, &usersigs);
    }
}

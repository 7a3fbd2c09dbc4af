//! The budget promise, measured at the server: with `rate_limit: 20` and 200
//! rooms, no one-second window of arrivals holds more than 20 calls, and the
//! exporter uses at least 90% of the budget. Prints the figures it measured.

mod common;

use std::time::{Duration, Instant};

use common::{rooms, worst_window, Exporter, Fake};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn never_more_than_rate_limit_calls_in_any_second() {
    let fake = Fake::start(200).await;
    // Every 7th room fails once with a retryable error: retries must fit in the budget too.
    fake.with(|s| {
        for i in (1..=200).step_by(7) {
            s.rooms.get_mut(&format!("room-{i:04}")).unwrap().fail_next = vec![100001];
        }
    });
    let _exporter = Exporter::start(
        &fake.endpoint(),
        "  interval: 5s\n  rate_limit: 20\n  timeout: 5s",
        &rooms(200),
        &[],
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while fake.with(|s| s.arrivals.len()) == 0 {
        assert!(Instant::now() < deadline, "no call arrived");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let first = fake.with(|s| s.arrivals[0]);
    tokio::time::sleep_until((first + Duration::from_secs(10)).into()).await;
    let arrivals: Vec<Instant> = fake.with(|s| {
        s.arrivals
            .iter()
            .copied()
            .filter(|t| t.duration_since(first) < Duration::from_secs(10))
            .collect()
    });
    let worst = worst_window(&arrivals);
    let achieved = arrivals.len() as f64 / 10.0;
    println!("budget: rate_limit 20/s, 200 rooms, 10 s: {} calls, worst one-second window {worst}, achieved {achieved:.1} calls/s ({:.0}% of budget)", arrivals.len(), achieved / 20.0 * 100.0);
    assert!(worst <= 20, "a one-second window held {worst} calls");
    assert!(achieved >= 18.0, "only {achieved} calls/s of 20");
    assert_eq!(fake.with(|s| s.bad_usersigs), 0);
}

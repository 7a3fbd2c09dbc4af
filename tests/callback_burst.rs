//! A burst of 1,000 create callbacks in about a second against the real
//! binary: every one answered OK, the polls they cause queued under the
//! budget (no one-second window above rate_limit at the fake API). Alone in
//! its file, so no other test shares the two cores with it.

mod common;

use std::time::{Duration, Instant};

use common::{
    create_body, free_port, now_ms, renice_this_thread, value, worst_window, Exporter, Fake, CREATE, SDKAPPID,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_1000_creates_queues_polls_under_the_budget() {
    let fake = Fake::start(0).await;
    let ids: Vec<String> = (1..=1000).map(|i| format!("burst-{i:04}")).collect();
    for id in &ids {
        fake.add_room(id, 1, 10);
    }
    let port = free_port();
    let yaml = format!(
        "app:\n  sdkappid: {SDKAPPID}\n  identifier: administrator\n  endpoint: {}\npolling:\n  interval: 60s\n  rate_limit: 40\n  timeout: 4s\nrooms: []\ncallbacks:\n  listen_address: 127.0.0.1:{port}\n",
        fake.endpoint()
    );
    let exporter = Exporter::start_yaml(&yaml, &[]);
    exporter.wait_ready(Duration::from_secs(10)).await;
    let started = Instant::now();
    let ids_sent = ids.clone();
    // The sender on a thread of its own at nice 19 (see renice_this_thread).
    let (ok, other) = std::thread::spawn(move || {
        let reniced = renice_this_thread(19);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let answers = runtime.block_on(send_creates(port, &ids_sent));
        println!("burst: sender thread reniced: {reniced}");
        answers
    })
    .join()
    .unwrap();
    println!("burst: answers other than 200: {other:?}");
    let answered_in = started.elapsed();
    assert_eq!(ok, 1000, "every create answered OK");
    tokio::time::sleep(Duration::from_secs(6)).await;
    let arrivals = fake.with(|s| s.arrivals.clone());
    let worst = worst_window(&arrivals);
    println!(
        "burst: 1000 creates answered in {answered_in:?}; {} polls in the {:?} since, worst one-second window {worst} (rate_limit 40)",
        arrivals.len(),
        started.elapsed()
    );
    assert!(worst <= 40, "a one-second window held {worst} calls");
    assert!(
        arrivals.len() >= 200,
        "polls go on at the budget's pace: {}",
        arrivals.len()
    );
    let text = exporter.metrics().await;
    assert_eq!(value(&text, "roomengine_rooms_discovered"), Some(1000.0));
}

/// POSTs a create callback for each of `ids`, 200 at once; the OKs and the other answers.
async fn send_creates(port: u16, ids: &[String]) -> (usize, std::collections::BTreeMap<String, usize>) {
    let client = reqwest::Client::new();
    let senders = std::sync::Arc::new(tokio::sync::Semaphore::new(200));
    let sends: Vec<_> = ids
        .iter()
        .map(|id| {
            let url = format!(
                "http://127.0.0.1:{port}/callback?SdkAppid={SDKAPPID}&CallbackCommand={CREATE}&contenttype=json"
            );
            let body = create_body(id, now_ms());
            let (client, senders) = (client.clone(), senders.clone());
            tokio::spawn(async move {
                let _turn = senders.acquire().await;
                client.post(url).json(&body).send().await.map(|r| r.status().as_u16())
            })
        })
        .collect();
    let mut ok = 0;
    let mut other = std::collections::BTreeMap::<String, usize>::new();
    for send in sends {
        match send.await {
            Ok(Ok(200)) => ok += 1,
            Ok(Ok(status)) => *other.entry(status.to_string()).or_default() += 1,
            Ok(Err(e)) => {
                *other
                    .entry(format!("{e:?}").chars().take(120).collect())
                    .or_default() += 1
            }
            Err(e) => *other.entry(e.to_string()).or_default() += 1,
        }
    }
    (ok, other)
}

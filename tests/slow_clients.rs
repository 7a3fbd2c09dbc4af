//! Thousands of half-open connections (TCP open, no request ever sent)
//! against both listeners of the real binary: scrapes, polls and callbacks
//! go on, the exporter's descriptors stay bounded by the connection caps,
//! and they are back to normal within 15 s.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde_json::json;

use common::{free_port, now_ms, post_callback, value, Exporter, Fake, SDKAPPID};

const HALF_OPEN: usize = 3000;

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

/// Opens `n` connections to `addr` that never send a byte; returns those that connected.
async fn hold_open(addr: SocketAddr, n: usize) -> Vec<tokio::net::TcpStream> {
    let mut held = Vec::with_capacity(n);
    let mut pending = tokio::task::JoinSet::new();
    for _ in 0..n {
        pending.spawn(async move {
            tokio::time::timeout(Duration::from_secs(5), tokio::net::TcpStream::connect(addr)).await
        });
        // A bounded number of connects in flight, so the backlog is not the test's limit.
        while pending.len() >= 256 {
            if let Some(Ok(Ok(Ok(stream)))) = pending.join_next().await {
                held.push(stream);
            }
        }
    }
    while let Some(done) = pending.join_next().await {
        if let Ok(Ok(Ok(stream))) = done {
            held.push(stream);
        }
    }
    held
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_thousand_half_open_connections_per_listener_cost_neither_descriptors_nor_service() {
    // The test itself holds 6,000 sockets.
    let _ = rlimit::increase_nofile_limit(u64::MAX);
    let fake = Fake::start(5).await;
    let callback_port = free_port();
    let yaml = format!(
        "app:\n  sdkappid: {SDKAPPID}\n  identifier: administrator\n  endpoint: {}\npolling:\n  interval: 1s\n  rate_limit: 20\n  timeout: 4s\nrooms: [room-0001, room-0002, room-0003, room-0004, room-0005]\ncallbacks:\n  listen_address: 127.0.0.1:{callback_port}\n  max_connections: 256\n",
        fake.endpoint()
    );
    let exporter = Exporter::start_yaml(&yaml, &["--web.max-connections", "256"]);
    exporter.wait_ready(Duration::from_secs(10)).await;
    let callbacks: SocketAddr = ([127, 0, 0, 1], callback_port).into();
    let pid = exporter.pid();
    let baseline = open_fds(pid);

    // The most descriptors at any 5 ms sample from now on, not only at the checks below.
    let sampling = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let sampler = {
        let sampling = sampling.clone();
        std::thread::spawn(move || {
            let mut most = 0;
            while sampling.load(std::sync::atomic::Ordering::Relaxed) {
                most = most.max(open_fds(pid));
                std::thread::sleep(Duration::from_millis(5));
            }
            most
        })
    };
    let opening = Instant::now();
    let (web_held, callback_held) = tokio::join!(
        hold_open(exporter.addr, HALF_OPEN),
        hold_open(callbacks, HALF_OPEN)
    );
    let opened = Instant::now();
    println!(
        "slow clients: {} + {} half-open connections held after {:?}; exporter descriptors {baseline} before",
        web_held.len(),
        callback_held.len(),
        opened - opening
    );
    assert!(web_held.len() >= HALF_OPEN * 9 / 10 && callback_held.len() >= HALF_OPEN * 9 / 10);

    // Served while they are held.
    let polls_before = fake.with(|s| s.arrivals.len());
    let mut peak = open_fds(pid);
    for i in 0..5u64 {
        let scrape = Instant::now();
        let text = exporter.metrics().await;
        assert_eq!(
            value(&text, "roomengine_room_up{room_id=\"room-0001\"}"),
            Some(1.0)
        );
        // Ahead of every poll of the test (within callbacks.max_clock_skew,
        // 5m), so the polls that follow do not overwrite it.
        let body = json!({"EventTime": now_ms() + 120_000 + i, "RoomId": "room-0002", "MemberCount": 10 + i});
        let callback = Instant::now();
        assert_eq!(
            post_callback(callbacks, "Room.CallbackAfterMemberEnter", &body, "")
                .await
                .0,
            200
        );
        println!(
            "slow clients: scrape {:?}, callback {:?}, exporter descriptors {}",
            callback - scrape,
            callback.elapsed(),
            open_fds(pid)
        );
        peak = peak.max(open_fds(pid));
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    sampling.store(false, std::sync::atomic::Ordering::Relaxed);
    peak = peak.max(sampler.join().unwrap());
    let polls = fake.with(|s| s.arrivals.len()) - polls_before;
    assert!(polls >= 10, "polls went on: {polls} in 2.5 s");
    assert!(
        peak <= baseline + 256 + 256 + 16,
        "descriptors {peak}: more than the two caps (256 each) above {baseline}"
    );

    // Back to normal within 15 s of the last one opening, though the client still holds every one.
    let normal = loop {
        let fds = open_fds(pid);
        if fds <= baseline + 8 {
            break opened.elapsed();
        }
        assert!(
            opened.elapsed() < Duration::from_secs(15),
            "descriptors still {fds} (baseline {baseline}) 15 s after the connections opened"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    println!(
        "slow clients: peak {peak} descriptors, back to {} after {normal:?}",
        open_fds(pid)
    );
    assert_eq!(
        value(
            &exporter.metrics().await,
            "roomengine_room_members{room_id=\"room-0002\"}"
        ),
        Some(14.0)
    );
    drop((web_held, callback_held));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_callback_body_that_trickles_or_stalls_is_cut_off_and_changes_nothing() {
    let fake = Fake::start(0).await;
    let callback_port = free_port();
    let yaml = format!(
        "app:\n  sdkappid: {SDKAPPID}\n  identifier: administrator\n  endpoint: {}\nrooms: []\ncallbacks:\n  listen_address: 127.0.0.1:{callback_port}\n",
        fake.endpoint()
    );
    let exporter = Exporter::start_yaml(&yaml, &[]);
    exporter.wait_ready(Duration::from_secs(10)).await;
    // One byte a second (the whole body would take most of a minute), then
    // the head and not one byte of the body.
    for (what, pace) in [("trickling", Some(Duration::from_secs(1))), ("stalled", None)] {
        let (answer, cut_after) = slow_body(callback_port, pace).await;
        println!(
            "slow clients: a {what} body was answered {:?} after {cut_after:?}",
            answer.lines().next()
        );
        assert!(
            answer.starts_with("HTTP/1.1 408 Request Timeout\r\n"),
            "{what}: {answer}"
        );
        assert!(
            answer.ends_with("callback body not received within 5s\n"),
            "{what}: {answer}"
        );
        assert!(
            cut_after < Duration::from_secs(7),
            "{what}: cut after {cut_after:?}"
        );
    }
    let text = exporter.metrics().await;
    assert!(!text.contains("room_id=\"meet-1\""), "nothing changed");
}

/// Sends a member callback's head, then its body a byte per `pace` (none at
/// all without one); returns the answer and how long it took.
async fn slow_body(port: u16, pace: Option<Duration>) -> (String, Duration) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let body = json!({"EventTime": now_ms(), "RoomId": "meet-1", "MemberCount": 3}).to_string();
    let mut tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let head = format!(
        "POST /callback?SdkAppid={SDKAPPID}&CallbackCommand=Room.CallbackAfterMemberEnter HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    tcp.write_all(head.as_bytes()).await.unwrap();
    let started = Instant::now();
    let (mut reader, mut writer) = tcp.into_split();
    let trickle = tokio::spawn(async move {
        let Some(pace) = pace else {
            return std::future::pending().await;
        };
        for byte in body.bytes() {
            if writer.write_all(&[byte]).await.is_err() {
                break;
            }
            tokio::time::sleep(pace).await;
        }
    });
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(15), reader.read_to_end(&mut answer)).await;
    let cut_after = started.elapsed();
    trickle.abort();
    (String::from_utf8_lossy(&answer).into_owned(), cut_after)
}

//! The fault matrix: the real binary against the fake API in `common`, one
//! test per fault the API can throw. Each asserts numbers: /metrics answers
//! 200 throughout, no one-second window at the fake holds more than the
//! budget, the affected rooms are down with the fault counted under the
//! exporter's code, the others stay up, and no secret reaches the log.

mod common;

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{assert_no_secrets, rooms, value, worst_window, Exporter, Fake, Fault};

const RATE: usize = 20;
/// Just above the 3 s minimum the configuration enforces.
const TIMEOUT: Duration = Duration::from_millis(3200);
const POLLING: &str = "  interval: 1s\n  rate_limit: 20\n  timeout: 3200ms";
/// Attempts per poll of a room: the first and `poller::MAX_RETRIES` retries.
const ATTEMPTS: usize = 3;
/// The longest the poller's back-off between attempts can add up to
/// (250 ms and 500 ms, each with jitter up to ×1.5).
const MAX_BACKOFF: Duration = Duration::from_millis(1125);
/// Room for a loaded 2-core CI machine in every time bound.
const SLACK: Duration = Duration::from_secs(5);

/// A fake with `n` rooms, `faults` set from the start, and the exporter
/// polling them at debug level (so that every failed call is logged with its
/// detail); every room is up after the first pass.
async fn start(n: usize, faults: &[(&str, Fault)]) -> (Fake, Exporter) {
    let fake = Fake::start(n).await;
    for (id, fault) in faults {
        fake.set_fault(&[id], Some(fault.clone()));
    }
    let exporter = Exporter::start(&fake.endpoint(), POLLING, &rooms(n), &["--log.level", "debug"]);
    exporter.wait_ready(Duration::from_secs(20)).await;
    let text = exporter.metrics().await;
    for id in rooms(n) {
        assert_eq!(up(&text, &id), Some(1.0), "{id} up after the first pass");
    }
    (fake, exporter)
}

fn up(text: &str, id: &str) -> Option<f64> {
    value(text, &format!("roomengine_room_up{{room_id=\"{id}\"}}"))
}

fn members(text: &str, id: &str) -> Option<f64> {
    value(text, &format!("roomengine_room_members{{room_id=\"{id}\"}}"))
}

/// `roomengine_api_request_errors_total` for get_room_info and `code` (0 when absent).
fn errors(text: &str, code: &str) -> f64 {
    value(
        text,
        &format!("roomengine_api_request_errors_total{{api=\"get_room_info\",code=\"{code}\"}}"),
    )
    .unwrap_or(0.0)
}

fn effective_rate(text: &str) -> f64 {
    value(text, "roomengine_rate_limit_effective_requests_per_second").expect("effective rate gauge")
}

fn all_up(text: &str, ids: &[String], want: f64) -> bool {
    ids.iter().all(|id| up(text, id) == Some(want))
}

/// The checks every row shares (besides every scrape answering 200, which
/// `Exporter::metrics` asserts): the budget held at the fake, every UserSig
/// valid, no secret in the log. Returns the worst window for the report.
fn check_budget_and_secrets(fake: &Fake, exporter: &Exporter) -> usize {
    let (arrivals, usersigs) = fake.with(|s| (s.arrivals.clone(), s.usersigs.clone()));
    let worst = worst_window(&arrivals);
    assert!(
        worst <= RATE,
        "{worst} calls in one second, budget {RATE}; arrival offsets (ms) of the first crowded window: {:?}",
        crowded_window(&arrivals)
    );
    assert!(!usersigs.is_empty());
    assert_no_secrets(&exporter.log(), &usersigs);
    assert_eq!(fake.with(|s| s.bad_usersigs), 0, "every UserSig verified");
    worst
}

/// Arrival offsets in ms from the first of the first `RATE + 1` arrivals
/// that fit in one second: shows whether one late call caused the crowding.
fn crowded_window(arrivals: &[Instant]) -> Option<Vec<u128>> {
    arrivals
        .windows(RATE + 1)
        .find(|w| w[RATE] - w[0] < Duration::from_secs(1))
        .map(|w| w.iter().map(|t| (*t - w[0]).as_millis()).collect())
}

fn scrapes(exporter: &Exporter) -> usize {
    exporter.scrapes.load(Ordering::Relaxed)
}

/// Sets each room's fault, then waits until those rooms are down and the
/// exporter's `code` counter has grown by exactly the calls the fake
/// answered with the faults, at least `min_per_room` per room. Returns the
/// settled scrape and how long after the faults the rooms were all down.
async fn fault_until_counted(
    fake: &Fake,
    exporter: &Exporter,
    faults: &[(&str, Fault)],
    code: &str,
    min_per_room: usize,
    within: Duration,
) -> (String, Duration) {
    let before = errors(&exporter.metrics().await, code);
    let start = Instant::now();
    for (id, fault) in faults {
        fake.set_fault(&[id], Some(fault.clone()));
    }
    let mut down_after = None;
    loop {
        let text = exporter.metrics().await;
        if down_after.is_none() && faults.iter().all(|(id, _)| up(&text, id) == Some(0.0)) {
            down_after = Some(start.elapsed());
        }
        let faulted: Vec<usize> = faults.iter().map(|(id, _)| fake.faulted(id)).collect();
        let counted = errors(&text, code) - before;
        if let Some(after) = down_after {
            if counted == faulted.iter().sum::<usize>() as f64 && faulted.iter().all(|&n| n >= min_per_room) {
                return (text, after);
            }
        }
        assert!(
            start.elapsed() < within,
            "{code}: rooms down and every faulted call ({faulted:?}) counted ({counted}) not seen within {within:?}\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// How soon a room whose calls all time out is down: its poll starts within
/// an interval, then three attempts, each cut at the timeout, and back-offs.
fn timed_out_within() -> Duration {
    Duration::from_secs(1) + TIMEOUT * ATTEMPTS as u32 + MAX_BACKOFF + SLACK
}

/// Rows 1 and 5: room-0001 of 4 answers with `fault`, which only the timeout
/// ends. Returns once it is down within [`timed_out_within`], every faulted
/// call counted as `code="timeout"`, and the other rooms still up.
async fn time_out_one_room(fault: Fault) -> (Fake, Exporter, String, Duration) {
    let (fake, exporter) = start(4, &[]).await;
    let (text, down_after) = fault_until_counted(
        &fake,
        &exporter,
        &[("room-0001", fault)],
        "timeout",
        ATTEMPTS,
        Duration::from_secs(30),
    )
    .await;
    let bound = timed_out_within();
    assert!(down_after <= bound, "down after {down_after:?}, bound {bound:?}");
    assert!(
        all_up(&text, &rooms(4)[1..], 1.0),
        "the other rooms stay up\n{text}"
    );
    (fake, exporter, text, down_after)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn row1_slow_answers_time_out() {
    let (fake, exporter, text, down_after) = time_out_one_room(Fault::Slow(Duration::from_secs(5))).await;
    // A slow room's poll outlives its pass; the next passes go on without it,
    // so the healthy rooms keep their 1 s interval.
    let longest_gap = fake.with(|s| {
        s.room_arrivals["room-0002"]
            .windows(2)
            .map(|w| (w[1] - w[0]).as_secs_f64())
            .fold(0.0, f64::max)
    });
    let worst = check_budget_and_secrets(&fake, &exporter);
    println!(
        "row 1 timeouts: room down {:.1} s after answers slowed to 5 s (bound {:.1} s); code=timeout {} = slow calls at the fake; healthy room-0002 polled at most {longest_gap:.1} s apart (interval 1 s); worst window {worst}/{RATE}; {} scrapes, all 200",
        down_after.as_secs_f64(),
        timed_out_within().as_secs_f64(),
        errors(&text, "timeout"),
        scrapes(&exporter)
    );
    assert!(
        longest_gap < 3.0,
        "a healthy room waited {longest_gap:.1} s between polls while another timed out (interval 1 s)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn row2_http_502_with_html_body() {
    let (fake, exporter) = start(4, &[]).await;
    let (text, down_after) = fault_until_counted(
        &fake,
        &exporter,
        &[("room-0002", Fault::Http502Html)],
        "http_502",
        2 * ATTEMPTS,
        Duration::from_secs(15),
    )
    .await;
    for id in ["room-0001", "room-0003", "room-0004"] {
        assert_eq!(up(&text, id), Some(1.0), "{id} stays up");
    }
    // The last good data stays, marked down.
    assert_eq!(members(&text, "room-0002"), Some(2.0));
    assert_eq!(
        errors(&text, "decode"),
        0.0,
        "the HTML page is not counted as bad JSON"
    );
    let worst = check_budget_and_secrets(&fake, &exporter);
    println!(
        "row 2 HTTP 502 + HTML: down after {:.1} s; code=http_502 {} = 502 answers sent; worst window {worst}/{RATE}; {} scrapes, all 200",
        down_after.as_secs_f64(),
        errors(&text, "http_502"),
        scrapes(&exporter)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn row3_truncated_and_malformed_json() {
    let (fake, exporter) = start(6, &[]).await;
    // An OK envelope without its Response is as undecodable as the others.
    let no_response =
        Bytes::from_static(br#"{"ActionStatus":"OK","ErrorCode":0,"ErrorInfo":"","RequestId":"fake"}"#);
    let faults = [
        ("room-0001", Fault::TruncatedJson),
        ("room-0002", Fault::MalformedJson),
        ("room-0003", Fault::ConnectionCut),
        (
            "room-0004",
            Fault::Body {
                body: no_response,
                declared: true,
            },
        ),
    ];
    let (text, down_after) = fault_until_counted(
        &fake,
        &exporter,
        &faults,
        "decode",
        ATTEMPTS,
        Duration::from_secs(15),
    )
    .await;
    for id in ["room-0005", "room-0006"] {
        assert_eq!(up(&text, id), Some(1.0), "{id} stays up");
    }
    assert_eq!(
        errors(&text, "connect"),
        0.0,
        "a body cut short is not a connect error"
    );
    let worst = check_budget_and_secrets(&fake, &exporter);
    println!(
        "row 3 truncated / malformed / cut JSON: down after {:.1} s; code=decode {} = {:?} bad answers sent; worst window {worst}/{RATE}; {} scrapes, all 200",
        down_after.as_secs_f64(),
        errors(&text, "decode"),
        faults.iter().map(|(id, _)| fake.faulted(id)).collect::<Vec<_>>(),
        scrapes(&exporter)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn row4_five_mib_bodies_rejected_at_the_cap_memory_flat() {
    const HUGE: usize = 5 * 1024 * 1024;
    let (fake, exporter) = start(16, &[]).await;
    let peak_ready = exporter.memory_kib("VmHWM");
    // Half declare their length (refused from the header), half stream chunked
    // (refused by counting bytes while reading).
    let faults: Vec<(String, Fault)> = (1..=12)
        .map(|i| {
            let id = format!("room-{i:04}");
            let fault = Fault::huge_body(&id, HUGE, i % 2 == 0);
            (id, fault)
        })
        .collect();
    let faults: Vec<(&str, Fault)> = faults.iter().map(|(id, f)| (id.as_str(), f.clone())).collect();
    let (text, down_after) = fault_until_counted(
        &fake,
        &exporter,
        &faults,
        "body_too_large",
        2,
        Duration::from_secs(15),
    )
    .await;
    let rss_before = exporter.memory_kib("VmRSS");
    let peak_before = exporter.memory_kib("VmHWM");
    let refused_before = errors(&text, "body_too_large");
    let text = exporter
        .wait_for(Duration::from_secs(30), "120 more 5 MiB answers refused", |t| {
            errors(t, "body_too_large") >= refused_before + 120.0
        })
        .await;
    let rss_after = exporter.memory_kib("VmRSS");
    let peak_after = exporter.memory_kib("VmHWM");
    let refused = errors(&text, "body_too_large");
    for (id, _) in &faults {
        assert_eq!(up(&text, id), Some(0.0), "{id} down");
    }
    for i in 13..=16 {
        assert_eq!(up(&text, &format!("room-{i:04}")), Some(1.0));
    }
    assert_eq!(errors(&text, "decode"), 0.0, "too large is not bad JSON");
    // Not retried (retrying cannot shrink the answer): one call per poll, so
    // no more calls than a healthy room, which is polled once a pass.
    let healthy_calls = fake.with(|s| s.calls_per_room["room-0013"]);
    for (id, _) in &faults {
        assert!(
            fake.faulted(id) <= healthy_calls,
            "{id}: {} calls",
            fake.faulted(id)
        );
    }
    let worst = check_budget_and_secrets(&fake, &exporter);
    println!(
        "row 4 5 MiB bodies: down after {:.1} s; code=body_too_large {refused} ({} during the measurement = {:.0} MiB offered); VmRSS {rss_before} -> {rss_after} KiB; VmHWM {peak_ready} (ready) -> {peak_before} -> {peak_after} KiB; worst window {worst}/{RATE}; {} scrapes, all 200",
        down_after.as_secs_f64(),
        refused - refused_before,
        (refused - refused_before) * 5.0,
        scrapes(&exporter)
    );
    // Flat: 120 refused answers leave no more than a few buffers' worth behind.
    assert!(
        rss_after <= rss_before + 4 * 1024,
        "RSS grew {rss_before} -> {rss_after} KiB"
    );
    // Refused at the cap: reading stops at 1 MiB, so the peak since ready
    // stays below what buffering one 5 MiB body would add.
    assert!(
        peak_after < peak_ready + 8 * 1024,
        "peak RSS grew {peak_ready} -> {peak_after} KiB"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn row5_trickled_body_cut_at_the_timeout() {
    let (fake, exporter, text, down_after) = time_out_one_room(Fault::Trickle).await;
    // Every call since the fault was set is faulted: the first of them is
    // the first attempt of the first trickled poll.
    let (calls, faulted) = fake.with(|s| (s.room_arrivals["room-0001"].len(), s.faulted["room-0001"]));
    let faulted_from = calls - faulted;
    // The three attempts of the first trickled poll: each starts when the
    // previous was cut at the timeout plus the back-off (at most 750 ms),
    // not when its ~600-byte body would have ended ten minutes later.
    let attempts: Vec<Instant> =
        fake.with(|s| s.room_arrivals["room-0001"][faulted_from..faulted_from + ATTEMPTS].to_vec());
    let gaps: Vec<f64> = attempts.windows(2).map(|w| (w[1] - w[0]).as_secs_f64()).collect();
    for &gap in &gaps {
        assert!(
            gap >= TIMEOUT.as_secs_f64() && gap <= TIMEOUT.as_secs_f64() + 0.75 + 2.0,
            "attempts {gaps:?} s apart, timeout {TIMEOUT:?}"
        );
    }
    let worst = check_budget_and_secrets(&fake, &exporter);
    println!(
        "row 5 trickle (1 byte/s): attempts {gaps:.2?} s apart (timeout 3.2 s + back-off); down after {:.1} s (bound {:.1} s); code=timeout {}; worst window {worst}/{RATE}; {} scrapes, all 200",
        down_after.as_secs_f64(),
        timed_out_within().as_secs_f64(),
        errors(&text, "timeout"),
        scrapes(&exporter)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn row6_internal_error_on_30_percent_retried_inside_the_budget() {
    // 20 rooms at 20 calls/s with 30 % failing: the retries need more than the
    // budget, so they must queue behind it rather than exceed it.
    let ids = rooms(20);
    let faults: Vec<(&str, Fault)> = ids
        .iter()
        .map(|id| {
            (
                id.as_str(),
                Fault::Code {
                    code: 100001,
                    percent: 30,
                },
            )
        })
        .collect();
    let started = Instant::now();
    let (fake, exporter) = start(20, &faults).await;
    tokio::time::sleep(Duration::from_secs(8)).await;
    let text = exporter
        .wait_for(
            Duration::from_secs(5),
            "every call and every 100001 counted",
            |t| {
                let requests = value(t, "roomengine_api_requests_total{api=\"get_room_info\"}");
                requests == Some(fake.with(|s| s.arrivals.len()) as f64)
                    && errors(t, "100001") == fake.answered(100001) as f64
            },
        )
        .await;
    let elapsed = started.elapsed().as_secs_f64();
    let calls = fake.with(|s| s.arrivals.len());
    let failed = errors(&text, "100001");
    // Settled above: every call the exporter counted reached the fake.
    let requests = calls as f64;
    let share = failed / requests;
    assert!((0.25..=0.35).contains(&share), "{failed} of {requests} failed");
    for (i, id) in ids.iter().enumerate() {
        assert_eq!(
            up(&text, id),
            Some(1.0),
            "{id}: every poll succeeded on its retry"
        );
        assert_eq!(members(&text, id), Some((i + 1) as f64));
    }
    let worst = check_budget_and_secrets(&fake, &exporter);
    println!(
        "row 6 100001 on 30 %: {calls} calls in {elapsed:.1} s = {:.1} calls/s achieved (budget {RATE}); 100001 counted {failed} ({:.0} %); worst window {worst}/{RATE}; 20/20 rooms up with data; {} scrapes, all 200",
        calls as f64 / elapsed,
        share * 100.0,
        scrapes(&exporter)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn row7_rate_limit_storm_halves_the_rate_and_it_recovers() {
    let ids = rooms(4);
    let (fake, exporter) = start(4, &[]).await;
    let storm_start = Instant::now();
    let calls_before = fake.with(|s| s.arrivals.len());
    fake.set_fault(
        &ids,
        Some(Fault::Code {
            code: 60011,
            percent: 100,
        }),
    );
    // The storm lasts 3 s at least, and until every room was refused and shows down.
    let mut lowest = RATE as f64;
    let mut samples = 0;
    loop {
        let text = exporter.metrics().await;
        if errors(&text, "60011") >= 1.0 {
            let rate = effective_rate(&text);
            assert!(rate <= RATE as f64 / 2.0, "effective {rate} during the storm");
            lowest = lowest.min(rate);
            samples += 1;
        }
        let storm_seen = all_up(&text, &ids, 0.0) && ids.iter().all(|id| fake.faulted(id) >= 1);
        if storm_seen && storm_start.elapsed() >= Duration::from_secs(3) {
            break;
        }
        assert!(
            storm_start.elapsed() < Duration::from_secs(20),
            "storm not seen on every room\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let storm = storm_start.elapsed();
    let storm_calls = fake.with(|s| s.arrivals.len()) - calls_before;
    let rate_at_end = effective_rate(&exporter.metrics().await);
    fake.set_fault(&ids, None);
    let cleared = Instant::now();
    // budget.rs climbs by 10 % of the configured rate per second of success,
    // counted from the last 60011: (20 - rate) / 2 seconds, plus the wait for
    // the next success (at most one pass of 4 rooms at the lowered rate).
    let steps = ((RATE as f64 - rate_at_end) / (RATE as f64 * 0.10)).ceil();
    let bound = Duration::from_secs_f64(steps + ids.len() as f64 / lowest) + SLACK;
    exporter
        .wait_for(bound, "effective rate back at the configured 20", |t| {
            effective_rate(t) == RATE as f64 && all_up(t, &ids, 1.0)
        })
        .await;
    let recovered = cleared.elapsed();
    let text = exporter
        .wait_for(Duration::from_secs(5), "every 60011 counted", |t| {
            errors(t, "60011") == fake.answered(60011) as f64
        })
        .await;
    let worst = check_budget_and_secrets(&fake, &exporter);
    println!(
        "row 7 60011 storm: {storm_calls} calls in {:.1} s of storm ({:.1}/s); effective rate <= {} in {samples} scrapes, lowest {lowest}; 60011 counted {}; back to {RATE}/s {:.1} s after the storm (bound {:.1} s); worst window {worst}/{RATE}; {} scrapes, all 200",
        storm.as_secs_f64(),
        storm_calls as f64 / storm.as_secs_f64(),
        RATE / 2,
        errors(&text, "60011"),
        recovered.as_secs_f64(),
        bound.as_secs_f64(),
        scrapes(&exporter)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn row8_auth_errors_log_one_hint_per_code() {
    let (fake, exporter) = start(10, &[]).await;
    let wrong_key: Vec<(&str, Fault)> = ["room-0001", "room-0002", "room-0003"]
        .into_iter()
        .map(|id| {
            (
                id,
                Fault::Code {
                    code: 70009,
                    percent: 100,
                },
            )
        })
        .collect();
    let expired: Vec<(&str, Fault)> = ["room-0004", "room-0005", "room-0006"]
        .into_iter()
        .map(|id| {
            (
                id,
                Fault::Code {
                    code: 70001,
                    percent: 100,
                },
            )
        })
        .collect();
    // Auth errors are not retried: three passes give three calls per room.
    fault_until_counted(&fake, &exporter, &wrong_key, "70009", 3, Duration::from_secs(15)).await;
    fault_until_counted(&fake, &exporter, &expired, "70001", 3, Duration::from_secs(15)).await;
    let text = exporter
        .wait_for(Duration::from_secs(5), "both codes counted call for call", |t| {
            errors(t, "70009") == fake.answered(70009) as f64
                && errors(t, "70001") == fake.answered(70001) as f64
        })
        .await;
    let ids = rooms(10);
    assert!(all_up(&text, &ids[..6], 0.0), "{text}");
    assert!(all_up(&text, &ids[6..], 1.0), "{text}");
    let log = exporter.log();
    for (code, hint) in [
        ("70009", "the SecretKey does not belong to sdkappid 1400000000"),
        ("70001", "the UserSig expired: check the host clock"),
    ] {
        let lines: Vec<&str> = log.lines().filter(|l| l.contains(hint)).collect();
        assert_eq!(
            lines.len(),
            1,
            "one {code} hint for 3 rooms and many passes:\n{log}"
        );
        assert!(lines[0].contains(&format!("code={code}")), "{}", lines[0]);
    }
    let worst = check_budget_and_secrets(&fake, &exporter);
    println!(
        "row 8 70009 / 70001: counted {} / {} (= calls answered so) over 3 rooms each; hint lines 1 / 1; worst window {worst}/{RATE}; {} scrapes, all 200",
        errors(&text, "70009"),
        errors(&text, "70001"),
        scrapes(&exporter)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn row9_api_down_then_back_resumes_without_restart() {
    let ids = rooms(4);
    let (fake, mut exporter) = start(4, &[]).await;
    fake.stop();
    let stopped = Instant::now();
    let text = exporter
        .wait_for(
            Duration::from_secs(15),
            "every room down, refused calls counted",
            |t| all_up(t, &ids, 0.0) && errors(t, "connect") >= (ids.len() * ATTEMPTS) as f64,
        )
        .await;
    let down_after = stopped.elapsed();
    let refused = errors(&text, "connect");
    fake.with(|s| s.rooms.get_mut("room-0002").unwrap().info["MemberCount"] = 123.into());
    tokio::time::sleep(Duration::from_secs(2)).await;
    fake.resume();
    let resumed = Instant::now();
    let bound = Duration::from_secs(1) + MAX_BACKOFF + SLACK;
    exporter
        .wait_for(bound, "every room up again with fresh data", |t| {
            all_up(t, &ids, 1.0) && members(t, "room-0002") == Some(123.0)
        })
        .await;
    let back_after = resumed.elapsed();
    assert!(
        exporter.child.try_wait().expect("child status").is_none(),
        "same process"
    );
    let worst = check_budget_and_secrets(&fake, &exporter);
    println!(
        "row 9 API down then back: all down {:.1} s after the listener closed; code=connect {refused}; data back {:.1} s after it reopened on {} (bound {:.1} s), members 123 seen; worst window {worst}/{RATE}; {} scrapes, all 200",
        down_after.as_secs_f64(),
        back_after.as_secs_f64(),
        fake.addr,
        bound.as_secs_f64(),
        scrapes(&exporter)
    );
}

//! Whole-process figures of issues 6 and 7: the release exporter binary
//! against the in-process simulator. Sections (all by default; pick some with
//! `BENCH_ONLY=footprint,busy,load,fidelity`):
//! - footprint: 10,000 rooms, 60 s of full-budget polling after the first
//!   pass (every room has data): CPU per 1,000 polls,
//!   peak RSS; then 50 plain and 50 gzip scrapes of /metrics (median, p99);
//!   and, for scale, the CPU of the API client path alone (sign, HTTP, decode).
//! - busy: 10,000 rooms at full-budget polling and 1,000 member callbacks/s:
//!   50 plain and 50 gzip scrapes meanwhile (median, p99), callbacks answered.
//! - load: 5,000 rooms, 20 concurrent scrapers for 60 s: failures, scrape
//!   times, and the budget as the simulator saw it.
//! - fidelity: 5,000 rooms, interval 1s, at rate_limit 200, 50, and 200 with
//!   200 ms latency: calls/s, worst one-second window, 60011 answers, and the
//!   spread of intervals between polls of one room, all timed at the server.
//!
//! Prints figures; asserts nothing but that the pieces start.

mod common;

use std::time::{Duration, Instant};

use std::sync::Arc;

use common::{
    ms, percentile, proc, secs_from_env, section_enabled, sim_and_exporter, timed_get, url, Polling,
};
use roomengine_exporter::api::{ApiClient, ApiMetrics};
use roomengine_exporter::budget::Budget;
use roomengine_exporter::sim::PeriodStats;

/// The API's cap, passes as short as the budget allows, seat usage on (the default).
const FULL_BUDGET: Polling = Polling {
    rate_limit: 200,
    interval: "1s",
    seat_usage: true,
};

fn main() {
    let rt = common::runtime();
    println!(
        "machine: {} cores, {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        cpu_model()
    );
    if section_enabled("footprint") {
        footprint(&rt);
    }
    if section_enabled("busy") {
        busy(&rt);
    }
    if section_enabled("load") {
        load(&rt);
    }
    if section_enabled("fidelity") {
        let rooms = std::env::var("FIDELITY_ROOMS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(5_000);
        fidelity(rooms, 200, Duration::from_millis(20));
        fidelity(rooms, 50, Duration::from_millis(20));
        fidelity(rooms, 200, Duration::from_millis(200));
    }
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|l| l.trim_start_matches([' ', '\t', ':']).to_owned())
        .unwrap_or_else(|| "unknown CPU".into())
}

/// The simulator's view of the budget, in one line.
fn budget_line(period: &PeriodStats, rate_limit: u32) -> String {
    format!(
        "{:.1} calls/s ({:.1}% of {rate_limit}); worst one-second window {}; 60011 answers {}",
        period.calls_per_second,
        100.0 * period.calls_per_second / f64::from(rate_limit),
        period.max_calls_in_one_second,
        period.answers.get("60011").copied().unwrap_or(0)
    )
}

/// Item 1 of issue 7. The run lasts FIDELITY_SECS (30) or two passes over the
/// rooms plus 5 s, whichever is longer: every room needs two polls inside the
/// run for its interval to be seen. The simulator's own limit equals the
/// exporter's budget, so any overshoot is answered 60011.
fn fidelity(rooms: usize, rate_limit: u32, latency: Duration) {
    let pass = rooms as u64 / u64::from(rate_limit);
    let run = secs_from_env("FIDELITY_SECS", 30).max(Duration::from_secs(2 * pass + 5));
    let polling = Polling {
        rate_limit,
        interval: "1s",
        // Only get_room_info, so a pass is exactly rooms / rate_limit.
        seat_usage: false,
    };
    let (sim, exporter) = sim_and_exporter(rooms, latency, &polling, |_| {});
    sim.wait_first_call(Duration::from_secs(10));
    sim.handle.reset_period();
    let load_before = common::load_average();
    std::thread::sleep(run);
    let period = sim.handle.period();
    let spread = &period.poll_intervals;
    println!(
        "fidelity: {rooms} rooms, rate_limit {rate_limit}, interval 1s, simulator latency {} ms (limit {rate_limit}/s), {:.0} s from the first call, load average {load_before} -> {}:\n  \
         {}\n  poll interval of one room: p50 {:.2} s, p99 {:.2} s, min {:.2} s, max {:.2} s over {} intervals (ideal: a pass = {pass} s)",
        latency.as_millis(),
        period.seconds,
        common::load_average(),
        budget_line(&period, rate_limit),
        spread.p50,
        spread.p99,
        spread.min,
        spread.max,
        spread.count,
    );
    drop(exporter);
}

/// Items 2 (HTTP part) and 3 of issue 7, in one exporter run at 10,000 rooms.
fn footprint(rt: &tokio::runtime::Runtime) {
    const ROOMS: usize = 10_000;
    const RATE: u32 = FULL_BUDGET.rate_limit;
    let polling = secs_from_env("FOOTPRINT_SECS", 60);
    let (sim, exporter) = sim_and_exporter(ROOMS, Duration::from_millis(20), &FULL_BUDGET, |_| {});
    // Measure once every room has data (the first pass is done), so the
    // store is full size.
    common::wait_ready(rt, &exporter, Duration::from_secs(300));
    sim.handle.reset_period();
    let before = proc(&exporter);
    let (info0, seat0) = (
        sim.handle.calls("get_room_info"),
        sim.handle.calls("get_seat_list"),
    );
    std::thread::sleep(polling);
    let after = proc(&exporter);
    let polls = sim.handle.calls("get_room_info") - info0;
    let seat_calls = sim.handle.calls("get_seat_list") - seat0;
    let cpu = after.cpu_seconds - before.cpu_seconds;
    println!(
        "footprint: {ROOMS} rooms, rate_limit {RATE}, seat_usage on, {:.0} s of polling after the first pass:\n  \
         {polls} polls (+{seat_calls} seat calls); CPU {:.2} s = {:.1} ms per 1,000 polls ({:.1} ms per 1,000 calls)\n  \
         RSS {:.1} MiB, peak (VmHWM) {:.1} MiB, threads {}",
        polling.as_secs_f64(),
        cpu,
        1e3 * cpu / polls.max(1) as f64 * 1e3,
        1e3 * cpu / (polls + seat_calls).max(1) as f64 * 1e3,
        after.rss_mib(),
        after.hwm_mib(),
        after.threads,
    );

    scrape_times(rt, &exporter, &format!("{ROOMS} rooms"), "while polling");
    let end = proc(&exporter);
    let period = sim.handle.period();
    println!(
        "  after the scrapes: RSS {:.1} MiB, peak (VmHWM) {:.1} MiB; budget over the whole run: {}; load average {}",
        end.rss_mib(),
        end.hwm_mib(),
        budget_line(&period, RATE),
        common::load_average()
    );
    drop(exporter);
    drop(sim);
    client_path_cost();
}

/// 50 uncompressed then 50 gzip scrapes of /metrics, one after another,
/// each after an unmeasured one; prints size, median and p99 of each kind.
fn scrape_times(rt: &tokio::runtime::Runtime, exporter: &common::Exporter, what: &str, meanwhile: &str) {
    let http = common::client();
    let url = url(exporter, "/metrics");
    for gzip in [false, true] {
        let mut times = Vec::new();
        let mut size = 0;
        rt.block_on(async {
            // One unmeasured scrape: connection set up, first-touch of buffers.
            let _ = timed_get(&http, &url, gzip).await;
            for _ in 0..50 {
                let (status, bytes, took) = timed_get(&http, &url, gzip).await.expect("scrape");
                assert_eq!(status, 200, "scrape answered {status}");
                size = bytes;
                times.push(took);
            }
        });
        println!(
            "  HTTP scrape at {what}, {} ({:.1} MB on the wire), 50 scrapes {meanwhile}: median {:.1} ms, p99 {:.1} ms",
            if gzip { "gzip" } else { "uncompressed" },
            size as f64 / 1e6,
            ms(percentile(&mut times, 0.5)),
            ms(percentile(&mut times, 0.99)),
        );
    }
}

/// Issue 24 item 3: scrapes of 10,000 rooms while the full budget of polls
/// runs and member callbacks arrive at 1,000/s (signed, spread over the
/// rooms, from 8 kept-alive connections paced on one thread).
fn busy(rt: &tokio::runtime::Runtime) {
    const ROOMS: usize = 10_000;
    const PER_SECOND: u64 = 1_000;
    const SENDERS: u64 = 8;
    const TOKEN: &str = "bench-callback-token-0123456789";
    let dir = tempfile::tempdir().expect("temp dir");
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, TOKEN).expect("token file");
    let port = common::free_port();
    // A top-level section after the polling lines.
    let callbacks = format!(
        "callbacks:\n  listen_address: 127.0.0.1:{port}\n  token_file: {}\n  state_file: state.db\n",
        token_file.display()
    );
    let (sim, exporter) = common::sim_and_exporter_with(
        ROOMS,
        Duration::from_millis(20),
        &FULL_BUDGET,
        &callbacks,
        |_| {},
        |_| {},
    );
    common::wait_ready(rt, &exporter, Duration::from_secs(300));
    let rooms = Arc::new(sim.handle.room_ids());
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sent = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let sender = {
        let (rooms, stop, sent) = (rooms.clone(), stop.clone(), sent.clone());
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                let start = tokio::time::Instant::now();
                let tasks: Vec<_> = (0..SENDERS)
                    .map(|k| {
                        let (rooms, stop, sent) = (rooms.clone(), stop.clone(), sent.clone());
                        tokio::spawn(async move {
                            let mut http = common::raw_http::RawSender::new(port);
                            let mut n = k;
                            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                                tokio::time::sleep_until(
                                    start + Duration::from_micros(n * 1_000_000 / PER_SECOND),
                                )
                                .await;
                                let (path, body) =
                                    member_callback(&rooms[n as usize % rooms.len()], n, TOKEN);
                                if http.post(&path, &body).await == Some(200) {
                                    sent.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                                }
                                n += SENDERS;
                            }
                        })
                    })
                    .collect();
                for task in tasks {
                    let _ = task.await;
                }
            })
        })
    };
    std::thread::sleep(Duration::from_secs(2));
    sim.handle.reset_period();
    let (started, sent0) = (Instant::now(), sent.load(std::sync::atomic::Ordering::Relaxed));
    println!(
        "busy: {ROOMS} rooms polled at rate_limit {}, member callbacks paced at {PER_SECOND}/s:",
        FULL_BUDGET.rate_limit
    );
    scrape_times(
        rt,
        &exporter,
        &format!("{ROOMS} rooms"),
        "while polling and callbacks run",
    );
    let accepted = sent.load(std::sync::atomic::Ordering::Relaxed) - sent0;
    let elapsed = started.elapsed().as_secs_f64();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let _ = sender.join();
    let stat = proc(&exporter);
    println!(
        "  callbacks answered 200 meanwhile: {:.0}/s; budget: {}; exporter RSS {:.1} MiB, peak (VmHWM) {:.1} MiB; load average {}",
        accepted as f64 / elapsed,
        budget_line(&sim.handle.period(), FULL_BUDGET.rate_limit),
        stat.rss_mib(),
        stat.hwm_mib(),
        common::load_average()
    );
}

/// A signed `Room.CallbackAfterMemberEnter` for `room`: the `n`th callback,
/// its MemberCount cycling so that each one changes the room's lines.
fn member_callback(room: &str, n: u64, token: &str) -> (String, String) {
    let now = roomengine_exporter::clock::unix_now_ms();
    let request_time = now / 1000;
    let sign = roomengine_exporter::sim::callback_sign(token, request_time);
    let path = format!(
        "/callback?SdkAppid=1400000000&CallbackCommand=Room.CallbackAfterMemberEnter&contenttype=json&ClientIP=127.0.0.1&OptPlatform=RESTAPI&Sign={sign}&RequestTime={request_time}"
    );
    let body = format!(
        r#"{{"CallbackCommand":"Room.CallbackAfterMemberEnter","Operator_Account":"u1","EventTime":{now},"RoomId":"{room}","MemberCount":{},"Type":"Enter","MemberList_Account":["u1"]}}"#,
        n % 97
    );
    (path, body)
}

/// CPU of the exporter's API client path alone (UserSig, URL, reqwest over
/// loopback, JSON decode), sequential calls on one thread against an
/// unlimited simulator: the floor under the exporter's CPU per poll.
fn client_path_cost() {
    const CALLS: usize = 2_000;
    let unlimited = common::Sim::start(1, |o| o.rate_limit = u32::MAX);
    let room = unlimited.handle.room_ids().remove(0);
    let yaml = format!(
        "app:\n  sdkappid: 1400000000\n  identifier: administrator\n  endpoint: {}\nrooms: [{room}]\n",
        unlimited.handle.base_url()
    );
    let config = roomengine_exporter::config::parse(&yaml, &common::BenchSecrets).expect("bench config");
    // 100,000/s: pacing (10 us) far below the cost of a call.
    let budget = Arc::new(Budget::new(100_000));
    let client = ApiClient::new(
        &config,
        budget.clone(),
        ApiMetrics::new(&prometheus::Registry::new()),
    )
    .expect("client");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let (cpu, wall) = rt.block_on(async {
        // Warm the connection and the UserSig first.
        let _ = client.get_room_info(budget.acquire().await, &room).await;
        let (cpu0, wall0) = (common::thread_cpu_seconds(), Instant::now());
        for _ in 0..CALLS {
            client
                .get_room_info(budget.acquire().await, &room)
                .await
                .expect("get_room_info");
        }
        (common::thread_cpu_seconds() - cpu0, wall0.elapsed())
    });
    println!(
        "  for scale, the API client path alone (sign, reqwest over loopback, decode), {CALLS} sequential calls: \
         {:.1} ms CPU per 1,000 calls ({:.0} us wall per call)",
        1e3 * cpu / CALLS as f64 * 1e3,
        wall.as_secs_f64() / CALLS as f64 * 1e6
    );
}

/// Issue 6 "Load": 20 concurrent scrapers for LOAD_SECS (60) at 5,000 rooms
/// while polling runs at full budget.
fn load(rt: &tokio::runtime::Runtime) {
    const ROOMS: usize = 5_000;
    const RATE: u32 = FULL_BUDGET.rate_limit;
    const SCRAPERS: usize = 20;
    let run = secs_from_env("LOAD_SECS", 60);
    let (sim, exporter) = sim_and_exporter(ROOMS, Duration::from_millis(20), &FULL_BUDGET, |_| {});
    common::wait_ready(rt, &exporter, Duration::from_secs(120));
    let http = common::client();
    sim.handle.reset_period();
    let before = proc(&exporter);
    let url = url(&exporter, "/metrics");
    let deadline = Instant::now() + run;
    let results: Vec<Result<Duration, String>> = rt.block_on(async {
        let mut scrapers = tokio::task::JoinSet::new();
        for _ in 0..SCRAPERS {
            let (http, url) = (http.clone(), url.clone());
            scrapers.spawn(async move {
                let mut results = Vec::new();
                while Instant::now() < deadline {
                    results.push(match timed_get(&http, &url, false).await {
                        Ok((200, _, took)) => Ok(took),
                        Ok((status, _, _)) => Err(format!("HTTP {status}")),
                        Err(e) => Err(e),
                    });
                }
                results
            });
        }
        scrapers.join_all().await.into_iter().flatten().collect()
    });
    let period = sim.handle.period();
    let after = proc(&exporter);
    let mut times: Vec<Duration> = results.iter().filter_map(|r| r.as_ref().ok().copied()).collect();
    let failures: Vec<&String> = results.iter().filter_map(|r| r.as_ref().err()).collect();
    println!(
        "load: {ROOMS} rooms, {SCRAPERS} concurrent scrapers (uncompressed) for {:.0} s while polling at rate_limit {RATE}:\n  \
         {} scrapes ({:.1}/s), {} failed{}; scrape time median {:.1} ms, p99 {:.1} ms\n  \
         budget: {}\n  exporter: CPU {:.1} s, RSS {:.1} MiB, peak (VmHWM) {:.1} MiB; load average {}",
        run.as_secs_f64(),
        results.len(),
        results.len() as f64 / run.as_secs_f64(),
        failures.len(),
        failures.first().map_or(String::new(), |e| format!(" (first: {e})")),
        ms(percentile(&mut times, 0.5)),
        ms(percentile(&mut times, 0.99)),
        budget_line(&period, RATE),
        after.cpu_seconds - before.cpu_seconds,
        after.rss_mib(),
        after.hwm_mib(),
        common::load_average(),
    );
}

//! The callback receiver under load (issues 12 and 13): the release exporter
//! with 2,000 configured rooms polled at the full budget from the simulator,
//! one scrape a second, and member enter/leave callbacks spread over those
//! rooms from `CALLBACK_SENDERS` keep-alive connections for `CALLBACK_SECS`.
//! Prints: accepted callbacks/s and answer times; how soon a change is on
//! /metrics after its answer; whether every acknowledged callback is in the
//! state (the SQLite file, or Redis with `BENCH_REDIS_URL`); the budget as the
//! simulator saw it. Asserts nothing but that the pieces start.
//!
//! `cargo bench --bench callbacks` (about a minute).

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::raw_http::RawSender;
use common::{ms, percentile, proc, secs_from_env, Exporter, Sim};
use roomengine_exporter::room::Field;
use roomengine_exporter::roomset::Record;

const ROOMS: usize = 2000;
const SDKAPPID: u64 = 1_400_000_000;

/// Per room, the newest acknowledged callback: (EventTime, MemberCount).
type Acked = Arc<Mutex<HashMap<usize, (u64, u64)>>>;

fn main() {
    let secs = secs_from_env("CALLBACK_SECS", 30);
    let senders: usize = std::env::var("CALLBACK_SENDERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(64);
    let sim = Sim::start(ROOMS, |o| {
        o.rate_limit = 200;
        o.latency = Duration::from_millis(20);
        o.tick = None;
    });
    let port = free_port();
    // BENCH_REDIS_URL=redis://127.0.0.1:6379/0: the room set in that Redis instead.
    let redis = std::env::var("BENCH_REDIS_URL").ok();
    let state = match &redis {
        Some(url) => format!("  redis_url: {url}\n"),
        None => "  state_file: state.db\n".to_owned(),
    };
    let rooms: Vec<String> = sim.handle.room_ids();
    let yaml = format!(
        "app:\n  sdkappid: {SDKAPPID}\n  identifier: administrator\n  endpoint: {}\n  usersig_ttl: 1h\npolling:\n  interval: 1s\n  rate_limit: 200\n  timeout: 5s\nprobe:\n  enabled: false\nrooms: [{}]\ncallbacks:\n  listen_address: 127.0.0.1:{port}\n{state}",
        sim.handle.base_url(),
        rooms.join(", ")
    );
    let exporter = Exporter::start_yaml(&yaml, &[]);
    let rt = common::runtime();
    rt.block_on(exporter.wait_ready(Duration::from_secs(60)));
    sim.handle.reset_period();
    let cpu_before = proc(&exporter).cpu_seconds;

    let stop = Arc::new(AtomicBool::new(false));
    let acked: Acked = Arc::default();
    let latencies = Arc::new(Mutex::new(Vec::<Duration>::with_capacity(400_000)));
    let failed = Arc::new(AtomicU64::new(0));
    let seq = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    // The load on its own thread and runtime, like Tencent's senders.
    let load = {
        let (stop, acked, latencies, failed, seq) = (
            stop.clone(),
            acked.clone(),
            latencies.clone(),
            failed.clone(),
            seq.clone(),
        );
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                let tasks: Vec<_> = (0..senders)
                    .map(|_| {
                        let (stop, acked, latencies, failed, seq) = (
                            stop.clone(),
                            acked.clone(),
                            latencies.clone(),
                            failed.clone(),
                            seq.clone(),
                        );
                        tokio::spawn(async move {
                            let mut sender = RawSender::new(port);
                            while !stop.load(Ordering::Relaxed) {
                                let n = seq.fetch_add(1, Ordering::Relaxed);
                                let room = (n as usize * 7919) % ROOMS;
                                let count = n % 500;
                                let at = now_ms();
                                let sent = Instant::now();
                                let (path, body) = callback(room, count, at);
                                match sender.post(&path, &body).await == Some(200) {
                                    true => {
                                        latencies.lock().expect("lock").push(sent.elapsed());
                                        let mut acked = acked.lock().expect("lock");
                                        let newest = acked.entry(room).or_default();
                                        if at >= newest.0 {
                                            *newest = (at, count);
                                        }
                                    }
                                    false => {
                                        failed.fetch_add(1, Ordering::Relaxed);
                                    }
                                }
                            }
                        })
                    })
                    .collect();
                for task in tasks {
                    let _ = task.await;
                }
            });
        })
    };

    // One scrape a second; between them, changes timed from answer to /metrics.
    let mut scrapes = Vec::new();
    let mut visible = Vec::new();
    let probe_client = common::client();
    let mut k = 0u64;
    while started.elapsed() < secs {
        let t = Instant::now();
        if let Ok(Some(_)) = rt.block_on(scrape(&probe_client, &exporter.addr.to_string())) {
            scrapes.push(t.elapsed());
        }
        for _ in 0..4 {
            k += 1;
            // A value no sender uses, in a room of its own (past the senders' rooms).
            let room = ROOMS - 1 - (k as usize % 10);
            let count = 100_000 + k;
            // Far ahead, so the room's polls (sent before it) do not overwrite it.
            let at = now_ms() + 3_600_000 + k;
            if !rt.block_on(send(&probe_client, port, room, count, at)) {
                continue;
            }
            let answered = Instant::now();
            let line = format!(
                "roomengine_room_members{{room_id=\"{}\"}} {count}\n",
                room_id(room)
            );
            loop {
                let text = rt
                    .block_on(scrape(&probe_client, &exporter.addr.to_string()))
                    .ok()
                    .flatten();
                if text.is_some_and(|t| t.contains(&line)) {
                    visible.push(answered.elapsed());
                    break;
                }
                if answered.elapsed() > Duration::from_secs(5) {
                    println!("change {count} not visible within 5 s");
                    break;
                }
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    stop.store(true, Ordering::Relaxed);
    let _ = load.join();
    let own = rt
        .block_on(scrape(&probe_client, &exporter.addr.to_string()))
        .ok()
        .flatten()
        .unwrap_or_default();
    let elapsed = started.elapsed();
    let cpu = proc(&exporter).cpu_seconds - cpu_before;
    let period = sim.handle.period();
    let rss = proc(&exporter).hwm_mib();

    let mut lat = latencies.lock().expect("lock").clone();
    let accepted = lat.len();
    println!(
        "callbacks ({}): {senders} senders, {ROOMS} rooms polled at rate_limit 200, one scrape a second, {:.1} s",
        if redis.is_some() { "Redis" } else { "SQLite" },
        elapsed.as_secs_f64()
    );
    println!(
        "  accepted {accepted} ({:.0}/s), failed {}; answer {}",
        accepted as f64 / elapsed.as_secs_f64(),
        failed.load(Ordering::Relaxed),
        spread(&mut lat)
    );
    println!(
        "  visible on /metrics after the answer: {} changes, {} (each a whole scrape of {ROOMS} rooms)",
        visible.len(),
        spread(&mut visible)
    );
    println!("  scrapes: {}, {}", scrapes.len(), spread(&mut scrapes));
    println!(
        "  budget at the simulator: {:.1} calls/s, worst one-second window {}, 60011 answers {}",
        period.calls_per_second,
        period.max_calls_in_one_second,
        period.answers.get("60011").copied().unwrap_or(0)
    );
    let commits = sample(&own, "roomengine_state_commit_duration_seconds_count");
    println!(
        "  state commits: {commits:.0}, {:.2} ms each on average, {:.1} callbacks per commit",
        1000.0 * sample(&own, "roomengine_state_commit_duration_seconds_sum") / commits.max(1.0),
        sample(&own, "roomengine_callback_duration_seconds_count") / commits.max(1.0)
    );
    println!(
        "  exporter CPU {:.1} s ({:.0}% of one core, {:.1} us per accepted callback, polls included), peak RSS {rss:.1} MiB",
        cpu,
        100.0 * cpu / elapsed.as_secs_f64(),
        cpu * 1e6 / accepted.max(1) as f64
    );

    // Durable: kill -9, then every room's newest acknowledged callback must be in the state.
    let mut exporter = exporter;
    let _ = exporter.child.kill();
    let _ = exporter.child.wait();
    let stored = match &redis {
        None => read_sqlite(&exporter.dir().join("state.db")),
        Some(url) => read_redis(url),
    };
    let acked = acked.lock().expect("lock");
    let lost = acked
        .iter()
        .filter(|(room, (at, count))| {
            stored.get(&room_id(**room)).is_none_or(|r| {
                let stamp = r.facts.stamps[Field::Members as usize];
                // A newer value (a probe's) is fine; an older one is a lost acknowledgement.
                stamp < *at || (stamp == *at && r.facts.info.member_count != *count)
            })
        })
        .count();
    println!(
        "  durable after kill -9: {} rooms checked, {lost} whose newest acknowledged callback is missing",
        acked.len()
    );
}

/// A member callback's path and body.
fn callback(room: usize, count: u64, at: u64) -> (String, String) {
    let command = if count % 2 == 0 {
        "Room.CallbackAfterMemberEnter"
    } else {
        "Room.CallbackAfterMemberLeave"
    };
    let body = format!(
        r#"{{"CallbackCommand":"{command}","Operator_Account":"u","EventTime":{at},"RoomId":"{}","MemberCount":{count},"Type":"Enter","MemberList_Account":["u"]}}"#,
        room_id(room)
    );
    let path = format!(
        "/callback?SdkAppid={SDKAPPID}&CallbackCommand={command}&contenttype=json&ClientIP=127.0.0.1&OptPlatform=RESTAPI"
    );
    (path, body)
}

async fn send(client: &reqwest::Client, port: u16, room: usize, count: u64, at: u64) -> bool {
    let (path, body) = callback(room, count, at);
    matches!(
        client
            .post(format!("http://127.0.0.1:{port}{path}"))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await,
        Ok(r) if r.status() == 200
    )
}

async fn scrape(client: &reqwest::Client, addr: &str) -> Result<Option<String>, reqwest::Error> {
    let response = client.get(format!("http://{addr}/metrics")).send().await?;
    Ok((response.status() == 200).then_some(response.text().await?))
}

/// "p50 A ms, p90 B, p99 C, max D" of `times`.
fn spread(times: &mut [Duration]) -> String {
    format!(
        "p50 {:.2} ms, p90 {:.2}, p99 {:.2}, max {:.2}",
        ms(percentile(times, 0.50)),
        ms(percentile(times, 0.90)),
        ms(percentile(times, 0.99)),
        ms(percentile(times, 1.0))
    )
}

/// The value of an unlabelled sample line in `text` (0 when absent).
fn sample(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or(0.0)
}

fn room_id(index: usize) -> String {
    roomengine_exporter::sim::room_id(index as u64 + 1)
}

fn now_ms() -> u64 {
    roomengine_exporter::clock::unix_now_ms()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

fn read_sqlite(path: &std::path::Path) -> HashMap<String, Record> {
    let db = rusqlite::Connection::open(path).expect("state file opens");
    let mut query = db.prepare("SELECT room_id, record FROM rooms").expect("query");
    let rows = query
        .query_map([], |row| Ok((row.get::<_, String>(0)?, row.get::<_, String>(1)?)))
        .expect("rows");
    rows.filter_map(Result::ok)
        .filter_map(|(room, text)| serde_json::from_str(&text).ok().map(|r| (room, r)))
        .collect()
}

/// The room set as a restarted replica reads it from Redis.
fn read_redis(url: &str) -> HashMap<String, Record> {
    let config = roomengine_exporter::config::RedisConfig {
        url: url.to_owned(),
        password: None,
    };
    let loaded =
        roomengine_exporter::roomset::open_redis(&config, SDKAPPID).and_then(|mut state| state.load());
    match loaded {
        Ok(rooms) => rooms.into_iter().collect(),
        Err(e) => {
            println!("  cannot read Redis: {e}");
            HashMap::new()
        }
    }
}

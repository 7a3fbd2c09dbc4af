//! How soon a room that reaches its MaxMemberCount shows as full on /metrics,
//! with the watch tier on and off: the release exporter against the
//! simulator, 10,000 rooms at rate_limit 200 (a pass of ~51 s), interval 30s,
//! seat usage off (one call per poll). The simulator's climbing rooms (one in
//! ten) fill gradually: its world ticks every FRESHNESS_TICK_SECS (10) instead
//! of every second, so a climbing room gains ~2.5% of capacity per 10 s.
//! Before the exporter starts the world is advanced FRESHNESS_PRESTEP (5)
//! ticks, so the fills fall inside the measured window.
//!
//! Per tier: wait for the first pass, then scrape /metrics every 0.5 s for
//! FRESHNESS_SECS (120), and up to FRESHNESS_DRAIN_SECS (70) more until every
//! fill of the window is seen. A fill's delay runs from the tick that filled
//! the room (the simulator's `/sim/fills`) to the end of the first scrape
//! showing `roomengine_room_members >= roomengine_room_max_members` for it.
//! Also printed: the longest gap between two polls of one room (at the
//! simulator) against the documented bound, and the budget as the simulator
//! saw it. `cargo bench --bench freshness`; FRESHNESS_ROOMS changes the rooms,
//! FRESHNESS_TIERS=on (or off) runs one tier only.
//!
//! Prints figures; asserts nothing but that the pieces start.

mod common;

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use common::{percentile, secs_from_env, sim_and_exporter_with, url, value as sample, Polling};

const POLLING: Polling = Polling {
    rate_limit: 200,
    interval: "30s",
    seat_usage: false,
};
const SCRAPE_EVERY: Duration = Duration::from_millis(500);

fn main() {
    let rooms: usize = std::env::var("FRESHNESS_ROOMS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    let tick = secs_from_env("FRESHNESS_TICK_SECS", 10);
    let prestep = secs_from_env("FRESHNESS_PRESTEP", 5).as_secs();
    let window = secs_from_env("FRESHNESS_SECS", 120);
    let drain = secs_from_env("FRESHNESS_DRAIN_SECS", 70);
    let rt = common::runtime();
    println!(
        "freshness: {rooms} rooms, rate_limit {}, interval {}, seat_usage off, world tick {} s (prestep {prestep}), \
         scrape every {} ms, window {} s after the first pass (+ up to {} s to see its fills)",
        POLLING.rate_limit,
        POLLING.interval,
        tick.as_secs(),
        SCRAPE_EVERY.as_millis(),
        window.as_secs(),
        drain.as_secs()
    );
    // FRESHNESS_TIERS=on (or off) runs one of the two.
    let tiers = std::env::var("FRESHNESS_TIERS").unwrap_or_else(|_| "on,off".into());
    let runs: Vec<Run> = [true, false]
        .into_iter()
        .filter(|on| {
            tiers
                .split(',')
                .any(|t| t.trim() == if *on { "on" } else { "off" })
        })
        .map(|on| run(&rt, rooms, on, tick, prestep, window, drain))
        .collect();
    // The pass without the tier at the budget's sustained rate (rate_limit
    // per 1.015 s), and the documented bound with it (max_share 0.5).
    let sustained = f64::from(POLLING.rate_limit) / 1.015;
    let pass_off = (rooms as f64 / sustained).max(30.0);
    println!(
        "\n| tier | fills | p50 | p90 | p99 | max | not seen | longest gap between polls (bound) | worst 1 s window | 60011 | watch polls | pass polls | rooms watched (max) |"
    );
    println!("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |");
    for r in &runs {
        let mut d = r.delays.clone();
        let q = |d: &mut Vec<Duration>, p| percentile(d, p).as_secs_f64();
        let bound = if r.on { 2.0 * pass_off } else { pass_off };
        println!(
            "| {} | {} | {:.1} s | {:.1} s | {:.1} s | {:.1} s | {} | {:.1} s ({bound:.1} s) | {} | {} | {} | {} | {} |",
            if r.on { "on" } else { "off" },
            d.len(),
            q(&mut d, 0.5),
            q(&mut d, 0.9),
            q(&mut d, 0.99),
            q(&mut d, 1.0),
            r.missed,
            r.longest_gap,
            r.worst_window,
            r.rate_limited,
            r.watch_polls,
            r.pass_polls,
            r.max_watched,
        );
    }
}

struct Run {
    on: bool,
    delays: Vec<Duration>,
    missed: usize,
    longest_gap: f64,
    worst_window: u64,
    rate_limited: u64,
    watch_polls: f64,
    pass_polls: f64,
    max_watched: f64,
}

fn run(
    rt: &tokio::runtime::Runtime,
    rooms: usize,
    on: bool,
    tick: Duration,
    prestep: u64,
    window: Duration,
    drain: Duration,
) -> Run {
    let watch = format!("  watch:\n    enabled: {on}\n");
    let (sim, exporter) = sim_and_exporter_with(
        rooms,
        Duration::from_millis(20),
        &POLLING,
        &watch,
        |o| o.tick = Some(tick),
        |sim| sim.handle.step(prestep),
    );
    common::wait_ready(rt, &exporter, Duration::from_secs(300));
    sim.handle.reset_period();
    let start = Instant::now();
    let (window_end, deadline) = (start + window, start + window + drain);
    let http = common::client();
    let metrics_url = url(&exporter, "/metrics");
    // Per room, the end of each scrape where it showed full after not doing so.
    let mut became_full: HashMap<String, Vec<Instant>> = HashMap::new();
    let mut full_now: HashSet<String> = HashSet::new();
    let mut max_watched = 0.0f64;
    let mut last_text = String::new();
    let mut next = start;
    loop {
        let now = Instant::now();
        if now >= window_end {
            let pending = window_fills(&sim, start, window_end)
                .iter()
                .any(|(room, at)| first_after(&became_full, room, *at).is_none());
            if !pending || now >= deadline {
                break;
            }
        }
        std::thread::sleep(next.saturating_duration_since(now));
        next += SCRAPE_EVERY;
        let Ok(text) = rt.block_on(async { http.get(&metrics_url).send().await?.text().await }) else {
            continue;
        };
        let seen = Instant::now();
        let full = full_rooms(&text);
        for room in full.difference(&full_now) {
            became_full.entry(room.clone()).or_default().push(seen);
        }
        full_now = full;
        max_watched = max_watched.max(sample(&text, "roomengine_rooms_watched").unwrap_or(0.0));
        last_text = text;
    }
    let mut delays = Vec::new();
    let mut missed = 0;
    // Fills seen later than 15 s, by how long after the first pass they came.
    let mut late_after: Vec<u64> = Vec::new();
    for (room, at) in window_fills(&sim, start, window_end) {
        match first_after(&became_full, &room, at) {
            Some(seen) => {
                let delay = seen.duration_since(at);
                if delay > Duration::from_secs(15) {
                    late_after.push(at.duration_since(start).as_secs());
                }
                delays.push(delay);
            }
            None => missed += 1,
        }
    }
    // Counted per 10 s of the window: where the late ones were.
    let mut per_10s = vec![0usize; (window.as_secs() / 10 + 1) as usize];
    for at in &late_after {
        if let Some(n) = per_10s.get_mut((at / 10) as usize) {
            *n += 1;
        }
    }
    println!(
        "  tier {}: {} fills seen later than 15 s; per 10 s after the first pass: {per_10s:?}",
        if on { "on" } else { "off" },
        late_after.len()
    );
    let period = sim.handle.period();
    let result = Run {
        on,
        delays,
        missed,
        longest_gap: period.poll_intervals.max,
        worst_window: period.max_calls_in_one_second,
        rate_limited: period.answers.get("60011").copied().unwrap_or(0),
        watch_polls: sample(&last_text, "roomengine_polls_total{tier=\"watch\"}").unwrap_or(0.0),
        pass_polls: sample(&last_text, "roomengine_polls_total{tier=\"pass\"}").unwrap_or(0.0),
        max_watched,
    };
    println!(
        "  tier {}: {} fills in the window, {} seen, {:.0} s measured; {:.1} calls/s; load average {}",
        if on { "on" } else { "off" },
        result.delays.len() + result.missed,
        result.delays.len(),
        period.seconds,
        period.calls_per_second,
        common::load_average()
    );
    drop(exporter);
    result
}

/// Fills between `from` and `to`, as (room, instant).
fn window_fills(sim: &common::Sim, from: Instant, to: Instant) -> Vec<(String, Instant)> {
    sim.handle
        .fills()
        .into_iter()
        .filter(|f| f.at >= from && f.at < to)
        .map(|f| (f.room_id, f.at))
        .collect()
}

fn first_after(became_full: &HashMap<String, Vec<Instant>>, room: &str, at: Instant) -> Option<Instant> {
    became_full.get(room)?.iter().copied().find(|&seen| seen >= at)
}

/// Rooms whose `roomengine_room_members` is at least their `roomengine_room_max_members`.
fn full_rooms(text: &str) -> HashSet<String> {
    let series = |prefix: &str| -> HashMap<&str, f64> {
        text.lines()
            .filter_map(|l| l.strip_prefix(prefix))
            .filter_map(|rest| {
                let (room, value) = rest.split_once("\"} ")?;
                Some((room, value.trim().parse().ok()?))
            })
            .collect()
    };
    let max = series("roomengine_room_max_members{room_id=\"");
    series("roomengine_room_members{room_id=\"")
        .into_iter()
        .filter(|(room, members)| max.get(room).is_some_and(|m| *m > 0.0 && members >= m))
        .map(|(room, _)| room.to_owned())
        .collect()
}

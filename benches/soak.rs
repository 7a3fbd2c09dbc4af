//! The soak of issue 6: the release exporter against a simulator with faults
//! (100001, HTTP 502, truncated JSON) and room churn, scraped every second,
//! for SOAK_SECS (600). Prints RSS, sockets, connections to the simulator and
//! threads at the start and every minute, and the budget as the simulator saw
//! it. Not part of plain `cargo bench`: run `cargo bench --bench soak`.

mod common;

use std::time::{Duration, Instant};

use common::{
    established_to, ms, percentile, proc, secs_from_env, sim_and_exporter, timed_get, url, Polling, ProcStat,
};

const ROOMS: usize = 2_000;
const RATE: u32 = 200;

fn main() {
    let run = secs_from_env("SOAK_SECS", 600);
    let sample_every = secs_from_env("SOAK_SAMPLE_SECS", 60);
    let polling = Polling {
        rate_limit: RATE,
        interval: "10s",
        seat_usage: true,
    };
    let (sim, exporter) = sim_and_exporter(ROOMS, Duration::from_millis(20), &polling, |o| {
        o.fault_rate = 0.05;
        o.http_error_rate = 0.02;
        o.malformed_rate = 0.02;
        o.churn = 0.05;
    });
    let sim_port = sim.handle.addr().port();
    let rt = common::runtime();
    let http = common::client();
    common::wait_ready(&rt, &exporter, Duration::from_secs(120));
    sim.handle.reset_period();
    println!(
        "soak: {ROOMS} rooms, rate_limit {RATE}, interval 10s, seat_usage on; simulator: latency 20 ms, \
         100001 on 5%, HTTP 502 on 2%, truncated JSON on 2% of calls, 5% of rooms churned a minute; \
         one scrape a second (every other one gzip); {} s",
        run.as_secs()
    );
    let row = |label: &str, p: &ProcStat| {
        println!(
            "  {label:>6}: RSS {:6.1} MiB (peak {:6.1}), sockets {:3}, connections to the simulator {:3}, threads {:3}, CPU {:7.1} s",
            p.rss_mib(),
            p.hwm_mib(),
            p.sockets,
            established_to(exporter.child.id(), sim_port),
            p.threads,
            p.cpu_seconds
        )
    };
    let start_stat = proc(&exporter);
    row("start", &start_stat);

    let start = Instant::now();
    let mut next_sample = start + sample_every;
    let mut times = Vec::new();
    let mut failures = 0usize;
    let mut gzip = false;
    let url = url(&exporter, "/metrics");
    while start.elapsed() < run {
        let tick = Instant::now();
        match rt.block_on(timed_get(&http, &url, gzip)) {
            Ok((200, _, took)) => times.push(took),
            Ok(_) | Err(_) => failures += 1,
        }
        gzip = !gzip;
        if Instant::now() >= next_sample {
            row(&format!("{}s", start.elapsed().as_secs()), &proc(&exporter));
            next_sample += sample_every;
        }
        std::thread::sleep(Duration::from_secs(1).saturating_sub(tick.elapsed()));
    }
    let end_stat = proc(&exporter);
    row("end", &end_stat);
    let period = sim.handle.period();
    let answers: Vec<String> = period.answers.iter().map(|(c, n)| format!("{c}:{n}")).collect();
    println!(
        "  RSS start {:.1} MiB, end {:.1} MiB ({:+.1}); threads {} -> {}; sockets {} -> {}\n  \
         scrapes {} ok, {failures} failed, median {:.1} ms\n  \
         simulator: {:.1} calls/s, worst one-second window {} (limit {RATE}), answers {}",
        start_stat.rss_mib(),
        end_stat.rss_mib(),
        end_stat.rss_mib() - start_stat.rss_mib(),
        start_stat.threads,
        end_stat.threads,
        start_stat.sockets,
        end_stat.sockets,
        times.len(),
        ms(percentile(&mut times, 0.5)),
        period.calls_per_second,
        period.max_calls_in_one_second,
        answers.join(" "),
    );
}

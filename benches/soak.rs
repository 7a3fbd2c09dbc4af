//! The soak of issue 6: the release exporter against a simulator with faults
//! (100001, HTTP 502, truncated JSON) and room churn, scraped every second,
//! for SOAK_SECS (600). Every SOAK_SAMPLE_SECS (30) it prints RSS, sockets,
//! connections to the simulator beside the most calls the simulator had in
//! flight at once since the last sample (what a pool needs), the exporter's
//! alive tasks and threads; then the budget as the simulator saw it.
//! Not part of plain `cargo bench`: run `cargo bench --bench soak`.

mod common;

use std::time::{Duration, Instant};

use common::{
    established_to, ms, percentile, proc, secs_from_env, sim_and_exporter, timed_get, url, Polling,
};

const ROOMS: usize = 2_000;
const RATE: u32 = 200;

fn main() {
    let run = secs_from_env("SOAK_SECS", 600);
    let sample_every = secs_from_env("SOAK_SAMPLE_SECS", 30);
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
    let url = url(&exporter, "/metrics");
    let tasks = |rt: &tokio::runtime::Runtime| rt.block_on(runtime_tasks(&http, &url));
    let mut samples: Vec<Sample> = Vec::new();
    let mut sample = |label: &str, rt: &tokio::runtime::Runtime| {
        let p = proc(&exporter);
        let s = Sample {
            connections: established_to(exporter.child.id(), sim_port),
            peak_in_flight: sim.handle.take_peak_in_flight(),
            in_flight: sim.handle.in_flight(),
            tasks: tasks(rt),
        };
        println!(
            "  {label:>6}: RSS {:5.1} MiB (peak {:5.1}), sockets {:3}, connections to the simulator {:3} \
             (calls in flight {:3}, most since the last sample {:3}), tasks polling {:4} http {:3}, threads {:2}, CPU {:6.1} s",
            p.rss_mib(),
            p.hwm_mib(),
            p.sockets,
            s.connections,
            s.in_flight,
            s.peak_in_flight,
            s.tasks.0,
            s.tasks.1,
            p.threads,
            p.cpu_seconds
        );
        samples.push(s);
        p
    };
    let start_stat = sample("start", &rt);

    let start = Instant::now();
    let mut next_sample = start + sample_every;
    let mut times = Vec::new();
    let mut failures = 0usize;
    let mut gzip = false;
    while start.elapsed() < run {
        let tick = Instant::now();
        match rt.block_on(timed_get(&http, &url, gzip)) {
            Ok((200, _, took)) => times.push(took),
            Ok(_) | Err(_) => failures += 1,
        }
        gzip = !gzip;
        if Instant::now() >= next_sample {
            sample(&format!("{}s", start.elapsed().as_secs()), &rt);
            next_sample += sample_every;
        }
        std::thread::sleep(Duration::from_secs(1).saturating_sub(tick.elapsed()));
    }
    let end_stat = sample("end", &rt);
    let half = samples.len() / 2;
    let most = |part: &[Sample], f: fn(&Sample) -> usize| part.iter().map(f).max().unwrap_or(0);
    // A kept connection was in use within the idle timeout (30 s) plus the
    // pool's reaper period (30 s): with samples 30 s apart, the pool needs no
    // more than the peak of the last two sample periods.
    // (The simulator counts a call from its handler's start to its end, a
    // little less than the client holds the connection: +1 is expected.)
    let beyond_need = samples
        .windows(2)
        .map(|w| w[1].connections as i64 - w[0].peak_in_flight.max(w[1].peak_in_flight) as i64)
        .max()
        .unwrap_or(0);
    let period = sim.handle.period();
    let answers: Vec<String> = period.answers.iter().map(|(c, n)| format!("{c}:{n}")).collect();
    println!(
        "  connections: most in the first half {}, in the second half {}; at most {beyond_need:+} \
         beside the most calls in flight in the {} s before\n  \
         tasks (polling, http): start {:?}, end {:?}, most in the first half {}, in the second half {}\n  \
         RSS start {:.1} MiB, end {:.1} MiB ({:+.1}); threads {} -> {}; sockets {} -> {}\n  \
         scrapes {} ok, {failures} failed, median {:.1} ms\n  \
         simulator: {:.1} calls/s, worst one-second window {} (limit {RATE}), answers {}",
        most(&samples[..half], |s| s.connections),
        most(&samples[half..], |s| s.connections),
        2 * sample_every.as_secs(),
        samples.first().map(|s| s.tasks).unwrap_or_default(),
        samples.last().map(|s| s.tasks).unwrap_or_default(),
        most(&samples[..half], |s| s.tasks.0 + s.tasks.1),
        most(&samples[half..], |s| s.tasks.0 + s.tasks.1),
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

struct Sample {
    connections: usize,
    peak_in_flight: usize,
    in_flight: usize,
    /// Alive tasks on the exporter's (polling, http) runtimes.
    tasks: (usize, usize),
}

/// `roomengine_exporter_runtime_tasks` of both runtimes, from one scrape.
async fn runtime_tasks(http: &reqwest::Client, url: &str) -> (usize, usize) {
    let text = match http.get(url).send().await {
        Ok(response) => response.text().await.unwrap_or_default(),
        Err(_) => String::new(),
    };
    let value = |runtime: &str| {
        let prefix = format!("roomengine_exporter_runtime_tasks{{runtime=\"{runtime}\"}} ");
        text.lines()
            .find_map(|l| l.strip_prefix(prefix.as_str()))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    };
    (value("polling"), value("http"))
}

//! The regression guard of issue 24: a short run of each performance figure
//! (budget with callbacks off and on, CPU per call and per callback, scrape
//! of 10,000 rooms, peak RSS), compared with `benches/baseline.json` as a
//! ratio; exits non-zero when a figure is more than 25% worse than its
//! baseline or an absolute limit is broken. `REGRESS_UPDATE=1` rewrites the
//! baseline from the run. `cargo bench --bench regress` (about 2 minutes).

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::raw_http::flood;
use common::{ms, percentile, proc, secs_from_env, signed_callback_path, timed_get, Exporter, Polling, Sim};

const RATE_LIMIT: u32 = 200;
/// The budget-bound set-up of issue 24: a pass takes 15 s at 200 calls/s.
const BUDGET_ROOMS: usize = 3_000;
const SCRAPE_ROOMS: usize = 10_000;
/// A figure this much worse than its baseline fails the guard.
const TOLERANCE: f64 = 1.25;
const LATENCY: Duration = Duration::from_millis(20);
const POLLING: Polling = Polling {
    rate_limit: RATE_LIMIT,
    interval: "1s",
    // Only get_room_info, so every call at the simulator is a poll.
    seat_usage: false,
};
const CREATE: &str = "Room.CallbackAfterCreateRoom";
const ENTER: &str = "Room.CallbackAfterMemberEnter";
/// The callback rate the CPU per callback is measured at.
const CALLBACK_RATE: f64 = 5_000.0;
/// Member callbacks per second while the scrapes are timed.
const SCRAPE_CALLBACK_RATE: f64 = 1_000.0;
const SENDERS: usize = 64;

/// How a figure is judged.
#[derive(Clone, Copy)]
enum Judge {
    HigherIsBetter,
    LowerIsBetter,
    /// An absolute limit: broken above it, whatever the baseline says.
    AtMost(f64),
}

struct Figure {
    name: &'static str,
    unit: &'static str,
    judge: Judge,
    value: f64,
}

fn main() {
    let rt = common::runtime();
    let secs = secs_from_env("REGRESS_SECS", 20);
    let load_before = common::load_average();
    println!(
        "regress: {} cores, load average {load_before}, {} s per budget window",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        secs.as_secs()
    );
    let mut figures = Vec::new();
    budget_without_callbacks(secs, &mut figures);
    budget_with_callbacks(&rt, secs, &mut figures);
    scrape_and_memory(&rt, &mut figures);
    let load_after = common::load_average();
    println!("load average at the end {load_after}");

    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/baseline.json");
    let update = std::env::var("REGRESS_UPDATE").is_ok_and(|v| v == "1");
    let baseline = read_baseline(&path);
    let failures = judge(&figures, baseline.as_ref());
    if update {
        write_baseline(&path, &figures, &load_before, &load_after);
        println!("baseline rewritten: {}", path.display());
    } else if baseline.is_none() {
        println!(
            "FAIL: no baseline at {} (REGRESS_UPDATE=1 cargo bench --bench regress writes one)",
            path.display()
        );
        std::process::exit(1);
    }
    if !failures.is_empty() {
        println!("FAIL: {} figure(s):", failures.len());
        for failure in &failures {
            println!("  {failure}");
        }
        std::process::exit(1);
    }
    println!("PASS: every figure within {TOLERANCE}x of its baseline and every limit held");
}

/// Budget and CPU per call: `BUDGET_ROOMS` configured rooms, no callbacks.
fn budget_without_callbacks(secs: Duration, figures: &mut Vec<Figure>) {
    let (sim, exporter) = common::sim_and_exporter(BUDGET_ROOMS, LATENCY, &POLLING, |_| {});
    sim.wait_first_call(Duration::from_secs(20));
    std::thread::sleep(Duration::from_secs(3));
    let window = measure_budget(&sim, &exporter, secs);
    println!(
        "budget, callbacks off ({BUDGET_ROOMS} configured rooms, rate_limit {RATE_LIMIT}, interval 1s): {}",
        window.line()
    );
    window.push("callbacks_off", figures);
    figures.push(Figure {
        name: "cpu_us_per_call",
        unit: "us",
        judge: Judge::LowerIsBetter,
        value: window.cpu_us_per_call,
    });
}

/// Budget with `BUDGET_ROOMS` rooms announced by creates, then the CPU of
/// member callbacks at `CALLBACK_RATE` while polling goes on.
fn budget_with_callbacks(rt: &tokio::runtime::Runtime, secs: Duration, figures: &mut Vec<Figure>) {
    let (sim, exporter, port, _token) = announced(rt, BUDGET_ROOMS);
    let created = BUDGET_ROOMS;
    let window = measure_budget(&sim, &exporter, secs);
    println!(
        "budget, callbacks on ({created} rooms from creates, rate_limit {RATE_LIMIT}, interval 1s): {}",
        window.line()
    );
    window.push("callbacks_on", figures);

    // Member callbacks at CALLBACK_RATE for a few seconds, polls going on.
    let count = (CALLBACK_RATE * 8.0) as u64;
    let before = (proc(&exporter).cpu_seconds, sim.handle.calls("get_room_info"));
    let sent = members(port, &sim, count, CALLBACK_RATE)
        .join()
        .expect("callback senders");
    let cpu = proc(&exporter).cpu_seconds - before.0;
    let polls = sim.handle.calls("get_room_info") - before.1;
    // The polls' share, at the CPU per call measured just before.
    let polling_cpu = polls as f64 * window.cpu_us_per_call / 1e6;
    let per_callback = cpu * 1e6 / sent.ok.max(1) as f64;
    let mut latencies = sent.latencies;
    println!(
        "callbacks at {CALLBACK_RATE}/s: {} accepted ({:.0}/s), {} failed, answer p50 {:.2} ms, p99 {:.2} ms; \
         process CPU {:.2} s = {per_callback:.1} us per accepted callback ({:.1} us without the {polls} polls meanwhile)",
        sent.ok,
        sent.ok as f64 / sent.elapsed.as_secs_f64(),
        sent.failed,
        ms(percentile(&mut latencies, 0.5)),
        ms(percentile(&mut latencies, 0.99)),
        cpu,
        (cpu - polling_cpu) * 1e6 / sent.ok.max(1) as f64,
    );
    figures.push(Figure {
        name: "cpu_us_per_callback",
        unit: "us",
        judge: Judge::LowerIsBetter,
        value: per_callback,
    });
    figures.push(Figure {
        name: "callbacks_failed",
        unit: "",
        judge: Judge::AtMost(0.0),
        value: sent.failed as f64,
    });
}

/// Median plain and gzip scrape of `SCRAPE_ROOMS` rooms announced by
/// creates, while polling runs at the full budget and member callbacks
/// arrive at `SCRAPE_CALLBACK_RATE`; then the exporter's peak RSS.
fn scrape_and_memory(rt: &tokio::runtime::Runtime, figures: &mut Vec<Figure>) {
    const SCRAPES: usize = 20;
    let (sim, exporter, port, _token) = announced(rt, SCRAPE_ROOMS);
    let created = SCRAPE_ROOMS;
    let background = members(
        port,
        &sim,
        (SCRAPE_CALLBACK_RATE * 6.0) as u64,
        SCRAPE_CALLBACK_RATE,
    );
    let http = common::client();
    let url = common::url(&exporter, "/metrics");
    for (gzip, name) in [(false, "scrape_median_ms_plain"), (true, "scrape_median_ms_gzip")] {
        let mut times = Vec::with_capacity(SCRAPES);
        let mut bytes = 0;
        rt.block_on(async {
            // One unmeasured scrape: connection set up, first touch of buffers.
            let _ = timed_get(&http, &url, gzip).await;
            for _ in 0..SCRAPES {
                let (status, size, took) = timed_get(&http, &url, gzip).await.expect("scrape");
                assert_eq!(status, 200, "scrape answered {status}");
                bytes = size;
                times.push(took);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        });
        let median = ms(percentile(&mut times, 0.5));
        println!(
            "scrape of {created} rooms from creates, {} ({:.1} MB), {SCRAPES} scrapes under polling and {SCRAPE_CALLBACK_RATE} callbacks/s: median {median:.2} ms, p99 {:.2} ms",
            if gzip { "gzip" } else { "plain" },
            bytes as f64 / 1e6,
            ms(percentile(&mut times, 0.99)),
        );
        figures.push(Figure {
            name,
            unit: "ms",
            judge: Judge::LowerIsBetter,
            value: median,
        });
    }
    let background = background.join().expect("callback senders");
    let stat = proc(&exporter);
    let series = rt
        .block_on(exporter.metrics())
        .lines()
        .filter(|l| l.starts_with("roomengine_room_"))
        .count();
    println!(
        "memory at {created} rooms ({series} room series): peak RSS (VmHWM) {:.1} MiB, RSS {:.1} MiB; {} member callbacks accepted meanwhile, {} failed",
        stat.hwm_mib(),
        stat.rss_mib(),
        background.ok,
        background.failed
    );
    figures.push(Figure {
        name: "peak_rss_mib",
        unit: "MiB",
        judge: Judge::LowerIsBetter,
        value: stat.hwm_mib(),
    });
}

/// A simulator of `rooms` rooms and the exporter with the receiver on (no
/// configured room), every room announced by a signed create, the creates
/// answered and polling under way; the receiver's port.
fn announced(rt: &tokio::runtime::Runtime, rooms: usize) -> (Sim, Exporter, u16, tempfile::TempDir) {
    let sim = Sim::start(rooms, |o| {
        o.rate_limit = RATE_LIMIT;
        o.latency = LATENCY;
    });
    let port = common::free_port();
    let (exporter, token) = common::exporter_with_callbacks(&sim, &POLLING, port);
    rt.block_on(exporter.wait_ready(Duration::from_secs(20)));
    let ids = sim.handle.room_ids();
    let answers = flood(port, SENDERS, ids.len() as u64, None, move |n| {
        let at = roomengine_exporter::clock::unix_now_ms();
        let body = common::create_body(&ids[n as usize], at);
        (signed_callback_path(CREATE), body.to_string())
    })
    .join()
    .expect("create senders");
    assert_eq!((answers.ok, answers.failed), (rooms as u64, 0), "creates refused");
    sim.wait_first_call(Duration::from_secs(20));
    // Past the start-up, so the windows see the steady pace.
    std::thread::sleep(Duration::from_secs(3));
    (sim, exporter, port, token)
}

/// `count` signed member callbacks over the rooms of `sim`, paced at `rate`.
fn members(port: u16, sim: &Sim, count: u64, rate: f64) -> std::thread::JoinHandle<common::raw_http::Flood> {
    let rooms = sim.handle.room_ids();
    flood(port, SENDERS, count, Some(rate), move |n| {
        let room = &rooms[n as usize % rooms.len()];
        let body = common::members_body(room, n % 50, roomengine_exporter::clock::unix_now_ms());
        (signed_callback_path(ENTER), body.to_string())
    })
}

/// The budget as the simulator saw it over one window, and the exporter's CPU.
struct BudgetWindow {
    calls_per_second: f64,
    worst_window: u64,
    answers_60011: u64,
    cpu_us_per_call: f64,
}

fn measure_budget(sim: &Sim, exporter: &Exporter, secs: Duration) -> BudgetWindow {
    sim.handle.reset_period();
    let cpu_before = proc(exporter).cpu_seconds;
    std::thread::sleep(secs);
    let period = sim.handle.period();
    let cpu = proc(exporter).cpu_seconds - cpu_before;
    BudgetWindow {
        calls_per_second: period.calls_per_second,
        worst_window: period.max_calls_in_one_second,
        answers_60011: period.answers.get("60011").copied().unwrap_or(0),
        cpu_us_per_call: cpu * 1e6 / period.calls.max(1) as f64,
    }
}

impl BudgetWindow {
    fn line(&self) -> String {
        format!(
            "{:.1} calls/s ({:.1}%), worst one-second window {}, 60011 answers {}, process CPU {:.1} us per call",
            self.calls_per_second,
            100.0 * self.calls_per_second / f64::from(RATE_LIMIT),
            self.worst_window,
            self.answers_60011,
            self.cpu_us_per_call
        )
    }

    fn push(&self, case: &'static str, figures: &mut Vec<Figure>) {
        let (rate, worst, rejected) = match case {
            "callbacks_off" => (
                "budget_calls_per_second_callbacks_off",
                "worst_window_callbacks_off",
                "answers_60011_callbacks_off",
            ),
            _ => (
                "budget_calls_per_second_callbacks_on",
                "worst_window_callbacks_on",
                "answers_60011_callbacks_on",
            ),
        };
        figures.push(Figure {
            name: rate,
            unit: "calls/s",
            judge: Judge::HigherIsBetter,
            value: self.calls_per_second,
        });
        figures.push(Figure {
            name: worst,
            unit: "calls",
            judge: Judge::AtMost(f64::from(RATE_LIMIT)),
            value: self.worst_window as f64,
        });
        figures.push(Figure {
            name: rejected,
            unit: "",
            judge: Judge::AtMost(0.0),
            value: self.answers_60011 as f64,
        });
    }
}

/// Prints every figure beside its baseline; the failures, each naming the
/// figure, the baseline, the new value and the ratio.
fn judge(figures: &[Figure], baseline: Option<&BTreeMap<String, f64>>) -> Vec<String> {
    let mut failures = Vec::new();
    println!(
        "{:<40} {:>10} {:>10} {:>8}  verdict",
        "figure", "baseline", "now", "worse x"
    );
    for f in figures {
        let base = baseline.and_then(|b| b.get(f.name).copied());
        let base_text = base.map_or("-".to_owned(), |b| format!("{b:.2}"));
        let (ratio, verdict) = match (f.judge, base) {
            (Judge::AtMost(limit), _) if f.value > limit => {
                failures.push(format!(
                    "{}: {} {} is over the limit {limit}",
                    f.name, f.value, f.unit
                ));
                (None, format!("FAIL (limit {limit})"))
            }
            (Judge::AtMost(limit), _) => (None, format!("ok (limit {limit})")),
            (_, None) => (None, "no baseline".to_owned()),
            (judge, Some(base)) => {
                // How many times worse than the baseline: above 1 is worse.
                let worse = match judge {
                    Judge::HigherIsBetter => base / f.value.max(f64::MIN_POSITIVE),
                    _ => f.value / base.max(f64::MIN_POSITIVE),
                };
                let direction = match judge {
                    Judge::HigherIsBetter => "higher is better",
                    _ => "lower is better",
                };
                if worse > TOLERANCE {
                    failures.push(format!(
                        "{}: baseline {base:.2} {unit}, now {:.2} {unit}, {worse:.2}x worse ({direction}; allowed {TOLERANCE}x)",
                        f.name,
                        f.value,
                        unit = f.unit
                    ));
                    (Some(worse), "FAIL".to_owned())
                } else {
                    (Some(worse), "ok".to_owned())
                }
            }
        };
        println!(
            "{:<40} {base_text:>10} {:>10.2} {:>8}  {verdict}",
            format!("{} ({})", f.name, f.unit),
            f.value,
            ratio.map_or("-".to_owned(), |r| format!("{r:.2}")),
        );
    }
    failures
}

fn read_baseline(path: &std::path::Path) -> Option<BTreeMap<String, f64>> {
    let text = std::fs::read_to_string(path).ok()?;
    let doc: serde_json::Value = serde_json::from_str(&text).ok()?;
    let figures = doc.get("figures")?.as_object()?;
    Some(
        figures
            .iter()
            .filter_map(|(name, v)| v.as_f64().map(|v| (name.clone(), v)))
            .collect(),
    )
}

fn write_baseline(path: &std::path::Path, figures: &[Figure], load_before: &str, load_after: &str) {
    let recorded = std::process::Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M UTC"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    let values: serde_json::Map<String, serde_json::Value> = figures
        .iter()
        .map(|f| {
            (
                f.name.to_owned(),
                serde_json::json!((f.value * 100.0).round() / 100.0),
            )
        })
        .collect();
    let doc = serde_json::json!({
        "recorded": recorded,
        "machine": format!("{} cores", std::thread::available_parallelism().map_or(0, |n| n.get())),
        "load_average": format!("{load_before} at the start, {load_after} at the end"),
        "command": "REGRESS_UPDATE=1 cargo bench --bench regress",
        "figures": values,
    });
    let text = serde_json::to_string_pretty(&doc).expect("JSON of numbers and strings");
    std::fs::write(path, text + "\n").expect("baseline written");
}

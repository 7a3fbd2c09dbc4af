//! Helpers shared by the whole-process benchmarks: the simulator on its own
//! thread and runtime (so load in the bench cannot delay its arrival times),
//! the release exporter binary as a child process, /proc readings of that
//! process, timed scrapes and percentiles.
#![allow(dead_code)]

use std::process::Command;
use std::time::{Duration, Instant};

use roomengine_exporter::config::SecretKey;
use roomengine_exporter::sim::{SimHandle, SimOptions, Simulator};

/// The end-to-end tests' harness: its `Exporter` runs the binary (here the
/// bench profile's, i.e. release) with the harness's SecretKey.
#[path = "../../tests/common/mod.rs"]
mod harness;
pub mod raw_http;
pub use harness::{Exporter, KEY};
// For the flood benches (benches/bounds.rs, benches/regress.rs).
#[allow(unused_imports)]
pub use harness::{create_body, free_port, members_body, worst_window, Fake};

/// The value of the sample line `series` in a scrape (the tests' helper).
pub fn value(text: &str, series: &str) -> Option<f64> {
    harness::value(text, series)
}

/// A simulator serving on 127.0.0.1 from a thread of its own.
pub struct Sim {
    pub handle: SimHandle,
    /// Dropping it ends the simulator thread's runtime.
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl Sim {
    /// Starts a simulator with `rooms` and the given options changed by `edit`.
    pub fn start(rooms: usize, edit: impl FnOnce(&mut SimOptions)) -> Sim {
        let mut options = SimOptions {
            rooms,
            ..SimOptions::new(SecretKey::new(KEY.into()))
        };
        edit(&mut options);
        let (handle_tx, handle_rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        std::thread::spawn(move || {
            renice_this_thread();
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("simulator runtime");
            rt.block_on(async move {
                let handle = Simulator::start(options).await.expect("simulator starts");
                handle_tx.send(handle).expect("bench waits for the simulator");
                let _ = stop_rx.await;
            });
        });
        let handle = handle_rx.recv().expect("simulator started");
        Sim {
            handle,
            _stop: stop_tx,
        }
    }

    /// Waits until the simulator has received a call.
    pub fn wait_first_call(&self, within: Duration) {
        let start = Instant::now();
        while self.handle.calls("get_room_info") == 0 {
            assert!(
                start.elapsed() < within,
                "no call reached the simulator within {within:?}"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

/// With `BENCH_SIM_NICE=N` (e.g. -10; negative needs root), runs the
/// simulator's thread at that nice value: a real API server does not share
/// its CPU with the exporter and the bench's scrapers, so this separates the
/// exporter's send jitter from the simulator's own scheduling delays.
fn renice_this_thread() {
    let Ok(nice) = std::env::var("BENCH_SIM_NICE") else {
        return;
    };
    let tid = std::fs::read_link("/proc/thread-self")
        .ok()
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()));
    let ok = tid.is_some_and(|tid| {
        Command::new("renice")
            .args(["-n", &nice, "-p", &tid])
            .stdout(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    });
    println!(
        "simulator thread nice {nice}: {}",
        if ok { "set" } else { "could not be set" }
    );
}

/// The exporter's settings in a bench run.
pub struct Polling {
    pub rate_limit: u32,
    pub interval: &'static str,
    pub seat_usage: bool,
}

/// A simulator of `rooms` rooms (limit and latency as given, then `edit`)
/// and the release exporter polling all of them with `polling`.
pub fn sim_and_exporter(
    rooms: usize,
    latency: Duration,
    polling: &Polling,
    edit: impl FnOnce(&mut SimOptions),
) -> (Sim, Exporter) {
    sim_and_exporter_with(rooms, latency, polling, "", edit, |_| {})
}

/// As [`sim_and_exporter`], with `more_polling` (indented YAML lines) added to
/// the polling section and `before` run on the simulator before the exporter starts.
pub fn sim_and_exporter_with(
    rooms: usize,
    latency: Duration,
    polling: &Polling,
    more_polling: &str,
    edit: impl FnOnce(&mut SimOptions),
    before: impl FnOnce(&Sim),
) -> (Sim, Exporter) {
    let sim = Sim::start(rooms, |o| {
        o.rate_limit = polling.rate_limit;
        o.latency = latency;
        edit(o);
    });
    before(&sim);
    let yaml = format!(
        "  interval: {}\n  rate_limit: {}\n  timeout: 5s\n  seat_usage: {}\n{more_polling}probe:\n  enabled: false",
        polling.interval, polling.rate_limit, polling.seat_usage
    );
    let exporter = Exporter::start(&sim.handle.base_url(), &yaml, &sim.handle.room_ids(), &[]);
    (sim, exporter)
}

/// `http://127.0.0.1:PORT{path}` of the exporter.
pub fn url(exporter: &Exporter, path: &str) -> String {
    format!("http://{}{path}", exporter.addr)
}

/// Waits until `/-/ready` answers 200 (the first pass is complete).
pub fn wait_ready(rt: &tokio::runtime::Runtime, exporter: &Exporter, within: Duration) {
    rt.block_on(exporter.wait_ready(within));
}

/// A /proc reading of the exporter process now.
pub fn proc(exporter: &Exporter) -> ProcStat {
    ProcStat::read(exporter.child.id())
}

/// Memory, CPU, threads and sockets of a process, from /proc.
#[derive(Debug, Clone, Copy)]
pub struct ProcStat {
    pub rss_kib: u64,
    /// Peak resident set (VmHWM).
    pub hwm_kib: u64,
    pub threads: u64,
    /// utime + stime.
    pub cpu_seconds: f64,
    /// Open file descriptors that are sockets.
    pub sockets: usize,
}

impl ProcStat {
    pub fn read(pid: u32) -> ProcStat {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc/PID/status");
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0)
        };
        ProcStat {
            rss_kib: field("VmRSS:"),
            hwm_kib: field("VmHWM:"),
            threads: field("Threads:"),
            cpu_seconds: cpu_seconds(pid),
            sockets: socket_inodes(pid).len(),
        }
    }

    pub fn rss_mib(&self) -> f64 {
        self.rss_kib as f64 / 1024.0
    }

    pub fn hwm_mib(&self) -> f64 {
        self.hwm_kib as f64 / 1024.0
    }
}

/// utime + stime of a process in seconds (fields 14 and 15 of /proc/PID/stat,
/// counted after the parenthesised command name, which may hold spaces).
fn cpu_seconds(pid: u32) -> f64 {
    stat_cpu_seconds(&std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("/proc/PID/stat"))
}

/// utime + stime from the text of a /proc/.../stat file.
fn stat_cpu_seconds(stat: &str) -> f64 {
    let after_name = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // after_name starts at field 3 (state): utime is field 14, stime field 15.
    let ticks: u64 = [11, 12]
        .iter()
        .filter_map(|&i| fields.get(i).and_then(|v| v.parse::<u64>().ok()))
        .sum();
    ticks as f64 / clock_ticks_per_second()
}

fn clock_ticks_per_second() -> f64 {
    static TICKS: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
            .unwrap_or(100.0)
    })
}

/// Inodes of the sockets among a process's open file descriptors.
pub fn socket_inodes(pid: u32) -> Vec<u64> {
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|fd| std::fs::read_link(fd.path()).ok())
        .filter_map(|target| {
            target
                .to_str()
                .and_then(|t| t.strip_prefix("socket:["))
                .and_then(|t| t.strip_suffix(']'))
                .and_then(|t| t.parse().ok())
        })
        .collect()
}

/// The process's ESTABLISHED TCP connections to `port` on the remote side
/// (matched by socket inode in /proc/PID/net/tcp).
pub fn established_to(pid: u32, port: u16) -> usize {
    let inodes = socket_inodes(pid);
    let table = std::fs::read_to_string(format!("/proc/{pid}/net/tcp")).unwrap_or_default();
    table
        .lines()
        .skip(1)
        .filter(|line| {
            let cols: Vec<&str> = line.split_whitespace().collect();
            let remote_port = cols
                .get(2)
                .and_then(|r| r.rsplit_once(':'))
                .and_then(|(_, p)| u16::from_str_radix(p, 16).ok());
            let established = cols.get(3) == Some(&"01");
            let inode = cols.get(9).and_then(|i| i.parse::<u64>().ok());
            established && remote_port == Some(port) && inode.is_some_and(|i| inodes.contains(&i))
        })
        .count()
}

/// One timed GET of `url` read to the end: (status, bytes on the wire, time).
/// With `gzip` it asks for gzip and keeps the body compressed (reqwest here
/// has no decompression), as Prometheus receives it.
pub async fn timed_get(
    http: &reqwest::Client,
    url: &str,
    gzip: bool,
) -> Result<(u16, usize, Duration), String> {
    let start = Instant::now();
    let mut request = http.get(url);
    if gzip {
        request = request.header("Accept-Encoding", "gzip");
    }
    let response = request.send().await.map_err(|e| e.to_string())?;
    let status = response.status().as_u16();
    let compressed = response
        .headers()
        .get("content-encoding")
        .is_some_and(|v| v == "gzip");
    if gzip && !compressed {
        return Err("asked for gzip, got an uncompressed body".into());
    }
    let body = response.bytes().await.map_err(|e| e.to_string())?;
    Ok((status, body.len(), start.elapsed()))
}

/// Nearest-rank percentile `q` (0..=1) of `values`, which it sorts; the
/// default (zero) when there are none.
pub fn percentile<T: Copy + Ord + Default>(values: &mut [T], q: f64) -> T {
    if values.is_empty() {
        return T::default();
    }
    values.sort_unstable();
    let rank = ((q * values.len() as f64).ceil() as usize).clamp(1, values.len());
    values[rank - 1]
}

pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Whether the section `name` runs: all of them unless `BENCH_ONLY` lists
/// some (comma-separated), e.g. `BENCH_ONLY=fidelity,load`.
pub fn section_enabled(name: &str) -> bool {
    match std::env::var("BENCH_ONLY") {
        Ok(list) if !list.trim().is_empty() => list.split(',').any(|s| s.trim() == name),
        _ => true,
    }
}

/// A number of seconds from the environment variable `name`, else `default`.
pub fn secs_from_env(name: &str, default: u64) -> Duration {
    let secs = std::env::var(name)
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(default);
    Duration::from_secs(secs)
}

/// The 1-minute load average, printed beside figures taken on a shared machine.
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().map(str::to_owned))
        .unwrap_or_else(|| "?".into())
}

/// utime + stime of the calling thread, in seconds.
pub fn thread_cpu_seconds() -> f64 {
    stat_cpu_seconds(&std::fs::read_to_string("/proc/thread-self/stat").unwrap_or_default())
}

/// A multi-thread runtime for the bench's own clients.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("bench runtime")
}

/// A client that opens a fresh pool per bench, with no overall timeout (a
/// slow scrape is a figure, not an error) but a connect timeout.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(5))
        .build()
        .expect("HTTP client")
}

/// The bench's SecretKey for `config::parse`, whatever the environment holds.
pub struct BenchSecrets;

impl roomengine_exporter::config::SecretSource for BenchSecrets {
    fn env(&self, _name: &str) -> Option<String> {
        Some(KEY.into())
    }
    fn read_file(&self, path: &std::path::Path) -> std::io::Result<String> {
        std::fs::read_to_string(path)
    }
}

/// Median of `runs` timings of `f` (the in-process benches).
pub fn median(runs: usize, mut f: impl FnMut()) -> Duration {
    let mut times: Vec<Duration> = (0..runs)
        .map(|_| {
            let start = Instant::now();
            f();
            start.elapsed()
        })
        .collect();
    times.sort();
    times[runs / 2]
}

/// The callback token of the benches that run the receiver with `Sign` checks.
pub const CALLBACK_TOKEN: &str = "bench-callback-token-0123456789";

/// The query Tencent sends a `command` callback with, signed now with [`CALLBACK_TOKEN`].
pub fn signed_callback_path(command: &str) -> String {
    let request_time = roomengine_exporter::clock::unix_now();
    let sign = roomengine_exporter::sim::callback_sign(CALLBACK_TOKEN, request_time);
    format!(
        "/callback?SdkAppid={}&CallbackCommand={command}&contenttype=json&ClientIP=127.0.0.1&OptPlatform=RESTAPI&Sign={sign}&RequestTime={request_time}",
        harness::SDKAPPID
    )
}

/// The release exporter against `sim` with no configured room, the callback
/// receiver on `callback_port` (token [`CALLBACK_TOKEN`], SQLite state file)
/// and `polling` as given: every room it polls is one callbacks announced.
pub fn exporter_with_callbacks(
    sim: &Sim,
    polling: &Polling,
    callback_port: u16,
) -> (Exporter, tempfile::TempDir) {
    let token_dir = tempfile::tempdir().expect("temp dir");
    let token_file = token_dir.path().join("token");
    std::fs::write(&token_file, CALLBACK_TOKEN).expect("token file");
    let yaml = format!(
        "app:\n  sdkappid: {}\n  identifier: {}\n  endpoint: {}\n  usersig_ttl: 1h\npolling:\n  interval: {}\n  rate_limit: {}\n  timeout: 5s\n  seat_usage: {}\nprobe:\n  enabled: false\nrooms: []\ncallbacks:\n  listen_address: 127.0.0.1:{callback_port}\n  token_file: {}\n  state_file: state.db\n",
        harness::SDKAPPID,
        harness::IDENTIFIER,
        sim.handle.base_url(),
        polling.interval,
        polling.rate_limit,
        polling.seat_usage,
        token_file.display()
    );
    (Exporter::start_yaml(&yaml, &[]), token_dir)
}

//! HA replicas sharing one API budget (issue 22): two, then three, release
//! exporter processes with `callbacks.redis_url` on one real `redis-server`
//! (loopback, free port, no persistence unless `HA_REDIS_AOF=1`), against
//! the in-process simulator: 3,000 configured rooms, `polling.rate_limit:
//! 200`, `polling.interval: 5s` (every pass is budget-bound: the group must
//! use the whole budget), and each replica's
//!
//! ```yaml
//! ha:
//!   replica_id: a        # b, c
//!   heartbeat: 2s
//!   dead_after: 10s
//! ```
//!
//! The simulator logs every call (arrival, TCP source port, API, room,
//! answer); a tracker thread maps source ports to replicas every 0.5 s (the
//! exporters' sockets in /proc/net/tcp{,6} by inode, from /proc/PID/fd), so
//! every call is attributed to the replica that made it. Phases
//! (`HA_RUNS=steady,kill,restart,third,redis`, all by default): steady
//! state, `kill -9` of a replica and the takeover, its restart, a third
//! replica joining, and a `kill -9` of redis-server under a stream of
//! signed callbacks. One table at the end, measured figure against target,
//! PASS/FAIL; the exit status is 1 when any row fails.
//!
//! `cargo bench --bench ha` (about 11 minutes). Knobs: `HA_RUNS`,
//! `HA_STEADY_SECS` (300), `HA_BLOCK=0` (leave the `ha:` block out: the
//! exporter before HA, where each replica polls every room at its own
//! `rate_limit`; the table then shows what the harness catches),
//! `HA_SEATS=1` (`polling.seat_usage: true`: seat calls share the budget
//! too; the pass is then longer than 15 s), `HA_REDIS_AOF=1` (Redis with
//! `appendonly yes`, `appendfsync always`), `BENCH_SIM_NICE`. Each
//! replica's log is copied to `target/tmp/ha-bench/` at the end.

mod common;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{free_port, members_body, percentile, value, worst_window, Exporter, Sim, CALLBACK_TOKEN};
use roomengine_exporter::sim::CallRecord;

const ROOMS: usize = 3_000;
const RATE_LIMIT: usize = 200;
const INTERVAL: &str = "5s";
const HEARTBEAT: &str = "2s";
const DEAD_AFTER: Duration = Duration::from_secs(10);
/// One pass over every room at the whole budget: 3,000 / 200 per s.
const PASS: Duration = Duration::from_secs((ROOMS / RATE_LIMIT) as u64);
const WARM_UP: Duration = Duration::from_secs(20);
/// The windows before and after a change of membership whose pollers are compared.
const MOVE_WINDOW: Duration = Duration::from_secs(30);
const SCAN_EVERY: Duration = Duration::from_millis(500);
/// A call is attributed to a connection seen this close to its arrival.
const ATTRIBUTION_SLACK: Duration = Duration::from_secs(2);
const READY_WITHIN: Duration = Duration::from_secs(120);
const SDKAPPID: u64 = 1_400_000_000;
const ENTER: &str = "Room.CallbackAfterMemberEnter";
/// Rooms the redis phase sends member callbacks for.
const CALLBACK_ROOMS: usize = 50;
const CALLBACK_LANES: usize = 5;

fn main() {
    let runs = std::env::var("HA_RUNS").unwrap_or_else(|_| "steady,kill,restart,third,redis".into());
    let run = |name: &str| runs.split(',').any(|r| r.trim() == name);
    let steady_for = common::secs_from_env("HA_STEADY_SECS", 300);
    let ha_block = std::env::var("HA_BLOCK").map_or(true, |v| v.trim() != "0");
    let seats = std::env::var("HA_SEATS").is_ok_and(|v| v.trim() == "1");
    let aof = std::env::var("HA_REDIS_AOF").is_ok_and(|v| v.trim() == "1");
    println!(
        "ha: {ROOMS} configured rooms, rate_limit {RATE_LIMIT}, interval {INTERVAL}, seat_usage {seats}, ha block {} (heartbeat {HEARTBEAT}, dead_after {DEAD_AFTER:?}), Redis persistence {}, runs {runs}, load average {}",
        if ha_block { "on" } else { "off (HA_BLOCK=0)" },
        if aof { "appendfsync always" } else { "none" },
        common::load_average()
    );
    println!("binary: {}", env!("CARGO_BIN_EXE_roomengine-exporter"));

    let sim = Arc::new(Sim::start(ROOMS, |o| {
        o.rate_limit = RATE_LIMIT as u32;
        o.latency = Duration::from_millis(20);
        o.call_log = 2_000_000;
    }));
    let rt = common::runtime();
    let tracker = Tracker::start(sim.clone());
    let redis = Redis::start(aof);
    let mut group = Group::new(&sim, redis, tracker, ha_block, seats);
    let mut table = Table::default();

    if run("steady") {
        steady(&rt, &mut group, &mut table, steady_for);
    }
    if run("kill") {
        kill(&rt, &mut group, &mut table);
    }
    if run("restart") {
        restart(&rt, &mut group, &mut table);
    }
    if run("third") {
        third(&rt, &mut group, &mut table);
    }
    if run("redis") {
        redis_restart(&rt, &mut group, &sim, &mut table);
    }
    let exited = group.exited();
    table.row(
        "all",
        "replicas that exited on their own",
        if exited.is_empty() {
            "none".into()
        } else {
            exited.join(", ")
        },
        "none",
        Some(exited.is_empty()),
    );
    table.row(
        "all",
        "calls the simulator's log could not keep",
        sim.handle.call_log_dropped().to_string(),
        "0",
        Some(sim.handle.call_log_dropped() == 0),
    );
    drop(group);
    let failed = table.print(ha_block);
    if failed > 0 {
        std::process::exit(1);
    }
}

// ---- the results table ----

struct Row {
    phase: &'static str,
    what: String,
    figure: String,
    target: String,
    pass: Option<bool>,
}

#[derive(Default)]
struct Table {
    rows: Vec<Row>,
}

impl Table {
    fn row(&mut self, phase: &'static str, what: &str, figure: String, target: &str, pass: Option<bool>) {
        println!(
            "  [{phase}] {what}: {figure}{}",
            match pass {
                Some(p) => format!(" (target {target}: {})", verdict(p)),
                None => String::new(),
            }
        );
        self.rows.push(Row {
            phase,
            what: what.to_owned(),
            figure,
            target: target.to_owned(),
            pass,
        });
    }

    /// Prints the table; the number of failed rows.
    fn print(&self, ha_block: bool) -> usize {
        println!(
            "\nHA benchmark, {} (load average {}):\n",
            if ha_block {
                "ha block on"
            } else {
                "HA_BLOCK=0 (no ha: block)"
            },
            common::load_average()
        );
        println!("| phase | measure | figure | target | verdict |");
        println!("| --- | --- | --- | --- | --- |");
        for r in &self.rows {
            println!(
                "| {} | {} | {} | {} | {} |",
                r.phase,
                r.what,
                r.figure,
                if r.pass.is_some() { &r.target } else { "" },
                r.pass.map_or("", verdict)
            );
        }
        let failed = self.rows.iter().filter(|r| r.pass == Some(false)).count();
        let judged = self.rows.iter().filter(|r| r.pass.is_some()).count();
        println!("\n{} of {judged} targets met, {failed} failed", judged - failed);
        failed
    }
}

fn verdict(pass: bool) -> &'static str {
    if pass {
        "PASS"
    } else {
        "FAIL"
    }
}

// ---- redis-server ----

/// A `redis-server` on a free loopback port (killed on drop), restartable on that port.
struct Redis {
    port: u16,
    aof: bool,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl Redis {
    fn start(aof: bool) -> Redis {
        let mut redis = Redis {
            port: free_port(),
            aof,
            dir: tempfile::tempdir().expect("temp dir"),
            child: None,
        };
        redis.spawn();
        redis
    }

    /// Starts the server and waits until it answers PING; when it did.
    fn spawn(&mut self) -> Instant {
        let persistence: &[&str] = if self.aof {
            &["--appendonly", "yes", "--appendfsync", "always"]
        } else {
            &["--appendonly", "no"]
        };
        let child = Command::new("redis-server")
            .args([
                "--port",
                &self.port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
            ])
            .args(persistence)
            .arg("--dir")
            .arg(self.dir.path())
            .arg("--logfile")
            .arg(self.dir.path().join("redis.log"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server starts (bash tests/ensure-redis.sh installs it)");
        self.child = Some(child);
        let start = Instant::now();
        loop {
            if self.ping() {
                return Instant::now();
            }
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "redis-server not answering within 10 s"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    fn connection(&self) -> redis::RedisResult<redis::Connection> {
        redis::Client::open(self.url())?.get_connection_with_timeout(Duration::from_millis(500))
    }

    fn ping(&self) -> bool {
        self.connection()
            .and_then(|mut con| redis::cmd("PING").query::<String>(&mut con))
            .is_ok()
    }

    fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// What Redis holds of `room`'s member count (the record's MemberCount).
    fn members(&self, room: &str) -> Option<u64> {
        let mut con = self.connection().ok()?;
        let text: Option<String> = redis::cmd("GET")
            .arg(format!("roomengine:{SDKAPPID}:room:{room}"))
            .query(&mut con)
            .ok()?;
        find_key(&serde_json::from_str(&text?).ok()?, "MemberCount")
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// The first number under `key` anywhere in `doc` (the record's layout may change).
fn find_key(doc: &serde_json::Value, key: &str) -> Option<u64> {
    match doc {
        serde_json::Value::Object(map) => map
            .get(key)
            .and_then(serde_json::Value::as_u64)
            .or_else(|| map.values().find_map(|v| find_key(v, key))),
        serde_json::Value::Array(items) => items.iter().find_map(|v| find_key(v, key)),
        _ => None,
    }
}

// ---- who made each call ----

/// A connection's local port belonged to `replica` from `first` to `last` (scans).
#[derive(Clone, Copy)]
struct Span {
    replica: &'static str,
    first: Instant,
    last: Instant,
}

#[derive(Default)]
struct Seen {
    calls: Vec<CallRecord>,
    ports: HashMap<u16, Vec<Span>>,
    scans: u64,
}

/// A call as the benchmark judges it: when, by whom (`None`: not attributed).
#[derive(Clone)]
struct Call {
    at: Instant,
    replica: Option<&'static str>,
    api: &'static str,
    room: Option<compact_str::CompactString>,
    code: compact_str::CompactString,
}

impl Call {
    /// A get_room_info the API answered (not refused with 60011).
    fn is_poll(&self) -> bool {
        self.api == "get_room_info" && self.code != "60011"
    }
}

/// Every 0.5 s: takes the simulator's call log, and maps the local ports of
/// the live replicas' connections to the simulator to the replica.
struct Tracker {
    seen: Arc<Mutex<Seen>>,
    pids: Arc<Mutex<Vec<(&'static str, u32)>>>,
    stop: Arc<AtomicBool>,
}

impl Tracker {
    fn start(sim: Arc<Sim>) -> Tracker {
        let seen = Arc::new(Mutex::new(Seen::default()));
        let pids: Arc<Mutex<Vec<(&'static str, u32)>>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let (s, p, halt) = (seen.clone(), pids.clone(), stop.clone());
        let sim_port = sim.handle.addr().port();
        std::thread::spawn(move || {
            while !halt.load(Ordering::Relaxed) {
                let now = Instant::now();
                let owners: Vec<(u16, &'static str)> = connections_to(sim_port, &p.lock().unwrap());
                let calls = sim.handle.take_call_log();
                let mut seen = s.lock().unwrap();
                seen.calls.extend(calls);
                for (port, replica) in owners {
                    let spans = seen.ports.entry(port).or_default();
                    match spans.last_mut() {
                        Some(span) if span.replica == replica => span.last = now,
                        _ => spans.push(Span {
                            replica,
                            first: now,
                            last: now,
                        }),
                    }
                }
                seen.scans += 1;
                drop(seen);
                std::thread::sleep(SCAN_EVERY.saturating_sub(now.elapsed()));
            }
        });
        Tracker { seen, pids, stop }
    }

    fn set_pid(&self, replica: &'static str, pid: Option<u32>) {
        let mut pids = self.pids.lock().unwrap();
        pids.retain(|(r, _)| *r != replica);
        pids.extend(pid.map(|pid| (replica, pid)));
    }

    /// Waits for two more scans: every call answered before now is taken.
    fn sync(&self) {
        let from = self.seen.lock().unwrap().scans;
        while self.seen.lock().unwrap().scans < from + 2 {
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The calls that arrived in `[from, to)`, attributed, in arrival order.
    fn calls(&self, from: Instant, to: Instant) -> Vec<Call> {
        self.sync();
        let seen = self.seen.lock().unwrap();
        let mut calls: Vec<Call> = seen
            .calls
            .iter()
            .filter(|c| c.at >= from && c.at < to)
            .map(|c| Call {
                at: c.at,
                replica: attribute(&seen.ports, c.peer_port, c.at),
                api: c.api,
                room: c.room_id.clone(),
                code: c.code.clone(),
            })
            .collect();
        calls.sort_by_key(|c| c.at);
        calls
    }
}

impl Drop for Tracker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// The replica whose connection had local port `port` closest to `at`.
fn attribute(ports: &HashMap<u16, Vec<Span>>, port: u16, at: Instant) -> Option<&'static str> {
    ports
        .get(&port)?
        .iter()
        .map(|s| {
            let distance = if at < s.first {
                s.first - at
            } else {
                at.saturating_duration_since(s.last)
            };
            (distance, s.replica)
        })
        .filter(|(distance, _)| *distance <= ATTRIBUTION_SLACK)
        .min_by_key(|(distance, _)| *distance)
        .map(|(_, replica)| replica)
}

/// Local ports of the TCP connections to `remote_port` that belong to one of
/// `pids` (socket inodes of /proc/net/tcp and tcp6 against /proc/PID/fd).
fn connections_to(remote_port: u16, pids: &[(&'static str, u32)]) -> Vec<(u16, &'static str)> {
    let owner: HashMap<u64, &'static str> = pids
        .iter()
        .flat_map(|&(replica, pid)| common::socket_inodes(pid).into_iter().map(move |i| (i, replica)))
        .collect();
    let port_of = |address: &str| {
        address
            .rsplit_once(':')
            .and_then(|(_, p)| u16::from_str_radix(p, 16).ok())
    };
    ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .flat_map(|table| {
            std::fs::read_to_string(table)
                .unwrap_or_default()
                .lines()
                .skip(1)
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .filter_map(|line| {
            let cols: Vec<&str> = line.split_whitespace().collect();
            let (local, remote) = (port_of(cols.get(1)?)?, port_of(cols.get(2)?)?);
            let replica = owner.get(&cols.get(9)?.parse::<u64>().ok()?)?;
            (remote == remote_port).then_some((local, *replica))
        })
        .collect()
}

// ---- the replicas ----

struct Replica {
    exporter: Exporter,
    callback_port: u16,
    alive: bool,
    /// Exited without being killed by the bench.
    exited: Option<String>,
}

struct Group {
    sim_url: String,
    rooms: Vec<String>,
    redis: Redis,
    tracker: Tracker,
    ha_block: bool,
    seats: bool,
    token_file: PathBuf,
    _token_dir: tempfile::TempDir,
    replicas: BTreeMap<&'static str, Replica>,
    /// When the membership last became settled (the pollers are stable from then on).
    settled_at: Instant,
}

impl Group {
    fn new(sim: &Sim, redis: Redis, tracker: Tracker, ha_block: bool, seats: bool) -> Group {
        let token_dir = tempfile::tempdir().expect("temp dir");
        let token_file = token_dir.path().join("callback-token");
        std::fs::write(&token_file, CALLBACK_TOKEN).expect("token file");
        Group {
            sim_url: sim.handle.base_url(),
            rooms: sim.handle.room_ids(),
            redis,
            tracker,
            ha_block,
            seats,
            token_file,
            _token_dir: token_dir,
            replicas: BTreeMap::new(),
            settled_at: Instant::now(),
        }
    }

    fn yaml(&self, name: &str, callback_port: u16) -> String {
        let ha = if self.ha_block {
            format!(
                "ha:\n  replica_id: {name}\n  heartbeat: {HEARTBEAT}\n  dead_after: {}s\n",
                DEAD_AFTER.as_secs()
            )
        } else {
            String::new()
        };
        let rooms: String = self.rooms.iter().map(|r| format!("  - {r}\n")).collect();
        format!(
            "app:\n  sdkappid: {SDKAPPID}\n  identifier: administrator\n  endpoint: {}\n  usersig_ttl: 1h\npolling:\n  interval: {INTERVAL}\n  rate_limit: {RATE_LIMIT}\n  timeout: 5s\n  seat_usage: {}\nprobe:\n  enabled: false\ncallbacks:\n  listen_address: 127.0.0.1:{callback_port}\n  redis_url: {}\n  token_file: {}\n{ha}rooms:\n{rooms}",
            self.sim_url,
            self.seats,
            self.redis.url(),
            self.token_file.display()
        )
    }

    fn live(&self) -> Vec<&'static str> {
        self.replicas
            .iter()
            .filter(|(_, r)| r.alive)
            .map(|(n, _)| *n)
            .collect()
    }

    /// Starts `name` (again, on its config, ports and log, if it ran before).
    fn start(&mut self, name: &'static str) -> Instant {
        let started = Instant::now();
        if let Some(replica) = self.replicas.get_mut(name) {
            replica.exporter.kill9_and_restart();
            replica.alive = true;
            replica.exited = None;
        } else {
            let callback_port = free_port();
            let yaml = self.yaml(name, callback_port);
            if self.replicas.is_empty() {
                let shown: String = yaml
                    .lines()
                    .take_while(|l| *l != "rooms:")
                    .map(|l| format!("    {l}\n"))
                    .collect();
                println!("  replica config (then rooms: the {ROOMS} room IDs):\n{shown}");
            }
            let exporter = Exporter::start_yaml(&yaml, &[]);
            self.replicas.insert(
                name,
                Replica {
                    exporter,
                    callback_port,
                    alive: true,
                    exited: None,
                },
            );
        }
        let pid = self.replicas[name].exporter.pid();
        self.tracker.set_pid(name, Some(pid));
        println!("  replica {name} started (pid {pid})");
        started
    }

    /// `kill -9` of `name`; the instant of the kill.
    fn kill(&mut self, name: &'static str) -> Instant {
        let replica = self.replicas.get_mut(name).expect("a started replica");
        let at = Instant::now();
        let _ = replica.exporter.child.kill();
        let _ = replica.exporter.child.wait();
        replica.alive = false;
        self.tracker.set_pid(name, None);
        println!("  replica {name} killed (kill -9)");
        at
    }

    /// Waits until `/-/ready` of `name` answers 200; stops the bench if it exits.
    fn wait_ready(&mut self, rt: &tokio::runtime::Runtime, name: &'static str, since: Instant) -> Duration {
        let replica = self.replicas.get_mut(name).expect("a started replica");
        loop {
            if let Ok(Some(status)) = replica.exporter.child.try_wait() {
                let log = replica.exporter.log();
                let tail: Vec<&str> = log.lines().rev().take(15).collect();
                let hint = if self.ha_block {
                    "\n(a binary without HA refuses the ha: block: HA_BLOCK=0 runs the bench without it)"
                } else {
                    ""
                };
                panic!(
                    "replica {name} exited ({status}) before it was ready; its log ends:\n{}{hint}",
                    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                );
            }
            if rt.block_on(replica.exporter.get("/-/ready")).0 == 200 {
                let took = since.elapsed();
                println!("  replica {name} ready after {:.1} s", took.as_secs_f64());
                return took;
            }
            assert!(
                since.elapsed() < READY_WITHIN,
                "replica {name} not ready within {READY_WITHIN:?}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Starts those of `names` not running and waits until they are ready;
    /// whether any was started.
    fn ensure(&mut self, rt: &tokio::runtime::Runtime, names: &[&'static str]) -> bool {
        let missing: Vec<&'static str> = names
            .iter()
            .copied()
            .filter(|n| !self.live().contains(n))
            .collect();
        let started: Vec<(&'static str, Instant)> = missing.iter().map(|&n| (n, self.start(n))).collect();
        for (name, since) in &started {
            self.wait_ready(rt, name, *since);
        }
        !started.is_empty()
    }

    /// `name`'s /metrics, if it answers.
    fn scrape(&self, rt: &tokio::runtime::Runtime, name: &str) -> Option<String> {
        let (status, text) = rt.block_on(self.replicas.get(name)?.exporter.get("/metrics"));
        (status == 200).then_some(text)
    }

    /// The HA self-metrics of every live replica now.
    fn ha_metrics(&self, rt: &tokio::runtime::Runtime) -> BTreeMap<&'static str, HaMetrics> {
        self.live()
            .into_iter()
            .map(|n| (n, HaMetrics::of(self.scrape(rt, n).as_deref().unwrap_or(""))))
            .collect()
    }

    /// Replicas that exited without the bench killing them (noted once).
    fn exited(&mut self) -> Vec<String> {
        let mut out = Vec::new();
        for (name, r) in self.replicas.iter_mut() {
            if r.alive {
                if let Ok(Some(status)) = r.exporter.child.try_wait() {
                    r.alive = false;
                    r.exited = Some(status.to_string());
                    self.tracker.set_pid(name, None);
                }
            }
            if let Some(status) = &r.exited {
                out.push(format!("{name} ({status})"));
            }
        }
        out
    }

    /// Sleeps until the membership has been settled for `MOVE_WINDOW` (a
    /// full window of stable pollers is behind us).
    fn wait_settled_window(&self) {
        let until = self.settled_at + MOVE_WINDOW;
        std::thread::sleep(until.saturating_duration_since(Instant::now()));
    }
}

impl Drop for Group {
    /// Copies each replica's log to target/tmp/ha-bench/ before the processes go.
    fn drop(&mut self) {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("ha-bench");
        let _ = std::fs::create_dir_all(&dir);
        for (name, r) in &self.replicas {
            let _ = std::fs::copy(&r.exporter.log_path, dir.join(format!("{name}.log")));
        }
        let _ = std::fs::copy(self.redis.dir.path().join("redis.log"), dir.join("redis.log"));
        println!("replica logs: {}", dir.display());
    }
}

/// The HA self-metrics of one scrape (`None`: absent).
#[derive(Debug, Clone, Copy, Default)]
struct HaMetrics {
    replicas: Option<f64>,
    owned: Option<f64>,
    fallback: Option<f64>,
    api_calls: Option<f64>,
}

impl HaMetrics {
    fn of(text: &str) -> HaMetrics {
        HaMetrics {
            replicas: family(text, "roomengine_ha_replicas"),
            owned: family(text, "roomengine_ha_owned_rooms"),
            fallback: family(text, "roomengine_ha_budget_fallback"),
            api_calls: family(text, "roomengine_api_requests_total"),
        }
    }
}

/// The sum of the samples of family `name` (any labels).
fn family(text: &str, name: &str) -> Option<f64> {
    let values: Vec<f64> = text
        .lines()
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with([' ', '{']))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse().ok())
        .collect();
    (!values.is_empty()).then(|| values.iter().sum())
}

fn shown(v: Option<f64>) -> String {
    v.map_or("absent".into(), |v| format!("{v}"))
}

// ---- measures over a window of calls ----

/// Calls in the worst one-second sliding window (every call, by arrival).
fn worst(calls: &[Call]) -> usize {
    let at: Vec<Instant> = calls.iter().map(|c| c.at).collect();
    worst_window(&at)
}

fn refused(calls: &[Call]) -> usize {
    calls.iter().filter(|c| c.code == "60011").count()
}

/// Duplicate polls: per room, the calls of every replica but the one that
/// made most of that room's calls; (duplicates, attributed calls with a room).
fn duplicates(calls: &[Call]) -> (usize, usize) {
    let mut per_room: HashMap<&str, HashMap<&str, usize>> = HashMap::new();
    for c in calls {
        if let (Some(room), Some(replica)) = (&c.room, c.replica) {
            *per_room
                .entry(room.as_str())
                .or_default()
                .entry(replica)
                .or_default() += 1;
        }
    }
    per_room.values().fold((0, 0), |(dups, all), by| {
        let total: usize = by.values().sum();
        (
            dups + total - by.values().max().copied().unwrap_or(0),
            all + total,
        )
    })
}

/// Per room, the replica that made most of its polls in `calls` (a tie: the
/// one that polled it last).
fn pollers(calls: &[Call]) -> HashMap<String, &'static str> {
    let mut per_room: HashMap<&str, BTreeMap<&'static str, (usize, Instant)>> = HashMap::new();
    for c in calls.iter().filter(|c| c.is_poll()) {
        if let (Some(room), Some(replica)) = (&c.room, c.replica) {
            let seen = per_room
                .entry(room.as_str())
                .or_default()
                .entry(replica)
                .or_insert((0, c.at));
            *seen = (seen.0 + 1, c.at);
        }
    }
    per_room
        .into_iter()
        .filter_map(|(room, by)| {
            let most = by.into_iter().max_by_key(|&(_, seen)| seen)?;
            Some((room.to_owned(), most.0))
        })
        .collect()
}

/// Attributed calls per replica, and the unattributed ones.
fn per_replica(calls: &[Call]) -> (BTreeMap<&'static str, usize>, usize) {
    let mut by = BTreeMap::new();
    let mut unattributed = 0;
    for c in calls {
        match c.replica {
            Some(r) => *by.entry(r).or_default() += 1,
            None => unattributed += 1,
        }
    }
    (by, unattributed)
}

/// Intervals between successive polls of each room (whoever made them).
fn poll_intervals(calls: &[Call]) -> Vec<Duration> {
    let mut last: HashMap<&str, Instant> = HashMap::new();
    let mut gaps = Vec::new();
    for c in calls.iter().filter(|c| c.is_poll()) {
        if let Some(room) = &c.room {
            if let Some(previous) = last.insert(room.as_str(), c.at) {
                gaps.push(c.at - previous);
            }
        }
    }
    gaps
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

fn share(n: usize, of: usize) -> f64 {
    if of == 0 {
        0.0
    } else {
        100.0 * n as f64 / of as f64
    }
}

/// The worst-window and 60011 rows of a phase's whole span.
fn budget_rows(table: &mut Table, phase: &'static str, calls: &[Call], span: &str, event: (&str, Instant)) {
    let (w, at) = worst_at(calls);
    let in_worst: Vec<Call> = calls
        .iter()
        .filter(|c| at.is_some_and(|t| c.at >= t && c.at < t + Duration::from_secs(1)))
        .cloned()
        .collect();
    let (by, _) = per_replica(&in_worst);
    let detail = match at {
        Some(t) => format!(
            "; it starts {} the {} ({})",
            offset(t, event.1),
            event.0,
            by.iter()
                .map(|(r, n)| format!("{r} {n}"))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        None => String::new(),
    };
    table.row(
        phase,
        &format!("worst 1-s window at the simulator, {span}"),
        format!("{w} of {} calls{detail}", calls.len()),
        &format!("≤ {RATE_LIMIT}"),
        Some(w <= RATE_LIMIT),
    );
    if let (true, Some(t)) = (w > RATE_LIMIT, at) {
        timeline(
            calls,
            "that window",
            t - Duration::from_secs(1),
            t + Duration::from_secs(2),
            event,
        );
    }
    let n = refused(calls);
    // Where the 60011s fall: each run of them (split at 1 s without one), at most three.
    let mut runs: Vec<(Instant, Instant)> = Vec::new();
    for c in calls.iter().filter(|c| c.code == "60011") {
        match runs.last_mut() {
            Some(run) if c.at - run.1 < Duration::from_secs(1) => run.1 = c.at,
            _ => runs.push((c.at, c.at)),
        }
    }
    for &(from, to) in runs.iter().take(3) {
        let to = to.min(from + Duration::from_secs(3));
        let margin = Duration::from_millis(500);
        timeline(calls, "60011 answers", from - margin, to + margin, event);
    }
    let first = calls.iter().find(|c| c.code == "60011").map(|c| c.at);
    let last = calls.iter().rev().find(|c| c.code == "60011").map(|c| c.at);
    let when = match (first, last) {
        (Some(f), Some(l)) => format!(
            ", from {} to {} the {}",
            offset(f, event.1),
            offset(l, event.1),
            event.0
        ),
        _ => String::new(),
    };
    table.row(
        phase,
        &format!("60011 answers, {span}"),
        format!("{n}{when}"),
        "0",
        Some(n == 0),
    );
}

/// The most calls inside a one-second window [t, t + 1 s), and its t.
fn worst_at(calls: &[Call]) -> (usize, Option<Instant>) {
    let mut best = (0, None);
    let mut start = 0;
    for end in 0..calls.len() {
        while calls[end].at.duration_since(calls[start].at) >= Duration::from_secs(1) {
            start += 1;
        }
        if end - start + 1 > best.0 {
            best = (end - start + 1, Some(calls[start].at));
        }
    }
    best
}

/// `t` against `event`: "+1.25 s after" / "0.40 s before".
fn offset(t: Instant, event: Instant) -> String {
    if t >= event {
        format!("{:.2} s after", secs(t - event))
    } else {
        format!("{:.2} s before", secs(event - t))
    }
}

/// Prints the calls per 100 ms around `what`, from `from` to `to` (per
/// replica, and the 60011 among them), timed from `event`.
fn timeline(calls: &[Call], what: &str, from: Instant, to: Instant, (name, event): (&str, Instant)) {
    println!("  calls per 100 ms around {what} (from the {name}):");
    let step = Duration::from_millis(100);
    let mut t = from;
    while t < to {
        let slot: Vec<Call> = calls
            .iter()
            .filter(|c| c.at >= t && c.at < t + step)
            .cloned()
            .collect();
        let (by, unattributed) = per_replica(&slot);
        println!(
            "    {:>16}: {:>3} calls ({}{}), 60011 {}",
            offset(t, event),
            slot.len(),
            by.iter()
                .map(|(r, n)| format!("{r} {n}"))
                .collect::<Vec<_>>()
                .join(", "),
            if unattributed > 0 {
                format!(", ? {unattributed}")
            } else {
                String::new()
            },
            refused(&slot)
        );
        t += step;
    }
}

// ---- the phases ----

/// Two replicas, warmed up, for `length`: the budget held as one number,
/// the pair using all of it, each room polled by one replica.
fn steady(rt: &tokio::runtime::Runtime, group: &mut Group, table: &mut Table, length: Duration) {
    println!("\nsteady: replicas a and b, {WARM_UP:?} of warm-up, then {length:?}");
    group.ensure(rt, &["a", "b"]);
    std::thread::sleep(WARM_UP);
    let before = group.ha_metrics(rt);
    let from = Instant::now();
    std::thread::sleep(length);
    let to = Instant::now();
    let after = group.ha_metrics(rt);
    group.settled_at = from;
    let calls = group.tracker.calls(from, to);
    let seconds = secs(to - from);
    let w = worst(&calls);
    table.row(
        "steady",
        &format!("worst 1-s window, {:.0} s", seconds),
        format!("{w} of {} calls", calls.len()),
        &format!("≤ {RATE_LIMIT}"),
        Some(w <= RATE_LIMIT),
    );
    let rate = calls.len() as f64 / seconds;
    let answered = (calls.len() - refused(&calls)) as f64 / seconds;
    table.row(
        "steady",
        "combined calls/s at the simulator (answered other than 60011)",
        format!("{rate:.1} ({answered:.1})"),
        "≥ 190",
        Some(rate >= 190.0),
    );
    let (dups, counted) = duplicates(&calls);
    table.row(
        "steady",
        "duplicate polls: per room, calls by any replica but the one that made most of its calls, over all attributed calls",
        format!("{dups} of {counted} ({:.2}%)", share(dups, counted)),
        "≤ 1%",
        Some(share(dups, counted) <= 1.0),
    );
    let n = refused(&calls);
    table.row("steady", "60011 answers", n.to_string(), "0", Some(n == 0));
    let (by, unattributed) = per_replica(&calls);
    for (replica, n) in &by {
        let (b, a) = (
            before.get(replica).copied().unwrap_or_default(),
            after.get(replica).copied().unwrap_or_default(),
        );
        let own_count = match (b.api_calls, a.api_calls) {
            (Some(b), Some(a)) => format!("; its own roomengine_api_requests_total rose {:.0}", a - b),
            _ => String::new(),
        };
        table.row(
            "steady",
            &format!("replica {replica}: calls/s, roomengine_ha_owned_rooms, roomengine_ha_replicas"),
            format!(
                "{:.1} calls/s ({n} calls{own_count}); owned {} → {}; replicas {} → {}",
                *n as f64 / seconds,
                shown(b.owned),
                shown(a.owned),
                shown(b.replicas),
                shown(a.replicas)
            ),
            "",
            None,
        );
    }
    let owned: Option<f64> = after.values().map(|m| m.owned).sum();
    table.row(
        "steady",
        "sum of roomengine_ha_owned_rooms at the end",
        shown(owned),
        &format!("= {ROOMS}"),
        Some(owned == Some(ROOMS as f64)),
    );
    table.row(
        "steady",
        "calls not attributed to a replica (source port not seen)",
        format!("{unattributed} ({:.2}%)", share(unattributed, calls.len())),
        "≤ 0.1%",
        Some(share(unattributed, calls.len()) <= 0.1),
    );
    let mut gaps = poll_intervals(&calls);
    let polled: HashSet<&str> = calls
        .iter()
        .filter(|c| c.is_poll())
        .filter_map(|c| c.room.as_deref())
        .collect();
    table.row(
        "steady",
        "interval between polls of a room, p50 / p99 / max; rooms polled",
        format!(
            "{:.1} / {:.1} / {:.1} s; {} of {ROOMS}",
            secs(percentile(&mut gaps, 0.5)),
            secs(percentile(&mut gaps, 0.99)),
            secs(percentile(&mut gaps, 1.0)),
            polled.len()
        ),
        "",
        None,
    );
}

/// `kill -9` of replica a: how soon b polls a's rooms, and b's rate after.
fn kill(rt: &tokio::runtime::Runtime, group: &mut Group, table: &mut Table) {
    println!("\nkill: kill -9 of replica a");
    if group.ensure(rt, &["a", "b"]) {
        group.settled_at = Instant::now() + WARM_UP;
    }
    group.wait_settled_window();
    let killed = group.kill("a");
    let before = group.tracker.calls(killed - MOVE_WINDOW, killed);
    let of_a: BTreeSet<String> = before
        .iter()
        .filter(|c| c.is_poll() && c.replica == Some("a"))
        .filter_map(|c| c.room.as_deref().map(str::to_owned))
        .collect();
    println!("  a polled {} rooms in the 30 s before the kill", of_a.len());
    // Until b has polled each of them, or 4 × the target.
    let target = DEAD_AFTER + PASS;
    let mut taken: BTreeMap<String, Duration> = BTreeMap::new();
    while taken.len() < of_a.len() && killed.elapsed() < 4 * target {
        std::thread::sleep(Duration::from_secs(1));
        for c in group.tracker.calls(killed, Instant::now()) {
            if let (true, Some("b"), Some(room)) = (c.is_poll(), c.replica, &c.room) {
                if of_a.contains(room.as_str()) {
                    taken.entry(room.to_string()).or_insert(c.at - killed);
                }
            }
        }
    }
    let mut times: Vec<Duration> = taken.values().copied().collect();
    let max = times.iter().max().copied().unwrap_or_default();
    let p50 = percentile(&mut times, 0.5);
    let complete = killed
        + if taken.len() == of_a.len() {
            max
        } else {
            killed.elapsed()
        };
    table.row(
        "kill",
        "takeover: per room a polled in the 30 s before the kill, kill → b's first get_room_info of it; max / p50",
        format!(
            "{:.1} / {:.1} s, {} of {} rooms taken over",
            secs(max),
            secs(p50),
            taken.len(),
            of_a.len()
        ),
        &format!(
            "max ≤ dead_after + one pass = {} s + {ROOMS} rooms / {RATE_LIMIT} per s = {} s, every room",
            DEAD_AFTER.as_secs(),
            target.as_secs()
        ),
        Some(!of_a.is_empty() && taken.len() == of_a.len() && max <= target),
    );
    let from = complete + Duration::from_secs(5);
    let to = from + Duration::from_secs(20);
    std::thread::sleep(to.saturating_duration_since(Instant::now()));
    let survivor = group.tracker.calls(from, to);
    let (by, _) = per_replica(&survivor);
    let rate = by.get("b").copied().unwrap_or(0) as f64 / 20.0;
    let answered = survivor
        .iter()
        .filter(|c| c.replica == Some("b") && c.code != "60011")
        .count() as f64
        / 20.0;
    table.row(
        "kill",
        "survivor b's calls/s, 20 s from 5 s after the takeover completed (answered other than 60011)",
        format!("{rate:.1} ({answered:.1})"),
        "≥ 190",
        Some(rate >= 190.0),
    );
    let metrics = group.ha_metrics(rt);
    let b = metrics.get("b").copied().unwrap_or_default();
    table.row(
        "kill",
        "b's roomengine_ha_replicas, roomengine_ha_owned_rooms after",
        format!("{}, {}", shown(b.replicas), shown(b.owned)),
        &format!("1, {ROOMS}"),
        Some(b.replicas == Some(1.0) && b.owned == Some(ROOMS as f64)),
    );
    let through = group.tracker.calls(killed - MOVE_WINDOW, to);
    budget_rows(
        table,
        "kill",
        &through,
        "30 s before the kill to the end of the survivor's 20 s",
        ("kill", killed),
    );
    group.settled_at = complete;
}

/// Which rooms changed poller when `join` (re)starts: the pollers of the 30 s
/// before it, of 30 s once it is ready and settled; the calls of it all.
/// What a join saw.
struct Joined {
    /// Per room, its poller in the 30 s before the start, and in 30 s after settling.
    before: HashMap<String, &'static str>,
    after: HashMap<String, &'static str>,
    /// The calls from 30 s before the start to the end.
    all: Vec<Call>,
    started: Instant,
    settled: Instant,
}

fn join(rt: &tokio::runtime::Runtime, group: &mut Group, name: &'static str) -> Joined {
    group.wait_settled_window();
    let started = Instant::now();
    let before = pollers(&group.tracker.calls(started - MOVE_WINDOW, started));
    group.start(name);
    group.wait_ready(rt, name, started);
    // Settled: every replica sees them all and the owned rooms add up (when
    // the metrics exist), then 5 s more; at most 60 s.
    let live = group.live().len() as f64;
    let settle_start = Instant::now();
    while settle_start.elapsed() < Duration::from_secs(60) {
        let m = group.ha_metrics(rt);
        let owned: Option<f64> = m.values().map(|m| m.owned).sum();
        let agreed = m.values().all(|m| m.replicas == Some(live)) && owned == Some(ROOMS as f64);
        if agreed || m.values().all(|m| m.replicas.is_none()) {
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    std::thread::sleep(Duration::from_secs(5));
    let settled = Instant::now();
    println!(
        "  settled {:.1} s after the start; watching {MOVE_WINDOW:?}",
        secs(settled - started)
    );
    std::thread::sleep(MOVE_WINDOW);
    let after = pollers(&group.tracker.calls(settled, settled + MOVE_WINDOW));
    let all = group.tracker.calls(started - MOVE_WINDOW, Instant::now());
    group.settled_at = settled;
    Joined {
        before,
        after,
        all,
        started,
        settled,
    }
}

/// The rows every join ends with: the newcomer's owned rooms (about
/// `expected` % of them), rooms without a poll and duplicate polls after
/// settling, and the budget throughout.
fn join_rows(
    rt: &tokio::runtime::Runtime,
    group: &Group,
    table: &mut Table,
    phase: &'static str,
    joined: &Joined,
    newcomer: &'static str,
    expected: f64,
) {
    let m = group.ha_metrics(rt);
    let live = group.live();
    let owned = |r: &str| m.get(r).and_then(|m| m.owned);
    let near = |v: Option<f64>| v.is_some_and(|v| (100.0 * v / ROOMS as f64 - expected).abs() <= 5.0);
    table.row(
        phase,
        &format!("roomengine_ha_owned_rooms of {} after", live.join(" / ")),
        live.iter()
            .map(|r| shown(owned(r)))
            .collect::<Vec<_>>()
            .join(" / "),
        &format!("{newcomer} {expected:.1}% ± 5% of 3,000"),
        Some(near(owned(newcomer))),
    );
    let after: Vec<Call> = joined
        .all
        .iter()
        .filter(|c| c.at >= joined.settled)
        .cloned()
        .collect();
    let (dups, counted) = duplicates(&after);
    table.row(
        phase,
        "after settling: rooms with no poll in the 30 s; duplicate polls",
        format!(
            "{} rooms; {dups} of {counted} calls ({:.2}%)",
            ROOMS - joined.after.len(),
            share(dups, counted)
        ),
        "0 rooms; ≤ 1%",
        Some(joined.after.len() == ROOMS && share(dups, counted) <= 1.0),
    );
    let event = format!("start of {newcomer}");
    budget_rows(
        table,
        phase,
        &joined.all,
        &format!("30 s before {newcomer} started to 30 s after settling"),
        (&event, joined.started),
    );
}

/// Replica a starts again (same replica_id): about half the rooms move back from b.
fn restart(rt: &tokio::runtime::Runtime, group: &mut Group, table: &mut Table) {
    println!("\nrestart: replica a starts again");
    if !group.replicas.contains_key("a") || group.live().contains(&"a") {
        group.ensure(rt, &["a", "b"]);
        group.kill("a");
        // b takes over a's rooms: dead_after, one pass, a margin.
        group.settled_at = Instant::now() + DEAD_AFTER + PASS + Duration::from_secs(5);
    }
    group.ensure(rt, &["b"]);
    let joined = join(rt, group, "a");
    let back = joined
        .before
        .iter()
        .filter(|(room, &p)| p == "b" && joined.after.get(*room) == Some(&"a"))
        .count();
    table.row(
        "restart",
        "rooms moved back: poller b in the 30 s before the start, a in 30 s after settling, of 3,000",
        format!("{back} ({:.1}%)", share(back, ROOMS)),
        "50% ± 5%",
        Some((45.0..=55.0).contains(&share(back, ROOMS))),
    );
    join_rows(rt, group, table, "restart", &joined, "a", 50.0);
}

/// Replica c joins a and b: about a third of the rooms move, all to c.
fn third(rt: &tokio::runtime::Runtime, group: &mut Group, table: &mut Table) {
    println!("\nthird: replica c joins a and b");
    if group.ensure(rt, &["a", "b"]) {
        group.settled_at = Instant::now() + WARM_UP;
    }
    let joined = join(rt, group, "c");
    let (before, after) = (&joined.before, &joined.after);
    let moved = before
        .iter()
        .filter(|(room, p)| after.get(*room).is_some_and(|a| a != *p))
        .count();
    let to_c = before
        .iter()
        .filter(|(room, _)| after.get(*room) == Some(&"c"))
        .count();
    table.row(
        "third",
        "rooms moved: poller in the 30 s before c started ≠ poller in 30 s after settling, of 3,000 (of which to c)",
        format!("{moved} ({:.1}%; {to_c} to c)", share(moved, ROOMS)),
        "33.3% ± 5%, all to c",
        Some((28.3..=38.3).contains(&share(moved, ROOMS)) && moved == to_c),
    );
    join_rows(rt, group, table, "third", &joined, "c", 100.0 / 3.0);
}

// ---- Redis restarted under callbacks ----

/// What the callback stream sent for one room: the newest member count
/// answered 200, and the newest sent at all.
#[derive(Default, Clone, Copy)]
struct RoomSent {
    acked: Option<u64>,
    sent: u64,
}

#[derive(Default)]
struct Stream {
    rooms: Mutex<BTreeMap<String, RoomSent>>,
    ok: AtomicU64,
    refused: AtomicU64,
    other: AtomicU64,
}

/// Member callbacks for `rooms` (members 1, 2, 3 … per room, in order; one
/// lane per tenth of them, each callback to the next replica in turn), until `stop`.
fn callback_stream(
    rt: &tokio::runtime::Runtime,
    ports: Vec<u16>,
    rooms: Vec<String>,
    stop: Arc<AtomicBool>,
) -> (Arc<Stream>, Vec<tokio::task::JoinHandle<()>>) {
    let stream = Arc::new(Stream::default());
    // EventTimes ahead of the clock (within callbacks.max_clock_skew), so that
    // no poll (as of its send instant) overwrites what the callbacks said.
    let base = roomengine_exporter::clock::unix_now_ms() + 240_000;
    let next_time = Arc::new(AtomicU64::new(0));
    let lanes = rooms
        .chunks(rooms.len().div_ceil(CALLBACK_LANES))
        .enumerate()
        .map(|(lane, chunk)| {
            let (stream, stop, next_time, ports) =
                (stream.clone(), stop.clone(), next_time.clone(), ports.clone());
            let chunk = chunk.to_vec();
            rt.spawn(async move {
                let http = reqwest::Client::builder()
                    .timeout(Duration::from_secs(5))
                    .build()
                    .expect("client");
                let mut turn = lane;
                while !stop.load(Ordering::Relaxed) {
                    for room in &chunk {
                        let members = {
                            let mut rooms = stream.rooms.lock().unwrap();
                            let r = rooms.entry(room.clone()).or_default();
                            r.sent += 1;
                            r.sent
                        };
                        let at = base + next_time.fetch_add(1, Ordering::Relaxed);
                        let port = ports[turn % ports.len()];
                        turn += 1;
                        let url = format!("http://127.0.0.1:{port}{}", common::signed_callback_path(ENTER));
                        let answer = http.post(url).json(&members_body(room, members, at)).send().await;
                        match answer.map(|a| a.status().as_u16()) {
                            Ok(200) => {
                                stream.ok.fetch_add(1, Ordering::Relaxed);
                                let mut rooms = stream.rooms.lock().unwrap();
                                let r = rooms.entry(room.clone()).or_default();
                                r.acked = r.acked.max(Some(members));
                            }
                            Ok(503) => {
                                stream.refused.fetch_add(1, Ordering::Relaxed);
                            }
                            _ => {
                                stream.other.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
            })
        })
        .collect();
    (stream, lanes)
}

/// 50 rooms with room to grow (capacity ≥ 500, not one of the rooms that
/// climb to capacity), so the member counts sent stay below the watch tier.
fn callback_rooms(rt: &tokio::runtime::Runtime, sim: &Sim) -> Vec<String> {
    let rooms: Vec<serde_json::Value> = rt.block_on(async {
        reqwest::get(format!("{}/sim/rooms", sim.handle.base_url()))
            .await
            .expect("/sim/rooms")
            .json()
            .await
            .expect("JSON")
    });
    let mut picked: Vec<String> = rooms
        .iter()
        .filter(|r| r["MaxMemberCount"].as_u64().unwrap_or(0) >= 500)
        .filter_map(|r| r["RoomId"].as_str())
        .filter(|id| !id.ends_with('1'))
        .map(str::to_owned)
        .collect();
    let step = (picked.len() / CALLBACK_ROOMS).max(1);
    picked = picked.into_iter().step_by(step).take(CALLBACK_ROOMS).collect();
    picked
}

/// `kill -9` of redis-server under a stream of callbacks, started again on
/// its port 5 s later: the budget, the fallback flag, and every acknowledged callback.
fn redis_restart(rt: &tokio::runtime::Runtime, group: &mut Group, sim: &Sim, table: &mut Table) {
    println!("\nredis: kill -9 of redis-server under callbacks, started again 5 s later");
    if group.live().len() < 2 && group.ensure(rt, &["a", "b"]) {
        std::thread::sleep(WARM_UP);
    }
    let live = group.live();
    let ports: Vec<u16> = live.iter().map(|n| group.replicas[n].callback_port).collect();
    let rooms = callback_rooms(rt, sim);
    let stop = Arc::new(AtomicBool::new(false));
    let (stream, lanes) = callback_stream(rt, ports, rooms.clone(), stop.clone());
    let start = Instant::now();
    std::thread::sleep(Duration::from_secs(5));

    let killed = Instant::now();
    group.redis.kill9();
    println!("  redis-server killed (kill -9)");
    // The fallback flag of every replica every 250 ms: when it rose, when it fell.
    let mut rose: BTreeMap<&'static str, Duration> = BTreeMap::new();
    let mut fell: BTreeMap<&'static str, Duration> = BTreeMap::new();
    let mut back: Option<Instant> = None;
    loop {
        if back.is_none() && killed.elapsed() >= Duration::from_secs(5) {
            back = Some(group.redis.spawn());
            println!(
                "  redis-server answering again, {:.1} s after the kill",
                secs(killed.elapsed())
            );
        }
        for (name, m) in group.ha_metrics(rt) {
            match (m.fallback, back) {
                (Some(f), _) if f >= 1.0 => {
                    rose.entry(name).or_insert(killed.elapsed());
                    fell.remove(name);
                }
                (Some(_), Some(b)) => {
                    fell.entry(name).or_insert(b.elapsed());
                }
                _ => {}
            }
        }
        let done = back.is_some_and(|b| fell.len() == live.len() || b.elapsed() > Duration::from_secs(30));
        if done {
            break;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    let back = back.expect("Redis restarted");
    // The stream goes on for 10 s with Redis back, then stops.
    std::thread::sleep(Duration::from_secs(10));
    stop.store(true, Ordering::Relaxed);
    for lane in lanes {
        let _ = rt.block_on(lane);
    }
    let end = Instant::now();

    let figures: Vec<String> = live
        .iter()
        .map(|n| {
            format!(
                "{n}: 1 after {}, 0 after {}",
                rose.get(n)
                    .map_or("never".into(), |d| format!("{:.2} s", secs(*d))),
                fell.get(n)
                    .map_or("never".into(), |d| format!("{:.2} s", secs(*d)))
            )
        })
        .collect();
    let all_fell = live
        .iter()
        .all(|n| rose.contains_key(n) && fell.get(n).is_some_and(|d| *d <= Duration::from_secs(10)));
    table.row(
        "redis",
        "roomengine_ha_budget_fallback (polled every 250 ms): 1 after the kill, 0 after Redis answers again",
        figures.join("; "),
        "1 during the outage, 0 on every replica within 10 s",
        Some(all_fell),
    );
    let sent = stream.ok.load(Ordering::Relaxed)
        + stream.refused.load(Ordering::Relaxed)
        + stream.other.load(Ordering::Relaxed);
    table.row(
        "redis",
        &format!(
            "callbacks sent for {} rooms: answered 200 / 503 / otherwise",
            rooms.len()
        ),
        format!(
            "{sent}: {} / {} / {}",
            stream.ok.load(Ordering::Relaxed),
            stream.refused.load(Ordering::Relaxed),
            stream.other.load(Ordering::Relaxed)
        ),
        "",
        None,
    );
    // Every replica's /metrics and Redis show each room's newest acknowledged
    // member count (or a newer one sent and stored though not acknowledged).
    let wanted = stream.rooms.lock().unwrap().clone();
    let judge = |shown: Option<u64>, r: &RoomSent| match (shown, r.acked) {
        (_, None) => true,
        (Some(s), Some(a)) => s >= a && s <= r.sent,
        (None, Some(_)) => false,
    };
    let deadline = Instant::now() + Duration::from_secs(15);
    let lost_on = |text: &str| {
        wanted
            .iter()
            .filter(|(room, r)| {
                let shown =
                    value(text, &format!("roomengine_room_members{{room_id=\"{room}\"}}")).map(|v| v as u64);
                !judge(shown, r)
            })
            .count()
    };
    let lost: BTreeMap<&'static str, usize> = loop {
        let lost: BTreeMap<&'static str, usize> = live
            .iter()
            .map(|n| (*n, group.scrape(rt, n).map_or(wanted.len(), |t| lost_on(&t))))
            .collect();
        if lost.values().all(|&n| n == 0) || Instant::now() > deadline {
            break lost;
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    let in_redis = wanted
        .iter()
        .filter(|(room, r)| !judge(group.redis.members(room), r))
        .count();
    let acked_rooms = wanted.values().filter(|r| r.acked.is_some()).count();
    table.row(
        "redis",
        "rooms whose newest acknowledged member count is missing: on each replica's /metrics; in Redis",
        format!(
            "{}; Redis {in_redis} (of {acked_rooms} rooms with an acknowledged callback)",
            lost.iter()
                .map(|(n, l)| format!("{n} {l}"))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        "0 everywhere",
        Some(acked_rooms > 0 && in_redis == 0 && lost.values().all(|&n| n == 0)),
    );
    let calls = group.tracker.calls(start, end);
    budget_rows(
        table,
        "redis",
        &calls,
        &format!(
            "5 s before the kill to 10 s after every replica's fallback ended (at most 30 s after Redis came back): {:.0} s, Redis back after {:.1} s",
            secs(end - start),
            secs(back - killed)
        ),
        ("kill of redis-server", killed),
    );
    let (dups, counted) = duplicates(&group.tracker.calls(killed, end));
    table.row(
        "redis",
        "duplicate polls from the kill to the end",
        format!("{dups} of {counted} ({:.2}%)", share(dups, counted)),
        "≤ 1%",
        Some(share(dups, counted) <= 1.0),
    );
    let outage = group.tracker.calls(killed, back + Duration::from_secs(10));
    let (by, _) = per_replica(&outage);
    table.row(
        "redis",
        "calls/s per replica from the kill to 10 s after Redis answered",
        by.iter()
            .map(|(r, n)| {
                format!(
                    "{r} {:.1}",
                    *n as f64 / secs(back + Duration::from_secs(10) - killed)
                )
            })
            .collect::<Vec<_>>()
            .join(", "),
        "",
        None,
    );
    group.settled_at = end;
}

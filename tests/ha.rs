//! The HA group against a real `redis-server`: the shared Lua bucket under
//! calls from several tasks in several processes (Redis there, then killed
//! and started again), and two exporter replicas that split the rooms, share
//! one budget and each show every room, the survivor taking over on kill -9.
//! `tests/ensure-redis.sh` installs redis-server (tests/run.sh does).

mod common;

use std::path::Path;
use std::process::Command;
use std::sync::atomic::AtomicU32;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use roomengine_exporter::budget::Budget;
use roomengine_exporter::config::RedisConfig;
use roomengine_exporter::ha::bucket::{Fallback, RedisBucket};
use roomengine_exporter::ha::Link;

use common::redis::Redis;
use common::{free_port, value, worst_window, Exporter, Fake, SDKAPPID};

/// What a worker process is told, in the environment.
const WORKER: &str = "HA_TEST_BUCKET_WORKER";

struct Quiet;
impl Fallback for Quiet {
    fn set(&self, _: bool, _: u32, _: Option<&str>) {}
}

fn unix_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// `tasks` tasks of one process taking permits from the group's bucket at
/// `port` for `run`, as replica `me` of `replicas`: when each was granted (Unix µs).
fn grants(port: u16, limit: u32, run: Duration, tasks: usize, me: &str, replicas: u32) -> Vec<u64> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async move {
        let config = RedisConfig {
            url: format!("redis://127.0.0.1:{port}/0"),
            password: None,
        };
        let link = Arc::new(Link::open(&config, SDKAPPID).expect("link"));
        let budget = Arc::new(Budget::new(limit));
        let bucket = RedisBucket::new(link, me, Arc::new(AtomicU32::new(replicas)), Quiet);
        budget.share(Arc::new(bucket));
        let end = tokio::time::Instant::now() + run;
        let mut workers = Vec::new();
        for _ in 0..tasks {
            let budget = budget.clone();
            workers.push(tokio::spawn(async move {
                let mut at = Vec::new();
                while tokio::time::Instant::now() < end {
                    let permit = budget.acquire().await;
                    at.push(unix_us());
                    drop(permit);
                }
                at
            }));
        }
        let mut all = Vec::new();
        for w in workers {
            all.extend(w.await.expect("task"));
        }
        all
    })
}

/// The entry point of the worker processes of the bucket tests (run by them, not on its own).
#[test]
#[ignore = "started by the bucket tests as a separate process"]
fn bucket_worker_process() {
    let Ok(spec) = std::env::var(WORKER) else {
        return;
    };
    let parts: Vec<&str> = spec.split(',').collect();
    let [port, limit, millis, me, replicas, out] = parts[..] else {
        panic!("{WORKER}={spec}: want port,limit,millis,id,replicas,file");
    };
    let at = grants(
        port.parse().expect("port"),
        limit.parse().expect("limit"),
        Duration::from_millis(millis.parse().expect("millis")),
        8,
        me,
        replicas.parse().expect("replicas"),
    );
    let text: Vec<String> = at.iter().map(u64::to_string).collect();
    std::fs::write(out, text.join("\n")).expect("write grants");
}

fn worker(port: u16, limit: u32, run: Duration, me: &str, replicas: u32, out: &Path) -> std::process::Child {
    Command::new(std::env::current_exe().expect("test binary"))
        .args(["--exact", "bucket_worker_process", "--ignored", "--quiet"])
        .env(
            WORKER,
            format!(
                "{port},{limit},{},{me},{replicas},{}",
                run.as_millis(),
                out.display()
            ),
        )
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("worker process starts")
}

/// Most grants inside any 1-s window, and the grants of each second.
fn windows(mut all: Vec<u64>) -> usize {
    all.sort_unstable();
    let base = Instant::now();
    let first = all.first().copied().unwrap_or(0);
    let instants: Vec<Instant> = all
        .iter()
        .map(|us| base + Duration::from_micros(us - first))
        .collect();
    worst_window(&instants)
}

/// Three processes (this one and two workers) of 8 tasks each take permits
/// from one bucket; `during` runs meanwhile. All grants, per process.
fn three_processes(port: u16, limit: u32, run: Duration, during: impl FnOnce()) -> Vec<Vec<u64>> {
    let dir = tempfile::tempdir().expect("dir");
    let files = [dir.path().join("w1"), dir.path().join("w2")];
    let mut children: Vec<_> = files
        .iter()
        .enumerate()
        .map(|(i, f)| worker(port, limit, run, &format!("w{i}"), 3, f))
        .collect();
    let here = std::thread::spawn(move || grants(port, limit, run, 8, "here", 3));
    during();
    let mut out = vec![here.join().expect("this process's tasks")];
    for (child, file) in children.iter_mut().zip(&files) {
        assert!(child.wait().expect("worker ends").success(), "a worker failed");
        let text = std::fs::read_to_string(file).expect("worker grants");
        out.push(text.lines().filter_map(|l| l.parse().ok()).collect());
    }
    out
}

#[test]
fn the_shared_bucket_never_grants_a_second_more_than_the_limit_across_tasks_and_processes() {
    let redis = Redis::start(None);
    let (limit, run) = (60, Duration::from_secs(6));
    let per_process = three_processes(redis.port, limit, run, || {});
    let counts: Vec<usize> = per_process.iter().map(Vec::len).collect();
    let all: Vec<u64> = per_process.into_iter().flatten().collect();
    let total = all.len();
    assert!(windows(all) <= limit as usize, "over the limit in one second");
    // The group uses its budget: paced at 60/s less the window's slack.
    assert!(total as f64 >= 0.9 * 60.0 * 6.0, "only {total} grants in 6 s");
    // Every process gets its turn.
    assert!(counts.iter().all(|&n| n >= total / 6), "unfair: {counts:?}");
}

#[test]
fn with_redis_killed_and_back_each_process_keeps_to_its_share_and_the_group_to_the_limit() {
    let mut redis = Redis::start(None);
    let (limit, run) = (60, Duration::from_secs(9));
    let per_process = three_processes(redis.port, limit, run, || {
        std::thread::sleep(Duration::from_secs(3));
        redis.kill9();
        std::thread::sleep(Duration::from_secs(2));
        redis.restart();
    });
    let counts: Vec<usize> = per_process.iter().map(Vec::len).collect();
    for grants in &per_process {
        assert!(!grants.is_empty());
    }
    let all: Vec<u64> = per_process.into_iter().flatten().collect();
    let total = all.len();
    let worst = windows(all);
    assert!(worst <= limit as usize, "{worst} in one second: {counts:?}");
    // Local shares (20/s each) while Redis was away, shared slots before and
    // after; a window's pause at each change (no window holds both).
    assert!(
        total as f64 >= 0.7 * 60.0 * 9.0,
        "only {total} grants in 9 s: {counts:?}"
    );
}

/// A replica of the group: the exporter and its callback listener.
fn replica(fake: &Fake, redis: &Redis, id: &str, rooms: &[String]) -> (Exporter, std::net::SocketAddr) {
    let callbacks = free_port();
    let rooms: String = rooms.iter().map(|r| format!("  - {r}\n")).collect();
    let yaml = format!(
        "app:\n  sdkappid: {SDKAPPID}\n  identifier: administrator\n  endpoint: {}\n  usersig_ttl: 1h\n\
         polling:\n  interval: 3s\n  rate_limit: 100\n  timeout: 4s\nrooms:\n{rooms}\
         callbacks:\n  listen_address: 127.0.0.1:{}\n  redis_url: {}\n\
         ha:\n  replica_id: {id}\n  heartbeat: 500ms\n  dead_after: 2s\n",
        fake.endpoint(),
        callbacks,
        redis.url()
    );
    (
        Exporter::start_yaml(&yaml, &[]),
        ([127, 0, 0, 1], callbacks).into(),
    )
}

async fn gauge(exporter: &Exporter, name: &str) -> f64 {
    value(&exporter.metrics().await, name).unwrap_or(-1.0)
}

/// Waits until `check` holds, up to `within`; whether it did, and when.
async fn until<F: std::future::Future<Output = bool>>(
    within: Duration,
    mut check: impl FnMut() -> F,
) -> Option<Duration> {
    let start = Instant::now();
    while start.elapsed() < within {
        if check().await {
            return Some(start.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    None
}

fn calls(fake: &Fake) -> std::collections::HashMap<String, usize> {
    fake.with(|s| s.calls_per_room.clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_poll_each_room_once_configured_or_discovered_show_every_room_and_the_survivor_takes_over(
) {
    let redis = Redis::start(None);
    let fake = Fake::start(0).await;
    let rooms = common::rooms(120);
    for (i, room) in rooms.iter().enumerate() {
        // Below polling.watch's threshold: only the pass polls them.
        fake.add_room(room, i as u64 % 40, 100);
    }
    let (a, a_callbacks) = replica(&fake, &redis, "a", &rooms);
    let (mut b, _) = replica(&fake, &redis, "b", &rooms);
    a.wait_ready(Duration::from_secs(15)).await;
    b.wait_ready(Duration::from_secs(15)).await;
    let split = until(Duration::from_secs(10), || async {
        gauge(&a, "roomengine_ha_replicas").await == 2.0
            && gauge(&b, "roomengine_ha_replicas").await == 2.0
            && gauge(&a, "roomengine_ha_owned_rooms").await + gauge(&b, "roomengine_ha_owned_rooms").await
                == 120.0
    })
    .await;
    assert!(split.is_some(), "the pair never split the 120 rooms");
    let owned_a = gauge(&a, "roomengine_ha_owned_rooms").await;
    assert!((30.0..=90.0).contains(&owned_a), "a owns {owned_a} of 120");
    // 30 rooms discovered through callbacks, all sent to a: split the same way.
    let discovered: Vec<String> = (1..=30).map(|i| format!("found-{i:02}")).collect();
    for room in &discovered {
        fake.add_room(room, 7, 100);
        let (status, _) = common::post_callback(
            a_callbacks,
            common::CREATE,
            &common::create_body(room, common::now_ms()),
            "",
        )
        .await;
        assert_eq!(status, 200);
    }
    let rooms: Vec<String> = rooms.into_iter().chain(discovered.iter().cloned()).collect();
    let split = until(Duration::from_secs(10), || async {
        gauge(&a, "roomengine_ha_owned_rooms").await + gauge(&b, "roomengine_ha_owned_rooms").await == 150.0
    })
    .await;
    assert!(split.is_some(), "the discovered rooms were not split");
    // Their catch-up polls are done before the window below.
    tokio::time::sleep(Duration::from_secs(1)).await;

    // Three passes of 3 s: each room polled once per pass, by one replica.
    let before = calls(&fake);
    tokio::time::sleep(Duration::from_secs(9)).await;
    let after = calls(&fake);
    let polls: Vec<usize> = rooms
        .iter()
        .map(|r| after.get(r).copied().unwrap_or(0) - before.get(r).copied().unwrap_or(0))
        .collect();
    assert!(
        polls.iter().all(|&n| (2..=4).contains(&n)),
        "polls per room in 9 s (each replica polling every room would be 6): {polls:?}"
    );

    // One view: every room, with the same members, on both replicas.
    let (text_a, text_b) = (a.metrics().await, b.metrics().await);
    for (i, room) in rooms.iter().enumerate() {
        let series = format!("roomengine_room_members{{room_id=\"{room}\"}}");
        let members = if i < 120 { (i % 40) as f64 } else { 7.0 };
        assert_eq!(value(&text_a, &series), Some(members), "{room} on a");
        assert_eq!(value(&text_b, &series), Some(members), "{room} on b");
    }

    // kill -9 of b: a polls b's rooms within dead_after (2 s) + a heartbeat + a pass (3 s).
    b.child.kill().expect("kill -9");
    let killed = Instant::now();
    let at_kill = calls(&fake);
    let took = until(Duration::from_secs(12), || async {
        let now = calls(&fake);
        rooms.iter().all(|r| now.get(r) > at_kill.get(r))
    })
    .await;
    let took = took.unwrap_or_else(|| panic!("b's rooms not all polled within 12 s of the kill"));
    assert!(took <= Duration::from_secs(8), "took {took:?}");
    assert_eq!(gauge(&a, "roomengine_ha_owned_rooms").await, 150.0);
    assert_eq!(gauge(&a, "roomengine_ha_replicas").await, 1.0);
    assert!(killed.elapsed() < Duration::from_secs(15));

    // The pair never sent more than the group's 100 calls in a second, nor got 60011.
    let mut arrivals = fake.with(|s| s.arrivals.clone());
    arrivals.sort();
    assert!(
        worst_window(&arrivals) <= 100,
        "worst second {}",
        worst_window(&arrivals)
    );
    assert_eq!(fake.answered(60011), 0);
}

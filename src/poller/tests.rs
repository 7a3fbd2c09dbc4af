//! The schedule under tokio's paused clock, against a fake API that records
//! which room was called when and answers from a script.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::retry::{backoff, JITTER};
use super::{Poller, PollerMetrics, RoomApi, MAX_RETRIES};
use crate::api::model::{RoomInfo, SeatUsage};
use crate::api::{CallError, ErrorClass};
use crate::budget::{Budget, Permit};
use crate::roomset::Reschedule;
use crate::store::Store;
use crate::watch::WatchSettings;

/// Answers `get_room_info` with each room's (members, max), after the
/// failures scripted for it; records every call with its instant.
struct FakeApi {
    budget: Budget,
    start: Instant,
    members: Mutex<HashMap<String, (u64, u64)>>,
    failures: Mutex<HashMap<String, VecDeque<ErrorClass>>>,
    calls: Mutex<Vec<(String, Duration)>>,
}

impl FakeApi {
    fn calls(&self) -> Vec<(String, Duration)> {
        lock(&self.calls).clone()
    }

    /// The calls of `room`, as instants since the start.
    fn calls_of(&self, room: &str) -> Vec<Duration> {
        self.calls()
            .into_iter()
            .filter(|(r, _)| r == room)
            .map(|(_, at)| at)
            .collect()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl RoomApi for FakeApi {
    fn budget(&self) -> &Budget {
        &self.budget
    }

    fn get_room_info(
        &self,
        _permit: Permit,
        room: &str,
    ) -> impl Future<Output = Result<RoomInfo, CallError>> + Send {
        lock(&self.calls).push((room.to_owned(), self.start.elapsed()));
        let failure = lock(&self.failures).get_mut(room).and_then(VecDeque::pop_front);
        let (members, max) = lock(&self.members).get(room).copied().unwrap_or((0, 100));
        let room_id = room.to_owned();
        async move {
            match failure {
                Some(class) => Err(CallError::transport("scripted", class, "scripted failure")),
                None => Ok(RoomInfo {
                    room_id: room_id.into(),
                    member_count: members,
                    max_member_count: max,
                    ..RoomInfo::default()
                }),
            }
        }
    }

    async fn get_seat_list(&self, _permit: Permit, _room: &str) -> Result<SeatUsage, CallError> {
        Ok(SeatUsage::default())
    }
}

/// A poller running over the fake API, and the handles a test steers it by.
struct Running {
    api: Arc<FakeApi>,
    store: Arc<Store>,
    metrics: PollerMetrics,
    ready: Arc<AtomicBool>,
    reschedule: mpsc::UnboundedSender<Reschedule>,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

struct Setup<'a> {
    rooms: Vec<String>,
    interval: Duration,
    rate_limit: u32,
    watch: WatchSettings,
    members: &'a [(&'a str, u64, u64)],
    failures: &'a [(&'a str, &'a [ErrorClass])],
    /// Rooms of `rooms` that are configured (the rest as if discovered).
    configured: Vec<String>,
}

const NO_WATCH: WatchSettings = WatchSettings {
    enabled: false,
    threshold: 0.8,
    interval: Duration::from_secs(5),
    max_share: 0.5,
};

impl Setup<'_> {
    /// `rooms` polled every `interval` at `rate_limit`, without the watch tier or failures.
    fn new(rooms: Vec<String>, interval: Duration, rate_limit: u32) -> Self {
        Setup {
            rooms,
            interval,
            rate_limit,
            watch: NO_WATCH,
            members: &[],
            failures: &[],
            configured: Vec::new(),
        }
    }

    fn start(&self) -> Running {
        let rooms = self.rooms.clone();
        let api = Arc::new(FakeApi {
            budget: Budget::new(self.rate_limit),
            start: Instant::now(),
            members: Mutex::new(
                self.members
                    .iter()
                    .map(|(r, n, max)| (r.to_string(), (*n, *max)))
                    .collect(),
            ),
            failures: Mutex::new(
                self.failures
                    .iter()
                    .map(|(r, classes)| (r.to_string(), classes.iter().copied().collect()))
                    .collect(),
            ),
            calls: Mutex::new(Vec::new()),
        });
        let store = Arc::new(Store::new(&rooms));
        let metrics = PollerMetrics::new(&prometheus::Registry::new());
        let ready = Arc::new(AtomicBool::new(false));
        let poller = Poller {
            client: api.clone(),
            store: store.clone(),
            metrics: metrics.clone(),
            seat_usage: AtomicBool::new(false),
            ready: ready.clone(),
            watch: self.watch,
            on_gone: Box::new(|_, _| {}),
            journal: Arc::new(crate::journal::Journal::new()),
            configured: self.configured.clone(),
            share: None,
        };
        let (reschedule, reloads) = mpsc::unbounded_channel();
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(poller.run(rooms, self.interval, reloads, shutdown.clone()));
        Running {
            api,
            store,
            metrics,
            ready,
            reschedule,
            shutdown,
            task,
        }
    }
}

impl Running {
    async fn stop(self) {
        self.shutdown.cancel();
        self.task.await.expect("the poller ends cleanly");
    }

    fn polls(&self, tier: &str) -> u64 {
        self.metrics.polls.with_label_values(&[tier]).get()
    }
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// Instants rounded to the millisecond: the budget's pace is a float.
fn in_ms(calls: &[(String, Duration)]) -> Vec<(&str, u64)> {
    calls
        .iter()
        .map(|(r, at)| (r.as_str(), at.as_millis() as u64))
        .collect()
}

fn rooms(names: &[&str]) -> Vec<String> {
    names.iter().map(|r| r.to_string()).collect()
}

fn numbered(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("r{i}")).collect()
}

/// `rooms` called in turn from `from_ms`, `step_ms` apart.
fn evenly(rooms: &[String], from_ms: u64, step_ms: u64) -> Vec<(&str, u64)> {
    rooms
        .iter()
        .enumerate()
        .map(|(i, r)| (r.as_str(), from_ms + step_ms * i as u64))
        .collect()
}

#[tokio::test(start_paused = true)]
async fn a_pass_that_fits_spreads_its_rooms_evenly_over_the_interval() {
    let names = numbered(10);
    let poller = Setup::new(names.clone(), Duration::from_secs(10), 100).start();
    tokio::time::sleep(ms(25_500)).await;
    let calls = poller.api.calls();
    let calls = in_ms(&calls);
    // The first pass goes at the full budget (one call per 10 ms), so every
    // room has data soon after start; it is ready then.
    assert_eq!(calls[..10], evenly(&names, 0, 10)[..]);
    assert!(poller.ready.load(std::sync::atomic::Ordering::Acquire));
    // Later passes start every interval and space their turns by interval ÷ rooms, in turn order.
    assert_eq!(calls[10..20], evenly(&names, 10_000, 1000)[..]);
    assert_eq!(calls[20..], evenly(&names[..6], 20_000, 1000)[..]);
    // The second pass's last answer came 9 s after it started.
    assert_eq!(poller.metrics.sweep_duration.get(), 9.0);
    assert_eq!(poller.polls("pass"), 26);
    poller.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_pass_that_does_not_fit_stretches_to_calls_over_rate() {
    let names = numbered(10);
    let poller = Setup::new(names.clone(), Duration::from_secs(1), 2).start();
    tokio::time::sleep(Duration::from_secs(20)).await;
    let calls = poller.api.calls();
    // Every pass polls every room once, in turn order.
    for pass in calls.chunks(10).filter(|c| c.len() == 10) {
        let order: Vec<&str> = pass.iter().map(|(r, _)| r.as_str()).collect();
        assert_eq!(order, names.iter().map(String::as_str).collect::<Vec<_>>());
    }
    // 10 calls at 2 per 1.015 s (the budget's window and its initial slack)
    // take 5.075 s: a pass starts that long after the previous one, not
    // after the 1 s interval.
    let starts: Vec<f64> = calls.chunks(10).map(|c| c[0].1.as_secs_f64()).collect();
    assert!(starts.len() >= 3, "{calls:?}");
    for pair in starts.windows(2).skip(1) {
        let gap = pair[1] - pair[0];
        assert!((5.05..5.11).contains(&gap), "passes {gap} s apart: {starts:?}");
    }
    // Inside a pass the turns are spread, never more than the rate limit in any second.
    let at: Vec<Duration> = calls.iter().map(|(_, at)| *at).collect();
    for (i, start) in at.iter().enumerate() {
        let in_window = at[i..]
            .iter()
            .take_while(|t| **t - *start < Duration::from_secs(1))
            .count();
        assert!(in_window <= 2, "{in_window} calls in the second from {start:?}");
    }
    poller.stop().await;
}

#[tokio::test(start_paused = true)]
async fn added_rooms_are_polled_at_once_then_take_turns_by_last_poll_and_removed_rooms_are_skipped() {
    let poller = Setup::new(rooms(&["a", "b", "c", "d"]), Duration::from_secs(8), 100).start();
    // Mid-way through the second pass (turns at 8, 10, 12 and 14 s), x joins and c leaves.
    tokio::time::sleep(ms(9_000)).await;
    poller.store.add_rooms(&["x"]);
    poller
        .reschedule
        .send(Reschedule::Rooms {
            added: vec!["x".into()],
            removed: vec!["c".into()],
        })
        .expect("the poller listens");
    tokio::time::sleep(ms(14_000)).await;
    let calls = poller.api.calls();
    assert_eq!(
        in_ms(&calls),
        [
            ("a", 0),
            ("b", 10),
            ("c", 20),
            ("d", 30),
            ("a", 8_000),
            // The catch-up poll, at once.
            ("x", 9_000),
            ("b", 10_000),
            // c's turn is skipped; d keeps its own.
            ("d", 12_000),
            // The next pass takes the rooms least recently polled first: x
            // (polled at 9 s) now comes between a (8 s) and b (10 s).
            ("a", 16_000),
            ("x", 18_000),
            ("b", 20_000),
            ("d", 22_000),
        ]
    );
    poller.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_retryable_failure_is_retried_with_backoff_and_a_refusal_is_not() {
    let flaky = [ErrorClass::Retryable; 1 + MAX_RETRIES as usize];
    let poller = Setup {
        failures: &[
            ("flaky", &flaky),
            ("refused", &[ErrorClass::BadRequest]),
            ("recovers", &[ErrorClass::Retryable]),
        ],
        ..Setup::new(
            rooms(&["flaky", "refused", "recovers"]),
            Duration::from_secs(10),
            100,
        )
    }
    .start();
    tokio::time::sleep(Duration::from_secs(5)).await;
    // The first attempt and MAX_RETRIES retries, each after BACKOFF_BASE × 2^n × [0.5, 1.5).
    let flaky = poller.api.calls_of("flaky");
    assert_eq!(flaky.len(), 1 + MAX_RETRIES as usize, "{flaky:?}");
    assert_eq!(flaky[0], Duration::ZERO);
    for (retry, pair) in flaky.windows(2).enumerate() {
        let gap = pair[1] - pair[0];
        // Timers fire on whole milliseconds, so the upper bound may be reached.
        let bounds = backoff(retry as u32, JITTER.start)..=backoff(retry as u32, JITTER.end);
        assert!(
            bounds.contains(&gap),
            "retry {retry} after {gap:?}, not in {bounds:?}"
        );
    }
    assert_eq!(poller.api.calls_of("refused"), [ms(10)]);
    let recovers = poller.api.calls_of("recovers");
    assert_eq!(recovers.len(), 2, "{recovers:?}");
    // Each room's poll ended once; only the one that recovered shows as up.
    assert_eq!(poller.polls("pass"), 3);
    let up = |room: &str| poller.store.snapshot(room).is_some_and(|s| s.up);
    assert_eq!((up("flaky"), up("refused"), up("recovers")), (false, false, true));
    poller.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_room_close_to_capacity_gets_watch_polls_between_the_turns() {
    let watch = WatchSettings {
        enabled: true,
        ..NO_WATCH
    };
    let poller = Setup {
        watch,
        members: &[("nearly_full", 95, 100), ("empty", 1, 100)],
        ..Setup::new(rooms(&["nearly_full", "empty"]), Duration::from_secs(30), 100)
    }
    .start();
    tokio::time::sleep(ms(29_000)).await;
    // Polled by the first pass, then by the watch tier every watch interval (5 s).
    let seconds = |room: &str| -> Vec<u64> {
        poller
            .api
            .calls_of(room)
            .iter()
            .map(|at| at.as_millis() as u64)
            .collect()
    };
    assert_eq!(seconds("nearly_full"), [0, 5_000, 10_000, 15_000, 20_000, 25_000]);
    // A room far from full waits for its next turn (the pass starting at 30 s).
    assert_eq!(seconds("empty"), [10]);
    assert_eq!((poller.polls("pass"), poller.polls("watch")), (2, 5));
    assert_eq!(poller.metrics.rooms_watched.get(), 1);
    poller.stop().await;
}

#[tokio::test(start_paused = true)]
async fn configured_rooms_keep_their_interval_while_discovered_rooms_stretch_the_pass() {
    // 40 rooms at 2 calls/s take 20 s a pass; interval 4 s. conf-1 and conf-2
    // are configured: each is polled at least every 1.25 x 4 s = 5 s.
    let mut all = rooms(&["conf-1", "conf-2"]);
    all.extend((0..38).map(|i| format!("d-{i:02}")));
    let mut setup = Setup::new(all, Duration::from_secs(4), 2);
    setup.configured = rooms(&["conf-1", "conf-2"]);
    let poller = setup.start();
    tokio::time::sleep(ms(60_000)).await;
    let calls = poller.api.calls();
    for room in ["conf-1", "conf-2"] {
        let at: Vec<Duration> = calls
            .iter()
            .filter(|(r, _)| r == room)
            .map(|(_, at)| *at)
            .collect();
        assert!(at.len() >= 9, "{room} polled {} times in 60 s: {at:?}", at.len());
        // After the first pass (at the full budget, its calls all queued at
        // once): 5 s, plus the wait for the budget behind a turn or two.
        for pair in at.windows(2).filter(|p| p[0] >= ms(20_000)) {
            let gap = pair[1] - pair[0];
            assert!(gap <= ms(6_100), "{room}: {gap:?} between polls: {at:?}");
        }
    }
    // Every discovered room still gets its turn, later than every 4 s.
    for i in 0..38 {
        let room = format!("d-{i:02}");
        let n = calls.iter().filter(|(r, _)| *r == room).count();
        assert!((2..=4).contains(&n), "{room} polled {n} times in 60 s");
    }
    // The budget holds: never more than 2 calls in a second.
    let at: Vec<Duration> = calls.iter().map(|(_, at)| *at).collect();
    for (i, start) in at.iter().enumerate() {
        let in_window = at[i..].iter().take_while(|t| **t - *start < ms(1_000)).count();
        assert!(in_window <= 2, "{in_window} calls in the second from {start:?}");
    }
    poller.stop().await;
}

#[tokio::test(start_paused = true)]
async fn without_a_stretch_configured_rooms_get_no_extra_polls() {
    let mut setup = Setup::new(rooms(&["conf-1", "d-1", "d-2"]), Duration::from_secs(3), 100);
    setup.configured = rooms(&["conf-1"]);
    let poller = setup.start();
    tokio::time::sleep(ms(10_500)).await;
    let calls = poller.api.calls();
    let n = calls.iter().filter(|(r, _)| r == "conf-1").count();
    // Passes at 0, 3, 6 and 9 s: one poll each, no more.
    assert_eq!(n, 4, "{:?}", in_ms(&calls));
    poller.stop().await;
}

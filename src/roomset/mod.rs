//! The room set: which rooms exist for the exporter, the configured ones
//! plus those callbacks announced, kept durable. One writer thread owns it:
//! it applies callbacks in batches, commits each batch to the state backend
//! (group commit) and only then updates the store and the poller's turns
//! and acknowledges; it also forgets destroyed rooms after `forget_after`.

mod metrics;
mod redis;
mod sqlite;

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc as tokio_mpsc, oneshot};

use crate::clock::unix_now_ms;
use crate::room::{RoomFacts, RoomUpdate};
use crate::store::{RoomChanges, Store};
use crate::watch::WatchSettings;

pub use self::metrics::RoomSetMetrics;
pub use self::redis::RedisState;
pub use sqlite::SqliteState;

/// Callbacks the writer takes into one transaction at most.
const MAX_BATCH: usize = 4096;
/// How soon the writer reads other replicas' changes again after failing to.
const REMOTE_RETRY: Duration = Duration::from_secs(1);

/// What the state backend keeps of one room: what callbacks said of it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Record {
    pub facts: RoomFacts,
    /// `EventTime` of the newest callback applied (ms).
    pub last_callback_ms: u64,
    /// When the exporter learnt the room was destroyed (its own clock, ms):
    /// it is forgotten `forget_after` later unless configured.
    pub destroyed_at_ms: Option<u64>,
}

impl Record {
    /// Takes what `other` (another replica's record of the room) knows more
    /// recently; whether anything changed.
    pub fn absorb(&mut self, other: &Record) -> bool {
        let mut changed = self.facts.absorb(&other.facts);
        if other.last_callback_ms > self.last_callback_ms {
            self.last_callback_ms = other.last_callback_ms;
            changed = true;
        }
        let destroyed_at = match self.facts.exists {
            Some(false) => match (self.destroyed_at_ms, other.destroyed_at_ms) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b).or(Some(unix_now_ms())),
            },
            _ => None,
        };
        changed |= destroyed_at != self.destroyed_at_ms;
        self.destroyed_at_ms = destroyed_at;
        changed
    }
}

/// Where the room set is kept between runs (and, for an HA pair, shared).
pub trait StateBackend: Send {
    /// Every room kept, as the last run (or the other replicas) left them.
    fn load(&mut self) -> Result<Vec<(String, Record)>, String>;
    /// Whether a failed first load starts the room set empty, to be filled
    /// through [`StateBackend::take_remote`] once the backend answers (a
    /// shared server, so replicas do not crash-loop while it restarts),
    /// rather than failing the start (a file).
    fn may_start_unloaded(&self) -> bool {
        false
    }
    /// Writes `changes` atomically: `Some` merges a room into what is kept
    /// (see [`Record::absorb`]), `None` deletes it. Returns the kept records
    /// that differ from those given (fields other replicas wrote); a
    /// backend with one writer returns none.
    fn commit(&mut self, changes: &[(&str, Option<&Record>)]) -> Result<Vec<(String, Record)>, String>;
    /// Rooms other replicas changed since the last call (`None`: forgotten).
    fn take_remote(&mut self) -> Result<Vec<(String, Option<Record>)>, String> {
        Ok(Vec::new())
    }
    /// Called once at start with a function that wakes the writer to call
    /// [`StateBackend::take_remote`]; backends with one writer ignore it.
    fn on_remote_change(&mut self, _wake: Box<dyn Fn() + Send + Sync>) {}
    /// One line for the start-up log.
    fn describe(&self) -> String;
}

/// Keeps nothing: the receiver's rooms last as long as the process (the demo).
pub struct MemoryState;

impl StateBackend for MemoryState {
    fn load(&mut self) -> Result<Vec<(String, Record)>, String> {
        Ok(Vec::new())
    }
    fn commit(&mut self, _: &[(&str, Option<&Record>)]) -> Result<Vec<(String, Record)>, String> {
        Ok(Vec::new())
    }
    fn describe(&self) -> String {
        "in memory (nothing survives a restart)".into()
    }
}

/// Opens the state file of `callbacks.state_file`.
pub fn open_sqlite(path: &Path) -> Result<Box<dyn StateBackend>, String> {
    Ok(Box::new(SqliteState::open(path)?))
}

/// Opens the shared room set of `callbacks.redis_url`, keyed by `sdkappid`.
pub fn open_redis(
    config: &crate::config::RedisConfig,
    sdkappid: u64,
) -> Result<Box<dyn StateBackend>, String> {
    Ok(Box::new(RedisState::open(config, sdkappid)?))
}

/// A change to the schedule, from a reload or the room set.
#[derive(Debug, Clone)]
pub enum Reschedule {
    /// A reload's polling settings.
    Settings {
        interval: Duration,
        seat_usage: bool,
        watch: WatchSettings,
    },
    /// Rooms joining the turns (polled at once, then every pass) or leaving them.
    Rooms {
        added: Vec<String>,
        removed: Vec<String>,
    },
}

/// What one callback means for the room set.
#[derive(Debug, Clone, PartialEq)]
pub struct RoomEvent {
    pub room_id: String,
    pub kind: EventKind,
    /// The fields it carries, as of its `EventTime`.
    pub update: RoomUpdate,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    Create,
    Destroy,
    /// Members, seats, room info: it also shows the room exists.
    Change,
}

enum Job {
    Callback {
        // Boxed, so that the queue's small jobs do not take a RoomEvent's room each.
        event: Box<RoomEvent>,
        done: oneshot::Sender<Result<(), String>>,
    },
    Configured {
        rooms: Vec<String>,
        done: oneshot::Sender<RoomChanges>,
    },
    Gone {
        room_id: String,
        /// When the call that got 100004 was sent.
        at_ms: u64,
    },
    /// Another replica changed the shared room set.
    Remote,
}

/// A handle to the room set's writer; cheap to clone.
#[derive(Clone)]
pub struct RoomSet {
    jobs: mpsc::Sender<Job>,
}

/// What the room set is started with.
pub struct Options {
    pub configured: Vec<String>,
    pub forget_after: Duration,
    pub backend: Box<dyn StateBackend>,
}

impl RoomSet {
    /// Loads the kept rooms into `store`, starts the writer thread and
    /// returns the handle with the rooms to poll (configured first).
    pub fn start(
        options: Options,
        store: Arc<Store>,
        metrics: RoomSetMetrics,
        poller: tokio_mpsc::UnboundedSender<Reschedule>,
    ) -> Result<(RoomSet, Vec<String>), String> {
        let Options {
            configured,
            forget_after,
            mut backend,
        } = options;
        let (loaded, up) = match backend.load() {
            Ok(loaded) => (loaded, true),
            Err(e) if backend.may_start_unloaded() => {
                tracing::error!(error = %e, state = %backend.describe(), "cannot load the room set; starting without it (callbacks answer 503 until it answers)");
                metrics.state_errors.inc();
                (Vec::new(), false)
            }
            Err(e) => return Err(e),
        };
        if up {
            tracing::info!(state = %backend.describe(), rooms = loaded.len(), "room set loaded");
        }
        let mut writer = Writer {
            configured: configured.iter().cloned().collect(),
            records: HashMap::with_capacity(loaded.len()),
            forget_after,
            backend,
            store,
            metrics,
            poller,
        };
        let mut held = configured.clone();
        let mut polled = configured;
        for (room, record) in loaded {
            if !writer.configured.contains(&room) {
                held.push(room.clone());
                if record.destroyed_at_ms.is_none() {
                    polled.push(room.clone());
                }
            }
            writer.records.insert(room, record);
        }
        writer.store.set_rooms(&held);
        for (room, record) in &writer.records {
            writer
                .store
                .record_facts(room, &record.facts, record.last_callback_ms);
        }
        writer.metrics.state_up.set(i64::from(up));
        writer.count_discovered();
        let (jobs, queue) = mpsc::channel();
        let waker = jobs.clone();
        writer.backend.on_remote_change(Box::new(move || {
            let _ = waker.send(Job::Remote);
        }));
        std::thread::Builder::new()
            .name("roomset".into())
            .spawn(move || {
                crate::priority::serve_at_lower_priority();
                writer.run(queue)
            })
            .map_err(|e| format!("cannot start the room set's writer thread: {e}"))?;
        Ok((RoomSet { jobs }, polled))
    }

    /// Applies a callback; `Ok` once it is durable and visible on /metrics.
    pub async fn apply(&self, event: RoomEvent) -> Result<(), String> {
        let (done, answer) = oneshot::channel();
        self.jobs
            .send(Job::Callback {
                event: Box::new(event),
                done,
            })
            .map_err(|_| "the room set is shutting down".to_owned())?;
        answer
            .await
            .unwrap_or_else(|_| Err("the room set is shutting down".into()))
    }

    /// Makes `rooms` the configured rooms (a reload); discovered rooms stay.
    pub async fn set_configured(&self, rooms: Vec<String>) -> RoomChanges {
        let (done, answer) = oneshot::channel();
        if self.jobs.send(Job::Configured { rooms, done }).is_err() {
            return RoomChanges::default();
        }
        answer.await.unwrap_or_default()
    }

    /// The API answered 100004 for `room_id` to a call sent at `at_ms`: a
    /// discovered room is destroyed (unless a newer callback says it exists).
    pub fn report_gone(&self, room_id: &str, at_ms: u64) {
        let _ = self.jobs.send(Job::Gone {
            room_id: room_id.to_owned(),
            at_ms,
        });
    }
}

/// The writer thread's state: the only owner of the records.
struct Writer {
    configured: HashSet<String>,
    records: HashMap<String, Record>,
    forget_after: Duration,
    backend: Box<dyn StateBackend>,
    store: Arc<Store>,
    metrics: RoomSetMetrics,
    poller: tokio_mpsc::UnboundedSender<Reschedule>,
}

/// What one batch changed, applied after its commit.
#[derive(Default)]
struct Batch {
    /// Records as they were before the batch, to restore if the commit fails.
    before: HashMap<String, Option<Record>>,
    /// Callback updates to show, in order.
    shown: Vec<(String, RoomUpdate)>,
    start_polling: Vec<String>,
    stop_polling: Vec<String>,
    forget: Vec<String>,
    acks: Vec<oneshot::Sender<Result<(), String>>>,
}

impl Writer {
    fn run(mut self, queue: mpsc::Receiver<Job>) {
        // Other replicas' changes could not be read: try again soon.
        let mut remote_owed = false;
        // The last commit failed: overdue forgets wait a retry's time, not 10 ms.
        let mut commit_failed = false;
        loop {
            let mut wait = self.next_forget_in().unwrap_or(Duration::from_secs(3600));
            if commit_failed {
                wait = wait.max(REMOTE_RETRY);
            }
            if remote_owed {
                wait = wait.min(REMOTE_RETRY);
            }
            let first = match queue.recv_timeout(wait) {
                Ok(job) => Some(job),
                Err(mpsc::RecvTimeoutError::Timeout) => None,
                Err(mpsc::RecvTimeoutError::Disconnected) => return,
            };
            let mut batch = Batch::default();
            let mut configured = Vec::new();
            let mut remote = std::mem::take(&mut remote_owed);
            for job in first
                .into_iter()
                .chain(std::iter::from_fn(|| queue.try_recv().ok()))
            {
                match job {
                    Job::Callback { event, done } => {
                        self.take(&event, &mut batch);
                        batch.acks.push(done);
                    }
                    Job::Gone { room_id, at_ms } => self.destroyed(&room_id, at_ms, &mut batch),
                    Job::Configured { rooms, done } => configured.push((rooms, done)),
                    Job::Remote => remote = true,
                }
                if batch.acks.len() >= MAX_BATCH {
                    break;
                }
            }
            self.due_forgets(&mut batch);
            commit_failed = !self.commit(batch);
            if remote {
                match self.backend.take_remote() {
                    Ok(changes) => {
                        self.metrics.state_up.set(1);
                        self.absorb_remote(changes);
                    }
                    Err(e) => {
                        self.metrics.state_up.set(0);
                        self.metrics.state_errors.inc();
                        tracing::warn!(error = %e, "cannot read the other replicas' changes; retrying");
                        remote_owed = true;
                    }
                }
            }
            // After the batch, so a reload sees every room its callbacks added.
            for (rooms, done) in configured {
                let _ = done.send(self.set_configured(rooms));
            }
        }
    }

    /// Applies one callback to the records (not yet to the store).
    fn take(&mut self, event: &RoomEvent, batch: &mut Batch) {
        let room = &event.room_id;
        let now = unix_now_ms();
        if !self.records.contains_key(room) {
            // An old callback about an unknown room is most likely about a
            // forgotten one (destroyed more than forget_after ago); so is a
            // destroy, unless the room is configured (it is polled, with or
            // without a record).
            let stale = event.update.at_ms < now.saturating_sub(self.forget_after.as_millis() as u64);
            let forgotten = event.kind == EventKind::Destroy && !self.configured.contains(room);
            if forgotten || stale {
                return;
            }
        }
        let before = self.records.get(room).cloned();
        let record = self.records.entry(room.clone()).or_default();
        let was_alive = before.as_ref().is_some_and(|r| r.destroyed_at_ms.is_none());
        if !record.facts.merge(&event.update) && before.is_some() {
            return;
        }
        record.last_callback_ms = record.last_callback_ms.max(event.update.at_ms);
        let alive = record.facts.exists != Some(false);
        record.destroyed_at_ms = match (alive, record.destroyed_at_ms) {
            (true, _) => None,
            (false, Some(at)) => Some(at),
            (false, None) => Some(now),
        };
        batch.before.entry(room.clone()).or_insert(before.clone());
        batch.shown.push((room.clone(), event.update.clone()));
        if !self.configured.contains(room) {
            if alive && !was_alive {
                batch.start_polling.push(room.clone());
            } else if !alive && (was_alive || before.is_none()) {
                batch.stop_polling.push(room.clone());
            }
        }
    }

    /// The API said a discovered room does not exist: stop polling it, forget it later.
    fn destroyed(&mut self, room: &str, at_ms: u64, batch: &mut Batch) {
        if self.configured.contains(room) {
            return;
        }
        let Some(record) = self.records.get_mut(room) else {
            return;
        };
        if record.destroyed_at_ms.is_some() {
            return;
        }
        // In the facts too, so that other replicas' records agree (Record::absorb).
        let mut facts = record.facts.clone();
        facts.merge(&RoomUpdate::gone(at_ms));
        if facts.exists != Some(false) {
            // A callback newer than the call says it exists.
            return;
        }
        batch
            .before
            .entry(room.to_owned())
            .or_insert(Some(record.clone()));
        record.facts = facts;
        record.destroyed_at_ms = Some(unix_now_ms());
        batch.stop_polling.push(room.to_owned());
    }

    fn next_forget_in(&self) -> Option<Duration> {
        let forget = self.forget_after.as_millis() as u64;
        let now = unix_now_ms();
        self.records
            .iter()
            .filter(|(room, _)| !self.configured.contains(*room))
            .filter_map(|(_, r)| r.destroyed_at_ms)
            .min()
            .map(|at| Duration::from_millis((at + forget).saturating_sub(now)).max(Duration::from_millis(10)))
    }

    fn due_forgets(&mut self, batch: &mut Batch) {
        let horizon = unix_now_ms().saturating_sub(self.forget_after.as_millis() as u64);
        let due: Vec<String> = self
            .records
            .iter()
            .filter(|(room, r)| {
                !self.configured.contains(*room) && r.destroyed_at_ms.is_some_and(|at| at <= horizon)
            })
            .map(|(room, _)| room.clone())
            .collect();
        for room in due {
            let before = self.records.remove(&room);
            batch.before.entry(room.clone()).or_insert(before);
            batch.forget.push(room);
        }
    }

    /// Commits the batch, then shows it and acknowledges; on failure puts
    /// the records back as they were, answers every callback the error and
    /// returns false.
    fn commit(&mut self, batch: Batch) -> bool {
        if batch.before.is_empty() {
            for ack in batch.acks {
                let _ = ack.send(Ok(()));
            }
            return true;
        }
        let started = Instant::now();
        let changes: Vec<(&str, Option<&Record>)> = batch
            .before
            .keys()
            .map(|room| (room.as_str(), self.records.get(room)))
            .collect();
        let result = self.backend.commit(&changes);
        self.metrics
            .state_commit_duration
            .observe(started.elapsed().as_secs_f64());
        let merged = match result {
            Ok(merged) => merged,
            Err(e) => {
                self.metrics.state_up.set(0);
                self.metrics.state_errors.inc();
                tracing::error!(error = %e, state = %self.backend.describe(), "cannot store callbacks; answering 503");
                for (room, record) in batch.before {
                    match record {
                        Some(record) => self.records.insert(room, record),
                        None => self.records.remove(&room),
                    };
                }
                for ack in batch.acks {
                    // The detail (a path, a Redis address) is in the log, not sent to the caller.
                    let _ = ack.send(Err(
                        "cannot store the callback now: the room set's state backend failed (see the exporter's log)"
                            .to_owned(),
                    ));
                }
                return false;
            }
        };
        self.metrics.state_up.set(1);
        self.store.add_rooms(&batch.start_polling);
        self.store.record_callbacks(&batch.shown);
        self.store.remove_rooms(&batch.forget);
        if !batch.start_polling.is_empty() || !batch.stop_polling.is_empty() {
            let _ = self.poller.send(Reschedule::Rooms {
                added: batch.start_polling,
                removed: batch.stop_polling,
            });
        }
        if !batch.forget.is_empty() {
            tracing::debug!(rooms = batch.forget.len(), "destroyed rooms forgotten");
        }
        let keys_changed = !batch.forget.is_empty() || batch.before.values().any(Option::is_none);
        if merged.is_empty() {
            if keys_changed {
                self.count_discovered();
            }
        } else {
            self.absorb_remote(
                merged
                    .into_iter()
                    .map(|(room, record)| (room, Some(record)))
                    .collect(),
            );
        }
        for ack in batch.acks {
            let _ = ack.send(Ok(()));
        }
        true
    }

    /// Takes other replicas' records of rooms into the set, the store and the turns.
    fn absorb_remote(&mut self, changes: Vec<(String, Option<Record>)>) {
        let (mut start, mut stop, mut forget) = (Vec::new(), Vec::new(), Vec::new());
        for (room, theirs) in changes {
            let configured = self.configured.contains(&room);
            let Some(theirs) = theirs else {
                if self.records.remove(&room).is_some() && !configured {
                    forget.push(room);
                }
                continue;
            };
            let was_alive = self.records.get(&room).map(|r| r.destroyed_at_ms.is_none());
            let record = self.records.entry(room.clone()).or_default();
            if !record.absorb(&theirs) {
                continue;
            }
            let alive = record.destroyed_at_ms.is_none();
            self.store.add_rooms(std::slice::from_ref(&room));
            self.store
                .record_facts(&room, &record.facts, record.last_callback_ms);
            if !configured && was_alive != Some(alive) {
                if alive {
                    start.push(room);
                } else if was_alive.is_some() {
                    stop.push(room);
                }
            }
        }
        self.store.remove_rooms(&forget);
        if !start.is_empty() || !stop.is_empty() {
            let _ = self.poller.send(Reschedule::Rooms {
                added: start,
                removed: stop,
            });
        }
        self.count_discovered();
    }

    /// A reload's room list: configured rooms join or leave; a room that
    /// leaves the configuration but was discovered stays.
    fn set_configured(&mut self, rooms: Vec<String>) -> RoomChanges {
        let wanted: HashSet<String> = rooms.iter().cloned().collect();
        let mut changes = RoomChanges::default();
        let left: Vec<String> = self
            .configured
            .iter()
            .filter(|room| !wanted.contains(*room))
            .cloned()
            .collect();
        for room in &left {
            match self.records.get(room) {
                Some(record) if record.destroyed_at_ms.is_none() => {}
                Some(_) => changes.removed.push(room.clone()),
                None => {
                    changes.removed.push(room.clone());
                    self.store.remove_rooms(std::slice::from_ref(room));
                }
            }
        }
        for room in &rooms {
            if self.configured.contains(room) {
                continue;
            }
            let polled_already = self
                .records
                .get(room)
                .is_some_and(|r| r.destroyed_at_ms.is_none());
            if !polled_already {
                changes.added.push(room.clone());
            }
        }
        self.store.add_rooms(&changes.added);
        self.configured = wanted;
        self.count_discovered();
        if !changes.added.is_empty() || !changes.removed.is_empty() {
            let _ = self.poller.send(Reschedule::Rooms {
                added: changes.added.clone(),
                removed: changes.removed.clone(),
            });
        }
        changes
    }

    fn count_discovered(&self) {
        let discovered = self
            .records
            .keys()
            .filter(|room| !self.configured.contains(*room))
            .count();
        self.metrics.rooms_discovered.set(discovered as i64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Loads one room destroyed an hour ago; every commit fails.
    struct Failing {
        commits: Arc<AtomicUsize>,
    }

    impl StateBackend for Failing {
        fn load(&mut self) -> Result<Vec<(String, Record)>, String> {
            let destroyed = Record {
                destroyed_at_ms: Some(unix_now_ms() - 3_600_000),
                ..Record::default()
            };
            Ok(vec![("gone-1".into(), destroyed)])
        }
        fn commit(&mut self, _: &[(&str, Option<&Record>)]) -> Result<Vec<(String, Record)>, String> {
            self.commits.fetch_add(1, Ordering::Relaxed);
            Err("disk full".into())
        }
        fn describe(&self) -> String {
            "failing".into()
        }
    }

    #[test]
    fn a_failing_backend_is_retried_once_a_second_not_in_a_loop() {
        let commits = Arc::new(AtomicUsize::new(0));
        let options = Options {
            configured: Vec::new(),
            forget_after: Duration::from_secs(600),
            backend: Box::new(Failing {
                commits: commits.clone(),
            }),
        };
        let (poller, _turns) = tokio_mpsc::unbounded_channel();
        let metrics = RoomSetMetrics::new(&prometheus::Registry::new());
        let (room_set, _) = RoomSet::start(
            options,
            Arc::new(Store::new::<&str>(&[])),
            metrics.clone(),
            poller,
        )
        .expect("starts");
        std::thread::sleep(Duration::from_millis(2_500));
        // The overdue forget: at once, then once per second (with a 10 ms
        // floor on the wait it was tried ~250 times).
        let tried = commits.load(Ordering::Relaxed);
        assert!((2..=4).contains(&tried), "{tried} commits in 2.5 s");
        assert_eq!(metrics.state_errors.get() as usize, tried);
        drop(room_set);
    }
}

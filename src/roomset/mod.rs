//! The room set: which rooms exist for the exporter, the configured ones
//! plus those callbacks announced, kept durable. This file is the handle the
//! receiver, the poller and reloads talk to; `writer` owns the records,
//! `backend` keeps them, `event` holds the messages in and out.

mod admission;
mod backend;
mod event;
mod metrics;
mod redis;
mod sqlite;
mod writer;

use std::collections::HashMap;
use std::sync::mpsc;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc as tokio_mpsc, oneshot};

use crate::clock::unix_now_ms;
use crate::store::{RoomChanges, Store};
use admission::RefusalLog;
use writer::{Job, Writer};

/// How often refused rooms are logged at most.
const REFUSAL_LOG_EVERY: Duration = Duration::from_secs(60);

pub use self::metrics::RoomSetMetrics;
pub use self::redis::{client as redis_client, scrub as scrub_password, RedisState};
pub use admission::{Limits, Refusal, RoomIdFilter};
pub use backend::{open_redis, open_sqlite, MemoryState, Record, StateBackend};
pub use event::{Answer, EventKind, Reschedule, RoomEvent};
pub use sqlite::SqliteState;

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
    pub limits: Limits,
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
            limits,
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
        metrics.max_rooms.set(limits.max_rooms as i64);
        metrics
            .rooms
            .with_label_values(&["configured"])
            .set(configured.len() as i64);
        let mut writer = Writer {
            configured: configured.iter().cloned().collect(),
            records: HashMap::with_capacity(loaded.len()),
            forget_after,
            backend,
            store,
            metrics,
            poller,
            limits,
            live: 0,
            refusals: RefusalLog::new(REFUSAL_LOG_EVERY),
            forgets: Default::default(),
        };
        let mut held = configured.clone();
        let mut polled = configured;
        let now = unix_now_ms();
        for (room, mut record) in loaded {
            // Kept rooms beyond a lowered cap stay (they were acknowledged).
            if writer.limits.clamp_record(&mut record, now) {
                writer.metrics.clock_skew.inc();
            }
            if !writer.configured.contains(&room) {
                held.push(room.clone());
                if record.destroyed_at_ms.is_none() {
                    polled.push(room.clone());
                }
            }
            writer.records.insert(room.clone(), Box::new(record));
            writer.note_forget(&room);
        }
        writer.store.set_rooms(&held);
        for (room, record) in &writer.records {
            writer
                .store
                .record_facts(room, &record.facts, record.last_callback_ms);
        }
        writer.metrics.state_up.set(i64::from(up));
        writer.count_discovered();
        writer.live = writer.count_live();
        writer
            .metrics
            .rooms
            .with_label_values(&["discovered"])
            .set(writer.live as i64);
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

    /// Applies a callback; `Ok` once it is durable and visible on /metrics
    /// (with the refusal, when its room was not taken).
    pub async fn apply(&self, event: RoomEvent) -> Answer {
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

    /// A reload's `callbacks.max_rooms`, `room_ids` and `max_clock_skew`.
    pub fn set_limits(&self, limits: Limits) {
        let _ = self.jobs.send(Job::Limits(Box::new(limits)));
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
            limits: Limits::default(),
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

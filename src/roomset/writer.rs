//! The room set's writer thread, the only owner of the records: it turns
//! jobs (callbacks, 100004 answers, reloads, other replicas' changes) into a
//! [`Change`], commits it to the backend and then fans it out in one place
//! (`Writer::fan_out`): the store, the poller's turns, the metrics, the acks.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc as tokio_mpsc, oneshot};

use super::admission::{Limits, Refusal, RefusalLog};
use super::backend::{Record, StateBackend};
use super::event::{Answer, EventKind, Reschedule, RoomEvent};
use super::metrics::RoomSetMetrics;
use crate::clock::unix_now_ms;
use crate::room::RoomUpdate;
use crate::store::{RoomChanges, Store};

/// Callbacks the writer takes into one transaction at most.
const MAX_BATCH: usize = 4096;
/// How soon the writer reads other replicas' changes again after failing to.
const REMOTE_RETRY: Duration = Duration::from_secs(1);
/// What a callback's sender is told when the backend failed; the detail (a
/// path, a Redis address) is in the log, not sent to the caller.
const STORE_FAILED: &str =
    "cannot store the callback now: the room set's state backend failed (see the exporter's log)";

pub(super) enum Job {
    Callback {
        // Boxed, so that the queue's small jobs do not take a RoomEvent's room each.
        event: Box<RoomEvent>,
        done: oneshot::Sender<Answer>,
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
    /// A reload's admission rules.
    Limits(Box<Limits>),
}

/// What a batch, a reload or other replicas changed: everything outside the
/// records that must follow, applied by [`Writer::fan_out`] only once the
/// change is durable.
#[derive(Default)]
pub(super) struct Change {
    /// Rooms the store starts to hold.
    pub show: Vec<String>,
    /// Callback updates to show, in order.
    pub updates: Vec<(String, RoomUpdate)>,
    /// Rooms whose whole record is shown again (other replicas wrote it).
    pub refresh: Vec<String>,
    /// Rooms the store drops (forgotten, or no longer configured).
    pub hide: Vec<String>,
    pub start_polling: Vec<String>,
    pub stop_polling: Vec<String>,
    /// Whether rooms joined or left the set (the discovered count changes).
    pub membership: bool,
    /// Each callback's answer channel, with the refusal its room met if any.
    pub acks: Vec<(oneshot::Sender<Answer>, Option<Refusal>)>,
}

/// One batch on its way to the backend.
#[derive(Default)]
pub(super) struct Batch {
    /// Records as they were before the batch, to restore if the commit fails.
    before: HashMap<String, Option<Box<Record>>>,
    /// The live discovered count before the batch, restored with them.
    live_before: usize,
    change: Change,
}

/// The writer thread's state.
pub(super) struct Writer {
    pub configured: HashSet<String>,
    // Boxed: a bucket of the table is a pointer, not a whole record (the
    // table is up to twice the rooms; 100,000 rooms saved 11 MB).
    pub records: HashMap<String, Box<Record>>,
    pub forget_after: Duration,
    pub backend: Box<dyn StateBackend>,
    pub store: Arc<Store>,
    pub metrics: RoomSetMetrics,
    pub poller: tokio_mpsc::UnboundedSender<Reschedule>,
    pub limits: Limits,
    /// Discovered rooms not destroyed: what counts against `max_rooms`.
    pub live: usize,
    pub refusals: RefusalLog,
    /// Destroyed rooms by the time they were destroyed, soonest first, so a
    /// batch finds the forgets due without a scan of every record. Entries go
    /// stale (the room came back, was forgotten, or became configured) and
    /// are checked against the record when they come up.
    pub forgets: BinaryHeap<Reverse<(u64, String)>>,
}

impl Writer {
    pub fn run(mut self, queue: mpsc::Receiver<Job>) {
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
            let mut batch = Batch {
                live_before: self.live,
                ..Batch::default()
            };
            let mut configured = Vec::new();
            let mut remote = std::mem::take(&mut remote_owed);
            for job in first
                .into_iter()
                .chain(std::iter::from_fn(|| queue.try_recv().ok()))
            {
                match job {
                    Job::Callback { event, done } => {
                        let refused = self.take(&event, &mut batch);
                        batch.change.acks.push((done, refused));
                    }
                    Job::Gone { room_id, at_ms } => self.destroyed(&room_id, at_ms, &mut batch),
                    Job::Configured { rooms, done } => configured.push((rooms, done)),
                    Job::Remote => remote = true,
                    Job::Limits(limits) => self.set_limits(*limits, &mut batch),
                }
                if batch.change.acks.len() >= MAX_BATCH {
                    break;
                }
            }
            self.due_forgets(&mut batch);
            commit_failed = !self.commit(batch);
            if remote {
                match self.backend.take_remote() {
                    Ok(changes) => {
                        self.metrics.state_up.set(1);
                        let change = self.absorb_remote(changes);
                        self.fan_out(change);
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
                let (answer, change) = self.set_configured(rooms);
                self.fan_out(change);
                let _ = done.send(answer);
            }
        }
    }

    /// Applies one callback to the records (not yet to the store); the
    /// refusal, when its room was not taken.
    fn take(&mut self, event: &RoomEvent, batch: &mut Batch) -> Option<Refusal> {
        let room = &event.room_id;
        let now = unix_now_ms();
        let (at_ms, skewed) = self.limits.clamp(event.update.at_ms, now);
        let update = RoomUpdate {
            at_ms,
            ..event.update.clone()
        };
        if skewed {
            self.metrics.clock_skew.inc();
        }
        if !self.records.contains_key(room) {
            // An old callback about an unknown room is most likely about a
            // forgotten one (destroyed more than forget_after ago); so is a
            // destroy, unless the room is configured (it is polled, with or
            // without a record).
            let stale = update.at_ms < now.saturating_sub(self.forget_after.as_millis() as u64);
            let forgotten = event.kind == EventKind::Destroy && !self.configured.contains(room);
            if forgotten || stale {
                return None;
            }
        }
        let before = self.records.get(room).cloned();
        let record = self.records.entry(room.clone()).or_default();
        let was_alive = before.as_ref().is_some_and(|r| r.destroyed_at_ms.is_none());
        if !record.facts.merge(&update) && before.is_some() {
            return None;
        }
        record.last_callback_ms = record.last_callback_ms.max(update.at_ms);
        let alive = record.facts.exists != Some(false);
        record.destroyed_at_ms = match (alive, record.destroyed_at_ms) {
            (true, _) => None,
            (false, Some(at)) => Some(at),
            (false, None) => Some(now),
        };
        if !self.configured.contains(room) {
            if alive && !was_alive {
                if let Err(why) = self.limits.admit(room, self.live) {
                    // Changes nothing: the record goes back as it was.
                    match &before {
                        Some(record) => self.records.insert(room.clone(), record.clone()),
                        None => self.records.remove(room),
                    };
                    self.refused(why);
                    return Some(why);
                }
                self.live += 1;
            } else if !alive && was_alive {
                self.live -= 1;
            }
        }
        let change = &mut batch.change;
        change.membership |= before.is_none();
        batch.before.entry(room.clone()).or_insert(before.clone());
        change.updates.push((room.clone(), update));
        if !self.configured.contains(room) {
            if alive && !was_alive {
                change.show.push(room.clone());
                change.start_polling.push(room.clone());
            } else if !alive && (was_alive || before.is_none()) {
                change.stop_polling.push(room.clone());
            }
        }
        None
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
        self.live -= 1;
        batch.change.stop_polling.push(room.to_owned());
    }

    /// Queues `room` to be forgotten if its record says it is destroyed
    /// (called for every room a change touched; duplicates are harmless).
    pub fn note_forget(&mut self, room: &str) {
        if let Some(at) = self.records.get(room).and_then(|r| r.destroyed_at_ms) {
            self.forgets.push(Reverse((at, room.to_owned())));
        }
    }

    fn next_forget_in(&self) -> Option<Duration> {
        let forget = self.forget_after.as_millis() as u64;
        let now = unix_now_ms();
        self.forgets.peek().map(|Reverse((at, _))| {
            Duration::from_millis((at + forget).saturating_sub(now)).max(Duration::from_millis(10))
        })
    }

    fn due_forgets(&mut self, batch: &mut Batch) {
        let horizon = unix_now_ms().saturating_sub(self.forget_after.as_millis() as u64);
        while let Some(Reverse((at, _))) = self.forgets.peek() {
            if *at > horizon {
                break;
            }
            let Some(Reverse((at, room))) = self.forgets.pop() else {
                break;
            };
            let due = !self.configured.contains(&room)
                && self
                    .records
                    .get(&room)
                    .is_some_and(|r| r.destroyed_at_ms == Some(at));
            if !due {
                continue;
            }
            let before = self.records.remove(&room);
            batch.before.entry(room.clone()).or_insert(before);
            batch.change.hide.push(room);
            batch.change.membership = true;
        }
    }

    /// Commits the batch and fans out its change; on failure puts the
    /// records back as they were, answers every callback the error and
    /// returns false.
    fn commit(&mut self, batch: Batch) -> bool {
        let Batch {
            before,
            live_before,
            mut change,
        } = batch;
        if before.is_empty() {
            self.fan_out(change);
            return true;
        }
        let started = Instant::now();
        let changes: Vec<(&str, Option<&Record>)> = before
            .keys()
            .map(|room| (room.as_str(), self.records.get(room).map(|r| &**r)))
            .collect();
        let result = self.backend.commit(&changes);
        for room in before.keys() {
            self.note_forget(room);
        }
        self.metrics
            .state_commit_duration
            .observe(started.elapsed().as_secs_f64());
        match result {
            Ok(merged) => {
                self.metrics.state_up.set(1);
                if !merged.is_empty() {
                    // Fields other replicas wrote follow the batch's own, and
                    // the callbacks are answered after both.
                    let remote = merged.into_iter().map(|(room, record)| (room, Some(record)));
                    let mut theirs = self.absorb_remote(remote.collect());
                    theirs.acks = std::mem::take(&mut change.acks);
                    self.fan_out(change);
                    change = theirs;
                }
                self.fan_out(change);
                true
            }
            Err(e) => {
                self.metrics.state_up.set(0);
                self.metrics.state_errors.inc();
                tracing::error!(error = %e, state = %self.backend.describe(), "cannot store callbacks; answering 503");
                self.live = live_before;
                for (room, record) in before {
                    match record {
                        Some(record) => self.records.insert(room.clone(), record),
                        None => self.records.remove(&room),
                    };
                    self.note_forget(&room);
                }
                for (ack, _) in change.acks {
                    let _ = ack.send(Err(STORE_FAILED.to_owned()));
                }
                false
            }
        }
    }

    /// Makes a durable change visible: the store first (so an acknowledged
    /// callback is on /metrics at its answer), then the poller's turns, the
    /// discovered count, and last the acknowledgements.
    fn fan_out(&self, change: Change) {
        self.store.add_rooms(&change.show);
        self.store.record_callbacks(&change.updates);
        for room in &change.refresh {
            if let Some(record) = self.records.get(room) {
                self.store
                    .record_facts(room, &record.facts, record.last_callback_ms);
            }
        }
        self.store.remove_rooms(&change.hide);
        if !change.start_polling.is_empty() || !change.stop_polling.is_empty() {
            let _ = self.poller.send(Reschedule::Rooms {
                added: change.start_polling,
                removed: change.stop_polling,
            });
        }
        if change.membership {
            self.count_discovered();
        }
        self.metrics
            .rooms
            .with_label_values(&["discovered"])
            .set(self.live as i64);
        for (ack, refused) in change.acks {
            let _ = ack.send(Ok(refused));
        }
    }

    /// Takes other replicas' records of rooms into the set; what the store
    /// and the turns must follow is returned.
    fn absorb_remote(&mut self, changes: Vec<(String, Option<Record>)>) -> Change {
        let mut change = Change {
            membership: true,
            ..Change::default()
        };
        for (room, theirs) in changes {
            let configured = self.configured.contains(&room);
            let Some(theirs) = theirs else {
                if self.records.remove(&room).is_some() && !configured {
                    change.hide.push(room);
                }
                continue;
            };
            let mut theirs = theirs;
            if self.limits.clamp_record(&mut theirs, unix_now_ms()) {
                self.metrics.clock_skew.inc();
            }
            let was_alive = self.records.get(&room).map(|r| r.destroyed_at_ms.is_none());
            let record = self.records.entry(room.clone()).or_default();
            if !record.absorb(&theirs) {
                continue;
            }
            let alive = record.destroyed_at_ms.is_none();
            self.note_forget(&room);
            change.show.push(room.clone());
            change.refresh.push(room.clone());
            if !configured && was_alive != Some(alive) {
                if alive {
                    change.start_polling.push(room);
                } else if was_alive.is_some() {
                    change.stop_polling.push(room);
                }
            }
        }
        self.live = self.count_live();
        change
    }

    /// A reload's room list: configured rooms join or leave; a room that
    /// leaves the configuration but was discovered stays.
    fn set_configured(&mut self, rooms: Vec<String>) -> (RoomChanges, Change) {
        let wanted: HashSet<String> = rooms.iter().cloned().collect();
        let mut answer = RoomChanges::default();
        let mut change = Change {
            membership: true,
            ..Change::default()
        };
        let left: Vec<String> = self
            .configured
            .iter()
            .filter(|room| !wanted.contains(*room))
            .cloned()
            .collect();
        for room in &left {
            self.note_forget(room);
            match self.records.get(room) {
                Some(record) if record.destroyed_at_ms.is_none() => {}
                Some(_) => answer.removed.push(room.clone()),
                None => {
                    answer.removed.push(room.clone());
                    change.hide.push(room.clone());
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
                answer.added.push(room.clone());
            }
        }
        self.configured = wanted;
        self.live = self.count_live();
        self.metrics
            .rooms
            .with_label_values(&["configured"])
            .set(self.configured.len() as i64);
        change.show = answer.added.clone();
        change.start_polling = answer.added.clone();
        change.stop_polling = answer.removed.clone();
        (answer, change)
    }

    /// Discovered rooms not destroyed, counted afresh.
    pub fn count_live(&self) -> usize {
        self.records
            .iter()
            .filter(|(room, r)| r.destroyed_at_ms.is_none() && !self.configured.contains(*room))
            .count()
    }

    /// Counts a refused room, and logs the refusals at most once a minute.
    fn refused(&mut self, why: Refusal) {
        self.metrics.refused.with_label_values(&[why.label()]).inc();
        if let Some(counts) = self.refusals.refused(why, Instant::now()) {
            let [room_limit, filtered] = counts;
            tracing::warn!(
                room_limit,
                filtered,
                max_rooms = self.limits.max_rooms,
                "callbacks named rooms the room set did not take (answered OK; counted in roomengine_callbacks_rooms_refused_total)"
            );
        }
    }

    /// A reload's admission rules; discovered rooms the new filters refuse
    /// are forgotten now (rooms beyond a lowered cap stay: they were taken).
    fn set_limits(&mut self, limits: Limits, batch: &mut Batch) {
        self.limits = limits;
        self.metrics.max_rooms.set(self.limits.max_rooms as i64);
        let filtered: Vec<String> = self
            .records
            .keys()
            .filter(|room| !self.configured.contains(*room) && !self.limits.room_ids.admits(room))
            .cloned()
            .collect();
        for room in filtered {
            let before = self.records.remove(&room);
            if before.as_ref().is_some_and(|r| r.destroyed_at_ms.is_none()) {
                self.live -= 1;
                batch.change.stop_polling.push(room.clone());
            }
            batch.before.entry(room.clone()).or_insert(before);
            batch.change.hide.push(room);
            batch.change.membership = true;
        }
    }

    pub fn count_discovered(&self) {
        // Counted over the configured rooms (few), not the records (up to
        // max_rooms): this runs after every batch that changed membership.
        let configured = self
            .configured
            .iter()
            .filter(|room| self.records.contains_key(*room))
            .count();
        let discovered = self.records.len() - configured;
        self.metrics.rooms_discovered.set(discovered as i64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::room::{Field, Fields};
    use crate::roomset::MemoryState;

    fn writer(configured: &[&str]) -> (Writer, tokio_mpsc::UnboundedReceiver<Reschedule>) {
        let (poller, turns) = tokio_mpsc::unbounded_channel();
        let writer = Writer {
            configured: configured.iter().map(|r| r.to_string()).collect(),
            records: HashMap::new(),
            forgets: BinaryHeap::new(),
            forget_after: Duration::from_secs(600),
            backend: Box::new(MemoryState),
            store: Arc::new(Store::new(configured)),
            metrics: RoomSetMetrics::new(&prometheus::Registry::new()),
            poller,
            limits: Limits::default(),
            live: 0,
            refusals: RefusalLog::new(Duration::from_secs(60)),
        };
        (writer, turns)
    }

    fn event(room: &str, kind: EventKind, at_ms: u64) -> RoomEvent {
        let update = match kind {
            EventKind::Destroy => RoomUpdate::gone(at_ms),
            _ => RoomUpdate {
                fields: Fields::NONE.with(Field::Exists),
                exists: true,
                at_ms,
                ..RoomUpdate::default()
            },
        };
        RoomEvent {
            room_id: room.into(),
            kind,
            update,
        }
    }

    #[test]
    fn a_create_for_a_new_room_is_shown_polled_and_counted() {
        let (mut w, _turns) = writer(&["conf-1"]);
        let mut batch = Batch::default();
        w.take(&event("new-1", EventKind::Create, unix_now_ms()), &mut batch);
        let change = &batch.change;
        assert_eq!(change.show, ["new-1"]);
        assert_eq!(change.start_polling, ["new-1"]);
        assert!(change.stop_polling.is_empty() && change.hide.is_empty());
        assert_eq!(change.updates.len(), 1);
        assert!(change.membership);
        assert_eq!(batch.before.get("new-1"), Some(&None));
    }

    #[test]
    fn a_destroy_of_a_configured_room_is_shown_but_keeps_its_turn() {
        let (mut w, _turns) = writer(&["conf-1"]);
        let mut batch = Batch::default();
        w.take(&event("conf-1", EventKind::Destroy, unix_now_ms()), &mut batch);
        let change = &batch.change;
        assert_eq!(change.updates.len(), 1, "exists 0 is shown");
        assert!(
            change.stop_polling.is_empty(),
            "a configured room is always polled"
        );
        assert!(change.show.is_empty());
    }

    #[test]
    fn a_destroy_of_an_unknown_discovered_room_changes_nothing() {
        let (mut w, _turns) = writer(&[]);
        let mut batch = Batch::default();
        w.take(&event("gone-1", EventKind::Destroy, unix_now_ms()), &mut batch);
        assert!(batch.before.is_empty() && batch.change.updates.is_empty());
        assert!(!batch.change.membership);
    }

    #[test]
    fn a_committed_batch_reaches_the_store_the_turns_and_the_metrics_at_once() {
        let (mut w, mut turns) = writer(&[]);
        let mut batch = Batch::default();
        w.take(&event("new-1", EventKind::Create, unix_now_ms()), &mut batch);
        let (done, mut answer) = oneshot::channel();
        batch.change.acks.push((done, None));
        assert!(w.commit(batch));
        assert!(w.store.contains("new-1"));
        assert_eq!(w.metrics.rooms_discovered.get(), 1);
        match turns.try_recv() {
            Ok(Reschedule::Rooms { added, removed }) => {
                assert_eq!((added, removed), (vec!["new-1".to_string()], vec![]));
            }
            other => panic!("no turn change: {other:?}"),
        }
        assert_eq!(answer.try_recv(), Ok(Ok(None)));
    }

    #[test]
    fn a_destroyed_room_is_forgotten_when_due_unless_it_came_back_meanwhile() {
        let (mut w, _turns) = writer(&[]);
        w.forget_after = Duration::ZERO;
        let now = unix_now_ms();
        let commit = |w: &mut Writer, kind, at_ms| {
            let mut batch = Batch::default();
            w.take(&event("room-1", kind, at_ms), &mut batch);
            assert!(w.commit(batch));
        };
        commit(&mut w, EventKind::Create, now);
        commit(&mut w, EventKind::Destroy, now + 1);
        assert_eq!(w.forgets.len(), 1, "the destroy waits for its forget");
        // Created again before the forget came due: the waiting entry is stale.
        commit(&mut w, EventKind::Create, now + 2);
        let mut batch = Batch::default();
        w.due_forgets(&mut batch);
        assert!(
            batch.change.hide.is_empty(),
            "a room alive again is not forgotten"
        );
        assert!(w.records.contains_key("room-1") && w.forgets.is_empty());
        commit(&mut w, EventKind::Destroy, now + 3);
        std::thread::sleep(Duration::from_millis(2));
        let mut batch = Batch::default();
        w.due_forgets(&mut batch);
        assert_eq!(batch.change.hide, ["room-1"]);
        assert!(!w.records.contains_key("room-1"));
        assert!(w.next_forget_in().is_none(), "nothing else waits");
    }

    #[test]
    fn a_reload_adds_and_removes_configured_rooms_but_keeps_discovered_ones() {
        let (mut w, mut turns) = writer(&["conf-1", "conf-2"]);
        let mut batch = Batch::default();
        w.take(&event("conf-2", EventKind::Create, unix_now_ms()), &mut batch);
        assert!(w.commit(batch));
        let (answer, change) = w.set_configured(vec!["conf-1".into(), "conf-3".into()]);
        w.fan_out(change);
        assert_eq!(answer.added, ["conf-3"]);
        assert!(
            answer.removed.is_empty(),
            "conf-2 is alive by callback: it stays, discovered"
        );
        assert!(w.store.contains("conf-2") && w.store.contains("conf-3"));
        assert_eq!(w.metrics.rooms_discovered.get(), 1);
        let last = std::iter::from_fn(|| turns.try_recv().ok()).last();
        assert!(
            matches!(&last, Some(Reschedule::Rooms { added, removed }) if added == &["conf-3"] && removed.is_empty()),
            "{last:?}"
        );
    }
    fn capped(max_rooms: usize, deny: &[&str]) -> Writer {
        let (mut w, _turns) = writer(&["conf-1"]);
        let deny: Vec<String> = deny.iter().map(|d| d.to_string()).collect();
        w.limits = Limits {
            max_rooms,
            room_ids: crate::roomset::RoomIdFilter::new(&[], &deny).expect("valid"),
            ..Limits::default()
        };
        w
    }

    fn refused(w: &Writer, reason: &str) -> u64 {
        w.metrics.refused.with_label_values(&[reason]).get()
    }

    #[test]
    fn a_room_beyond_the_cap_changes_nothing_and_is_counted() {
        let mut w = capped(2, &[]);
        let mut batch = Batch::default();
        for room in ["a", "b", "c"] {
            w.take(&event(room, EventKind::Create, unix_now_ms()), &mut batch);
        }
        assert_eq!(batch.change.start_polling, ["a", "b"]);
        assert!(!w.records.contains_key("c"), "no record for a refused room");
        assert_eq!((w.live, refused(&w, "room_limit")), (2, 1));
        // Configured rooms never count and are never refused.
        w.take(&event("conf-1", EventKind::Change, unix_now_ms()), &mut batch);
        assert_eq!(batch.change.updates.len(), 3);
        // A destroyed room frees its slot at once.
        w.take(&event("a", EventKind::Destroy, unix_now_ms()), &mut batch);
        w.take(&event("c", EventKind::Create, unix_now_ms()), &mut batch);
        assert_eq!(batch.change.start_polling, ["a", "b", "c"]);
        assert_eq!((w.live, refused(&w, "room_limit")), (2, 1));
    }

    #[test]
    fn a_filtered_room_is_not_taken_and_a_reload_forgets_the_ones_it_filters() {
        let mut w = capped(10, &["tmp-.*"]);
        let mut batch = Batch::default();
        w.take(&event("tmp-1", EventKind::Create, unix_now_ms()), &mut batch);
        w.take(&event("meet-1", EventKind::Create, unix_now_ms()), &mut batch);
        assert_eq!(batch.change.start_polling, ["meet-1"]);
        assert_eq!(refused(&w, "filtered"), 1);
        assert!(w.commit(batch));
        let mut batch = Batch::default();
        let deny = vec!["meet-.*".to_string()];
        w.set_limits(
            Limits {
                room_ids: crate::roomset::RoomIdFilter::new(&[], &deny).expect("valid"),
                ..Limits::default()
            },
            &mut batch,
        );
        assert_eq!(batch.change.hide, ["meet-1"]);
        assert_eq!(batch.change.stop_polling, ["meet-1"]);
        assert_eq!(w.live, 0);
    }

    #[test]
    fn an_event_time_years_ahead_is_applied_as_of_now_so_a_later_poll_wins() {
        let (mut w, _turns) = writer(&["conf-1"]);
        let mut batch = Batch::default();
        let now = unix_now_ms();
        let mut ahead = event("conf-1", EventKind::Change, now + 10 * 365 * 86_400_000);
        ahead.update.fields = ahead.update.fields.with(Field::Members);
        ahead.update.info.member_count = 9;
        w.take(&ahead, &mut batch);
        assert_eq!(w.metrics.clock_skew.get(), 1);
        let stamp = batch.change.updates[0].1.at_ms;
        assert!((now..now + 5_000).contains(&stamp), "{stamp} vs {now}");
        let record = &w.records["conf-1"];
        assert!(record.last_callback_ms < now + 5_000);
        // A poll sent a moment later is newer.
        let mut facts = record.facts.clone();
        let mut poll = RoomUpdate::polled(Default::default(), None, now + 5_000);
        poll.info.member_count = 4;
        facts.merge(&poll);
        assert_eq!(facts.info.member_count, 4);
    }
}

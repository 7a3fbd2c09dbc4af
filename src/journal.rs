//! The journal: fixed-size rings of the last callbacks, refused callbacks
//! and API errors, and the last events of each room, filled by one-line
//! hooks on the hot paths (poller, receiver); the status page reads it.

use compact_str::CompactString;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::api::{CallError, ErrorClass};
use crate::clock::unix_now_ms;

/// Entries each of the three recent-event rings keeps.
pub const RECENT: usize = 100;
/// Events kept per room.
pub const ROOM_EVENTS: usize = 20;
/// Rooms with an event journal at most: beyond it new rooms are not journaled
/// (the room set's cap is far below; this only bounds a flood of unknown IDs).
const MAX_JOURNALED_ROOMS: usize = 200_000;
/// Seconds of counter samples the measured rates are taken over.
const RATE_WINDOW: usize = 10;

/// A ring of at most `capacity` slots written in place: once full, recording
/// never grows it, and a slot's strings keep their buffers, so a full ring
/// records without allocating. Slots are added as entries come, so a room
/// with two events holds two slots, not [`ROOM_EVENTS`].
struct Ring<T> {
    slots: Vec<T>,
    capacity: usize,
    next: usize,
}

impl<T: Default> Ring<T> {
    fn new(capacity: usize) -> Ring<T> {
        Ring {
            slots: Vec::new(),
            capacity: capacity.max(1),
            next: 0,
        }
    }

    /// The slot to overwrite: a new one until the ring is full, then the oldest.
    fn push(&mut self) -> &mut T {
        if self.slots.len() < self.capacity {
            if self.slots.len() == self.slots.capacity() {
                // Exact steps (2, 4, 8, ... capacity), so a full ring holds no spare slots.
                let more = self.slots.len().max(2).min(self.capacity - self.slots.len());
                self.slots.reserve_exact(more);
            }
            self.slots.push(T::default());
        }
        let index = self.next;
        self.next = (self.next + 1) % self.capacity;
        &mut self.slots[index]
    }
}

impl<T> Ring<T> {
    fn newest_first(&self) -> impl Iterator<Item = &T> {
        // Until the ring is full, `next` is the number of slots.
        let n = self.slots.len();
        (1..=n).map(move |back| &self.slots[(self.next + n - back) % n])
    }
}

fn put(slot: &mut String, value: &str) {
    slot.clear();
    slot.push_str(value);
}

/// One callback the receiver took (accepted, ignored, or not stored).
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct CallbackEntry {
    /// When it arrived (Unix ms).
    pub at_ms: u64,
    pub command: &'static str,
    /// Empty for a command the exporter does not handle.
    pub room_id: String,
    /// Its `EventTime` (Unix ms; 0 when not decoded).
    pub event_time_ms: u64,
    /// `applied`, `ignored` (a command not handled) or `failed` (not stored: 503, 408).
    pub outcome: &'static str,
    /// The HTTP status answered.
    pub status: u16,
}

/// One refused callback: why, and from where; never its query or body.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct RefusedEntry {
    pub at_ms: u64,
    /// A `roomengine_callbacks_rejected_total` reason.
    pub reason: &'static str,
    pub status: u16,
    /// The peer of the connection (the proxy's address behind a tee).
    pub source: Option<SocketAddr>,
}

/// A poll that failed after its retries.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct ApiErrorEntry {
    pub at_ms: u64,
    pub room_id: String,
    /// The `code` label of `roomengine_api_request_errors_total`.
    pub code: String,
    pub class: &'static str,
}

/// One event of a room: a poll with its outcome, or a callback with its command.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct RoomEventEntry {
    /// When the exporter recorded it (Unix ms).
    pub at_ms: u64,
    /// `poll` or `callback`.
    pub kind: &'static str,
    /// `get_room_info`, or the callback's command.
    pub what: &'static str,
    /// A poll's request time or a callback's `EventTime` (Unix ms): what the
    /// fields it set are stamped with.
    pub as_of_ms: u64,
    /// `ok`, an error code, or a callback's outcome.
    pub outcome: String,
}

/// A [`RoomEventEntry`] as the journal keeps it, 24 bytes: the command and
/// the outcome are indices into [`NAMES`], the kind follows from a flag.
#[derive(Debug, Default, Clone, Copy)]
struct RoomEvent {
    at_ms: u64,
    as_of_ms: u64,
    what: u8,
    outcome: u8,
    poll: bool,
}

impl RoomEvent {
    fn entry(&self) -> RoomEventEntry {
        RoomEventEntry {
            at_ms: self.at_ms,
            kind: if self.poll { "poll" } else { "callback" },
            what: name(self.what),
            as_of_ms: self.as_of_ms,
            outcome: name(self.outcome).to_owned(),
        }
    }
}

/// Commands and outcomes (`ok`, error codes, callback outcomes) the room
/// journals name: few distinct values, each kept once for the process.
static NAMES: Mutex<Vec<&'static str>> = Mutex::new(Vec::new());
/// Index of `other`, what an event shows once [`NAMES`] is full (a
/// misbehaving API sending ever new error codes cannot grow it).
const OTHER: u8 = u8::MAX;

fn intern(value: &str) -> u8 {
    let mut names = lock(&NAMES);
    if let Some(i) = names.iter().position(|n| *n == value) {
        return i as u8;
    }
    if names.len() >= usize::from(OTHER) {
        return OTHER;
    }
    names.push(Box::leak(value.to_owned().into_boxed_str()));
    (names.len() - 1) as u8
}

fn name(index: u8) -> &'static str {
    lock(&NAMES).get(usize::from(index)).copied().unwrap_or("other")
}

/// What is journaled of one room.
struct RoomJournal {
    events: Ring<RoomEvent>,
    /// The code of the last poll, when it failed.
    last_error: Option<String>,
}

/// Counter readings of the exporter's own metrics, one a second.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Counters {
    pub calls: f64,
    pub pass_polls: f64,
    pub watch_polls: f64,
    pub callbacks: f64,
}

/// Rates over the last [`RATE_WINDOW`] seconds of counter samples.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Rates {
    pub calls_per_second: f64,
    pub callbacks_per_second: f64,
    /// Watch polls among all polls, 0..1.
    pub watch_share: f64,
}

/// The journal every hook writes to; shared behind an `Arc`. Each ring has
/// its own `std` mutex, held only to copy one entry in or out: nothing awaits
/// under it, and a page render copies the rings before formatting.
pub struct Journal {
    started: Instant,
    callbacks: Mutex<Ring<CallbackEntry>>,
    refused: Mutex<Ring<RefusedEntry>>,
    api_errors: Mutex<Ring<ApiErrorEntry>>,
    rooms: Mutex<HashMap<CompactString, RoomJournal>>,
    last_callback_ms: AtomicU64,
    backend: Mutex<String>,
    /// (time since `started`, counters), one a second.
    samples: Mutex<Ring<(Duration, Counters)>>,
}

/// What the receiver learnt of a callback before storing it.
#[derive(Debug, Clone, Default)]
pub struct Seen {
    pub room_id: String,
    pub event_time_ms: u64,
}

impl Seen {
    pub fn of(event: &crate::roomset::RoomEvent) -> Seen {
        Seen {
            room_id: event.room_id.clone(),
            event_time_ms: event.update.at_ms,
        }
    }
}

/// The connection's peer, which `serve` puts in every request.
pub fn peer_of<B>(request: &axum::http::Request<B>) -> Option<SocketAddr> {
    request
        .extensions()
        .get::<axum::extract::ConnectInfo<SocketAddr>>()
        .map(|c| c.0)
}

impl Default for Journal {
    fn default() -> Self {
        Journal::new()
    }
}

impl Journal {
    pub fn new() -> Journal {
        Journal {
            started: Instant::now(),
            callbacks: Mutex::new(Ring::new(RECENT)),
            refused: Mutex::new(Ring::new(RECENT)),
            api_errors: Mutex::new(Ring::new(RECENT)),
            rooms: Mutex::new(HashMap::new()),
            last_callback_ms: AtomicU64::new(0),
            backend: Mutex::new(String::new()),
            samples: Mutex::new(Ring::new(RATE_WINDOW + 1)),
        }
    }

    pub fn uptime(&self) -> Duration {
        self.started.elapsed()
    }

    /// The room set's state backend, as its `describe()` says.
    pub fn set_backend(&self, description: &str) {
        put(&mut lock(&self.backend), description);
    }

    pub fn backend(&self) -> String {
        lock(&self.backend).clone()
    }

    /// A callback answered (not refused): `status` 200 when applied or ignored.
    pub fn callback(&self, command: &'static str, seen: Option<&Seen>, status: u16) {
        self.record_callback(command, seen, status, true);
    }

    /// A callback answered OK whose room the room set refused (cap, filter):
    /// in the recent callbacks only, since the room has no journal to keep
    /// (a flood of refused IDs would otherwise fill the room journals).
    pub fn callback_of_refused_room(&self, command: &'static str, seen: Option<&Seen>) {
        self.record_callback(command, seen, 200, false);
    }

    fn record_callback(&self, command: &'static str, seen: Option<&Seen>, status: u16, per_room: bool) {
        let now = unix_now_ms();
        let outcome = match (status, seen) {
            (200, Some(_)) => "applied",
            (200, None) => "ignored",
            _ => "failed",
        };
        if status == 200 {
            self.last_callback_ms.store(now, Ordering::Relaxed);
        }
        let (room, event_time) = seen.map_or(("", 0), |s| (s.room_id.as_str(), s.event_time_ms));
        {
            let mut ring = lock(&self.callbacks);
            let slot = ring.push();
            slot.at_ms = now;
            slot.command = command;
            put(&mut slot.room_id, room);
            slot.event_time_ms = event_time;
            slot.outcome = outcome;
            slot.status = status;
        }
        if let Some(seen) = seen.filter(|_| per_room) {
            self.room_event(&seen.room_id, now, false, command, event_time, outcome, None);
        }
    }

    /// A callback refused for `reason`, answered with `status`.
    pub fn refused(&self, reason: &'static str, status: u16, source: Option<SocketAddr>) {
        let mut ring = lock(&self.refused);
        let slot = ring.push();
        slot.at_ms = unix_now_ms();
        slot.reason = reason;
        slot.status = status;
        slot.source = source;
    }

    /// A poll of `room` whose request was sent at `sent_ms`: `None` when it
    /// returned the room's info, else the error it ended with.
    pub fn poll(&self, room: &str, sent_ms: u64, error: Option<&CallError>) {
        let now = unix_now_ms();
        let code = error.map_or("ok", |e| e.code.as_str());
        if let Some(e) = error.filter(|e| !matches!(e.class, ErrorClass::RoomGone | ErrorClass::NoSeats)) {
            let mut ring = lock(&self.api_errors);
            let slot = ring.push();
            slot.at_ms = now;
            put(&mut slot.room_id, room);
            put(&mut slot.code, &e.code);
            slot.class = class_name(e.class);
        }
        let failed = error.map(|e| e.code.as_str());
        self.room_event(room, now, true, "get_room_info", sent_ms, code, Some(failed));
    }

    /// `last_error`: `Some` for a poll (`Some(code)` failed, `None` succeeded).
    #[allow(clippy::too_many_arguments)]
    fn room_event(
        &self,
        room: &str,
        now: u64,
        poll: bool,
        what: &'static str,
        as_of_ms: u64,
        outcome: &str,
        last_error: Option<Option<&str>>,
    ) {
        let mut rooms = lock(&self.rooms);
        if !rooms.contains_key(room) {
            if rooms.len() >= MAX_JOURNALED_ROOMS {
                return;
            }
            let journal = RoomJournal {
                events: Ring::new(ROOM_EVENTS),
                last_error: None,
            };
            rooms.insert(room.into(), journal);
        }
        let Some(journal) = rooms.get_mut(room) else {
            return;
        };
        let slot = journal.events.push();
        slot.at_ms = now;
        slot.poll = poll;
        slot.what = intern(what);
        slot.as_of_ms = as_of_ms;
        slot.outcome = intern(outcome);
        match last_error {
            Some(Some(code)) => journal.last_error = Some(code.to_owned()),
            Some(None) => journal.last_error = None,
            None => {}
        }
    }

    pub fn last_callback_ms(&self) -> Option<u64> {
        Some(self.last_callback_ms.load(Ordering::Relaxed)).filter(|&t| t > 0)
    }

    pub fn recent_callbacks(&self) -> Vec<CallbackEntry> {
        lock(&self.callbacks).newest_first().cloned().collect()
    }

    pub fn recent_refused(&self) -> Vec<RefusedEntry> {
        lock(&self.refused).newest_first().cloned().collect()
    }

    pub fn recent_api_errors(&self) -> Vec<ApiErrorEntry> {
        lock(&self.api_errors).newest_first().cloned().collect()
    }

    /// The room's last events, newest first.
    pub fn room_events(&self, room: &str) -> Vec<RoomEventEntry> {
        lock(&self.rooms)
            .get(room)
            .map(|j| j.events.newest_first().map(RoomEvent::entry).collect())
            .unwrap_or_default()
    }

    /// The last poll's error code of every room whose last poll failed.
    pub fn last_errors(&self) -> HashMap<String, String> {
        lock(&self.rooms)
            .iter()
            .filter_map(|(room, j)| Some((room.to_string(), j.last_error.clone()?)))
            .collect()
    }

    /// Rooms with a journal (for tests: it shrinks when rooms leave the set).
    pub fn journaled_rooms(&self) -> usize {
        lock(&self.rooms).len()
    }

    /// Drops the journal of every room `held` says is no longer in the set.
    pub fn prune(&self, held: impl Fn(&str) -> bool) {
        lock(&self.rooms).retain(|room, _| held(room));
    }

    /// Takes one counter sample (the background task does, once a second).
    pub fn sample(&self, at: Instant, counters: Counters) {
        *lock(&self.samples).push() = (at.saturating_duration_since(self.started), counters);
    }

    /// Rates between the oldest and newest sample kept (zero before two samples).
    pub fn rates(&self) -> Rates {
        let samples = lock(&self.samples);
        let mut newest_first = samples.newest_first();
        let (Some(&(t1, new)), Some(&(t0, old))) = (newest_first.next(), newest_first.last()) else {
            return Rates::default();
        };
        let seconds = t1.saturating_sub(t0).as_secs_f64();
        if seconds <= 0.0 {
            return Rates::default();
        }
        let per_second = |a: f64, b: f64| ((a - b) / seconds).max(0.0);
        let pass = new.pass_polls - old.pass_polls;
        let watch = new.watch_polls - old.watch_polls;
        Rates {
            calls_per_second: per_second(new.calls, old.calls),
            callbacks_per_second: per_second(new.callbacks, old.callbacks),
            watch_share: if pass + watch > 0.0 {
                watch / (pass + watch)
            } else {
                0.0
            },
        }
    }
}

/// The class of a failed call, as the page and /status.json name it.
pub fn class_name(class: ErrorClass) -> &'static str {
    match class {
        ErrorClass::RoomGone => "room_gone",
        ErrorClass::Retryable => "retryable",
        ErrorClass::RateLimited => "rate_limited",
        ErrorClass::Auth => "auth",
        ErrorClass::NoSeats => "no_seats",
        ErrorClass::BadRequest => "bad_request",
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding it leaves a consistent value: every write is a whole-field store.
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ring_keeps_the_newest_entries_and_never_grows() {
        let mut ring: Ring<u32> = Ring::new(3);
        assert_eq!(ring.newest_first().count(), 0);
        for i in 1..=5 {
            *ring.push() = i;
        }
        assert_eq!(ring.newest_first().copied().collect::<Vec<_>>(), vec![5, 4, 3]);
        assert_eq!(ring.slots.len(), 3);
    }

    #[test]
    fn a_ring_holds_only_the_slots_it_was_given() {
        let mut ring: Ring<u32> = Ring::new(ROOM_EVENTS);
        *ring.push() = 1;
        *ring.push() = 2;
        assert_eq!(ring.slots.capacity(), 2);
        assert_eq!(ring.newest_first().copied().collect::<Vec<_>>(), vec![2, 1]);
        for i in 3..=25 {
            *ring.push() = i;
        }
        assert_eq!(ring.slots.capacity(), ROOM_EVENTS);
        assert_eq!(ring.newest_first().next(), Some(&25));
        assert_eq!(ring.newest_first().last(), Some(&6));
    }

    #[test]
    fn a_refused_room_is_listed_with_the_callbacks_but_gets_no_journal() {
        let status = Journal::new();
        let seen = Seen {
            room_id: "flood-1".into(),
            event_time_ms: 7,
        };
        status.callback_of_refused_room("Room.CallbackAfterCreateRoom", Some(&seen));
        status.callback(
            "Room.CallbackAfterCreateRoom",
            Some(&Seen {
                room_id: "kept".into(),
                ..seen.clone()
            }),
            200,
        );
        let recent = status.recent_callbacks();
        assert_eq!(recent.len(), 2);
        assert_eq!(
            (recent[1].room_id.as_str(), recent[1].outcome),
            ("flood-1", "applied")
        );
        assert_eq!(status.journaled_rooms(), 1);
        assert!(status.room_events("flood-1").is_empty());
        let events = status.room_events("kept");
        assert_eq!(
            (events[0].kind, events[0].outcome.as_str(), events[0].as_of_ms),
            ("callback", "applied", 7)
        );
    }

    #[test]
    fn a_room_keeps_its_last_twenty_events_and_its_last_error() {
        let status = Journal::new();
        let timeout = CallError::transport("timeout", ErrorClass::Retryable, "timed out");
        for i in 0..25 {
            status.poll("r1", i, if i == 24 { Some(&timeout) } else { None });
        }
        let events = status.room_events("r1");
        assert_eq!(events.len(), ROOM_EVENTS);
        assert_eq!((events[0].as_of_ms, events[0].outcome.as_str()), (24, "timeout"));
        assert_eq!(events[19].as_of_ms, 5);
        assert_eq!(
            status.last_errors().get("r1").map(String::as_str),
            Some("timeout")
        );
        assert_eq!(status.recent_api_errors().len(), 1);
        status.poll("r1", 30, None);
        assert!(
            status.last_errors().is_empty(),
            "a successful poll clears the last error"
        );
    }

    #[test]
    fn gone_rooms_are_no_api_errors_and_pruned_rooms_lose_their_journal() {
        let status = Journal::new();
        let gone = CallError::from_error_code(100004, "room does not exist");
        status.poll("r1", 1, Some(&gone));
        status.poll("r2", 1, None);
        assert!(status.recent_api_errors().is_empty());
        status.prune(|room| room == "r2");
        assert_eq!(status.journaled_rooms(), 1);
        assert!(status.room_events("r1").is_empty());
    }

    #[test]
    fn rates_come_from_the_oldest_and_newest_samples() {
        let status = Journal::new();
        let t0 = Instant::now();
        let at = |calls, pass, watch, callbacks| Counters {
            calls,
            pass_polls: pass,
            watch_polls: watch,
            callbacks,
        };
        status.sample(t0, at(0.0, 0.0, 0.0, 0.0));
        status.sample(t0 + Duration::from_secs(2), at(100.0, 60.0, 20.0, 3000.0));
        let rates = status.rates();
        assert_eq!(rates.calls_per_second, 50.0);
        assert_eq!(rates.callbacks_per_second, 1500.0);
        assert_eq!(rates.watch_share, 0.25);
    }
}

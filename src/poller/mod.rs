//! The background schedule: which room is polled when. [`Poller::run`] runs
//! passes (`pass`) and, between their turns, catch-up, watch-tier and
//! configured-room polls (`inflight`); every wait goes through one select,
//! `Loop::serve_until`.

mod inflight;
pub mod metrics;
mod pass;
mod poll;
pub mod retry;

#[cfg(test)]
mod tests;

use std::collections::{BTreeSet, HashMap, HashSet};
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use compact_str::CompactString;
use tokio::sync::{mpsc, AcquireError, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::api::ApiClient;
use crate::roomset::Reschedule;
use crate::store::{PollSink, Store};
use crate::watch::{Watch, WatchSettings};
use inflight::InFlight;
pub use metrics::PollerMetrics;
use pass::Passes;
pub use poll::RoomApi;
pub use retry::{with_retries, MAX_RETRIES};

/// Polls waiting for the budget or a response at once; beyond this the
/// schedule waits, so a slow API cannot pile up tasks or memory.
pub const MAX_IN_FLIGHT: usize = 64;
/// A configured room is polled on its own once its last poll is this many
/// intervals old: discovered rooms may stretch a pass, never its turns.
const CONFIGURED_AGE: f64 = 1.25;

/// Told of a room the API answered 100004 for, with when the call was sent (ms).
pub type OnGone = Box<dyn Fn(&str, u64) + Send + Sync>;

/// What the schedule polls with; [`Poller::run`] drives it.
pub struct Poller<A = ApiClient> {
    pub client: Arc<A>,
    pub store: Arc<Store>,
    pub metrics: PollerMetrics,
    /// `polling.seat_usage`; a reload may flip it.
    pub seat_usage: AtomicBool,
    /// Set once the first pass is complete (`/-/ready`).
    pub ready: Arc<AtomicBool>,
    /// `polling.watch` at start; reloads bring changes.
    pub watch: WatchSettings,
    /// Told of every room the API answered 100004 for, with when that call
    /// was sent (the room set stops polling discovered rooms and forgets them later).
    pub on_gone: OnGone,
    /// The status page's journal: every poll's outcome.
    pub journal: Arc<crate::journal::Journal>,
    /// The configured rooms at start (reloads bring changes).
    pub configured: Vec<String>,
    /// In an HA group, told of every poll's outcome, for the other replicas.
    pub share: Option<Box<dyn PollSink>>,
}

/// The rooms in turn order and the pass length: what a reload rewrites.
struct Schedule {
    // Room IDs inline when short (compact_str): the poller holds several
    // copies of every room's ID, 100,000 of them at scale.
    rooms: Vec<CompactString>,
    /// The rooms of `rooms`, to skip a turn whose room left meanwhile.
    members: HashSet<CompactString>,
    interval: Duration,
}

/// Everything a running schedule owns, shared by its passes and by the
/// polls they wait beside.
struct Loop<A: RoomApi> {
    poller: Arc<Poller<A>>,
    schedule: Schedule,
    /// The calls of a pass now (get_room_info plus seat calls).
    calls: usize,
    /// Passes whose polls have not all ended, and the catch-ups queued.
    passes: Passes,
    /// Polls started and not collected yet, across passes and tiers.
    in_flight: InFlight,
    watch: Watch,
    /// At most [`MAX_IN_FLIGHT`] polls out at once.
    slots: Arc<Semaphore>,
    reloads: mpsc::UnboundedReceiver<Reschedule>,
    shutdown: CancellationToken,
    /// The stretch warning is logged once per run.
    warned_stretch: bool,
    /// When each room's last poll started, by any tier: a pass takes its
    /// rooms least recently polled first (never polled: first of all).
    last_start: HashMap<CompactString, Instant>,
    configured: HashSet<String>,
    /// Configured rooms by when they are due a poll of their own, and back.
    due: BTreeSet<(Instant, String)>,
    due_of: HashMap<String, Instant>,
}

impl<A: RoomApi> Poller<A> {
    /// Runs passes over `rooms` until `shutdown`, applying reloads from
    /// `reloads` as they come; then lets the polls in flight finish.
    pub async fn run(
        self,
        rooms: Vec<String>,
        interval: Duration,
        reloads: mpsc::UnboundedReceiver<Reschedule>,
        shutdown: CancellationToken,
    ) {
        let rooms: Vec<CompactString> = rooms.into_iter().map(CompactString::from).collect();
        let members = rooms.iter().cloned().collect();
        let configured = self.configured.clone();
        let mut state = Loop {
            watch: Watch::new(self.watch),
            poller: Arc::new(self),
            schedule: Schedule {
                rooms,
                members,
                interval,
            },
            calls: 0,
            passes: Passes::default(),
            in_flight: InFlight::default(),
            slots: Arc::new(Semaphore::new(MAX_IN_FLIGHT)),
            reloads,
            shutdown,
            warned_stretch: false,
            last_start: HashMap::new(),
            configured: HashSet::new(),
            due: BTreeSet::new(),
            due_of: HashMap::new(),
        };
        state.set_configured(configured);
        let mut first = true;
        while !state.shutdown.is_cancelled() {
            if state.pass(first).await.is_none() {
                break;
            }
            first = false;
        }
        while let Some(done) = state.in_flight.tasks.join_next_with_id().await {
            state.collect(done);
        }
    }

    /// get_room_info calls plus a seat call for each of its rooms known to have seats.
    fn calls_per_pass(&self, rooms: usize) -> usize {
        if !self.seat_usage.load(Ordering::Relaxed) {
            return rooms;
        }
        // The store holds every room of an HA group, this poller polls its
        // share: as many seat rooms in proportion (rooms are spread by hash).
        let seat_rooms = self.store.seat_enabled_rooms();
        let all = self.store.capacity().max(rooms);
        rooms + (seat_rooms as f64 * rooms as f64 / all.max(1) as f64).round() as usize
    }
}

impl<A: RoomApi> Loop<A> {
    /// Waits for `wanted` (made afresh from the state at every wake-up, so a
    /// reload is taken into account), and meanwhile applies reloads, collects
    /// ended polls and starts catch-up and watch polls. `None` on shutdown.
    async fn serve_until<T, F, Fut>(&mut self, mut wanted: F) -> Option<T>
    where
        F: FnMut(&Self) -> Fut,
        Fut: Future<Output = T>,
    {
        loop {
            let watch_at = self.watch.next_poll_at(self.poller.client.budget().sustained());
            let configured_at = self
                .due
                .first()
                .map(|(at, _)| *at)
                .filter(|_| self.configured_rate() > 0.0);
            let wanted = wanted(self);
            tokio::select! {
                _ = self.shutdown.cancelled() => return None,
                update = next_reload(&mut self.reloads) => self.apply(update),
                Some(done) = self.in_flight.tasks.join_next_with_id(), if !self.in_flight.tasks.is_empty() => {
                    self.collect(done);
                }
                slot = self.slots.clone().acquire_owned(), if self.passes.has_catch_ups() => {
                    if let Ok(slot) = slot {
                        self.catch_up(slot);
                    }
                }
                slot = slot_at(watch_at, &self.slots), if watch_at.is_some() => {
                    if let Ok(slot) = slot {
                        self.watch_poll(slot);
                    }
                }
                slot = slot_at(configured_at, &self.slots), if configured_at.is_some() => {
                    if let Ok(slot) = slot {
                        self.configured_poll(slot);
                    }
                }
                out = wanted => return Some(out),
            }
        }
    }

    /// Takes a reload into the schedule: removed rooms leave the turns, new
    /// rooms join the end of the turns and get a catch-up pass now (through
    /// the same budget, in-flight limit and busy check as every other poll).
    fn apply(&mut self, update: Reschedule) {
        match update {
            Reschedule::Settings {
                interval,
                seat_usage,
                watch,
                configured,
            } => {
                self.poller.seat_usage.store(seat_usage, Ordering::Relaxed);
                self.schedule.interval = interval;
                self.watch.reconfigure(watch);
                self.set_configured(configured);
            }
            Reschedule::Rooms { added, removed } => {
                let schedule = &mut self.schedule;
                if !removed.is_empty() {
                    for room in &removed {
                        schedule.members.remove(room.as_str());
                        self.watch.forget(room);
                        self.last_start.remove(room.as_str());
                    }
                    let members = &schedule.members;
                    schedule.rooms.retain(|room| members.contains(room));
                }
                let added: Vec<CompactString> = added
                    .into_iter()
                    .map(CompactString::from)
                    .filter(|room| schedule.members.insert(room.clone()))
                    .collect();
                schedule.rooms.extend(added.iter().cloned());
                self.passes.queue_catch_up(added);
            }
        }
        self.tell_watch();
        self.show_watched();
    }

    /// Tells the watch tier what the regular pass needs now (its horizon and
    /// what it leaves to full rooms), and keeps the calls of a pass.
    fn tell_watch(&mut self) {
        self.calls = self.poller.calls_per_pass(self.schedule.rooms.len());
        self.watch.set_pass(
            self.schedule.interval,
            self.calls,
            self.poller.client.budget().sustained(),
        );
    }
}

impl<A: RoomApi> Loop<A> {
    /// Makes `rooms` the configured rooms; each joins due an interval and a
    /// quarter from now (its pass turn normally comes first).
    fn set_configured(&mut self, rooms: Vec<String>) {
        let wanted: HashSet<String> = rooms.into_iter().collect();
        for room in self.configured.difference(&wanted).cloned().collect::<Vec<_>>() {
            if let Some(at) = self.due_of.remove(&room) {
                self.due.remove(&(at, room));
            }
        }
        let now = Instant::now();
        for room in wanted.difference(&self.configured).cloned().collect::<Vec<_>>() {
            let last = self.last_start.get(room.as_str()).copied().unwrap_or(now);
            self.set_due(room, last);
        }
        self.configured = wanted;
    }

    /// The calls/s the configured rooms' own polls take: 0 unless the pass is
    /// longer than their age limit, and they alone fit in half the budget
    /// (otherwise every room simply waits for the stretched pass).
    fn configured_rate(&self) -> f64 {
        let sustained = self.poller.client.budget().sustained();
        let age = self
            .schedule
            .interval
            .mul_f64(CONFIGURED_AGE)
            .as_secs_f64()
            .max(0.001);
        let rate = self.configured.len() as f64 / age;
        let pass = self.calls as f64 / sustained.max(0.001);
        if self.configured.is_empty() || pass <= age || rate > sustained / 2.0 {
            0.0
        } else {
            rate
        }
    }

    /// `room` (configured) last started a poll at `last`: due again
    /// [`CONFIGURED_AGE`] intervals later.
    fn set_due(&mut self, room: String, last: Instant) {
        let at = last + self.schedule.interval.mul_f64(CONFIGURED_AGE);
        if let Some(old) = self.due_of.insert(room.clone(), at) {
            self.due.remove(&(old, room.clone()));
        }
        self.due.insert((at, room));
    }

    /// A poll of `room` starts now, by any tier.
    fn started_now(&mut self, room: &str, now: Instant) {
        self.last_start.insert(room.into(), now);
        if self.configured.contains(room) {
            self.set_due(room.to_owned(), now);
        }
    }

    /// Orders a pass's turns: rooms never polled first, then least recently
    /// polled (so a room a callback just announced does not wait behind
    /// rooms polled a moment ago, nor rooms polled recently go before it).
    fn order_turns(&mut self) {
        let last = &self.last_start;
        self.schedule.rooms.sort_by_key(|room| last.get(room).copied());
    }
}

/// The next reload; never resolves once the reloader is gone.
async fn next_reload(reloads: &mut mpsc::UnboundedReceiver<Reschedule>) -> Reschedule {
    match reloads.recv().await {
        Some(update) => update,
        None => std::future::pending().await,
    }
}

/// Waits until a tier's next poll may start (`at`), then for room in flight.
async fn slot_at(at: Option<Instant>, slots: &Arc<Semaphore>) -> Result<OwnedSemaphorePermit, AcquireError> {
    if let Some(at) = at {
        tokio::time::sleep_until(at).await;
    }
    slots.clone().acquire_owned().await
}

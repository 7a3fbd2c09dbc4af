//! The background schedule: which room is polled when. Each pass spreads its
//! polls evenly across `polling.interval` (stretched to calls ÷ rate when the
//! budget cannot fit them), retries retryable failures with jittered
//! exponential back-off, and records every outcome in the store. Between the
//! turns of a pass it starts the watch tier's polls (rules in `watch`); the
//! pass is spread over what the tier leaves of the budget. The room set
//! changes the turns in place (reloads, callbacks): new rooms are polled at
//! once, removed rooms are skipped, kept rooms keep their turn.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, AcquireError, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::api::model::{RoomInfo, SeatUsage};
use crate::api::{ApiClient, CallError, ErrorClass};
use crate::clock::{unix_now_f64, unix_now_ms};
use crate::metrics::{SelfMetrics, TIER_PASS, TIER_WATCH};
use crate::roomset::Reschedule;
use crate::store::Store;
use crate::watch::{Eligibility, Watch, WatchSettings};

/// Retries after the first attempt, for retryable failures only.
pub const MAX_RETRIES: u32 = 2;
const BACKOFF_BASE: Duration = Duration::from_millis(250);
/// Polls waiting for the budget or a response at once; beyond this the
/// schedule waits, so a slow API cannot pile up tasks or memory.
pub const MAX_IN_FLIGHT: usize = 64;

/// Told of a room the API answered 100004 for, with when the call was sent (ms).
pub type OnGone = Box<dyn Fn(&str, u64) + Send + Sync>;

pub struct Poller {
    pub client: Arc<ApiClient>,
    pub store: Arc<Store>,
    pub metrics: Arc<SelfMetrics>,
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
    pub status: Arc<crate::status::Status>,
}

/// How one room's poll ended, for the pass summary.
enum PollResult {
    /// With the MemberCount and MaxMemberCount it returned.
    Ok {
        members: u64,
        max: u64,
    },
    Gone,
    Failed(String),
}

/// The rooms in turn order and the pass length: what a reload rewrites.
struct Schedule {
    rooms: Vec<String>,
    /// The rooms of `rooms`, to skip a turn whose room left meanwhile.
    members: HashSet<String>,
    interval: Duration,
}

impl Poller {
    /// Runs passes over `rooms` until `shutdown`, applying reloads from
    /// `reloads` as they come; then lets the polls in flight finish.
    pub async fn run(
        self,
        rooms: Vec<String>,
        interval: Duration,
        mut reloads: mpsc::UnboundedReceiver<Reschedule>,
        shutdown: CancellationToken,
    ) {
        let this = Arc::new(self);
        let in_flight = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
        let members = rooms.iter().cloned().collect();
        let mut schedule = Schedule {
            rooms,
            members,
            interval,
        };
        let mut running = Running {
            watch: Watch::new(this.watch),
            ..Running::default()
        };
        let mut first = true;
        let mut warned_stretch = false;
        'passes: while !shutdown.is_cancelled() {
            let pass_start = Instant::now();
            let rate = this.client.budget().effective();
            let mut calls = this.tell_watch(&schedule, &mut running);
            let shortest = this.shortest_pass(calls);
            if shortest > schedule.interval && !warned_stretch && !first {
                warned_stretch = true;
                tracing::warn!(
                    rooms = schedule.rooms.len(),
                    calls_per_pass = calls,
                    rate_limit = rate,
                    interval = %humantime::format_duration(schedule.interval),
                    pass = %humantime::format_duration(round_ms(shortest)),
                    "the rooms do not fit in one interval at this rate limit: each pass stretches (logged once)"
                );
            }
            let mut due = pass_start;

            let pass = running.begin_pass(
                pass_start,
                if first { PassKind::First } else { PassKind::Regular },
            );
            let turns = schedule.rooms.clone();
            for room in turns {
                if !schedule.members.contains(&room) {
                    continue;
                }
                if running.skip_if_busy(pass, &room) {
                    continue;
                }
                let slot = loop {
                    let watch_at = running.watch.next_poll_at(this.client.budget().sustained());
                    tokio::select! {
                        _ = shutdown.cancelled() => break None,
                        update = next_reload(&mut reloads) => {
                            // The rest of this pass follows the new settings and room count.
                            calls = this.apply(update, &mut schedule, &mut running);
                        }
                        Some(done) = running.tasks.join_next_with_id(), if !running.tasks.is_empty() => {
                            running.collect(&this, done);
                        }
                        slot = in_flight.clone().acquire_owned(), if running.has_catch_ups() => {
                            if let Ok(slot) = slot {
                                running.catch_up(&this, &schedule.members, slot, &shutdown);
                            }
                        }
                        slot = watch_slot(watch_at, &in_flight), if watch_at.is_some() => {
                            if let Ok(slot) = slot {
                                running.watch_poll(&this, slot, &shutdown);
                            }
                        }
                        slot = async {
                            tokio::time::sleep_until(due).await;
                            in_flight.clone().acquire_owned().await
                        } => break slot.ok(),
                    }
                };
                let Some(slot) = slot else { break 'passes };
                // A reload or callback may have removed the room while it waited for its turn.
                if !schedule.members.contains(&room) {
                    continue;
                }
                // The first pass runs at the full budget, so every room has data as soon as
                // possible; later turns are spaced by what the watch tier leaves of it now.
                if !first {
                    let sustained = this.client.budget().sustained();
                    due += running.watch.pass_length(schedule.interval, calls, sustained)
                        / schedule.rooms.len().max(1) as u32;
                }
                running.spawn(&this, pass, room, slot, &shutdown);
            }
            running.end_of_turns(&this, pass);
            if first {
                running.watch.start();
            }
            first = false;
            let scheduled_in = pass_start.elapsed();
            let planned = due.duration_since(pass_start);
            loop {
                // The next pass starts on time even while slow answers of this one are
                // still out, but not before this pass's calls have left the budget's queue.
                let next = (pass_start + schedule.interval.max(planned).max(scheduled_in))
                    .max(this.client.budget().reserved_until());
                let watch_at = running.watch.next_poll_at(this.client.budget().sustained());
                tokio::select! {
                    _ = shutdown.cancelled() => break 'passes,
                    _ = tokio::time::sleep_until(next) => {
                        if this.client.budget().reserved_until() <= Instant::now() {
                            break;
                        }
                    }
                    update = next_reload(&mut reloads) => {
                        this.apply(update, &mut schedule, &mut running);
                    }
                    Some(done) = running.tasks.join_next_with_id(), if !running.tasks.is_empty() => {
                        running.collect(&this, done);
                    }
                    slot = in_flight.clone().acquire_owned(), if running.has_catch_ups() => {
                        if let Ok(slot) = slot {
                            running.catch_up(&this, &schedule.members, slot, &shutdown);
                        }
                    }
                    slot = watch_slot(watch_at, &in_flight), if watch_at.is_some() => {
                        if let Ok(slot) = slot {
                            running.watch_poll(&this, slot, &shutdown);
                        }
                    }
                }
            }
        }
        while let Some(done) = running.tasks.join_next_with_id().await {
            running.collect(&this, done);
        }
    }

    /// Takes a reload into the schedule: removed rooms leave the turns, new
    /// rooms join the end of the turns and get a catch-up pass now (through
    /// the same budget, in-flight limit and busy check as every other poll).
    /// Returns the calls of a pass now.
    fn apply(&self, update: Reschedule, schedule: &mut Schedule, running: &mut Running) -> usize {
        match update {
            Reschedule::Settings {
                interval,
                seat_usage,
                watch,
            } => {
                self.seat_usage.store(seat_usage, Ordering::Relaxed);
                schedule.interval = interval;
                running.watch.reconfigure(watch);
            }
            Reschedule::Rooms { added, removed } => {
                if !removed.is_empty() {
                    for room in &removed {
                        schedule.members.remove(room);
                        running.watch.forget(room);
                    }
                    let members = &schedule.members;
                    schedule.rooms.retain(|room| members.contains(room));
                }
                let added: Vec<String> = added
                    .into_iter()
                    .filter(|room| schedule.members.insert(room.clone()))
                    .collect();
                schedule.rooms.extend(added.iter().cloned());
                running.queue_catch_up(added);
            }
        }
        let calls = self.tell_watch(schedule, running);
        running.show_watched(self);
        calls
    }

    /// How long a pass of `calls` takes at the rate the budget really sustains.
    fn shortest_pass(&self, calls: usize) -> Duration {
        Duration::from_secs_f64(calls as f64 / self.client.budget().sustained())
    }

    /// Tells the watch tier what the regular pass needs now (its horizon and
    /// what it leaves to full rooms); returns the calls of a pass.
    fn tell_watch(&self, schedule: &Schedule, running: &mut Running) -> usize {
        let calls = self.calls_per_pass(schedule.rooms.len());
        running
            .watch
            .set_pass(schedule.interval, calls, self.client.budget().sustained());
        calls
    }

    /// get_room_info calls plus a seat call for each room known to have seats.
    fn calls_per_pass(&self, rooms: usize) -> usize {
        let seat_rooms = if self.seat_usage.load(Ordering::Relaxed) {
            self.store.seat_enabled_rooms()
        } else {
            0
        };
        rooms + seat_rooms
    }

    /// Polls `room`; `refresh_seats` false (watch polls) keeps its last seat usage.
    async fn poll_room(&self, room: &str, refresh_seats: bool, shutdown: &CancellationToken) -> PollResult {
        // When the last attempt's request left: the answer is true as of then.
        let sent_ms = AtomicU64::new(0);
        let info = match with_retries(shutdown, || async {
            let permit = self.client.budget().acquire().await;
            sent_ms.store(unix_now_ms(), Ordering::Relaxed);
            self.client.get_room_info(permit, room).await
        })
        .await
        {
            Ok(info) => info,
            Err(e) => return self.record_error(room, e, sent_ms.into_inner()),
        };
        let sent_ms = sent_ms.into_inner();
        let seats = if refresh_seats {
            match self.seat_usage_of(room, &info, shutdown).await {
                Ok(seats) => seats,
                Err(e) => return self.record_error(room, e, sent_ms),
            }
        } else {
            self.store.snapshot(room).and_then(|s| s.facts.seats)
        };
        let (members, max) = (info.member_count, info.max_member_count);
        self.store.record_poll(room, info, seats, sent_ms, unix_now_f64());
        self.status.poll(room, sent_ms, None);
        PollResult::Ok { members, max }
    }

    /// Seat usage for seat-enabled rooms; on a transient failure the last known
    /// usage is kept, so one failed call does not make the series flap.
    async fn seat_usage_of(
        &self,
        room: &str,
        info: &RoomInfo,
        shutdown: &CancellationToken,
    ) -> Result<Option<SeatUsage>, CallError> {
        if !self.seat_usage.load(Ordering::Relaxed) || !info.is_seat_enabled {
            return Ok(None);
        }
        let result = with_retries(shutdown, || async {
            let permit = self.client.budget().acquire().await;
            self.client.get_seat_list(permit, room).await
        })
        .await;
        match result {
            Ok(usage) => Ok(Some(usage)),
            Err(e) if e.class == ErrorClass::NoSeats => Ok(None),
            Err(e) if e.class == ErrorClass::RoomGone => Err(e),
            Err(e) => {
                tracing::debug!(room, code = %e.code, error = %e, "seat list failed; keeping the last seat usage");
                Ok(self.store.snapshot(room).and_then(|s| s.facts.seats))
            }
        }
    }

    fn record_error(&self, room: &str, e: CallError, sent_ms: u64) -> PollResult {
        self.status.poll(room, sent_ms, Some(&e));
        if e.class == ErrorClass::RoomGone {
            let newly_gone = self
                .store
                .snapshot(room)
                .is_none_or(|s| s.facts.exists != Some(false));
            if newly_gone {
                // Debug: with callbacks, rooms end all day long; roomengine_room_exists shows it.
                tracing::debug!(room, "the API says the room does not exist (100004)");
            }
            self.store.record_gone_at(room, sent_ms);
            (self.on_gone)(room, sent_ms);
            return PollResult::Gone;
        }
        tracing::debug!(room, code = %e.code, error = %e, "poll failed");
        self.store.record_failure(room);
        PollResult::Failed(e.code)
    }
}

/// The next reload; never resolves once the reloader is gone.
async fn next_reload(reloads: &mut mpsc::UnboundedReceiver<Reschedule>) -> Reschedule {
    match reloads.recv().await {
        Some(update) => update,
        None => std::future::pending().await,
    }
}

/// Waits until the watch tier's next poll may start (`at`), then for room in flight.
async fn watch_slot(
    at: Option<Instant>,
    in_flight: &Arc<Semaphore>,
) -> Result<OwnedSemaphorePermit, AcquireError> {
    if let Some(at) = at {
        tokio::time::sleep_until(at).await;
    }
    in_flight.clone().acquire_owned().await
}

/// Runs `call` once, and again after a jittered exponential back-off while it
/// fails with a retryable error, at most [`MAX_RETRIES`] more times.
pub async fn with_retries<T, F, Fut>(shutdown: &CancellationToken, mut call: F) -> Result<T, CallError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, CallError>>,
{
    let mut attempt = 0;
    loop {
        match call().await {
            Err(e)
                if e.class == ErrorClass::Retryable && attempt < MAX_RETRIES && !shutdown.is_cancelled() =>
            {
                let jitter = rand::random_range(0.5..1.5);
                tokio::select! {
                    _ = shutdown.cancelled() => return Err(e),
                    _ = tokio::time::sleep(BACKOFF_BASE.mul_f64(f64::from(1u32 << attempt) * jitter)) => {}
                }
                attempt += 1;
            }
            other => return other,
        }
    }
}

fn poll_task(
    poller: &Arc<Poller>,
    room: String,
    tier: Tier,
    slot: OwnedSemaphorePermit,
    shutdown: &CancellationToken,
) -> impl std::future::Future<Output = PollResult> + Send + 'static {
    let poller = poller.clone();
    let shutdown = shutdown.clone();
    async move {
        let result = poller.poll_room(&room, tier != Tier::Watch, &shutdown).await;
        drop(slot);
        result
    }
}

/// Every poll the schedule started and has not collected yet, across passes:
/// a slow room's poll may outlive its pass, and the next pass goes on
/// without it (skipping that room until its poll ends) instead of waiting.
/// Rooms added by a reload wait here for their catch-up pass's turn, and the
/// watch tier sees every poll's answer.
#[derive(Default)]
struct Running {
    tasks: JoinSet<PollResult>,
    /// Task → (tier, room), to credit each ending to its pass and free its room.
    owners: HashMap<tokio::task::Id, (Tier, String)>,
    busy: HashSet<String>,
    /// Passes whose polls have not all ended, oldest first.
    passes: VecDeque<Pass>,
    next_pass: u64,
    /// Added rooms not polled yet, each with its catch-up pass, in reload order.
    catch_ups: VecDeque<(u64, String)>,
    /// The rooms in `catch_ups` that no pass has polled since they were
    /// added: a regular turn that comes first makes the catch-up poll moot.
    awaiting_catch_up: HashSet<String>,
    watch: Watch,
}

/// Who started a poll: a pass (by id) or the watch tier.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Tier {
    Pass(u64),
    Watch,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum PassKind {
    /// At the full budget, to get every room's data soon after start.
    First,
    Regular,
    /// The rooms one reload or callback batch added, polled at once.
    CatchUp,
}

struct Pass {
    id: u64,
    start: Instant,
    kind: PassKind,
    /// All its rooms have had their turn (started or skipped).
    turns_done: bool,
    pending: usize,
    summary: PassSummary,
}

impl Running {
    fn begin_pass(&mut self, start: Instant, kind: PassKind) -> u64 {
        let id = self.next_pass;
        self.next_pass += 1;
        self.passes.push_back(Pass {
            id,
            start,
            kind,
            turns_done: false,
            pending: 0,
            summary: PassSummary::default(),
        });
        id
    }

    fn queue_catch_up(&mut self, rooms: Vec<String>) {
        if rooms.is_empty() {
            return;
        }
        let pass = self.begin_pass(Instant::now(), PassKind::CatchUp);
        self.awaiting_catch_up.extend(rooms.iter().cloned());
        self.catch_ups.extend(rooms.into_iter().map(|room| (pass, room)));
    }

    fn has_catch_ups(&self) -> bool {
        !self.catch_ups.is_empty()
    }

    /// Gives the next added room its catch-up poll with `slot`, unless a
    /// regular turn polled it first or a later reload removed it again.
    fn catch_up(
        &mut self,
        poller: &Arc<Poller>,
        members: &HashSet<String>,
        slot: OwnedSemaphorePermit,
        shutdown: &CancellationToken,
    ) {
        let Some((pass, room)) = self.catch_ups.pop_front() else {
            return;
        };
        if self.awaiting_catch_up.remove(&room) && members.contains(&room) {
            self.spawn(poller, pass, room, slot, shutdown);
        }
        if self.catch_ups.front().is_none_or(|(next, _)| *next != pass) {
            self.end_of_turns(poller, pass);
        }
    }

    /// True when `room`'s previous poll is still out; counted as skipped unless it is a watch poll.
    fn skip_if_busy(&mut self, pass: u64, room: &str) -> bool {
        if !self.busy.contains(room) {
            return false;
        }
        // A watch poll in flight brings the room's data as a pass poll would: not a failure.
        let by_watch = self
            .owners
            .values()
            .any(|(tier, r)| *tier == Tier::Watch && r == room);
        if let Some(state) = self
            .passes
            .iter_mut()
            .find(|p| p.id == pass)
            .filter(|_| !by_watch)
        {
            state.summary.skipped += 1;
        }
        true
    }

    /// Starts `room`'s poll for `pass`, unless its previous poll is still out.
    fn spawn(
        &mut self,
        poller: &Arc<Poller>,
        pass: u64,
        room: String,
        slot: OwnedSemaphorePermit,
        shutdown: &CancellationToken,
    ) {
        if self.skip_if_busy(pass, &room) {
            return;
        }
        let Some(state) = self.passes.iter_mut().find(|p| p.id == pass) else {
            return;
        };
        state.pending += 1;
        self.awaiting_catch_up.remove(&room);
        self.start(poller, Tier::Pass(pass), room, slot, shutdown);
    }

    fn start(
        &mut self,
        poller: &Arc<Poller>,
        tier: Tier,
        room: String,
        slot: OwnedSemaphorePermit,
        shutdown: &CancellationToken,
    ) {
        self.watch.attempted(&room, Instant::now());
        self.busy.insert(room.clone());
        let handle = self
            .tasks
            .spawn(poll_task(poller, room.clone(), tier, slot, shutdown));
        self.owners.insert(handle.id(), (tier, room));
    }

    /// Starts the watch tier's next poll with `slot`, if a room is due.
    fn watch_poll(&mut self, poller: &Arc<Poller>, slot: OwnedSemaphorePermit, shutdown: &CancellationToken) {
        let busy = &self.busy;
        let picked = self
            .watch
            .pick(Instant::now(), poller.client.budget().sustained(), |room| {
                if busy.contains(room) {
                    Eligibility::Busy
                } else if poller.store.members_by_callback(room) {
                    Eligibility::ByCallback
                } else {
                    Eligibility::Pollable
                }
            });
        if let Some(room) = picked.filter(|room| poller.store.contains(room)) {
            self.start(poller, Tier::Watch, room, slot, shutdown);
        }
        self.show_watched(poller);
    }

    fn show_watched(&self, poller: &Poller) {
        poller.metrics.rooms_watched.set(self.watch.watched() as i64);
    }

    fn end_of_turns(&mut self, poller: &Poller, pass: u64) {
        if let Some(state) = self.passes.iter_mut().find(|p| p.id == pass) {
            state.turns_done = true;
        }
        self.finish_passes(poller);
    }

    fn collect(
        &mut self,
        poller: &Poller,
        done: Result<(tokio::task::Id, PollResult), tokio::task::JoinError>,
    ) {
        let (id, result) = match done {
            Ok((id, result)) => (id, Ok(result)),
            Err(e) => (e.id(), Err(e.to_string())),
        };
        let Some((tier, room)) = self.owners.remove(&id) else {
            return;
        };
        self.busy.remove(&room);
        match result {
            Ok(PollResult::Ok { members, max }) => self.watch.observe(&room, members, max, Instant::now()),
            Ok(PollResult::Gone) => self.watch.forget(&room),
            _ => {}
        }
        self.show_watched(poller);
        let Tier::Pass(pass) = tier else {
            poller.metrics.polls.with_label_values(&[TIER_WATCH]).inc();
            return;
        };
        poller.metrics.polls.with_label_values(&[TIER_PASS]).inc();
        if let Some(state) = self.passes.iter_mut().find(|p| p.id == pass) {
            state.pending -= 1;
            state.summary.absorb(result);
        }
        self.finish_passes(poller);
    }

    /// Reports every pass whose rooms all had their turn and whose polls all ended.
    fn finish_passes(&mut self, poller: &Poller) {
        while let Some(pass) = self.passes.iter().position(|p| p.turns_done && p.pending == 0) {
            let Some(pass) = self.passes.remove(pass) else {
                break;
            };
            let elapsed = pass.start.elapsed();
            if pass.kind != PassKind::CatchUp {
                poller.metrics.sweep_duration.set(elapsed.as_secs_f64());
            }
            pass.summary.log(pass.kind, elapsed);
            if pass.kind == PassKind::First {
                poller.ready.store(true, Ordering::Release);
            }
        }
    }
}

/// Outcome counts of one pass, logged as one line rather than one per room.
#[derive(Default)]
struct PassSummary {
    ok: usize,
    gone: usize,
    failed: usize,
    /// Rooms not polled this pass because their previous poll was still out.
    skipped: usize,
    codes: std::collections::BTreeMap<String, usize>,
}

impl PassSummary {
    fn absorb(&mut self, done: Result<PollResult, String>) {
        match done {
            Ok(PollResult::Ok { .. }) => self.ok += 1,
            Ok(PollResult::Gone) => self.gone += 1,
            Ok(PollResult::Failed(code)) => {
                self.failed += 1;
                *self.codes.entry(code).or_default() += 1;
            }
            Err(e) => {
                self.failed += 1;
                tracing::error!(error = %e, "poll task ended abnormally");
            }
        }
    }

    fn log(&self, kind: PassKind, elapsed: Duration) {
        let codes: Vec<String> = self.codes.iter().map(|(c, n)| format!("{c}:{n}")).collect();
        let took = humantime::format_duration(round_ms(elapsed)).to_string();
        if kind == PassKind::CatchUp {
            // Debug: with callbacks, rooms join the set all day long.
            tracing::debug!(ok = self.ok, gone = self.gone, failed = self.failed, skipped = self.skipped, codes = %codes.join(","), took, "rooms added to the set polled");
        } else if self.failed > 0 || self.skipped > 0 {
            tracing::warn!(ok = self.ok, gone = self.gone, failed = self.failed, skipped = self.skipped, codes = %codes.join(","), took, "pass finished with failures (skipped: rooms whose previous poll was still running)");
        } else if kind == PassKind::First {
            tracing::info!(ok = self.ok, gone = self.gone, took, "first pass finished; ready");
        } else {
            tracing::debug!(ok = self.ok, gone = self.gone, took, "pass finished");
        }
    }
}

fn round_ms(d: Duration) -> Duration {
    Duration::from_millis(d.as_millis() as u64)
}

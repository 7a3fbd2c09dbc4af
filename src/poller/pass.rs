//! A pass: every room gets one turn, spread evenly over `polling.interval`
//! (stretched to calls ÷ rate when the budget cannot fit them); rooms a
//! reload adds get a catch-up pass at once. Each pass ends in one log line.

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::sync::atomic::Ordering;
use std::time::Duration;

use compact_str::CompactString;
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::Instant;

use super::poll::{PollResult, RoomApi};
use super::Loop;

#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum PassKind {
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

/// The passes whose polls have not all ended (a slow room's poll may
/// outlive its pass), and the added rooms waiting for their catch-up turn.
#[derive(Default)]
pub(super) struct Passes {
    /// Oldest first.
    passes: VecDeque<Pass>,
    next_id: u64,
    /// Added rooms not polled yet, each with its catch-up pass, in reload order.
    catch_ups: VecDeque<(u64, CompactString)>,
    /// The rooms in `catch_ups` that no pass has polled since they were
    /// added: a regular turn that comes first makes the catch-up poll moot.
    awaiting_catch_up: HashSet<CompactString>,
}

impl Passes {
    fn begin(&mut self, start: Instant, kind: PassKind) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
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

    pub(super) fn queue_catch_up(&mut self, rooms: Vec<CompactString>) {
        if rooms.is_empty() {
            return;
        }
        let pass = self.begin(Instant::now(), PassKind::CatchUp);
        self.awaiting_catch_up.extend(rooms.iter().cloned());
        self.catch_ups.extend(rooms.into_iter().map(|room| (pass, room)));
    }

    pub(super) fn has_catch_ups(&self) -> bool {
        !self.catch_ups.is_empty()
    }

    /// `room` was found busy at its turn in `pass`.
    pub(super) fn skipped(&mut self, pass: u64) {
        if let Some(state) = self.get(pass) {
            state.summary.skipped += 1;
        }
    }

    /// `pass` starts `room`'s poll; false if the pass is over already.
    pub(super) fn started(&mut self, pass: u64, room: &str) -> bool {
        let Some(state) = self.get(pass) else {
            return false;
        };
        state.pending += 1;
        self.awaiting_catch_up.remove(room);
        true
    }

    /// A poll `pass` started ended with `result`.
    pub(super) fn ended(&mut self, pass: u64, result: Result<PollResult, String>) {
        if let Some(state) = self.get(pass) {
            state.pending -= 1;
            state.summary.absorb(result);
        }
    }

    fn get(&mut self, pass: u64) -> Option<&mut Pass> {
        self.passes.iter_mut().find(|p| p.id == pass)
    }
}

impl<A: RoomApi> Loop<A> {
    /// One regular pass (the first one at the full budget): its turns, then
    /// the wait until the next pass may start. `None` on shutdown.
    pub(super) async fn pass(&mut self, first: bool) -> Option<()> {
        let pass_start = Instant::now();
        self.tell_watch();
        if !first {
            self.warn_if_stretched();
        }
        let kind = if first { PassKind::First } else { PassKind::Regular };
        let pass = self.passes.begin(pass_start, kind);
        self.order_turns();
        let mut due = pass_start;
        for room in self.schedule.rooms.clone() {
            if !self.schedule.members.contains(&room) || self.skip_if_busy(pass, &room) {
                continue;
            }
            let slot = self
                .serve_until(|state| {
                    let slots = state.slots.clone();
                    async move {
                        tokio::time::sleep_until(due).await;
                        slots.acquire_owned().await.ok()
                    }
                })
                .await??;
            // A reload or callback may have removed the room while it waited for its turn.
            if !self.schedule.members.contains(&room) {
                continue;
            }
            // The first pass runs at the full budget, so every room has data as soon as
            // possible; later turns are spaced by what the watch tier leaves of it now.
            if !first {
                due += self.turn_gap();
            }
            self.spawn(pass, room.to_string(), slot);
        }
        self.end_of_turns(pass);
        if first {
            self.watch.start();
        }
        let scheduled_in = pass_start.elapsed();
        let planned = due.duration_since(pass_start);
        loop {
            // The next pass starts on time even while slow answers of this one are
            // still out, but not before this pass's calls have left the budget's queue.
            self.serve_until(|state| {
                let interval = state.schedule.interval.max(planned).max(scheduled_in);
                let next = (pass_start + interval).max(state.poller.client.budget().reserved_until());
                tokio::time::sleep_until(next)
            })
            .await?;
            if self.poller.client.budget().reserved_until() <= Instant::now() {
                return Some(());
            }
        }
    }

    /// The time between two turns of a regular pass: the pass length (the
    /// interval, or calls ÷ what the watch tier leaves of the budget) ÷ rooms.
    fn turn_gap(&self) -> Duration {
        // The pass is spread over what the configured rooms' own polls leave.
        let sustained = self.poller.client.budget().sustained() - self.configured_rate();
        self.watch
            .pass_length(self.schedule.interval, self.calls, sustained)
            / self.schedule.rooms.len().max(1) as u32
    }

    fn warn_if_stretched(&mut self) {
        let budget = self.poller.client.budget();
        let shortest = Duration::from_secs_f64(self.calls as f64 / budget.sustained());
        if shortest > self.schedule.interval && !self.warned_stretch {
            self.warned_stretch = true;
            tracing::warn!(
                rooms = self.schedule.rooms.len(),
                calls_per_pass = self.calls,
                rate_limit = budget.effective(),
                interval = %humantime::format_duration(self.schedule.interval),
                pass = %humantime::format_duration(round_ms(shortest)),
                "the rooms do not fit in one interval at this rate limit: each pass stretches (logged once)"
            );
        }
    }

    /// Gives the next added room its catch-up poll with `slot`, unless a
    /// regular turn polled it first or a later reload removed it again.
    pub(super) fn catch_up(&mut self, slot: OwnedSemaphorePermit) {
        let Some((pass, room)) = self.passes.catch_ups.pop_front() else {
            return;
        };
        if self.passes.awaiting_catch_up.remove(&room) && self.schedule.members.contains(&room) {
            self.spawn(pass, room.to_string(), slot);
        }
        if self
            .passes
            .catch_ups
            .front()
            .is_none_or(|(next, _)| *next != pass)
        {
            self.end_of_turns(pass);
        }
    }

    fn end_of_turns(&mut self, pass: u64) {
        if let Some(state) = self.passes.get(pass) {
            state.turns_done = true;
        }
        self.finish_passes();
    }

    /// Reports every pass whose rooms all had their turn and whose polls all ended.
    pub(super) fn finish_passes(&mut self) {
        let passes = &mut self.passes.passes;
        while let Some(pass) = passes.iter().position(|p| p.turns_done && p.pending == 0) {
            let Some(pass) = passes.remove(pass) else {
                break;
            };
            let elapsed = pass.start.elapsed();
            if pass.kind != PassKind::CatchUp {
                self.poller.metrics.sweep_duration.set(elapsed.as_secs_f64());
            }
            pass.summary.log(pass.kind, elapsed);
            if pass.kind == PassKind::First {
                self.poller.ready.store(true, Ordering::Release);
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
    codes: BTreeMap<String, usize>,
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

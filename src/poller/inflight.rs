//! The polls started and not collected yet, across passes and tiers: which
//! rooms are busy (a room never has two polls out), starting a pass's or the
//! watch tier's poll, and crediting each ending to its tier and pass.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use tokio::sync::OwnedSemaphorePermit;
use tokio::task::{Id, JoinError, JoinSet};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::metrics::{TIER_PASS, TIER_WATCH};
use super::poll::{PollResult, RoomApi};
use super::{Loop, Poller};
use crate::watch::Eligibility;

/// Who started a poll: a pass (by id), the watch tier, or a configured
/// room's own turn (counted with the pass tier: it stands in for one).
#[derive(Debug, Clone, Copy, PartialEq)]
enum Tier {
    Pass(u64),
    Watch,
    Configured,
}

#[derive(Default)]
pub(super) struct InFlight {
    pub(super) tasks: JoinSet<PollResult>,
    /// Task → (tier, room), to credit each ending to its pass and free its room.
    owners: HashMap<Id, (Tier, String)>,
    busy: HashSet<String>,
}

impl<A: RoomApi> Loop<A> {
    /// True when `room`'s previous poll is still out; counted as skipped in
    /// `pass` unless that poll is a watch poll.
    pub(super) fn skip_if_busy(&mut self, pass: u64, room: &str) -> bool {
        if !self.in_flight.busy.contains(room) {
            return false;
        }
        // A watch poll in flight brings the room's data as a pass poll would: not a failure.
        let by_watch = self
            .in_flight
            .owners
            .values()
            .any(|(tier, r)| !matches!(tier, Tier::Pass(_)) && r == room);
        if !by_watch {
            self.passes.skipped(pass);
        }
        true
    }

    /// Starts `room`'s poll for `pass`, unless its previous poll is still out.
    pub(super) fn spawn(&mut self, pass: u64, room: String, slot: OwnedSemaphorePermit) {
        if self.skip_if_busy(pass, &room) || !self.passes.started(pass, &room) {
            return;
        }
        self.start(Tier::Pass(pass), room, slot);
    }

    fn start(&mut self, tier: Tier, room: String, slot: OwnedSemaphorePermit) {
        let now = Instant::now();
        self.watch.attempted(&room, now);
        self.started_now(&room, now);
        self.in_flight.busy.insert(room.clone());
        let task = poll_task(&self.poller, room.clone(), tier, slot, &self.shutdown);
        let handle = self.in_flight.tasks.spawn(task);
        self.in_flight.owners.insert(handle.id(), (tier, room));
    }

    /// Starts the watch tier's next poll with `slot`, if a room is due.
    pub(super) fn watch_poll(&mut self, slot: OwnedSemaphorePermit) {
        let (busy, poller) = (&self.in_flight.busy, &self.poller);
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
        if let Some(room) = picked.filter(|room| self.poller.store.contains(room)) {
            self.start(Tier::Watch, room, slot);
        }
        self.show_watched();
    }

    /// Starts the poll of the configured room due first, if it is due: its
    /// last poll is [`super::CONFIGURED_AGE`] intervals old (a stretched pass).
    pub(super) fn configured_poll(&mut self, slot: OwnedSemaphorePermit) {
        let now = Instant::now();
        let Some((at, room)) = self.due.first().cloned() else {
            return;
        };
        if at > now {
            return;
        }
        if !self.schedule.members.contains(room.as_str()) || self.in_flight.busy.contains(&room) {
            // Not polled now (destroyed, or its poll is out): due again later.
            self.set_due(room, now);
            return;
        }
        self.start(Tier::Configured, room, slot);
    }

    pub(super) fn show_watched(&self) {
        let watched = i64::try_from(self.watch.watched()).unwrap_or(i64::MAX);
        self.poller.metrics.rooms_watched.set(watched);
    }

    /// Takes an ended poll: frees its room, shows the watch tier its answer,
    /// counts it by tier and credits it to its pass.
    pub(super) fn collect(&mut self, done: Result<(Id, PollResult), JoinError>) {
        let (id, result) = match done {
            Ok((id, result)) => (id, Ok(result)),
            Err(e) => (e.id(), Err(e.to_string())),
        };
        let Some((tier, room)) = self.in_flight.owners.remove(&id) else {
            return;
        };
        self.in_flight.busy.remove(&room);
        match result {
            Ok(PollResult::Ok { members, max }) => self.watch.observe(&room, members, max, Instant::now()),
            Ok(PollResult::Gone) => self.watch.forget(&room),
            _ => {}
        }
        self.show_watched();
        let polls = &self.poller.metrics.polls;
        let pass = match tier {
            Tier::Pass(pass) => pass,
            Tier::Watch => return polls.with_label_values(&[TIER_WATCH]).inc(),
            Tier::Configured => return polls.with_label_values(&[TIER_PASS]).inc(),
        };
        polls.with_label_values(&[TIER_PASS]).inc();
        self.passes.ended(pass, result);
        self.finish_passes();
    }
}

/// One poll as a task; it gives its in-flight slot back when it ends.
fn poll_task<A: RoomApi>(
    poller: &Arc<Poller<A>>,
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

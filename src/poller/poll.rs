//! One room's poll: `get_room_info` (and the seat list of a seat-enabled
//! room) through the budget with retries, and the outcome recorded in the
//! store. [`RoomApi`] is what a poll needs of the API client.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio_util::sync::CancellationToken;

use super::retry::with_retries;
use super::Poller;
use crate::api::model::{RoomInfo, SeatUsage};
use crate::api::{ApiClient, CallError, ErrorClass};
use crate::budget::{Budget, Permit};
use crate::clock::{unix_now_f64, unix_now_ms};

/// The calls a poll makes, and the budget they pass: [`ApiClient`] in the
/// exporter, a scripted fake in the poller's tests.
pub trait RoomApi: Send + Sync + 'static {
    fn budget(&self) -> &Budget;
    fn get_room_info(
        &self,
        permit: Permit,
        room: &str,
    ) -> impl Future<Output = Result<RoomInfo, CallError>> + Send;
    fn get_seat_list(
        &self,
        permit: Permit,
        room: &str,
    ) -> impl Future<Output = Result<SeatUsage, CallError>> + Send;
}

impl RoomApi for ApiClient {
    fn budget(&self) -> &Budget {
        ApiClient::budget(self)
    }

    fn get_room_info(
        &self,
        permit: Permit,
        room: &str,
    ) -> impl Future<Output = Result<RoomInfo, CallError>> + Send {
        ApiClient::get_room_info(self, permit, room)
    }

    fn get_seat_list(
        &self,
        permit: Permit,
        room: &str,
    ) -> impl Future<Output = Result<SeatUsage, CallError>> + Send {
        ApiClient::get_seat_list(self, permit, room)
    }
}

/// How one room's poll ended, for the pass summary and the watch tier.
pub(super) enum PollResult {
    /// With the MemberCount and MaxMemberCount it returned.
    Ok {
        members: u64,
        max: u64,
    },
    Gone,
    Failed(String),
}

impl<A: RoomApi> Poller<A> {
    /// Polls `room`; `refresh_seats` false (watch polls) keeps its last seat usage.
    pub(super) async fn poll_room(
        &self,
        room: &str,
        refresh_seats: bool,
        shutdown: &CancellationToken,
    ) -> PollResult {
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
        let now = unix_now_f64();
        if let Some(share) = &self.share {
            share.polled(room, &info, seats.as_ref(), sent_ms, now);
        }
        self.store.record_poll(room, info, seats, sent_ms, now);
        self.journal.poll(room, sent_ms, None);
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
        self.journal.poll(room, sent_ms, Some(&e));
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
        if let Some(share) = &self.share {
            share.failed(room);
        }
        self.store.record_failure(room);
        PollResult::Failed(e.code)
    }
}

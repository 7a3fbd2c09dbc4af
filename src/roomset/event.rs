//! The messages around the room set: what a callback means for it
//! (`RoomEvent`), and what it tells the poller when its turns must change
//! (`Reschedule`, also sent by a reload).

use std::time::Duration;

use super::admission::Refusal;
use crate::room::RoomUpdate;

/// What a callback is answered: `Ok` once durable and visible, with the
/// refusal its room met (answered OK all the same); `Err` when the backend
/// failed (503).
pub type Answer = Result<Option<Refusal>, String>;
use crate::watch::WatchSettings;

/// A change to the schedule, from a reload or the room set.
#[derive(Debug, Clone)]
pub enum Reschedule {
    /// A reload's polling settings.
    Settings {
        interval: Duration,
        seat_usage: bool,
        watch: WatchSettings,
        /// The configured rooms, which keep their interval however long
        /// discovered rooms stretch a pass.
        configured: Vec<String>,
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

//! The latest snapshot of every polled room, with its metric lines already
//! rendered. A poll replaces one room's entry atomically (an `Arc` swap under
//! a short write lock), so a scrape never sees half of a room's update.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use crate::api::model::{RoomInfo, SeatUsage};
use crate::exposition::{render_room, write_families, RenderedRoom, RoomSnapshot};

pub struct Entry {
    pub snapshot: RoomSnapshot,
    pub rendered: RenderedRoom,
}

/// Rooms keyed by ID (sorted, so output order is stable between scrapes).
#[derive(Default)]
pub struct Store {
    rooms: RwLock<BTreeMap<String, Arc<Entry>>>,
}

impl Store {
    pub fn new() -> Store {
        Store::default()
    }

    /// The API returned the room's info (and seat usage when asked for).
    pub fn record_success(&self, room_id: &str, info: RoomInfo, seats: Option<SeatUsage>, now_unix: f64) {
        self.update(room_id, |s| {
            s.info = Some(info);
            s.seats = seats;
            s.up = true;
            s.exists = Some(true);
            s.last_success = Some(now_unix);
        });
    }

    /// The poll failed for a reason other than the room being gone: keep the
    /// last data, mark the room down.
    pub fn record_failure(&self, room_id: &str) {
        self.update(room_id, |s| s.up = false);
    }

    /// The API said the room does not exist (100004): drop its data.
    pub fn record_gone(&self, room_id: &str) {
        self.update(room_id, |s| {
            s.info = None;
            s.seats = None;
            s.up = false;
            s.exists = Some(false);
        });
    }

    pub fn snapshot(&self, room_id: &str) -> Option<RoomSnapshot> {
        self.read().get(room_id).map(|e| e.snapshot.clone())
    }

    pub fn len(&self) -> usize {
        self.read().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Writes every room family, rooms in ID order.
    pub fn render_into(&self, out: &mut Vec<u8>) {
        // Clone the Arcs and release the lock before the copying work.
        let entries: Vec<Arc<Entry>> = self.read().values().cloned().collect();
        write_families(entries.iter().map(|e| &e.rendered), out);
    }

    /// Read-modify-write under the write lock: rendering one room takes
    /// microseconds, and concurrent updates of one room must not lose each other.
    fn update(&self, room_id: &str, change: impl FnOnce(&mut RoomSnapshot)) {
        let mut rooms = self.rooms.write().unwrap_or_else(|p| p.into_inner());
        let mut snapshot = rooms
            .get(room_id)
            .map(|e| e.snapshot.clone())
            .unwrap_or_else(|| RoomSnapshot {
                room_id: room_id.to_owned(),
                ..RoomSnapshot::default()
            });
        change(&mut snapshot);
        let rendered = render_room(&snapshot);
        rooms.insert(room_id.to_owned(), Arc::new(Entry { snapshot, rendered }));
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<String, Arc<Entry>>> {
        self.rooms.read().unwrap_or_else(|p| p.into_inner())
    }
}

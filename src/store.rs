//! The latest snapshot of every configured room, with its metric lines already
//! rendered. Rooms sit in shards of [`SHARD_ROOMS`] (in configuration order);
//! each shard also keeps its rooms' lines concatenated per family.
//!
//! Why shards: a scrape that gathered each family's lines from 10,000 separate
//! per-room buffers spent its time on cache misses (45 ms measured by
//! `benches/scrape.rs`); copying ~160 contiguous shard buffers per family is
//! a plain memcpy. A poll rebuilds one shard (64 rooms) under its mutex and
//! swaps the shard's text in one `Arc` store, so a scrape sees either the old
//! or the new lines of a room, never half of its update.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use crate::api::model::{RoomInfo, SeatUsage};
use crate::exposition::{render_room, write_families, RenderedRoom, RoomSnapshot, FAMILIES};

/// Rooms per shard: small enough that rebuilding a shard on each poll is
/// cheap (microseconds), large enough that a scrape copies few buffers.
pub const SHARD_ROOMS: usize = 64;

pub struct Store {
    /// Room ID → (shard, slot); fixed at start, from the configuration.
    positions: HashMap<String, (usize, usize)>,
    shards: Vec<Mutex<Shard>>,
}

struct Shard {
    rooms: Vec<Option<Entry>>,
    /// The shard's rooms' lines, concatenated per family, in slot order.
    text: Arc<RenderedRoom>,
}

struct Entry {
    snapshot: RoomSnapshot,
    rendered: RenderedRoom,
}

impl Store {
    /// A store for `rooms`; updates for other IDs are ignored.
    pub fn new<S: AsRef<str>>(rooms: &[S]) -> Store {
        let mut positions = HashMap::with_capacity(rooms.len());
        for room in rooms {
            let n = positions.len();
            positions
                .entry(room.as_ref().to_owned())
                .or_insert((n / SHARD_ROOMS, n % SHARD_ROOMS));
        }
        let shard_count = positions.len().div_ceil(SHARD_ROOMS);
        let shards = (0..shard_count)
            .map(|_| {
                Mutex::new(Shard {
                    rooms: (0..SHARD_ROOMS).map(|_| None).collect(),
                    text: Arc::new(RenderedRoom::default()),
                })
            })
            .collect();
        Store { positions, shards }
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
        let &(shard, slot) = self.positions.get(room_id)?;
        lock(&self.shards[shard]).rooms[slot]
            .as_ref()
            .map(|e| e.snapshot.clone())
    }

    /// Rooms whose last info says they use seats: each costs a seat call per pass.
    pub fn seat_enabled_rooms(&self) -> usize {
        self.shards
            .iter()
            .map(|shard| {
                lock(shard)
                    .rooms
                    .iter()
                    .flatten()
                    .filter(|e| e.snapshot.info.as_ref().is_some_and(|i| i.is_seat_enabled))
                    .count()
            })
            .sum()
    }

    /// Rooms the store holds (configured rooms).
    pub fn capacity(&self) -> usize {
        self.positions.len()
    }

    /// Writes every room family: HELP/TYPE once, then each shard's lines.
    pub fn render_into(&self, out: &mut Vec<u8>) {
        // Take each shard's text (an Arc clone) and copy outside the locks.
        let texts: Vec<Arc<RenderedRoom>> = self.shards.iter().map(|s| lock(s).text.clone()).collect();
        write_families(texts.iter().map(|t| &**t), out);
    }

    /// Re-renders one room and rebuilds its shard's text under the shard's lock.
    fn update(&self, room_id: &str, change: impl FnOnce(&mut RoomSnapshot)) {
        let Some(&(shard, slot)) = self.positions.get(room_id) else {
            tracing::debug!(room_id, "not a configured room; not stored");
            return;
        };
        let mut shard = lock(&self.shards[shard]);
        let mut snapshot = shard.rooms[slot]
            .take()
            .map(|e| e.snapshot)
            .unwrap_or_else(|| RoomSnapshot {
                room_id: room_id.to_owned(),
                ..RoomSnapshot::default()
            });
        change(&mut snapshot);
        let rendered = render_room(&snapshot);
        shard.rooms[slot] = Some(Entry { snapshot, rendered });
        shard.text = Arc::new(concat_by_family(
            shard.rooms.iter().flatten().map(|e| &e.rendered),
        ));
    }
}

/// One buffer holding, family by family, every given room's lines.
fn concat_by_family<'a>(rooms: impl Iterator<Item = &'a RenderedRoom> + Clone) -> RenderedRoom {
    let len = rooms.clone().map(RenderedRoom::len).sum();
    let mut text = String::with_capacity(len);
    let mut ranges = Vec::with_capacity(FAMILIES.len());
    for index in 0..FAMILIES.len() {
        let start = text.len();
        for room in rooms.clone() {
            text.push_str(room.family(index));
        }
        ranges.push(start..text.len());
    }
    RenderedRoom::from_parts(text, ranges)
}

fn lock(shard: &Mutex<Shard>) -> MutexGuard<'_, Shard> {
    // A panic while holding the lock leaves a consistent shard: every update is a whole-value store.
    shard.lock().unwrap_or_else(|p| p.into_inner())
}

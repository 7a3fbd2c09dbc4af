//! The latest snapshot of every room of the room set, with its metric lines already
//! rendered. Rooms sit in shards of [`SHARD_ROOMS`] (in configuration order;
//! a reload fills freed places first, then appends); each shard keeps its
//! rooms' lines concatenated per family, and only there.
//!
//! Why shards: gathering each family's lines from thousands of separate
//! per-room buffers is dominated by cache misses; copying a few contiguous
//! shard buffers per family is a plain memcpy. A poll renders its room and splices the lines into a new
//! copy of the shard's text under the shard's mutex, then swaps it in one
//! `Arc` store, so a scrape sees either the old or the new lines of a room,
//! never half of its update. The text is the only copy of the lines: memory
//! is one exposition's worth, not two.

use std::collections::{HashMap, HashSet};
use std::ops::Range;
use std::sync::{Mutex, MutexGuard, RwLock, RwLockReadGuard};

use bytes::Bytes;

use crate::api::model::{RoomInfo, SeatUsage};
use crate::clock::unix_now_ms;
use crate::exposition::{in_family_order, render_room, RenderedRoom, RoomSnapshot, FAMILIES};
use crate::room::{Field, RoomUpdate};

/// Rooms per shard: small enough that rebuilding a shard on each poll is
/// cheap (microseconds), large enough that a scrape copies few buffers.
pub const SHARD_ROOMS: usize = 64;

pub struct Store {
    /// Which rooms are configured and where they sit; written only by a reload.
    layout: RwLock<Layout>,
}

struct Layout {
    /// Room ID → (shard, slot).
    positions: HashMap<String, (usize, usize)>,
    /// Places freed by rooms a reload removed, reused before new shards.
    free: Vec<(usize, usize)>,
    shards: Vec<Mutex<Shard>>,
}

struct Shard {
    rooms: Vec<Option<RoomSnapshot>>,
    /// The shard's rooms' lines, concatenated per family, in slot order;
    /// `Bytes`, so a scrape sends slices of it without copying.
    text: Bytes,
    /// Family `i`'s lines are `text[families[i]]`.
    families: Vec<Range<usize>>,
    /// `line_lengths[slot][family]`: bytes of that room's lines in the
    /// family's section of `text` (0 for empty slots), to find where to splice.
    line_lengths: Vec<Vec<usize>>,
}

impl Shard {
    fn new() -> Shard {
        Shard {
            rooms: (0..SHARD_ROOMS).map(|_| None).collect(),
            text: Bytes::new(),
            families: vec![0..0; FAMILIES.len()],
            line_lengths: vec![vec![0; FAMILIES.len()]; SHARD_ROOMS],
        }
    }

    /// Replaces the lines of the room in `slot` with `lines` (none: removed).
    fn splice(&mut self, slot: usize, lines: Option<&RenderedRoom>) {
        self.splice_many(&[(slot, lines)]);
    }

    /// Replaces the lines of each room in `changes` (slots ascending) in one
    /// copy of the text, so a batch of callbacks copies each shard once.
    fn splice_many(&mut self, changes: &[(usize, Option<&RenderedRoom>)]) {
        let new_len: usize = changes.iter().map(|(_, l)| l.map_or(0, RenderedRoom::len)).sum();
        let old_len: usize = changes
            .iter()
            .map(|(slot, _)| self.line_lengths[*slot].iter().sum::<usize>())
            .sum();
        let mut text = Vec::with_capacity((self.text.len() + new_len).saturating_sub(old_len));
        for family in 0..FAMILIES.len() {
            let section = &self.text[self.families[family].clone()];
            let start = text.len();
            let (mut copied, mut offset, mut next_slot) = (0, 0, 0);
            for &(slot, lines) in changes {
                offset += self.line_lengths[next_slot..slot]
                    .iter()
                    .map(|l| l[family])
                    .sum::<usize>();
                text.extend_from_slice(&section[copied..offset]);
                let room_lines = lines.map_or("", |l| l.family(family));
                text.extend_from_slice(room_lines.as_bytes());
                offset += self.line_lengths[slot][family];
                copied = offset;
                next_slot = slot + 1;
                self.line_lengths[slot][family] = room_lines.len();
            }
            text.extend_from_slice(&section[copied..]);
            self.families[family] = start..text.len();
        }
        self.text = Bytes::from(text);
    }
}

/// What a reload changed in the room list.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct RoomChanges {
    /// New rooms, in configuration order.
    pub added: Vec<String>,
    pub removed: Vec<String>,
}

impl Store {
    /// A store for `rooms`; updates for other IDs are ignored.
    pub fn new<S: AsRef<str>>(rooms: &[S]) -> Store {
        let store = Store {
            layout: RwLock::new(Layout {
                positions: HashMap::with_capacity(rooms.len()),
                free: Vec::new(),
                shards: Vec::new(),
            }),
        };
        store.set_rooms(rooms);
        store
    }

    /// Makes `rooms` the rooms held: removed rooms lose their series at
    /// once, kept rooms keep their snapshot and place, new rooms get a place
    /// (and no series until a poll or callback tells something).
    pub fn set_rooms<S: AsRef<str>>(&self, rooms: &[S]) -> RoomChanges {
        let wanted: HashSet<&str> = rooms.iter().map(AsRef::as_ref).collect();
        let gone: Vec<String> = self
            .layout()
            .positions
            .keys()
            .filter(|room| !wanted.contains(room.as_str()))
            .cloned()
            .collect();
        RoomChanges {
            removed: self.remove_rooms(&gone),
            added: self.add_rooms(rooms),
        }
    }

    /// Gives each room of `rooms` not held yet a place; returns those, in order.
    pub fn add_rooms<S: AsRef<str>>(&self, rooms: &[S]) -> Vec<String> {
        let mut layout = self.layout.write().unwrap_or_else(|p| p.into_inner());
        let mut added = Vec::new();
        for room in rooms {
            let room = room.as_ref();
            if layout.positions.contains_key(room) {
                continue;
            }
            let place = layout.free.pop().unwrap_or_else(|| {
                let n = layout.shards.len();
                layout.shards.push(Mutex::new(Shard::new()));
                layout.free.extend((1..SHARD_ROOMS).rev().map(|slot| (n, slot)));
                (n, 0)
            });
            layout.positions.insert(room.to_owned(), place);
            added.push(room.to_owned());
        }
        added
    }

    /// Drops `rooms` and all their series; returns those that were held.
    pub fn remove_rooms<S: AsRef<str>>(&self, rooms: &[S]) -> Vec<String> {
        let mut layout = self.layout.write().unwrap_or_else(|p| p.into_inner());
        let mut removed = Vec::new();
        for room in rooms {
            if let Some(place) = layout.positions.remove(room.as_ref()) {
                let mut shard = lock(&layout.shards[place.0]);
                shard.rooms[place.1] = None;
                shard.splice(place.1, None);
                drop(shard);
                layout.free.push(place);
                removed.push(room.as_ref().to_owned());
            }
        }
        // Lowest places first, so a shrunk-then-grown set stays compact.
        layout.free.sort_unstable_by(|a, b| b.cmp(a));
        removed
    }

    /// Whether the store holds `room_id` (configured, or discovered and not forgotten).
    pub fn contains(&self, room_id: &str) -> bool {
        self.layout().positions.contains_key(room_id)
    }

    /// The API returned the room's info (and seat usage when asked for);
    /// stamped as of `now_unix`. The poller uses [`Store::record_poll`].
    pub fn record_success(&self, room_id: &str, info: RoomInfo, seats: Option<SeatUsage>, now_unix: f64) {
        self.record_poll(room_id, info, seats, (now_unix * 1000.0) as u64, now_unix);
    }

    /// A successful poll whose request was sent at `sent_ms`: its fields
    /// count as of then, so a newer callback keeps its values.
    pub fn record_poll(
        &self,
        room_id: &str,
        info: RoomInfo,
        seats: Option<SeatUsage>,
        sent_ms: u64,
        now_unix: f64,
    ) {
        self.update(room_id, |s| {
            s.facts.merge(&RoomUpdate::polled(info, seats, sent_ms));
            s.up = s.facts.exists == Some(true);
            s.last_success = Some(now_unix);
            s.polled_ms = s.polled_ms.max(sent_ms);
        });
    }

    /// The poll failed for a reason other than the room being gone: keep the
    /// last data, mark the room down.
    pub fn record_failure(&self, room_id: &str) {
        self.update(room_id, |s| s.up = false);
    }

    /// The API said the room does not exist (100004).
    pub fn record_gone(&self, room_id: &str) {
        self.record_gone_at(room_id, unix_now_ms());
    }

    /// 100004 for a request sent at `sent_ms`: the room is gone as of then.
    pub fn record_gone_at(&self, room_id: &str, sent_ms: u64) {
        self.update(room_id, |s| {
            s.facts.merge(&RoomUpdate::gone(sent_ms));
            s.up = false;
        });
    }

    /// A callback's change, true as of its `EventTime` (`update.at_ms`).
    pub fn record_callback(&self, room_id: &str, update: &RoomUpdate) {
        self.update(room_id, |s| apply_callback(s, update));
    }

    /// A batch of callbacks, in order: each shard is re-rendered once.
    pub fn record_callbacks(&self, updates: &[(String, RoomUpdate)]) {
        let layout = self.layout();
        let mut by_shard: std::collections::BTreeMap<usize, Vec<(usize, &str, &RoomUpdate)>> =
            Default::default();
        for (room, update) in updates {
            if let Some(&(shard, slot)) = layout.positions.get(room) {
                by_shard.entry(shard).or_default().push((slot, room, update));
            }
        }
        for (shard, changes) in by_shard {
            let mut shard = lock(&layout.shards[shard]);
            let mut slots = std::collections::BTreeSet::new();
            for (slot, room, update) in changes {
                let snapshot = shard.rooms[slot].get_or_insert_with(|| RoomSnapshot {
                    room_id: room.to_owned(),
                    ..RoomSnapshot::default()
                });
                apply_callback(snapshot, update);
                slots.insert(slot);
            }
            let rendered: Vec<(usize, RenderedRoom)> = slots
                .into_iter()
                .filter_map(|slot| Some((slot, render_room(shard.rooms[slot].as_ref()?))))
                .collect();
            let changes: Vec<(usize, Option<&RenderedRoom>)> =
                rendered.iter().map(|(slot, r)| (*slot, Some(r))).collect();
            shard.splice_many(&changes);
        }
    }

    /// Takes what the room set keeps of `room_id` (a previous run's or
    /// another replica's callbacks), field by field where it is newer.
    pub fn record_facts(&self, room_id: &str, facts: &crate::room::RoomFacts, last_callback_ms: u64) {
        self.update(room_id, |s| {
            s.facts.absorb(facts);
            if s.facts.exists == Some(false) {
                s.up = false;
            }
            if last_callback_ms > 0 {
                let at = last_callback_ms as f64 / 1000.0;
                s.last_callback = Some(s.last_callback.map_or(at, |t| t.max(at)));
            }
        });
    }

    /// Whether the room's newest MemberCount came from a callback newer
    /// than its last poll: polling it sooner would tell nothing new.
    pub fn members_by_callback(&self, room_id: &str) -> bool {
        self.snapshot(room_id).is_some_and(|s| {
            s.last_callback.is_some() && s.facts.stamps[Field::Members as usize] > s.polled_ms
        })
    }

    pub fn snapshot(&self, room_id: &str) -> Option<RoomSnapshot> {
        let layout = self.layout();
        let &(shard, slot) = layout.positions.get(room_id)?;
        let snapshot = lock(&layout.shards[shard]).rooms[slot].clone();
        snapshot
    }

    /// Visits every room held with its snapshot (`None` until something was
    /// learnt), each under its shard's lock for the visit only (the status page).
    pub fn for_each_room(&self, mut visit: impl FnMut(&str, Option<&RoomSnapshot>)) {
        let layout = self.layout();
        for (room, &(shard, slot)) in &layout.positions {
            visit(room, lock(&layout.shards[shard]).rooms[slot].as_ref());
        }
    }

    /// Rooms whose last info says they use seats: each costs a seat call per pass.
    pub fn seat_enabled_rooms(&self) -> usize {
        self.layout()
            .shards
            .iter()
            .map(|shard| {
                lock(shard)
                    .rooms
                    .iter()
                    .flatten()
                    .filter(|s| s.facts.exists != Some(false) && s.facts.info.is_seat_enabled)
                    .count()
            })
            .sum()
    }

    /// Rooms the store holds.
    pub fn capacity(&self) -> usize {
        self.layout().positions.len()
    }

    /// Every room family, HELP/TYPE once then each shard's lines, as pieces
    /// to send in order: slices of the shards' texts, nothing copied. Each
    /// shard is read under its lock once, so a room is never half updated.
    pub fn scrape(&self) -> Vec<Bytes> {
        let shards: Vec<(Bytes, Vec<Range<usize>>)> = self
            .layout()
            .shards
            .iter()
            .map(|s| {
                let shard = lock(s);
                (shard.text.clone(), shard.families.clone())
            })
            .collect();
        in_family_order(
            &shards,
            |(text, families), family| text.slice(families[family].clone()),
            Bytes::from_static,
        )
    }

    /// The text of [`Store::scrape`] in one buffer.
    pub fn render_into(&self, out: &mut Vec<u8>) {
        for piece in self.scrape() {
            out.extend_from_slice(&piece);
        }
    }

    /// Re-renders one room and splices its lines into its shard's text under the shard's lock.
    fn update(&self, room_id: &str, change: impl FnOnce(&mut RoomSnapshot)) {
        let layout = self.layout();
        let Some(&(shard, slot)) = layout.positions.get(room_id) else {
            tracing::debug!(room_id, "not a room of the set (any more); not stored");
            return;
        };
        let mut shard = lock(&layout.shards[shard]);
        let mut snapshot = shard.rooms[slot].take().unwrap_or_else(|| RoomSnapshot {
            room_id: room_id.to_owned(),
            ..RoomSnapshot::default()
        });
        change(&mut snapshot);
        let rendered = render_room(&snapshot);
        shard.rooms[slot] = Some(snapshot);
        shard.splice(slot, Some(&rendered));
    }

    fn layout(&self) -> RwLockReadGuard<'_, Layout> {
        // A panic while holding the lock leaves a consistent layout: set_rooms only adds and removes whole entries.
        self.layout.read().unwrap_or_else(|p| p.into_inner())
    }
}

fn apply_callback(s: &mut RoomSnapshot, update: &RoomUpdate) {
    s.facts.merge(update);
    if s.facts.exists == Some(false) {
        s.up = false;
    }
    let at = update.at_ms as f64 / 1000.0;
    s.last_callback = Some(s.last_callback.map_or(at, |t| t.max(at)));
}

fn lock(shard: &Mutex<Shard>) -> MutexGuard<'_, Shard> {
    // A panic while holding the lock leaves a consistent shard: every update is a whole-value store.
    shard.lock().unwrap_or_else(|p| p.into_inner())
}

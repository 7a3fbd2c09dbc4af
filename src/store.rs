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
//!
//! Series control: a shard's text holds only its *shown* rooms (every room,
//! or with `metrics.room_series_limit` the configured ones and the fullest
//! others, re-chosen at most every [`RECHOOSE_EVERY`]); every room counts in
//! the [`aggregates`], kept exact on each change.

pub mod aggregates;

use std::collections::{HashMap, HashSet};
use std::ops::Range;
use std::sync::{Mutex, MutexGuard, RwLock, RwLockReadGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;
use compact_str::CompactString;

use crate::api::model::{RoomInfo, SeatUsage};
use crate::clock::unix_now_ms;
use crate::config::MetricsConfig;
use crate::exposition::{in_family_order, render_room, RenderedRoom, RoomSnapshot, FAMILIES};
use crate::room::{Field, RoomUpdate};
use aggregates::{lifetime, Aggregates};

/// Rooms per shard: small enough that rebuilding a shard on each poll is
/// cheap (microseconds), large enough that a scrape copies few buffers.
pub const SHARD_ROOMS: usize = 64;
// A shard's shown and configured rooms are bit masks of one u64.
const _: () = assert!(SHARD_ROOMS == u64::BITS as usize);

const FAMILY_COUNT: usize = FAMILIES.len();

/// With a series limit, how long a choice of shown rooms stands: about a
/// scrape interval, so series do not come and go between scrapes.
pub const RECHOOSE_EVERY: Duration = Duration::from_secs(10);

/// Where the outcome of each of this replica's polls goes besides the
/// store: the other replicas of an HA group (`ha::results`).
pub trait PollSink: Send + Sync {
    fn polled(&self, room: &str, info: &RoomInfo, seats: Option<&SeatUsage>, sent_ms: u64, at_unix: f64);
    /// The poll failed (not 100004: the room set shares that).
    fn failed(&self, room: &str);
}

pub struct Store {
    /// Which rooms are configured and where they sit; written only by a reload.
    layout: RwLock<Layout>,
    /// Over every room, shown or not. Locked after a shard, never before.
    aggregates: Mutex<Aggregates>,
    /// Which rooms are shown; locked before the layout.
    series: Mutex<Series>,
    /// `shown_families[i]`: whether family `i` passes `metrics.families`.
    shown_families: RwLock<Vec<bool>>,
}

/// The series limit and the last choice of shown rooms.
struct Series {
    /// `metrics.room_series_limit` (0: every room is shown).
    limit: usize,
    /// Configured rooms: always shown.
    configured: HashSet<String>,
    /// When the shown rooms were last chosen (`None`: at the next scrape).
    chosen_at: Option<Instant>,
    /// Reused by every choice, so a choice allocates nothing per room.
    candidates: Vec<Candidate>,
    /// Per shard, the slots chosen.
    chosen: Vec<u64>,
}

/// A room that is not configured, ranked for the series limit.
#[derive(Debug, Clone, Copy)]
struct Candidate {
    /// MaxMemberCount above 0 (rooms without one rank last).
    has_capacity: bool,
    ratio: f64,
    members: u64,
    /// A fixed hash of the room ID, so ties fall the same way after a
    /// restart (the places depend on the order rooms were loaded).
    id_hash: u64,
    shard: u32,
    slot: u32,
}

impl Candidate {
    fn of(s: &RoomSnapshot, shard: usize, slot: usize) -> Candidate {
        let info = &s.facts.info;
        let live = s.facts.exists != Some(false);
        let has_capacity = live && s.facts.known(Field::MaxMembers) && info.max_member_count > 0;
        Candidate {
            has_capacity,
            ratio: if has_capacity {
                info.member_count as f64 / info.max_member_count as f64
            } else {
                0.0
            },
            members: if live { info.member_count } else { 0 },
            id_hash: {
                // SipHash with fixed keys: the same on every run of a build.
                let mut hasher = std::hash::DefaultHasher::new();
                std::hash::Hash::hash(&s.room_id, &mut hasher);
                std::hash::Hasher::finish(&hasher)
            },
            shard: shard as u32,
            slot: slot as u32,
        }
    }

    /// Fullest first; ties by members, then by room ID (hashed), so a choice is stable across restarts.
    fn fuller(a: &Candidate, b: &Candidate) -> std::cmp::Ordering {
        b.has_capacity
            .cmp(&a.has_capacity)
            .then(b.ratio.total_cmp(&a.ratio))
            .then(b.members.cmp(&a.members))
            .then(a.id_hash.cmp(&b.id_hash))
            .then((a.shard, a.slot).cmp(&(b.shard, b.slot)))
    }
}

struct Layout {
    /// Room ID → (shard, slot).
    positions: HashMap<CompactString, (usize, usize)>,
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
    /// family's section of `text` (0 for empty slots), to find where to splice;
    /// one flat block per shard rather than a vector per room.
    line_lengths: Box<[[u32; FAMILY_COUNT]; SHARD_ROOMS]>,
    /// Slots whose lines are in `text` (bit `slot`).
    shown: u64,
    /// Slots holding a configured room.
    configured: u64,
}

impl Shard {
    fn new() -> Shard {
        Shard {
            rooms: (0..SHARD_ROOMS).map(|_| None).collect(),
            text: Bytes::new(),
            families: vec![0..0; FAMILIES.len()],
            line_lengths: Box::new([[0; FAMILY_COUNT]; SHARD_ROOMS]),
            shown: 0,
            configured: 0,
        }
    }

    fn is_shown(&self, slot: usize) -> bool {
        self.shown & 1 << slot != 0
    }

    /// Makes the slots of `wanted` the shown ones: lines in for rooms newly
    /// shown, out for rooms newly hidden, in one copy of the text.
    fn show(&mut self, wanted: u64) {
        let changed = wanted ^ self.shown;
        if changed == 0 {
            return;
        }
        let rendered: Vec<(usize, Option<RenderedRoom>)> = (0..SHARD_ROOMS)
            .filter(|slot| changed & 1 << slot != 0)
            .map(|slot| {
                let lines = (wanted & 1 << slot != 0)
                    .then(|| self.rooms[slot].as_ref().map(render_room))
                    .flatten();
                (slot, lines)
            })
            .collect();
        let changes: Vec<(usize, Option<&RenderedRoom>)> =
            rendered.iter().map(|(slot, r)| (*slot, r.as_ref())).collect();
        self.splice_many(&changes);
        self.shown = wanted;
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
            .map(|(slot, _)| {
                self.line_lengths[*slot]
                    .iter()
                    .map(|&l| l as usize)
                    .sum::<usize>()
            })
            .sum();
        let mut text = Vec::with_capacity((self.text.len() + new_len).saturating_sub(old_len));
        for family in 0..FAMILIES.len() {
            let section = &self.text[self.families[family].clone()];
            let start = text.len();
            let (mut copied, mut offset, mut next_slot) = (0, 0, 0);
            for &(slot, lines) in changes {
                offset += self.line_lengths[next_slot..slot]
                    .iter()
                    .map(|l| l[family] as usize)
                    .sum::<usize>();
                text.extend_from_slice(&section[copied..offset]);
                let room_lines = lines.map_or("", |l| l.family(family));
                text.extend_from_slice(room_lines.as_bytes());
                offset += self.line_lengths[slot][family] as usize;
                copied = offset;
                next_slot = slot + 1;
                // A room's lines of one family are far below 4 GiB.
                self.line_lengths[slot][family] = room_lines.len() as u32;
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
            aggregates: Mutex::new(Aggregates::default()),
            series: Mutex::new(Series {
                limit: 0,
                configured: rooms.iter().map(|r| r.as_ref().to_owned()).collect(),
                chosen_at: None,
                candidates: Vec::new(),
                chosen: Vec::new(),
            }),
            shown_families: RwLock::new(vec![true; FAMILIES.len()]),
        };
        store.set_rooms(rooms);
        store
    }

    /// Applies the `metrics:` section (at start and on every reload):
    /// `configured` rooms are always shown, the others within `room_series_limit`
    /// (chosen again at the next scrape), families as `metrics.families` says.
    pub fn configure<S: AsRef<str>>(&self, metrics: &MetricsConfig, configured: &[S]) {
        *self.shown_families.write().unwrap_or_else(|p| p.into_inner()) =
            FAMILIES.iter().map(|f| metrics.shows_family(f.name)).collect();
        let mut series = lock(&self.series);
        series.limit = metrics.room_series_limit;
        series.configured = configured.iter().map(|r| r.as_ref().to_owned()).collect();
        series.chosen_at = None;
        let layout = self.layout();
        for shard in &layout.shards {
            lock(shard).configured = 0;
        }
        for room in &series.configured {
            if let Some(&(shard, slot)) = layout.positions.get(room.as_str()) {
                lock(&layout.shards[shard]).configured |= 1 << slot;
            }
        }
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
            .map(|room| room.to_string())
            .collect();
        RoomChanges {
            removed: self.remove_rooms(&gone),
            added: self.add_rooms(rooms),
        }
    }

    /// Gives each room of `rooms` not held yet a place; returns those, in order.
    pub fn add_rooms<S: AsRef<str>>(&self, rooms: &[S]) -> Vec<String> {
        let series = lock(&self.series);
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
            // Until the next choice, a new room that is not configured stays hidden under a limit.
            let configured = series.configured.contains(room);
            let mut shard = lock(&layout.shards[place.0]);
            shard.configured |= u64::from(configured) << place.1;
            shard.shown |= u64::from(configured || series.limit == 0) << place.1;
            drop(shard);
            layout.positions.insert(room.into(), place);
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
                if let Some(old) = shard.rooms[place.1].take() {
                    let mut aggregates = lock(&self.aggregates);
                    let contribution = aggregates.contribution(&old);
                    aggregates.replace(contribution, None);
                }
                shard.splice(place.1, None);
                shard.shown &= !(1 << place.1);
                shard.configured &= !(1 << place.1);
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
        self.update(room_id, |s, _| {
            s.facts.merge(&RoomUpdate::polled(info, seats, sent_ms));
            s.up = s.facts.exists == Some(true);
            s.last_success = Some(now_unix);
            s.polled_ms = s.polled_ms.max(sent_ms);
        });
    }

    /// The poll failed for a reason other than the room being gone: keep the
    /// last data, mark the room down.
    pub fn record_failure(&self, room_id: &str) {
        self.update(room_id, |s, _| s.up = false);
    }

    /// The API said the room does not exist (100004).
    pub fn record_gone(&self, room_id: &str) {
        self.record_gone_at(room_id, unix_now_ms());
    }

    /// 100004 for a request sent at `sent_ms`: the room is gone as of then.
    pub fn record_gone_at(&self, room_id: &str, sent_ms: u64) {
        self.update(room_id, |s, _| {
            s.facts.merge(&RoomUpdate::gone(sent_ms));
            s.up = false;
        });
    }

    /// A callback's change, true as of its `EventTime` (`update.at_ms`).
    pub fn record_callback(&self, room_id: &str, update: &RoomUpdate) {
        self.update(room_id, |s, aggregates| apply_callback(s, update, aggregates));
    }

    /// A batch of callbacks, in order: each shard is re-rendered once.
    pub fn record_callbacks(&self, updates: &[(String, RoomUpdate)]) {
        let layout = self.layout();
        let mut by_shard: std::collections::BTreeMap<usize, Vec<(usize, &str, &RoomUpdate)>> =
            Default::default();
        for (room, update) in updates {
            if let Some(&(shard, slot)) = layout.positions.get(room.as_str()) {
                by_shard.entry(shard).or_default().push((slot, room, update));
            }
        }
        for (shard, changes) in by_shard {
            let mut shard = lock(&layout.shards[shard]);
            let mut slots = std::collections::BTreeSet::new();
            let mut aggregates = lock(&self.aggregates);
            for (slot, room, update) in changes {
                let snapshot = shard.rooms[slot].get_or_insert_with(|| RoomSnapshot {
                    room_id: (*room).into(),
                    ..RoomSnapshot::default()
                });
                let old = aggregates.contribution(snapshot);
                apply_callback(snapshot, update, &mut aggregates);
                let new = aggregates.contribution(snapshot);
                aggregates.replace(old, new);
                if shard.is_shown(slot) {
                    slots.insert(slot);
                }
            }
            drop(aggregates);
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
        self.update(room_id, |s, _| {
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
        // Kept with the aggregates: the poller asks on every reschedule.
        lock(&self.aggregates).seat_rooms() as usize
    }

    /// Rooms the store holds.
    pub fn capacity(&self) -> usize {
        self.layout().positions.len()
    }

    /// Every room family `metrics.families` lets through, HELP/TYPE once
    /// then each shard's lines, as pieces to send in order (slices of the
    /// shards' texts, nothing copied). Each shard is
    /// read under its lock once, so a room is never half updated.
    pub fn scrape(&self) -> Vec<Bytes> {
        self.scrape_at(Instant::now())
    }

    /// [`Store::scrape`] at `now`, which decides whether the shown rooms are chosen again.
    pub fn scrape_at(&self, now: Instant) -> Vec<Bytes> {
        self.choose_shown(now);
        let shards: Vec<(Bytes, Vec<Range<usize>>)> = self
            .layout()
            .shards
            .iter()
            .map(|s| {
                let shard = lock(s);
                (shard.text.clone(), shard.families.clone())
            })
            .collect();
        let shown = self.shown_families.read().unwrap_or_else(|p| p.into_inner());
        let pieces = in_family_order(
            &shards,
            |(text, families), family| match shown[family] {
                true => text.slice(families[family].clone()),
                false => Bytes::new(),
            },
            Bytes::from_static,
        );
        drop(shown);
        pieces
    }

    /// The aggregates over every room (shown or not), HELP/TYPE included:
    /// served after the room families, never filtered.
    pub fn aggregates(&self) -> Bytes {
        let mut text = String::with_capacity(4096);
        lock(&self.aggregates).render(&mut text);
        Bytes::from(text)
    }

    /// Under a series limit, and when the last choice is older than
    /// [`RECHOOSE_EVERY`]: shows the configured rooms and the `limit` fullest
    /// others, hides the rest. A partial selection (linear in the rooms), in
    /// reused buffers.
    fn choose_shown(&self, now: Instant) {
        let mut series = lock(&self.series);
        let fresh = series
            .chosen_at
            .is_some_and(|at| series.limit == 0 || now.saturating_duration_since(at) < RECHOOSE_EVERY);
        if fresh {
            return;
        }
        series.chosen_at = Some(now);
        let layout = self.layout();
        let Series {
            limit,
            candidates,
            chosen,
            ..
        } = &mut *series;
        chosen.clear();
        if *limit == 0 {
            chosen.resize(layout.shards.len(), u64::MAX);
        } else {
            chosen.resize(layout.shards.len(), 0);
            candidates.clear();
            for (index, shard) in layout.shards.iter().enumerate() {
                let shard = lock(shard);
                for (slot, room) in shard.rooms.iter().enumerate() {
                    if let Some(room) = room.as_ref().filter(|_| shard.configured & 1 << slot == 0) {
                        candidates.push(Candidate::of(room, index, slot));
                    }
                }
            }
            if candidates.len() > *limit {
                candidates.select_nth_unstable_by(*limit, Candidate::fuller);
                candidates.truncate(*limit);
            }
            for c in candidates.iter() {
                chosen[c.shard as usize] |= 1 << c.slot;
            }
        }
        for (shard, chosen) in layout.shards.iter().zip(chosen.iter()) {
            let mut shard = lock(shard);
            let wanted = *chosen | shard.configured;
            shard.show(wanted);
        }
    }

    /// The text of [`Store::scrape`] in one buffer.
    pub fn render_into(&self, out: &mut Vec<u8>) {
        for piece in self.scrape() {
            out.extend_from_slice(&piece);
        }
    }

    /// Changes one room, moves its contribution to the aggregates, and (when
    /// it is shown) re-renders it and splices its lines in under the shard's lock.
    fn update(&self, room_id: &str, change: impl FnOnce(&mut RoomSnapshot, &mut Aggregates)) {
        let layout = self.layout();
        let Some(&(shard, slot)) = layout.positions.get(room_id) else {
            tracing::debug!(room_id, "not a room of the set (any more); not stored");
            return;
        };
        let mut shard = lock(&layout.shards[shard]);
        let mut snapshot = shard.rooms[slot].take().unwrap_or_else(|| RoomSnapshot {
            room_id: room_id.into(),
            ..RoomSnapshot::default()
        });
        let mut aggregates = lock(&self.aggregates);
        let old = aggregates.contribution(&snapshot);
        change(&mut snapshot, &mut aggregates);
        let new = aggregates.contribution(&snapshot);
        aggregates.replace(old, new);
        drop(aggregates);
        if shard.is_shown(slot) {
            let rendered = render_room(&snapshot);
            shard.splice(slot, Some(&rendered));
        }
        shard.rooms[slot] = Some(snapshot);
    }

    fn layout(&self) -> RwLockReadGuard<'_, Layout> {
        // A panic while holding the lock leaves a consistent layout: set_rooms only adds and removes whole entries.
        self.layout.read().unwrap_or_else(|p| p.into_inner())
    }
}

/// Applies a callback; a destroy of a live room whose creation is known adds its lifetime.
fn apply_callback(s: &mut RoomSnapshot, update: &RoomUpdate, aggregates: &mut Aggregates) {
    let was_gone = s.facts.exists == Some(false);
    s.facts.merge(update);
    if s.facts.exists == Some(false) {
        s.up = false;
        if !was_gone {
            if let Some(seconds) = lifetime(s, update.at_ms) {
                aggregates.observe_lifetime(seconds);
            }
        }
    }
    let at = update.at_ms as f64 / 1000.0;
    s.last_callback = Some(s.last_callback.map_or(at, |t| t.max(at)));
}

fn lock<T>(shard: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding a lock leaves consistent data: every update is a whole-value store.
    shard.lock().unwrap_or_else(|p| p.into_inner())
}

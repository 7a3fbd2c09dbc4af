//! The aggregates over the whole room set (rooms by type and status, members
//! by type, occupancy and member-count histograms, room lifetimes), kept
//! exact incrementally: the store takes a room's old contribution out and
//! puts its new one in on every change, so a scrape never scans the rooms.

use std::fmt::Write as _;

use crate::api::model::ROOM_STATUSES;
use crate::exposition::{escape, RoomSnapshot};
use crate::room::Field;

/// Upper bounds of `roomengine_room_occupancy_ratio` (members ÷ max).
pub const OCCUPANCY_BUCKETS: [f64; 5] = [0.5, 0.8, 0.9, 0.95, 1.0];
/// Upper bounds of `roomengine_room_members_count`.
pub const MEMBER_BUCKETS: [u64; 11] = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 5000];
/// Upper bounds of `roomengine_room_lifetime_seconds`: 1 minute to 1 day.
pub const LIFETIME_BUCKETS: [u64; 10] = [60, 300, 900, 1800, 3600, 7200, 14400, 28800, 43200, 86400];

/// Distinct `room_type` labels kept; more are folded into `other`, so an API
/// sending odd values cannot grow the series.
const MAX_ROOM_TYPES: usize = 16;
/// The `room_type` of a room whose RoomType is not known (or empty).
const UNKNOWN: &str = "unknown";
/// The `status` label values: the RoomStatus state set, then one for a status not known (or not one of them).
const STATUS_LABELS: [&str; 4] = [ROOM_STATUSES[0], ROOM_STATUSES[1], ROOM_STATUSES[2], UNKNOWN];
/// Fixed point of the occupancy sum, so taking a room out restores the sum exactly.
const RATIO_SCALE: f64 = 1e9;

/// What one counted room adds to the aggregates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Contribution {
    room_type: usize,
    status: usize,
    members: u64,
    max: u64,
    /// Its info says it uses seats (a seat call per pass).
    seats: bool,
}

/// Counts in non-cumulative bins (the last is +Inf), with their sum.
#[derive(Debug, Clone)]
struct Bins<const N: usize> {
    counts: [u64; N],
    sum: i128,
}

impl<const N: usize> Default for Bins<N> {
    fn default() -> Self {
        Bins {
            counts: [0; N],
            sum: 0,
        }
    }
}

impl<const N: usize> Bins<N> {
    fn add(&mut self, bin: usize, value: i128, sign: i64) {
        self.counts[bin] = self.counts[bin].wrapping_add_signed(sign);
        self.sum += value * i128::from(sign);
    }

    /// `_bucket` (cumulative), `_sum` and `_count` lines; `sum` renders the sum.
    fn render(&self, out: &mut String, name: &str, bounds: &[String], sum: impl std::fmt::Display) {
        let mut cumulative = 0;
        for (count, le) in self
            .counts
            .iter()
            .zip(bounds.iter().map(String::as_str).chain(["+Inf"]))
        {
            cumulative += count;
            let _ = writeln!(out, "{name}_bucket{{le=\"{le}\"}} {cumulative}");
        }
        let _ = writeln!(out, "{name}_sum {sum}");
        let _ = writeln!(out, "{name}_count {cumulative}");
    }
}

/// The aggregates of every counted room, and the lifetimes observed.
#[derive(Debug, Default)]
pub struct Aggregates {
    /// `room_type` label values, in the order first seen.
    types: Vec<String>,
    /// `rooms[type][status]`.
    rooms: Vec<[u64; STATUS_LABELS.len()]>,
    members: Vec<u64>,
    without_capacity: u64,
    /// Rooms with a capacity and at least that many members.
    full: u64,
    occupancy: Bins<6>,
    member_counts: Bins<12>,
    lifetimes: Bins<11>,
    seat_rooms: u64,
}

impl Aggregates {
    /// What `s` adds: a room counts once some of its info is known, until it is destroyed.
    pub fn contribution(&mut self, s: &RoomSnapshot) -> Option<Contribution> {
        let facts = &s.facts;
        if facts.exists == Some(false) || !facts.any_info() {
            return None;
        }
        let room_type = match facts.info.room_type.as_str() {
            t if t.is_empty() || !facts.known(Field::RoomType) => UNKNOWN,
            t => t,
        };
        let status = STATUS_LABELS
            .iter()
            .position(|v| facts.known(Field::Status) && *v == facts.info.room_status)
            .unwrap_or(STATUS_LABELS.len() - 1);
        Some(Contribution {
            room_type: self.type_index(room_type),
            status,
            members: facts.info.member_count,
            max: facts.info.max_member_count,
            seats: facts.info.is_seat_enabled,
        })
    }

    /// Replaces a room's contribution `old` with `new`.
    pub fn replace(&mut self, old: Option<Contribution>, new: Option<Contribution>) {
        if old != new {
            old.into_iter().for_each(|c| self.apply(c, -1));
            new.into_iter().for_each(|c| self.apply(c, 1));
        }
    }

    /// Counted rooms whose info says they use seats.
    pub fn seat_rooms(&self) -> u64 {
        self.seat_rooms
    }

    /// A room lived `seconds` from its creation to its destroy callback.
    pub fn observe_lifetime(&mut self, seconds: u64) {
        let bin = LIFETIME_BUCKETS.iter().position(|&le| seconds <= le);
        self.lifetimes
            .add(bin.unwrap_or(LIFETIME_BUCKETS.len()), i128::from(seconds), 1);
    }

    fn type_index(&mut self, room_type: &str) -> usize {
        if let Some(i) = self.types.iter().position(|t| t == room_type) {
            return i;
        }
        let label = if self.types.len() < MAX_ROOM_TYPES {
            room_type
        } else {
            "other"
        };
        if let Some(i) = self.types.iter().position(|t| t == label) {
            return i;
        }
        self.types.push(label.to_owned());
        self.rooms.push([0; STATUS_LABELS.len()]);
        self.members.push(0);
        self.types.len() - 1
    }

    fn apply(&mut self, c: Contribution, sign: i64) {
        let row = &mut self.rooms[c.room_type][c.status];
        *row = row.wrapping_add_signed(sign);
        let members = &mut self.members[c.room_type];
        *members = members.wrapping_add_signed(c.members as i64 * sign);
        if c.seats {
            self.seat_rooms = self.seat_rooms.wrapping_add_signed(sign);
        }
        let bin = MEMBER_BUCKETS.iter().position(|&le| c.members <= le);
        self.member_counts
            .add(bin.unwrap_or(MEMBER_BUCKETS.len()), i128::from(c.members), sign);
        if c.max == 0 {
            self.without_capacity = self.without_capacity.wrapping_add_signed(sign);
            return;
        }
        if c.members >= c.max {
            self.full = self.full.wrapping_add_signed(sign);
        }
        let ratio = c.members as f64 / c.max as f64;
        let bin = OCCUPANCY_BUCKETS.iter().position(|&le| ratio <= le);
        let fixed = (ratio * RATIO_SCALE).round() as i128;
        self.occupancy
            .add(bin.unwrap_or(OCCUPANCY_BUCKETS.len()), fixed, sign);
    }

    /// The aggregate families in the text format, HELP and TYPE included.
    pub fn render(&self, out: &mut String) {
        const EVERY: &str =
            "every room of the set counts, whatever metrics.room_series_limit; destroyed rooms do not";
        if !self.types.is_empty() {
            let _ = writeln!(out, "# HELP roomengine_rooms Rooms by RoomType and RoomStatus ({EVERY}).\n# TYPE roomengine_rooms gauge");
            for (room_type, row) in self.types.iter().zip(&self.rooms) {
                for (status, count) in STATUS_LABELS.iter().zip(row) {
                    // The state set's values always; `unknown` only while some room has it.
                    if *status != UNKNOWN || *count > 0 {
                        let _ = writeln!(
                            out,
                            "roomengine_rooms{{room_type=\"{}\",status=\"{status}\"}} {count}",
                            escape(room_type)
                        );
                    }
                }
            }
            let _ = writeln!(out, "# HELP roomengine_members Members of all rooms, by RoomType ({EVERY}).\n# TYPE roomengine_members gauge");
            for (room_type, members) in self.types.iter().zip(&self.members) {
                let _ = writeln!(
                    out,
                    "roomengine_members{{room_type=\"{}\"}} {members}",
                    escape(room_type)
                );
            }
        }
        let _ = writeln!(out, "# HELP roomengine_rooms_without_capacity Rooms whose MaxMemberCount is 0 or unknown, left out of roomengine_room_occupancy_ratio ({EVERY}).\n# TYPE roomengine_rooms_without_capacity gauge\nroomengine_rooms_without_capacity {}", self.without_capacity);
        let _ = writeln!(out, "# HELP roomengine_rooms_full Rooms with MemberCount >= MaxMemberCount > 0, the full rooms ({EVERY}).\n# TYPE roomengine_rooms_full gauge\nroomengine_rooms_full {}", self.full);
        let _ = writeln!(out, "# HELP roomengine_room_occupancy_ratio Rooms by MemberCount / MaxMemberCount, a snapshot of the set ({EVERY}).\n# TYPE roomengine_room_occupancy_ratio histogram");
        let bounds: Vec<String> = OCCUPANCY_BUCKETS.iter().map(f64::to_string).collect();
        let sum = self.occupancy.sum as f64 / RATIO_SCALE;
        self.occupancy
            .render(out, "roomengine_room_occupancy_ratio", &bounds, sum);
        let _ = writeln!(out, "# HELP roomengine_room_members_count Rooms by MemberCount, a snapshot of the set ({EVERY}).\n# TYPE roomengine_room_members_count histogram");
        let bounds: Vec<String> = MEMBER_BUCKETS.iter().map(u64::to_string).collect();
        self.member_counts.render(
            out,
            "roomengine_room_members_count",
            &bounds,
            self.member_counts.sum,
        );
        let _ = writeln!(out, "# HELP roomengine_room_lifetime_seconds Room lifetimes from creation (CreateTime, or the create callback's EventTime) to the destroy callback.\n# TYPE roomengine_room_lifetime_seconds histogram");
        let bounds: Vec<String> = LIFETIME_BUCKETS.iter().map(u64::to_string).collect();
        self.lifetimes.render(
            out,
            "roomengine_room_lifetime_seconds",
            &bounds,
            self.lifetimes.sum,
        );
    }
}

/// Seconds from `s`'s creation to `destroyed_ms`, when its creation is known:
/// CreateTime, or else the instant the create callback stamped it with.
pub fn lifetime(s: &RoomSnapshot, destroyed_ms: u64) -> Option<u64> {
    let facts = &s.facts;
    if !facts.known(Field::CreateTime) {
        return None;
    }
    let created = match facts.info.create_time {
        0 => facts.stamps[Field::CreateTime as usize] / 1000,
        t => t,
    };
    (destroyed_ms / 1000).checked_sub(created)
}

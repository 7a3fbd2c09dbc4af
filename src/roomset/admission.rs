//! Which discovered rooms the room set takes: the room ID filters
//! (`callbacks.room_ids`), the cap (`callbacks.max_rooms`) and the clock-skew
//! clamp on `EventTime` (`callbacks.max_clock_skew`). Configured rooms are
//! never filtered, counted or refused: the list is the user's promise.

use std::time::{Duration, Instant};

use regex::RegexSet;

use super::backend::Record;
use crate::config::RoomBounds;

/// Why a callback's room was not taken into the set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The set holds `max_rooms` live discovered rooms.
    RoomLimit,
    /// `room_ids.deny` matched, or `room_ids.allow` is set and did not.
    Filtered,
}

impl Refusal {
    /// Every reason, for the counter's label values.
    pub const ALL: [Refusal; 2] = [Refusal::RoomLimit, Refusal::Filtered];

    pub fn label(self) -> &'static str {
        match self {
            Refusal::RoomLimit => "room_limit",
            Refusal::Filtered => "filtered",
        }
    }
}

/// Room ID patterns, each matching the whole ID.
#[derive(Debug, Clone, Default)]
pub struct RoomIdFilter {
    allow: Option<RegexSet>,
    deny: Option<RegexSet>,
}

impl RoomIdFilter {
    /// Compiles `allow` and `deny` (empty: no such list); config has
    /// checked every pattern, so an error here names the list only.
    pub fn new(allow: &[String], deny: &[String]) -> Result<RoomIdFilter, String> {
        Ok(RoomIdFilter {
            allow: compile("allow", allow)?,
            deny: compile("deny", deny)?,
        })
    }

    /// Whether a discovered room with this ID may be taken; deny wins.
    pub fn admits(&self, room_id: &str) -> bool {
        let denied = self.deny.as_ref().is_some_and(|d| d.is_match(room_id));
        let allowed = self.allow.as_ref().is_none_or(|a| a.is_match(room_id));
        allowed && !denied
    }
}

fn compile(list: &str, patterns: &[String]) -> Result<Option<RegexSet>, String> {
    if patterns.is_empty() {
        return Ok(None);
    }
    // Anchored, so a pattern matches the whole ID (as Prometheus' relabel regexes do).
    RegexSet::new(patterns.iter().map(|p| format!("^(?:{p})$")))
        .map(Some)
        .map_err(|e| format!("callbacks.room_ids.{list}: {e}"))
}

/// The admission rules, as configured.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Live discovered rooms the set holds at most (0: none are taken).
    pub max_rooms: usize,
    pub room_ids: RoomIdFilter,
    /// How far ahead of the receiver's clock an `EventTime` may be.
    pub max_clock_skew: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        let bounds = RoomBounds::default();
        Limits {
            max_rooms: bounds.max_rooms,
            room_ids: RoomIdFilter::default(),
            max_clock_skew: bounds.max_clock_skew,
        }
    }
}

impl Limits {
    /// The rules of `callbacks.max_rooms`, `room_ids` and `max_clock_skew`.
    pub fn from_config(bounds: &RoomBounds) -> Result<Limits, String> {
        Ok(Limits {
            max_rooms: bounds.max_rooms,
            room_ids: RoomIdFilter::new(&bounds.allow, &bounds.deny)?,
            max_clock_skew: bounds.max_clock_skew,
        })
    }

    /// Whether a discovered room may join a set holding `live` live
    /// discovered rooms.
    pub fn admit(&self, room_id: &str, live: usize) -> Result<(), Refusal> {
        if !self.room_ids.admits(room_id) {
            return Err(Refusal::Filtered);
        }
        if live >= self.max_rooms {
            return Err(Refusal::RoomLimit);
        }
        Ok(())
    }

    /// An instant (ms) no later than `now_ms` plus the allowed skew: one
    /// further ahead is taken as `now_ms`. Whether it was clamped.
    pub fn clamp(&self, at_ms: u64, now_ms: u64) -> (u64, bool) {
        if at_ms > now_ms.saturating_add(self.max_clock_skew.as_millis() as u64) {
            (now_ms, true)
        } else {
            (at_ms, false)
        }
    }

    /// Clamps every instant of a kept record (from an older version, or
    /// another replica) the same way; whether any was.
    pub fn clamp_record(&self, record: &mut Record, now_ms: u64) -> bool {
        let mut clamped = false;
        for stamp in record
            .facts
            .stamps
            .iter_mut()
            .chain([&mut record.last_callback_ms])
        {
            let (at, was) = self.clamp(*stamp, now_ms);
            *stamp = at;
            clamped |= was;
        }
        clamped
    }
}

/// Refused rooms are logged at most once per `every`, with the count since
/// the last line, so a flood of creates cannot flood the log.
pub struct RefusalLog {
    every: Duration,
    last: Option<Instant>,
    since: [u64; Refusal::ALL.len()],
}

impl RefusalLog {
    pub fn new(every: Duration) -> RefusalLog {
        RefusalLog {
            every,
            last: None,
            since: [0; Refusal::ALL.len()],
        }
    }

    /// Counts one refusal; returns the counts to log when a line is due.
    pub fn refused(&mut self, why: Refusal, now: Instant) -> Option<[u64; Refusal::ALL.len()]> {
        self.since[why as usize] += 1;
        let due = self
            .last
            .is_none_or(|last| now.duration_since(last) >= self.every);
        if !due {
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.since))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(max_rooms: usize, allow: &[&str], deny: &[&str]) -> Limits {
        let owned = |l: &[&str]| l.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        Limits {
            max_rooms,
            room_ids: RoomIdFilter::new(&owned(allow), &owned(deny)).expect("valid"),
            ..Limits::default()
        }
    }

    #[test]
    fn patterns_match_the_whole_id_and_deny_wins() {
        let l = limits(10, &["meet-.*", "class-[0-9]+"], &["meet-test.*"]);
        assert_eq!(l.admit("meet-1", 0), Ok(()));
        assert_eq!(l.admit("class-12", 0), Ok(()));
        assert_eq!(l.admit("class-12x", 0), Err(Refusal::Filtered), "full match");
        assert_eq!(l.admit("xmeet-1", 0), Err(Refusal::Filtered), "full match");
        assert_eq!(l.admit("meet-test-3", 0), Err(Refusal::Filtered), "deny wins");
        let deny_only = limits(10, &[], &["tmp-.*"]);
        assert_eq!(deny_only.admit("anything", 0), Ok(()));
        assert_eq!(deny_only.admit("tmp-1", 0), Err(Refusal::Filtered));
    }

    #[test]
    fn the_cap_counts_live_discovered_rooms_and_zero_refuses_all() {
        let l = limits(2, &[], &[]);
        assert_eq!(l.admit("a", 1), Ok(()));
        assert_eq!(l.admit("a", 2), Err(Refusal::RoomLimit));
        assert_eq!(limits(0, &[], &[]).admit("a", 0), Err(Refusal::RoomLimit));
        // A filtered room is filtered, whatever the count.
        assert_eq!(limits(0, &[], &["a"]).admit("a", 0), Err(Refusal::Filtered));
    }

    #[test]
    fn event_times_beyond_the_skew_are_taken_as_now() {
        let l = Limits::default();
        let now = 1_750_000_000_000;
        assert_eq!(l.clamp(now + 299_000, now), (now + 299_000, false));
        assert_eq!(l.clamp(now + 301_000, now), (now, true));
        assert_eq!(l.clamp(now + 10 * 365 * 86_400_000, now), (now, true));
        assert_eq!(l.clamp(now - 5_000, now), (now - 5_000, false));
    }

    #[test]
    fn refusals_are_logged_once_a_minute_with_the_count_since() {
        let mut log = RefusalLog::new(Duration::from_secs(60));
        let t0 = Instant::now();
        assert_eq!(log.refused(Refusal::RoomLimit, t0), Some([1, 0]));
        assert_eq!(log.refused(Refusal::RoomLimit, t0 + Duration::from_secs(1)), None);
        assert_eq!(log.refused(Refusal::Filtered, t0 + Duration::from_secs(59)), None);
        assert_eq!(
            log.refused(Refusal::RoomLimit, t0 + Duration::from_secs(60)),
            Some([2, 1])
        );
    }
}

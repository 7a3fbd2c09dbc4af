//! What the simulator has seen, for `/sim/metrics` and `/sim/stats`: calls
//! received per API, answers per API and code, the one-second sliding window
//! that both enforces the rate limit (60011) and records the busiest second,
//! and a resettable measurement period with the spread of intervals between
//! successive polls of the same room, all timed at arrival on the server;
//! and the instant each room reached its MaxMemberCount (`/sim/fills`), for
//! measuring how soon a client sees it; and, when asked for, a log of every
//! call (arrival, the client's source port, API, room, answer) so that a
//! benchmark can tell apart several clients sharing one app (`/sim/calls`).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fmt::Write;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use compact_str::CompactString;
use serde::Serialize;

const WINDOW: Duration = Duration::from_secs(1);
/// Rooms whose last poll is remembered: bounds memory whatever IDs clients send.
const MAX_TRACKED_ROOMS: usize = 200_000;
/// Fills remembered; later ones are dropped (a run of hours at 10,000 rooms fills far fewer).
const MAX_FILLS: usize = 1_000_000;

/// Counters behind one lock: every update is a few map operations, never held
/// across an `.await`, so a std mutex is cheaper than an async one.
#[derive(Debug, Default)]
pub struct Stats {
    inner: Mutex<Counters>,
    /// Calls the log holds at most; 0: no log.
    call_log_capacity: usize,
}

#[derive(Debug, Default)]
struct Counters {
    calls: BTreeMap<&'static str, u64>,
    answers: BTreeMap<(&'static str, String), u64>,
    /// Arrival times of the calls received in the last second, oldest first.
    window: VecDeque<Instant>,
    /// The most calls ever inside one second.
    max_in_window: usize,
    /// Arrival of each room's last get_room_info call (kept across resets, so
    /// the first poll after a reset still yields an interval).
    last_poll: HashMap<String, Instant>,
    /// Calls received and not yet answered, and the most at once since
    /// [`Stats::take_peak_in_flight`] last asked.
    in_flight: usize,
    peak_in_flight: usize,
    period: Period,
    fills: Vec<Fill>,
    /// Every call answered since the log was last taken, oldest answer
    /// first, at most [`Stats::call_log_capacity`]; later ones are counted in
    /// `call_log_dropped` instead.
    call_log: Vec<CallRecord>,
    call_log_dropped: u64,
}

/// One call in the call log ([`Stats::take_call_log`]): when it arrived, who
/// sent it (the TCP source port tells apart clients on one host), what it
/// asked for and how it was answered.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CallRecord {
    #[serde(skip)]
    pub at: Instant,
    /// The same instant as Unix seconds, for clients in other processes.
    pub at_unix: f64,
    /// The client's TCP port (0 when the server did not know it).
    pub peer_port: u16,
    /// `get_room_info`, `get_seat_list`, ... as in `/sim/metrics`.
    pub api: &'static str,
    /// The `RoomId` of the body (top level, else in `RoomInfo`), also when
    /// the call was rejected before its body was checked.
    pub room_id: Option<CompactString>,
    /// The answer: an ErrorCode (`0`, `60011`, ...), `http_502` or `malformed`.
    pub code: CompactString,
}

/// Who sent an answered call and about which room, for the call log.
#[derive(Debug, Clone, Copy, Default)]
pub struct Caller<'a> {
    pub peer_port: u16,
    pub room_id: Option<&'a str>,
}

/// A room's MemberCount reached its MaxMemberCount (from below) at this tick.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Fill {
    pub room_id: String,
    #[serde(skip)]
    pub at: Instant,
    /// The same instant as Unix seconds, for clients in other processes.
    pub at_unix: f64,
}

/// What happened since the last [`Stats::reset_period`] (or the start).
#[derive(Debug)]
struct Period {
    started: Instant,
    calls: u64,
    max_in_window: usize,
    answers: BTreeMap<String, u64>,
    /// Intervals between successive polls of one room, in whole
    /// milliseconds → how many: exact to 1 ms, and bounded in size by the
    /// spread of the intervals rather than by their number.
    intervals_ms: BTreeMap<u64, u64>,
}

impl Default for Period {
    fn default() -> Self {
        Period {
            started: Instant::now(),
            calls: 0,
            max_in_window: 0,
            answers: BTreeMap::new(),
            intervals_ms: BTreeMap::new(),
        }
    }
}

/// One call as the server saw it arrive.
#[derive(Debug, Clone, Copy)]
pub struct Arrival {
    pub at: Instant,
    /// `at` as Unix seconds.
    pub at_unix: f64,
    /// Calls that arrived in the second ending with this one, itself included.
    pub in_window: usize,
}

/// The measurement period as `GET /sim/stats` shows it (JSON).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PeriodStats {
    /// Seconds since the period started.
    pub seconds: f64,
    /// Calls received (every API, rejected ones included).
    pub calls: u64,
    pub calls_per_second: f64,
    /// The most calls that arrived inside any one-second sliding window.
    pub max_calls_in_one_second: u64,
    /// Answers given, by ErrorCode (or http_502, malformed), every API.
    pub answers: BTreeMap<String, u64>,
    /// Intervals between successive get_room_info calls for the same room.
    pub poll_intervals: Spread,
}

/// Nearest-rank percentiles of a set of intervals, in seconds (0 when empty).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Spread {
    pub count: u64,
    pub p50: f64,
    pub p99: f64,
    pub min: f64,
    pub max: f64,
}

impl Spread {
    fn of(histogram: &BTreeMap<u64, u64>) -> Spread {
        let count: u64 = histogram.values().sum();
        let rank = |q: f64| {
            let target = ((q * count as f64).ceil() as u64).max(1);
            let mut seen = 0;
            for (&ms, &n) in histogram {
                seen += n;
                if seen >= target {
                    return ms as f64 / 1e3;
                }
            }
            0.0
        };
        Spread {
            count,
            p50: rank(0.50),
            p99: rank(0.99),
            min: histogram.keys().next().map_or(0.0, |&ms| ms as f64 / 1e3),
            max: histogram.keys().next_back().map_or(0.0, |&ms| ms as f64 / 1e3),
        }
    }
}

impl Stats {
    /// Counters with a call log of at most `capacity` calls (0: no log).
    pub fn with_call_log(capacity: usize) -> Stats {
        Stats {
            call_log_capacity: capacity,
            ..Stats::default()
        }
    }

    /// Whether calls are logged.
    pub fn logs_calls(&self) -> bool {
        self.call_log_capacity > 0
    }

    /// Counts a call to `api` as received now, rejected or not.
    pub fn record_call(&self, api: &'static str) -> Arrival {
        let mut c = self.lock();
        // Taken under the lock, so the window stays in arrival order.
        let now = Instant::now();
        let at_unix = crate::clock::unix_now_f64();
        *c.calls.entry(api).or_default() += 1;
        while c.window.front().is_some_and(|&t| now.duration_since(t) >= WINDOW) {
            c.window.pop_front();
        }
        c.window.push_back(now);
        let in_window = c.window.len();
        c.max_in_window = c.max_in_window.max(in_window);
        c.period.calls += 1;
        c.period.max_in_window = c.period.max_in_window.max(in_window);
        Arrival {
            at: now,
            at_unix,
            in_window,
        }
    }

    /// A call is being handled until the guard is dropped: a client's open
    /// connections can then be set against the calls it really had in flight.
    pub fn begin_call(&self) -> InFlight<'_> {
        let mut c = self.lock();
        c.in_flight += 1;
        c.peak_in_flight = c.peak_in_flight.max(c.in_flight);
        InFlight { stats: self }
    }

    /// Calls received and not answered yet.
    pub fn in_flight(&self) -> usize {
        self.lock().in_flight
    }

    /// The most calls in flight at once since the previous call (or the
    /// start); the next peak starts from those in flight now.
    pub fn take_peak_in_flight(&self) -> usize {
        let mut c = self.lock();
        let now = c.in_flight;
        std::mem::replace(&mut c.peak_in_flight, now)
    }

    /// Counts the answer given to the call of `api` that arrived at
    /// `arrival` from `caller`: an ErrorCode, `http_502` or `malformed`; and
    /// logs the call when the log is on and not full.
    pub fn record_answer(&self, api: &'static str, code: &str, arrival: &Arrival, caller: Caller<'_>) {
        let mut c = self.lock();
        *c.answers.entry((api, code.to_owned())).or_default() += 1;
        *c.period.answers.entry(code.to_owned()).or_default() += 1;
        if c.call_log.len() < self.call_log_capacity {
            c.call_log.push(CallRecord {
                at: arrival.at,
                at_unix: arrival.at_unix,
                peer_port: caller.peer_port,
                api,
                room_id: caller.room_id.map(CompactString::from),
                code: CompactString::from(code),
            });
        } else if self.logs_calls() {
            c.call_log_dropped += 1;
        }
    }

    /// The calls logged since the last take (oldest answer first; sort by
    /// `at` for arrival order), emptying the log.
    pub fn take_call_log(&self) -> Vec<CallRecord> {
        std::mem::take(&mut self.lock().call_log)
    }

    /// The calls logged since the last take, the log left as it is.
    pub fn call_log(&self) -> Vec<CallRecord> {
        self.lock().call_log.clone()
    }

    /// Calls not logged because the log was full (since the start).
    pub fn call_log_dropped(&self) -> u64 {
        self.lock().call_log_dropped
    }

    /// A get_room_info call for `room_id` (accepted by the checks) arrived `at`:
    /// records the interval since that room's previous one.
    pub fn record_poll(&self, room_id: &str, at: Instant) {
        let mut c = self.lock();
        let previous = match c.last_poll.get_mut(room_id) {
            Some(last) => Some(std::mem::replace(last, at)),
            None => {
                if c.last_poll.len() < MAX_TRACKED_ROOMS {
                    c.last_poll.insert(room_id.to_owned(), at);
                }
                None
            }
        };
        if let Some(previous) = previous {
            let ms = at.saturating_duration_since(previous).as_millis() as u64;
            *c.period.intervals_ms.entry(ms).or_default() += 1;
        }
    }

    /// `rooms` reached their MaxMemberCount now.
    pub fn record_fills(&self, rooms: Vec<String>) {
        if rooms.is_empty() {
            return;
        }
        let at = Instant::now();
        let at_unix = crate::clock::unix_now_f64();
        let mut c = self.lock();
        let room_left = MAX_FILLS.saturating_sub(c.fills.len());
        c.fills.extend(
            rooms
                .into_iter()
                .take(room_left)
                .map(|room_id| Fill { room_id, at, at_unix }),
        );
    }

    /// Every fill so far, oldest first.
    pub fn fills(&self) -> Vec<Fill> {
        self.lock().fills.clone()
    }

    /// Starts a new measurement period (the rate limiter's window is untouched).
    pub fn reset_period(&self) {
        let mut c = self.lock();
        c.period = Period::default();
    }

    /// The measurement period so far.
    pub fn period(&self) -> PeriodStats {
        let c = self.lock();
        let p = &c.period;
        let seconds = p.started.elapsed().as_secs_f64();
        PeriodStats {
            seconds,
            calls: p.calls,
            calls_per_second: if seconds > 0.0 {
                p.calls as f64 / seconds
            } else {
                0.0
            },
            max_calls_in_one_second: p.max_in_window as u64,
            answers: p.answers.clone(),
            poll_intervals: Spread::of(&p.intervals_ms),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Counters> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn calls(&self, api: &str) -> u64 {
        let c = self.lock();
        c.calls.get(api).copied().unwrap_or(0)
    }

    pub fn max_calls_per_second(&self) -> u64 {
        let c = self.lock();
        c.max_in_window as u64
    }

    /// The Prometheus text exposition of every counter, plus the room count.
    pub fn render(&self, rooms: usize) -> String {
        let c = self.lock();
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = writeln!(
            out,
            "# HELP roomengine_sim_calls_total Room Engine API calls received, rejected ones included.\n\
             # TYPE roomengine_sim_calls_total counter"
        );
        for (api, n) in &c.calls {
            let _ = writeln!(out, "roomengine_sim_calls_total{{api=\"{api}\"}} {n}");
        }
        let _ = writeln!(
            out,
            "# HELP roomengine_sim_answers_total Answers given, by API and ErrorCode (or http_502, malformed).\n\
             # TYPE roomengine_sim_answers_total counter"
        );
        for ((api, code), n) in &c.answers {
            let _ = writeln!(
                out,
                "roomengine_sim_answers_total{{api=\"{api}\",code=\"{code}\"}} {n}"
            );
        }
        let _ = writeln!(
            out,
            "# HELP roomengine_sim_max_calls_per_second The most calls received in any one-second sliding window since start.\n\
             # TYPE roomengine_sim_max_calls_per_second gauge\n\
             roomengine_sim_max_calls_per_second {}",
            c.max_in_window
        );
        let _ = writeln!(
            out,
            "# HELP roomengine_sim_rooms Rooms that exist now.\n\
             # TYPE roomengine_sim_rooms gauge\n\
             roomengine_sim_rooms {rooms}"
        );
        out
    }
}

/// One call being handled; see [`Stats::begin_call`].
pub struct InFlight<'a> {
    stats: &'a Stats,
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        let mut c = self.stats.lock();
        c.in_flight = c.in_flight.saturating_sub(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_counts_calls_of_the_last_second_only() {
        let stats = Stats::default();
        assert_eq!(stats.record_call("get_room_info").in_window, 1);
        assert_eq!(stats.record_call("get_seat_list").in_window, 2);
        std::thread::sleep(Duration::from_millis(1050));
        assert_eq!(stats.record_call("get_room_info").in_window, 1);
        assert_eq!(stats.max_calls_per_second(), 2);
        assert_eq!(stats.calls("get_room_info"), 2);
        let arrival = stats.record_call("get_room_info");
        stats.record_answer("get_room_info", "0", &arrival, Caller::default());
        let text = stats.render(3);
        assert!(text.contains("roomengine_sim_calls_total{api=\"get_room_info\"} 3\n"));
        assert!(text.contains("roomengine_sim_answers_total{api=\"get_room_info\",code=\"0\"} 1\n"));
        assert!(text.contains("roomengine_sim_max_calls_per_second 2\n"));
        // No log unless asked for.
        assert!(stats.take_call_log().is_empty());
        assert_eq!(stats.call_log_dropped(), 0);
        assert!(text.contains("roomengine_sim_rooms 3\n"));
    }

    #[test]
    fn poll_intervals_are_per_room_and_a_reset_starts_a_new_period() {
        let stats = Stats::default();
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        // room-a every 1000 ms (3 intervals), room-b once at 2500 ms after 500 ms.
        for (room, ms) in [
            ("a", 0),
            ("b", 500),
            ("a", 1000),
            ("a", 2000),
            ("b", 3000),
            ("a", 3000),
        ] {
            stats.record_poll(room, at(ms));
        }
        let spread = stats.period().poll_intervals;
        assert_eq!(
            (spread.count, spread.p50, spread.p99, spread.min, spread.max),
            (4, 1.0, 2.5, 1.0, 2.5)
        );
        let arrival = stats.record_call("get_room_info");
        stats.record_answer("get_room_info", "60011", &arrival, Caller::default());
        assert_eq!(stats.period().answers.get("60011"), Some(&1));
        stats.reset_period();
        // The room's last poll survives the reset: the next one is an interval.
        stats.record_poll("a", at(3400));
        let period = stats.period();
        assert_eq!((period.calls, period.max_calls_in_one_second), (0, 0));
        assert!(period.answers.is_empty());
        assert_eq!((period.poll_intervals.count, period.poll_intervals.p50), (1, 0.4));
        // The lifetime counters are not reset.
        assert_eq!(stats.calls("get_room_info"), 1);
    }

    #[test]
    fn the_call_log_keeps_each_call_with_its_caller_until_taken_and_is_bounded() {
        let stats = Stats::with_call_log(3);
        let first = stats.record_call("get_room_info");
        let second = stats.record_call("get_seat_list");
        let third = stats.record_call("get_room_info");
        // Answered out of arrival order: the log keeps each call's arrival.
        stats.record_answer(
            "get_seat_list",
            "0",
            &second,
            Caller {
                peer_port: 40_001,
                room_id: Some("room-0002"),
            },
        );
        stats.record_answer(
            "get_room_info",
            "60011",
            &first,
            Caller {
                peer_port: 40_000,
                room_id: Some("room-0001"),
            },
        );
        stats.record_answer("get_room_info", "0", &third, Caller::default());
        assert_eq!(stats.call_log().len(), 3, "reading leaves the log as it is");
        let log = stats.take_call_log();
        let seen: Vec<(u16, &str, Option<&str>, &str)> = log
            .iter()
            .map(|r| (r.peer_port, r.api, r.room_id.as_deref(), r.code.as_str()))
            .collect();
        assert_eq!(
            seen,
            vec![
                (40_001, "get_seat_list", Some("room-0002"), "0"),
                (40_000, "get_room_info", Some("room-0001"), "60011"),
                (0, "get_room_info", None, "0"),
            ]
        );
        assert_eq!((log[0].at, log[1].at), (second.at, first.at));
        assert!(log[1].at_unix <= log[0].at_unix && log[0].at_unix > 1.7e9);
        assert!(stats.take_call_log().is_empty(), "taking empties it");
        // Full: later calls are counted, not kept, until it is taken again.
        for _ in 0..5 {
            let arrival = stats.record_call("get_room_info");
            stats.record_answer("get_room_info", "0", &arrival, Caller::default());
        }
        assert_eq!((stats.take_call_log().len(), stats.call_log_dropped()), (3, 2));
        let arrival = stats.record_call("get_room_info");
        stats.record_answer("get_room_info", "0", &arrival, Caller::default());
        assert_eq!(stats.take_call_log().len(), 1);
    }

    #[test]
    fn fills_are_kept_in_order_with_their_instant() {
        let stats = Stats::default();
        stats.record_fills(vec![]);
        stats.record_fills(vec!["a".into(), "b".into()]);
        stats.record_fills(vec!["c".into()]);
        let fills = stats.fills();
        let rooms: Vec<&str> = fills.iter().map(|f| f.room_id.as_str()).collect();
        assert_eq!(rooms, vec!["a", "b", "c"]);
        assert_eq!(fills[0].at, fills[1].at);
        assert!(fills[2].at >= fills[1].at && fills[0].at_unix > 1.7e9);
    }

    #[test]
    fn the_peak_in_flight_is_taken_and_restarts_from_the_calls_still_open() {
        let stats = Stats::default();
        let first = stats.begin_call();
        let second = stats.begin_call();
        drop(stats.begin_call());
        drop(first);
        assert_eq!(stats.take_peak_in_flight(), 3);
        assert_eq!(stats.take_peak_in_flight(), 1);
        drop(second);
        assert_eq!(stats.take_peak_in_flight(), 1);
        assert_eq!(stats.take_peak_in_flight(), 0);
    }
}

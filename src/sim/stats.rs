//! What the simulator has seen, for `/sim/metrics`: calls received per API,
//! answers per API and code, and the one-second sliding window that both
//! enforces the rate limit (60011) and records the busiest second so far.

use std::collections::{BTreeMap, VecDeque};
use std::fmt::Write;
use std::sync::Mutex;
use std::time::{Duration, Instant};

const WINDOW: Duration = Duration::from_secs(1);

/// Counters behind one lock: every update is a few map operations, never held
/// across an `.await`, so a std mutex is cheaper than an async one.
#[derive(Debug, Default)]
pub struct Stats {
    inner: Mutex<Counters>,
}

#[derive(Debug, Default)]
struct Counters {
    calls: BTreeMap<&'static str, u64>,
    answers: BTreeMap<(&'static str, String), u64>,
    /// Arrival times of the calls received in the last second, oldest first.
    window: VecDeque<Instant>,
    /// The most calls ever inside one second.
    max_in_window: usize,
}

impl Stats {
    /// Counts a call to `api` as received now, rejected or not, and returns how
    /// many calls arrived in the second that ends with this one (itself included).
    pub fn record_call(&self, api: &'static str) -> usize {
        let mut c = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        // Taken under the lock, so the window stays in arrival order.
        let now = Instant::now();
        *c.calls.entry(api).or_default() += 1;
        while c.window.front().is_some_and(|&t| now.duration_since(t) >= WINDOW) {
            c.window.pop_front();
        }
        c.window.push_back(now);
        let in_window = c.window.len();
        c.max_in_window = c.max_in_window.max(in_window);
        in_window
    }

    /// Counts the answer given to a call of `api`: an ErrorCode, `http_502` or `malformed`.
    pub fn record_answer(&self, api: &'static str, code: &str) {
        let mut c = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        *c.answers.entry((api, code.to_owned())).or_default() += 1;
    }

    pub fn calls(&self, api: &str) -> u64 {
        let c = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        c.calls.get(api).copied().unwrap_or(0)
    }

    pub fn max_calls_per_second(&self) -> u64 {
        let c = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        c.max_in_window as u64
    }

    /// The Prometheus text exposition of every counter, plus the room count.
    pub fn render(&self, rooms: usize) -> String {
        let c = self.inner.lock().unwrap_or_else(|p| p.into_inner());
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_counts_calls_of_the_last_second_only() {
        let stats = Stats::default();
        assert_eq!(stats.record_call("get_room_info"), 1);
        assert_eq!(stats.record_call("get_seat_list"), 2);
        std::thread::sleep(Duration::from_millis(1050));
        assert_eq!(stats.record_call("get_room_info"), 1);
        assert_eq!(stats.max_calls_per_second(), 2);
        assert_eq!(stats.calls("get_room_info"), 2);
        stats.record_answer("get_room_info", "0");
        let text = stats.render(3);
        assert!(text.contains("roomengine_sim_calls_total{api=\"get_room_info\"} 2\n"));
        assert!(text.contains("roomengine_sim_answers_total{api=\"get_room_info\",code=\"0\"} 1\n"));
        assert!(text.contains("roomengine_sim_max_calls_per_second 2\n"));
        assert!(text.contains("roomengine_sim_rooms 3\n"));
    }
}

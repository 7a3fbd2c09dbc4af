//! The simulator's wall clock: the system clock plus an offset that tests can
//! change at run time, so a UserSig issued long ago (or far ahead) can be
//! checked as if "now" were another moment.

use std::sync::atomic::{AtomicI64, Ordering};

use crate::clock::unix_now;

/// Unix time as the simulator sees it. Only UserSig expiry reads it; the rooms'
/// own timeline advances in ticks (see `world`), so moving this clock never
/// changes a room's history.
#[derive(Debug, Default)]
pub struct Clock {
    /// Seconds added to the system clock; negative moves it back.
    offset_secs: AtomicI64,
}

impl Clock {
    pub fn with_offset(offset_secs: i64) -> Self {
        Clock {
            offset_secs: AtomicI64::new(offset_secs),
        }
    }

    /// The current simulated Unix second.
    pub fn now_unix(&self) -> u64 {
        shift(unix_now(), self.offset_secs.load(Ordering::Relaxed))
    }

    /// Moves the clock so that [`Clock::now_unix`] returns `unix` now and keeps
    /// ticking from there.
    pub fn set_now(&self, unix: u64) {
        let offset = i64::try_from(unix)
            .unwrap_or(i64::MAX)
            .saturating_sub(i64::try_from(unix_now()).unwrap_or(i64::MAX));
        self.offset_secs.store(offset, Ordering::Relaxed);
    }
}

fn shift(unix: u64, offset: i64) -> u64 {
    if offset >= 0 {
        unix.saturating_add(offset.unsigned_abs())
    } else {
        unix.saturating_sub(offset.unsigned_abs())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_now_moves_the_clock_back_and_forth() {
        let clock = Clock::default();
        clock.set_now(1_700_000_100);
        let now = clock.now_unix();
        assert!((1_700_000_100..1_700_000_103).contains(&now), "{now}");
        clock.set_now(unix_now() + 3600);
        assert!(clock.now_unix() >= unix_now() + 3599);
    }
}

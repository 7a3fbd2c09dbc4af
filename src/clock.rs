//! The wall clock, in the units the rest of the crate speaks: Unix seconds
//! (UserSig times), milliseconds (`EventTime`, poll stamps) and fractional
//! seconds (timestamp gauges). A clock before 1970 reads as 0 rather than panicking.

use std::time::{SystemTime, UNIX_EPOCH};

fn since_epoch() -> std::time::Duration {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default()
}

/// Whole Unix seconds.
pub fn unix_now() -> u64 {
    since_epoch().as_secs()
}

/// Unix milliseconds, the unit of `EventTime`.
pub fn unix_now_ms() -> u64 {
    since_epoch().as_millis() as u64
}

/// Unix seconds with a fraction, for `_timestamp_seconds` gauges.
pub fn unix_now_f64() -> f64 {
    since_epoch().as_secs_f64()
}

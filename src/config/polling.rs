//! The `polling:` section (interval, rate limit, timeout, seat usage and the
//! `polling.watch` tier) and the one-key `probe:` section, whose calls share
//! the same budget: how often and how fast the exporter calls the API.

use std::time::Duration;

use serde::Deserialize;

use super::error::duration;
use crate::budget::API_RATE_LIMIT;
use crate::watch::WatchSettings;

/// The Room Engine backend's own timeout; ours must be longer, or a slow
/// answer would be cut off just before it arrives.
pub(super) const BACKEND_TIMEOUT: Duration = Duration::from_secs(3);

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPolling {
    interval: Option<String>,
    rate_limit: Option<i64>,
    timeout: Option<String>,
    seat_usage: Option<bool>,
    #[serde(default)]
    watch: RawWatch,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWatch {
    enabled: Option<bool>,
    threshold: Option<f64>,
    interval: Option<String>,
    max_share: Option<f64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawProbe {
    enabled: Option<bool>,
}

/// The validated sections; values are placeholders where `errors` got a problem.
pub(super) struct Polling {
    pub interval: Duration,
    pub rate_limit: u32,
    pub timeout: Duration,
    pub seat_usage: bool,
    pub watch: WatchSettings,
    pub probe_enabled: bool,
}

pub(super) fn validate(raw: RawPolling, probe: RawProbe, errors: &mut Vec<String>) -> Polling {
    let interval = duration("polling.interval", raw.interval, "30s", errors);
    if let Some(interval) = interval {
        at_least_a_second("polling.interval", interval, errors);
    }
    let rate_limit = match raw.rate_limit.unwrap_or(100) {
        n if n > i64::from(API_RATE_LIMIT) => {
            errors.push(format!(
                "polling.rate_limit: {n} exceeds the API limit of {API_RATE_LIMIT} calls/s"
            ));
            0
        }
        n if n < 1 => {
            errors.push(format!("polling.rate_limit: {n} must be at least 1 call/s"));
            0
        }
        n => n as u32,
    };
    let timeout = duration("polling.timeout", raw.timeout, "5s", errors);
    if let Some(short) = timeout.filter(|d| *d <= BACKEND_TIMEOUT) {
        errors.push(format!(
            "polling.timeout: {} must be more than 3s (the backend's own timeout)",
            humantime::format_duration(short)
        ));
    }
    Polling {
        interval: interval.unwrap_or_default(),
        rate_limit,
        timeout: timeout.unwrap_or_default(),
        seat_usage: raw.seat_usage.unwrap_or(true),
        watch: watch_settings(raw.watch, errors),
        probe_enabled: probe.enabled.unwrap_or(true),
    }
}

/// `polling.watch`, defaults filled in; a bad value is reported and replaced by its default.
fn watch_settings(raw: RawWatch, errors: &mut Vec<String>) -> WatchSettings {
    let default = WatchSettings::default();
    let threshold = match raw.threshold {
        Some(t) if !(t > 0.0 && t <= 1.0) => {
            errors.push(format!(
                "polling.watch.threshold: {t} must be a share of MaxMemberCount in (0, 1]"
            ));
            default.threshold
        }
        t => t.unwrap_or(default.threshold),
    };
    let max_share = match raw.max_share {
        Some(s) if !(s > 0.0 && s < 1.0) => {
            errors.push(format!(
                "polling.watch.max_share: {s} must be a share of the budget in (0, 1)"
            ));
            default.max_share
        }
        s => s.unwrap_or(default.max_share),
    };
    let interval = duration("polling.watch.interval", raw.interval, "5s", errors).unwrap_or(default.interval);
    at_least_a_second("polling.watch.interval", interval, errors);
    WatchSettings {
        enabled: raw.enabled.unwrap_or(default.enabled),
        threshold,
        interval,
        max_share,
    }
}

/// The floor `polling.interval` and `polling.watch.interval` share.
fn at_least_a_second(key: &str, interval: Duration, errors: &mut Vec<String>) {
    if interval < Duration::from_secs(1) {
        errors.push(format!(
            "{key}: {} is shorter than the minimum of 1s",
            humantime::format_duration(interval)
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse;
    use crate::config::testing::{errors_of, secrets, with, GOOD};

    #[test]
    fn rate_limit_above_api_cap() {
        assert_eq!(
            errors_of(&with("rate_limit", "  rate_limit: 250")),
            vec!["polling.rate_limit: 250 exceeds the API limit of 200 calls/s"]
        );
    }

    #[test]
    fn rate_limit_zero() {
        assert_eq!(
            errors_of(&with("rate_limit", "  rate_limit: 0")),
            vec!["polling.rate_limit: 0 must be at least 1 call/s"]
        );
    }

    #[test]
    fn interval_too_short_and_unparsable() {
        assert_eq!(
            errors_of(&with("interval", "  interval: 500ms")),
            vec!["polling.interval: 500ms is shorter than the minimum of 1s"]
        );
        assert_eq!(
            errors_of(&with("interval", "  interval: soon")),
            vec!["polling.interval: \"soon\" is not a duration like 30s or 5m: expected number at 0"]
        );
    }

    #[test]
    fn timeout_not_above_backend_timeout() {
        assert_eq!(
            errors_of(&with("timeout", "  timeout: 3s")),
            vec!["polling.timeout: 3s must be more than 3s (the backend's own timeout)"]
        );
    }

    #[test]
    fn watch_defaults_and_overrides() {
        let c = parse(GOOD, &secrets()).expect("valid");
        assert_eq!(c.watch, WatchSettings::default());
        let c = parse(
            &with(
                "timeout",
                "  timeout: 5s\n  watch:\n    enabled: false\n    threshold: 1\n    interval: 2s\n    max_share: 0.25",
            ),
            &secrets(),
        )
        .expect("valid");
        assert_eq!(
            c.watch,
            WatchSettings {
                enabled: false,
                threshold: 1.0,
                interval: Duration::from_secs(2),
                max_share: 0.25,
            }
        );
    }

    #[test]
    fn watch_keys_out_of_range_are_named() {
        let text = with(
            "timeout",
            "  timeout: 5s\n  watch:\n    threshold: 0\n    interval: 500ms\n    max_share: 1",
        );
        assert_eq!(
            errors_of(&text),
            vec![
                "polling.watch.threshold: 0 must be a share of MaxMemberCount in (0, 1]",
                "polling.watch.max_share: 1 must be a share of the budget in (0, 1)",
                "polling.watch.interval: 500ms is shorter than the minimum of 1s",
            ]
        );
        let text = with(
            "timeout",
            "  timeout: 5s\n  watch:\n    threshold: 1.5\n    interval: often\n    max_share: 0\n    every: 1s",
        );
        let e = errors_of(&text);
        assert!(e[0].starts_with("polling.watch: unknown field `every`"), "{e:?}");
        let text = with(
            "timeout",
            "  timeout: 5s\n  watch:\n    threshold: 1.5\n    interval: often\n    max_share: 0",
        );
        assert_eq!(
            errors_of(&text),
            vec![
                "polling.watch.threshold: 1.5 must be a share of MaxMemberCount in (0, 1]",
                "polling.watch.max_share: 0 must be a share of the budget in (0, 1)",
                "polling.watch.interval: \"often\" is not a duration like 30s or 5m: expected number at 0",
            ]
        );
    }
}

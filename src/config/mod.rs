//! exporter.yaml: the [`Config`] the exporter runs with, and [`load`] /
//! [`parse`] / [`parse_in`], which read the YAML (unknown keys rejected) and
//! hand each section to its own file's validator, collecting every problem.

mod app;
mod callbacks;
mod error;
mod ha;
mod metrics;
mod polling;
mod rooms;
mod secrets;
#[cfg(test)]
mod testing;

use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

use crate::watch::WatchSettings;
pub use callbacks::{
    CallbacksConfig, RedisConfig, RoomBounds, DEFAULT_CALLBACK_CONNECTIONS, DEFAULT_MAX_ROOMS,
};
pub use error::ConfigErrors;
pub use ha::{check_replica_id, default_replica_id, HaConfig};
pub use metrics::{MetricsConfig, ROOM_FAMILY_NAMES};
pub use secrets::{ProcessSecrets, SecretKey, SecretSource, DEFAULT_SECRET_ENV};

/// A validated configuration, ready to run.
#[derive(Debug, Clone)]
pub struct Config {
    pub sdkappid: u64,
    pub identifier: String,
    pub secret_key: SecretKey,
    /// Base URL without trailing slash, e.g. `https://adminapisgp.im.qcloud.com`.
    pub endpoint: String,
    pub usersig_ttl: Duration,
    pub interval: Duration,
    pub rate_limit: u32,
    pub timeout: Duration,
    pub seat_usage: bool,
    /// `polling.watch`: the tier that re-polls rooms close to capacity.
    pub watch: WatchSettings,
    pub probe_enabled: bool,
    /// Configured rooms; may be empty when the callback receiver is on.
    pub rooms: Vec<String>,
    /// The callback receiver (`callbacks.listen_address` set), else `None`.
    pub callbacks: Option<CallbacksConfig>,
    /// `metrics:`: per-room series limit and room family filters.
    pub metrics: MetricsConfig,
    /// `ha:`: used only with `callbacks.redis_url` (an HA group).
    pub ha: HaConfig,
}

impl Config {
    /// `callbacks.max_rooms`, `room_ids`, `max_clock_skew` (defaults with the receiver off).
    pub fn room_bounds(&self) -> RoomBounds {
        self.callbacks
            .as_ref()
            .map(|c| c.bounds.clone())
            .unwrap_or_default()
    }

    /// The one-line summary `--config.check` prints.
    pub fn summary(&self) -> String {
        format!(
            "config OK: sdkappid {}, endpoint {}, {} rooms, interval {}, rate_limit {}/s",
            self.sdkappid,
            self.endpoint,
            self.rooms.len(),
            humantime::format_duration(self.interval),
            self.rate_limit
        ) + &match &self.callbacks {
            None => String::new(),
            Some(c) => format!(
                ", callbacks on {}{} (state: {})",
                c.listen_address,
                c.path,
                match (&c.redis, &c.state_file) {
                    (Some(redis), _) => format!(
                        "Redis {}{}; HA replica {}, heartbeat {}, dead after {}",
                        redis.url,
                        if redis.password.is_some() {
                            " with a password"
                        } else {
                            ""
                        },
                        self.ha.replica_id,
                        humantime::format_duration(self.ha.heartbeat),
                        humantime::format_duration(self.ha.dead_after),
                    ),
                    (None, Some(path)) => path.display().to_string(),
                    (None, None) => "in memory".to_owned(),
                }
            ),
        }
    }
}

/// The file's top level; each section's keys are its own file's business.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    app: Option<app::RawApp>,
    #[serde(default)]
    polling: polling::RawPolling,
    #[serde(default)]
    probe: polling::RawProbe,
    rooms: Option<Vec<String>>,
    rooms_file: Option<String>,
    callbacks: Option<callbacks::RawCallbacks>,
    #[serde(default)]
    metrics: metrics::RawMetrics,
    ha: Option<ha::RawHa>,
}

/// Reads and validates `path`; errors are prefixed with the file name.
pub fn load(path: &Path, secrets: &dyn SecretSource) -> Result<Config, ConfigErrors> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| ConfigErrors(vec![format!("{}: cannot read config file: {e}", path.display())]))?;
    let base_dir = path.parent().unwrap_or(Path::new(""));
    parse_in(&text, base_dir, secrets).map_err(|ConfigErrors(errs)| {
        ConfigErrors(
            errs.into_iter()
                .map(|e| format!("{}: {e}", path.display()))
                .collect(),
        )
    })
}

/// Parses and validates YAML text, collecting every problem rather than the
/// first; a relative `rooms_file` is read from the working directory.
pub fn parse(text: &str, secrets: &dyn SecretSource) -> Result<Config, ConfigErrors> {
    parse_in(text, Path::new(""), secrets)
}

/// As [`parse`], with a relative `rooms_file` and `callbacks.state_file`
/// resolved against `base_dir` (the config file's directory, as Prometheus
/// does for its file paths).
pub fn parse_in(text: &str, base_dir: &Path, secrets: &dyn SecretSource) -> Result<Config, ConfigErrors> {
    let raw: RawConfig = serde_yaml::from_str(text).map_err(|e| ConfigErrors(vec![error::yaml_error(&e)]))?;
    let Some(raw_app) = raw.app else {
        return Err(ConfigErrors(vec![app::MISSING.to_owned()]));
    };
    let mut errors = Vec::new();
    let app = app::validate(raw_app, secrets, &mut errors);
    let polling = polling::validate(raw.polling, raw.probe, &mut errors);
    let metrics = metrics::validate(raw.metrics, &mut errors);
    let callbacks = raw
        .callbacks
        .and_then(|c| callbacks::validate(c, base_dir, secrets, &mut errors));
    let ha = ha::validate(
        raw.ha,
        callbacks.as_ref().is_some_and(|c| c.redis.is_some()),
        &mut errors,
    );
    // Callbacks can discover rooms, so with the receiver on the list may be empty.
    let rooms = rooms::validate(
        raw.rooms,
        raw.rooms_file,
        base_dir,
        secrets,
        callbacks.is_some(),
        &mut errors,
    );
    if !errors.is_empty() {
        return Err(ConfigErrors(errors));
    }
    Ok(Config {
        sdkappid: app.sdkappid,
        identifier: app.identifier,
        secret_key: app.secret_key,
        endpoint: app.endpoint,
        usersig_ttl: app.usersig_ttl,
        interval: polling.interval,
        rate_limit: polling.rate_limit,
        timeout: polling.timeout,
        seat_usage: polling.seat_usage,
        watch: polling.watch,
        probe_enabled: polling.probe_enabled,
        rooms,
        callbacks,
        metrics,
        ha,
    })
}

#[cfg(test)]
mod tests {
    use super::testing::{errors_of, secrets, with, GOOD};
    use super::*;

    #[test]
    fn good_config_parses_with_defaults() {
        let c = parse(GOOD, &secrets()).expect("valid");
        assert_eq!(c.sdkappid, 1400000000);
        assert_eq!(c.endpoint, "https://adminapisgp.im.qcloud.com");
        assert_eq!(c.secret_key.expose(), "k3y");
        assert_eq!(c.usersig_ttl, Duration::from_secs(86400));
        assert_eq!(c.rooms, vec!["room-test"]);
        assert!(c.seat_usage && c.probe_enabled);
        assert_eq!(
            c.summary(),
            "config OK: sdkappid 1400000000, endpoint https://adminapisgp.im.qcloud.com, 1 rooms, interval 30s, rate_limit 100/s"
        );
    }

    #[test]
    fn without_app_nothing_else_is_checked() {
        assert_eq!(
            errors_of("polling:\n  rate_limit: 500\nrooms: []\n"),
            vec!["app: missing (sdkappid, identifier and the SecretKey are required)"]
        );
    }

    #[test]
    fn shipped_example_is_valid() {
        let text = include_str!("../../exporter.yaml");
        let c = parse(text, &secrets()).expect("exporter.yaml is valid");
        assert_eq!(c.rooms, vec!["room-test"]);
    }

    #[test]
    fn unknown_key_names_key_and_position() {
        let e = errors_of(&with("timeout", "  timeout: 5s\n  intervall: 10s"));
        assert_eq!(e.len(), 1);
        assert!(e[0].starts_with("polling: unknown field `intervall`"), "{}", e[0]);
        assert!(e[0].contains("line 9 column 3"), "{}", e[0]);
    }

    #[test]
    fn wrong_type_names_key() {
        let e = errors_of(&with("rate_limit", "  rate_limit: lots"));
        assert!(
            e[0].starts_with("polling.rate_limit: invalid type: string \"lots\""),
            "{}",
            e[0]
        );
    }

    #[test]
    fn every_problem_is_listed() {
        let text = with("rate_limit", "  rate_limit: 500").replace("interval: 30s", "interval: 0s");
        assert_eq!(
            errors_of(&text),
            vec![
                "polling.interval: 0s is shorter than the minimum of 1s",
                "polling.rate_limit: 500 exceeds the API limit of 200 calls/s"
            ]
        );
    }

    #[test]
    fn debug_never_shows_the_secret() {
        let c = parse(GOOD, &secrets()).expect("valid");
        assert!(!format!("{c:?}").contains("k3y"));
    }
}

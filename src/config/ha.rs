//! The `ha:` section: how the replicas of an HA group (those sharing
//! `callbacks.redis_url`) tell each other they are alive. Every key is
//! optional; the section is only allowed with Redis.

use std::time::Duration;

use serde::Deserialize;

use super::error::duration;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawHa {
    replica_id: Option<String>,
    heartbeat: Option<String>,
    dead_after: Option<String>,
}

/// The validated `ha:` section (defaults when absent).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HaConfig {
    /// `ha.replica_id` (or `--ha.replica-id`); the host name when unset, so a
    /// restart keeps the rooms it polled.
    pub replica_id: String,
    pub heartbeat: Duration,
    pub dead_after: Duration,
}

impl Default for HaConfig {
    fn default() -> HaConfig {
        HaConfig {
            replica_id: default_replica_id(),
            heartbeat: Duration::from_secs(2),
            dead_after: Duration::from_secs(10),
        }
    }
}

/// The host name (the pod name in Kubernetes), or `exporter` when unreadable.
pub fn default_replica_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| check_replica_id(h).is_ok())
        .unwrap_or_else(|| "exporter".to_owned())
}

/// A replica ID names a member in Redis and shows in logs: 1-64 of
/// `A-Z a-z 0-9 . _ -`.
pub fn check_replica_id(id: &str) -> Result<(), String> {
    if id.is_empty() || id.len() > 64 {
        return Err(format!("{id:?} must be 1 to 64 characters long"));
    }
    match id
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        Some(c) => Err(format!(
            "{id:?} holds {c:?}: use letters, digits, '.', '_' and '-' only"
        )),
        None => Ok(()),
    }
}

pub(super) fn validate(raw: Option<RawHa>, redis: bool, errors: &mut Vec<String>) -> HaConfig {
    let defaults = HaConfig::default();
    let Some(raw) = raw else {
        return defaults;
    };
    if !redis {
        errors.push(
            "ha: needs callbacks.redis_url (the replicas of an HA group share the room set, the polling and the budget through Redis)"
                .to_owned(),
        );
    }
    let replica_id = match raw.replica_id {
        Some(id) => {
            if let Err(e) = check_replica_id(&id) {
                errors.push(format!("ha.replica_id: {e}"));
            }
            id
        }
        None => defaults.replica_id,
    };
    let heartbeat = duration("ha.heartbeat", raw.heartbeat, "2s", errors).unwrap_or(defaults.heartbeat);
    let dead_after = duration("ha.dead_after", raw.dead_after, "10s", errors).unwrap_or(defaults.dead_after);
    if heartbeat < Duration::from_millis(100) {
        errors.push(format!(
            "ha.heartbeat: {} is too short (100ms at least)",
            humantime::format_duration(heartbeat)
        ));
    }
    if dead_after < heartbeat * 2 {
        errors.push(format!(
            "ha.dead_after: {} must be at least twice ha.heartbeat ({}), or one late beat declares a live replica dead",
            humantime::format_duration(dead_after),
            humantime::format_duration(heartbeat)
        ));
    }
    HaConfig {
        replica_id,
        heartbeat,
        dead_after,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(id: Option<&str>, heartbeat: Option<&str>, dead_after: Option<&str>) -> Option<RawHa> {
        Some(RawHa {
            replica_id: id.map(str::to_owned),
            heartbeat: heartbeat.map(str::to_owned),
            dead_after: dead_after.map(str::to_owned),
        })
    }

    #[test]
    fn every_problem_is_named_with_its_key() {
        let mut errors = Vec::new();
        validate(raw(Some("a b"), Some("50ms"), Some("80ms")), false, &mut errors);
        assert_eq!(
            errors,
            [
                "ha: needs callbacks.redis_url (the replicas of an HA group share the room set, the polling and the budget through Redis)",
                "ha.replica_id: \"a b\" holds ' ': use letters, digits, '.', '_' and '-' only",
                "ha.heartbeat: 50ms is too short (100ms at least)",
                "ha.dead_after: 80ms must be at least twice ha.heartbeat (50ms), or one late beat declares a live replica dead",
            ]
        );
    }

    #[test]
    fn absent_keys_take_their_defaults_and_the_host_name() {
        let mut errors = Vec::new();
        let ha = validate(raw(Some("exporter-0"), None, None), true, &mut errors);
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(
            ha,
            HaConfig {
                replica_id: "exporter-0".into(),
                heartbeat: Duration::from_secs(2),
                dead_after: Duration::from_secs(10),
            }
        );
        assert_eq!(
            validate(None, false, &mut errors).replica_id,
            default_replica_id()
        );
        assert!(check_replica_id(&default_replica_id()).is_ok());
        assert!(check_replica_id(&"x".repeat(65)).is_err());
    }
}

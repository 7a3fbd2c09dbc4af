//! The `metrics:` section: how many rooms get per-room series
//! (`room_series_limit`) and which room families are exposed
//! (`families.allow` / `families.deny`); all of it applies on reload.

use serde::Deserialize;

/// The names `metrics.families.allow` / `deny` accept: the room families of
/// the contract, in exposition order (exposition's `FAMILIES` is tested
/// against this list, so the two cannot drift).
pub const ROOM_FAMILY_NAMES: [&str; 19] = [
    "roomengine_room_members",
    "roomengine_room_max_members",
    "roomengine_room_max_seats",
    "roomengine_room_seat_enabled",
    "roomengine_room_status",
    "roomengine_room_take_seat_mode",
    "roomengine_room_feature_disabled",
    "roomengine_room_info",
    "roomengine_room_created_timestamp_seconds",
    "roomengine_room_scheduled_start_timestamp_seconds",
    "roomengine_room_scheduled_end_timestamp_seconds",
    "roomengine_room_seats_occupied",
    "roomengine_room_seats_locked",
    "roomengine_room_seats_audio_disabled",
    "roomengine_room_seats_video_disabled",
    "roomengine_room_up",
    "roomengine_room_exists",
    "roomengine_room_last_success_timestamp_seconds",
    "roomengine_room_last_callback_timestamp_seconds",
];

/// The validated `metrics:` section.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MetricsConfig {
    /// Rooms besides the configured ones that get per-room series (0: every room).
    pub room_series_limit: usize,
    /// `families.allow`: when not empty, only these room families are exposed.
    pub allow: Vec<String>,
    /// `families.deny`: room families never exposed (deny wins over allow).
    pub deny: Vec<String>,
}

impl MetricsConfig {
    /// Whether the room family `name` is exposed.
    pub fn shows_family(&self, name: &str) -> bool {
        let allowed = self.allow.is_empty() || self.allow.iter().any(|a| a == name);
        allowed && !self.deny.iter().any(|d| d == name)
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawMetrics {
    room_series_limit: Option<i64>,
    #[serde(default)]
    families: RawFamilies,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFamilies {
    #[serde(default)]
    allow: Vec<String>,
    #[serde(default)]
    deny: Vec<String>,
}

pub(super) fn validate(raw: RawMetrics, errors: &mut Vec<String>) -> MetricsConfig {
    let room_series_limit = match raw.room_series_limit.unwrap_or(0) {
        n if n < 0 => {
            errors.push(format!(
                "metrics.room_series_limit: {n} must be 0 (every room) or more"
            ));
            0
        }
        n => n as usize,
    };
    for (key, names) in [
        ("metrics.families.allow", &raw.families.allow),
        ("metrics.families.deny", &raw.families.deny),
    ] {
        for name in names.iter().filter(|n| !ROOM_FAMILY_NAMES.contains(&n.as_str())) {
            errors.push(format!(
                "{key}: {name:?} is not a room family (see docs/metrics.md; aggregates and the exporter's own metrics cannot be filtered)"
            ));
        }
    }
    MetricsConfig {
        room_series_limit,
        allow: raw.families.allow,
        deny: raw.families.deny,
    }
}

#[cfg(test)]
mod tests {
    use super::super::parse;
    use super::super::testing::{errors_of, secrets, GOOD};
    use super::*;

    #[test]
    fn absent_section_exposes_every_room_and_family() {
        let c = parse(GOOD, &secrets()).expect("valid");
        assert_eq!(c.metrics, MetricsConfig::default());
        assert!(ROOM_FAMILY_NAMES.iter().all(|f| c.metrics.shows_family(f)));
    }

    #[test]
    fn deny_wins_over_allow() {
        let text = format!(
            "{GOOD}metrics:\n  room_series_limit: 2000\n  families:\n    allow: [roomengine_room_members, roomengine_room_info]\n    deny: [roomengine_room_info]\n"
        );
        let c = parse(&text, &secrets()).expect("valid");
        assert_eq!(c.metrics.room_series_limit, 2000);
        assert!(c.metrics.shows_family("roomengine_room_members"));
        assert!(!c.metrics.shows_family("roomengine_room_info"));
        assert!(!c.metrics.shows_family("roomengine_room_up"));
    }

    #[test]
    fn unknown_family_and_negative_limit_name_key_and_value() {
        let text = format!(
            "{GOOD}metrics:\n  room_series_limit: -1\n  families:\n    deny: [roomengine_room_info, roomengine_rooms]\n"
        );
        assert_eq!(
            errors_of(&text),
            vec![
                "metrics.room_series_limit: -1 must be 0 (every room) or more",
                "metrics.families.deny: \"roomengine_rooms\" is not a room family (see docs/metrics.md; aggregates and the exporter's own metrics cannot be filtered)",
            ]
        );
    }
}

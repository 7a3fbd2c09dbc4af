//! The poller's own self-metrics: polls ended per tier, rooms in the watch
//! tier, and the length of the last full pass. Registered into the registry
//! the exporter renders after the room families.

use prometheus::{Gauge, IntCounterVec, IntGauge, Registry};

use crate::metrics::Register;

/// `tier` label of polls started by a pass (every room once per pass).
pub const TIER_PASS: &str = "pass";
/// `tier` label of polls started by the watch tier (rooms close to capacity).
pub const TIER_WATCH: &str = "watch";

/// Handles to the poller's metrics; clones share the same series.
#[derive(Clone)]
pub struct PollerMetrics {
    /// `roomengine_polls_total{tier}`.
    pub polls: IntCounterVec,
    /// `roomengine_rooms_watched`.
    pub rooms_watched: IntGauge,
    /// `roomengine_sweep_duration_seconds`.
    pub sweep_duration: Gauge,
}

impl PollerMetrics {
    /// Creates the three metrics and registers them into `registry`.
    pub fn new(registry: &Registry) -> PollerMetrics {
        PollerMetrics {
            // Both tiers show from the start, so a rate() over them never lacks a series.
            polls: registry.counter_vec(
                "roomengine_polls_total",
                "Room polls ended, by tier: pass (every room once per pass) or watch (rooms close to capacity).",
                &["tier"],
                &[TIER_PASS, TIER_WATCH],
            ),
            rooms_watched: registry.int_gauge(
                "roomengine_rooms_watched",
                "Rooms in the watch tier now (close to capacity, filling fast, or full), polled again within two polling.watch.interval.",
            ),
            sweep_duration: registry.gauge(
                "roomengine_sweep_duration_seconds",
                "How long the last full background pass over all configured rooms took.",
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus::Encoder;

    #[test]
    fn registers_the_three_families_with_both_tiers() {
        let registry = Registry::new();
        let metrics = PollerMetrics::new(&registry);
        metrics.polls.with_label_values(&[TIER_WATCH]).inc();
        let mut out = Vec::new();
        prometheus::TextEncoder::new()
            .encode(&registry.gather(), &mut out)
            .expect("encodes");
        let text = String::from_utf8(out).expect("utf-8");
        for line in [
            "roomengine_polls_total{tier=\"pass\"} 0",
            "roomengine_polls_total{tier=\"watch\"} 1",
            "roomengine_rooms_watched 0",
            "roomengine_sweep_duration_seconds 0",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing in:\n{text}");
        }
    }
}

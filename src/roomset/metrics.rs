//! The room set's metrics: whether its state backend takes writes, failed
//! batches, commit latency, and how many rooms callbacks made known.

use prometheus::{Histogram, IntCounter, IntGauge, Registry};

use crate::metrics::Register;

/// Handles to the room set's metrics; cheap to clone.
#[derive(Clone)]
pub struct RoomSetMetrics {
    pub state_up: IntGauge,
    pub state_errors: IntCounter,
    pub state_commit_duration: Histogram,
    pub rooms_discovered: IntGauge,
}

impl RoomSetMetrics {
    pub fn new(registry: &Registry) -> RoomSetMetrics {
        RoomSetMetrics {
            state_up: registry.int_gauge(
                "roomengine_state_up",
                "1 when the last write of the room set to its state backend succeeded; 0 while callbacks are answered 503.",
            ),
            state_errors: registry.counter(
                "roomengine_state_errors_total",
                "Batches of callbacks the state backend failed to store (each callback in them was answered 503).",
            ),
            state_commit_duration: registry.histogram(
                "roomengine_state_commit_duration_seconds",
                "Time to commit one batch of callbacks to the state backend.",
                &[0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0],
            ),
            rooms_discovered: registry.int_gauge(
                "roomengine_rooms_discovered",
                "Rooms known from Room Engine callbacks and not in the configuration (destroyed ones until callbacks.forget_after).",
            ),
        }
    }
}

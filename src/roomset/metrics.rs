//! The room set's metrics: whether its state backend takes writes, failed
//! batches, commit latency, how many rooms callbacks made known, and what
//! the admission rules refused or clamped.

use prometheus::{Histogram, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Registry};

use super::admission::Refusal;

use crate::metrics::Register;

/// Handles to the room set's metrics; cheap to clone.
#[derive(Clone)]
pub struct RoomSetMetrics {
    pub state_up: IntGauge,
    pub state_errors: IntCounter,
    pub state_commit_duration: Histogram,
    pub rooms_discovered: IntGauge,
    pub refused: IntCounterVec,
    pub clock_skew: IntCounter,
    pub rooms: IntGaugeVec,
    pub max_rooms: IntGauge,
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
            refused: registry.counter_vec(
                "roomengine_callbacks_rooms_refused_total",
                "Callbacks answered OK whose room was not taken into the room set: room_limit (callbacks.max_rooms reached) or filtered (callbacks.room_ids).",
                &["reason"],
                &Refusal::ALL.map(Refusal::label),
            ),
            clock_skew: registry.counter(
                "roomengine_callbacks_clock_skew_total",
                "Callbacks (and kept records) whose EventTime was more than callbacks.max_clock_skew ahead of the exporter's clock, applied as of the time received.",
            ),
            rooms: registry.int_gauge_vec(
                "roomengine_roomset_rooms",
                "Rooms in the room set by source: configured, and discovered by callbacks and not destroyed (these count against callbacks.max_rooms).",
                &["source"],
            ),
            max_rooms: registry.int_gauge(
                "roomengine_roomset_max_rooms",
                "Live discovered rooms the room set takes at most (callbacks.max_rooms).",
            ),
        }
    }
}

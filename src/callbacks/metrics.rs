//! The receiver's metrics: callbacks accepted by command (every handled name
//! and `other` exist from the start), refused by reason, and answer latency.

use prometheus::{Histogram, IntCounterVec, Registry};

use super::command::{NAMES, OTHER};
use crate::metrics::Register;

/// `roomengine_callbacks_rejected_total`'s reasons.
pub const REJECT_REASONS: [&str; 6] = [
    "sdkappid",
    "signature",
    "request_time",
    "method",
    "too_large",
    "malformed",
];

/// Handles to the receiver's metrics; cheap to clone.
#[derive(Clone)]
pub struct CallbackMetrics {
    pub accepted: IntCounterVec,
    pub rejected: IntCounterVec,
    pub duration: Histogram,
}

impl CallbackMetrics {
    pub fn new(registry: &Registry) -> CallbackMetrics {
        let commands: Vec<&str> = NAMES.iter().copied().chain([OTHER]).collect();
        CallbackMetrics {
            accepted: registry.counter_vec(
                "roomengine_callbacks_total",
                "Callbacks accepted (answered OK), by CallbackCommand; commands the exporter does not handle count as other.",
                &["command"],
                &commands,
            ),
            rejected: registry.counter_vec(
                "roomengine_callbacks_rejected_total",
                "Callback requests refused with a 4xx and not applied, by reason.",
                &["reason"],
                &REJECT_REASONS,
            ),
            duration: registry.histogram(
                "roomengine_callback_duration_seconds",
                "Time from a callback request's headers to its answer (durable storage included).",
                &[0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5],
            ),
        }
    }
}

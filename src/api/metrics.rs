//! The API client's own metrics: calls sent, failed (by code) and their
//! latency, per API, plus the expiry of the UserSig they are signed with.

use prometheus::{Histogram, HistogramVec, IntCounter, IntCounterVec, Registry};

use crate::metrics::Register;
use crate::usersig::UserSigMetrics;

/// The `api` label of the room polls.
pub const API_GET_ROOM_INFO: &str = "get_room_info";
/// The `api` label of the seat polls.
pub const API_GET_SEAT_LIST: &str = "get_seat_list";

/// Handles to the client's metrics; cheap to clone.
#[derive(Clone)]
pub struct ApiMetrics {
    pub requests: IntCounterVec,
    pub errors: IntCounterVec,
    pub duration: HistogramVec,
    pub usersig: UserSigMetrics,
}

impl ApiMetrics {
    pub fn new(registry: &Registry) -> ApiMetrics {
        ApiMetrics {
            requests: registry.counter_vec(
                "roomengine_api_requests_total",
                "Calls sent to the Room Engine API, retries included.",
                &["api"],
                &[],
            ),
            errors: registry.counter_vec(
                "roomengine_api_request_errors_total",
                "Calls to the Room Engine API that failed, by ErrorCode (or timeout, connect, http_NNN, decode, body_too_large).",
                &["api", "code"],
                &[],
            ),
            duration: registry.histogram_vec(
                "roomengine_api_request_duration_seconds",
                "Latency of calls to the Room Engine API, from send to decoded answer.",
                &["api"],
                &[0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0],
            ),
            usersig: UserSigMetrics::new(registry),
        }
    }
}

/// One API's labelled series, looked up once: `with_label_values` hashes the
/// label and takes a lock on every call.
#[derive(Clone)]
pub struct ApiSeries {
    pub requests: IntCounter,
    pub duration: Histogram,
}

impl ApiMetrics {
    /// The series of `api` (created at 0 when it has none yet).
    pub fn series(&self, api: &str) -> ApiSeries {
        ApiSeries {
            requests: self.requests.with_label_values(&[api]),
            duration: self.duration.with_label_values(&[api]),
        }
    }
}

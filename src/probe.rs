//! `GET /probe?room_id=ID`: the multi-target pattern (as blackbox_exporter)
//! for rooms Prometheus discovers itself. One fresh get_room_info (plus the
//! seat list when enabled) through the same budget, answered within the
//! scrape's timeout with that room's series and `roomengine_probe_success`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use tokio::sync::Semaphore;
use tokio::time::Instant;

use crate::api::{ApiClient, ErrorClass};
use crate::clock::unix_now_f64;
use crate::clock::unix_now_ms;
use crate::exposition::{render_room, write_families, RoomSnapshot, CONTENT_TYPE};
use crate::room::validate_room_id;
use crate::room::RoomUpdate;

/// Probes served at once; more wait (within their deadline) for a place.
pub const MAX_CONCURRENT_PROBES: usize = 32;
/// Prometheus's default scrape timeout, used when the header is absent.
const DEFAULT_SCRAPE_TIMEOUT: Duration = Duration::from_secs(10);
/// Kept back from the scrape timeout so our answer arrives before Prometheus gives up.
const ANSWER_MARGIN: Duration = Duration::from_millis(500);

pub struct Prober {
    client: Arc<ApiClient>,
    /// `probe.enabled` and `polling.seat_usage`; a reload may flip them.
    enabled: AtomicBool,
    seat_usage: AtomicBool,
    slots: Semaphore,
}

impl Prober {
    pub fn new(client: Arc<ApiClient>, enabled: bool, seat_usage: bool) -> Prober {
        Prober {
            client,
            enabled: AtomicBool::new(enabled),
            seat_usage: AtomicBool::new(seat_usage),
            slots: Semaphore::new(MAX_CONCURRENT_PROBES),
        }
    }

    pub fn enabled(&self) -> bool {
        self.enabled.load(Ordering::Relaxed)
    }

    pub fn reconfigure(&self, enabled: bool, seat_usage: bool) {
        self.enabled.store(enabled, Ordering::Relaxed);
        self.seat_usage.store(seat_usage, Ordering::Relaxed);
    }

    /// Fetches the room now; `up` false in the snapshot means the probe failed.
    async fn probe(&self, room_id: &str, deadline: Instant) -> RoomSnapshot {
        let mut snapshot = RoomSnapshot {
            room_id: room_id.into(),
            ..RoomSnapshot::default()
        };
        let Ok(Ok(_slot)) = tokio::time::timeout_at(deadline, self.slots.acquire()).await else {
            return snapshot;
        };
        let Ok(permit) = self.client.budget().acquire_before(deadline).await else {
            tracing::debug!(
                room_id,
                "probe: the budget cannot serve the call before the scrape times out"
            );
            return snapshot;
        };
        let sent_ms = unix_now_ms();
        match tokio::time::timeout_at(deadline, self.client.get_room_info(permit, room_id)).await {
            Ok(Ok(info)) => {
                let mut seats = None;
                if self.seat_usage.load(Ordering::Relaxed) && info.is_seat_enabled {
                    if let Ok(permit) = self.client.budget().acquire_before(deadline).await {
                        if let Ok(Ok(usage)) =
                            tokio::time::timeout_at(deadline, self.client.get_seat_list(permit, room_id))
                                .await
                        {
                            seats = Some(usage);
                        }
                    }
                }
                snapshot.facts.merge(&RoomUpdate::polled(info, seats, sent_ms));
                snapshot.up = true;
                snapshot.last_success = Some(unix_now_f64());
            }
            Ok(Err(e)) if e.class == ErrorClass::RoomGone => {
                snapshot.facts.merge(&RoomUpdate::gone(sent_ms));
            }
            Ok(Err(e)) => tracing::debug!(room_id, code = %e.code, error = %e, "probe failed"),
            Err(_) => tracing::debug!(room_id, "probe: no answer before the scrape timeout"),
        }
        snapshot
    }
}

pub async fn handler(
    State(prober): State<Arc<Prober>>,
    Query(params): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    if !prober.enabled() {
        return (
            StatusCode::NOT_FOUND,
            "probing is disabled (probe.enabled: false)\n",
        )
            .into_response();
    }
    let Some(room_id) = params.get("room_id") else {
        return (StatusCode::BAD_REQUEST, "missing parameter room_id\n").into_response();
    };
    if let Err(problem) = validate_room_id(room_id) {
        return (StatusCode::BAD_REQUEST, format!("bad room_id: {problem}\n")).into_response();
    }
    let started = Instant::now();
    let deadline = started + scrape_timeout(&headers).saturating_sub(ANSWER_MARGIN);
    let snapshot = prober.probe(room_id, deadline).await;
    let success = u8::from(snapshot.up);
    let rendered = render_room(&snapshot);
    let mut body = Vec::with_capacity(4096);
    write_families(std::iter::once(&rendered), &mut body);
    body.extend_from_slice(
        format!(
            "# HELP roomengine_probe_success 1 when the probe fetched the room's info.\n\
             # TYPE roomengine_probe_success gauge\nroomengine_probe_success {success}\n\
             # HELP roomengine_probe_duration_seconds How long the probe took.\n\
             # TYPE roomengine_probe_duration_seconds gauge\nroomengine_probe_duration_seconds {:.6}\n",
            started.elapsed().as_secs_f64()
        )
        .as_bytes(),
    );
    ([(header::CONTENT_TYPE, CONTENT_TYPE)], body).into_response()
}

fn scrape_timeout(headers: &HeaderMap) -> Duration {
    headers
        .get("X-Prometheus-Scrape-Timeout-Seconds")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<f64>().ok())
        .filter(|s| s.is_finite() && *s > 0.0)
        .map_or(DEFAULT_SCRAPE_TIMEOUT, |s| Duration::from_secs_f64(s.min(600.0)))
}

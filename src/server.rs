//! The HTTP side: `/metrics` (rooms from the store, then the exporter's own
//! metrics; gzip when asked), the landing page, `/-/healthy`, `/-/ready`, and
//! `/probe` when enabled. Scrapes only read snapshots; they never call the API.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use tower_http::compression::{CompressionLayer, CompressionLevel};

use crate::budget::Budget;
use crate::exposition::CONTENT_TYPE;
use crate::metrics::SelfMetrics;
use crate::probe::{self, Prober};
use crate::store::Store;

#[derive(Clone)]
pub struct AppState {
    pub store: Arc<Store>,
    pub metrics: Arc<SelfMetrics>,
    pub budget: Arc<Budget>,
    pub ready: Arc<AtomicBool>,
    pub telemetry_path: String,
    pub prober: Option<Arc<Prober>>,
}

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/", get(landing))
        .route(&state.telemetry_path, get(metrics))
        .route("/-/healthy", get(|| async { "Healthy\n" }))
        .route("/-/ready", get(ready))
        .route("/probe", get(probe::handler))
        // Level 1: a 10,000-room body (9 MB of very repetitive text) still
        // shrinks ~18x, at a fraction of the default level's CPU time; a
        // scrape waits for the compression, so its speed is what counts.
        .layer(CompressionLayer::new().quality(CompressionLevel::Fastest))
        .with_state(state)
}

async fn metrics(State(state): State<AppState>) -> Response {
    state.metrics.rate_limit_effective.set(state.budget.effective());
    // Pre-size from the store: a scrape of many rooms is one big copy.
    let mut body = Vec::with_capacity(4096 + state.store.capacity() * 1800);
    state.store.render_into(&mut body);
    state.metrics.render_into(&mut body);
    ([(header::CONTENT_TYPE, CONTENT_TYPE)], body).into_response()
}

async fn ready(State(state): State<AppState>) -> Response {
    if state.ready.load(Ordering::Acquire) {
        (StatusCode::OK, "Ready\n").into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "Not ready: the first pass over the rooms is still running\n",
        )
            .into_response()
    }
}

async fn landing(State(state): State<AppState>) -> Html<String> {
    let path = &state.telemetry_path;
    let probe = if state.prober.is_some() {
        "<li><a href=\"/probe?room_id=room-test\">/probe?room_id=…</a>: one room, fetched now (multi-target)</li>"
    } else {
        ""
    };
    Html(format!(
        "<!doctype html><html><head><title>Room Engine exporter</title></head><body>\
         <h1>Room Engine exporter</h1>\
         <p>Version {version}. Room metrics come from background polling of get_room_info; a scrape reads the latest snapshots.</p>\
         <ul><li><a href=\"{path}\">{path}</a>: metrics</li>\
         <li><a href=\"/-/healthy\">/-/healthy</a></li>\
         <li><a href=\"/-/ready\">/-/ready</a>: 200 once the first pass over all rooms is done</li>{probe}</ul>\
         </body></html>",
        version = env!("CARGO_PKG_VERSION"),
    ))
}

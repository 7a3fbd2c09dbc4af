//! The HTTP side: `/metrics` (rooms from the store, then the exporter's own
//! metrics; gzip when asked), the status page (`crate::status`), `/-/healthy`,
//! `/-/ready`, and `/probe` when enabled. Scrapes only read snapshots; they never call the API.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use bytes::Bytes;
use tower_http::compression::{CompressionLayer, CompressionLevel};

use crate::budget::Budget;
use crate::exposition::CONTENT_TYPE;
use crate::metrics::SelfMetrics;
use crate::probe::{self, Prober};
use crate::reload::Reloader;
use crate::store::Store;

#[derive(Clone)]
pub struct AppState {
    pub store: Arc<Store>,
    pub metrics: Arc<SelfMetrics>,
    pub budget: Arc<Budget>,
    pub ready: Arc<AtomicBool>,
    pub telemetry_path: String,
    pub prober: Arc<Prober>,
    pub reloader: Arc<Reloader>,
    /// The status page's journal (recent callbacks, API errors, room events).
    pub journal: Arc<crate::journal::Journal>,
}

impl axum::extract::FromRef<AppState> for Arc<Prober> {
    fn from_ref(state: &AppState) -> Arc<Prober> {
        state.prober.clone()
    }
}

pub fn router(state: AppState) -> Router {
    let status = crate::status::http::router(crate::status::http::View {
        journal: state.journal.clone(),
        store: state.store.clone(),
        metrics: state.metrics.clone(),
        budget: state.budget.clone(),
        reloader: state.reloader.clone(),
        telemetry_path: state.telemetry_path.clone(),
    });
    Router::new()
        .route(&state.telemetry_path, get(metrics))
        .route("/-/healthy", get(|| async { "Healthy\n" }))
        .route("/-/ready", get(ready))
        .route("/probe", get(probe::handler))
        .route("/-/reload", post(reload))
        .with_state(state)
        .merge(status)
        // Level 1: a 10,000-room body (9 MB of very repetitive text) still
        // shrinks ~18x, at a fraction of the default level's CPU time; a
        // scrape waits for the compression, so its speed is what counts.
        .layer(CompressionLayer::new().quality(CompressionLevel::Fastest))
}

/// The room families are sent as slices of the store's shard texts (no copy,
/// no per-scrape buffer: 20 scrapers of 10,000 rooms would otherwise hold 20
/// copies of 16 MB), then the exporter's own metrics.
async fn metrics(State(state): State<AppState>) -> Response {
    let mut pieces = state.store.scrape();
    pieces.push(state.store.aggregates());
    let mut own = Vec::with_capacity(8192);
    state.metrics.render_into(&mut own);
    pieces.push(Bytes::from(own));
    let length: usize = pieces.iter().map(Bytes::len).sum();
    let body = Body::from_stream(futures_util::stream::iter(
        pieces.into_iter().map(Ok::<_, std::convert::Infallible>),
    ));
    (
        [
            (header::CONTENT_TYPE, CONTENT_TYPE.to_owned()),
            (header::CONTENT_LENGTH, length.to_string()),
        ],
        body,
    )
        .into_response()
}

async fn ready(State(state): State<AppState>) -> Response {
    if state.ready.load(Ordering::Acquire) {
        (StatusCode::OK, "Ready\n").into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "Not ready: the first pass over the room set is still running\n",
        )
            .into_response()
    }
}

/// `POST /-/reload`, as Prometheus has it: 200 when the new configuration is
/// in use, 500 with every problem (the old configuration keeps running).
async fn reload(State(state): State<AppState>) -> Response {
    match state.reloader.reload().await {
        Ok(summary) => (StatusCode::OK, format!("{summary}\n")).into_response(),
        Err(problems) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("failed to reload config: {problems}\n"),
        )
            .into_response(),
    }
}

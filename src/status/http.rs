//! The status routes: `/` (HTML, or a text table for `Accept: text/plain`),
//! `/rooms/{id}`, `/status.json` and `/config`. Each render runs on the
//! blocking pool, so a page over 10,000 rooms never holds up a scrape or a
//! callback on the HTTP runtime.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use crate::budget::Budget;
use crate::clock::unix_now_ms;
use crate::config::Config;
use crate::journal::Journal;
use crate::metrics::SelfMetrics;
use crate::reload::Reloader;
use crate::status::model::{self, Figures, Inputs, ReloadAttemptView, ReloadView, Report, RoomQuery};
use crate::status::page::{self, Esc};
use crate::status::{config, text};
use crate::store::Store;

/// What the status routes read; cheap to clone.
#[derive(Clone)]
pub struct View {
    pub journal: Arc<Journal>,
    pub store: Arc<Store>,
    pub metrics: Arc<SelfMetrics>,
    pub budget: Arc<Budget>,
    pub reloader: Arc<Reloader>,
    pub telemetry_path: String,
}

pub fn router(view: View) -> Router {
    Router::new()
        .route("/", get(index))
        .route("/status.json", get(json))
        .route("/config", get(config_yaml))
        .route("/rooms/{id}", get(room))
        .with_state(view)
}

const HTML: &str = "text/html; charset=utf-8";
const TEXT: &str = "text/plain; charset=utf-8";

fn answer(status: StatusCode, content_type: &'static str, body: String) -> Response {
    (
        status,
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-store"),
        ],
        body,
    )
        .into_response()
}

/// Runs `work` on the blocking pool; a panic there is a 500, not a dropped connection.
async fn off_runtime(work: impl FnOnce() -> Response + Send + 'static) -> Response {
    tokio::task::spawn_blocking(work).await.unwrap_or_else(|e| {
        tracing::error!(error = %e, "status page render failed");
        answer(
            StatusCode::INTERNAL_SERVER_ERROR,
            TEXT,
            "status page render failed\n".into(),
        )
    })
}

fn reload_view(reloader: &Reloader, figures: &Figures) -> ReloadView {
    ReloadView {
        config_file: reloader.file().map(|p| p.display().to_string()),
        successful: figures.reload_ok != Some(0.0),
        last_success_timestamp: figures.reload_success_timestamp,
        last_attempt: reloader.last_reload().map(|last| ReloadAttemptView {
            timestamp: last.at_unix,
            ok: last.result.is_ok(),
            message: match last.result {
                Ok(m) | Err(m) => m,
            },
        }),
    }
}

/// Builds the report on the blocking pool and hands it to `render`.
async fn with_report(
    view: View,
    query: RoomQuery,
    render: impl FnOnce(&Report, &View, &Config) -> Response + Send + 'static,
) -> Response {
    let config = view.reloader.config().await;
    off_runtime(move || {
        let mut own = Vec::with_capacity(16 * 1024);
        view.metrics.render_into(&mut own);
        let figures = Figures::parse(&String::from_utf8_lossy(&own));
        let inputs = Inputs {
            config: &config,
            reload: reload_view(&view.reloader, &figures),
            figures,
            effective_rate: view.budget.effective(),
            now_ms: unix_now_ms(),
        };
        let report = model::report(&view.journal, &view.store, query, inputs);
        render(&report, &view, &config)
    })
    .await
}

/// Plain text only when asked for it and not for HTML (browsers ask for HTML first).
fn wants_text(headers: &HeaderMap) -> bool {
    let accept = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    accept.contains("text/plain") && !accept.contains("text/html")
}

async fn index(State(view): State<View>, Query(query): Query<RoomQuery>, headers: HeaderMap) -> Response {
    let as_text = wants_text(&headers);
    with_report(view, query, move |report, view, config| {
        if as_text {
            answer(StatusCode::OK, TEXT, text::render(report))
        } else {
            let html = page::status_page(report, &view.telemetry_path, config.probe_enabled);
            answer(StatusCode::OK, HTML, html)
        }
    })
    .await
}

async fn json(State(view): State<View>, Query(query): Query<RoomQuery>) -> Response {
    with_report(view, query, |report, _, _| {
        match serde_json::to_string_pretty(report) {
            Ok(body) => answer(StatusCode::OK, "application/json", body + "\n"),
            Err(e) => answer(
                StatusCode::INTERNAL_SERVER_ERROR,
                TEXT,
                format!("cannot encode the status: {e}\n"),
            ),
        }
    })
    .await
}

async fn config_yaml(State(view): State<View>) -> Response {
    let config = view.reloader.config().await;
    answer(StatusCode::OK, TEXT, config::render(&config))
}

async fn room(State(view): State<View>, Path(id): Path<String>, headers: HeaderMap) -> Response {
    let config = view.reloader.config().await;
    let as_json = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("application/json"));
    off_runtime(
        move || match model::room_detail(&view.journal, &view.store, &config, &id, unix_now_ms()) {
            Some(detail) if as_json => match serde_json::to_string_pretty(&detail) {
                Ok(body) => answer(StatusCode::OK, "application/json", body + "\n"),
                Err(e) => answer(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    TEXT,
                    format!("cannot encode the room: {e}\n"),
                ),
            },
            Some(detail) => answer(StatusCode::OK, HTML, page::room_page(&detail)),
            None => answer(
                StatusCode::NOT_FOUND,
                HTML,
                format!(
                "<!doctype html><html><head><meta charset=\"utf-8\"><title>No such room</title></head><body>\
                 <p><a href=\"/\">← status</a></p><p>Room {} is not in the room set (not configured, \
                 not announced by a callback, or forgotten after its destroy).</p></body></html>",
                Esc(&id)
            ),
            ),
        },
    )
    .await
}

//! The simulator's own API under `/sim/`, for tests, demos and benchmarks: list
//! rooms, create one, set a room's fields (which freezes its walk), destroy a
//! room, read the simulator's counters in Prometheus text, read or restart the
//! measurement period (`/sim/stats`, JSON), read the callback counters and the
//! rooms' fills (`/sim/fills`).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{Map, Value};

use super::world::{EditError, Editor, Room};
use super::Shared;
use crate::room::MAX_ROOM_ID_BYTES;

pub(crate) fn routes() -> Router<Arc<Shared>> {
    Router::new()
        .route("/sim/rooms", get(list_rooms).post(create_room))
        .route(
            "/sim/rooms/{id}",
            get(show_room).put(set_room).delete(destroy_room),
        )
        .route("/sim/metrics", get(metrics))
        .route("/sim/stats", get(period))
        .route("/sim/stats/reset", post(reset_period))
        .route("/sim/fills", get(fills))
        .route("/sim/callbacks", get(callbacks))
        .route("/sim/calls", get(calls))
        .route("/sim/calls/take", post(take_calls))
}

fn plain(status: StatusCode, message: String) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        message + "\n",
    )
        .into_response()
}

fn no_room(id: &str) -> Response {
    plain(StatusCode::NOT_FOUND, format!("no room {id}"))
}

/// `GET /sim/rooms`: every room, sorted by RoomId.
async fn list_rooms(State(shared): State<Arc<Shared>>) -> Json<Vec<Value>> {
    Json(shared.world().rooms().map(|r| r.to_control_json()).collect())
}

/// `GET /sim/rooms/{id}`.
async fn show_room(State(shared): State<Arc<Shared>>, Path(id): Path<String>) -> Response {
    match shared.world().room(&id) {
        Some(room) => Json(room.to_control_json()).into_response(),
        None => no_room(&id),
    }
}

/// A control body: a JSON object of RoomInfo fields.
fn fields_of(body: &[u8]) -> Result<Map<String, Value>, String> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(fields)) => Ok(fields),
        Ok(_) => {
            Err(r#"the body must be a JSON object of RoomInfo fields, e.g. {"MemberCount": 300}"#.into())
        }
        Err(e) => Err(format!("the body is not JSON: {e}")),
    }
}

fn edited(id: &str, result: Result<&Room, EditError>, status: StatusCode) -> Response {
    match result {
        Ok(room) => (status, Json(room.to_control_json())).into_response(),
        Err(EditError::NoSuchRoom) => no_room(id),
        Err(EditError::Invalid(why)) => plain(StatusCode::BAD_REQUEST, why),
        Err(EditError::AlreadyExists) => plain(StatusCode::CONFLICT, format!("room {id} exists")),
    }
}

/// `PUT /sim/rooms/{id}` with a JSON object of RoomInfo fields (and
/// optionally `SeatsOccupied`): sets them, freezes the room, answers the room.
async fn set_room(State(shared): State<Arc<Shared>>, Path(id): Path<String>, body: Bytes) -> Response {
    let fields = match fields_of(&body) {
        Ok(fields) => fields,
        Err(why) => return plain(StatusCode::BAD_REQUEST, why),
    };
    let mut world = shared.world();
    edited(&id, world.edit(&id, &fields, Editor::Control), StatusCode::OK)
}

/// `POST /sim/rooms` with RoomInfo fields, `RoomId` required (and optionally
/// `SeatsOccupied`): creates a frozen room from defaults and these; answers
/// 201 and the room, 409 when the ID exists.
async fn create_room(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    let fields = match fields_of(&body) {
        Ok(fields) => fields,
        Err(why) => return plain(StatusCode::BAD_REQUEST, why),
    };
    let id = match fields.get("RoomId").and_then(Value::as_str) {
        Some(id) if !id.is_empty() && id.len() <= MAX_ROOM_ID_BYTES => id.to_owned(),
        _ => {
            return plain(
                StatusCode::BAD_REQUEST,
                format!("RoomId must be a string of 1 to {MAX_ROOM_ID_BYTES} bytes"),
            )
        }
    };
    let mut world = shared.world();
    edited(
        &id,
        world.create(&id, &fields, Editor::Control),
        StatusCode::CREATED,
    )
}

/// `GET /sim/callbacks`: callbacks sent, failed and dropped, and sent by command.
async fn callbacks(State(shared): State<Arc<Shared>>) -> Json<super::CallbackStats> {
    Json(shared.callbacks.stats())
}

/// `DELETE /sim/rooms/{id}`: the room is destroyed; the API answers 100004 from now on.
async fn destroy_room(State(shared): State<Arc<Shared>>, Path(id): Path<String>) -> Response {
    if shared.world().destroy(&id) {
        StatusCode::NO_CONTENT.into_response()
    } else {
        no_room(&id)
    }
}

/// `GET /sim/metrics`: calls, answers, the busiest second, and the room count.
async fn metrics(State(shared): State<Arc<Shared>>) -> Response {
    let rooms = shared.world().len();
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
        shared.stats.render(rooms) + &shared.callbacks.render(),
    )
        .into_response()
}

/// `GET /sim/stats`: the measurement period since the last reset (or the
/// start): calls, calls/s, the busiest one-second window, answers by code,
/// and the spread of intervals between successive polls of the same room.
async fn period(State(shared): State<Arc<Shared>>) -> Json<super::stats::PeriodStats> {
    Json(shared.stats.period())
}

/// `GET /sim/fills`: every room that reached its MaxMemberCount in a tick,
/// oldest first: `[{"room_id": "room-0011", "at_unix": 1764576000.0}, ...]`.
async fn fills(State(shared): State<Arc<Shared>>) -> Json<Vec<super::stats::Fill>> {
    Json(shared.stats.fills())
}

/// The call log as `/sim/calls` shows it.
#[derive(serde::Serialize)]
struct CallLog {
    /// Calls the log could not keep (it was full), since the start.
    dropped: u64,
    calls: Vec<super::CallRecord>,
}

/// `GET /sim/calls`: the calls logged since the last take (with `--call-log N`),
/// `{"dropped": 0, "calls": [{"at_unix": 1764576000.25, "peer_port": 40312,
/// "api": "get_room_info", "room_id": "room-0001", "code": "0"}, ...]}`.
async fn calls(State(shared): State<Arc<Shared>>) -> Json<CallLog> {
    Json(CallLog {
        dropped: shared.stats.call_log_dropped(),
        calls: shared.stats.call_log(),
    })
}

/// `POST /sim/calls/take`: the same, and the log is emptied.
async fn take_calls(State(shared): State<Arc<Shared>>) -> Json<CallLog> {
    Json(CallLog {
        dropped: shared.stats.call_log_dropped(),
        calls: shared.stats.take_call_log(),
    })
}

/// `POST /sim/stats/reset`: starts a new measurement period; answers 204.
async fn reset_period(State(shared): State<Arc<Shared>>) -> StatusCode {
    shared.stats.reset_period();
    StatusCode::NO_CONTENT
}

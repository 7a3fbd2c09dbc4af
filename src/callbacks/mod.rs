//! The receiver of Tencent's Room Engine callbacks, on its own listener:
//! method, SdkAppid and Sign are checked before the body is read, the body
//! is size- and time-capped, decoded, applied to the room set, and answered
//! OK only once the room set has it durably.

pub mod auth;
pub mod command;
pub mod decode;
pub mod metrics;

use std::borrow::Cow;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use axum::Router;
use http_body_util::{BodyExt, LengthLimitError, Limited};

use crate::config::SecretKey;
use crate::roomset::{Refusal as RoomRefusal, RoomSet};

use auth::{Query, Refusal};
pub use metrics::{CallbackMetrics, REJECT_REASONS};

/// Bodies larger than this are refused (the largest real one, a seat list, is a few KiB).
pub const MAX_BODY_BYTES: usize = 1 << 20;
/// A body that has not fully arrived by then is cut off.
pub const BODY_TIMEOUT: Duration = Duration::from_secs(5);
/// How long an answer may wait for the room set before it is a 503.
const STORE_TIMEOUT: Duration = Duration::from_secs(5);

const OK_ANSWER: &str = r#"{"ActionStatus":"OK","ErrorInfo":"","ErrorCode":0}"#;

/// What the receiver needs; shared by every request.
pub struct Receiver {
    pub sdkappid: u64,
    pub token: Option<SecretKey>,
    pub room_set: RoomSet,
    pub metrics: CallbackMetrics,
    /// The status page's journal: every callback, refused ones with their reason.
    pub journal: Arc<crate::journal::Journal>,
}

/// The callback listener's routes: `path`, any method (others answer 405 there).
pub fn router(receiver: Arc<Receiver>, path: &str) -> Router {
    Router::new()
        .route(path, any(receive))
        .fallback(|| async { (StatusCode::NOT_FOUND, "not the callback path\n") })
        .with_state(receiver)
}

async fn receive(State(receiver): State<Arc<Receiver>>, request: Request) -> Response {
    let started = Instant::now();
    let (peer, mut seen) = (crate::journal::peer_of(&request), None);
    let answer = match handle(&receiver, request, &mut seen).await {
        Ok((command, refused)) => {
            receiver.metrics.accepted.with_label_values(&[command]).inc();
            let seen = seen.as_ref().map(|s| &s.0);
            // Answered OK (the app's flow is never blocked), but listed apart.
            if let Some(why) = refused {
                receiver.journal.callback_of_refused_room(command, seen);
                receiver.journal.refused(why.label(), 200, peer);
            } else {
                receiver.journal.callback(command, seen, 200);
            }
            ([(header::CONTENT_TYPE, "application/json")], OK_ANSWER).into_response()
        }
        Err(Rejected::Refused(reason, status, message)) => {
            receiver.metrics.rejected.with_label_values(&[reason]).inc();
            tracing::debug!(reason, %message, "callback rejected");
            receiver.journal.refused(reason, status.as_u16(), peer);
            plain(status, message)
        }
        Err(Rejected::Failed(status, message)) => {
            receiver.journal.callback(
                seen.as_ref().map_or("other", |s| s.1),
                seen.as_ref().map(|s| &s.0),
                status.as_u16(),
            );
            plain(status, message)
        }
    };
    receiver.metrics.duration.observe(started.elapsed().as_secs_f64());
    answer
}

enum Rejected {
    /// Bad input: counted by reason, nothing changed.
    Refused(&'static str, StatusCode, String),
    /// Not the sender's fault (slow body, storage down): not a rejection.
    Failed(StatusCode, String),
}

fn refused(reason: &'static str, status: StatusCode, message: impl Into<String>) -> Rejected {
    Rejected::Refused(reason, status, message.into())
}

/// Applies one callback; the label it counts under when accepted, and the
/// refusal its room met in the room set (answered OK all the same).
async fn handle(
    receiver: &Receiver,
    request: Request,
    seen: &mut Option<(crate::journal::Seen, &'static str)>,
) -> Result<(&'static str, Option<RoomRefusal>), Rejected> {
    if request.method() != Method::POST {
        return Err(refused(
            "method",
            StatusCode::METHOD_NOT_ALLOWED,
            format!("method {} not allowed: callbacks are POSTed", request.method()),
        ));
    }
    let (parts, body) = request.into_parts();
    let query = Query::parse(parts.uri.query().unwrap_or(""));
    let now = crate::clock::unix_now();
    auth::check(&query, receiver.sdkappid, receiver.token.as_ref(), now).map_err(|r| match r {
        Refusal::SdkAppid(m) => refused("sdkappid", StatusCode::FORBIDDEN, m),
        Refusal::Signature(m) => refused("signature", StatusCode::UNAUTHORIZED, m),
        Refusal::RequestTime(m) => refused("request_time", StatusCode::UNAUTHORIZED, m),
    })?;
    let body = read_body(body).await?;
    let name = match query.command {
        Some(name) => name,
        None => command_in(&body).map(Cow::Owned).ok_or_else(|| {
            refused(
                "malformed",
                StatusCode::BAD_REQUEST,
                "malformed callback: CallbackCommand is missing from the query and the body",
            )
        })?,
    };
    let Some(handled) = command::find(&name) else {
        return Ok((command::OTHER, None));
    };
    let event = decode::decode(handled.command, &body).map_err(|e| {
        refused(
            "malformed",
            StatusCode::BAD_REQUEST,
            format!("malformed callback: {e}"),
        )
    })?;
    *seen = Some((crate::journal::Seen::of(&event), handled.name));
    match tokio::time::timeout(STORE_TIMEOUT, receiver.room_set.apply(event)).await {
        Ok(Ok(refused)) => Ok((handled.name, refused)),
        Ok(Err(e)) => Err(Rejected::Failed(StatusCode::SERVICE_UNAVAILABLE, e)),
        Err(_) => Err(Rejected::Failed(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("the room set did not store the callback within {STORE_TIMEOUT:?}"),
        )),
    }
}

/// The whole body, refusing more than [`MAX_BODY_BYTES`] without reading on.
async fn read_body(body: Body) -> Result<bytes::Bytes, Rejected> {
    let too_large = || {
        refused(
            "too_large",
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("callback body over {MAX_BODY_BYTES} bytes"),
        )
    };
    // A declared Content-Length makes the lower bound exact: refuse before reading.
    if http_body::Body::size_hint(&body).lower() > MAX_BODY_BYTES as u64 {
        return Err(too_large());
    }
    match tokio::time::timeout(BODY_TIMEOUT, Limited::new(body, MAX_BODY_BYTES).collect()).await {
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
        Ok(Err(e)) if e.downcast_ref::<LengthLimitError>().is_some() => Err(too_large()),
        Ok(Err(e)) => Err(Rejected::Failed(
            StatusCode::BAD_REQUEST,
            format!("cannot read the callback body: {e}"),
        )),
        Err(_) => Err(Rejected::Failed(
            StatusCode::REQUEST_TIMEOUT,
            format!("callback body not received within {BODY_TIMEOUT:?}"),
        )),
    }
}

/// `CallbackCommand` from the body, for a request whose query lacks it.
fn command_in(body: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Named {
        #[serde(rename = "CallbackCommand")]
        command: String,
    }
    serde_json::from_slice::<Named>(body).ok().map(|n| n.command)
}

fn plain(status: StatusCode, message: String) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        format!("{message}\n"),
    )
        .into_response()
}

//! The Tencent paths `/v4/{service}/{command}`: each request is checked as
//! Tencent documents it (method, URL parameters, SDKAppID, rate limit, UserSig,
//! body) and answered HTTP 200 with the documented ErrorCode, unless an
//! injected fault answers 502 or truncated JSON instead.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{ConnectInfo, Path, RawQuery, State};
use axum::http::{header, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use axum::{Extension, Router};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Map, Value};

use super::callbacks::Setting;
use super::stats::Caller;
use super::world::{EditError, Editor, Room};
use super::{Shared, SimOptions};
use crate::config::SecretKey;
use crate::room::MAX_ROOM_ID_BYTES;
use crate::usersig;

pub(crate) fn routes() -> Router<Arc<Shared>> {
    Router::new().route("/v4/{service}/{command}", any(call))
}

/// Who may call: the one app and its administrator.
pub(crate) struct Auth {
    pub sdkappid: u64,
    pub identifier: String,
    pub key: SecretKey,
}

/// The share of calls that fail on purpose, and the RNG that picks them.
pub(crate) struct Faults {
    http_error: f64,
    malformed: f64,
    internal: f64,
    rng: Mutex<StdRng>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    HttpError,
    Malformed,
    Internal,
}

impl Faults {
    pub fn new(options: &SimOptions) -> Faults {
        Faults {
            http_error: options.http_error_rate,
            malformed: options.malformed_rate,
            internal: options.fault_rate,
            rng: Mutex::new(StdRng::seed_from_u64(options.seed)),
        }
    }

    fn roll(&self) -> Option<Fault> {
        if self.http_error + self.malformed + self.internal == 0.0 {
            return None;
        }
        let x: f64 = self.rng.lock().unwrap_or_else(|p| p.into_inner()).random();
        if x < self.http_error {
            Some(Fault::HttpError)
        } else if x < self.http_error + self.malformed {
            Some(Fault::Malformed)
        } else if x < self.http_error + self.malformed + self.internal {
            Some(Fault::Internal)
        } else {
            None
        }
    }
}

/// The calls served, by `{service}/{command}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Api {
    GetRoomInfo,
    GetSeatList,
    GetRoomMemberList,
    CreateRoom,
    DestroyRoom,
    UpdateRoomInfo,
    SetCallback,
    UpdateCallback,
    GetCallback,
}

impl Api {
    fn from_path(service: &str, command: &str) -> Option<Api> {
        Some(match (service, command) {
            ("room_engine_http_srv", "get_room_info") => Api::GetRoomInfo,
            ("room_engine_http_srv", "get_room_member_list") => Api::GetRoomMemberList,
            ("room_engine_http_srv", "create_room") => Api::CreateRoom,
            ("room_engine_http_srv", "destroy_room") => Api::DestroyRoom,
            ("room_engine_http_srv", "update_room_info") => Api::UpdateRoomInfo,
            // Seats live in another service: `_mic`, not `_srv`.
            ("room_engine_http_mic", "get_seat_list") => Api::GetSeatList,
            ("room_config", "set_callback") => Api::SetCallback,
            ("room_config", "update_callback") => Api::UpdateCallback,
            ("room_config", "get_callback") => Api::GetCallback,
            _ => return None,
        })
    }

    /// The `api` label in `/sim/metrics`.
    fn label(api: Option<Api>) -> &'static str {
        match api {
            Some(Api::GetRoomInfo) => "get_room_info",
            Some(Api::GetSeatList) => "get_seat_list",
            Some(Api::GetRoomMemberList) => "get_room_member_list",
            Some(Api::CreateRoom) => "create_room",
            Some(Api::DestroyRoom) => "destroy_room",
            Some(Api::UpdateRoomInfo) => "update_room_info",
            Some(Api::SetCallback) => "set_callback",
            Some(Api::UpdateCallback) => "update_callback",
            Some(Api::GetCallback) => "get_callback",
            None => "unknown",
        }
    }
}

/// How a call is answered.
#[derive(Debug)]
enum Answer {
    /// ErrorCode 0, with a `Response` object when the call returns data.
    Ok(Option<Value>),
    /// A documented ErrorCode and its ErrorInfo.
    Fail(u32, String),
    /// HTTP 502 with an HTML page, as a gateway gives.
    BadGateway,
    /// The answer's JSON cut in half.
    Truncated(Box<Answer>),
}

fn fail(code: u32, info: impl Into<String>) -> Answer {
    Answer::Fail(code, info.into())
}

impl Answer {
    /// The `code` label for `/sim/metrics`.
    fn code_label(&self) -> String {
        match self {
            Answer::Ok(_) => "0".into(),
            Answer::Fail(code, _) => code.to_string(),
            Answer::BadGateway => "http_502".into(),
            Answer::Truncated(_) => "malformed".into(),
        }
    }

    fn body(self) -> String {
        let (code, info, response) = match self {
            Answer::Ok(response) => (0, String::new(), response),
            Answer::Fail(code, info) => (code, info, None),
            Answer::BadGateway => return BAD_GATEWAY_PAGE.into(),
            Answer::Truncated(inner) => {
                let mut body = inner.body();
                let mut cut = body.len() / 2;
                while !body.is_char_boundary(cut) {
                    cut -= 1;
                }
                body.truncate(cut);
                return body;
            }
        };
        let mut rng = rand::rng();
        let mut doc = json!({
            "ActionStatus": if code == 0 { "OK" } else { "FAIL" },
            "ErrorCode": code,
            "ErrorInfo": info,
            "RequestId": format!("Id-{:032x}-O-Seq-{}", rng.random::<u128>(), rng.random_range(10_000..100_000)),
        });
        if let (Some(response), Some(object)) = (response, doc.as_object_mut()) {
            object.insert("Response".into(), response);
        }
        doc.to_string()
    }

    fn into_response(self) -> Response {
        let (status, content_type) = match self {
            Answer::BadGateway => (StatusCode::BAD_GATEWAY, "text/html"),
            _ => (StatusCode::OK, "application/json"),
        };
        (status, [(header::CONTENT_TYPE, content_type)], self.body()).into_response()
    }
}

const BAD_GATEWAY_PAGE: &str = "<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n\
<center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>stgw</center>\r\n</body>\r\n</html>\r\n";

/// Every Tencent path: count the call, decide the answer, wait the latency.
/// The client's address is known when the server was started with connect
/// info (as [`super::Simulator::start`] does), for the call log.
async fn call(
    State(shared): State<Arc<Shared>>,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
    method: Method,
    Path((service, command)): Path<(String, String)>,
    RawQuery(query): RawQuery,
    body: Bytes,
) -> Response {
    let api = Api::from_path(&service, &command);
    let label = Api::label(api);
    let _busy = shared.stats.begin_call();
    let arrival = shared.stats.record_call(label);
    let checked = check(
        &shared,
        api,
        &method,
        query.as_deref().unwrap_or(""),
        &body,
        arrival.in_window,
    );
    // The room the call names, for the call log: from the checked body, or
    // (a rejected call, e.g. 60011) read from the body here.
    let logged_room = match &checked {
        _ if !shared.stats.logs_calls() => None,
        Ok((_, request)) => named_room(request),
        Err(_) => serde_json::from_slice::<Map<String, Value>>(&body)
            .ok()
            .as_ref()
            .and_then(named_room),
    };
    let answer = match checked {
        Err(rejection) => rejection,
        Ok((api, request)) => {
            if api == Api::GetRoomInfo {
                if let Some(id) = request.get("RoomId").and_then(Value::as_str) {
                    shared.stats.record_poll(id, arrival.at);
                }
            }
            match shared.faults.roll() {
                Some(Fault::HttpError) => Answer::BadGateway,
                Some(Fault::Internal) => fail(100001, "internal server error, please retry"),
                Some(Fault::Malformed) => Answer::Truncated(Box::new(execute(&shared, api, &request))),
                None => execute(&shared, api, &request),
            }
        }
    };
    let caller = Caller {
        peer_port: peer.map_or(0, |Extension(ConnectInfo(addr))| addr.port()),
        room_id: logged_room.as_deref(),
    };
    shared
        .stats
        .record_answer(label, &answer.code_label(), &arrival, caller);
    let delay = jittered(shared.latency);
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    answer.into_response()
}

/// The room a request body names, for the call log: `RoomId` at the top
/// level (get_room_info, get_seat_list, ...) or in `RoomInfo` (create_room,
/// update_room_info); none past the API's 48 bytes.
fn named_room(request: &Map<String, Value>) -> Option<String> {
    let id = request.get("RoomId").or_else(|| {
        request
            .get("RoomInfo")
            .and_then(Value::as_object)
            .and_then(|info| info.get("RoomId"))
    })?;
    id.as_str()
        .filter(|id| id.len() <= MAX_ROOM_ID_BYTES)
        .map(str::to_owned)
}

/// `mean` times a random factor in [0.5, 1.5).
fn jittered(mean: Duration) -> Duration {
    if mean.is_zero() {
        return mean;
    }
    mean.mul_f64(rand::rng().random_range(0.5..1.5))
}

/// The URL parameters every call carries; the first of a repeated one counts.
#[derive(Default)]
struct Params {
    sdkappid: Option<String>,
    identifier: Option<String>,
    usersig: Option<String>,
    random: Option<String>,
    contenttype: Option<String>,
}

impl Params {
    fn parse(query: &str) -> Params {
        let mut params = Params::default();
        for (key, value) in url::form_urlencoded::parse(query.as_bytes()) {
            let slot = match key.as_ref() {
                "sdkappid" => &mut params.sdkappid,
                "identifier" => &mut params.identifier,
                "usersig" => &mut params.usersig,
                "random" => &mut params.random,
                "contenttype" => &mut params.contenttype,
                _ => continue,
            };
            slot.get_or_insert_with(|| value.into_owned());
        }
        params
    }
}

/// The checks every call passes, in the order the server makes them; the
/// first that fails answers. Returns the API and the JSON body.
fn check(
    shared: &Shared,
    api: Option<Api>,
    method: &Method,
    query: &str,
    body: &[u8],
    calls_in_window: usize,
) -> Result<(Api, Map<String, Value>), Answer> {
    if method != Method::POST {
        return Err(fail(
            60002,
            format!("HTTP parse error: the REST API takes POST, not {method}"),
        ));
    }
    let api = api.ok_or_else(|| fail(60009, "request resource error: no such service/command"))?;
    let params = Params::parse(query);
    if params.contenttype.as_deref() != Some("json") {
        return Err(fail(
            60002,
            "HTTP parse error: the URL must carry contenttype=json",
        ));
    }
    if params
        .random
        .as_deref()
        .and_then(|r| r.parse::<u32>().ok())
        .is_none()
    {
        return Err(fail(
            60002,
            "HTTP parse error: random must be a 32-bit unsigned integer",
        ));
    }
    let sdkappid = params
        .sdkappid
        .as_deref()
        .and_then(|s| s.parse::<u64>().ok())
        .ok_or_else(|| fail(60002, "HTTP parse error: sdkappid is missing or not a number"))?;
    let identifier = params
        .identifier
        .filter(|i| !i.is_empty())
        .ok_or_else(|| fail(60004, "identifier is missing from the URL"))?;
    let usersig = params
        .usersig
        .filter(|u| !u.is_empty())
        .ok_or_else(|| fail(70002, "UserSig is empty"))?;
    let auth = &shared.auth;
    if sdkappid != auth.sdkappid {
        return Err(fail(60006, format!("SDKAppID {sdkappid} is invalid")));
    }
    if calls_in_window > shared.rate_limit as usize {
        return Err(fail(
            60011,
            format!(
                "SDKAppID {sdkappid} is over its limit of {} calls per second",
                shared.rate_limit
            ),
        ));
    }
    let claims = usersig::decode(&usersig).map_err(|e| fail(70003, format!("UserSig is invalid: {e}")))?;
    if claims.sdkappid != sdkappid {
        return Err(fail(
            70014,
            format!(
                "sdkappid {sdkappid} in the request differs from the UserSig's {}",
                claims.sdkappid
            ),
        ));
    }
    if claims.identifier != identifier {
        return Err(fail(
            70013,
            format!(
                "identifier {identifier:?} in the request differs from the UserSig's {:?}",
                claims.identifier
            ),
        ));
    }
    let now = shared.clock.now_unix();
    if claims.is_expired(now) {
        return Err(fail(
            70001,
            format!("UserSig expired at {}; server time is {now}", claims.expires_at()),
        ));
    }
    if !claims.signature_matches(&auth.key) {
        return Err(fail(
            70009,
            "UserSig signature does not verify: signed with another app's key?",
        ));
    }
    if identifier != auth.identifier {
        return Err(fail(60010, format!("{identifier:?} is not an app administrator")));
    }
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(request)) => Ok((api, request)),
        Ok(_) => Err(fail(
            60003,
            "HTTP request JSON parse error: the body must be a JSON object",
        )),
        Err(e) => Err(fail(60003, format!("HTTP request JSON parse error: {e}"))),
    }
}

/// The `RoomId` a call names: present, a string, 1 to 48 bytes.
fn room_id_of(object: &Map<String, Value>) -> Result<&str, Answer> {
    match object.get("RoomId") {
        None => Err(fail(100002, "invalid parameter: RoomId is missing")),
        Some(Value::String(id)) if id.is_empty() => Err(fail(100002, "invalid parameter: RoomId is empty")),
        Some(Value::String(id)) if id.len() > MAX_ROOM_ID_BYTES => Err(fail(
            100002,
            format!("invalid parameter: RoomId is longer than {MAX_ROOM_ID_BYTES} bytes"),
        )),
        Some(Value::String(id)) => Ok(id),
        Some(other) => Err(fail(
            100002,
            format!("invalid parameter: RoomId must be a string, not {other}"),
        )),
    }
}

/// The `RoomInfo` object of create_room and update_room_info.
fn room_info_of(request: &Map<String, Value>) -> Result<&Map<String, Value>, Answer> {
    request
        .get("RoomInfo")
        .and_then(Value::as_object)
        .ok_or_else(|| fail(100002, "invalid parameter: RoomInfo object is missing"))
}

fn no_room(id: &str) -> Answer {
    fail(
        100004,
        format!("room {id} does not exist, or it has been destroyed"),
    )
}

fn edit_failure(id: &str, error: EditError) -> Answer {
    match error {
        EditError::NoSuchRoom => no_room(id),
        EditError::AlreadyExists => fail(100003, format!("room ID {id} is already in use")),
        EditError::Invalid(why) => fail(100002, format!("invalid parameter: {why}")),
    }
}

/// Runs a checked call against the world.
fn execute(shared: &Shared, api: Api, request: &Map<String, Value>) -> Answer {
    match try_execute(shared, api, request) {
        Ok(response) => Answer::Ok(response),
        Err(answer) => answer,
    }
}

fn try_execute(shared: &Shared, api: Api, request: &Map<String, Value>) -> Result<Option<Value>, Answer> {
    let setting = match api {
        Api::GetCallback => return Ok(Some(shared.callbacks.get())),
        Api::SetCallback => Some(Setting::Set),
        Api::UpdateCallback => Some(Setting::Update),
        _ => None,
    };
    if let Some(setting) = setting {
        return match shared.register_callback(request, setting) {
            Ok(()) => Ok(None),
            Err(why) => Err(fail(100002, format!("invalid parameter: {why}"))),
        };
    }
    let mut world = shared.world();
    match api {
        Api::GetRoomInfo => {
            let id = room_id_of(request)?;
            let room = world.room(id).ok_or_else(|| no_room(id))?;
            Ok(Some(json!({ "RoomInfo": room.info })))
        }
        Api::GetSeatList => {
            let id = room_id_of(request)?;
            let room = world.room(id).ok_or_else(|| no_room(id))?;
            if !room.info.is_seat_enabled {
                return Err(fail(100211, format!("room {id} does not support seats")));
            }
            let seats: Vec<Value> = room.seats.iter().map(|s| s.to_json()).collect();
            Ok(Some(json!({ "SeatList": seats })))
        }
        Api::GetRoomMemberList => {
            let id = room_id_of(request)?;
            let room = world.room(id).ok_or_else(|| no_room(id))?;
            Ok(Some(member_page(room, request)?))
        }
        Api::DestroyRoom => {
            let id = room_id_of(request)?;
            if world.destroy(id) {
                Ok(None)
            } else {
                Err(no_room(id))
            }
        }
        Api::CreateRoom => {
            let info = room_info_of(request)?;
            let id = room_id_of(info)?;
            world
                .create(id, info, Editor::CreateApi)
                .map_err(|e| edit_failure(id, e))?;
            Ok(None)
        }
        Api::UpdateRoomInfo => {
            let info = room_info_of(request)?;
            let id = room_id_of(info)?;
            world
                .edit(id, info, Editor::UpdateApi)
                .map_err(|e| edit_failure(id, e))?;
            Ok(None)
        }
        // Answered above, without the world's lock (registering takes it).
        Api::SetCallback | Api::UpdateCallback | Api::GetCallback => Ok(None),
    }
}

/// One page of get_room_member_list: `Count` members (default 50, at most
/// 100) from the offset in `Next` (`""` is the start).
fn member_page(room: &Room, request: &Map<String, Value>) -> Result<Value, Answer> {
    let count = match request.get("Count") {
        None => 50,
        Some(value) => value
            .as_u64()
            .filter(|n| (1..=100).contains(n))
            .ok_or_else(|| fail(100002, "invalid parameter: Count must be 1 to 100"))?,
    };
    let from = match request.get("Next").and_then(Value::as_str) {
        None | Some("") => 0,
        Some(next) => next
            .parse::<u32>()
            .map_err(|_| fail(100002, "invalid parameter: Next is not a value this API returned"))?,
    };
    let accounts = room.member_accounts(from, count as u32);
    let end = from + accounts.len() as u32;
    let members: Vec<Value> = accounts
        .into_iter()
        .enumerate()
        .map(|(i, account)| {
            let role = if i == 0 && from == 0 { "Owner" } else { "General" };
            json!({ "Member_Account": account, "NameCard": "", "Role": role, "Marks": [], "CustomInfo": "" })
        })
        .collect();
    let next = if end < room.info.member_count {
        end.to_string()
    } else {
        String::new()
    };
    Ok(json!({ "Next": next, "MemberList": members }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn params_keep_the_first_of_a_repeated_key() {
        let p = Params::parse("sdkappid=1&sdkappid=2&usersig=a%2Ab&random=7&contenttype=json");
        assert_eq!(p.sdkappid.as_deref(), Some("1"));
        assert_eq!(p.usersig.as_deref(), Some("a*b"));
        assert_eq!(p.identifier, None);
    }

    #[test]
    fn a_truncated_answer_is_not_json() {
        let body = Answer::Truncated(Box::new(Answer::Ok(Some(json!({"RoomInfo": {"RoomId": "r"}}))))).body();
        assert!(body.starts_with('{'));
        assert!(serde_json::from_str::<Value>(&body).is_err());
    }
}

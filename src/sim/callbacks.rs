//! The simulator's side of Room Engine callbacks: the registration that
//! `room_config/set_callback` stores, and the sender that POSTs the world's
//! events to it as Tencent does (signed, delayed, lossy, no retry, bounded).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::Rng;
use serde::Serialize;
use serde_json::{json, Map, Value};

use tokio::sync::{mpsc, Semaphore};
use tokio_util::sync::CancellationToken;

use super::world::{Change, Event, Leaving, Seat};
use super::Shared;
use crate::callbacks::command::{self, Command};
use crate::clock::unix_now;

/// Deliveries in flight at once (their random delay included).
const MAX_IN_FLIGHT: usize = 256;
/// Callbacks waiting for a delivery slot; beyond this they are dropped.
const QUEUE: usize = 10_000;
/// Tencent asks receivers to answer within 2 s.
const TIMEOUT: Duration = Duration::from_secs(2);
/// A receiver's answer is `{"ActionStatus":"OK",...}`: more is not read.
const MAX_ANSWER_BYTES: usize = 64 * 1024;

/// The one callback URL of the app and the commands sent to it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Registration {
    pub url: String,
    pub commands: Vec<String>,
}

/// What the sender did, as `GET /sim/callbacks` shows it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct CallbackStats {
    /// Delivered and answered HTTP 200 with ActionStatus OK.
    pub sent: u64,
    /// Delivered but answered otherwise, or a transport error or timeout.
    pub failed: u64,
    /// Never sent: lost on purpose (`--callback-loss`) or the queue was full.
    pub dropped: u64,
    /// Callbacks sent (as in `sent`) per command.
    pub by_command: BTreeMap<String, u64>,
}

/// How the sender is set up (from [`super::SimOptions`]).
pub(crate) struct SenderOptions {
    pub sdkappid: u64,
    pub token: Option<String>,
    pub delay: Duration,
    pub loss: f64,
}

/// One callback ready to go.
struct Job {
    command: &'static str,
    /// The URL with every query parameter but Sign and RequestTime.
    url: String,
    body: String,
    delay: Duration,
}

pub(crate) struct Callbacks {
    options: SenderOptions,
    registration: Mutex<Option<Registration>>,
    stats: Mutex<CallbackStats>,
    http: reqwest::Client,
    queue: mpsc::Sender<Job>,
    /// Taken by [`run`] when the simulator starts.
    waiting: Mutex<Option<mpsc::Receiver<Job>>>,
}

/// `Sign` of a callback as Tencent's Live docs define it: lowercase hex
/// SHA-256 of the token then RequestTime (decimal Unix seconds). Written
/// here rather than borrowed from the receiver, so that each side is
/// checked against the documented vector, not against the other.
pub fn sign(token: &str, request_time: u64) -> String {
    use sha2::{Digest, Sha256};
    use std::fmt::Write as _;
    let digest = Sha256::digest(format!("{token}{request_time}").as_bytes());
    let mut hex = String::with_capacity(64);
    for byte in digest {
        // Writing to a String cannot fail.
        let _ = write!(hex, "{byte:02x}");
    }
    hex
}

/// Whether set_callback or update_callback is asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Setting {
    /// Replaces whatever was set; both fields required.
    Set,
    /// Changes a registration that exists; a field left out is kept.
    Update,
}

impl Callbacks {
    pub fn new(options: SenderOptions) -> Result<Callbacks, crate::BoxError> {
        let http = reqwest::Client::builder()
            .timeout(TIMEOUT)
            .user_agent("roomengine-sim-callbacks")
            .build()
            .map_err(|e| format!("cannot build the callback HTTP client: {e}"))?;
        let (queue, waiting) = mpsc::channel(QUEUE);
        Ok(Callbacks {
            options,
            registration: Mutex::new(None),
            stats: Mutex::new(CallbackStats::default()),
            http,
            queue,
            waiting: Mutex::new(Some(waiting)),
        })
    }

    fn registration(&self) -> std::sync::MutexGuard<'_, Option<Registration>> {
        self.registration.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn counters(&self) -> std::sync::MutexGuard<'_, CallbackStats> {
        self.stats.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn stats(&self) -> CallbackStats {
        self.counters().clone()
    }

    /// The registration now, if any.
    pub fn current(&self) -> Option<Registration> {
        self.registration().clone()
    }

    /// set_callback / update_callback with `request`'s `Url` and
    /// `CallbackCommandList`; the error says which parameter is wrong.
    pub fn set(&self, request: &Map<String, Value>, setting: Setting) -> Result<(), String> {
        let url = request.get("Url").map(valid_url).transpose()?;
        let commands = request
            .get("CallbackCommandList")
            .map(valid_commands)
            .transpose()?;
        let mut registration = self.registration();
        let next = match (setting, registration.take()) {
            (Setting::Update, None) => {
                return Err("no callback is set: call set_callback first".into());
            }
            (Setting::Update, Some(old)) if url.is_none() && commands.is_none() => {
                *registration = Some(old);
                return Err("Url or CallbackCommandList is required".into());
            }
            (Setting::Update, Some(old)) => Registration {
                url: url.unwrap_or(old.url),
                commands: commands.unwrap_or(old.commands),
            },
            (Setting::Set, old) => match (url, commands) {
                (Some(url), Some(commands)) => Registration { url, commands },
                (url, _) => {
                    *registration = old;
                    let missing = if url.is_none() {
                        "Url"
                    } else {
                        "CallbackCommandList"
                    };
                    return Err(format!("{missing} is missing"));
                }
            },
        };
        *registration = Some(next);
        Ok(())
    }

    /// Forgets the registration: nothing is sent any more.
    pub fn clear(&self) {
        *self.registration() = None;
    }

    /// get_callback's `Response`: empty Url and list when none is set.
    pub fn get(&self) -> Value {
        let registration = self.current().unwrap_or_default();
        json!({ "Url": registration.url, "CallbackCommandList": registration.commands })
    }

    /// Queues a callback for every event whose command is registered;
    /// never blocks (called with the world locked).
    pub fn dispatch(&self, events: Vec<Event>, admin: &str) {
        let Some(registration) = self.current() else {
            return;
        };
        let mut rng = rand::rng();
        for event in events {
            let Some((command, body)) = callback(&event, &registration.commands, admin) else {
                continue;
            };
            if self.options.loss > 0.0 && rng.random_bool(self.options.loss) {
                self.counters().dropped += 1;
                continue;
            }
            let delay = if self.options.delay.is_zero() {
                Duration::ZERO
            } else {
                self.options.delay.mul_f64(rng.random_range(0.0..1.0))
            };
            let job = Job {
                command,
                url: self.url(&registration.url, command),
                body: body.to_string(),
                delay,
            };
            if self.queue.try_send(job).is_err() {
                self.counters().dropped += 1;
            }
        }
    }

    /// `{Url}?SdkAppid=..&CallbackCommand=..&contenttype=json&ClientIP=..&OptPlatform=..`.
    fn url(&self, base: &str, command: &str) -> String {
        let separator = match base.find('?') {
            None => "?",
            Some(_) if base.ends_with('?') || base.ends_with('&') => "",
            Some(_) => "&",
        };
        format!(
            "{base}{separator}SdkAppid={}&CallbackCommand={command}&contenttype=json&ClientIP=127.0.0.1&OptPlatform=RESTAPI",
            self.options.sdkappid
        )
    }

    /// Sends one callback; true when answered 200 with ActionStatus OK.
    async fn deliver(&self, job: &Job) -> bool {
        let url = match &self.options.token {
            None => job.url.clone(),
            Some(token) => {
                let now = unix_now();
                format!("{}&Sign={}&RequestTime={now}", job.url, sign(token, now))
            }
        };
        let sent = self
            .http
            .post(url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(job.body.clone())
            .send()
            .await;
        let mut response = match sent {
            Ok(response) if response.status() == reqwest::StatusCode::OK => response,
            _ => return false,
        };
        let mut answer = Vec::new();
        loop {
            match response.chunk().await {
                Ok(Some(chunk)) if answer.len() + chunk.len() <= MAX_ANSWER_BYTES => {
                    answer.extend_from_slice(&chunk)
                }
                Ok(None) => break,
                _ => return false,
            }
        }
        serde_json::from_slice::<Value>(&answer)
            .is_ok_and(|doc| doc.get("ActionStatus").and_then(Value::as_str) == Some("OK"))
    }

    fn count(&self, command: &str, ok: bool) {
        let mut stats = self.counters();
        if ok {
            stats.sent += 1;
            *stats.by_command.entry(command.to_owned()).or_default() += 1;
        } else {
            stats.failed += 1;
        }
    }

    /// The `/sim/metrics` lines of the sender.
    pub fn render(&self) -> String {
        let stats = self.stats();
        format!(
            "# HELP roomengine_sim_callbacks_total Callbacks the simulator produced, by result (sent = answered OK).\n\
             # TYPE roomengine_sim_callbacks_total counter\n\
             roomengine_sim_callbacks_total{{result=\"sent\"}} {}\n\
             roomengine_sim_callbacks_total{{result=\"failed\"}} {}\n\
             roomengine_sim_callbacks_total{{result=\"dropped\"}} {}\n",
            stats.sent, stats.failed, stats.dropped
        )
    }
}

fn valid_url(value: &Value) -> Result<String, String> {
    let text = value
        .as_str()
        .ok_or_else(|| format!("Url must be a string, not {value}"))?;
    match url::Url::parse(text) {
        Ok(url) if matches!(url.scheme(), "http" | "https") && url.host().is_some() => Ok(text.to_owned()),
        _ => Err(format!("Url {text:?} is not an http:// or https:// URL")),
    }
}

/// The list, each name one the exporter handles (the simulator sends no
/// other), duplicates dropped (first kept).
fn valid_commands(value: &Value) -> Result<Vec<String>, String> {
    let list = value
        .as_array()
        .ok_or_else(|| format!("CallbackCommandList must be an array, not {value}"))?;
    let mut commands: Vec<String> = Vec::with_capacity(list.len());
    for item in list {
        match item.as_str() {
            Some(name) if command::find(name).is_some() => {
                if !commands.iter().any(|c| c == name) {
                    commands.push(name.to_owned());
                }
            }
            _ => return Err(format!("CallbackCommandList has an unknown command {item}")),
        }
    }
    Ok(commands)
}

/// The command and body of `event`'s callback, when that command is registered.
fn callback(event: &Event, registered: &[String], admin: &str) -> Option<(&'static str, Value)> {
    // The first registered spelling of the command (the update has two).
    let wants = |command: Command| command.names().find(|name| registered.iter().any(|c| c == name));
    let (command, mut body) = match &event.change {
        Change::Created(info) => {
            let mut info = serde_json::to_value(info).ok()?;
            info.as_object_mut()?.remove("MemberCount");
            (
                wants(Command::CreateRoom)?,
                json!({ "RoomInfo": info, "ScheduleInviteeList_Account": [] }),
            )
        }
        Change::Destroyed(room_id) => (wants(Command::DestroyRoom)?, json!({ "RoomId": room_id })),
        Change::Entered {
            room_id,
            member_count,
            accounts,
        } => (
            wants(Command::MemberEnter)?,
            json!({ "RoomId": room_id, "MemberCount": member_count, "Type": "Enter", "MemberList_Account": accounts }),
        ),
        Change::Left {
            room_id,
            member_count,
            accounts,
            how,
        } => {
            let mut body =
                json!({ "RoomId": room_id, "MemberCount": member_count, "MemberList_Account": accounts });
            let (kind, reason) = match how {
                Leaving::Leave => ("Leave", None),
                Leaving::Kicked => ("Kicked", Some("kicked out by the host")),
                Leaving::Expired => ("Expired", Some("heartbeat timeout")),
            };
            let object = body.as_object_mut()?;
            object.insert("Type".into(), kind.into());
            if let Some(reason) = reason {
                object.insert("Reason".into(), reason.into());
            }
            (wants(Command::MemberLeave)?, body)
        }
        Change::Seats { room_id, seats } => (
            wants(Command::SeatInfoChanged)?,
            json!({ "RoomId": room_id, "SeatList": seats.iter().map(seat_json).collect::<Vec<_>>() }),
        ),
        Change::Updated { room_id, fields } => {
            let command = wants(Command::UpdateRoomInfo)?;
            let mut info = fields.clone();
            info.insert("RoomId".into(), room_id.as_str().into());
            (command, json!({ "RoomInfo": info }))
        }
    };
    let object = body.as_object_mut()?;
    object.insert("CallbackCommand".into(), command.into());
    let operator = event.operator.as_deref().unwrap_or(admin);
    object.insert("Operator_Account".into(), operator.into());
    object.insert("EventTime".into(), event.event_time_ms.into());
    Some((command, body))
}

/// A seat in the callback's shape: `Member_Account` always there, `""` when empty.
fn seat_json(seat: &Seat) -> Value {
    json!({
        "Index": seat.index,
        "Member_Account": seat.member.as_deref().unwrap_or(""),
        "IsTakenDisabled": seat.taken_disabled,
        "IsVideoDisabled": seat.video_disabled,
        "IsAudioDisabled": seat.audio_disabled,
    })
}

/// Delivers queued callbacks, at most [`MAX_IN_FLIGHT`] at once, each after
/// its delay, until cancelled. No retry: Tencent documents none.
pub(crate) async fn run(shared: Arc<Shared>, cancel: CancellationToken) {
    let waiting = shared
        .callbacks
        .waiting
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .take();
    let Some(mut queue) = waiting else {
        return;
    };
    let slots = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    loop {
        let job = tokio::select! {
            _ = cancel.cancelled() => return,
            job = queue.recv() => job,
        };
        let Some(job) = job else {
            return;
        };
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            tokio::time::sleep(job.delay).await;
            let ok = shared.callbacks.deliver(&job).await;
            shared.callbacks.count(job.command, ok);
            drop(slot);
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sender() -> Callbacks {
        Callbacks::new(SenderOptions {
            sdkappid: 7,
            token: None,
            delay: Duration::ZERO,
            loss: 0.0,
        })
        .expect("client")
    }

    #[test]
    fn sign_matches_the_documented_vector() {
        // room-engine-facts.md section 5: Token xxxxyyyy, RequestTime 1669872112.
        assert_eq!(
            sign("xxxxyyyy", 1_669_872_112),
            "17773bc39a671d7b9aa835458704d2a6db81360a5940292b587d6d760d484061"
        );
    }

    #[test]
    fn the_query_is_appended_to_a_url_that_has_one() {
        let c = sender();
        let tail = "SdkAppid=7&CallbackCommand=X&contenttype=json&ClientIP=127.0.0.1&OptPlatform=RESTAPI";
        assert_eq!(c.url("http://h/cb", "X"), format!("http://h/cb?{tail}"));
        assert_eq!(c.url("http://h/cb?k=1", "X"), format!("http://h/cb?k=1&{tail}"));
        assert_eq!(c.url("http://h/cb?", "X"), format!("http://h/cb?{tail}"));
    }

    #[test]
    fn update_needs_a_registration_and_keeps_a_field_left_out() {
        let c = sender();
        let body = |v: Value| v.as_object().cloned().expect("object");
        assert_eq!(
            c.set(&body(json!({"Url": "http://a/"})), Setting::Update),
            Err("no callback is set: call set_callback first".into())
        );
        let set = json!({"Url": "http://a/", "CallbackCommandList": ["Room.CallbackAfterCreateRoom"]});
        assert_eq!(c.set(&body(set), Setting::Set), Ok(()));
        assert_eq!(
            c.set(&body(json!({"Url": "https://b/x"})), Setting::Update),
            Ok(())
        );
        assert_eq!(
            c.current(),
            Some(Registration {
                url: "https://b/x".into(),
                commands: vec!["Room.CallbackAfterCreateRoom".into()],
            })
        );
    }
}

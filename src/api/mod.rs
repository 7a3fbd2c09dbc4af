//! The Room Engine REST client: builds signed requests, sends them through
//! one pooled keep-alive connection pool with a timeout and a body cap, and
//! turns every answer into a value or a classified [`CallError`].

pub mod metrics;
pub mod model;
pub mod outcome;
mod wire;

use std::collections::HashSet;
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;

use crate::budget::{Budget, Permit};
use crate::config::Config;
use crate::usersig::Signer;
pub use metrics::{ApiMetrics, ApiSeries, API_GET_ROOM_INFO, API_GET_SEAT_LIST};
use model::{CallbackSetting, Envelope, RoomInfo, RoomInfoResponse, SeatListResponse, SeatUsage};
pub use outcome::{CallError, ErrorClass};

/// Larger answers are refused, not buffered: a RoomInfo is about 1 KiB.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

pub struct ApiClient {
    http: reqwest::Client,
    /// Where and as whom to call; replaced whole by a configuration reload.
    target: RwLock<Arc<Target>>,
    budget: Arc<Budget>,
    metrics: ApiMetrics,
    /// The polls' series, created on the first call of each (a series appears
    /// on /metrics only once its API is called).
    room_info_series: OnceLock<ApiSeries>,
    seat_list_series: OnceLock<ApiSeries>,
    /// Auth/config codes already logged with their hint: each is logged once.
    hinted: Mutex<HashSet<String>>,
}

/// The `app.*` settings and `polling.timeout` a call is made with.
#[derive(Clone)]
struct Target {
    endpoint: String,
    sdkappid: u64,
    identifier_query: String,
    identifier: String,
    signer: Arc<Signer>,
    timeout: Duration,
}

impl Target {
    fn new(config: &Config) -> Target {
        Target {
            endpoint: config.endpoint.clone(),
            sdkappid: config.sdkappid,
            identifier_query: url::form_urlencoded::byte_serialize(config.identifier.as_bytes()).collect(),
            identifier: config.identifier.clone(),
            signer: Arc::new(Signer::new(
                config.secret_key.clone(),
                config.sdkappid,
                config.identifier.clone(),
                config.usersig_ttl,
            )),
            timeout: config.timeout,
        }
    }

    /// Whether `config` asks for other credentials than these (a new UserSig).
    fn signs_differently(&self, config: &Config) -> bool {
        !self.signer.is_for(
            &config.secret_key,
            config.sdkappid,
            &config.identifier,
            config.usersig_ttl,
        )
    }
}

impl ApiClient {
    pub fn new(
        config: &Config,
        budget: Arc<Budget>,
        metrics: ApiMetrics,
    ) -> Result<ApiClient, crate::BoxError> {
        // The whole-call timeout is set per request (it can change on reload);
        // connecting gets at most 5 s of it.
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            // A connection idle for 30 s is a leftover of a burst: at a steady pace
            // every kept one is reused far sooner, so a longer timeout only hoards sockets.
            .pool_idle_timeout(Duration::from_secs(30))
            .user_agent(concat!("roomengine-exporter/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| format!("cannot build the HTTP client: {}", e.without_url()))?;
        let target = Target::new(config);
        // Sign the first UserSig now, so its expiry is on /metrics before the first call.
        metrics.usersig.expiry.set(target.signer.current().1 as f64);
        Ok(ApiClient {
            http,
            target: RwLock::new(Arc::new(target)),
            budget,
            metrics,
            room_info_series: OnceLock::new(),
            seat_list_series: OnceLock::new(),
            hinted: Mutex::new(HashSet::new()),
        })
    }

    pub fn budget(&self) -> &Arc<Budget> {
        &self.budget
    }

    /// A reload: the next call uses `config`'s endpoint, credentials and
    /// timeout. The UserSig in use is kept unless the credentials changed, and
    /// new credentials get their auth hints logged afresh.
    pub fn reconfigure(&self, config: &Config) {
        let current = self.target();
        let resign = current.signs_differently(config);
        let unchanged = !resign && current.endpoint == config.endpoint && current.timeout == config.timeout;
        if unchanged {
            return;
        }
        let target = if resign {
            let target = Target::new(config);
            self.metrics.usersig.expiry.set(target.signer.current().1 as f64);
            self.hinted.lock().unwrap_or_else(|p| p.into_inner()).clear();
            target
        } else {
            Target {
                endpoint: config.endpoint.clone(),
                timeout: config.timeout,
                ..Target::clone(&current)
            }
        };
        *self.target.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(target);
    }

    fn target(&self) -> Arc<Target> {
        self.target.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// `room_engine_http_srv/get_room_info` for one room.
    pub async fn get_room_info(&self, permit: Permit, room_id: &str) -> Result<RoomInfo, CallError> {
        let resp: RoomInfoResponse = self
            .call(
                permit,
                API_GET_ROOM_INFO,
                "room_engine_http_srv/get_room_info",
                room_body(room_id),
                required,
            )
            .await?;
        resp.room_info.ok_or_else(|| {
            CallError::transport("decode", ErrorClass::Retryable, "answer has no Response.RoomInfo")
        })
    }

    /// `room_engine_http_mic/get_seat_list` for one room, counted.
    pub async fn get_seat_list(&self, permit: Permit, room_id: &str) -> Result<SeatUsage, CallError> {
        let resp: SeatListResponse = self
            .call(
                permit,
                API_GET_SEAT_LIST,
                "room_engine_http_mic/get_seat_list",
                room_body(room_id),
                required,
            )
            .await?;
        Ok(SeatUsage::count(&resp.seat_list))
    }

    /// `room_config/get_callback`: the app's callback URL and commands.
    pub async fn get_callback(&self, permit: Permit) -> Result<CallbackSetting, CallError> {
        self.call(
            permit,
            "get_callback",
            "room_config/get_callback",
            "{}".to_owned(),
            required,
        )
        .await
    }

    /// `room_config/set_callback` (replaces what is set) or, with `update`,
    /// `room_config/update_callback` (changes the registration that exists).
    pub async fn set_callback(
        &self,
        permit: Permit,
        update: bool,
        url: &str,
        commands: &[String],
    ) -> Result<(), CallError> {
        let (api, command) = match update {
            true => ("update_callback", "room_config/update_callback"),
            false => ("set_callback", "room_config/set_callback"),
        };
        let body = serde_json::json!({ "Url": url, "CallbackCommandList": commands }).to_string();
        // The answer carries nothing but the envelope.
        let nothing = |_: Option<serde::de::IgnoredAny>| Ok(());
        self.call(permit, api, command, body, nothing).await
    }

    /// One call, counted: `extract` takes what the answer says (`None`: OK
    /// without a `Response`) before the budget and the error counter see
    /// the outcome.
    async fn call<T: DeserializeOwned, R>(
        &self,
        permit: Permit,
        api: &str,
        command: &str,
        body: String,
        extract: impl FnOnce(Option<T>) -> Result<R, CallError>,
    ) -> Result<R, CallError> {
        let target = self.target();
        let (usersig, expires_at) = target.signer.current();
        self.metrics.usersig.expiry.set(expires_at as f64);
        let url = format!(
            "{}/v4/{command}?sdkappid={}&identifier={}&usersig={usersig}&random={}&contenttype=json",
            target.endpoint,
            target.sdkappid,
            target.identifier_query,
            rand::random::<u32>()
        );
        #[cfg(feature = "regress-demo-slowdown")]
        demo_slowdown();
        let other;
        let series = match api {
            API_GET_ROOM_INFO => self.room_info_series.get_or_init(|| self.metrics.series(api)),
            API_GET_SEAT_LIST => self.seat_list_series.get_or_init(|| self.metrics.series(api)),
            _ => {
                other = self.metrics.series(api);
                &other
            }
        };
        series.requests.inc();
        let started = Instant::now();
        let result = self.send(url, body, permit, target.timeout).await;
        let took = started.elapsed();
        // Only an answer tells how long the way there and back took.
        if !result
            .as_ref()
            .is_err_and(|e| matches!(e.code.as_str(), "timeout" | "connect"))
        {
            self.budget.on_round_trip(took);
        }
        let result = result.and_then(extract);
        series.duration.observe(took.as_secs_f64());

        match &result {
            Ok(_) => self.budget.on_success(),
            Err(e) => {
                match e.class {
                    ErrorClass::RateLimited => self.budget.on_rate_limited(),
                    ErrorClass::Auth => self.hint_once(&e.code, &target),
                    _ => {}
                }
                // Counted after the budget reacted, so that a scrape showing a
                // 60011 also shows the lowered effective rate.
                self.metrics.errors.with_label_values(&[api, &e.code]).inc();
            }
        }
        result
    }

    async fn send<T: DeserializeOwned>(
        &self,
        url: String,
        body: String,
        permit: Permit,
        timeout: Duration,
    ) -> Result<Option<T>, CallError> {
        let length = body.len();
        let mut response = self
            .http
            .post(url)
            .timeout(timeout)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            // Set, so the body handed over as a stream is not sent chunked.
            .header(reqwest::header::CONTENT_LENGTH, length)
            .body(reqwest::Body::wrap_stream(wire::OnTheWire::new(body, permit)))
            .send()
            .await
            .map_err(transport_error)?;
        let status = response.status();
        if !status.is_success() {
            let class = if status.is_server_error() {
                ErrorClass::Retryable
            } else {
                ErrorClass::BadRequest
            };
            return Err(CallError::transport(
                &format!("http_{}", status.as_u16()),
                class,
                format!("HTTP status {status}"),
            ));
        }
        if response
            .content_length()
            .is_some_and(|n| n > MAX_BODY_BYTES as u64)
        {
            return Err(too_large());
        }
        let mut bytes = Vec::with_capacity(4096);
        while let Some(chunk) = response.chunk().await.map_err(transport_error)? {
            if bytes.len() + chunk.len() > MAX_BODY_BYTES {
                return Err(too_large());
            }
            bytes.extend_from_slice(&chunk);
        }
        let envelope: Envelope<T> = serde_json::from_slice(&bytes).map_err(|e| {
            CallError::transport(
                "decode",
                ErrorClass::Retryable,
                format!("answer is not the expected JSON: {e}"),
            )
        })?;
        if envelope.error_code != 0 {
            return Err(CallError::from_error_code(
                envelope.error_code,
                &envelope.error_info,
            ));
        }
        Ok(envelope.response)
    }

    fn hint_once(&self, code: &str, target: &Target) {
        let first = self
            .hinted
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(code.to_owned());
        if first {
            let hint = outcome::auth_hint(code, target.sdkappid, &target.identifier);
            tracing::error!(
                code,
                "{code}: {hint} (the API refuses the exporter's credentials: nothing is measured until this is fixed; logged once per code)"
            );
        }
    }
}

/// The deliberate slowdown the regression guard must catch: 100 µs of busy CPU per call.
#[cfg(feature = "regress-demo-slowdown")]
fn demo_slowdown() {
    let start = Instant::now();
    while start.elapsed() < Duration::from_micros(100) {
        std::hint::spin_loop();
    }
}

/// `{"RoomId":"..."}`, the body of the per-room calls.
fn room_body(room_id: &str) -> String {
    #[derive(serde::Serialize)]
    struct RoomBody<'a> {
        #[serde(rename = "RoomId")]
        room_id: &'a str,
    }
    // Serializing a struct of one string cannot fail.
    serde_json::to_string(&RoomBody { room_id }).unwrap_or_default()
}

/// An answer whose `Response` is needed.
fn required<T>(response: Option<T>) -> Result<T, CallError> {
    response.ok_or_else(|| CallError::transport("decode", ErrorClass::Retryable, "answer has no Response"))
}

fn too_large() -> CallError {
    CallError::transport(
        "body_too_large",
        ErrorClass::BadRequest,
        format!("answer is larger than {MAX_BODY_BYTES} bytes"),
    )
}

/// A reqwest error, with the URL (which carries the UserSig) stripped.
fn transport_error(e: reqwest::Error) -> CallError {
    let (code, what) = if e.is_timeout() {
        ("timeout", "request timed out")
    } else if e.is_connect() {
        ("connect", "cannot connect")
    } else if e.is_body() || e.is_decode() {
        // The API answered, but its body broke off: the answer is unreadable,
        // as truncated JSON is; "connect" would send the operator after the network.
        ("decode", "answer cut short")
    } else {
        ("connect", "transport error")
    };
    let mut detail = what.to_owned();
    let e = e.without_url();
    let mut source: Option<&dyn std::error::Error> = std::error::Error::source(&e);
    while let Some(s) = source {
        detail.push_str(": ");
        detail.push_str(&s.to_string());
        source = s.source();
    }
    CallError::transport(code, ErrorClass::Retryable, detail)
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    struct Key;

    impl crate::config::SecretSource for Key {
        fn env(&self, _: &str) -> Option<String> {
            Some("unit-test-secret-key".to_owned())
        }
        fn read_file(&self, path: &Path) -> std::io::Result<String> {
            Err(std::io::Error::other(format!("no file {}", path.display())))
        }
    }

    /// A client against a one-shot raw HTTP server that answers `answer` and
    /// then drops the connection, so the answer can be broken anywhere.
    async fn call_raw(answer: &'static str) -> (Result<RoomInfo, CallError>, ApiMetrics) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.expect("accept");
            let mut request = [0u8; 4096];
            let _ = socket.read(&mut request).await;
            let _ = socket.write_all(answer.as_bytes()).await;
            // Dropping the socket here cuts whatever the answer promised.
        });
        let (client, budget, metrics) = client_at(addr);
        let result = client.get_room_info(budget.acquire().await, "r1").await;
        (result, metrics)
    }

    /// A client of `addr` with a budget of 10 calls/s.
    fn client_at(addr: std::net::SocketAddr) -> (ApiClient, Arc<Budget>, ApiMetrics) {
        let config = crate::config::parse(
            &format!(
                "app:\n  sdkappid: 1400000000\n  identifier: administrator\n  endpoint: http://{addr}\npolling:\n  timeout: 4s\nrooms:\n  - r1\n"
            ),
            &Key,
        )
        .expect("config");
        let budget = Arc::new(Budget::new(10));
        let metrics = ApiMetrics::new(&prometheus::Registry::new());
        let client = ApiClient::new(&config, budget.clone(), metrics.clone()).expect("client");
        (client, budget, metrics)
    }

    #[tokio::test]
    async fn a_body_cut_short_counts_as_decode_not_connect() {
        for answer in [
            // Chunked: the chunk promises 64 bytes, 24 arrive, the connection ends.
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n40\r\n{\"ActionStatus\":\"OK\",\"Er",
            // Content-Length promises 500 bytes, 24 arrive.
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 500\r\n\r\n{\"ActionStatus\":\"OK\",\"Er",
        ] {
            let (result, metrics) = call_raw(answer).await;
            let e = result.expect_err("a cut answer is an error");
            assert_eq!(e.code, "decode", "{e}");
            assert_eq!(e.class, ErrorClass::Retryable);
            assert!(e.detail.starts_with("answer cut short: "), "{}", e.detail);
            assert_eq!(
                metrics
                    .errors
                    .with_label_values(&[API_GET_ROOM_INFO, "decode"])
                    .get(),
                1
            );
        }
    }

    #[tokio::test]
    async fn a_server_that_closes_without_answering_is_connect() {
        let (result, _) = call_raw("").await;
        let e = result.expect_err("no answer is an error");
        assert_eq!(e.code, "connect", "{e}");
    }

    #[tokio::test]
    async fn the_request_goes_with_its_length_not_chunked() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let server = tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.expect("accept");
            let mut request = Vec::new();
            let mut buf = [0u8; 4096];
            while !String::from_utf8_lossy(&request).ends_with("{\"RoomId\":\"r1\"}") {
                match socket.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => request.extend_from_slice(&buf[..n]),
                }
            }
            String::from_utf8_lossy(&request).to_lowercase()
        });
        let (client, budget, _) = client_at(addr);
        let _ = client.get_room_info(budget.acquire().await, "r1").await;
        let request = server.await.expect("server");
        assert!(request.contains("\r\ncontent-length: 15\r\n"), "{request}");
        assert!(!request.contains("transfer-encoding"), "{request}");
        assert!(request.ends_with("\r\n\r\n{\"roomid\":\"r1\"}"), "{request}");
    }
}

//! exporter.yaml: the schema (a contract users and docs depend on), parsing
//! with unknown keys rejected, and validation that lists every problem with
//! the key it concerns. Also loads the SecretKey from its env var or file.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use url::Url;

use crate::watch::WatchSettings;

/// The API's documented cap on calls per second for one SDKAppID.
pub const API_RATE_LIMIT: u32 = 200;
/// The Room Engine backend's own timeout; ours must be longer.
pub const BACKEND_TIMEOUT: Duration = Duration::from_secs(3);
/// Room IDs are at most 48 bytes (Room Engine's limit).
pub const MAX_ROOM_ID_BYTES: usize = 48;
pub const DEFAULT_SECRET_ENV: &str = "ROOMENGINE_SECRET_KEY";

/// The console SecretKey. Its Debug and Display never show the value, so it
/// cannot leak through a log line or an error by accident.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretKey(String);

impl SecretKey {
    pub fn new(value: String) -> Self {
        SecretKey(value)
    }
    /// The key itself: only for HMAC computation.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretKey(<redacted>)")
    }
}

/// Tencent data centres and their REST API domains.
pub const REGIONS: &[(&str, &str)] = &[
    ("china", "https://console.tim.qq.com"),
    ("singapore", "https://adminapisgp.im.qcloud.com"),
    ("seoul", "https://adminapikr.im.qcloud.com"),
    ("frankfurt", "https://adminapiger.im.qcloud.com"),
    ("mumbai", "https://adminapiind.im.qcloud.com"),
    ("silicon-valley", "https://adminapiusa.im.qcloud.com"),
    ("jakarta", "https://adminapiidn.im.qcloud.com"),
];

/// A validated configuration, ready to run.
#[derive(Debug, Clone)]
pub struct Config {
    pub sdkappid: u64,
    pub identifier: String,
    pub secret_key: SecretKey,
    /// Base URL without trailing slash, e.g. `https://adminapisgp.im.qcloud.com`.
    pub endpoint: String,
    pub usersig_ttl: Duration,
    pub interval: Duration,
    pub rate_limit: u32,
    pub timeout: Duration,
    pub seat_usage: bool,
    /// `polling.watch`: the tier that re-polls rooms close to capacity.
    pub watch: WatchSettings,
    pub probe_enabled: bool,
    /// Configured rooms; may be empty when the callback receiver is on.
    pub rooms: Vec<String>,
    /// The callback receiver (`callbacks.listen_address` set), else `None`.
    pub callbacks: Option<CallbacksConfig>,
}

/// The `callbacks:` section, when the receiver is on.
#[derive(Debug, Clone, PartialEq)]
pub struct CallbacksConfig {
    pub listen_address: String,
    pub path: String,
    /// Where the room set is kept; `None` keeps it in memory (the demo), or in Redis.
    pub state_file: Option<PathBuf>,
    /// `callbacks.redis_url`: the room set shared by replicas (instead of `state_file`).
    pub redis: Option<RedisConfig>,
    pub forget_after: Duration,
    /// `callbacks.token_env` / `token_file`: when set, every callback must carry a valid `Sign`.
    pub token: Option<SecretKey>,
    /// Open connections on the callback listener at most.
    pub max_connections: usize,
}

/// Where an HA group of replicas keeps its shared room set.
#[derive(Debug, Clone, PartialEq)]
pub struct RedisConfig {
    /// `redis://host:port/db`, normalised; never holds the password.
    pub url: String,
    /// `callbacks.redis_password_env` / `_file`.
    pub password: Option<SecretKey>,
}

/// Default of `callbacks.max_connections`: well below the usual 1,024 descriptors.
pub const DEFAULT_CALLBACK_CONNECTIONS: usize = 512;

impl Config {
    /// The one-line summary `--config.check` prints.
    pub fn summary(&self) -> String {
        format!(
            "config OK: sdkappid {}, endpoint {}, {} rooms, interval {}, rate_limit {}/s",
            self.sdkappid,
            self.endpoint,
            self.rooms.len(),
            humantime::format_duration(self.interval),
            self.rate_limit
        ) + &match &self.callbacks {
            None => String::new(),
            Some(c) => format!(
                ", callbacks on {}{} (state: {})",
                c.listen_address,
                c.path,
                match (&c.redis, &c.state_file) {
                    (Some(redis), _) => format!(
                        "Redis {}{}",
                        redis.url,
                        if redis.password.is_some() {
                            " with a password"
                        } else {
                            ""
                        }
                    ),
                    (None, Some(path)) => path.display().to_string(),
                    (None, None) => "in memory".to_owned(),
                }
            ),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    app: Option<RawApp>,
    #[serde(default)]
    polling: RawPolling,
    #[serde(default)]
    probe: RawProbe,
    rooms: Option<Vec<String>>,
    rooms_file: Option<String>,
    callbacks: Option<RawCallbacks>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCallbacks {
    listen_address: Option<String>,
    path: Option<String>,
    state_file: Option<String>,
    redis_url: Option<String>,
    redis_password_env: Option<String>,
    redis_password_file: Option<String>,
    forget_after: Option<String>,
    token_env: Option<String>,
    token_file: Option<String>,
    max_connections: Option<i64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawApp {
    sdkappid: Option<i64>,
    identifier: Option<String>,
    secret_key_env: Option<String>,
    secret_key_file: Option<String>,
    region: Option<String>,
    endpoint: Option<String>,
    usersig_ttl: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPolling {
    interval: Option<String>,
    rate_limit: Option<i64>,
    timeout: Option<String>,
    seat_usage: Option<bool>,
    #[serde(default)]
    watch: RawWatch,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWatch {
    enabled: Option<bool>,
    threshold: Option<f64>,
    interval: Option<String>,
    max_share: Option<f64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProbe {
    enabled: Option<bool>,
}

/// Every problem found in a configuration, each naming its key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<String>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            f.write_str(e)?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// Where the SecretKey and the rooms_file are read from; injectable so tests
/// need no process env or files.
pub trait SecretSource {
    fn env(&self, name: &str) -> Option<String>;
    fn read_file(&self, path: &Path) -> std::io::Result<String>;
}

/// The real process environment and file system.
pub struct ProcessSecrets;

impl SecretSource for ProcessSecrets {
    fn env(&self, name: &str) -> Option<String> {
        std::env::var(name).ok()
    }
    fn read_file(&self, path: &Path) -> std::io::Result<String> {
        std::fs::read_to_string(path)
    }
}

/// Reads and validates `path`; errors are prefixed with the file name.
pub fn load(path: &Path, secrets: &dyn SecretSource) -> Result<Config, ConfigErrors> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| ConfigErrors(vec![format!("{}: cannot read config file: {e}", path.display())]))?;
    let base_dir = path.parent().unwrap_or(Path::new(""));
    parse_in(&text, base_dir, secrets).map_err(|ConfigErrors(errs)| {
        ConfigErrors(
            errs.into_iter()
                .map(|e| format!("{}: {e}", path.display()))
                .collect(),
        )
    })
}

/// Parses and validates YAML text, collecting every problem rather than the
/// first; a relative `rooms_file` is read from the working directory.
pub fn parse(text: &str, secrets: &dyn SecretSource) -> Result<Config, ConfigErrors> {
    parse_in(text, Path::new(""), secrets)
}

/// As [`parse`], with a relative `rooms_file` resolved against `base_dir`
/// (the config file's directory, as Prometheus does for its file paths).
pub fn parse_in(text: &str, base_dir: &Path, secrets: &dyn SecretSource) -> Result<Config, ConfigErrors> {
    let raw: RawConfig = serde_yaml::from_str(text).map_err(|e| ConfigErrors(vec![yaml_error(&e)]))?;
    let mut errors = Vec::new();

    let Some(app) = raw.app else {
        errors.push("app: missing (sdkappid, identifier and the SecretKey are required)".to_owned());
        return Err(ConfigErrors(errors));
    };

    let sdkappid = match app.sdkappid {
        None => {
            errors.push("app.sdkappid: missing".to_owned());
            0
        }
        Some(n) if n <= 0 => {
            errors.push(format!("app.sdkappid: {n} is not a positive SDKAppID"));
            0
        }
        Some(n) => n as u64,
    };

    let identifier = app.identifier.unwrap_or_default();
    if identifier.trim().is_empty() {
        errors.push("app.identifier: missing or empty (an app administrator account is required)".to_owned());
    }

    let secret_key = match (app.secret_key_env, app.secret_key_file) {
        (None, None) => load_secret(
            Some(DEFAULT_SECRET_ENV.to_owned()),
            None,
            "app.secret_key",
            "the SecretKey",
            secrets,
            &mut errors,
        ),
        (env, file) => load_secret(env, file, "app.secret_key", "the SecretKey", secrets, &mut errors),
    };

    let endpoint = match (app.endpoint, app.region) {
        (Some(endpoint), _) => match Url::parse(&endpoint) {
            Ok(url) if (url.scheme() == "http" || url.scheme() == "https") && url.host().is_some() => {
                endpoint.trim_end_matches('/').to_owned()
            }
            Ok(url) => {
                errors.push(format!(
                    "app.endpoint: {endpoint:?} must be an http:// or https:// URL with a host (scheme {:?})",
                    url.scheme()
                ));
                String::new()
            }
            Err(e) => {
                errors.push(format!("app.endpoint: {endpoint:?} is not a valid URL: {e}"));
                String::new()
            }
        },
        (None, Some(region)) => match REGIONS.iter().find(|(name, _)| *name == region) {
            Some((_, domain)) => (*domain).to_owned(),
            None => {
                let known: Vec<&str> = REGIONS.iter().map(|(n, _)| *n).collect();
                errors.push(format!(
                    "app.region: unknown region {region:?} (known: {})",
                    known.join(", ")
                ));
                String::new()
            }
        },
        (None, None) => {
            errors.push("app.region: missing (or set app.endpoint)".to_owned());
            String::new()
        }
    };

    let usersig_ttl = duration("app.usersig_ttl", app.usersig_ttl, "24h", &mut errors);
    if usersig_ttl.is_some_and(|d| d < Duration::from_secs(60)) {
        errors.push(format!(
            "app.usersig_ttl: {} is too short (at least 1m)",
            humantime::format_duration(usersig_ttl.unwrap_or_default())
        ));
    }

    let polling = raw.polling;
    let interval = duration("polling.interval", polling.interval, "30s", &mut errors);
    if interval.is_some_and(|d| d < Duration::from_secs(1)) {
        errors.push(format!(
            "polling.interval: {} is shorter than the minimum of 1s",
            humantime::format_duration(interval.unwrap_or_default())
        ));
    }
    let rate_limit = match polling.rate_limit.unwrap_or(100) {
        n if n > API_RATE_LIMIT as i64 => {
            errors.push(format!(
                "polling.rate_limit: {n} exceeds the API limit of {API_RATE_LIMIT} calls/s"
            ));
            0
        }
        n if n < 1 => {
            errors.push(format!("polling.rate_limit: {n} must be at least 1 call/s"));
            0
        }
        n => n as u32,
    };
    let timeout = duration("polling.timeout", polling.timeout, "5s", &mut errors);
    if timeout.is_some_and(|d| d <= BACKEND_TIMEOUT) {
        errors.push(format!(
            "polling.timeout: {} must be more than 3s (the backend's own timeout)",
            humantime::format_duration(timeout.unwrap_or_default())
        ));
    }

    let watch = watch_settings(polling.watch, &mut errors);
    let callbacks = raw
        .callbacks
        .and_then(|c| callbacks_section(c, base_dir, secrets, &mut errors));
    let rooms = room_list(
        raw.rooms,
        raw.rooms_file,
        base_dir,
        secrets,
        callbacks.is_some(),
        &mut errors,
    );

    if !errors.is_empty() {
        return Err(ConfigErrors(errors));
    }
    Ok(Config {
        sdkappid,
        identifier,
        secret_key: secret_key.unwrap_or_else(|| SecretKey::new(String::new())),
        endpoint,
        usersig_ttl: usersig_ttl.unwrap_or_default(),
        interval: interval.unwrap_or_default(),
        rate_limit,
        timeout: timeout.unwrap_or_default(),
        seat_usage: polling.seat_usage.unwrap_or(true),
        watch,
        probe_enabled: raw.probe.enabled.unwrap_or(true),
        rooms,
        callbacks,
    })
}

/// The receiver's settings; `None` when `listen_address` is absent (off).
fn callbacks_section(
    raw: RawCallbacks,
    base_dir: &Path,
    secrets: &dyn SecretSource,
    errors: &mut Vec<String>,
) -> Option<CallbacksConfig> {
    let listen_address = raw.listen_address?;
    let host_port = listen_address.rsplit_once(':');
    if !matches!(host_port, Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok()) {
        errors.push(format!(
            "callbacks.listen_address: {listen_address:?} is not host:port (e.g. 0.0.0.0:39182)"
        ));
    }
    let path = raw.path.unwrap_or_else(|| "/callback".to_owned());
    if !path.starts_with('/') || path.contains(['?', '#', ' ']) {
        errors.push(format!(
            "callbacks.path: {path:?} must start with / and hold no ?, # or space"
        ));
    }
    let forget_after = duration("callbacks.forget_after", raw.forget_after, "10m", errors);
    if forget_after.is_some_and(|d| d < Duration::from_secs(1)) {
        errors.push("callbacks.forget_after: must be at least 1s".to_owned());
    }
    let token = match (raw.token_env, raw.token_file) {
        (None, None) => None,
        (env, file) => load_secret(
            env,
            file,
            "callbacks.token",
            "the callback token",
            secrets,
            errors,
        ),
    };
    let max_connections = match raw.max_connections.unwrap_or(DEFAULT_CALLBACK_CONNECTIONS as i64) {
        n if n < 1 => {
            errors.push(format!("callbacks.max_connections: {n} must be at least 1"));
            1
        }
        n => n as usize,
    };
    let redis = raw.redis_url.and_then(|url| {
        let url = redis_url(&url, errors)?;
        let password = match (raw.redis_password_env, raw.redis_password_file) {
            (None, None) => None,
            (env, file) => load_secret(
                env,
                file,
                "callbacks.redis_password",
                "the Redis password",
                secrets,
                errors,
            ),
        };
        Some(RedisConfig { url, password })
    });
    let state_file = match (&redis, raw.state_file) {
        (Some(_), Some(_)) => {
            errors.push(
                "callbacks.redis_url, callbacks.state_file: set only one (Redis keeps the room set of an HA group, the file that of a single replica)"
                    .to_owned(),
            );
            None
        }
        (Some(_), None) => None,
        (None, file) => Some(base_dir.join(file.unwrap_or_else(|| "roomengine-exporter.db".to_owned()))),
    };
    Some(CallbacksConfig {
        listen_address,
        path,
        state_file,
        redis,
        forget_after: forget_after.unwrap_or_default(),
        token,
        max_connections,
    })
}

/// `polling.watch`, defaults filled in; a bad value is reported and replaced by its default.
fn watch_settings(raw: RawWatch, errors: &mut Vec<String>) -> WatchSettings {
    let default = WatchSettings::default();
    let threshold = match raw.threshold {
        Some(t) if !(t > 0.0 && t <= 1.0) => {
            errors.push(format!(
                "polling.watch.threshold: {t} must be a share of MaxMemberCount in (0, 1]"
            ));
            default.threshold
        }
        t => t.unwrap_or(default.threshold),
    };
    let max_share = match raw.max_share {
        Some(s) if !(s > 0.0 && s < 1.0) => {
            errors.push(format!(
                "polling.watch.max_share: {s} must be a share of the budget in (0, 1)"
            ));
            default.max_share
        }
        s => s.unwrap_or(default.max_share),
    };
    let interval = duration("polling.watch.interval", raw.interval, "5s", errors).unwrap_or(default.interval);
    if interval < Duration::from_secs(1) {
        errors.push(format!(
            "polling.watch.interval: {} is shorter than the minimum of 1s",
            humantime::format_duration(interval)
        ));
    }
    WatchSettings {
        enabled: raw.enabled.unwrap_or(default.enabled),
        threshold,
        interval,
        max_share,
    }
}

/// `callbacks.redis_url` checked and normalised to `redis://host:port/db`;
/// errors never repeat a password the URL may hold.
fn redis_url(text: &str, errors: &mut Vec<String>) -> Option<String> {
    let key = "callbacks.redis_url";
    let url = match Url::parse(text) {
        Ok(url) => url,
        Err(e) => {
            errors.push(format!("{key}: not a URL like redis://127.0.0.1:6379/0: {e}"));
            return None;
        }
    };
    if url.password().is_some() {
        errors.push(format!(
            "{key}: holds a password; put it in callbacks.redis_password_env or callbacks.redis_password_file instead"
        ));
        return None;
    }
    let shown = url.as_str();
    let problem = match url.scheme() {
        "redis" => None,
        "rediss" => Some("rediss:// (TLS) is not built in: reach a TLS Redis through a local tunnel (stunnel, spiped) at redis://".to_owned()),
        other => Some(format!("scheme {other:?} is not redis://")),
    }
    .or_else(|| url.host_str().filter(|h| !h.is_empty()).is_none().then(|| "names no host".to_owned()))
    .or_else(|| (url.query().is_some() || url.fragment().is_some()).then(|| "takes no ?query or #fragment".to_owned()));
    let db = url.path().trim_start_matches('/');
    let problem = problem.or_else(|| {
        (!db.is_empty() && db.parse::<u16>().is_err())
            .then(|| format!("/{db} is not a database number (e.g. /0)"))
    });
    if let Some(problem) = problem {
        errors.push(format!("{key}: {shown:?} {problem}"));
        return None;
    }
    let user = match url.username() {
        "" => String::new(),
        user => format!("{user}@"),
    };
    let host = url.host_str().unwrap_or_default();
    let port = url.port().unwrap_or(6379);
    let db = if db.is_empty() { "0" } else { db };
    Some(format!("redis://{user}{host}:{port}/{db}"))
}

/// A room ID as Room Engine accepts it: non-empty, at most 48 bytes.
/// The rooms of `rooms:` followed by those of `rooms_file`, each checked,
/// duplicates (within or across the two) named with their position.
fn room_list(
    listed: Option<Vec<String>>,
    file: Option<String>,
    base_dir: &Path,
    secrets: &dyn SecretSource,
    may_be_empty: bool,
    errors: &mut Vec<String>,
) -> Vec<String> {
    // (room, where it was listed) in configuration order.
    let mut entries: Vec<(String, String)> = listed
        .unwrap_or_default()
        .into_iter()
        .enumerate()
        .map(|(i, room)| (room, format!("rooms[{i}]")))
        .collect();
    if let Some(file) = &file {
        let path = base_dir.join(file);
        match secrets.read_file(&path) {
            Ok(text) => entries.extend(rooms_file_entries(&text, &path.display().to_string())),
            Err(e) => errors.push(format!("rooms_file: cannot read {}: {e}", path.display())),
        }
    }
    if entries.is_empty() && !may_be_empty && errors.iter().all(|e| !e.starts_with("rooms_file:")) {
        errors.push(if file.is_some() {
            "rooms: neither rooms nor rooms_file lists a room (name at least one room ID, or turn on callbacks.listen_address to discover rooms)".to_owned()
        } else {
            "rooms: the list is empty (name at least one room ID, or turn on callbacks.listen_address to discover rooms)".to_owned()
        });
    }
    let mut first_seen: HashMap<&str, &str> = HashMap::new();
    for (room, place) in &entries {
        if let Err(problem) = validate_room_id(room) {
            errors.push(format!("{place}: {problem}"));
        } else if let Some(first) = first_seen.insert(room, place) {
            first_seen.insert(room, first);
            errors.push(format!("{place}: {room:?} is already listed at {first}"));
        }
    }
    entries.into_iter().map(|(room, _)| room).collect()
}

/// One room ID a line, trimmed; blank lines and lines starting with `#` are
/// skipped (only whole-line comments: a room ID may itself contain `#`).
/// Each entry carries its place for error messages.
fn rooms_file_entries(text: &str, path: &str) -> Vec<(String, String)> {
    text.lines()
        .enumerate()
        .filter_map(|(i, line)| {
            let room = line.trim();
            (!room.is_empty() && !room.starts_with('#'))
                .then(|| (room.to_owned(), format!("rooms_file {path} line {}", i + 1)))
        })
        .collect()
}

pub fn validate_room_id(room: &str) -> Result<(), String> {
    if room.is_empty() {
        Err("room ID is empty".to_owned())
    } else if room.len() > MAX_ROOM_ID_BYTES {
        Err(format!(
            "room ID {room:?} is {} bytes, longer than the limit of {MAX_ROOM_ID_BYTES}",
            room.len()
        ))
    } else {
        Ok(())
    }
}

/// A secret from `{key}_env` (a variable's name) or `{key}_file`, exactly
/// one of them; `what` names it in errors, which never show its value.
fn load_secret(
    env: Option<String>,
    file: Option<String>,
    key: &str,
    what: &str,
    secrets: &dyn SecretSource,
    errors: &mut Vec<String>,
) -> Option<SecretKey> {
    let value = match (env, file) {
        (Some(_), Some(_)) => {
            errors.push(format!("{key}_env, {key}_file: set only one source for {what}"));
            return None;
        }
        (None, Some(path)) => match secrets.read_file(Path::new(&path)) {
            Ok(text) => (text.trim().to_owned(), format!("{key}_file: {path}")),
            Err(e) => {
                errors.push(format!("{key}_file: cannot read {path}: {e}"));
                return None;
            }
        },
        (env, None) => {
            let name = env.unwrap_or_default();
            if name.is_empty() {
                errors.push(format!("{key}_env: empty variable name"));
                return None;
            }
            match secrets.env(&name) {
                Some(v) => (
                    v.trim().to_owned(),
                    format!("{key}_env: environment variable {name}"),
                ),
                None => {
                    errors.push(format!(
                        "{key}_env: environment variable {name} is not set (it must hold {what})"
                    ));
                    return None;
                }
            }
        }
    };
    let (secret, source) = value;
    if secret.is_empty() {
        errors.push(format!("{source} is empty (it must hold {what})"));
        return None;
    }
    Some(SecretKey::new(secret))
}

/// Parses a humantime duration; `None` (with the error recorded) when it does not parse.
fn duration(key: &str, value: Option<String>, default: &str, errors: &mut Vec<String>) -> Option<Duration> {
    let text = value.unwrap_or_else(|| default.to_owned());
    match humantime::parse_duration(&text) {
        Ok(d) => Some(d),
        Err(e) => {
            errors.push(format!("{key}: {text:?} is not a duration like 30s or 5m: {e}"));
            None
        }
    }
}

/// serde_yaml's message already names the key path and position
/// (`polling.rate_limit: invalid type ... at line 9 column 15`); keep it whole.
fn yaml_error(e: &serde_yaml::Error) -> String {
    let msg = e.to_string();
    if msg.contains("EOF while parsing") || msg.is_empty() {
        "the file is empty or not a YAML mapping".to_owned()
    } else {
        msg
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    struct FakeSecrets {
        env: HashMap<String, String>,
        files: HashMap<String, String>,
    }

    impl SecretSource for FakeSecrets {
        fn env(&self, name: &str) -> Option<String> {
            self.env.get(name).cloned()
        }
        fn read_file(&self, path: &Path) -> std::io::Result<String> {
            self.files
                .get(path.to_str().unwrap_or_default())
                .cloned()
                .ok_or_else(|| {
                    std::io::Error::new(
                        std::io::ErrorKind::NotFound,
                        "No such file or directory (os error 2)",
                    )
                })
        }
    }

    fn secrets() -> FakeSecrets {
        FakeSecrets {
            env: HashMap::from([("ROOMENGINE_SECRET_KEY".to_owned(), "k3y".to_owned())]),
            files: HashMap::from([("/run/key".to_owned(), "  filek3y\n".to_owned())]),
        }
    }

    const GOOD: &str = "app:\n  sdkappid: 1400000000\n  identifier: administrator\n  region: singapore\npolling:\n  interval: 30s\n  rate_limit: 100\n  timeout: 5s\nrooms:\n  - room-test\n";

    /// GOOD with one line replaced (by its starting text) or removed.
    fn with(from: &str, to: &str) -> String {
        let out: Vec<String> = GOOD
            .lines()
            .filter_map(|l| {
                if l.trim_start().starts_with(from) {
                    (!to.is_empty()).then(|| to.to_owned())
                } else {
                    Some(l.to_owned())
                }
            })
            .collect();
        out.join("\n")
    }

    fn errors_of(text: &str) -> Vec<String> {
        match parse(text, &secrets()) {
            Ok(c) => panic!("expected errors, got {c:?}"),
            Err(ConfigErrors(e)) => e,
        }
    }

    #[test]
    fn good_config_parses_with_defaults() {
        let c = parse(GOOD, &secrets()).expect("valid");
        assert_eq!(c.sdkappid, 1400000000);
        assert_eq!(c.endpoint, "https://adminapisgp.im.qcloud.com");
        assert_eq!(c.secret_key.expose(), "k3y");
        assert_eq!(c.usersig_ttl, Duration::from_secs(86400));
        assert_eq!(c.rooms, vec!["room-test"]);
        assert!(c.seat_usage && c.probe_enabled);
        assert_eq!(
            c.summary(),
            "config OK: sdkappid 1400000000, endpoint https://adminapisgp.im.qcloud.com, 1 rooms, interval 30s, rate_limit 100/s"
        );
    }

    #[test]
    fn shipped_example_is_valid() {
        let text = include_str!("../exporter.yaml");
        let c = parse(text, &secrets()).expect("exporter.yaml is valid");
        assert_eq!(c.rooms, vec!["room-test"]);
    }

    #[test]
    fn rate_limit_above_api_cap() {
        assert_eq!(
            errors_of(&with("rate_limit", "  rate_limit: 250")),
            vec!["polling.rate_limit: 250 exceeds the API limit of 200 calls/s"]
        );
    }

    #[test]
    fn rate_limit_zero() {
        assert_eq!(
            errors_of(&with("rate_limit", "  rate_limit: 0")),
            vec!["polling.rate_limit: 0 must be at least 1 call/s"]
        );
    }

    #[test]
    fn unknown_key_names_key_and_position() {
        let e = errors_of(&with("timeout", "  timeout: 5s\n  intervall: 10s"));
        assert_eq!(e.len(), 1);
        assert!(e[0].starts_with("polling: unknown field `intervall`"), "{}", e[0]);
        assert!(e[0].contains("line 9 column 3"), "{}", e[0]);
    }

    #[test]
    fn wrong_type_names_key() {
        let e = errors_of(&with("rate_limit", "  rate_limit: lots"));
        assert!(
            e[0].starts_with("polling.rate_limit: invalid type: string \"lots\""),
            "{}",
            e[0]
        );
    }

    #[test]
    fn sdkappid_missing_and_not_positive() {
        assert_eq!(errors_of(&with("sdkappid", "")), vec!["app.sdkappid: missing"]);
        assert_eq!(
            errors_of(&with("sdkappid", "  sdkappid: -5")),
            vec!["app.sdkappid: -5 is not a positive SDKAppID"]
        );
    }

    #[test]
    fn identifier_empty() {
        assert_eq!(
            errors_of(&with("identifier", "  identifier: ''")),
            vec!["app.identifier: missing or empty (an app administrator account is required)"]
        );
    }

    #[test]
    fn secret_env_unset_and_empty() {
        assert_eq!(
            errors_of(&with(
                "identifier",
                "  identifier: administrator\n  secret_key_env: NOPE"
            )),
            vec!["app.secret_key_env: environment variable NOPE is not set (it must hold the SecretKey)"]
        );
        let mut s = secrets();
        s.env.insert("ROOMENGINE_SECRET_KEY".into(), "  ".into());
        assert_eq!(
            parse(GOOD, &s).unwrap_err().0,
            vec!["app.secret_key_env: environment variable ROOMENGINE_SECRET_KEY is empty (it must hold the SecretKey)"]
        );
    }

    #[test]
    fn secret_from_file_is_trimmed_and_missing_file_named() {
        let c = parse(
            &with(
                "identifier",
                "  identifier: administrator\n  secret_key_file: /run/key",
            ),
            &secrets(),
        )
        .expect("valid");
        assert_eq!(c.secret_key.expose(), "filek3y");
        assert_eq!(
            errors_of(&with(
                "identifier",
                "  identifier: administrator\n  secret_key_file: /nope"
            )),
            vec!["app.secret_key_file: cannot read /nope: No such file or directory (os error 2)"]
        );
    }

    #[test]
    fn two_secret_sources() {
        assert_eq!(
            errors_of(&with(
                "identifier",
                "  identifier: administrator\n  secret_key_env: ROOMENGINE_SECRET_KEY\n  secret_key_file: /run/key"
            )),
            vec!["app.secret_key_env, app.secret_key_file: set only one source for the SecretKey"]
        );
    }

    #[test]
    fn region_unknown_and_missing() {
        assert_eq!(
            errors_of(&with("region", "  region: mars")),
            vec!["app.region: unknown region \"mars\" (known: china, singapore, seoul, frankfurt, mumbai, silicon-valley, jakarta)"]
        );
        assert_eq!(
            errors_of(&with("region", "")),
            vec!["app.region: missing (or set app.endpoint)"]
        );
    }

    #[test]
    fn endpoint_overrides_region_and_must_be_http() {
        let c = parse(&with("region", "  endpoint: http://127.0.0.1:39181/"), &secrets()).expect("valid");
        assert_eq!(c.endpoint, "http://127.0.0.1:39181");
        assert_eq!(
            errors_of(&with("region", "  endpoint: ftp://example.com")),
            vec!["app.endpoint: \"ftp://example.com\" must be an http:// or https:// URL with a host (scheme \"ftp\")"]
        );
        assert_eq!(
            errors_of(&with("region", "  endpoint: not a url")),
            vec!["app.endpoint: \"not a url\" is not a valid URL: relative URL without a base"]
        );
    }

    #[test]
    fn interval_too_short_and_unparsable() {
        assert_eq!(
            errors_of(&with("interval", "  interval: 500ms")),
            vec!["polling.interval: 500ms is shorter than the minimum of 1s"]
        );
        assert_eq!(
            errors_of(&with("interval", "  interval: soon")),
            vec!["polling.interval: \"soon\" is not a duration like 30s or 5m: expected number at 0"]
        );
    }

    #[test]
    fn timeout_not_above_backend_timeout() {
        assert_eq!(
            errors_of(&with("timeout", "  timeout: 3s")),
            vec!["polling.timeout: 3s must be more than 3s (the backend's own timeout)"]
        );
    }

    #[test]
    fn usersig_ttl_too_short() {
        assert_eq!(
            errors_of(&with("region", "  region: singapore\n  usersig_ttl: 10s")),
            vec!["app.usersig_ttl: 10s is too short (at least 1m)"]
        );
    }

    #[test]
    fn callbacks_on_allow_an_empty_room_list_and_take_defaults_beside_the_config() {
        let text = with("- room-test", "  []").replace("rooms:\n  []", "rooms: []")
            + "\ncallbacks:\n  listen_address: 0.0.0.0:39182\n";
        let c = parse_in(&text, Path::new("/etc/rex"), &secrets()).expect("valid");
        assert!(c.rooms.is_empty());
        assert_eq!(
            c.callbacks,
            Some(CallbacksConfig {
                listen_address: "0.0.0.0:39182".into(),
                path: "/callback".into(),
                state_file: Some(PathBuf::from("/etc/rex/roomengine-exporter.db")),
                redis: None,
                forget_after: Duration::from_secs(600),
                token: None,
                max_connections: DEFAULT_CALLBACK_CONNECTIONS,
            })
        );
        assert!(c
            .summary()
            .ends_with(", callbacks on 0.0.0.0:39182/callback (state: /etc/rex/roomengine-exporter.db)"));
        let signed = text.clone() + "  token_file: /run/key\n";
        let c = parse(&signed, &secrets()).expect("valid");
        assert_eq!(
            c.callbacks.and_then(|c| c.token).map(|t| t.expose().to_owned()),
            Some("filek3y".into())
        );
    }

    #[test]
    fn callbacks_errors_name_the_key() {
        let bad = GOOD.to_owned()
            + "callbacks:\n  listen_address: nowhere\n  path: callback\n  forget_after: soon\n  token_env: UNSET_TOKEN\n  max_connections: 0\n";
        assert_eq!(
            errors_of(&bad),
            vec![
                "callbacks.listen_address: \"nowhere\" is not host:port (e.g. 0.0.0.0:39182)",
                "callbacks.path: \"callback\" must start with / and hold no ?, # or space",
                "callbacks.forget_after: \"soon\" is not a duration like 30s or 5m: expected number at 0",
                "callbacks.token_env: environment variable UNSET_TOKEN is not set (it must hold the callback token)",
                "callbacks.max_connections: 0 must be at least 1",
            ]
        );
        let both = GOOD.to_owned() + "callbacks:\n  listen_address: :1\n  token_env: A\n  token_file: /b\n";
        assert_eq!(
            errors_of(&both),
            vec![
                "callbacks.listen_address: \":1\" is not host:port (e.g. 0.0.0.0:39182)",
                "callbacks.token_env, callbacks.token_file: set only one source for the callback token",
            ]
        );
    }

    #[test]
    fn redis_replaces_the_state_file_and_its_password_never_shows() {
        let mut s = secrets();
        s.env.insert("REDIS_PW".into(), " s3cret-pw \n".into());
        let text = GOOD.to_owned()
            + "callbacks:\n  listen_address: 127.0.0.1:39182\n  redis_url: redis://10.0.0.7\n  redis_password_env: REDIS_PW\n";
        let c = parse(&text, &s).expect("valid");
        let callbacks = c.callbacks.clone().expect("on");
        assert_eq!(callbacks.state_file, None);
        let redis = callbacks.redis.expect("redis");
        assert_eq!(redis.url, "redis://10.0.0.7:6379/0");
        assert_eq!(redis.password.as_ref().map(|p| p.expose()), Some("s3cret-pw"));
        assert!(c.summary().ends_with(
            ", callbacks on 127.0.0.1:39182/callback (state: Redis redis://10.0.0.7:6379/0 with a password)"
        ));
        assert!(!format!("{c:?}").contains("s3cret"));
        let c = parse(
            &(GOOD.to_owned()
                + "callbacks:\n  listen_address: 127.0.0.1:1\n  redis_url: redis://app@[::1]:7000/3\n"),
            &s,
        )
        .expect("valid");
        assert_eq!(
            c.callbacks.and_then(|c| c.redis),
            Some(RedisConfig {
                url: "redis://app@[::1]:7000/3".into(),
                password: None
            })
        );
    }

    #[test]
    fn redis_errors_name_the_keys_and_not_the_password() {
        let bad = |extra: &str| {
            errors_of(&(GOOD.to_owned() + "callbacks:\n  listen_address: 127.0.0.1:1\n" + extra))
        };
        assert_eq!(
            bad("  redis_url: redis://r:6379\n  state_file: /var/lib/rex.db\n"),
            vec!["callbacks.redis_url, callbacks.state_file: set only one (Redis keeps the room set of an HA group, the file that of a single replica)"]
        );
        assert_eq!(
            bad("  redis_url: redis://:hunter2@r:6379/0\n"),
            vec!["callbacks.redis_url: holds a password; put it in callbacks.redis_password_env or callbacks.redis_password_file instead"]
        );
        assert_eq!(
            bad("  redis_url: rediss://r:6379\n"),
            vec!["callbacks.redis_url: \"rediss://r:6379\" rediss:// (TLS) is not built in: reach a TLS Redis through a local tunnel (stunnel, spiped) at redis://"]
        );
        assert_eq!(
            bad("  redis_url: http://r/0\n"),
            vec!["callbacks.redis_url: \"http://r/0\" scheme \"http\" is not redis://"]
        );
        assert_eq!(
            bad("  redis_url: redis://r/zero\n"),
            vec!["callbacks.redis_url: \"redis://r/zero\" /zero is not a database number (e.g. /0)"]
        );
        assert_eq!(
            bad("  redis_url: redis://r/0?timeout=1\n"),
            vec!["callbacks.redis_url: \"redis://r/0?timeout=1\" takes no ?query or #fragment"]
        );
        assert_eq!(
            bad("  redis_url: r:6379\n"),
            vec!["callbacks.redis_url: \"r:6379\" scheme \"r\" is not redis://"]
        );
        assert_eq!(
            bad("  redis_url: redis://r\n  redis_password_env: A\n  redis_password_file: /b\n"),
            vec!["callbacks.redis_password_env, callbacks.redis_password_file: set only one source for the Redis password"]
        );
        assert_eq!(
            bad("  redis_url: redis://r\n  redis_password_file: /nope\n"),
            vec!["callbacks.redis_password_file: cannot read /nope: No such file or directory (os error 2)"]
        );
    }

    #[test]
    fn rooms_empty_long_duplicate() {
        assert_eq!(
            errors_of(&with("- room-test", "  []").replace("rooms:\n  []", "rooms: []")),
            vec!["rooms: the list is empty (name at least one room ID, or turn on callbacks.listen_address to discover rooms)"]
        );
        let long = "r".repeat(49);
        assert_eq!(
            errors_of(&with(
                "- room-test",
                &format!("  - room-test\n  - ''\n  - {long}\n  - room-test")
            )),
            vec![
                "rooms[1]: room ID is empty".to_owned(),
                format!("rooms[2]: room ID \"{long}\" is 49 bytes, longer than the limit of 48"),
                "rooms[3]: \"room-test\" is already listed at rooms[0]".to_owned(),
            ]
        );
    }

    #[test]
    fn rooms_file_beside_and_instead_of_rooms() {
        let mut s = secrets();
        s.files.insert(
            "/etc/re/rooms.txt".to_owned(),
            "# generated\nroom-a\n\n  room-b  \n#room-c\nroom-#1\n".to_owned(),
        );
        let beside = with("- room-test", "  - room-test\nrooms_file: rooms.txt");
        let c = parse_in(&beside, Path::new("/etc/re"), &s).expect("valid");
        assert_eq!(c.rooms, vec!["room-test", "room-a", "room-b", "room-#1"]);

        let instead = with("rooms:", "rooms_file: /etc/re/rooms.txt").replace("\n  - room-test", "");
        let c = parse_in(&instead, Path::new("/elsewhere"), &s).expect("valid");
        assert_eq!(c.rooms, vec!["room-a", "room-b", "room-#1"]);
    }

    #[test]
    fn rooms_file_missing_empty_and_duplicates() {
        let mut s = secrets();
        let text = with("- room-test", "  - room-test\nrooms_file: rooms.txt");
        let errors = parse_in(&text, Path::new("/etc/re"), &s).unwrap_err().0;
        assert_eq!(
            errors,
            vec!["rooms_file: cannot read /etc/re/rooms.txt: No such file or directory (os error 2)"]
        );
        s.files.insert(
            "/etc/re/rooms.txt".to_owned(),
            "room-x\nroom-test\nroom-x\n".to_owned(),
        );
        assert_eq!(
            parse_in(&text, Path::new("/etc/re"), &s).unwrap_err().0,
            vec![
                "rooms_file /etc/re/rooms.txt line 2: \"room-test\" is already listed at rooms[0]",
                "rooms_file /etc/re/rooms.txt line 3: \"room-x\" is already listed at rooms_file /etc/re/rooms.txt line 1",
            ]
        );
        s.files
            .insert("/etc/re/rooms.txt".to_owned(), "# nothing yet\n".to_owned());
        let only_file = with("rooms:", "rooms_file: rooms.txt").replace("\n  - room-test", "");
        assert_eq!(
            parse_in(&only_file, Path::new("/etc/re"), &s).unwrap_err().0,
            vec!["rooms: neither rooms nor rooms_file lists a room (name at least one room ID, or turn on callbacks.listen_address to discover rooms)"]
        );
    }

    #[test]
    fn every_problem_is_listed() {
        let text = with("rate_limit", "  rate_limit: 500").replace("interval: 30s", "interval: 0s");
        assert_eq!(
            errors_of(&text),
            vec![
                "polling.interval: 0s is shorter than the minimum of 1s",
                "polling.rate_limit: 500 exceeds the API limit of 200 calls/s"
            ]
        );
    }

    #[test]
    fn watch_defaults_and_overrides() {
        let c = parse(GOOD, &secrets()).expect("valid");
        assert_eq!(c.watch, WatchSettings::default());
        let c = parse(
            &with(
                "timeout",
                "  timeout: 5s\n  watch:\n    enabled: false\n    threshold: 1\n    interval: 2s\n    max_share: 0.25",
            ),
            &secrets(),
        )
        .expect("valid");
        assert_eq!(
            c.watch,
            WatchSettings {
                enabled: false,
                threshold: 1.0,
                interval: Duration::from_secs(2),
                max_share: 0.25,
            }
        );
    }

    #[test]
    fn watch_keys_out_of_range_are_named() {
        let text = with(
            "timeout",
            "  timeout: 5s\n  watch:\n    threshold: 0\n    interval: 500ms\n    max_share: 1",
        );
        assert_eq!(
            errors_of(&text),
            vec![
                "polling.watch.threshold: 0 must be a share of MaxMemberCount in (0, 1]",
                "polling.watch.max_share: 1 must be a share of the budget in (0, 1)",
                "polling.watch.interval: 500ms is shorter than the minimum of 1s",
            ]
        );
        let text = with(
            "timeout",
            "  timeout: 5s\n  watch:\n    threshold: 1.5\n    interval: often\n    max_share: 0\n    every: 1s",
        );
        let e = errors_of(&text);
        assert!(e[0].starts_with("polling.watch: unknown field `every`"), "{e:?}");
        let text = with(
            "timeout",
            "  timeout: 5s\n  watch:\n    threshold: 1.5\n    interval: often\n    max_share: 0",
        );
        assert_eq!(
            errors_of(&text),
            vec![
                "polling.watch.threshold: 1.5 must be a share of MaxMemberCount in (0, 1]",
                "polling.watch.max_share: 0 must be a share of the budget in (0, 1)",
                "polling.watch.interval: \"often\" is not a duration like 30s or 5m: expected number at 0",
            ]
        );
    }

    #[test]
    fn debug_never_shows_the_secret() {
        let c = parse(GOOD, &secrets()).expect("valid");
        assert!(!format!("{c:?}").contains("k3y"));
    }
}

//! The `callbacks:` section: the receiver's own listener and path, where the
//! room set is kept (a SQLite file, or Redis for an HA group, its URL checked
//! and normalised), how long destroyed rooms linger, the optional token, and
//! the bounds on discovered rooms (cap, room ID filters, clock skew).

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use url::Url;

use super::error::duration;
use super::secrets::{SecretKey, SecretKeys, SecretSource};

/// Default of `callbacks.max_connections`: well below the usual 1,024 descriptors.
pub const DEFAULT_CALLBACK_CONNECTIONS: usize = 512;

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
    /// `max_rooms`, `room_ids`, `max_clock_skew`: the only keys here a reload applies.
    pub bounds: RoomBounds,
}

/// Which discovered rooms the room set takes (`callbacks.max_rooms`,
/// `callbacks.room_ids`, `callbacks.max_clock_skew`); the patterns are valid.
#[derive(Debug, Clone, PartialEq)]
pub struct RoomBounds {
    pub max_rooms: usize,
    pub allow: Vec<String>,
    pub deny: Vec<String>,
    pub max_clock_skew: Duration,
}

/// Default of `callbacks.max_rooms`.
pub const DEFAULT_MAX_ROOMS: usize = 20_000;

impl Default for RoomBounds {
    fn default() -> Self {
        RoomBounds {
            max_rooms: DEFAULT_MAX_ROOMS,
            allow: Vec::new(),
            deny: Vec::new(),
            max_clock_skew: Duration::from_secs(300),
        }
    }
}

/// Where an HA group of replicas keeps its shared room set.
#[derive(Debug, Clone, PartialEq)]
pub struct RedisConfig {
    /// `redis://host:port/db`, normalised; never holds the password.
    pub url: String,
    /// `callbacks.redis_password_env` / `_file`.
    pub password: Option<SecretKey>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCallbacks {
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
    max_rooms: Option<i64>,
    room_ids: Option<RawRoomIds>,
    max_clock_skew: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRoomIds {
    #[serde(default)]
    allow: Vec<String>,
    #[serde(default)]
    deny: Vec<String>,
}

/// The receiver's settings; `None` when `listen_address` is absent (off).
/// A relative `state_file` is resolved against `base_dir`.
pub(super) fn validate(
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
    let token = SecretKeys {
        key: "callbacks.token",
        what: "the callback token",
        env: raw.token_env,
        file: raw.token_file,
        default_env: None,
    }
    .load(secrets, errors);
    let max_connections = match raw.max_connections.unwrap_or(DEFAULT_CALLBACK_CONNECTIONS as i64) {
        n if n < 1 => {
            errors.push(format!("callbacks.max_connections: {n} must be at least 1"));
            1
        }
        n => n as usize,
    };
    let redis = raw.redis_url.and_then(|url| {
        let url = redis_url(&url, errors)?;
        let password = SecretKeys {
            key: "callbacks.redis_password",
            what: "the Redis password",
            env: raw.redis_password_env,
            file: raw.redis_password_file,
            default_env: None,
        }
        .load(secrets, errors);
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
    let bounds = bounds(
        raw.max_rooms,
        raw.room_ids.unwrap_or_default(),
        raw.max_clock_skew,
        errors,
    );
    Some(CallbacksConfig {
        listen_address,
        path,
        state_file,
        redis,
        forget_after: forget_after.unwrap_or_default(),
        token,
        max_connections,
        bounds,
    })
}

fn bounds(
    max_rooms: Option<i64>,
    room_ids: RawRoomIds,
    max_clock_skew: Option<String>,
    errors: &mut Vec<String>,
) -> RoomBounds {
    let max_rooms = match max_rooms.unwrap_or(DEFAULT_MAX_ROOMS as i64) {
        n if n < 0 => {
            errors.push(format!(
                "callbacks.max_rooms: {n} must be 0 (refuse every discovered room) or more"
            ));
            0
        }
        n => n as usize,
    };
    for (list, patterns) in [("allow", &room_ids.allow), ("deny", &room_ids.deny)] {
        for (i, pattern) in patterns.iter().enumerate() {
            if let Err(e) = regex::Regex::new(pattern) {
                // The last line of regex's message says what is wrong.
                let text = e.to_string();
                let reason = text
                    .lines()
                    .last()
                    .unwrap_or("invalid")
                    .trim_start_matches("error: ");
                errors.push(format!(
                    "callbacks.room_ids.{list}[{i}]: {pattern:?} is not a valid regular expression: {reason}"
                ));
            }
        }
    }
    let max_clock_skew = duration("callbacks.max_clock_skew", max_clock_skew, "5m", errors);
    if max_clock_skew.is_some_and(|d| d < Duration::from_secs(1)) {
        errors.push("callbacks.max_clock_skew: must be at least 1s".to_owned());
    }
    RoomBounds {
        max_rooms,
        allow: room_ids.allow,
        deny: room_ids.deny,
        max_clock_skew: max_clock_skew.unwrap_or_default(),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::testing::{errors_of, secrets, with, GOOD};
    use crate::config::{parse, parse_in};

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
                bounds: RoomBounds::default(),
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
        assert!(c.summary().ends_with(&format!(
            ", callbacks on 127.0.0.1:39182/callback (state: Redis redis://10.0.0.7:6379/0 with a password; HA replica {}, heartbeat 2s, dead after 10s)",
            crate::config::default_replica_id()
        )));
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
    fn room_bounds_take_defaults_and_name_bad_values() {
        let on = with("- room-test", "  []").replace("rooms:\n  []", "rooms: []")
            + "\ncallbacks:\n  listen_address: 0.0.0.0:39182\n";
        let c = parse(&on, &secrets()).expect("valid");
        assert_eq!(c.room_bounds(), RoomBounds::default());
        assert_eq!(c.room_bounds().max_rooms, 20_000);
        assert_eq!(c.room_bounds().max_clock_skew, Duration::from_secs(300));
        let set = on.clone()
            + "  max_rooms: 0\n  max_clock_skew: 1m\n  room_ids:\n    allow: ['meet-.*']\n    deny: ['meet-test-.*']\n";
        let c = parse(&set, &secrets()).expect("valid");
        assert_eq!(
            c.room_bounds(),
            RoomBounds {
                max_rooms: 0,
                allow: vec!["meet-.*".into()],
                deny: vec!["meet-test-.*".into()],
                max_clock_skew: Duration::from_secs(60),
            }
        );
        let bad = on + "  max_rooms: -1\n  max_clock_skew: 0s\n  room_ids:\n    deny: ['ok', 'bad-(']\n";
        assert_eq!(
            errors_of(&bad),
            [
                "callbacks.max_rooms: -1 must be 0 (refuse every discovered room) or more",
                "callbacks.room_ids.deny[1]: \"bad-(\" is not a valid regular expression: unclosed group",
                "callbacks.max_clock_skew: must be at least 1s",
            ]
        );
    }
}

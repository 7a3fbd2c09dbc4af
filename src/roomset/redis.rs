//! The room set in Redis (`callbacks.redis_url`), shared by any number of
//! replicas: one JSON [`Record`] per room under `roomengine:{sdkappid}:room:{id}`,
//! written in optimistic transactions that merge what is stored (Record::absorb),
//! and a channel telling the other replicas which rooms changed.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use redis::{Client, Connection, IntoConnectionInfo, Value};
use serde::{Deserialize, Serialize};

use super::{Record, StateBackend};
use crate::config::RedisConfig;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
const IO_TIMEOUT: Duration = Duration::from_secs(2);
/// Transactions tried per batch while other replicas write the same rooms.
const ATTEMPTS: usize = 8;
/// Keys per MGET (and per SCAN page) when reading every room.
const CHUNK: usize = 1000;
/// The subscriber's longest wait between reconnection attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(1);

/// One message on the changes channel: a committed batch.
#[derive(Serialize, Deserialize)]
struct Changed {
    replica: String,
    rooms: Vec<String>,
}

/// What the subscriber learnt, for the writer's next take_remote.
#[derive(Default)]
struct Pending {
    rooms: HashSet<String>,
    /// Messages may have been missed (a (re)subscription): read every room.
    everything: bool,
    /// The writer was woken and has not taken them yet.
    woken: bool,
}

pub struct RedisState {
    client: Client,
    con: Option<Connection>,
    url: String,
    password: Option<String>,
    /// `roomengine:{sdkappid}:room:`
    prefix: String,
    channel: String,
    replica: String,
    pending: Arc<Mutex<Pending>>,
    stop: Arc<AtomicBool>,
}

impl RedisState {
    /// Prepares the client; connects on first use (a Redis that is down is no error here).
    pub fn open(config: &RedisConfig, sdkappid: u64) -> Result<RedisState, String> {
        let client = client(config)?;
        Ok(RedisState {
            client,
            con: None,
            url: config.url.clone(),
            password: config.password.as_ref().map(|p| p.expose().to_owned()),
            prefix: format!("roomengine:{sdkappid}:room:"),
            channel: format!("roomengine:{sdkappid}:changes"),
            replica: format!("{:016x}-{}", rand::random::<u64>(), std::process::id()),
            pending: Arc::default(),
            stop: Arc::default(),
        })
    }

    fn key(&self, room: &str) -> String {
        format!("{}{room}", self.prefix)
    }

    /// A Redis error as text that never holds the password.
    fn error(&self, e: &redis::RedisError) -> String {
        scrub(&format!("Redis {}: {e}", self.url), self.password.as_deref())
    }

    /// Runs `f` on the connection; any error drops it (the next call reconnects).
    fn with_connection<T>(
        &mut self,
        f: impl FnOnce(&mut Connection, &RedisState) -> redis::RedisResult<T>,
    ) -> Result<T, String> {
        let mut con = match self.con.take() {
            Some(con) => con,
            None => connect(&self.client).map_err(|e| self.error(&e))?,
        };
        match f(&mut con, self) {
            Ok(value) => {
                self.con = Some(con);
                Ok(value)
            }
            Err(e) => Err(self.error(&e)),
        }
    }

    /// The stored records of `rooms` (`None`: no such key; unreadable ones too, with a warning).
    fn read(&self, con: &mut Connection, rooms: &[String]) -> redis::RedisResult<Vec<Option<Record>>> {
        let mut out = Vec::with_capacity(rooms.len());
        for chunk in rooms.chunks(CHUNK) {
            let keys: Vec<String> = chunk.iter().map(|r| self.key(r)).collect();
            let texts: Vec<Option<String>> = redis::cmd("MGET").arg(&keys).query(con)?;
            out.extend(
                chunk
                    .iter()
                    .zip(texts)
                    .map(|(room, text)| self.decode(room, text)),
            );
        }
        Ok(out)
    }

    fn decode(&self, room: &str, text: Option<String>) -> Option<Record> {
        let text = text?;
        match serde_json::from_str(&text) {
            Ok(record) => Some(record),
            Err(e) => {
                tracing::warn!(room, key = %self.key(room), error = %e, "unreadable room record in Redis; ignored (the next callback for the room replaces it)");
                None
            }
        }
    }

    /// Every room kept under the prefix.
    fn read_all(&self, con: &mut Connection) -> redis::RedisResult<Vec<(String, Record)>> {
        let pattern = format!("{}*", self.prefix);
        let mut rooms = Vec::new();
        let mut cursor: u64 = 0;
        loop {
            let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(CHUNK)
                .query(con)?;
            rooms.extend(
                keys.iter()
                    .filter_map(|k| k.strip_prefix(&self.prefix).map(str::to_owned)),
            );
            if next == 0 {
                break;
            }
            cursor = next;
        }
        // SCAN may return a key twice.
        let unique: HashSet<String> = rooms.drain(..).collect();
        let rooms: Vec<String> = unique.into_iter().collect();
        let records = self.read(con, &rooms)?;
        Ok(rooms
            .into_iter()
            .zip(records)
            .filter_map(|(room, record)| Some((room, record?)))
            .collect())
    }

    /// One optimistic transaction; `None` when another replica wrote a watched key meanwhile.
    fn try_commit(
        &self,
        con: &mut Connection,
        changes: &[(&str, Option<&Record>)],
    ) -> redis::RedisResult<Option<Vec<(String, Record)>>> {
        let rooms: Vec<String> = changes.iter().map(|(room, _)| (*room).to_owned()).collect();
        let keys: Vec<String> = rooms.iter().map(|r| self.key(r)).collect();
        redis::cmd("WATCH").arg(&keys).exec(con)?;
        let stored = self.read(con, &rooms)?;
        let mut tx = redis::pipe();
        tx.atomic();
        let mut differ = Vec::new();
        let mut written = Vec::with_capacity(rooms.len());
        for (((room, given), stored), key) in changes.iter().zip(stored).zip(&keys) {
            match (given, stored) {
                (Some(given), stored) => {
                    let mut merged = (*given).clone();
                    if let Some(stored) = &stored {
                        merged.absorb(stored);
                    }
                    let text = serde_json::to_string(&merged).map_err(|e| {
                        redis::RedisError::from((
                            redis::ErrorKind::Client,
                            "cannot encode a record",
                            e.to_string(),
                        ))
                    })?;
                    tx.cmd("SET").arg(key).arg(text);
                    written.push((*room).to_owned());
                    if merged != **given {
                        differ.push(((*room).to_owned(), merged));
                    }
                }
                // Another replica revived the room meanwhile: keep it.
                (None, Some(stored)) if stored.destroyed_at_ms.is_none() => {
                    differ.push(((*room).to_owned(), stored))
                }
                (None, _) => {
                    tx.cmd("DEL").arg(key);
                    written.push((*room).to_owned());
                }
            }
        }
        let message = Changed {
            replica: self.replica.clone(),
            rooms: written,
        };
        let message = serde_json::to_string(&message).map_err(|e| {
            redis::RedisError::from((redis::ErrorKind::Client, "cannot encode a message", e.to_string()))
        })?;
        tx.cmd("PUBLISH").arg(&self.channel).arg(message);
        let done: Option<Vec<Value>> = tx.query(con)?;
        Ok(done.map(|_| differ))
    }
}

impl StateBackend for RedisState {
    fn load(&mut self) -> Result<Vec<(String, Record)>, String> {
        let loaded = self.with_connection(|con, state| state.read_all(con));
        if loaded.is_err() {
            // Read everything once Redis answers (the subscriber wakes the writer then).
            self.pending.lock().unwrap_or_else(|e| e.into_inner()).everything = true;
        }
        loaded
    }

    fn may_start_unloaded(&self) -> bool {
        true
    }

    fn commit(&mut self, changes: &[(&str, Option<&Record>)]) -> Result<Vec<(String, Record)>, String> {
        for _ in 0..ATTEMPTS {
            if let Some(differ) = self.with_connection(|con, state| state.try_commit(con, changes))? {
                return Ok(differ);
            }
        }
        Err(format!(
            "Redis {}: other replicas kept writing the same rooms; {ATTEMPTS} transactions aborted",
            self.url
        ))
    }

    fn take_remote(&mut self) -> Result<Vec<(String, Option<Record>)>, String> {
        let (rooms, everything) = {
            let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
            pending.woken = false;
            (
                std::mem::take(&mut pending.rooms),
                std::mem::take(&mut pending.everything),
            )
        };
        let rooms: Vec<String> = rooms.into_iter().collect();
        let result = self.with_connection(|con, state| {
            if everything {
                // Rooms absent from Redis are kept: their own forget timers (or polls) end them.
                Ok(state
                    .read_all(con)?
                    .into_iter()
                    .map(|(room, record)| (room, Some(record)))
                    .collect())
            } else {
                let records = state.read(con, &rooms)?;
                Ok(rooms.iter().cloned().zip(records).collect())
            }
        });
        if result.is_err() {
            // Not lost: read them on the next call.
            let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
            pending.rooms.extend(rooms);
            pending.everything |= everything;
        }
        result
    }

    fn on_remote_change(&mut self, wake: Box<dyn Fn() + Send + Sync>) {
        let subscriber = Subscriber {
            client: self.client.clone(),
            url: self.url.clone(),
            password: self.password.clone(),
            channel: self.channel.clone(),
            replica: self.replica.clone(),
            pending: self.pending.clone(),
            stop: self.stop.clone(),
            wake,
        };
        let started = std::thread::Builder::new()
            .name("roomset-redis".into())
            .spawn(move || {
                crate::priority::serve_at_lower_priority();
                subscriber.run()
            });
        if let Err(e) = started {
            tracing::error!(error = %e, "cannot start the Redis subscriber thread: other replicas' changes show only after a restart");
        }
    }

    fn describe(&self) -> String {
        format!("Redis {} (key prefix {})", self.url, self.prefix)
    }
}

impl Drop for RedisState {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// The thread that listens to the changes channel on its own connection.
struct Subscriber {
    client: Client,
    url: String,
    password: Option<String>,
    channel: String,
    replica: String,
    pending: Arc<Mutex<Pending>>,
    stop: Arc<AtomicBool>,
    wake: Box<dyn Fn() + Send + Sync>,
}

impl Subscriber {
    fn run(self) {
        let mut backoff = Duration::from_millis(50);
        // Logged once per outage, not at every retry.
        let mut down = false;
        while !self.stop.load(Ordering::Relaxed) {
            match self.listen(&mut down) {
                Ok(()) => return,
                Err((e, subscribed)) => {
                    if subscribed {
                        backoff = Duration::from_millis(50);
                    }
                    if !down {
                        tracing::warn!(error = %scrub(&format!("Redis {}: {e}", self.url), self.password.as_deref()), "Redis subscription lost; retrying");
                    }
                    down = true;
                }
            }
            std::thread::sleep(backoff);
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    /// Subscribes and queues the rooms other replicas change until the
    /// connection fails (the error, and whether it had subscribed) or `stop`.
    fn listen(&self, down: &mut bool) -> Result<(), (redis::RedisError, bool)> {
        let mut con = connect(&self.client).map_err(|e| (e, false))?;
        let mut pubsub = con.as_pubsub();
        pubsub.subscribe(&self.channel).map_err(|e| (e, false))?;
        if std::mem::take(down) {
            tracing::info!(url = %self.url, "Redis subscription back; reading every room");
        }
        // Messages may have been missed before: read every room.
        self.queue(None);
        loop {
            if self.stop.load(Ordering::Relaxed) {
                return Ok(());
            }
            match pubsub.get_message() {
                Ok(message) => {
                    let Ok(changed) = serde_json::from_slice::<Changed>(message.get_payload_bytes()) else {
                        tracing::warn!(channel = %self.channel, "unreadable message on the changes channel; reading every room");
                        self.queue(None);
                        continue;
                    };
                    if changed.replica != self.replica {
                        self.queue(Some(changed.rooms));
                    }
                }
                // Quiet: check the connection is alive.
                Err(e) if e.is_timeout() => {
                    pubsub.ping::<Value>().map_err(|e| (e, true))?;
                }
                Err(e) => return Err((e, true)),
            }
        }
    }

    /// Queues `rooms` (`None`: every room) and wakes the writer unless it already was.
    fn queue(&self, rooms: Option<Vec<String>>) {
        let wake = {
            let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
            match rooms {
                Some(rooms) => pending.rooms.extend(rooms),
                None => pending.everything = true,
            }
            !std::mem::replace(&mut pending.woken, true)
        };
        if wake {
            (self.wake)();
        }
    }
}

/// A client for `callbacks.redis_url`, with the password given apart (never in the URL).
pub fn client(config: &RedisConfig) -> Result<Client, String> {
    let mut info = config
        .url
        .as_str()
        .into_connection_info()
        .map_err(|e| format!("callbacks.redis_url {}: {e}", config.url))?;
    if let Some(password) = &config.password {
        let settings = info.redis_settings().clone().set_password(password.expose());
        info = info.set_redis_settings(settings);
    }
    Client::open(info).map_err(|e| format!("callbacks.redis_url {}: {e}", config.url))
}

fn connect(client: &Client) -> redis::RedisResult<Connection> {
    let con = client.get_connection_with_timeout(CONNECT_TIMEOUT)?;
    con.set_read_timeout(Some(IO_TIMEOUT))?;
    con.set_write_timeout(Some(IO_TIMEOUT))?;
    Ok(con)
}

/// `text` without the password (should a library error ever repeat it).
pub fn scrub(text: &str, password: Option<&str>) -> String {
    match password {
        Some(p) if !p.is_empty() => text.replace(p, "<redacted>"),
        _ => text.to_owned(),
    }
}

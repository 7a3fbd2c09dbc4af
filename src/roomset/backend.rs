//! Where the room set is kept between runs (and, for an HA pair, shared):
//! the per-room `Record`, the `StateBackend` trait the writer commits to,
//! and the backends: in memory, SQLite (`sqlite.rs`), Redis (`redis.rs`).

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::redis::RedisState;
use super::sqlite::SqliteState;
use crate::clock::unix_now_ms;
use crate::room::RoomFacts;

/// What the state backend keeps of one room: what callbacks said of it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Record {
    pub facts: RoomFacts,
    /// `EventTime` of the newest callback applied (ms).
    pub last_callback_ms: u64,
    /// When the exporter learnt the room was destroyed (its own clock, ms):
    /// it is forgotten `forget_after` later unless configured.
    pub destroyed_at_ms: Option<u64>,
}

impl Record {
    /// Takes what `other` (another replica's record of the room) knows more
    /// recently; whether anything changed.
    pub fn absorb(&mut self, other: &Record) -> bool {
        let mut changed = self.facts.absorb(&other.facts);
        if other.last_callback_ms > self.last_callback_ms {
            self.last_callback_ms = other.last_callback_ms;
            changed = true;
        }
        let destroyed_at = match self.facts.exists {
            Some(false) => match (self.destroyed_at_ms, other.destroyed_at_ms) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b).or(Some(unix_now_ms())),
            },
            _ => None,
        };
        changed |= destroyed_at != self.destroyed_at_ms;
        self.destroyed_at_ms = destroyed_at;
        changed
    }
}

/// Where the room set is kept between runs (and, for an HA pair, shared).
pub trait StateBackend: Send {
    /// Every room kept, as the last run (or the other replicas) left them.
    fn load(&mut self) -> Result<Vec<(String, Record)>, String>;
    /// Whether a failed first load starts the room set empty, to be filled
    /// through [`StateBackend::take_remote`] once the backend answers (a
    /// shared server, so replicas do not crash-loop while it restarts),
    /// rather than failing the start (a file).
    fn may_start_unloaded(&self) -> bool {
        false
    }
    /// Writes `changes` atomically: `Some` merges a room into what is kept
    /// (see [`Record::absorb`]), `None` deletes it. Returns the kept records
    /// that differ from those given (fields other replicas wrote); a
    /// backend with one writer returns none.
    fn commit(&mut self, changes: &[(&str, Option<&Record>)]) -> Result<Vec<(String, Record)>, String>;
    /// Rooms other replicas changed since the last call (`None`: forgotten).
    fn take_remote(&mut self) -> Result<Vec<(String, Option<Record>)>, String> {
        Ok(Vec::new())
    }
    /// Called once at start with a function that wakes the writer to call
    /// [`StateBackend::take_remote`]; backends with one writer ignore it.
    fn on_remote_change(&mut self, _wake: Box<dyn Fn() + Send + Sync>) {}
    /// One line for the start-up log.
    fn describe(&self) -> String;
}

/// Keeps nothing: the receiver's rooms last as long as the process (the demo).
pub struct MemoryState;

impl StateBackend for MemoryState {
    fn load(&mut self) -> Result<Vec<(String, Record)>, String> {
        Ok(Vec::new())
    }
    fn commit(&mut self, _: &[(&str, Option<&Record>)]) -> Result<Vec<(String, Record)>, String> {
        Ok(Vec::new())
    }
    fn describe(&self) -> String {
        "in memory (nothing survives a restart)".into()
    }
}

/// Opens the state file of `callbacks.state_file`.
pub fn open_sqlite(path: &Path) -> Result<Box<dyn StateBackend>, String> {
    Ok(Box::new(SqliteState::open(path)?))
}

/// Opens the shared room set of `callbacks.redis_url`, keyed by `sdkappid`.
pub fn open_redis(
    config: &crate::config::RedisConfig,
    sdkappid: u64,
) -> Result<Box<dyn StateBackend>, String> {
    Ok(Box::new(RedisState::open(config, sdkappid)?))
}

//! An HA group: the replicas sharing `callbacks.redis_url` split the
//! polling (`membership`, `ring`, `ownership`), take every call from one
//! budget (`bucket`) and show every room's polls (`results`). docs/ha.md.

pub mod bucket;
mod link;
pub mod membership;
pub mod ownership;
pub mod results;
pub mod ring;

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use prometheus::{IntCounter, IntCounterVec, IntGauge};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::budget::Budget;
use crate::config::{HaConfig, RedisConfig};
use crate::metrics::Register;
use crate::roomset::Reschedule;
use crate::store::Store;
pub use link::Link;
use membership::{Beats, Group, Seen};

/// Waited for at start: the first beat (to know the group before the
/// first pass) and the kept poll results (to show every room before ready).
const START_WAIT: Duration = Duration::from_secs(3);

/// `roomengine_ha_*`: registered in an HA group only.
#[derive(Clone)]
pub struct HaMetrics {
    replicas: IntGauge,
    owned: IntGauge,
    fallback: IntGauge,
    moved: IntCounterVec,
    conflicts: IntCounter,
    heartbeat_failures: IntCounter,
}

impl HaMetrics {
    pub fn new(registry: &prometheus::Registry) -> HaMetrics {
        HaMetrics {
            replicas: registry.int_gauge(
                "roomengine_ha_replicas",
                "Live replicas of the HA group this replica sees (itself included), from the heartbeats in Redis.",
            ),
            owned: registry.int_gauge(
                "roomengine_ha_owned_rooms",
                "Rooms this replica polls: those rendezvous hashing gives it among the live replicas.",
            ),
            fallback: registry.int_gauge(
                "roomengine_ha_budget_fallback",
                "1 while Redis is unreachable and this replica grants calls on its own at rate_limit / the last known replica count; 0 while the group shares one budget.",
            ),
            moved: registry.counter_vec(
                "roomengine_ha_rooms_moved_total",
                "Rooms that moved to this replica (direction=\"in\") or away from it (\"out\") because a replica joined or died.",
                &["direction"],
                &["in", "out"],
            ),
            conflicts: registry.counter(
                "roomengine_ha_replica_id_conflicts_total",
                "Heartbeats that found another process beating with this replica's ha.replica_id: both poll the same rooms.",
            ),
            heartbeat_failures: registry.counter(
                "roomengine_ha_heartbeat_failures_total",
                "Heartbeats that did not reach Redis.",
            ),
        }
    }
}

impl bucket::Fallback for HaMetrics {
    fn set(&self, local: bool, replicas: u32, error: Option<&str>) {
        self.fallback.set(i64::from(local));
        if local {
            tracing::warn!(
                error = error.unwrap_or(""),
                replicas,
                "Redis unreachable: this replica now grants calls on its own at rate_limit / {replicas}"
            );
        } else {
            tracing::info!(replicas, "the HA group shares one budget again");
        }
    }
}

impl membership::Report for HaMetrics {
    fn conflict(&self, me: &str) {
        // Logged once per process (the counter keeps counting): it repeats every beat.
        if self.conflicts.get() == 0 {
            tracing::error!(
                replica_id = me,
                "another process beats with this ha.replica_id, so both poll the same rooms: give each replica its own (--ha.replica-id); roomengine_ha_replica_id_conflicts_total counts the beats"
            );
        }
        self.conflicts.inc();
    }
    fn unreachable(&self, error: &str, first: bool) {
        self.heartbeat_failures.inc();
        if first {
            tracing::warn!(
                error,
                "heartbeat cannot reach Redis; keeping the last known group"
            );
        }
    }
    fn back(&self) {
        tracing::info!("heartbeats reach Redis again");
    }
}

/// Sets the gauges and the budget's replica count from the filter.
struct Shown {
    metrics: HaMetrics,
    replicas: Arc<AtomicU32>,
}

impl ownership::Moves for Shown {
    fn owned(&self, rooms: usize) {
        self.metrics.owned.set(rooms as i64);
    }
    fn replicas(&self, live: usize) {
        self.metrics.replicas.set(live as i64);
        self.replicas.store(live as u32, Ordering::Relaxed);
    }
    fn moved(&self, gained: usize, lost: usize) {
        self.metrics
            .moved
            .with_label_values(&["in"])
            .inc_by(gained as u64);
        self.metrics.moved.with_label_values(&["out"]).inc_by(lost as u64);
    }
}

/// Heartbeats in Redis: a sorted set of replica IDs scored by their last
/// beat (the server's clock, ms) and a hash of the nonce that last beat.
pub struct RedisBeats {
    link: Arc<Link>,
    script: redis::Script,
    leave: redis::Script,
    members: String,
    nonces: String,
    dead_after: Duration,
    forget_after: Duration,
}

/// Leaving: the beat set `dead_after` back, so every replica's next beat
/// reads it dead (a missing member would be a Redis restart instead).
const LEAVE: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
return redis.call('ZADD', KEYS[1], 'XX', string.format('%.0f', now - tonumber(ARGV[2])), ARGV[1])
"#;

const BEAT: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZADD', KEYS[1], string.format('%.0f', now), ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', string.format('%.0f', now - tonumber(ARGV[3])))
local previous = redis.call('HGET', KEYS[2], ARGV[1]) or ''
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
return {now, redis.call('ZRANGE', KEYS[1], 0, -1, 'WITHSCORES'), previous}
"#;

impl RedisBeats {
    pub fn new(link: Arc<Link>, dead_after: Duration) -> RedisBeats {
        RedisBeats {
            script: redis::Script::new(BEAT),
            leave: redis::Script::new(LEAVE),
            dead_after,
            members: format!("{}replicas", link.prefix),
            nonces: format!("{}replica-nonces", link.prefix),
            // Long-dead replicas are dropped from the set.
            forget_after: dead_after * 10,
            link,
        }
    }
}

impl Beats for RedisBeats {
    async fn beat(&self, me: &str, nonce: &str) -> Result<Seen, String> {
        let mut call = self.script.key(&self.members);
        call.key(&self.nonces)
            .arg(me)
            .arg(nonce)
            .arg(self.forget_after.as_millis() as u64);
        let (now_ms, flat, previous): (u64, Vec<String>, String) = self
            .link
            .call(|mut con| async move { call.invoke_async(&mut con).await })
            .await?;
        let members = flat
            .chunks(2)
            .filter_map(|pair| match pair {
                [id, score] => score.parse::<f64>().ok().map(|s| (id.clone(), s as u64)),
                _ => None,
            })
            .collect();
        Ok(Seen {
            now_ms,
            members,
            previous_nonce: (!previous.is_empty()).then_some(previous),
        })
    }

    async fn leave(&self, me: &str) {
        let mut call = self.leave.key(&self.members);
        call.arg(me).arg(self.dead_after.as_millis() as u64);
        let left: Result<i64, String> = self
            .link
            .call(|mut con| async move { call.invoke_async(&mut con).await })
            .await;
        if let Err(e) = left {
            tracing::warn!(error = %e, "could not leave the HA group: the others take this replica's rooms after ha.dead_after");
        }
    }
}

/// A started HA group membership: what the app wires into the poller.
pub struct Ha {
    pub me: String,
    group: watch::Receiver<Group>,
    shown: Shown,
    pub sink: results::Sink,
}

/// Joins the group: shares `budget` through Redis, beats, reads the kept
/// poll results into `store` and starts sharing this replica's.
pub async fn start(
    ha: &HaConfig,
    redis: &RedisConfig,
    sdkappid: u64,
    registry: &prometheus::Registry,
    budget: &Budget,
    store: Arc<Store>,
    shutdown: CancellationToken,
) -> Result<Ha, String> {
    let metrics = HaMetrics::new(registry);
    let replicas = Arc::new(AtomicU32::new(0));
    // Its own connection: opened by the first call, on the polling runtime.
    let budget_link = Arc::new(Link::open(redis, sdkappid)?);
    budget.share(Arc::new(bucket::RedisBucket::new(
        budget_link,
        &ha.replica_id,
        replicas.clone(),
        metrics.clone(),
    )));
    let link = Arc::new(Link::open(redis, sdkappid)?);
    let beats = RedisBeats::new(link.clone(), ha.dead_after);
    let nonce_for_first = format!("{:016x}", rand::random::<u64>());
    let first = tokio::time::timeout(START_WAIT, beats.beat(&ha.replica_id, &nonce_for_first)).await;
    let group = match first {
        Ok(Ok(seen)) => {
            let mut known = membership::Known::default();
            known.saw(&seen, tokio::time::Instant::now(), ha.dead_after);
            Group {
                live: known.live(&ha.replica_id, tokio::time::Instant::now(), ha.dead_after),
                reachable: true,
            }
        }
        _ => {
            tracing::warn!("Redis did not answer the first heartbeat: polling every room at rate_limit / {} until it does", bucket::UNKNOWN_REPLICAS);
            Group {
                live: vec![ha.replica_id.clone()],
                reachable: false,
            }
        }
    };
    if group.reachable {
        replicas.store(group.live.len() as u32, Ordering::Relaxed);
        metrics.replicas.set(group.live.len() as i64);
    }
    tracing::info!(replica_id = %ha.replica_id, replicas = ?group.live, "joined the HA group");
    let (group_tx, group_rx) = watch::channel(group);
    tokio::spawn(membership::run(
        beats,
        membership::Settings {
            me: ha.replica_id.clone(),
            heartbeat: ha.heartbeat,
            dead_after: ha.dead_after,
        },
        group_tx,
        metrics.clone(),
        shutdown.clone(),
    ));
    // The subscriber reads every kept outcome once subscribed: waited for
    // here, so every room shows before the first pass.
    let (loaded_tx, loaded) = tokio::sync::oneshot::channel();
    let (sink, outcomes) = results::sink(&ha.replica_id);
    tokio::spawn(results::publish(link.clone(), outcomes));
    tokio::spawn(results::subscribe(
        link,
        ha.replica_id.clone(),
        store,
        Some(loaded_tx),
        shutdown,
    ));
    match tokio::time::timeout(START_WAIT, loaded).await {
        Ok(Ok(Ok(n))) => tracing::info!(rooms = n, "read the group's poll results"),
        Ok(Ok(Err(e))) => tracing::warn!(error = %e, "cannot read the group's poll results yet"),
        _ => tracing::warn!("reading the group's poll results takes long; going on"),
    }
    Ok(Ha {
        me: ha.replica_id.clone(),
        group: group_rx,
        shown: Shown { metrics, replicas },
        sink,
    })
}

impl Ha {
    /// Starts the filter between the room set (and reloads) and the poller;
    /// returns the owned share of `rooms` and of `configured`.
    pub fn route(
        self,
        rooms: Vec<String>,
        configured: &[String],
        upstream: mpsc::UnboundedReceiver<Reschedule>,
        shutdown: CancellationToken,
    ) -> (
        Vec<String>,
        Vec<String>,
        mpsc::UnboundedReceiver<Reschedule>,
        results::Sink,
    ) {
        let live = self.group.borrow().live.clone();
        let mut ownership = ownership::Ownership::new(&self.me, &live);
        let (rooms, configured) = ownership.start(rooms, configured);
        let (poller_tx, poller_rx) = mpsc::unbounded_channel();
        tokio::spawn(ownership::run(
            ownership, upstream, self.group, poller_tx, self.shown, shutdown,
        ));
        (rooms, configured, poller_rx, self.sink)
    }
}

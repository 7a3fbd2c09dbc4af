//! The HA group's one budget: every replica's slots come from a Lua script
//! in Redis (one round trip per call), timed by the Redis server's clock.
//! Redis away: each replica grants locally at `rate_limit / replicas` until
//! a resume instant the group agrees on in Redis; no window holds both
//! kinds of grant (docs/ha.md, "One budget").

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use super::link::Link;
use crate::budget::{Ask, SharedBucket, SharedGrant};

/// How often a replica on its fallback share checks whether Redis is back.
const PROBE_EVERY: Duration = Duration::from_millis(250);
/// After Redis answers again, local grants go on this long from when the
/// first replica saw it back, so every replica has noticed before all stop
/// them at the same instant.
const GRACE: Duration = Duration::from_secs(2);
/// The replica count assumed before the first heartbeat answered: an HA
/// group is at least a pair, so a replica started while Redis is down
/// takes half the limit.
pub const UNKNOWN_REPLICAS: u32 = 2;

/// KEYS: the grant log (sorted set, score = slot in µs of the server's
/// clock), the next free slot, the instant shared slots resume after an
/// outage. ARGV: limit, pace µs, window µs, horizon µs (-1: none), member.
/// Returns {now, delay µs or -1 when refused}. With limit 0 it returns
/// {now, µs until local grants end}: the instant set by the first replica
/// to see Redis back (pace = grace); shared slots start a window later.
const RESERVE: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local limit = tonumber(ARGV[1])
local pace = tonumber(ARGV[2])
local window = tonumber(ARGV[3])
local horizon = tonumber(ARGV[4])
if limit == 0 then
  redis.call('SET', KEYS[3], string.format('%.0f', now + pace), 'NX', 'PX', math.floor(pace / 1000) + 5000)
  return {now, tonumber(redis.call('GET', KEYS[3])) - now}
end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', string.format('%.0f', now - 2 * window))
redis.call('PEXPIRE', KEYS[1], 60000)
local slot = math.max(now, tonumber(redis.call('GET', KEYS[2]) or '0'))
-- After an outage: no window holds both local and shared grants.
slot = math.max(slot, tonumber(redis.call('GET', KEYS[3]) or '0') + window)
local kth = redis.call('ZREVRANGE', KEYS[1], limit - 1, limit - 1, 'WITHSCORES')
if kth[2] then
  slot = math.max(slot, tonumber(kth[2]) + window)
end
if horizon >= 0 and slot > now + horizon then
  return {now, -1}
end
redis.call('ZADD', KEYS[1], string.format('%.0f', slot), ARGV[5])
redis.call('SET', KEYS[2], string.format('%.0f', slot + pace), 'PX', 60000)
return {now, slot - now}
"#;

#[derive(Debug, Clone, Copy, PartialEq)]
enum Mode {
    Shared,
    /// Redis did not answer; try again at `probe_at`.
    Down {
        probe_at: Instant,
    },
    /// Redis answers again; shared slots from `until`.
    Grace {
        until: Instant,
    },
}

/// Told when the bucket changes mode (a metric and a log line).
pub trait Fallback: Send + Sync + 'static {
    fn set(&self, local: bool, replicas: u32, error: Option<&str>);
}

pub struct RedisBucket<F: Fallback> {
    link: Arc<Link>,
    script: redis::Script,
    log_key: String,
    next_key: String,
    resume_key: String,
    member: String,
    grants: AtomicU64,
    mode: Mutex<Mode>,
    /// Live replicas as last seen (0: never seen).
    replicas: Arc<AtomicU32>,
    fallback: F,
}

impl<F: Fallback> RedisBucket<F> {
    pub fn new(link: Arc<Link>, replica: &str, replicas: Arc<AtomicU32>, fallback: F) -> RedisBucket<F> {
        RedisBucket {
            script: redis::Script::new(RESERVE),
            log_key: format!("{}budget:grants", link.prefix),
            next_key: format!("{}budget:next", link.prefix),
            resume_key: format!("{}budget:resume", link.prefix),
            member: format!("{replica}:{:08x}", rand::random::<u32>()),
            link,
            grants: AtomicU64::new(0),
            mode: Mutex::new(Mode::Shared),
            replicas,
            fallback,
        }
    }

    fn known_replicas(&self) -> u32 {
        match self.replicas.load(Ordering::Relaxed) {
            0 => UNKNOWN_REPLICAS,
            n => n,
        }
    }

    fn mode(&self) -> std::sync::MutexGuard<'_, Mode> {
        self.mode.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// One run of the script: `Ok(delay)` (µs; -1 refused), or with no
    /// `ask` the time until shared slots resume.
    async fn run(&self, ask: Option<Ask>) -> Result<i64, String> {
        let mut call = self.script.key(&self.log_key);
        call.key(&self.next_key).key(&self.resume_key);
        let (limit, pace, window, horizon) = match ask {
            Some(a) => (
                a.limit.max(1),
                a.pace.as_micros() as i64,
                a.window.as_micros() as i64,
                a.horizon.map_or(-1, |h| h.as_micros() as i64),
            ),
            None => (0, GRACE.as_micros() as i64, 1_000_000, -1),
        };
        let grant = self.grants.fetch_add(1, Ordering::Relaxed);
        call.arg(limit)
            .arg(pace)
            .arg(window)
            .arg(horizon)
            .arg(format!("{}:{grant}", self.member));
        let (_, delay): (i64, i64) = self
            .link
            .call(|mut con| async move { call.invoke_async(&mut con).await })
            .await?;
        Ok(delay)
    }

    fn went_down(&self, error: &str) -> SharedGrant {
        let replicas = self.known_replicas();
        let was = std::mem::replace(
            &mut *self.mode(),
            Mode::Down {
                probe_at: Instant::now() + PROBE_EVERY,
            },
        );
        if !matches!(was, Mode::Down { .. }) {
            self.fallback.set(true, replicas, Some(error));
        }
        SharedGrant::Local {
            replicas,
            until: None,
        }
    }

    async fn reserve_now(&self, ask: Ask) -> SharedGrant {
        let now = Instant::now();
        let mode = *self.mode();
        let local = SharedGrant::Local {
            replicas: self.known_replicas(),
            until: None,
        };
        match mode {
            Mode::Down { probe_at } if now < probe_at => return local,
            Mode::Down { .. } => {
                // One prober at a time: the others stay local meanwhile.
                *self.mode() = Mode::Down {
                    probe_at: now + PROBE_EVERY,
                };
                return match self.run(None).await {
                    Ok(resume) => {
                        let until = Instant::now() + Duration::from_micros(resume.max(0) as u64);
                        *self.mode() = Mode::Grace { until };
                        tracing::info!(resume_in = ?until.saturating_duration_since(now), "Redis answers again: the shared budget resumes when the group's grace period ends");
                        SharedGrant::Local {
                            replicas: self.known_replicas(),
                            until: Some(until),
                        }
                    }
                    Err(e) => self.went_down(&e),
                };
            }
            Mode::Grace { until } if now < until => {
                return SharedGrant::Local {
                    replicas: self.known_replicas(),
                    until: Some(until),
                };
            }
            Mode::Grace { .. } => {
                *self.mode() = Mode::Shared;
                self.fallback.set(false, self.known_replicas(), None);
            }
            Mode::Shared => {}
        }
        match self.run(Some(ask)).await {
            Ok(delay) if delay >= 0 => SharedGrant::In(Duration::from_micros(delay as u64)),
            Ok(_) => SharedGrant::Refused,
            Err(e) => self.went_down(&e),
        }
    }
}

impl<F: Fallback> SharedBucket for RedisBucket<F> {
    fn reserve(&self, ask: Ask) -> Pin<Box<dyn Future<Output = SharedGrant> + Send + '_>> {
        Box::pin(self.reserve_now(ask))
    }

    fn replicas(&self) -> u32 {
        self.known_replicas()
    }
}

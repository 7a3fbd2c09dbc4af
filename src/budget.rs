//! The one rate limiter every outgoing API call passes, retries and probes
//! included. It paces calls evenly at the effective rate and, as a hard
//! guard, never lets more than `rate_limit` calls share a one-second window,
//! a call counting from the moment its permit is handed out until the permit
//! is dropped (the API client drops it when the connection takes the request
//! to write it), so a holder delayed on a busy machine still counts.
//!
//! In an HA group the slots come from one bucket in Redis shared by every
//! replica ([`SharedBucket`], `ha::bucket`); this budget then only times
//! the permits, and takes over at its share of the limit when Redis is away.
//!
//! Why not `governor`: its GCRA cannot change rate on the fly (we halve it on
//! rate-limited answers), cannot refuse a permit that would come after a
//! deadline without reserving it (the probe needs both), and counts a call
//! only when it starts. The reservation model here is small: each caller
//! reserves the next free slot under a mutex, then sleeps until it outside
//! the lock.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

/// The API's documented cap on calls per second for one SDKAppID: no
/// configured `rate_limit` may exceed it.
pub const API_RATE_LIMIT: u32 = 200;

const WINDOW: Duration = Duration::from_secs(1);
/// While calls succeed, the effective rate climbs back by this share of the
/// configured rate per second.
const RECOVERY_PER_SECOND: f64 = 0.10;
/// The effective rate never drops below this share of the configured one:
/// permits are booked ahead at the effective pace, so at 1 call/s the polls
/// already waiting would stay booked up to a minute ahead after the API has
/// long recovered.
const MIN_SHARE: f64 = 0.25;
/// Permits that had to wait (for the window, or behind a holder that did)
/// go at least this share of the pace after the previous one: holders that
/// woke late together would otherwise leave as one burst, and the window
/// guard would release the same burst again a window later. The gap counts
/// from when the previous permit was free to go, not from its holder's real
/// wake-up, and merely late holders are not spaced, so one late wake-up
/// does not push back every holder queued behind it.
const MIN_GAP_SHARE: f64 = 0.75;
/// Weight of the newest call in the running mean of how long a permit is
/// held, which plans slots a window plus that long apart.
const HELD_WEIGHT: f64 = 0.05;
/// Round trips remembered to estimate how much the way to the server varies:
/// two windows' worth at the API's cap, so the slack a call is planned with
/// still covers the calls of the window it is measured against.
const ROUND_TRIPS: usize = 2 * API_RATE_LIMIT as usize;
/// The window is widened by how much round trips vary (the slowest of the
/// last [`ROUND_TRIPS`] less the fastest): a call that left after another
/// may reach the server that much sooner on its way. Bounded so one stall cannot halve the budget, and
/// not below the jitter a quiet loopback shows.
const MIN_SLACK: Duration = Duration::from_millis(2);
const MAX_SLACK: Duration = Duration::from_millis(50);
/// The slack before enough round trips were seen to estimate it.
const INITIAL_SLACK: Duration = Duration::from_millis(15);
/// A holder of a shared slot that wakes later than this gives it up and
/// asks again: other replicas' calls are planned around the slot, not
/// around when this one really goes. The shared window is widened by it.
const SHARED_LATE: Duration = Duration::from_millis(5);

/// What the group's bucket is asked for: one slot, paced `pace` after the
/// group's previous one, and never the `limit + 1`-th inside `window`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Ask {
    pub limit: u32,
    pub pace: Duration,
    pub window: Duration,
    /// Refuse rather than grant a slot further ahead than this.
    pub horizon: Option<Duration>,
}

/// The group's bucket's answer.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum SharedGrant {
    /// The slot starts this long from now.
    In(Duration),
    /// Not within the horizon (nothing was reserved).
    Refused,
    /// The bucket is unreachable: grant locally at `1 / replicas` of the
    /// limit; with `until`, it is back and local slots end then (shared ones
    /// start a window later, so no window holds both).
    Local { replicas: u32, until: Option<Instant> },
}

/// One budget shared by the replicas of an HA group (in Redis).
pub trait SharedBucket: Send + Sync {
    fn reserve(&self, ask: Ask) -> Pin<Box<dyn Future<Output = SharedGrant> + Send + '_>>;
    /// Replicas sharing the budget: this one's share of the sustained rate.
    fn replicas(&self) -> u32;
}

/// Proof that a call was granted by the budget; API calls require one, so no
/// code path can send a request without passing the budget. The call counts
/// against the window until the permit is dropped: hold it until the
/// request is on the wire.
#[derive(Debug)]
pub struct Permit {
    shared: Arc<Shared>,
    handed: Instant,
}

impl Drop for Permit {
    fn drop(&mut self) {
        let now = Instant::now();
        let mut st = lock(&self.shared);
        st.open = st.open.saturating_sub(1);
        st.ends.push_back(now);
        let held = now.duration_since(self.handed).as_secs_f64();
        st.held = st.held * (1.0 - HELD_WEIGHT) + held * HELD_WEIGHT;
        drop(st);
        self.shared.ended.notify_one();
    }
}

pub struct Budget {
    shared: Arc<Shared>,
    /// The HA group's bucket, when there is one.
    group: OnceLock<Arc<dyn SharedBucket>>,
    /// Holders confirm one at a time, in the order they woke: only the first
    /// waits on a timer, so holders gated together do not all wake for each
    /// permit (the ones behind it cannot go earlier anyway).
    confirm_turn: tokio::sync::Mutex<()>,
}

#[derive(Debug)]
struct Shared {
    state: Mutex<State>,
    /// A permit was dropped: a holder waiting because every call of the
    /// window is still open may go.
    ended: Notify,
}

#[derive(Debug)]
struct State {
    /// `polling.rate_limit`; changed by a configuration reload.
    configured: u32,
    effective: f64,
    /// The earliest instant the next permit may be granted at (pacing).
    next_slot: Instant,
    /// Planned slots of the last permits, oldest first.
    granted: VecDeque<Instant>,
    /// Permits handed out and not dropped yet: calls not yet on the wire.
    open: usize,
    /// When the permits dropped in the last window were dropped, oldest first.
    ends: VecDeque<Instant>,
    /// Running mean of how long a permit is held, in seconds.
    held: f64,
    /// The last round trips (request out to answer in), newest last.
    round_trips: VecDeque<Duration>,
    /// Added to the window for the jitter on the way to the server.
    slack: Duration,
    /// Round trips seen, to re-estimate `slack` every so many.
    answers: u64,
    last_recovery: Instant,
    /// When the rate was last halved: the calls already in flight then were
    /// sent at the old rate, so their rate-limited answers do not halve it again.
    last_halved: Option<Instant>,
    /// The newest slot the group's bucket gave: local grants start a
    /// window after it, so no window holds both.
    last_shared: Option<Instant>,
    /// Local grants use `1 / divisor` of the limit: the replicas of a
    /// group whose bucket is unreachable (1 otherwise).
    divisor: u32,
    /// The instant the last permit was free to go: its send time, or for a
    /// holder that waited, the end of its wait (it may wake later still).
    /// Waiting holders are spaced from this, so one holder's late wake-up
    /// does not push back every holder queued behind it.
    last_release: Option<Instant>,
}

impl State {
    /// The calls one window may hold here: the limit, or this replica's
    /// share of it while its group's bucket is unreachable.
    fn limit(&self) -> usize {
        (self.configured / self.divisor.max(1)).max(1) as usize
    }

    /// The pace of local grants.
    fn pace(&self) -> f64 {
        self.effective / f64::from(self.divisor.max(1))
    }

    /// Calls that count against a window ending now: the open ones and
    /// those released less than a window ago.
    fn in_window(&mut self, now: Instant) -> usize {
        let window = self.window();
        while self
            .ends
            .front()
            .is_some_and(|e| now.duration_since(*e) >= window)
        {
            self.ends.pop_front();
        }
        self.open + self.ends.len()
    }

    /// How far apart in time the `configured` calls of one window are planned.
    fn planned_window(&self) -> Duration {
        self.window() + Duration::from_secs_f64(self.held.min(WINDOW.as_secs_f64()))
    }

    /// How long a released call counts against the window.
    fn window(&self) -> Duration {
        WINDOW + self.slack
    }
}

/// What the group's bucket gave a caller.
enum Granted {
    Shared(Result<Permit, BudgetExhausted>),
    /// Grant locally (until `until`, when set).
    Local {
        until: Option<Instant>,
    },
}

/// What a holder waits for before its permit may go.
enum Gate {
    Until(Instant),
    /// Every call of the window is still open: the next release.
    Answer,
}

fn lock(shared: &Shared) -> std::sync::MutexGuard<'_, State> {
    // The state stays consistent even if a holder panicked: every update is a single assignment.
    shared.state.lock().unwrap_or_else(|p| p.into_inner())
}

/// The budget could not grant a permit before the caller's deadline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BudgetExhausted;

impl Budget {
    pub fn new(rate_limit: u32) -> Budget {
        let configured = rate_limit.max(1);
        let now = Instant::now();
        let state = State {
            configured,
            effective: configured as f64,
            next_slot: now,
            granted: VecDeque::with_capacity(configured as usize + 1),
            open: 0,
            ends: VecDeque::with_capacity(configured as usize + 1),
            held: 0.0,
            round_trips: VecDeque::with_capacity(ROUND_TRIPS),
            slack: INITIAL_SLACK,
            answers: 0,
            last_recovery: now,
            last_halved: None,
            divisor: 1,
            last_shared: None,
            last_release: None,
        };
        Budget {
            group: OnceLock::new(),
            shared: Arc::new(Shared {
                state: Mutex::new(state),
                ended: Notify::new(),
            }),
            confirm_turn: tokio::sync::Mutex::new(()),
        }
    }

    /// From now on slots come from the HA group's `bucket` (set once, at start).
    pub fn share(&self, bucket: Arc<dyn SharedBucket>) {
        let _ = self.group.set(bucket);
    }

    pub fn configured(&self) -> u32 {
        self.lock().configured
    }

    /// A reload changed `polling.rate_limit`. A lower limit applies to the
    /// next reservation (the window guard counts the grants already made); a
    /// back-off in progress is kept, capped at the new limit.
    pub fn set_rate_limit(&self, rate_limit: u32) {
        let mut st = self.lock();
        let rate_limit = rate_limit.max(1);
        let backing_off = st.effective < st.configured as f64;
        st.configured = rate_limit;
        st.effective = if backing_off {
            st.effective.min(rate_limit as f64)
        } else {
            rate_limit as f64
        };
    }

    pub fn effective(&self) -> f64 {
        self.lock().effective
    }

    /// Calls per second a saturated budget really grants: the effective
    /// rate, or `rate_limit` per window plus the time a call is held,
    /// whichever is lower.
    /// In an HA group, this replica's share of it.
    pub fn sustained(&self) -> f64 {
        let replicas = self.group.get().map_or(1, |g| g.replicas().max(1));
        let st = self.lock();
        st.effective
            .min(st.configured as f64 / st.planned_window().as_secs_f64())
            / f64::from(replicas)
    }

    /// When the permits already reserved will all have been handed out: a
    /// new pass starting before then would only queue behind the last one.
    pub fn reserved_until(&self) -> Instant {
        self.lock().next_slot
    }

    /// Waits for a permit.
    pub async fn acquire(&self) -> Permit {
        loop {
            // Without a deadline only the end of a local period refuses, and then it waits.
            if let Ok(permit) = self.permit(None).await {
                return permit;
            }
        }
    }

    /// Waits for a permit that can be granted before `deadline`; refuses at
    /// once (reserving nothing) when the queue already reaches past it.
    pub async fn acquire_before(&self, deadline: Instant) -> Result<Permit, BudgetExhausted> {
        self.permit(Some(deadline)).await
    }

    async fn permit(&self, deadline: Option<Instant>) -> Result<Permit, BudgetExhausted> {
        loop {
            let until = match self.group_permit(deadline).await {
                Granted::Shared(granted) => return granted,
                Granted::Local { until } => until,
            };
            let local_deadline = match (deadline, until) {
                (Some(d), Some(u)) => Some(d.min(u)),
                (d, u) => d.or(u),
            };
            match self.reserve(local_deadline) {
                Ok(slot) => {
                    tokio::time::sleep_until(slot).await;
                    return Ok(self.confirm().await);
                }
                // Past the end of the local period: the group's slots follow.
                Err(_) if until.is_some_and(|u| deadline.is_none_or(|d| u < d)) => {
                    tokio::time::sleep_until(until.unwrap_or_else(Instant::now)).await;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// A permit from the HA group's bucket, or `Local` without a group or
    /// while it is unreachable (the local budget grants then, at its share).
    async fn group_permit(&self, deadline: Option<Instant>) -> Granted {
        let Some(group) = self.group.get() else {
            return Granted::Local { until: None };
        };
        loop {
            let ask = {
                let st = self.lock();
                Ask {
                    limit: st.configured,
                    pace: Duration::from_secs_f64(1.0 / st.effective),
                    window: st.planned_window() + SHARED_LATE,
                    horizon: deadline.map(|d| d.saturating_duration_since(Instant::now())),
                }
            };
            let slot = match group.reserve(ask).await {
                SharedGrant::In(delay) => Instant::now() + delay,
                SharedGrant::Refused => return Granted::Shared(Err(BudgetExhausted)),
                SharedGrant::Local { replicas, until } => {
                    self.lock().divisor = replicas.max(1);
                    return Granted::Local { until };
                }
            };
            {
                // Remembered as local grants too, from now: should the bucket
                // go away, local slots come after the shared ones still waiting.
                let mut st = self.lock();
                st.divisor = 1;
                st.granted.push_back(slot);
                while st.granted.len() > API_RATE_LIMIT as usize {
                    st.granted.pop_front();
                }
                st.next_slot = st.next_slot.max(slot);
                st.last_shared = Some(st.last_shared.map_or(slot, |l| l.max(slot)));
            }
            tokio::time::sleep_until(slot).await;
            let now = Instant::now();
            if now > slot + SHARED_LATE {
                // Woke too late: going now could bunch with the group's next calls.
                continue;
            }
            let mut st = self.lock();
            st.open += 1;
            return Granted::Shared(Ok(Permit {
                shared: Arc::clone(&self.shared),
                handed: now,
            }));
        }
    }

    /// The API said we exceeded its frequency limit: halve the effective
    /// rate, at most once a window and never below [`MIN_SHARE`] of the limit.
    pub fn on_rate_limited(&self) {
        let mut st = self.lock();
        let now = Instant::now();
        if st.last_halved.is_some_and(|t| now.duration_since(t) < WINDOW) {
            return;
        }
        let floor = (st.configured as f64 * MIN_SHARE).max(1.0);
        st.effective = (st.effective / 2.0).max(floor);
        st.last_recovery = now;
        st.last_halved = Some(now);
    }

    /// A call's answer came `took` after its request went out: how much
    /// that varies widens the window by as much (see [`MIN_SLACK`]).
    pub fn on_round_trip(&self, took: Duration) {
        let mut st = self.lock();
        if st.round_trips.len() == ROUND_TRIPS {
            st.round_trips.pop_front();
        }
        st.round_trips.push_back(took);
        st.answers += 1;
        // Re-estimated every 16 answers: a scan on every call would cost more than it tells.
        if st.answers.is_multiple_of(16) {
            let fastest = st.round_trips.iter().min().copied().unwrap_or_default();
            let slowest = st.round_trips.iter().max().copied().unwrap_or_default();
            st.slack = (slowest - fastest).clamp(MIN_SLACK, MAX_SLACK);
        }
    }

    /// A call succeeded: let the effective rate climb back towards the configured one.
    pub fn on_success(&self) {
        let mut st = self.lock();
        let now = Instant::now();
        let configured = st.configured as f64;
        if st.effective < configured {
            let secs = now.duration_since(st.last_recovery).as_secs_f64();
            if secs >= 1.0 {
                st.effective =
                    (st.effective + configured * RECOVERY_PER_SECOND * secs.floor()).min(configured);
                st.last_recovery = now;
            }
        } else {
            st.last_recovery = now;
        }
    }

    /// The holder of a permit woke at (or after) its slot. On a loaded
    /// machine it can wake late, or stall between its permit and the write,
    /// so the permit is handed out only if the calls of the last window
    /// (open, or released less than a window ago) leave room, else the
    /// holder waits for that, and then also until [`MIN_GAP_SHARE`] of the
    /// pace after the previous permit was free to go (`last_release`).
    async fn confirm(&self) -> Permit {
        let (_turn, mut waited) = match self.confirm_turn.try_lock() {
            Ok(turn) => (turn, false),
            Err(_) => (self.confirm_turn.lock().await, true),
        };
        // The end of this holder's last wait: when its permit was free to go.
        let mut free_at: Option<Instant> = None;
        loop {
            // Registered before the state is read, so a release in between is not missed.
            let released = self.shared.ended.notified();
            let gate = {
                let mut st = self.lock();
                let now = Instant::now();
                let configured = st.limit();
                let in_window = st.in_window(now);
                // The k-th oldest release (0-based) must leave the window first.
                let window_allows = match in_window.checked_sub(configured) {
                    None => Some(None),
                    Some(k) => st.ends.get(k).map(|end| Some(*end + st.window())),
                };
                let min_gap = Duration::from_secs_f64(MIN_GAP_SHARE / st.pace());
                let spacing_allows = st.last_release.filter(|_| waited).map(|last| last + min_gap);
                match window_allows.map(|w| w.max(spacing_allows)) {
                    None => Gate::Answer,
                    Some(Some(earliest)) if earliest > now => Gate::Until(earliest),
                    Some(allowed) => {
                        st.last_release = Some(if waited {
                            allowed.max(free_at).unwrap_or(now)
                        } else {
                            now
                        });
                        st.open += 1;
                        return Permit {
                            shared: Arc::clone(&self.shared),
                            handed: now,
                        };
                    }
                }
            };
            waited = true;
            match gate {
                Gate::Until(at) => {
                    tokio::time::sleep_until(at).await;
                    free_at = Some(at);
                }
                Gate::Answer => {
                    released.await;
                    free_at = Some(Instant::now());
                }
            }
        }
    }

    /// Reserves the next slot: paced by the effective rate and never the
    /// `configured + 1`-th grant inside one planned window.
    fn reserve(&self, deadline: Option<Instant>) -> Result<Instant, BudgetExhausted> {
        let mut st = self.lock();
        let now = Instant::now();
        let mut slot = st.next_slot.max(now);
        if let Some(shared) = st.last_shared {
            slot = slot.max(shared + st.planned_window());
        }
        let configured = st.limit();
        if st.granted.len() >= configured {
            let window_start = st.granted[st.granted.len() - configured];
            slot = slot.max(window_start + st.planned_window());
        }
        if deadline.is_some_and(|d| slot > d) {
            return Err(BudgetExhausted);
        }
        st.next_slot = slot + Duration::from_secs_f64(1.0 / st.pace());
        st.granted.push_back(slot);
        // Keep enough grants for the largest limit a reload may set, so that raising
        // the limit never lets a window fill past the grants it no longer remembers.
        while st.granted.len() > API_RATE_LIMIT as usize {
            st.granted.pop_front();
        }
        Ok(slot)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        lock(&self.shared)
    }
}

/// The budget's metrics, set from it just before each scrape: the
/// effective rate moves with every answer, so it is read when asked for.
pub struct BudgetMetrics {
    rate_limit: prometheus::Gauge,
    effective: prometheus::Gauge,
}

impl BudgetMetrics {
    pub fn new(registry: &prometheus::Registry) -> BudgetMetrics {
        use crate::metrics::Register;
        BudgetMetrics {
            rate_limit: registry.gauge(
                "roomengine_rate_limit_requests_per_second",
                "Configured call budget (polling.rate_limit): no one-second window holds more calls.",
            ),
            effective: registry.gauge(
                "roomengine_rate_limit_effective_requests_per_second",
                "Call rate in use after back-off: halved on rate-limited answers (at most once a second, not below a quarter of the limit), restored gradually.",
            ),
        }
    }

    /// Sets both gauges from `budget`.
    pub fn show(&self, budget: &Budget) {
        self.rate_limit.set(f64::from(budget.configured()));
        self.effective.set(budget.effective());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Counts the most grants inside any window of one second.
    fn worst_window(grants: &[Instant]) -> usize {
        let mut worst = 0;
        for (i, start) in grants.iter().enumerate() {
            let n = grants[i..]
                .iter()
                .take_while(|t| t.duration_since(*start) < WINDOW)
                .count();
            worst = worst.max(n);
        }
        worst
    }

    #[tokio::test(start_paused = true)]
    async fn never_more_than_rate_in_any_second() {
        let budget = Budget::new(20);
        let mut grants = Vec::new();
        for _ in 0..100 {
            budget.acquire().await;
            grants.push(Instant::now());
        }
        assert_eq!(worst_window(&grants), 20);
        let span = grants[99].duration_since(grants[0]).as_secs_f64();
        // 100 paced grants at 20/s, plus the initial slack every 20 grants.
        assert!((4.95..5.2).contains(&span), "span {span}");
    }

    #[tokio::test(start_paused = true)]
    async fn rate_limited_halves_and_success_restores() {
        let budget = Budget::new(100);
        budget.on_rate_limited();
        assert_eq!(budget.effective(), 50.0);
        // Another rate-limited answer in the same window (a call already in flight): no second halving.
        budget.on_rate_limited();
        assert_eq!(budget.effective(), 50.0);
        tokio::time::advance(WINDOW).await;
        budget.on_rate_limited();
        assert_eq!(budget.effective(), 25.0);
        // A quarter of the limit is the floor.
        tokio::time::advance(WINDOW).await;
        budget.on_rate_limited();
        assert_eq!(budget.effective(), 25.0);
        tokio::time::advance(Duration::from_millis(500)).await;
        budget.on_success();
        assert_eq!(budget.effective(), 25.0);
        tokio::time::advance(Duration::from_secs(3)).await;
        budget.on_success();
        assert_eq!(budget.effective(), 55.0);
        tokio::time::advance(Duration::from_secs(10)).await;
        budget.on_success();
        assert_eq!(budget.effective(), 100.0);
    }

    #[tokio::test(start_paused = true)]
    async fn reloaded_rate_limit_applies_to_the_next_permits() {
        let budget = Budget::new(100);
        let mut grants = Vec::new();
        for _ in 0..50 {
            budget.acquire().await;
        }
        budget.set_rate_limit(10);
        assert_eq!((budget.configured(), budget.effective()), (10, 10.0));
        for _ in 0..30 {
            budget.acquire().await;
            grants.push(Instant::now());
        }
        assert_eq!(worst_window(&grants), 10);
        // Paced at the new rate from the first permit on (which itself waits until
        // the window holds fewer than 10 grants made at the old rate).
        let span = grants[29].duration_since(grants[0]).as_secs_f64();
        assert!((2.9..3.1).contains(&span), "30 permits at 10/s spanned {span}s");

        // A back-off in progress survives a raise, and recovers towards the new limit.
        budget.on_rate_limited();
        budget.set_rate_limit(200);
        assert_eq!((budget.configured(), budget.effective()), (200, 5.0));
        tokio::time::advance(Duration::from_secs(2)).await;
        budget.on_success();
        assert_eq!(budget.effective(), 45.0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_late_wake_delays_the_calls_after_it() {
        let budget = Budget::new(2);
        let start = Instant::now();
        let first = budget.reserve(None).expect("no deadline");
        let second = budget.reserve(None).expect("no deadline");
        assert_eq!(
            (first - start, second - start),
            (Duration::ZERO, Duration::from_millis(500))
        );
        // The first holder wakes 300 ms late, the second on time.
        tokio::time::advance(Duration::from_millis(300)).await;
        drop(budget.confirm().await);
        tokio::time::sleep_until(second).await;
        drop(budget.confirm().await);
        // Planned for 1.015 s (a window and the initial slack after the first
        // slot), the third call waits until that long after the first call really went.
        drop(budget.acquire().await);
        assert_eq!(Instant::now() - start, Duration::from_millis(1315));
    }

    #[tokio::test(start_paused = true)]
    async fn a_burst_of_late_holders_is_not_repeated_a_window_later() {
        let budget = Budget::new(2);
        let start = Instant::now();
        let ms = Duration::from_millis;
        let sent_at = |slot: Instant| {
            let budget = &budget;
            async move {
                tokio::time::sleep_until(slot).await;
                drop(budget.confirm().await);
                Instant::now() - start
            }
        };
        // Slots at 0 and 500 ms; the thread stalls until 600 ms, so both
        // holders wake at once and go together: one late burst.
        let (a, b) = (
            budget.reserve(None).expect("no deadline"),
            budget.reserve(None).expect("no deadline"),
        );
        tokio::time::advance(ms(600)).await;
        assert_eq!(tokio::join!(sent_at(a), sent_at(b)), (ms(600), ms(600)));
        // A window and its initial slack later the next two (planned at 1015
        // and 1515 ms) both wait for the window to pass the burst; they leave
        // 3/4 of the pace (375 ms) apart, not as the same burst again at 1615 ms.
        let (c, d) = (
            budget.reserve(None).expect("no deadline"),
            budget.reserve(None).expect("no deadline"),
        );
        assert_eq!((c - start, d - start), (ms(1015), ms(1515)));
        assert_eq!(tokio::join!(sent_at(c), sent_at(d)), (ms(1615), ms(1990)));
    }

    #[tokio::test(start_paused = true)]
    async fn refuses_a_permit_past_the_deadline_without_reserving() {
        let budget = Budget::new(2);
        let start = Instant::now();
        budget.acquire().await;
        budget.acquire().await;
        // The third permit is due a second after the first: too late for a 100 ms deadline.
        assert_eq!(
            budget
                .acquire_before(start + Duration::from_millis(100))
                .await
                .err(),
            Some(BudgetExhausted)
        );
        budget
            .acquire_before(start + Duration::from_secs(2))
            .await
            .expect("granted");
        assert!(Instant::now().duration_since(start) >= WINDOW);
    }

    #[tokio::test(start_paused = true)]
    async fn a_call_counts_until_its_permit_is_released() {
        let budget = Budget::new(1);
        let start = Instant::now();
        let first = budget.acquire().await;
        // The first holder stalls 3 s before its request is on the wire: it may
        // reach the server at any instant until then, so the second waits a
        // window (and the slack) after the release.
        tokio::time::sleep(Duration::from_secs(3)).await;
        drop(first);
        drop(budget.acquire().await);
        assert_eq!(Instant::now() - start, Duration::from_millis(4015));
    }

    #[tokio::test(start_paused = true)]
    async fn with_every_call_of_the_window_open_the_next_waits_for_a_release() {
        let budget = Arc::new(Budget::new(2));
        let start = Instant::now();
        let a = budget.acquire().await;
        let b = budget.acquire().await;
        let third = tokio::spawn({
            let budget = Arc::clone(&budget);
            async move {
                drop(budget.acquire().await);
                Instant::now() - start
            }
        });
        // Both permits (handed out at 0 and 0.5 s) stay open past their window; the first is released at 3 s.
        tokio::time::sleep(Duration::from_millis(2500)).await;
        drop(a);
        tokio::time::sleep(Duration::from_millis(500)).await;
        drop(b);
        // Granted a window after the first release, not at it.
        assert_eq!(third.await.ok(), Some(Duration::from_millis(4015)));
    }

    #[tokio::test(start_paused = true)]
    async fn slots_are_planned_a_window_plus_the_time_a_call_is_held_apart() {
        let budget = Budget::new(10);
        for _ in 0..200 {
            let permit = budget.acquire().await;
            tokio::time::sleep(Duration::from_millis(50)).await;
            drop(permit);
        }
        // 10 calls per 1.065 s (window, initial slack, 50 ms held).
        let sustained = budget.sustained();
        assert!((9.35..9.45).contains(&sustained), "sustained {sustained}");
    }

    #[tokio::test(start_paused = true)]
    async fn the_window_widens_by_how_much_round_trips_vary() {
        let budget = Budget::new(10);
        let ms = Duration::from_millis;
        // Round trips of 20 and 30 ms: 10 ms of slack, 10 calls per 1.01 s.
        for i in 0..16 {
            budget.on_round_trip(if i % 2 == 0 { ms(20) } else { ms(30) });
        }
        assert_eq!(budget.lock().slack, ms(10));
        assert!(
            (9.89..9.91).contains(&budget.sustained()),
            "{}",
            budget.sustained()
        );
        // A steady 20 ms (the older ones forgotten): the floor of 2 ms.
        for _ in 0..ROUND_TRIPS {
            budget.on_round_trip(ms(20));
        }
        assert_eq!(budget.lock().slack, MIN_SLACK);
        // Stalls on the way: at most 50 ms.
        for i in 0..32 {
            budget.on_round_trip(if i % 4 == 0 { ms(900) } else { ms(20) });
        }
        assert_eq!(budget.lock().slack, MAX_SLACK);
    }

    /// A group's bucket that grants every `pace` while `up`, else says local.
    struct Group {
        up: std::sync::atomic::AtomicBool,
        next: Mutex<Option<Instant>>,
        pace: Duration,
        until: Mutex<Option<Instant>>,
    }

    impl SharedBucket for Group {
        fn reserve(&self, _: Ask) -> Pin<Box<dyn Future<Output = SharedGrant> + Send + '_>> {
            Box::pin(async move {
                if !self.up.load(std::sync::atomic::Ordering::Relaxed) {
                    return SharedGrant::Local {
                        replicas: 2,
                        until: *self.until.lock().unwrap(),
                    };
                }
                let now = Instant::now();
                let mut next = self.next.lock().unwrap();
                let slot = next.map_or(now, |n| n.max(now));
                *next = Some(slot + self.pace);
                SharedGrant::In(slot - now)
            })
        }
        fn replicas(&self) -> u32 {
            2
        }
    }

    #[tokio::test(start_paused = true)]
    async fn without_its_group_a_replica_grants_its_share_a_window_after_the_last_shared_slot() {
        let budget = Budget::new(20);
        let group = Arc::new(Group {
            up: true.into(),
            next: Mutex::new(None),
            pace: Duration::from_millis(100),
            until: Mutex::new(None),
        });
        budget.share(group.clone());
        // This replica's share of the sustained rate.
        assert!(
            (9.0..10.0).contains(&budget.sustained()),
            "{}",
            budget.sustained()
        );
        let start = Instant::now();
        let mut shared = Vec::new();
        for _ in 0..5 {
            drop(budget.acquire().await);
            shared.push(Instant::now() - start);
        }
        assert_eq!(shared.last(), Some(&Duration::from_millis(400)));
        group.up.store(false, std::sync::atomic::Ordering::Relaxed);
        let mut local = Vec::new();
        for _ in 0..12 {
            drop(budget.acquire().await);
            local.push(Instant::now() - start);
        }
        // Not before a window (1 s + the initial slack) after the last shared slot.
        assert!(local[0] >= Duration::from_millis(1415), "{local:?}");
        // Then 10 a window: half of 20.
        let grants: Vec<Instant> = local.iter().map(|d| start + *d).collect();
        assert_eq!(worst_window(&grants), 10);
        // Back: local slots end at `until`, the group's follow.
        let until = Instant::now() + Duration::from_millis(300);
        *group.until.lock().unwrap() = Some(until);
        let mut last_local = None;
        loop {
            drop(budget.acquire().await);
            if Instant::now() >= until {
                break;
            }
            last_local = Some(Instant::now());
        }
        group.up.store(true, std::sync::atomic::Ordering::Relaxed);
        assert!(last_local.is_none_or(|l| l < until));
        drop(budget.acquire().await);
        assert!(Instant::now() >= until);
    }
}

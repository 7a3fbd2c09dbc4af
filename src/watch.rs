//! The watch tier's rules: which rooms are watched ([`urgency`]), how often
//! ([`Urgency::spacing`]), in what order when the share is short
//! ([`Urgency::order`]), and how much of the budget it takes ([`Watch::rates`])
//! so that no pass outlasts [`pass_bound`]. The poller drives them; the
//! reasoning and the measurements are in `docs/freshness.md`.

use std::cmp::Ordering;
use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use tokio::time::Instant;

/// `polling.watch` as validated by the configuration.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct WatchSettings {
    pub enabled: bool,
    /// Share of MaxMemberCount from which a room is watched, in (0, 1].
    pub threshold: f64,
    /// How often a watched room is polled again (at least 1 s).
    pub interval: Duration,
    /// Most of the budget's sustained rate watch polls may take, in (0, 1).
    pub max_share: f64,
}

impl Default for WatchSettings {
    fn default() -> Self {
        WatchSettings {
            enabled: true,
            threshold: 0.8,
            interval: Duration::from_secs(5),
            max_share: 0.5,
        }
    }
}

/// A room's member figures from one successful poll.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample {
    pub members: u64,
    pub max: u64,
    pub at: Instant,
}

/// Why a room is watched; [`Urgency::order`] is the polling order when the
/// share is short.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Urgency {
    /// At or above the threshold with no rise seen, but its polls span too
    /// little time to call it flat (first seen, or polled moments ago): one
    /// more poll tells. The share of MaxMemberCount still free.
    Unknown { headroom: f64 },
    /// Rising: expected to reach MaxMemberCount in this many seconds.
    Filling { seconds: f64 },
    /// At or above the threshold, not rising: the share of MaxMemberCount still free.
    Near { headroom: f64 },
    /// At MaxMemberCount already.
    Full,
}

impl Urgency {
    /// Sooner first: unknown (one poll learns its rate; least headroom
    /// first), filling (soonest expected fill first), near (least headroom
    /// first), full.
    pub fn order(&self, other: &Urgency) -> Ordering {
        let rank = |u: &Urgency| match *u {
            Urgency::Unknown { headroom } => (0, headroom),
            Urgency::Filling { seconds } => (1, seconds),
            Urgency::Near { headroom } => (2, headroom),
            Urgency::Full => (3, 0.0),
        };
        let (a, b) = (rank(self), rank(other));
        a.0.cmp(&b.0).then(a.1.total_cmp(&b.1))
    }

    /// How long after its last poll the room is due again: a riser whose
    /// expected fill is far off is polled when half the time to it has
    /// passed, at most [`MAX_SPACING`] watch intervals apart; everything
    /// else every interval.
    pub fn spacing(&self, interval: Duration) -> Duration {
        match *self {
            Urgency::Filling { seconds } => secs(seconds / 2.0).clamp(interval, MAX_SPACING * interval),
            _ => interval,
        }
    }
}

/// The most watch intervals between two polls of a rising room.
pub const MAX_SPACING: u32 = 2;

/// Polls kept per room at most; only the baseline of the rise and the ones
/// after it are needed (a few at one poll per watch interval).
const MAX_SAMPLES: usize = 8;

/// What decides whether a room is watched, besides its own polls.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rules {
    /// `polling.watch.threshold`.
    pub threshold: f64,
    /// A room rising fast enough to fill within this qualifies below the
    /// threshold too (it would fill before the regular pass sees it again).
    pub horizon: Duration,
    /// No rise over less than this does not yet make a room flat.
    pub min_span: Duration,
}

/// Whether a room whose latest poll is `last` is watched, and how urgently;
/// `prev` is the earlier poll the rise is measured from.
pub fn urgency(last: Sample, prev: Option<Sample>, rules: &Rules) -> Option<Urgency> {
    if last.max == 0 {
        return None;
    }
    if last.members >= last.max {
        return Some(Urgency::Full);
    }
    let share = last.members as f64 / last.max as f64;
    let headroom = (last.max - last.members) as f64;
    let horizon = rules.horizon.as_secs_f64();
    let fill_in = prev
        .filter(|p| last.members > p.members && last.at > p.at)
        .map(|p| {
            let rate = (last.members - p.members) as f64 / last.at.duration_since(p.at).as_secs_f64();
            headroom / rate
        });
    match fill_in {
        Some(seconds) if share >= rules.threshold || seconds <= horizon => Some(Urgency::Filling { seconds }),
        _ if share < rules.threshold => None,
        _ if prev.is_some_and(|p| last.at.duration_since(p.at) >= rules.min_span) => Some(Urgency::Near {
            headroom: headroom / last.max as f64,
        }),
        _ => Some(Urgency::Unknown {
            headroom: headroom / last.max as f64,
        }),
    }
}

/// The longest a regular pass takes: `calls` at the share of the sustained
/// rate the tier always leaves (`1 - max_share`), or `interval` if longer.
/// With the tier off it is the pass of today: `calls` at the sustained rate.
pub fn pass_bound(settings: &WatchSettings, interval: Duration, calls: usize, sustained: f64) -> Duration {
    let share = if settings.enabled {
        1.0 - settings.max_share
    } else {
        1.0
    };
    interval.max(secs(calls as f64 / (share * sustained)))
}

fn secs(s: f64) -> Duration {
    Duration::try_from_secs_f64(s).unwrap_or(Duration::MAX)
}

/// What the poller says about a due room at pick time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Eligibility {
    Pollable,
    /// Its previous poll is still out: not now.
    Busy,
    /// Its member count arrives by callbacks: it leaves the tier until its next poll.
    ByCallback,
}

/// The tier's state: the recent polls of every room, the rooms watched
/// now, and the pacer of watch polls.
#[derive(Debug, Default)]
pub struct Watch {
    settings: WatchSettings,
    horizon: Duration,
    /// Calls per second the regular pass needs to keep its interval.
    pass_need: f64,
    /// Watch polls begin once every room has been polled (the first pass).
    started: bool,
    tracks: HashMap<String, Track>,
    watched: HashMap<String, Watched>,
    /// The earliest instant the next watch poll may start.
    next_slot: Option<Instant>,
}

#[derive(Debug, Clone)]
struct Track {
    /// Oldest first: the baseline of the rise, then the polls after it.
    samples: VecDeque<Sample>,
    /// The last poll started (either tier), answered or not.
    last_attempt: Option<Instant>,
}

impl Track {
    fn last(&self) -> Option<Sample> {
        self.samples.back().copied()
    }

    fn baseline(&self) -> Option<Sample> {
        (self.samples.len() > 1)
            .then(|| self.samples.front().copied())
            .flatten()
    }

    /// When the room is next due a watch poll, `spacing` after its last poll.
    fn due(&self, spacing: Duration) -> Instant {
        let polled = self.last().map(|s| s.at);
        let last = match (polled, self.last_attempt) {
            (Some(p), Some(a)) => p.max(a),
            (p, a) => p.or(a).unwrap_or_else(Instant::now),
        };
        last + spacing
    }
}

#[derive(Debug, Clone, Copy)]
struct Watched {
    urgency: Urgency,
    due: Instant,
    /// When the poll its urgency comes from returned.
    polled: Instant,
}

impl Watched {
    /// When the room may have its next watch poll: when due; a full room
    /// `full_spacing` after its last poll, or never.
    fn ready_at(&self, interval: Duration, full_spacing: Option<Duration>) -> Option<Instant> {
        match self.urgency {
            Urgency::Full => full_spacing.map(|spacing| self.due - interval + spacing),
            _ => Some(self.due),
        }
    }

    /// The urgency as of `now`: a riser's expected fill comes closer while it
    /// waits (and may be overdue), so a room not polled for a while moves up.
    fn urgency_at(&self, now: Instant) -> Urgency {
        match self.urgency {
            Urgency::Filling { seconds } => Urgency::Filling {
                seconds: seconds - now.duration_since(self.polled).as_secs_f64(),
            },
            other => other,
        }
    }
}

impl Watch {
    pub fn new(settings: WatchSettings) -> Watch {
        Watch {
            settings,
            ..Watch::default()
        }
    }

    pub fn settings(&self) -> WatchSettings {
        self.settings
    }

    /// A reload: the new keys apply to every room at once.
    pub fn reconfigure(&mut self, settings: WatchSettings) {
        self.settings = settings;
        let rooms: Vec<String> = self.tracks.keys().cloned().collect();
        for room in rooms {
            self.evaluate(&room);
        }
    }

    /// The regular pass now: `calls` per `interval` at `sustained`. Sets the
    /// rise horizon (see [`urgency`]) to the longest pass, [`pass_bound`],
    /// and what the pass needs to keep its interval (see [`Watch::rates`]).
    pub fn set_pass(&mut self, interval: Duration, calls: usize, sustained: f64) {
        self.horizon = pass_bound(&self.settings, interval, calls, sustained);
        self.pass_need = calls as f64 / interval.as_secs_f64().max(1e-3);
    }

    /// Lets watch polls begin (after the first pass).
    pub fn start(&mut self) {
        self.started = true;
    }

    /// A poll of `room` (either tier) returned these figures at `at`.
    pub fn observe(&mut self, room: &str, members: u64, max: u64, at: Instant) {
        let sample = Sample { members, max, at };
        let span = 2 * self.settings.interval;
        if !self.tracks.contains_key(room) {
            self.tracks.insert(
                room.to_owned(),
                Track {
                    samples: VecDeque::new(),
                    last_attempt: None,
                },
            );
        }
        if let Some(track) = self.tracks.get_mut(room) {
            track.samples.push_back(sample);
            // Keep the newest poll at least `span` before this one, and those after it.
            while track.samples.len() > MAX_SAMPLES || track.samples.get(1).is_some_and(|s| s.at + span <= at)
            {
                track.samples.pop_front();
            }
        }
        self.evaluate(room);
    }

    /// A poll of `room` started at `at` (either tier): its next watch poll
    /// is due an interval later, whatever the answer.
    pub fn attempted(&mut self, room: &str, at: Instant) {
        let interval = self.settings.interval;
        if let Some(track) = self.tracks.get_mut(room) {
            track.last_attempt = Some(at);
            if let Some(w) = self.watched.get_mut(room) {
                w.due = track.due(w.urgency.spacing(interval));
            }
        }
    }

    /// The room left the configuration, or the API says it does not exist.
    pub fn forget(&mut self, room: &str) {
        self.tracks.remove(room);
        self.watched.remove(room);
    }

    /// Rooms in the tier now.
    pub fn watched(&self) -> usize {
        self.watched.len()
    }

    /// Why `room` is watched, if it is.
    pub fn urgency_of(&self, room: &str) -> Option<Urgency> {
        self.watched.get(room).map(|w| w.urgency)
    }

    /// Calls per second the tier takes now ([`Watch::rate`]'s parts): the
    /// rooms not yet full at one poll per [`Urgency::spacing`], capped at
    /// `max_share` of `sustained`; then full rooms, one poll per interval,
    /// from what neither that nor the pass at its own interval needs (and
    /// within the same cap). A full room is known news: re-checking it never
    /// stretches the pass. 0 while it polls nothing.
    pub fn rates(&self, sustained: f64) -> (f64, f64) {
        let (filling, full, _) = self.plan(sustained);
        (filling, full)
    }

    /// [`Watch::rates`], and how many rooms are full.
    fn plan(&self, sustained: f64) -> (f64, f64, usize) {
        if !self.active() {
            return (0.0, 0.0, 0);
        }
        let interval = self.settings.interval;
        let (mut filling, mut full_rooms) = (0.0, 0);
        for w in self.watched.values() {
            match w.urgency {
                Urgency::Full => full_rooms += 1,
                u => filling += 1.0 / u.spacing(interval).as_secs_f64(),
            }
        }
        let cap = self.settings.max_share * sustained;
        let filling = filling.min(cap);
        let spare = (sustained - self.pass_need - filling).max(0.0);
        let full = (full_rooms as f64 / interval.as_secs_f64())
            .min(spare)
            .min(cap - filling);
        (filling, full, full_rooms)
    }

    /// Calls per second the tier takes now: both parts of [`Watch::rates`].
    pub fn rate(&self, sustained: f64) -> f64 {
        let (filling, full) = self.rates(sustained);
        filling + full
    }

    /// How long a regular pass of `calls` takes now: spread over `interval`,
    /// or stretched to what the budget leaves after the tier's [`Watch::rate`].
    /// Never longer than [`pass_bound`].
    pub fn pass_length(&self, interval: Duration, calls: usize, sustained: f64) -> Duration {
        interval.max(secs(calls as f64 / (sustained - self.rate(sustained))))
    }

    /// When the next watch poll may start: the pacer's next slot or the
    /// earliest due room, whichever is later; `None` while nothing is watched.
    pub fn next_poll_at(&self, sustained: f64) -> Option<Instant> {
        if !self.active() {
            return None;
        }
        let full_spacing = self.full_spacing(sustained);
        let earliest = self
            .watched
            .values()
            .filter_map(|w| w.ready_at(self.settings.interval, full_spacing))
            .min()?;
        Some(self.next_slot.map_or(earliest, |slot| slot.max(earliest)))
    }

    /// How often each full room is re-checked with what [`Watch::rates`]
    /// leaves them: every interval, or less often; `None`: not at all.
    fn full_spacing(&self, sustained: f64) -> Option<Duration> {
        let (_, full, rooms) = self.plan(sustained);
        (full > 0.0).then(|| self.settings.interval.max(secs(rooms as f64 / full)))
    }

    /// The room to poll now, if the pacer allows one: the most urgent due
    /// room that is pollable (ties: the longest due). The pacer spaces watch
    /// polls at the tier's share, so it never takes more; its rooms' due
    /// times keep it to what [`Watch::rate`] plans. It advances when any room
    /// was due, picked or not, so a due room that is busy does not make the
    /// caller spin.
    pub fn pick(
        &mut self,
        now: Instant,
        sustained: f64,
        eligibility: impl Fn(&str) -> Eligibility,
    ) -> Option<String> {
        let cap = self.settings.max_share * sustained;
        if !self.active() || cap <= 0.0 || self.next_slot.is_some_and(|slot| slot > now) {
            return None;
        }
        let (interval, full_spacing) = (self.settings.interval, self.full_spacing(sustained));
        let mut due: Vec<(&String, Watched)> = self
            .watched
            .iter()
            .filter(|(_, w)| w.ready_at(interval, full_spacing).is_some_and(|at| at <= now))
            .map(|(room, w)| (room, *w))
            .collect();
        let any_due = !due.is_empty();
        due.sort_by(|(_, a), (_, b)| {
            a.urgency_at(now)
                .order(&b.urgency_at(now))
                .then(a.due.cmp(&b.due))
        });
        // Asked in order, so the store is asked about few rooms per pick.
        let mut picked = None;
        let mut by_callback = Vec::new();
        for (room, _) in due {
            match eligibility(room) {
                Eligibility::Busy => {}
                Eligibility::ByCallback => by_callback.push(room.clone()),
                Eligibility::Pollable => {
                    picked = Some(room.clone());
                    break;
                }
            }
        }
        for room in by_callback {
            self.watched.remove(&room);
        }
        if any_due {
            self.next_slot = Some(self.next_slot.map_or(now, |slot| slot.max(now)) + secs(1.0 / cap));
        }
        if let Some(room) = &picked {
            self.attempted(room, now);
        }
        picked
    }

    fn active(&self) -> bool {
        self.settings.enabled && self.started && !self.watched.is_empty()
    }

    fn evaluate(&mut self, room: &str) {
        let Some(track) = self.tracks.get(room) else {
            return;
        };
        let rules = Rules {
            threshold: self.settings.threshold,
            horizon: self.horizon,
            min_span: 2 * self.settings.interval,
        };
        let Some(last) = track.last().filter(|_| self.settings.enabled) else {
            self.watched.remove(room);
            return;
        };
        match urgency(last, track.baseline(), &rules) {
            Some(urgency) => {
                let due = track.due(urgency.spacing(self.settings.interval));
                self.watched.insert(
                    room.to_owned(),
                    Watched {
                        urgency,
                        due,
                        polled: last.at,
                    },
                );
            }
            None => {
                self.watched.remove(room);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);
    /// The budget of the tests that do not vary it.
    const SUSTAINED: f64 = 200.0;

    fn settings() -> WatchSettings {
        WatchSettings::default()
    }

    /// A started tier with a 100 s horizon and a pass that needs almost no
    /// budget, as the poller has it after the first pass.
    fn started(settings: WatchSettings) -> Watch {
        let mut watch = Watch::new(settings);
        watch.set_pass(100 * S, 1, 1.0);
        watch.start();
        watch
    }

    /// A rate in thousandths of a call per second, to compare sums of rates.
    fn milli(rate: f64) -> i64 {
        (rate * 1000.0).round() as i64
    }

    fn millis((a, b): (f64, f64)) -> (i64, i64) {
        (milli(a), milli(b))
    }

    fn sample(members: u64, max: u64, at: Instant) -> Sample {
        Sample { members, max, at }
    }

    #[tokio::test(start_paused = true)]
    async fn which_rooms_qualify() {
        let t0 = Instant::now();
        let t1 = t0 + 10 * S;
        let rules = Rules {
            threshold: 0.8,
            horizon: 60 * S,
            min_span: 10 * S,
        };
        let at = |members, prev: Option<u64>| {
            urgency(sample(members, 100, t1), prev.map(|p| sample(p, 100, t0)), &rules)
        };
        // Below the threshold and flat or falling: not watched.
        assert_eq!(at(50, None), None);
        assert_eq!(at(50, Some(50)), None);
        assert_eq!(at(50, Some(60)), None);
        // At the threshold: near, once 10 s of polls show no rise (falling counts
        // as not rising); before that, unknown.
        assert_eq!(at(80, None), Some(Urgency::Unknown { headroom: 0.2 }));
        assert_eq!(at(90, Some(95)), Some(Urgency::Near { headroom: 0.1 }));
        let moments_ago = Some(sample(90, 100, t1 - 5 * S));
        assert_eq!(
            urgency(sample(90, 100, t1), moments_ago, &rules),
            Some(Urgency::Unknown { headroom: 0.1 })
        );
        // Rising 1 member/s with 20 to go: fills in 20 s.
        assert_eq!(at(80, Some(70)), Some(Urgency::Filling { seconds: 20.0 }));
        // Below the threshold, rising fast enough to fill within the horizon: watched.
        assert_eq!(at(50, Some(30)), Some(Urgency::Filling { seconds: 25.0 }));
        // Rising, but it would take 10 minutes: not yet.
        assert_eq!(at(40, Some(39)), None);
        assert_eq!(at(100, Some(90)), Some(Urgency::Full));
        // No capacity known: never.
        assert_eq!(urgency(sample(5, 0, t1), None, &rules), None);
        // A threshold of 1 watches full rooms only (and rooms about to fill).
        let all_in = Rules {
            threshold: 1.0,
            ..rules
        };
        assert_eq!(urgency(sample(99, 100, t1), None, &all_in), None);
        // The order: unknown, then the soonest to fill, then near, then full.
        let mut all = vec![
            Urgency::Full,
            Urgency::Near { headroom: 0.05 },
            Urgency::Filling { seconds: 90.0 },
            Urgency::Filling { seconds: 6.0 },
            Urgency::Unknown { headroom: 0.2 },
        ];
        all.sort_by(Urgency::order);
        assert_eq!(
            all,
            vec![
                Urgency::Unknown { headroom: 0.2 },
                Urgency::Filling { seconds: 6.0 },
                Urgency::Filling { seconds: 90.0 },
                Urgency::Near { headroom: 0.05 },
                Urgency::Full,
            ]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn rooms_enter_and_leave_with_their_polls() {
        let mut watch = started(settings());
        let t0 = Instant::now();
        watch.observe("a", 10, 100, t0);
        watch.observe("b", 90, 100, t0);
        assert_eq!(
            (watch.watched(), watch.urgency_of("b")),
            (1, Some(Urgency::Unknown { headroom: 0.1 }))
        );
        watch.observe("b", 50, 100, t0 + S);
        watch.observe("a", 85, 100, t0 + S);
        assert_eq!(watch.urgency_of("b"), None);
        assert_eq!(
            watch.urgency_of("a"),
            Some(Urgency::Filling { seconds: 15.0 / 75.0 })
        );
        watch.forget("a");
        assert_eq!(watch.watched(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn the_rise_is_measured_over_two_watch_intervals() {
        let mut watch = started(settings());
        let t0 = Instant::now();
        // Members arrive in bursts every 10 s; polls 5 s apart see 60, 70, 70.
        watch.observe("a", 60, 100, t0);
        watch.observe("a", 70, 100, t0 + 5 * S);
        assert_eq!(watch.urgency_of("a"), Some(Urgency::Filling { seconds: 15.0 }));
        watch.observe("a", 70, 100, t0 + 10 * S);
        // Still rising 1 member/s since 10 s ago: 30 to go, 30 s.
        assert_eq!(watch.urgency_of("a"), Some(Urgency::Filling { seconds: 30.0 }));
        // 10 s later (two intervals) with no rise since t0 + 10 s: flat, below the threshold.
        watch.observe("a", 70, 100, t0 + 15 * S);
        watch.observe("a", 70, 100, t0 + 20 * S);
        assert_eq!(watch.urgency_of("a"), None);
    }

    #[tokio::test(start_paused = true)]
    async fn a_watched_room_is_polled_every_interval() {
        let mut watch = started(settings());
        let t0 = Instant::now();
        watch.observe("near", 90, 100, t0);
        watch.observe("low", 10, 100, t0);
        let mut polls = Vec::new();
        for _ in 0..200 {
            tokio::time::advance(Duration::from_millis(100)).await;
            let now = Instant::now();
            if let Some(room) = watch.pick(now, 200.0, |_| Eligibility::Pollable) {
                watch.observe(&room, 90, 100, now);
                polls.push((room, now.duration_since(t0)));
            }
        }
        // Due at 5, 10, 15 and 20 s; the room at 10% never.
        let times: Vec<Duration> = polls.iter().map(|(_, at)| *at).collect();
        assert_eq!(times, vec![5 * S, 10 * S, 15 * S, 20 * S]);
        assert!(polls.iter().all(|(room, _)| room == "near"));
    }

    #[tokio::test(start_paused = true)]
    async fn nothing_before_the_first_pass_or_when_disabled() {
        let mut watch = Watch::new(settings());
        let t0 = Instant::now();
        watch.observe("near", 95, 100, t0);
        tokio::time::advance(10 * S).await;
        assert_eq!(watch.pick(Instant::now(), 200.0, |_| Eligibility::Pollable), None);
        assert_eq!(milli(watch.rate(200.0)), 0);
        watch.start();
        assert_eq!(milli(watch.rate(200.0)), 200);
        watch.reconfigure(WatchSettings {
            enabled: false,
            ..settings()
        });
        assert_eq!((watch.watched(), watch.next_poll_at(SUSTAINED)), (0, None));
        assert_eq!(watch.pick(Instant::now(), 200.0, |_| Eligibility::Pollable), None);
    }

    /// Drives the tier alone for `run` at a budget of `sustained`: every
    /// pick is answered at once with the room's unchanged figures.
    async fn drive(watch: &mut Watch, sustained: f64, run: Duration) -> HashMap<String, usize> {
        let end = Instant::now() + run;
        let mut polls: HashMap<String, usize> = HashMap::new();
        while Instant::now() < end {
            let Some(at) = watch.next_poll_at(sustained) else {
                break;
            };
            if at >= end {
                break;
            }
            tokio::time::sleep_until(at).await;
            let now = Instant::now();
            if let Some(room) = watch.pick(now, sustained, |_| Eligibility::Pollable) {
                let last = watch.tracks[&room].last().expect("polled before");
                watch.observe(&room, last.members, last.max, now);
                *polls.entry(room).or_default() += 1;
            }
        }
        polls
    }

    #[tokio::test(start_paused = true)]
    async fn the_share_caps_watch_polls() {
        // 100 rooms near capacity want 20 polls/s; half of a 10/s budget is 5/s.
        let mut watch = started(settings());
        let t0 = Instant::now();
        for i in 0..100 {
            watch.observe(&format!("r{i}"), 90, 100, t0);
        }
        assert_eq!(milli(watch.rate(10.0)), 5000);
        tokio::time::advance(5 * S).await;
        let polls = drive(&mut watch, 10.0, 60 * S).await;
        let total: usize = polls.values().sum();
        assert_eq!(total, 300, "5/s for 60 s");
        // With the share short, all alike: each room gets its turn (3 polls each).
        assert!(polls.values().all(|&n| n == 3), "{polls:?}");
        // A budget that fits them all: every room about every 5 s (12 in 60 s).
        let polls = drive(&mut watch, 1000.0, 60 * S).await;
        assert!(polls.values().all(|&n| (11..=13).contains(&n)), "{polls:?}");
        assert!((1190..=1200).contains(&polls.values().sum::<usize>()));
    }

    #[tokio::test(start_paused = true)]
    async fn when_the_share_is_short_the_soonest_to_fill_goes_first() {
        let mut watch = started(settings());
        let t0 = Instant::now();
        // Full, flat at 95%, slow riser, fast riser, over two polls 10 s apart.
        for (room, before, now) in [
            ("full", 100, 100),
            ("flat", 95, 95),
            ("slow", 70, 85),
            ("fast", 60, 85),
        ] {
            watch.observe(room, before, 100, t0);
            watch.observe(room, now, 100, t0 + 10 * S);
        }
        assert_eq!(watch.urgency_of("fast"), Some(Urgency::Filling { seconds: 6.0 }));
        assert_eq!(watch.urgency_of("slow"), Some(Urgency::Filling { seconds: 10.0 }));
        tokio::time::advance(20 * S).await;
        // All four are due; a budget of 1/s leaves the tier 0.5/s (0.6/s
        // wanted by the three not full): one poll every 2 s. The risers are
        // due again (5 s) before the full room's turn comes: it gets what is
        // left of the share, here nothing.
        let mut order = Vec::new();
        let start = Instant::now();
        for _ in 0..6 {
            let at = watch.next_poll_at(1.0).expect("rooms watched");
            tokio::time::sleep_until(at).await;
            let room = watch
                .pick(Instant::now(), 1.0, |_| Eligibility::Pollable)
                .expect("a due room");
            order.push(room);
        }
        assert_eq!(order, vec!["fast", "slow", "flat", "fast", "slow", "flat"]);
        assert_eq!(Instant::now() - start, 10 * S);
    }

    #[tokio::test(start_paused = true)]
    async fn a_riser_far_from_full_is_polled_less_often_as_it_nears() {
        let mut watch = started(settings());
        let t0 = Instant::now();
        // 80% and rising 0.2 members/s: full 100 s after t0.
        let members = |at: Instant| (80 + at.duration_since(t0).as_secs_f64() as u64 / 5).min(100);
        watch.observe("a", 80, 100, t0);
        watch.observe("a", 82, 100, t0 + 10 * S);
        tokio::time::advance(10 * S).await;
        let mut polls = vec![Instant::now()];
        while polls.len() < 11 {
            let at = watch.next_poll_at(SUSTAINED).expect("watched");
            tokio::time::sleep_until(at).await;
            let now = Instant::now();
            if let Some(room) = watch.pick(now, SUSTAINED, |_| Eligibility::Pollable) {
                watch.observe(&room, members(now), 100, now);
                polls.push(now);
            }
        }
        let gaps: Vec<u128> = polls.windows(2).map(|w| (w[1] - w[0]).as_millis()).collect();
        // Half the expected time to fill, between 1 and 2 intervals: 20 s to
        // go and more is 10 s; the last 10 s, 5 s.
        assert_eq!(
            gaps,
            [10_000, 10_000, 10_000, 10_000, 10_000, 10_000, 10_000, 10_000, 5_000, 5_000]
        );
        // Full at 100 s, seen by the poll at 100 s.
        assert_eq!(
            polls.last().map(|at| (at.duration_since(t0), members(*at))),
            Some((100 * S, 100))
        );
        // 10 polls from 82% until it fills, where one every interval makes 18.
        assert_eq!(
            polls
                .iter()
                .filter(|&&at| at.duration_since(t0) < 100 * S)
                .count(),
            10
        );
    }

    #[tokio::test(start_paused = true)]
    async fn full_rooms_take_only_what_the_pass_leaves() {
        let mut watch = started(settings());
        let t0 = Instant::now();
        for i in 0..10 {
            watch.observe(&format!("full{i}"), 100, 100, t0);
            watch.observe(&format!("near{i}"), 90, 100, t0);
        }
        // A pass of 30 calls per 30 s leaves 10 - 1 - 2 of a 10/s budget:
        // the full rooms get their poll every interval, 2/s.
        watch.set_pass(30 * S, 30, 10.0);
        assert_eq!(millis(watch.rates(10.0)), (2000, 2000));
        // 10,000 calls per 30 s need more than the budget: the full rooms get
        // none, so they do not stretch the pass.
        watch.set_pass(30 * S, 10_000, 10.0);
        assert_eq!(millis(watch.rates(10.0)), (2000, 0));
        assert_eq!(watch.pass_length(30 * S, 10_000, 10.0), 1250 * S);
        tokio::time::advance(5 * S).await;
        let polls = drive(&mut watch, 10.0, 60 * S).await;
        assert!(polls.keys().all(|room| room.starts_with("near")), "{polls:?}");
        assert_eq!(polls.values().sum::<usize>(), 120, "{polls:?}");
        // And within the share (5/s): 20 rooms not full take 4/s, which
        // leaves 1/s of it to the full rooms, though the pass needs little.
        watch.set_pass(30 * S, 30, 10.0);
        for i in 10..20 {
            watch.observe(&format!("near{i}"), 90, 100, Instant::now());
        }
        assert_eq!(millis(watch.rates(10.0)), (4000, 1000));
    }

    #[tokio::test(start_paused = true)]
    async fn a_riser_left_waiting_moves_up_as_its_fill_comes_closer() {
        let mut watch = started(settings());
        let t0 = Instant::now();
        // "early" rose 10 in 10 s with 20 to go (20 s); "late", polled 20 s
        // later, rose 10 in 10 s with 10 to go (10 s).
        watch.observe("early", 70, 100, t0);
        watch.observe("early", 80, 100, t0 + 10 * S);
        tokio::time::advance(20 * S).await;
        watch.observe("late", 80, 100, t0 + 20 * S);
        watch.observe("late", 90, 100, t0 + 30 * S);
        tokio::time::advance(15 * S).await;
        // At 35 s both are due; "early" was expected full at 30 s, "late" at 40 s.
        // (Counted from their last polls, "late" would go first: 10 s against 20 s.)
        let picked = watch.pick(Instant::now(), 200.0, |_| Eligibility::Pollable);
        assert_eq!(picked.as_deref(), Some("early"));
    }

    #[tokio::test(start_paused = true)]
    async fn busy_rooms_wait_and_callback_rooms_leave() {
        let mut watch = started(settings());
        let t0 = Instant::now();
        watch.observe("busy", 99, 100, t0);
        watch.observe("cb", 99, 100, t0);
        watch.observe("ok", 90, 100, t0);
        tokio::time::advance(5 * S).await;
        let picked = watch.pick(Instant::now(), 200.0, |room| match room {
            "busy" => Eligibility::Busy,
            "cb" => Eligibility::ByCallback,
            _ => Eligibility::Pollable,
        });
        assert_eq!(picked.as_deref(), Some("ok"));
        assert_eq!((watch.watched(), watch.urgency_of("cb")), (2, None));
        // The pacer moved on: no second pick in the same instant.
        assert_eq!(watch.pick(Instant::now(), 200.0, |_| Eligibility::Pollable), None);
        // Its next poll puts the callback room back in the tier.
        watch.observe("cb", 99, 100, Instant::now());
        assert_eq!(watch.watched(), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn no_pass_is_longer_than_the_bound() {
        let mut watch = started(settings());
        let t0 = Instant::now();
        let interval = 30 * S;
        // 10,000 rooms at 200 calls/s: 50 s without the tier.
        let sustained = 200.0;
        let off = pass_bound(
            &WatchSettings {
                enabled: false,
                ..settings()
            },
            interval,
            10_000,
            sustained,
        );
        assert_eq!(off, 50 * S);
        assert_eq!(watch.pass_length(interval, 10_000, sustained), off);
        // 300 rooms watched at 5 s: 60 calls/s, the pass gets the other 140.
        for i in 0..300 {
            watch.observe(&format!("r{i}"), 90, 100, t0);
        }
        assert_eq!(milli(watch.rate(sustained)), 60000);
        assert_eq!(watch.pass_length(interval, 10_000, sustained).as_millis(), 71_428);
        // 2,000 rooms would want 400/s: capped at half, the pass is at its bound, twice off.
        for i in 300..2_000 {
            watch.observe(&format!("r{i}"), 90, 100, t0);
        }
        let bound = pass_bound(&settings(), interval, 10_000, sustained);
        assert_eq!(watch.pass_length(interval, 10_000, sustained), bound);
        assert_eq!(bound, 100 * S);
        // A pass that fits in its interval is not stretched by the tier.
        assert_eq!(watch.pass_length(interval, 1_000, sustained), interval);
        // max_share 0.75 allows four times the pass, never more.
        watch.reconfigure(WatchSettings {
            max_share: 0.75,
            ..settings()
        });
        assert_eq!(
            watch.pass_length(interval, 10_000, sustained).as_millis(),
            4 * off.as_millis()
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_reload_applies_the_new_keys_to_every_room() {
        let mut watch = started(settings());
        let t0 = Instant::now();
        watch.observe("a", 70, 100, t0);
        watch.observe("b", 85, 100, t0);
        assert_eq!(watch.watched(), 1);
        watch.reconfigure(WatchSettings {
            threshold: 0.6,
            interval: 2 * S,
            ..settings()
        });
        assert_eq!(watch.watched(), 2);
        // The new interval: both due 2 s after their poll.
        assert_eq!(watch.next_poll_at(SUSTAINED), Some(t0 + 2 * S));
        assert_eq!(milli(watch.rate(200.0)), 1000);
        // A smaller share caps the same two rooms: a quarter of 2/s.
        watch.reconfigure(WatchSettings {
            threshold: 0.6,
            interval: 2 * S,
            max_share: 0.25,
            ..settings()
        });
        assert_eq!(milli(watch.rate(2.0)), 500);
    }
}

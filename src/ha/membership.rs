//! Who is alive in the group: every `ha.heartbeat` a replica stamps its ID
//! in a sorted set with the Redis server's clock and reads the others'; one
//! not seen for `ha.dead_after` is dead. [`run`] publishes the live set.

use std::collections::HashMap;
use std::future::Future;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// What one beat read back: the server's clock, every member with its last
/// beat (ms), and who held this replica's ID before the beat (its nonce).
#[derive(Debug, Clone, Default)]
pub struct Seen {
    pub now_ms: u64,
    pub members: Vec<(String, u64)>,
    pub previous_nonce: Option<String>,
}

/// The beats' transport: Redis in the exporter, a shared map in tests.
pub trait Beats: Send + Sync + 'static {
    fn beat(&self, me: &str, nonce: &str) -> impl Future<Output = Result<Seen, String>> + Send;
    /// Leaves the group at once (a clean stop), so its rooms move now: its
    /// beat is set `dead_after` back.
    fn leave(&self, me: &str) -> impl Future<Output = ()> + Send;
}

/// When each replica last beat, on this replica's clock (the server's
/// ages of the beats, taken from when they were read). Kept here, a replica
/// stays alive through a Redis restart that emptied the set, until it
/// really has not beaten for `dead_after`.
#[derive(Debug, Default)]
pub struct Known {
    last_beat: HashMap<String, Instant>,
}

impl Known {
    /// A beat read `seen` at `read_at`: a member listed is as old as its
    /// score says (one that left is listed `dead_after` old); one missing
    /// (Redis lost the set) keeps its last beat.
    pub fn saw(&mut self, seen: &Seen, read_at: Instant, dead_after: Duration) {
        for (id, at_ms) in &seen.members {
            let age = Duration::from_millis(seen.now_ms.saturating_sub(*at_ms));
            match read_at.checked_sub(age) {
                Some(beat) if age < dead_after => {
                    self.last_beat.insert(id.clone(), beat);
                }
                _ => {
                    self.last_beat.remove(id);
                }
            }
        }
    }

    /// The replicas alive at `now`, sorted, always with `me`; long-dead ones are forgotten.
    pub fn live(&mut self, me: &str, now: Instant, dead_after: Duration) -> Vec<String> {
        self.last_beat
            .retain(|_, beat| now.saturating_duration_since(*beat) < dead_after * 10);
        let mut live: Vec<String> = self
            .last_beat
            .iter()
            .filter(|(id, beat)| *id == me || now.saturating_duration_since(**beat) < dead_after)
            .map(|(id, _)| id.clone())
            .collect();
        if !live.iter().any(|id| id == me) {
            live.push(me.to_owned());
        }
        live.sort();
        live
    }
}

/// What the heartbeat tells the rest of the replica.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    pub live: Vec<String>,
    /// The last beat reached Redis (false: `live` is the last known set).
    pub reachable: bool,
}

pub struct Settings {
    pub me: String,
    pub heartbeat: Duration,
    pub dead_after: Duration,
}

/// Counts told by the heartbeat: ID conflicts, for the metric.
pub trait Report: Send + Sync + 'static {
    fn conflict(&self, me: &str);
    fn unreachable(&self, error: &str, first: bool);
    fn back(&self);
}

/// Beats every `heartbeat` until `shutdown`, then leaves; `group` gets the
/// live set whenever it changes. Another process beating with this ID shows
/// as a nonce other than ours between two of our beats.
pub async fn run<B: Beats, R: Report>(
    beats: B,
    settings: Settings,
    group: watch::Sender<Group>,
    report: R,
    shutdown: CancellationToken,
) {
    let nonce = format!("{:016x}", rand::random::<u64>());
    let mut first = true;
    let mut down = false;
    let mut known = Known::default();
    let mut ticks = tokio::time::interval(settings.heartbeat);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = ticks.tick() => {}
        }
        let result = beats.beat(&settings.me, &nonce).await;
        let now = Instant::now();
        match result {
            Ok(seen) => {
                known.saw(&seen, now, settings.dead_after);
                if !first && seen.previous_nonce.as_deref().is_some_and(|n| n != nonce) {
                    report.conflict(&settings.me);
                }
                first = false;
                if std::mem::take(&mut down) {
                    report.back();
                }
                let live = known.live(&settings.me, now, settings.dead_after);
                group.send_if_modified(|g| {
                    let changed = g.live != live || !g.reachable;
                    g.live = live;
                    g.reachable = true;
                    changed
                });
            }
            Err(e) => {
                report.unreachable(&e, !down);
                down = true;
                group.send_if_modified(|g| std::mem::replace(&mut g.reachable, false));
            }
        }
    }
    beats.leave(&settings.me).await;
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::sync::{Arc, Mutex};

    use tokio::time::Instant;

    use super::*;

    /// The sorted set, with the paused tokio clock as the server's clock.
    #[derive(Clone)]
    struct Shared {
        start: Instant,
        members: Arc<Mutex<HashMap<String, (u64, String)>>>,
        down: Arc<std::sync::atomic::AtomicBool>,
    }

    impl Beats for Shared {
        async fn beat(&self, me: &str, nonce: &str) -> Result<Seen, String> {
            if self.down.load(std::sync::atomic::Ordering::Relaxed) {
                return Err("connection refused".into());
            }
            // The server's clock, started well past 0.
            let now_ms = 100_000 + self.start.elapsed().as_millis() as u64;
            let mut members = self.members.lock().unwrap();
            let previous = members.insert(me.to_owned(), (now_ms, nonce.to_owned()));
            Ok(Seen {
                now_ms,
                members: members.iter().map(|(id, (at, _))| (id.clone(), *at)).collect(),
                previous_nonce: previous.map(|(_, n)| n),
            })
        }
        async fn leave(&self, me: &str) {
            let now_ms = 100_000 + self.start.elapsed().as_millis() as u64;
            if let Some(entry) = self.members.lock().unwrap().get_mut(me) {
                entry.0 = now_ms.saturating_sub(10_000);
            }
        }
    }

    #[derive(Clone, Default)]
    struct Counts(Arc<Mutex<(u32, u32, u32)>>);
    impl Report for Counts {
        fn conflict(&self, _: &str) {
            self.0.lock().unwrap().0 += 1;
        }
        fn unreachable(&self, _: &str, first: bool) {
            if first {
                self.0.lock().unwrap().1 += 1;
            }
        }
        fn back(&self) {
            self.0.lock().unwrap().2 += 1;
        }
    }

    fn start(
        shared: &Shared,
        me: &str,
        counts: &Counts,
    ) -> (
        watch::Receiver<Group>,
        CancellationToken,
        tokio::task::JoinHandle<()>,
    ) {
        let (tx, rx) = watch::channel(Group {
            live: vec![me.to_owned()],
            reachable: false,
        });
        let stop = CancellationToken::new();
        let settings = Settings {
            me: me.to_owned(),
            heartbeat: Duration::from_secs(2),
            dead_after: Duration::from_secs(10),
        };
        let task = tokio::spawn(run(shared.clone(), settings, tx, counts.clone(), stop.clone()));
        (rx, stop, task)
    }

    fn shared() -> Shared {
        Shared {
            start: Instant::now(),
            members: Arc::default(),
            down: Arc::default(),
        }
    }

    async fn at(start: Instant, secs: f64) {
        tokio::time::sleep_until(start + Duration::from_secs_f64(secs)).await;
    }

    #[tokio::test(start_paused = true)]
    async fn a_replica_that_stops_beating_is_dead_after_dead_after_and_not_before() {
        let shared = shared();
        let counts = Counts::default();
        let (a, _stop_a, _ta) = start(&shared, "a", &counts);
        let (_b, _stop_b, tb) = start(&shared, "b", &counts);
        // a beat first at t=0, before b: it sees b from its beat at 2.
        at(shared.start, 2.5).await;
        assert_eq!(a.borrow().live, ["a", "b"]);
        // b's last beat is at t=6 (beats at 0, 2, 4, 6); it dies at 7 (kill -9: no leave).
        at(shared.start, 7.0).await;
        tb.abort();
        // a.s beat at 14 still sees b's beat of 6 as 8 s old: alive.
        at(shared.start, 15.9).await;
        assert_eq!(a.borrow().live, ["a", "b"], "dead before ha.dead_after");
        // a's beat at 16: b's last beat is 10 s old: dead.
        at(shared.start, 16.1).await;
        assert_eq!(a.borrow().live, ["a"]);
        assert_eq!(*counts.0.lock().unwrap(), (0, 0, 0));
    }

    #[tokio::test(start_paused = true)]
    async fn a_clean_stop_leaves_at_once_and_a_restart_with_the_same_id_joins_again() {
        let shared = shared();
        let counts = Counts::default();
        let (a, _stop_a, _ta) = start(&shared, "a", &counts);
        let (_b, stop_b, tb) = start(&shared, "b", &counts);
        at(shared.start, 3.0).await;
        stop_b.cancel();
        tb.await.unwrap();
        // a's next beat (t=4) no longer lists b.
        at(shared.start, 4.1).await;
        assert_eq!(a.borrow().live, ["a"]);
        let (_b, _stop_b, _tb) = start(&shared, "b", &counts);
        at(shared.start, 6.1).await;
        assert_eq!(a.borrow().live, ["a", "b"]);
        // A restart is no ID conflict.
        assert_eq!(counts.0.lock().unwrap().0, 0);
    }

    #[tokio::test(start_paused = true)]
    async fn two_processes_with_one_id_are_reported_and_redis_down_keeps_the_last_group() {
        let shared = shared();
        let counts = Counts::default();
        let (a, _s1, _t1) = start(&shared, "a", &counts);
        let (_a2, _s2, _t2) = start(&shared, "a", &counts);
        let (_b, _s3, _t3) = start(&shared, "b", &counts);
        at(shared.start, 4.5).await;
        assert!(counts.0.lock().unwrap().0 >= 2, "{:?}", counts.0.lock().unwrap());
        shared.down.store(true, std::sync::atomic::Ordering::Relaxed);
        at(shared.start, 30.0).await;
        let group = a.borrow().clone();
        assert_eq!(group.live, ["a", "b"]);
        assert!(!group.reachable);
        // Logged once per replica per outage, not at every beat.
        assert_eq!(counts.0.lock().unwrap().1, 3);
        shared.down.store(false, std::sync::atomic::Ordering::Relaxed);
        at(shared.start, 32.5).await;
        assert!(a.borrow().reachable);
        assert_eq!(counts.0.lock().unwrap().2, 3);
    }

    #[tokio::test(start_paused = true)]
    async fn a_redis_restart_that_empties_the_set_kills_nobody() {
        let shared = shared();
        let counts = Counts::default();
        let (a, _sa, _ta) = start(&shared, "a", &counts);
        let (_b, _sb, _tb) = start(&shared, "b", &counts);
        at(shared.start, 2.5).await;
        assert_eq!(a.borrow().live, ["a", "b"]);
        // A restart without persistence: every beat is gone; a beats (t=4) before b does.
        at(shared.start, 3.9).await;
        shared.members.lock().unwrap().clear();
        at(shared.start, 4.1).await;
        assert_eq!(a.borrow().live, ["a", "b"]);
        assert_eq!(shared.members.lock().unwrap().len(), 2);
    }

    #[test]
    fn a_beat_just_under_dead_after_is_alive_and_self_always() {
        let start = Instant::now();
        let read_at = start + Duration::from_secs(21);
        let mut known = Known::default();
        known.saw(
            &Seen {
                now_ms: 21_000,
                members: vec![
                    ("a".to_owned(), 1_000),
                    ("b".to_owned(), 11_001),
                    ("c".to_owned(), 11_000),
                ],
                previous_nonce: None,
            },
            read_at,
            Duration::from_secs(10),
        );
        assert_eq!(known.live("z", read_at, Duration::from_secs(10)), ["b", "z"]);
        // b beat 9.999 s before the read: alive for 1 ms more, on this replica's clock.
        let later = read_at;
        assert_eq!(known.live("a", later, Duration::from_secs(10)), ["a", "b"]);
        assert_eq!(
            known.live("a", later + Duration::from_millis(1), Duration::from_secs(10)),
            ["a"]
        );
    }
}

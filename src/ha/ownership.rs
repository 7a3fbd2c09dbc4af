//! Between the room set (and reloads) and the poller: passes on only the
//! rooms this replica owns, and when the group changes, moves the rooms
//! gained (polled at once, as a catch-up) and lost. Configured and
//! discovered rooms alike; the watch tier follows, as it lives in the poller.

use std::collections::HashSet;

use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use super::membership::Group;
use super::ring::Ring;
use crate::roomset::Reschedule;

/// What the filter counts, for `roomengine_ha_*`.
pub trait Moves: Send + 'static {
    fn owned(&self, rooms: usize);
    fn replicas(&self, live: usize);
    fn moved(&self, gained: usize, lost: usize);
}

/// The rooms the poller would poll without HA, and the share it gets.
pub struct Ownership {
    me: String,
    ring: Ring,
    all: HashSet<String>,
    configured: Vec<String>,
    /// The last settings, re-sent with the owned configured rooms when the group changes.
    settings: Option<Reschedule>,
}

impl Ownership {
    pub fn new(me: &str, live: &[String]) -> Ownership {
        Ownership {
            me: me.to_owned(),
            ring: Ring::new(live),
            all: HashSet::new(),
            configured: Vec::new(),
            settings: None,
        }
    }

    pub fn owns(&self, room: &str) -> bool {
        self.ring.owns(&self.me, room)
    }

    pub fn owned(&self) -> usize {
        self.all.iter().filter(|r| self.owns(r)).count()
    }

    /// The rooms the room set starts with (configured first), and the
    /// configured ones: the owned ones, in order.
    pub fn start(&mut self, rooms: Vec<String>, configured: &[String]) -> (Vec<String>, Vec<String>) {
        self.configured = configured.to_vec();
        self.all.extend(rooms.iter().cloned());
        let mine = rooms.into_iter().filter(|r| self.owns(r)).collect();
        (mine, self.owned_configured())
    }

    fn owned_configured(&self) -> Vec<String> {
        self.configured.iter().filter(|r| self.owns(r)).cloned().collect()
    }

    /// A change from the room set or a reload, as the poller should see it.
    pub fn filter(&mut self, update: Reschedule) -> Reschedule {
        match update {
            Reschedule::Rooms { added, removed } => {
                for room in &removed {
                    self.all.remove(room);
                }
                self.all.extend(added.iter().cloned());
                Reschedule::Rooms {
                    added: added.into_iter().filter(|r| self.owns(r)).collect(),
                    removed: removed.into_iter().filter(|r| self.owns(r)).collect(),
                }
            }
            Reschedule::Settings {
                interval,
                seat_usage,
                watch,
                configured,
            } => {
                self.configured = configured;
                let settings = Reschedule::Settings {
                    interval,
                    seat_usage,
                    watch,
                    configured: self.owned_configured(),
                };
                self.settings = Some(settings.clone());
                settings
            }
        }
    }

    /// The group is now `live`: the rooms gained and lost, then the
    /// settings again if the owned configured rooms changed.
    pub fn regroup(&mut self, live: &[String]) -> Vec<Reschedule> {
        let ring = Ring::new(live);
        if ring == self.ring {
            return Vec::new();
        }
        let before = std::mem::replace(&mut self.ring, ring);
        let (mut added, mut removed) = (Vec::new(), Vec::new());
        for room in &self.all {
            match (before.owns(&self.me, room), self.owns(room)) {
                (false, true) => added.push(room.clone()),
                (true, false) => removed.push(room.clone()),
                _ => {}
            }
        }
        // Configured rooms first, as at start.
        let configured: HashSet<&String> = self.configured.iter().collect();
        added.sort_by_key(|r| !configured.contains(r));
        let mut out = vec![Reschedule::Rooms { added, removed }];
        if let Some(Reschedule::Settings {
            interval,
            seat_usage,
            watch,
            ..
        }) = &self.settings
        {
            out.push(Reschedule::Settings {
                interval: *interval,
                seat_usage: *seat_usage,
                watch: *watch,
                configured: self.owned_configured(),
            });
        }
        out
    }
}

/// Runs the filter until `shutdown`: room set and reload updates from
/// `upstream`, group changes from `group`, the result to `poller`.
pub async fn run<M: Moves>(
    mut ownership: Ownership,
    mut upstream: mpsc::UnboundedReceiver<Reschedule>,
    mut group: watch::Receiver<Group>,
    poller: mpsc::UnboundedSender<Reschedule>,
    moves: M,
    shutdown: CancellationToken,
) {
    moves.owned(ownership.owned());
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            update = upstream.recv() => {
                let Some(update) = update else { return };
                let _ = poller.send(ownership.filter(update));
            }
            changed = group.changed() => {
                if changed.is_err() {
                    return;
                }
                let live = group.borrow_and_update().live.clone();
                let updates = ownership.regroup(&live);
                moves.replicas(ownership.ring.len());
                if let Some(Reschedule::Rooms { added, removed }) = updates.first() {
                    tracing::info!(replicas = ?live, gained = added.len(), lost = removed.len(), "HA group changed; rooms moved");
                    moves.moved(added.len(), removed.len());
                }
                for update in updates {
                    let _ = poller.send(update);
                }
            }
        }
        moves.owned(ownership.owned());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rooms(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("room-{i:04}")).collect()
    }

    fn ids(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn two_replicas_poll_disjoint_halves_and_a_death_gives_the_survivor_everything() {
        let all = rooms(2000);
        let group = ids(&["a", "b"]);
        let mut a = Ownership::new("a", &group);
        let mut b = Ownership::new("b", &group);
        let (mine_a, _) = a.start(all.clone(), &[]);
        let (mine_b, _) = b.start(all.clone(), &[]);
        assert_eq!(mine_a.len() + mine_b.len(), 2000);
        assert!(mine_a.iter().all(|r| !mine_b.contains(r)));
        assert!((900..1100).contains(&mine_a.len()), "{}", mine_a.len());
        let moved = a.regroup(&ids(&["a"]));
        let Some(Reschedule::Rooms { added, removed }) = moved.first() else {
            panic!("no move: {moved:?}")
        };
        assert_eq!(added.len(), mine_b.len());
        assert!(removed.is_empty());
        assert_eq!(a.owned(), 2000);
        // The same group again moves nothing.
        assert!(a.regroup(&ids(&["a"])).is_empty());
    }

    #[test]
    fn rooms_announced_later_go_to_their_owner_only_and_leave_from_it() {
        let group = ids(&["a", "b"]);
        let mut a = Ownership::new("a", &group);
        let mut b = Ownership::new("b", &group);
        a.start(Vec::new(), &[]);
        b.start(Vec::new(), &[]);
        let new = rooms(100);
        let update = || Reschedule::Rooms {
            added: new.clone(),
            removed: Vec::new(),
        };
        let (Reschedule::Rooms { added: to_a, .. }, Reschedule::Rooms { added: to_b, .. }) =
            (a.filter(update()), b.filter(update()))
        else {
            panic!("rooms became settings")
        };
        assert_eq!(to_a.len() + to_b.len(), 100);
        let gone = Reschedule::Rooms {
            added: Vec::new(),
            removed: vec![to_a[0].clone(), to_b[0].clone()],
        };
        let Reschedule::Rooms { removed, .. } = a.filter(gone) else {
            panic!()
        };
        assert_eq!(removed, [to_a[0].clone()]);
        assert_eq!(a.owned(), to_a.len() - 1);
    }

    #[test]
    fn configured_rooms_are_split_too_and_follow_a_regroup() {
        let configured = rooms(50);
        let mut a = Ownership::new("a", &ids(&["a", "b"]));
        let (_, owned) = a.start(configured.clone(), &configured);
        let settings = a.filter(Reschedule::Settings {
            interval: std::time::Duration::from_secs(30),
            seat_usage: true,
            watch: crate::watch::WatchSettings::default(),
            configured: configured.clone(),
        });
        let Reschedule::Settings { configured: told, .. } = settings else {
            panic!()
        };
        assert_eq!(told, owned);
        assert!(owned.len() < 50 && !owned.is_empty());
        let updates = a.regroup(&ids(&["a"]));
        assert!(
            matches!(updates.last(), Some(Reschedule::Settings { configured, .. }) if configured.len() == 50)
        );
    }
}

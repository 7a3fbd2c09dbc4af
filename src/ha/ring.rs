//! Which live replica owns a room: rendezvous (highest random weight)
//! hashing with XXH3, so only the rooms of a replica that joins or dies move.

use xxhash_rust::xxh3::{xxh3_64, xxh3_64_with_seed};

/// The live replicas of a group, each with its hash seed; sorted by ID so
/// every replica breaks a (never seen) weight tie the same way.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ring {
    replicas: Vec<(String, u64)>,
}

impl Ring {
    pub fn new<S: AsRef<str>>(replicas: &[S]) -> Ring {
        let mut replicas: Vec<(String, u64)> = replicas
            .iter()
            .map(|r| (r.as_ref().to_owned(), xxh3_64(r.as_ref().as_bytes())))
            .collect();
        replicas.sort();
        replicas.dedup();
        Ring { replicas }
    }

    pub fn len(&self) -> usize {
        self.replicas.len()
    }

    pub fn is_empty(&self) -> bool {
        self.replicas.is_empty()
    }

    pub fn replicas(&self) -> impl Iterator<Item = &str> {
        self.replicas.iter().map(|(r, _)| r.as_str())
    }

    /// The replica that polls `room`; `None` with no replica.
    pub fn owner(&self, room: &str) -> Option<&str> {
        self.replicas
            .iter()
            .max_by_key(|(_, seed)| xxh3_64_with_seed(room.as_bytes(), *seed))
            .map(|(r, _)| r.as_str())
    }

    pub fn owns(&self, replica: &str, room: &str) -> bool {
        self.owner(room) == Some(replica)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rooms(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("room-{i:05}")).collect()
    }

    fn owners(ring: &Ring, rooms: &[String]) -> Vec<String> {
        rooms
            .iter()
            .map(|r| ring.owner(r).unwrap_or("").to_owned())
            .collect()
    }

    #[test]
    fn every_replica_agrees_whatever_order_it_lists_the_group_in() {
        let a = Ring::new(&["b", "a", "c"]);
        let b = Ring::new(&["c", "b", "a", "a"]);
        let rooms = rooms(1000);
        assert_eq!(owners(&a, &rooms), owners(&b, &rooms));
    }

    #[test]
    fn the_owners_are_fixed_by_the_hash_not_by_the_build() {
        // Pinned: a replica of another release must pick the same owners.
        let ring = Ring::new(&["exporter-a", "exporter-b"]);
        let picked: Vec<&str> = ["weekly-sync", "all-hands", "standup", "room-00002", "x", "board"]
            .iter()
            .map(|r| ring.owner(r).unwrap_or(""))
            .collect();
        assert_eq!(picked, PINNED);
    }
    const PINNED: [&str; 6] = [
        "exporter-a",
        "exporter-a",
        "exporter-b",
        "exporter-b",
        "exporter-b",
        "exporter-b",
    ];

    #[test]
    fn rooms_split_evenly_and_only_those_of_a_joining_or_dead_replica_move() {
        let rooms = rooms(30_000);
        let two = Ring::new(&["a", "b"]);
        let three = Ring::new(&["a", "b", "c"]);
        let before = owners(&two, &rooms);
        let after = owners(&three, &rooms);
        let share_a = before.iter().filter(|o| *o == "a").count() as f64 / rooms.len() as f64;
        assert!((0.48..0.52).contains(&share_a), "a owns {share_a}");
        let mut moved = 0;
        for (b, a) in before.iter().zip(&after) {
            if b != a {
                // A room only ever moves to the replica that joined.
                assert_eq!(a, "c");
                moved += 1;
            }
        }
        let moved = moved as f64 / rooms.len() as f64;
        assert!((0.31..0.36).contains(&moved), "moved {moved}");
        // c dies: exactly its rooms go back, each to its old owner.
        assert_eq!(owners(&two, &rooms), before);
        let without_b = owners(&Ring::new(&["a", "c"]), &rooms);
        for ((two, three), now) in before.iter().zip(&after).zip(&without_b) {
            if three != "b" {
                assert_eq!(three, now, "a room of a live replica moved");
            }
            assert!(two != "b" || now != "b");
        }
    }

    #[test]
    fn no_replica_owns_nothing_and_one_owns_all() {
        assert_eq!(Ring::new::<&str>(&[]).owner("room"), None);
        let one = Ring::new(&["only"]);
        assert!(rooms(100).iter().all(|r| one.owns("only", r)));
    }
}

//! What is known of one room, field by field, each field with the instant it
//! was true as of (Unix ms). Polls and callbacks both arrive as a
//! [`RoomUpdate`]; [`RoomFacts::merge`] keeps, per field, the newest.

use serde::{Deserialize, Serialize};

use crate::api::model::{RoomInfo, SeatUsage};

/// The one list of a room's fields: each field's name, the RoomInfo key it
/// is told by (when a get_room_info answer or a callback's RoomInfo carries
/// it), and where [`RoomFacts`] keeps it (`|facts, update| (slot, value)`).
/// [`Field`], [`Field::ALL`], [`Field::info_key`], [`Fields::ROOM_INFO`] and
/// [`RoomFacts::merge`] derive from it; stamps are indexed by it.
macro_rules! room_fields {
    ($($(#[$doc:meta])* $field:ident $(= $key:literal)? : |$f:ident, $u:ident| ($slot:expr, $value:expr);)*) => {
        /// One field of a room, as ordered by `EventTime`: callbacks carry subsets.
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        #[repr(u8)]
        pub enum Field {
            $($(#[$doc])* $field,)*
        }

        impl Field {
            /// Every field, in declaration order (`ALL[f as usize] == f`).
            pub const ALL: [Field; FIELD_COUNT] = [$(Field::$field),*];

            /// The RoomInfo key that tells this field, as Tencent names it.
            pub const fn info_key(self) -> Option<&'static str> {
                match self {
                    $(Field::$field => room_fields!(@key $($key)?),)*
                }
            }
        }

        pub const FIELD_COUNT: usize = [$(stringify!($field)),*].len();

        impl RoomFacts {
            /// Copies `field` from `update`; whether the value differed.
            fn set(&mut self, field: Field, update: &RoomUpdate) -> bool {
                match field {
                    $(Field::$field => {
                        let ($f, $u) = (&mut *self, update);
                        put($slot, $value)
                    })*
                }
            }
        }
    };
    (@key $key:literal) => { Some($key) };
    (@key) => { None };
}

room_fields! {
    RoomName = "RoomName": |f, u| (&mut f.info.room_name, &u.info.room_name);
    RoomType = "RoomType": |f, u| (&mut f.info.room_type, &u.info.room_type);
    Owner = "Owner_Account": |f, u| (&mut f.info.owner_account, &u.info.owner_account);
    MaxMembers = "MaxMemberCount": |f, u| (&mut f.info.max_member_count, &u.info.max_member_count);
    MaxSeats = "MaxSeatCount": |f, u| (&mut f.info.max_seat_count, &u.info.max_seat_count);
    VideoDisabled = "IsVideoDisabled": |f, u| (&mut f.info.is_video_disabled, &u.info.is_video_disabled);
    AudioDisabled = "IsAudioDisabled": |f, u| (&mut f.info.is_audio_disabled, &u.info.is_audio_disabled);
    MessageDisabled = "IsMessageDisabled": |f, u| (&mut f.info.is_message_disabled, &u.info.is_message_disabled);
    ScreenSharingDisabled = "IsScreenSharingDisabled":
        |f, u| (&mut f.info.is_screen_sharing_disabled, &u.info.is_screen_sharing_disabled);
    CloudRecordingDisabled = "IsCloudRecordingDisabled":
        |f, u| (&mut f.info.is_cloud_recording_disabled, &u.info.is_cloud_recording_disabled);
    ScheduleStart = "ScheduleStartTime": |f, u| (&mut f.info.schedule_start_time, &u.info.schedule_start_time);
    ScheduleEnd = "ScheduleEndTime": |f, u| (&mut f.info.schedule_end_time, &u.info.schedule_end_time);
    Status = "RoomStatus": |f, u| (&mut f.info.room_status, &u.info.room_status);
    SeatEnabled = "IsSeatEnabled": |f, u| (&mut f.info.is_seat_enabled, &u.info.is_seat_enabled);
    TakeSeatMode = "TakeSeatMode": |f, u| (&mut f.info.take_seat_mode, &u.info.take_seat_mode);
    CreateTime = "CreateTime": |f, u| (&mut f.info.create_time, &u.info.create_time);
    Members = "MemberCount": |f, u| (&mut f.info.member_count, &u.info.member_count);
    /// Seat usage, from get_seat_list or a seat callback (no RoomInfo key).
    Seats: |f, u| (&mut f.seats, &u.seats);
    /// Whether the room exists (a destroy callback or 100004 says no).
    Exists: |f, u| (&mut f.exists, &Some(u.exists));
}

/// Stores `value` in `slot`; whether it differed.
fn put<T: PartialEq + Clone>(slot: &mut T, value: &T) -> bool {
    let differs = slot != value;
    if differs {
        slot.clone_from(value);
    }
    differs
}

/// A set of fields, as a bit mask.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Fields(u32);

impl Fields {
    pub const NONE: Fields = Fields(0);
    /// Everything a get_room_info answer carries: the fields with a RoomInfo
    /// key (not seats, which come from get_seat_list).
    pub const ROOM_INFO: Fields = {
        let mut mask = 0;
        let mut i = 0;
        while i < FIELD_COUNT {
            if Field::ALL[i].info_key().is_some() {
                mask |= 1 << i;
            }
            i += 1;
        }
        Fields(mask)
    };

    pub fn with(self, field: Field) -> Fields {
        Fields(self.0 | 1 << field as u32)
    }

    pub fn has(self, field: Field) -> bool {
        self.0 & (1 << field as u32) != 0
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }
}

/// What one poll or callback says about a room: the values of `fields`
/// (others in `info` are ignored), true as of `at_ms`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RoomUpdate {
    pub fields: Fields,
    pub info: RoomInfo,
    pub seats: Option<SeatUsage>,
    pub exists: bool,
    pub at_ms: u64,
}

impl RoomUpdate {
    /// A successful get_room_info, as of the instant its request was sent;
    /// `seats` is the seat usage to show (`None`: no seat series).
    pub fn polled(info: RoomInfo, seats: Option<SeatUsage>, sent_ms: u64) -> RoomUpdate {
        RoomUpdate {
            fields: Fields::ROOM_INFO.with(Field::Exists).with(Field::Seats),
            info,
            seats,
            exists: true,
            at_ms: sent_ms,
        }
    }

    /// The room is gone (100004, or a destroy callback) as of `at_ms`.
    pub fn gone(at_ms: u64) -> RoomUpdate {
        RoomUpdate {
            fields: Fields::NONE.with(Field::Exists),
            exists: false,
            at_ms,
            ..RoomUpdate::default()
        }
    }
}

/// The merged knowledge of one room. `stamps[f]` is the instant field `f`
/// was last set as of (0: never known).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RoomFacts {
    pub info: RoomInfo,
    pub seats: Option<SeatUsage>,
    /// `None` until a poll or callback said whether the room exists.
    pub exists: Option<bool>,
    pub stamps: [u64; FIELD_COUNT],
}

impl RoomFacts {
    pub fn known(&self, field: Field) -> bool {
        self.stamps[field as usize] != 0
    }

    /// True when some field of the room's info is known (and so has series).
    pub fn any_info(&self) -> bool {
        Field::ALL
            .iter()
            .any(|&f| Fields::ROOM_INFO.has(f) && self.known(f))
    }

    /// Applies each field of `update` that is at least as new as what is
    /// known; returns whether anything changed. Equal times apply, so a
    /// repeated delivery is a no-op rather than an error.
    pub fn merge(&mut self, update: &RoomUpdate) -> bool {
        let mut changed = false;
        for (index, &field) in Field::ALL.iter().enumerate() {
            if !update.fields.has(field) || update.at_ms < self.stamps[index] {
                continue;
            }
            changed |= self.set(field, update);
            changed |= self.stamps[index] != update.at_ms;
            self.stamps[index] = update.at_ms;
        }
        changed
    }

    /// Takes every field `other` knows more recently (another replica's
    /// view of the room); whether anything changed. Merging is commutative
    /// and idempotent, so replicas that saw the same callbacks agree.
    pub fn absorb(&mut self, other: &RoomFacts) -> bool {
        let mut changed = false;
        let mut pending = Fields::NONE;
        for (index, field) in Field::ALL.iter().enumerate() {
            if other.stamps[index] > self.stamps[index] {
                pending = pending.with(*field);
            }
        }
        while !pending.is_empty() {
            // One update per distinct instant: fields told together move together.
            let Some(first) = Field::ALL.iter().position(|f| pending.has(*f)) else {
                break;
            };
            let at_ms = other.stamps[first];
            let mut fields = Fields::NONE;
            for (index, field) in Field::ALL.iter().enumerate() {
                if pending.has(*field) && other.stamps[index] == at_ms {
                    fields = fields.with(*field);
                }
            }
            pending = Fields(pending.0 & !fields.0);
            changed |= self.merge(&RoomUpdate {
                fields,
                info: other.info.clone(),
                seats: other.seats,
                exists: other.exists.unwrap_or(true),
                at_ms,
            });
        }
        changed
    }
}

/// Room IDs are at most 48 bytes (Room Engine's limit).
pub const MAX_ROOM_ID_BYTES: usize = 48;

/// A room ID as Room Engine accepts it: non-empty, at most
/// [`MAX_ROOM_ID_BYTES`]. The error names the problem, not the key: callers
/// prefix where the ID came from.
pub fn validate_room_id(room: &str) -> Result<(), String> {
    if room.is_empty() {
        Err("room ID is empty".to_owned())
    } else if room.len() > MAX_ROOM_ID_BYTES {
        Err(format!(
            "room ID {room:?} is {} bytes, longer than the limit of {MAX_ROOM_ID_BYTES}",
            room.len()
        ))
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn members(count: u64, at_ms: u64) -> RoomUpdate {
        RoomUpdate {
            fields: Fields::NONE.with(Field::Members),
            info: RoomInfo {
                member_count: count,
                ..RoomInfo::default()
            },
            at_ms,
            ..RoomUpdate::default()
        }
    }

    #[test]
    fn field_order_matches_the_enum() {
        for (index, field) in Field::ALL.iter().enumerate() {
            assert_eq!(*field as usize, index);
        }
    }

    #[test]
    fn the_newest_event_wins_per_field_whatever_the_arrival_order() {
        let mut facts = RoomFacts::default();
        assert!(facts.merge(&members(7, 2_000)));
        assert!(
            !facts.merge(&members(3, 1_000)),
            "an older callback changes nothing"
        );
        assert_eq!(facts.info.member_count, 7);
        assert!(!facts.merge(&members(7, 2_000)), "a repeated delivery is a no-op");
        assert!(facts.merge(&members(9, 2_001)));
        assert_eq!(facts.info.member_count, 9);
    }

    #[test]
    fn a_poll_sent_before_a_callback_does_not_overwrite_it_but_keeps_the_other_fields() {
        let mut facts = RoomFacts::default();
        facts.merge(&members(42, 5_000));
        let info = RoomInfo {
            member_count: 40,
            max_member_count: 100,
            room_name: "Weekly".into(),
            ..RoomInfo::default()
        };
        assert!(facts.merge(&RoomUpdate::polled(info, None, 4_990)));
        assert_eq!(facts.info.member_count, 42);
        assert_eq!(facts.info.max_member_count, 100);
        assert_eq!(facts.info.room_name, "Weekly");
        assert_eq!(facts.exists, Some(true));
        assert_eq!(facts.seats, None);
    }

    #[test]
    fn absorbing_another_view_takes_its_newer_fields_in_either_order() {
        let mut a = RoomFacts::default();
        a.merge(&members(7, 2_000));
        a.merge(&RoomUpdate::gone(1_000));
        let mut b = RoomFacts::default();
        b.merge(&members(9, 3_000));
        b.merge(&RoomUpdate::polled(
            RoomInfo {
                max_member_count: 50,
                ..RoomInfo::default()
            },
            None,
            500,
        ));
        let (mut ab, mut ba) = (a.clone(), b.clone());
        assert!(ab.absorb(&b));
        assert!(ba.absorb(&a));
        assert_eq!(ab, ba);
        assert_eq!(
            (ab.info.member_count, ab.info.max_member_count, ab.exists),
            (9, 50, Some(false))
        );
        assert!(!ab.absorb(&b), "absorbing the same view twice changes nothing");
    }

    #[test]
    fn a_destroy_outranks_an_older_poll_and_a_newer_one_revives() {
        let mut facts = RoomFacts::default();
        facts.merge(&RoomUpdate::gone(10_000));
        facts.merge(&RoomUpdate::polled(RoomInfo::default(), None, 9_000));
        assert_eq!(facts.exists, Some(false));
        facts.merge(&RoomUpdate::polled(RoomInfo::default(), None, 11_000));
        assert_eq!(facts.exists, Some(true));
    }
}

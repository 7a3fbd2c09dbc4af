//! What is known of one room, field by field, each field with the instant it
//! was true as of (Unix ms). Polls and callbacks both arrive as a
//! [`RoomUpdate`]; [`RoomFacts::merge`] keeps, per field, the newest.

use serde::{Deserialize, Serialize};

use crate::api::model::{RoomInfo, SeatUsage};

/// One field of a room, as ordered by `EventTime`: callbacks carry subsets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Field {
    RoomName,
    RoomType,
    Owner,
    MaxMembers,
    MaxSeats,
    VideoDisabled,
    AudioDisabled,
    MessageDisabled,
    ScreenSharingDisabled,
    CloudRecordingDisabled,
    ScheduleStart,
    ScheduleEnd,
    Status,
    SeatEnabled,
    TakeSeatMode,
    CreateTime,
    Members,
    Seats,
    /// Whether the room exists (a destroy callback or 100004 says no).
    Exists,
}

pub const FIELD_COUNT: usize = 19;

/// The RoomInfo keys of each field, as Tencent names them.
pub const INFO_KEYS: [(&str, Field); 16] = [
    ("RoomName", Field::RoomName),
    ("RoomType", Field::RoomType),
    ("Owner_Account", Field::Owner),
    ("MaxMemberCount", Field::MaxMembers),
    ("MaxSeatCount", Field::MaxSeats),
    ("IsVideoDisabled", Field::VideoDisabled),
    ("IsAudioDisabled", Field::AudioDisabled),
    ("IsMessageDisabled", Field::MessageDisabled),
    ("IsScreenSharingDisabled", Field::ScreenSharingDisabled),
    ("IsCloudRecordingDisabled", Field::CloudRecordingDisabled),
    ("ScheduleStartTime", Field::ScheduleStart),
    ("ScheduleEndTime", Field::ScheduleEnd),
    ("RoomStatus", Field::Status),
    ("IsSeatEnabled", Field::SeatEnabled),
    ("TakeSeatMode", Field::TakeSeatMode),
    ("CreateTime", Field::CreateTime),
];

/// A set of fields, as a bit mask.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Fields(u32);

impl Fields {
    pub const NONE: Fields = Fields(0);
    /// Everything a get_room_info answer carries (not seats, which come from get_seat_list).
    pub const ROOM_INFO: Fields = Fields((1 << Field::Seats as u32) - 1);

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
        self.stamps[..Field::Seats as usize].iter().any(|&s| s != 0)
    }

    /// Applies each field of `update` that is at least as new as what is
    /// known; returns whether anything changed. Equal times apply, so a
    /// repeated delivery is a no-op rather than an error.
    pub fn merge(&mut self, update: &RoomUpdate) -> bool {
        let mut changed = false;
        for (index, &field) in FIELD_ORDER.iter().enumerate() {
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
        for (index, field) in FIELD_ORDER.iter().enumerate() {
            if other.stamps[index] > self.stamps[index] {
                pending = pending.with(*field);
            }
        }
        while !pending.is_empty() {
            // One update per distinct instant: fields told together move together.
            let Some(first) = FIELD_ORDER.iter().position(|f| pending.has(*f)) else {
                break;
            };
            let at_ms = other.stamps[first];
            let mut fields = Fields::NONE;
            for (index, field) in FIELD_ORDER.iter().enumerate() {
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

    /// Copies `field` from `update`; whether the value differed.
    fn set(&mut self, field: Field, update: &RoomUpdate) -> bool {
        fn put<T: PartialEq + Clone>(slot: &mut T, value: &T) -> bool {
            let differs = slot != value;
            if differs {
                slot.clone_from(value);
            }
            differs
        }
        let (i, u) = (&mut self.info, &update.info);
        match field {
            Field::RoomName => put(&mut i.room_name, &u.room_name),
            Field::RoomType => put(&mut i.room_type, &u.room_type),
            Field::Owner => put(&mut i.owner_account, &u.owner_account),
            Field::MaxMembers => put(&mut i.max_member_count, &u.max_member_count),
            Field::MaxSeats => put(&mut i.max_seat_count, &u.max_seat_count),
            Field::VideoDisabled => put(&mut i.is_video_disabled, &u.is_video_disabled),
            Field::AudioDisabled => put(&mut i.is_audio_disabled, &u.is_audio_disabled),
            Field::MessageDisabled => put(&mut i.is_message_disabled, &u.is_message_disabled),
            Field::ScreenSharingDisabled => {
                put(&mut i.is_screen_sharing_disabled, &u.is_screen_sharing_disabled)
            }
            Field::CloudRecordingDisabled => {
                put(&mut i.is_cloud_recording_disabled, &u.is_cloud_recording_disabled)
            }
            Field::ScheduleStart => put(&mut i.schedule_start_time, &u.schedule_start_time),
            Field::ScheduleEnd => put(&mut i.schedule_end_time, &u.schedule_end_time),
            Field::Status => put(&mut i.room_status, &u.room_status),
            Field::SeatEnabled => put(&mut i.is_seat_enabled, &u.is_seat_enabled),
            Field::TakeSeatMode => put(&mut i.take_seat_mode, &u.take_seat_mode),
            Field::CreateTime => put(&mut i.create_time, &u.create_time),
            Field::Members => put(&mut i.member_count, &u.member_count),
            Field::Seats => put(&mut self.seats, &update.seats),
            Field::Exists => put(&mut self.exists, &Some(update.exists)),
        }
    }
}

const FIELD_ORDER: [Field; FIELD_COUNT] = [
    Field::RoomName,
    Field::RoomType,
    Field::Owner,
    Field::MaxMembers,
    Field::MaxSeats,
    Field::VideoDisabled,
    Field::AudioDisabled,
    Field::MessageDisabled,
    Field::ScreenSharingDisabled,
    Field::CloudRecordingDisabled,
    Field::ScheduleStart,
    Field::ScheduleEnd,
    Field::Status,
    Field::SeatEnabled,
    Field::TakeSeatMode,
    Field::CreateTime,
    Field::Members,
    Field::Seats,
    Field::Exists,
];

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
        for (index, field) in FIELD_ORDER.iter().enumerate() {
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

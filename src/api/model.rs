//! The Room Engine response shapes the exporter reads, decoded tolerantly:
//! unknown fields are ignored, numbers may arrive as strings and strings as
//! numbers, and an unknown enum value never fails the whole room.

use std::borrow::Cow;
use std::fmt;

use compact_str::{CompactString, ToCompactString};
use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize};

/// The envelope every REST call answers with.
#[derive(Debug, Deserialize)]
pub struct Envelope<T> {
    #[serde(rename = "ErrorCode", default, deserialize_with = "flex_i64")]
    pub error_code: i64,
    #[serde(rename = "ErrorInfo", default, deserialize_with = "flex_string")]
    pub error_info: String,
    #[serde(rename = "Response")]
    pub response: Option<T>,
}

#[derive(Debug, Deserialize)]
pub struct RoomInfoResponse {
    #[serde(rename = "RoomInfo")]
    pub room_info: Option<RoomInfo>,
}

#[derive(Debug, Deserialize)]
pub struct SeatListResponse {
    #[serde(rename = "SeatList", default)]
    pub seat_list: Vec<Seat>,
}

/// `Response` of `room_config/get_callback`: the app's one callback URL and
/// the commands sent to it (empty when none is set).
#[derive(Debug, Default, Clone, PartialEq, Deserialize)]
#[serde(default)]
pub struct CallbackSetting {
    #[serde(rename = "Url", deserialize_with = "flex_string")]
    pub url: String,
    #[serde(rename = "CallbackCommandList", deserialize_with = "string_list")]
    pub commands: Vec<String>,
}

/// A list of names: `null` is empty and entries that are not text are skipped.
fn string_list<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    let items = Option::<Vec<serde_json::Value>>::deserialize(d)?.unwrap_or_default();
    Ok(items
        .into_iter()
        .filter_map(|v| v.as_str().map(str::to_owned))
        .collect())
}

/// One seat of `get_seat_list`. An empty seat may omit `Member_Account`.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(default)]
pub struct Seat {
    #[serde(rename = "Member_Account", deserialize_with = "flex_string")]
    pub member_account: String,
    #[serde(rename = "IsTakenDisabled", deserialize_with = "flex_bool")]
    pub is_taken_disabled: bool,
    #[serde(rename = "IsVideoDisabled", deserialize_with = "flex_bool")]
    pub is_video_disabled: bool,
    #[serde(rename = "IsAudioDisabled", deserialize_with = "flex_bool")]
    pub is_audio_disabled: bool,
}

/// Seat usage counted from a seat list; no per-seat detail is kept (cardinality).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeatUsage {
    pub occupied: u64,
    pub locked: u64,
    pub audio_disabled: u64,
    pub video_disabled: u64,
}

impl SeatUsage {
    pub fn count(seats: &[Seat]) -> SeatUsage {
        let n = |pred: fn(&Seat) -> bool| seats.iter().filter(|s| pred(s)).count() as u64;
        SeatUsage {
            occupied: n(|s| !s.member_account.is_empty()),
            locked: n(|s| s.is_taken_disabled),
            audio_disabled: n(|s| s.is_audio_disabled),
            video_disabled: n(|s| s.is_video_disabled),
        }
    }
}

/// `Response.RoomInfo` of `get_room_info`. Missing fields take their zero value.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct RoomInfo {
    #[serde(rename = "RoomId", deserialize_with = "flex_compact")]
    pub room_id: CompactString,
    #[serde(rename = "RoomName", deserialize_with = "flex_compact")]
    pub room_name: CompactString,
    #[serde(rename = "RoomType", deserialize_with = "flex_compact")]
    pub room_type: CompactString,
    #[serde(rename = "Owner_Account", deserialize_with = "flex_compact")]
    pub owner_account: CompactString,
    #[serde(rename = "MaxMemberCount", deserialize_with = "flex_u64")]
    pub max_member_count: u64,
    #[serde(rename = "MaxSeatCount", deserialize_with = "flex_u64")]
    pub max_seat_count: u64,
    #[serde(rename = "IsVideoDisabled", deserialize_with = "flex_bool")]
    pub is_video_disabled: bool,
    #[serde(rename = "IsAudioDisabled", deserialize_with = "flex_bool")]
    pub is_audio_disabled: bool,
    #[serde(rename = "IsMessageDisabled", deserialize_with = "flex_bool")]
    pub is_message_disabled: bool,
    #[serde(rename = "IsScreenSharingDisabled", deserialize_with = "flex_bool")]
    pub is_screen_sharing_disabled: bool,
    #[serde(rename = "IsCloudRecordingDisabled", deserialize_with = "flex_bool")]
    pub is_cloud_recording_disabled: bool,
    #[serde(rename = "ScheduleStartTime", deserialize_with = "flex_u64")]
    pub schedule_start_time: u64,
    #[serde(rename = "ScheduleEndTime", deserialize_with = "flex_u64")]
    pub schedule_end_time: u64,
    #[serde(rename = "RoomStatus", deserialize_with = "flex_compact")]
    pub room_status: CompactString,
    #[serde(rename = "IsSeatEnabled", deserialize_with = "flex_bool")]
    pub is_seat_enabled: bool,
    #[serde(rename = "TakeSeatMode", deserialize_with = "take_seat_mode")]
    pub take_seat_mode: CompactString,
    #[serde(rename = "CreateTime", deserialize_with = "flex_u64")]
    pub create_time: u64,
    #[serde(rename = "MemberCount", deserialize_with = "flex_u64")]
    pub member_count: u64,
}

/// The values of `RoomStatus`, in the order the state set is exposed.
pub const ROOM_STATUSES: [&str; 3] = ["None", "NotStarted", "Running"];
/// The values of `TakeSeatMode`, in the order the state set is exposed.
pub const TAKE_SEAT_MODES: [&str; 3] = ["None", "FreeToTake", "ApplyToTake"];

/// A JSON value that may be a string, number or bool, seen as text; a
/// string borrows from the input when it has no escapes. Read by a visitor
/// (not an untagged enum, which buffers the value and formats an error for
/// every variant it tries).
enum Loose<'de> {
    Str(Cow<'de, str>),
    Uint(u64),
    Int(i64),
    Float(f64),
    Bool(bool),
    Null,
}

impl<'de> Deserialize<'de> for Loose<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(LooseVisitor)
    }
}

struct LooseVisitor;

impl<'de> Visitor<'de> for LooseVisitor {
    type Value = Loose<'de>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a string, number, bool or null")
    }
    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Loose::Str(Cow::Borrowed(v)))
    }
    fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Loose::Str(Cow::Owned(v.to_owned())))
    }
    fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
        Ok(Loose::Str(Cow::Owned(v)))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Self::Value, E> {
        Ok(Loose::Uint(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Self::Value, E> {
        // Non-negative numbers are Uint, whichever way the format reports them.
        Ok(u64::try_from(v).map_or(Loose::Int(v), Loose::Uint))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Self::Value, E> {
        Ok(Loose::Float(v))
    }
    fn visit_bool<E>(self, v: bool) -> Result<Self::Value, E> {
        Ok(Loose::Bool(v))
    }
    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(Loose::Null)
    }
    fn visit_none<E>(self) -> Result<Self::Value, E> {
        Ok(Loose::Null)
    }
}

impl Loose<'_> {
    /// The value as text: numbers and booleans as written, null as empty.
    fn into_text(self) -> CompactString {
        match self {
            Loose::Str(s) => CompactString::from(s),
            Loose::Int(n) => n.to_compact_string(),
            Loose::Uint(n) => n.to_compact_string(),
            Loose::Float(n) => n.to_compact_string(),
            Loose::Bool(b) => b.to_compact_string(),
            Loose::Null => CompactString::default(),
        }
    }
}

fn flex_string<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    Loose::deserialize(d).map(|v| v.into_text().into_string())
}

/// [`flex_string`] kept inline when short (room info strings; see Cargo.toml).
fn flex_compact<'de, D: Deserializer<'de>>(d: D) -> Result<CompactString, D::Error> {
    Loose::deserialize(d).map(Loose::into_text)
}

pub(crate) fn flex_u64<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    match Loose::deserialize(d)? {
        Loose::Uint(n) => Ok(n),
        // A negative count or time is nonsense; clamp rather than fail the room.
        Loose::Int(n) => Ok(n.max(0) as u64),
        Loose::Float(n) if n >= 0.0 => Ok(n as u64),
        Loose::Float(_) | Loose::Null => Ok(0),
        Loose::Str(s) if s.trim().is_empty() => Ok(0),
        Loose::Str(s) => s
            .trim()
            .parse()
            .map_err(|_| de::Error::custom(format!("expected a number, got {s:?}"))),
        Loose::Bool(b) => Ok(b as u64),
    }
}

fn flex_i64<'de, D: Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
    match Loose::deserialize(d)? {
        Loose::Int(n) => Ok(n),
        Loose::Uint(n) => i64::try_from(n).map_err(|_| de::Error::custom("error code out of range")),
        Loose::Str(s) => s
            .trim()
            .parse()
            .map_err(|_| de::Error::custom(format!("expected a number, got {s:?}"))),
        Loose::Float(n) => Ok(n as i64),
        Loose::Bool(_) | Loose::Null => Ok(0),
    }
}

fn flex_bool<'de, D: Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    Ok(match Loose::deserialize(d)? {
        Loose::Bool(b) => b,
        Loose::Int(n) => n != 0,
        Loose::Uint(n) => n != 0,
        Loose::Float(n) => n != 0.0,
        Loose::Str(s) => matches!(s.trim().to_ascii_lowercase().as_str(), "true" | "1" | "yes"),
        Loose::Null => false,
    })
}

/// `TakeSeatMode` is documented as a string; some samples show a number, taken
/// as the index into [`TAKE_SEAT_MODES`] (0 None, 1 FreeToTake, 2 ApplyToTake).
fn take_seat_mode<'de, D: Deserializer<'de>>(d: D) -> Result<CompactString, D::Error> {
    Ok(match Loose::deserialize(d)? {
        Loose::Uint(n) if (n as usize) < TAKE_SEAT_MODES.len() => {
            CompactString::const_new(TAKE_SEAT_MODES[n as usize])
        }
        other => other.into_text(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tolerates_numbers_as_strings_and_unknown_fields() {
        let info: RoomInfo = serde_json::from_str(
            r#"{"RoomId":"r","Owner_Account":12345,"TakeSeatMode":1,"MemberCount":"7","IsSeatEnabled":1,"NewField":{"x":1}}"#,
        )
        .expect("decodes");
        assert_eq!(info.owner_account, "12345");
        assert_eq!(info.take_seat_mode, "FreeToTake");
        assert_eq!(info.member_count, 7);
        assert!(info.is_seat_enabled);
        assert_eq!(info.max_member_count, 0);
    }

    #[test]
    fn escaped_strings_negatives_floats_and_nulls_read_as_before() {
        let info: RoomInfo = serde_json::from_str(
            r#"{"RoomId":"r\u00e9","RoomName":null,"MemberCount":-3,"MaxMemberCount":12.0,"CreateTime":" 42 ","IsVideoDisabled":"Yes","RoomStatus":true}"#,
        )
        .expect("decodes");
        assert_eq!(info.room_id, "r\u{e9}");
        assert_eq!(info.room_name, "");
        assert_eq!(
            (info.member_count, info.max_member_count, info.create_time),
            (0, 12, 42)
        );
        assert!(info.is_video_disabled);
        assert_eq!(info.room_status, "true");
        let nested = serde_json::from_str::<RoomInfo>(r#"{"MemberCount":{"n":1}}"#)
            .expect_err("an object is no count");
        assert_eq!(
            nested.to_string(),
            "invalid type: map, expected a string, number, bool or null at line 1 column 16"
        );
    }

    #[test]
    fn a_callback_setting_tolerates_null_and_odd_entries() {
        let setting: CallbackSetting =
            serde_json::from_str(r#"{"Url":"http://h/cb","CallbackCommandList":["A",3,null,"B"],"X":1}"#)
                .expect("decodes");
        assert_eq!(setting.commands, ["A", "B"]);
        let empty: CallbackSetting =
            serde_json::from_str(r#"{"CallbackCommandList":null}"#).expect("decodes");
        assert_eq!(empty, CallbackSetting::default());
    }

    #[test]
    fn counts_seats() {
        let resp: SeatListResponse = serde_json::from_str(
            r#"{"SeatList":[{"Index":0,"Member_Account":"u1","IsAudioDisabled":true},{"Index":1,"Member_Account":""},{"Index":2,"IsTakenDisabled":true,"IsVideoDisabled":true}]}"#,
        )
        .expect("decodes");
        assert_eq!(
            SeatUsage::count(&resp.seat_list),
            SeatUsage {
                occupied: 1,
                locked: 1,
                audio_disabled: 1,
                video_disabled: 1
            }
        );
    }
}

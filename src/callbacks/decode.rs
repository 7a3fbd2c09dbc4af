//! A callback's JSON body, decoded with the tolerance of get_room_info
//! answers, into the room event it means: which room, which fields, as of
//! which `EventTime`. Anything no tolerant reading can make sense of is an error.

use serde::Deserialize;
use serde_json::{Map, Value};

use crate::api::model::{RoomInfo, Seat, SeatUsage};
use crate::room::{validate_room_id, Field, Fields, RoomUpdate};
use crate::roomset::{EventKind, RoomEvent};

use super::command::Command;

/// Decodes the body of a `command` callback.
pub fn decode(command: Command, body: &[u8]) -> Result<RoomEvent, String> {
    let value: Value = serde_json::from_slice(body).map_err(|e| format!("body is not JSON: {e}"))?;
    let Value::Object(body) = value else {
        return Err("body is not a JSON object".into());
    };
    let at_ms = event_time(&body)?;
    let room_info = match body.get("RoomInfo") {
        None | Some(Value::Null) => None,
        Some(Value::Object(info)) => Some(info),
        Some(_) => return Err("RoomInfo: not an object".into()),
    };
    let room_id = room_id(&body, room_info)?;
    let (kind, mut update) = match command {
        Command::CreateRoom | Command::UpdateRoomInfo => {
            let Some(info) = room_info else {
                return Err("RoomInfo: missing".into());
            };
            let kind = if command == Command::CreateRoom {
                EventKind::Create
            } else {
                EventKind::Change
            };
            (kind, info_update(info)?)
        }
        Command::DestroyRoom => (EventKind::Destroy, RoomUpdate::gone(at_ms)),
        Command::MemberEnter | Command::MemberLeave => {
            let Some(count) = body.get("MemberCount") else {
                return Err("MemberCount: missing".into());
            };
            let info = RoomInfo {
                member_count: field::<Counted>("MemberCount", count)?.0,
                ..RoomInfo::default()
            };
            let fields = Fields::NONE.with(Field::Members);
            (
                EventKind::Change,
                RoomUpdate {
                    fields,
                    info,
                    ..RoomUpdate::default()
                },
            )
        }
        Command::SeatInfoChanged => {
            let seats: Vec<Seat> = match body.get("SeatList") {
                None => return Err("SeatList: missing".into()),
                Some(list) => field("SeatList", list)?,
            };
            let update = RoomUpdate {
                fields: Fields::NONE.with(Field::Seats),
                seats: Some(SeatUsage::count(&seats)),
                ..RoomUpdate::default()
            };
            (EventKind::Change, update)
        }
    };
    if kind != EventKind::Destroy {
        // Any news of a room newer than its destruction means it exists again.
        update.fields = update.fields.with(Field::Exists);
        update.exists = true;
    }
    update.at_ms = at_ms;
    Ok(RoomEvent {
        room_id: room_id.to_owned(),
        kind,
        update,
    })
}

fn event_time(body: &Map<String, Value>) -> Result<u64, String> {
    let Some(value) = body.get("EventTime") else {
        return Err("EventTime: missing (callbacks are ordered by it)".into());
    };
    match field::<Counted>("EventTime", value)?.0 {
        0 => Err("EventTime: 0 is not a time".into()),
        t => Ok(t),
    }
}

/// `RoomId` at the top level, or inside `RoomInfo` (create and update).
fn room_id<'a>(
    body: &'a Map<String, Value>,
    info: Option<&'a Map<String, Value>>,
) -> Result<&'a str, String> {
    let value = body
        .get("RoomId")
        .or_else(|| info.and_then(|i| i.get("RoomId")))
        .ok_or("RoomId: missing")?;
    let Value::String(id) = value else {
        return Err(format!("RoomId: {value} is not a string"));
    };
    validate_room_id(id).map_err(|problem| format!("RoomId: {problem}"))?;
    Ok(id)
}

/// The fields a `RoomInfo` object carries: those present, decoded tolerantly.
fn info_update(info: &Map<String, Value>) -> Result<RoomUpdate, String> {
    let decoded: RoomInfo =
        serde_json::from_value(Value::Object(info.clone())).map_err(|e| format!("RoomInfo: {e}"))?;
    let mut fields = Fields::NONE;
    for field in Field::ALL {
        let present = field.info_key().and_then(|key| info.get(key));
        if present.is_some_and(|v| !v.is_null()) {
            fields = fields.with(field);
        }
    }
    Ok(RoomUpdate {
        fields,
        info: decoded,
        ..RoomUpdate::default()
    })
}

/// A count or time, read as get_room_info's numbers are (strings of digits too).
#[derive(Deserialize)]
struct Counted(#[serde(deserialize_with = "crate::api::model::flex_u64")] u64);

fn field<T: for<'de> Deserialize<'de>>(name: &str, value: &Value) -> Result<T, String> {
    T::deserialize(value).map_err(|e| format!("{name}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(command: &str, body: &str) -> Result<RoomEvent, String> {
        let handled = crate::callbacks::command::find(command).expect("handled");
        decode(handled.command, body.as_bytes())
    }

    #[test]
    fn member_enter_sets_the_count_and_says_the_room_exists() {
        let e = event(
            "Room.CallbackAfterMemberEnter",
            r#"{"CallbackCommand":"Room.CallbackAfterMemberEnter","Operator_Account":"u1","EventTime":1700000000123,"RoomId":"r1","MemberCount":"7","Type":"Enter","MemberList_Account":["u1"]}"#,
        )
        .expect("decodes");
        assert_eq!(e.room_id, "r1");
        assert_eq!(e.kind, EventKind::Change);
        assert_eq!(e.update.info.member_count, 7);
        assert_eq!(e.update.at_ms, 1_700_000_000_123);
        assert!(e.update.fields.has(Field::Members) && e.update.fields.has(Field::Exists));
        assert!(!e.update.fields.has(Field::MaxMembers));
    }

    #[test]
    fn update_carries_only_the_fields_present() {
        let e = event(
            "Room.CallbackUpdateRoomInfo",
            r#"{"EventTime":5,"RoomInfo":{"RoomId":"r1","MaxMemberCount":300,"IsVideoDisabled":1,"Extra":{}}}"#,
        )
        .expect("decodes");
        assert_eq!(e.update.info.max_member_count, 300);
        assert!(e.update.info.is_video_disabled);
        assert!(e.update.fields.has(Field::MaxMembers) && e.update.fields.has(Field::VideoDisabled));
        assert!(!e.update.fields.has(Field::RoomName) && !e.update.fields.has(Field::Members));
    }

    #[test]
    fn bad_bodies_name_what_is_wrong() {
        let cases = [
            (
                "Room.CallbackAfterMemberEnter",
                "not json",
                "body is not JSON: expected ident at line 1 column 2",
            ),
            (
                "Room.CallbackAfterMemberEnter",
                "[1]",
                "body is not a JSON object",
            ),
            (
                "Room.CallbackAfterMemberEnter",
                r#"{"RoomId":"r","MemberCount":1}"#,
                "EventTime: missing (callbacks are ordered by it)",
            ),
            (
                "Room.CallbackAfterMemberEnter",
                r#"{"EventTime":1,"MemberCount":1}"#,
                "RoomId: missing",
            ),
            (
                "Room.CallbackAfterMemberEnter",
                r#"{"EventTime":1,"RoomId":"","MemberCount":1}"#,
                "RoomId: room ID is empty",
            ),
            (
                "Room.CallbackAfterMemberEnter",
                r#"{"EventTime":1,"RoomId":7,"MemberCount":1}"#,
                "RoomId: 7 is not a string",
            ),
            (
                "Room.CallbackAfterMemberEnter",
                r#"{"EventTime":1,"RoomId":"r","MemberCount":"many"}"#,
                "MemberCount: expected a number, got \"many\"",
            ),
            (
                "Room.CallbackAfterMemberLeave",
                r#"{"EventTime":1,"RoomId":"r"}"#,
                "MemberCount: missing",
            ),
            (
                "Room.CallbackAfterCreateRoom",
                r#"{"EventTime":1,"RoomId":"r"}"#,
                "RoomInfo: missing",
            ),
            (
                "Mic.CallbackAfterSeatInfoChanged",
                r#"{"EventTime":1,"RoomId":"r","SeatList":"x"}"#,
                "SeatList: invalid type: string \"x\", expected a sequence",
            ),
        ];
        for (command, body, expected) in cases {
            assert_eq!(event(command, body).err().as_deref(), Some(expected), "{body}");
        }
        let long = format!(
            r#"{{"EventTime":1,"RoomId":"{}","MemberCount":1}}"#,
            "x".repeat(49)
        );
        assert_eq!(
            event("Room.CallbackAfterMemberEnter", &long).err().as_deref(),
            Some(
                format!(
                    "RoomId: room ID \"{}\" is 49 bytes, longer than the limit of 48",
                    "x".repeat(49)
                )
                .as_str()
            )
        );
    }

    #[test]
    fn seats_are_counted_and_destroy_says_gone() {
        let e = event(
            "Mic.CallbackAfterSeatInfoChanged",
            r#"{"EventTime":9,"RoomId":"r","SeatList":[{"Index":0,"Member_Account":"a"},{"Index":1,"IsTakenDisabled":true}]}"#,
        )
        .expect("decodes");
        assert_eq!(e.update.seats.map(|s| (s.occupied, s.locked)), Some((1, 1)));
        let gone = event(
            "Room.CallbackAfterDestroyRoom",
            r#"{"EventTime":10,"RoomId":"r"}"#,
        )
        .expect("decodes");
        assert_eq!(
            (gone.kind, gone.update.exists, gone.update.at_ms),
            (EventKind::Destroy, false, 10)
        );
    }
}

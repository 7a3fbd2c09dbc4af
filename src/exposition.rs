//! The room metric families of the contract and their text rendering: a room
//! snapshot becomes its lines, already grouped by family; a scrape writes each
//! family's HELP/TYPE once and then concatenates that family from every room.

use std::collections::HashSet;
use std::fmt::Write as _;
use std::ops::Range;
use std::sync::{Mutex, OnceLock};

use crate::api::model::{RoomInfo, SeatUsage, ROOM_STATUSES, TAKE_SEAT_MODES};

/// The Content-Type of the Prometheus text format we serve.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

const POLLED: &str =
    "(from background polling of get_room_info; see roomengine_room_last_success_timestamp_seconds)";

/// One metric family of the room contract.
pub struct Family {
    pub name: &'static str,
    pub help: &'static str,
}

macro_rules! families {
    ($($id:ident = $name:literal, $help:literal;)*) => {
        /// Index of each family in [`FAMILIES`] and in a room's rendered lines.
        #[allow(non_camel_case_types, clippy::upper_case_acronyms)]
        #[derive(Clone, Copy)]
        #[repr(usize)]
        enum Slot { $($id),* }
        pub const FAMILIES: &[Family] = &[$(Family { name: $name, help: $help }),*];
    };
}

families! {
    MEMBERS = "roomengine_room_members", "Members in the room (MemberCount)";
    MAX_MEMBERS = "roomengine_room_max_members", "Member capacity of the room (MaxMemberCount)";
    MAX_SEATS = "roomengine_room_max_seats", "Number of seats (microphone positions) in the room (MaxSeatCount)";
    SEAT_ENABLED = "roomengine_room_seat_enabled", "1 when the room uses seats (IsSeatEnabled)";
    STATUS = "roomengine_room_status", "Room status as a state set: 1 for the current RoomStatus, 0 for the others";
    TAKE_SEAT_MODE = "roomengine_room_take_seat_mode", "Take-seat mode as a state set: 1 for the current TakeSeatMode, 0 for the others";
    FEATURE_DISABLED = "roomengine_room_feature_disabled", "1 when the feature is switched off room-wide (Is*Disabled)";
    INFO = "roomengine_room_info", "Static facts about the room; always 1";
    CREATED = "roomengine_room_created_timestamp_seconds", "When the room was created (CreateTime, Unix seconds)";
    SCHEDULED_START = "roomengine_room_scheduled_start_timestamp_seconds", "Scheduled start of the meeting (ScheduleStartTime, Unix seconds)";
    SCHEDULED_END = "roomengine_room_scheduled_end_timestamp_seconds", "Scheduled end of the meeting (ScheduleEndTime, Unix seconds)";
    SEATS_OCCUPIED = "roomengine_room_seats_occupied", "Seats taken by a member (from get_seat_list, seat-enabled rooms only)";
    SEATS_LOCKED = "roomengine_room_seats_locked", "Seats locked against taking (IsTakenDisabled, from get_seat_list)";
    SEATS_AUDIO_DISABLED = "roomengine_room_seats_audio_disabled", "Seats with audio disabled (from get_seat_list)";
    SEATS_VIDEO_DISABLED = "roomengine_room_seats_video_disabled", "Seats with video disabled (from get_seat_list)";
    UP = "roomengine_room_up", "1 when the last poll of the room returned its info, else 0";
    EXISTS = "roomengine_room_exists", "1 when the API returned the room's info, 0 once it answered that the room does not exist (100004)";
    LAST_SUCCESS = "roomengine_room_last_success_timestamp_seconds", "When the room's data was last fetched successfully (Unix seconds)";
}

/// Everything the exporter knows about one room, from which its lines are rendered.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RoomSnapshot {
    pub room_id: String,
    /// The last info fetched; kept through transient failures.
    pub info: Option<RoomInfo>,
    /// Seat usage, for seat-enabled rooms when seat usage is on.
    pub seats: Option<SeatUsage>,
    /// Whether the last poll returned the room's info.
    pub up: bool,
    /// `Some(false)` once the API said the room does not exist.
    pub exists: Option<bool>,
    /// Unix seconds of the last successful poll.
    pub last_success: Option<f64>,
}

/// A room's lines, one buffer with a range per family.
#[derive(Debug, Default)]
pub struct RenderedRoom {
    text: String,
    ranges: Vec<Range<usize>>,
}

impl RenderedRoom {
    /// Lines in `text`, `ranges[i]` being family `i`'s (the ranges tile the text in family order).
    pub fn from_parts(text: String, ranges: Vec<Range<usize>>) -> RenderedRoom {
        RenderedRoom { text, ranges }
    }

    pub fn len(&self) -> usize {
        self.text.len()
    }

    pub fn is_empty(&self) -> bool {
        self.text.is_empty()
    }

    pub fn family(&self, index: usize) -> &str {
        self.ranges.get(index).map_or("", |r| &self.text[r.clone()])
    }
}

/// Renders a snapshot; a destroyed room keeps only `exists 0` and `up 0`,
/// a room never polled successfully only `up`.
pub fn render_room(s: &RoomSnapshot) -> RenderedRoom {
    let id = escape(&s.room_id);
    let mut text = String::with_capacity(2048);
    let mut ranges = Vec::with_capacity(FAMILIES.len());
    let gone = s.exists == Some(false);
    let info = if gone { None } else { s.info.as_ref() };
    let seats = if gone { None } else { s.seats };
    for (index, family) in FAMILIES.iter().enumerate() {
        let start = text.len();
        let name = family.name;
        let mut line = |labels: &str, value: &dyn std::fmt::Display| {
            // Writing to a String cannot fail.
            let _ = writeln!(text, "{name}{{room_id=\"{id}\"{labels}}} {value}");
        };
        match index {
            i if i == Slot::UP as usize => line("", &u8::from(s.up && !gone)),
            i if i == Slot::EXISTS as usize => {
                if let Some(exists) = s.exists {
                    line("", &u8::from(exists))
                }
            }
            _ => {
                if let Some(info) = info {
                    render_info_family(index, info, s, &mut line);
                }
                if let Some(seats) = seats {
                    render_seat_family(index, &seats, &mut line);
                }
            }
        }
        ranges.push(start..text.len());
    }
    RenderedRoom { text, ranges }
}

fn render_info_family(
    index: usize,
    info: &RoomInfo,
    s: &RoomSnapshot,
    line: &mut dyn FnMut(&str, &dyn std::fmt::Display),
) {
    const FEATURES: [&str; 5] = ["video", "audio", "message", "screen_sharing", "cloud_recording"];
    match index {
        i if i == Slot::MEMBERS as usize => line("", &info.member_count),
        i if i == Slot::MAX_MEMBERS as usize => line("", &info.max_member_count),
        i if i == Slot::MAX_SEATS as usize => line("", &info.max_seat_count),
        i if i == Slot::SEAT_ENABLED as usize => line("", &u8::from(info.is_seat_enabled)),
        i if i == Slot::STATUS as usize => state_set(line, "status", &ROOM_STATUSES, &info.room_status),
        i if i == Slot::TAKE_SEAT_MODE as usize => {
            state_set(line, "mode", &TAKE_SEAT_MODES, &info.take_seat_mode)
        }
        i if i == Slot::FEATURE_DISABLED as usize => {
            let flags = [
                info.is_video_disabled,
                info.is_audio_disabled,
                info.is_message_disabled,
                info.is_screen_sharing_disabled,
                info.is_cloud_recording_disabled,
            ];
            for (feature, disabled) in FEATURES.iter().zip(flags) {
                line(&format!(",feature=\"{feature}\""), &u8::from(disabled));
            }
        }
        i if i == Slot::INFO as usize => line(
            &format!(
                ",room_name=\"{}\",room_type=\"{}\",owner=\"{}\"",
                escape(&info.room_name),
                escape(&info.room_type),
                escape(&info.owner_account)
            ),
            &1,
        ),
        i if i == Slot::CREATED as usize => line("", &info.create_time),
        i if i == Slot::SCHEDULED_START as usize => line("", &info.schedule_start_time),
        i if i == Slot::SCHEDULED_END as usize => line("", &info.schedule_end_time),
        i if i == Slot::LAST_SUCCESS as usize => {
            if let Some(t) = s.last_success {
                line("", &format_args!("{t:.3}"))
            }
        }
        _ => {}
    }
}

fn render_seat_family(index: usize, seats: &SeatUsage, line: &mut dyn FnMut(&str, &dyn std::fmt::Display)) {
    match index {
        i if i == Slot::SEATS_OCCUPIED as usize => line("", &seats.occupied),
        i if i == Slot::SEATS_LOCKED as usize => line("", &seats.locked),
        i if i == Slot::SEATS_AUDIO_DISABLED as usize => line("", &seats.audio_disabled),
        i if i == Slot::SEATS_VIDEO_DISABLED as usize => line("", &seats.video_disabled),
        _ => {}
    }
}

/// One series per known value; an unknown value gives all zeros and a warning
/// (once per value, so a new API value cannot flood the log).
fn state_set(
    line: &mut dyn FnMut(&str, &dyn std::fmt::Display),
    label: &str,
    values: &[&str],
    current: &str,
) {
    if !values.contains(&current) {
        warn_unknown_once(label, current);
    }
    for v in values {
        line(&format!(",{label}=\"{v}\""), &u8::from(*v == current));
    }
}

fn warn_unknown_once(label: &str, value: &str) {
    static SEEN: OnceLock<Mutex<HashSet<String>>> = OnceLock::new();
    let mut seen = SEEN
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    // Bounded: a misbehaving API cannot grow this set without limit.
    if seen.len() < 64 && seen.insert(format!("{label}={value}")) {
        tracing::warn!(
            label,
            value,
            "unknown enum value from the API; its state set shows all zeros"
        );
    }
}

/// Escapes a label value as the text format requires.
pub fn escape(value: &str) -> std::borrow::Cow<'_, str> {
    if !value.contains(['\\', '"', '\n']) {
        return value.into();
    }
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
        .into()
}

/// Writes every family that has lines: HELP and TYPE once, then each room's lines.
pub fn write_families<'a, R>(rooms: R, out: &mut Vec<u8>)
where
    R: Iterator<Item = &'a RenderedRoom> + Clone,
{
    for (index, family) in FAMILIES.iter().enumerate() {
        if rooms.clone().all(|r| r.family(index).is_empty()) {
            continue;
        }
        let _ = writeln!(
            Out(out),
            "# HELP {} {} {POLLED}.\n# TYPE {} gauge",
            family.name,
            family.help,
            family.name
        );
        for room in rooms.clone() {
            out.extend_from_slice(room.family(index).as_bytes());
        }
    }
}

/// `fmt::Write` over a byte buffer, so headers need no temporary String.
struct Out<'a>(&'a mut Vec<u8>);

impl std::fmt::Write for Out<'_> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.0.extend_from_slice(s.as_bytes());
        Ok(())
    }
}

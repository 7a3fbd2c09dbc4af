//! The room metric families of the contract and their text rendering: a room
//! snapshot becomes its lines, already grouped by family; a scrape writes each
//! family's HELP/TYPE once and then concatenates that family from every room.

use std::collections::HashSet;
use std::fmt::Write as _;
use std::ops::Range;
use std::sync::{Mutex, OnceLock};

use crate::api::model::{ROOM_STATUSES, TAKE_SEAT_MODES};
use crate::room::{Field, RoomFacts};

/// The Content-Type of the Prometheus text format we serve.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

const POLLED: &str = "(from background polling of get_room_info and Room Engine callbacks; see roomengine_room_last_success_timestamp_seconds)";

/// One metric family of the room contract.
pub struct Family {
    pub name: &'static str,
    pub help: &'static str,
}

macro_rules! families {
    ($($id:ident = $name:literal, $help:literal;)*) => {
        /// Each family of [`FAMILIES`], in the same order.
        #[derive(Clone, Copy)]
        enum Slot { $($id),* }
        const SLOTS: &[Slot] = &[$(Slot::$id),*];
        pub const FAMILIES: &[Family] = &[$(Family { name: $name, help: $help }),*];
    };
}

families! {
    Members = "roomengine_room_members", "Members in the room (MemberCount)";
    MaxMembers = "roomengine_room_max_members", "Member capacity of the room (MaxMemberCount)";
    MaxSeats = "roomengine_room_max_seats", "Number of seats (microphone positions) in the room (MaxSeatCount)";
    SeatEnabled = "roomengine_room_seat_enabled", "1 when the room uses seats (IsSeatEnabled)";
    Status = "roomengine_room_status", "Room status as a state set: 1 for the current RoomStatus, 0 for the others";
    TakeSeatMode = "roomengine_room_take_seat_mode", "Take-seat mode as a state set: 1 for the current TakeSeatMode, 0 for the others";
    FeatureDisabled = "roomengine_room_feature_disabled", "1 when the feature is switched off room-wide (Is*Disabled)";
    Info = "roomengine_room_info", "Static facts about the room; always 1";
    Created = "roomengine_room_created_timestamp_seconds", "When the room was created (CreateTime, Unix seconds)";
    ScheduledStart = "roomengine_room_scheduled_start_timestamp_seconds", "Scheduled start of the meeting (ScheduleStartTime, Unix seconds)";
    ScheduledEnd = "roomengine_room_scheduled_end_timestamp_seconds", "Scheduled end of the meeting (ScheduleEndTime, Unix seconds)";
    SeatsOccupied = "roomengine_room_seats_occupied", "Seats taken by a member (from get_seat_list, seat-enabled rooms only)";
    SeatsLocked = "roomengine_room_seats_locked", "Seats locked against taking (IsTakenDisabled, from get_seat_list)";
    SeatsAudioDisabled = "roomengine_room_seats_audio_disabled", "Seats with audio disabled (from get_seat_list)";
    SeatsVideoDisabled = "roomengine_room_seats_video_disabled", "Seats with video disabled (from get_seat_list)";
    Up = "roomengine_room_up", "1 when the last poll of the room returned its info, else 0";
    Exists = "roomengine_room_exists", "1 when the API returned the room's info, 0 once it answered that the room does not exist (100004)";
    LastSuccess = "roomengine_room_last_success_timestamp_seconds", "When the room's data was last fetched successfully (Unix seconds)";
    LastCallback = "roomengine_room_last_callback_timestamp_seconds", "EventTime of the last Room Engine callback applied to the room (Unix seconds)";
}

/// Everything the exporter knows about one room, from which its lines are rendered.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RoomSnapshot {
    pub room_id: String,
    /// Field by field, the newest of what polls and callbacks said; kept
    /// through transient poll failures.
    pub facts: RoomFacts,
    /// Whether the last poll returned the room's info.
    pub up: bool,
    /// Unix seconds of the last successful poll.
    pub last_success: Option<f64>,
    /// `EventTime` (Unix seconds) of the last callback applied.
    pub last_callback: Option<f64>,
    /// When the last successful poll's request was sent (Unix ms; 0: never).
    pub polled_ms: u64,
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
/// a room nothing was learnt of yet only `up`.
pub fn render_room(s: &RoomSnapshot) -> RenderedRoom {
    let mut lines = Lines {
        text: String::with_capacity(2048),
        room_id: escape(&s.room_id),
        name: "",
    };
    let mut ranges = Vec::with_capacity(FAMILIES.len());
    for (slot, family) in SLOTS.iter().zip(FAMILIES) {
        let start = lines.text.len();
        lines.name = family.name;
        render_family(*slot, s, &mut lines);
        ranges.push(start..lines.text.len());
    }
    RenderedRoom {
        text: lines.text,
        ranges,
    }
}

/// Appends `name{room_id="..."<labels>} value` lines for one family.
struct Lines<'a> {
    text: String,
    room_id: std::borrow::Cow<'a, str>,
    name: &'static str,
}

impl Lines<'_> {
    fn line(&mut self, labels: &str, value: impl std::fmt::Display) {
        // Writing to a String cannot fail.
        let _ = writeln!(
            self.text,
            "{}{{room_id=\"{}\"{labels}}} {value}",
            self.name, self.room_id
        );
    }
}

fn render_family(slot: Slot, s: &RoomSnapshot, out: &mut Lines<'_>) {
    const FEATURES: [(&str, Field); 5] = [
        ("video", Field::VideoDisabled),
        ("audio", Field::AudioDisabled),
        ("message", Field::MessageDisabled),
        ("screen_sharing", Field::ScreenSharingDisabled),
        ("cloud_recording", Field::CloudRecordingDisabled),
    ];
    let f = &s.facts;
    let gone = f.exists == Some(false);
    if gone && !matches!(slot, Slot::Up | Slot::Exists) {
        return;
    }
    // Each field's series appears once a poll or callback has told its value.
    let known = |field| f.known(field);
    let i = &f.info;
    match slot {
        Slot::Up => out.line("", u8::from(s.up && !gone)),
        Slot::Exists => {
            if let Some(exists) = f.exists {
                out.line("", u8::from(exists));
            }
        }
        Slot::Members if known(Field::Members) => out.line("", i.member_count),
        Slot::MaxMembers if known(Field::MaxMembers) => out.line("", i.max_member_count),
        Slot::MaxSeats if known(Field::MaxSeats) => out.line("", i.max_seat_count),
        Slot::SeatEnabled if known(Field::SeatEnabled) => out.line("", u8::from(i.is_seat_enabled)),
        Slot::Status if known(Field::Status) => state_set(out, "status", &ROOM_STATUSES, &i.room_status),
        Slot::TakeSeatMode if known(Field::TakeSeatMode) => {
            state_set(out, "mode", &TAKE_SEAT_MODES, &i.take_seat_mode)
        }
        Slot::FeatureDisabled => {
            let flags = [
                i.is_video_disabled,
                i.is_audio_disabled,
                i.is_message_disabled,
                i.is_screen_sharing_disabled,
                i.is_cloud_recording_disabled,
            ];
            for ((feature, field), disabled) in FEATURES.iter().zip(flags) {
                if known(*field) {
                    out.line(&format!(",feature=\"{feature}\""), u8::from(disabled));
                }
            }
        }
        Slot::Info if known(Field::RoomName) || known(Field::RoomType) || known(Field::Owner) => out.line(
            &format!(
                ",room_name=\"{}\",room_type=\"{}\",owner=\"{}\"",
                escape(&i.room_name),
                escape(&i.room_type),
                escape(&i.owner_account)
            ),
            1,
        ),
        Slot::Created if known(Field::CreateTime) => out.line("", i.create_time),
        Slot::ScheduledStart if known(Field::ScheduleStart) => out.line("", i.schedule_start_time),
        Slot::ScheduledEnd if known(Field::ScheduleEnd) => out.line("", i.schedule_end_time),
        Slot::LastSuccess => {
            if let Some(t) = s.last_success {
                out.line("", format_args!("{t:.3}"));
            }
        }
        Slot::LastCallback => {
            if let Some(t) = s.last_callback {
                out.line("", format_args!("{t:.3}"));
            }
        }
        Slot::SeatsOccupied | Slot::SeatsLocked | Slot::SeatsAudioDisabled | Slot::SeatsVideoDisabled => {
            let Some(seats) = f.seats.as_ref().filter(|_| known(Field::Seats)) else {
                return;
            };
            let value = match slot {
                Slot::SeatsOccupied => seats.occupied,
                Slot::SeatsLocked => seats.locked,
                Slot::SeatsAudioDisabled => seats.audio_disabled,
                _ => seats.video_disabled,
            };
            out.line("", value);
        }
        _ => {}
    }
}

/// One series per known value; an unknown value gives all zeros and a warning
/// (once per value, so a new API value cannot flood the log).
fn state_set(out: &mut Lines<'_>, label: &str, values: &[&str], current: &str) {
    if !values.contains(&current) {
        warn_unknown_once(label, current);
    }
    for v in values {
        out.line(&format!(",{label}=\"{v}\""), u8::from(*v == current));
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
    R: Iterator<Item = &'a RenderedRoom>,
{
    let rooms: Vec<&RenderedRoom> = rooms.collect();
    let pieces = in_family_order(&rooms, |room, family| room.family(family).as_bytes(), |h| h);
    for piece in pieces {
        out.extend_from_slice(piece);
    }
}

/// The order of an exposition made of `sources` (rooms, or shards of
/// rooms): for every family with lines in any source, its header (made into
/// a piece by `header`), then each source's non-empty `section` of it.
pub fn in_family_order<S, P: AsRef<[u8]>>(
    sources: &[S],
    section: impl Fn(&S, usize) -> P,
    header: impl Fn(&'static [u8]) -> P,
) -> Vec<P> {
    let mut pieces = Vec::with_capacity(FAMILIES.len() * (sources.len() + 1));
    for family in 0..FAMILIES.len() {
        let start = pieces.len();
        pieces.push(header(family_header(family)));
        pieces.extend(
            sources
                .iter()
                .map(|s| section(s, family))
                .filter(|p| !p.as_ref().is_empty()),
        );
        if pieces.len() == start + 1 {
            pieces.truncate(start);
        }
    }
    pieces
}

/// The `# HELP` and `# TYPE` lines of family `index`, built once.
fn family_header(index: usize) -> &'static [u8] {
    static HEADERS: OnceLock<Vec<String>> = OnceLock::new();
    let headers = HEADERS.get_or_init(|| {
        FAMILIES
            .iter()
            .map(|f| {
                format!(
                    "# HELP {} {} {POLLED}.\n# TYPE {} gauge\n",
                    f.name, f.help, f.name
                )
            })
            .collect()
    });
    headers.get(index).map_or(&[], |h| h.as_bytes())
}

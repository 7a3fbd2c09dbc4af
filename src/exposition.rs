//! The room metric families of the contract and their text rendering: a room
//! snapshot becomes its lines, already grouped by family; a scrape writes each
//! family's HELP/TYPE once and then concatenates that family from every room.

use std::collections::HashSet;
use std::fmt::Write as _;
use std::ops::Range;
use std::sync::{Mutex, OnceLock};

use crate::api::model::{SeatUsage, ROOM_STATUSES, TAKE_SEAT_MODES};
use crate::room::{Field, RoomFacts};

/// The Content-Type of the Prometheus text format we serve.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

const POLLED: &str = "(from background polling of get_room_info and Room Engine callbacks; see roomengine_room_last_success_timestamp_seconds)";

/// One metric family of the room contract: everything about it in one
/// entry, as kube-state-metrics' family generators have it.
pub struct Family {
    pub name: &'static str,
    pub help: &'static str,
    /// The `# TYPE` of the family.
    pub kind: &'static str,
    /// Whether a destroyed room keeps its series of this family.
    kept_when_gone: bool,
    /// Appends a room's lines of this family (none is fine).
    render: fn(&RoomSnapshot, &mut Lines<'_>),
}

impl Family {
    const fn gauge(
        name: &'static str,
        help: &'static str,
        render: fn(&RoomSnapshot, &mut Lines<'_>),
    ) -> Family {
        Family {
            name,
            help,
            kind: "gauge",
            kept_when_gone: false,
            render,
        }
    }

    const fn kept_when_gone(self) -> Family {
        Family {
            kept_when_gone: true,
            ..self
        }
    }
}

/// The room families, in exposition order. Each series appears once a poll
/// or callback has told its field's value.
pub const FAMILIES: &[Family] = &[
    Family::gauge(
        "roomengine_room_members",
        "Members in the room (MemberCount)",
        |s, out| out.known(s, Field::Members, s.facts.info.member_count),
    ),
    Family::gauge(
        "roomengine_room_max_members",
        "Member capacity of the room (MaxMemberCount)",
        |s, out| out.known(s, Field::MaxMembers, s.facts.info.max_member_count),
    ),
    Family::gauge(
        "roomengine_room_max_seats",
        "Number of seats (microphone positions) in the room (MaxSeatCount)",
        |s, out| out.known(s, Field::MaxSeats, s.facts.info.max_seat_count),
    ),
    Family::gauge(
        "roomengine_room_seat_enabled",
        "1 when the room uses seats (IsSeatEnabled)",
        |s, out| out.known(s, Field::SeatEnabled, u8::from(s.facts.info.is_seat_enabled)),
    ),
    Family::gauge(
        "roomengine_room_status",
        "Room status as a state set: 1 for the current RoomStatus, 0 for the others",
        |s, out| {
            if s.facts.known(Field::Status) {
                out.state_set("status", &ROOM_STATUSES, &s.facts.info.room_status);
            }
        },
    ),
    Family::gauge(
        "roomengine_room_take_seat_mode",
        "Take-seat mode as a state set: 1 for the current TakeSeatMode, 0 for the others",
        |s, out| {
            if s.facts.known(Field::TakeSeatMode) {
                out.state_set("mode", &TAKE_SEAT_MODES, &s.facts.info.take_seat_mode);
            }
        },
    ),
    Family::gauge(
        "roomengine_room_feature_disabled",
        "1 when the feature is switched off room-wide (Is*Disabled)",
        |s, out| {
            let i = &s.facts.info;
            let features = [
                (",feature=\"video\"", Field::VideoDisabled, i.is_video_disabled),
                (",feature=\"audio\"", Field::AudioDisabled, i.is_audio_disabled),
                (
                    ",feature=\"message\"",
                    Field::MessageDisabled,
                    i.is_message_disabled,
                ),
                (
                    ",feature=\"screen_sharing\"",
                    Field::ScreenSharingDisabled,
                    i.is_screen_sharing_disabled,
                ),
                (
                    ",feature=\"cloud_recording\"",
                    Field::CloudRecordingDisabled,
                    i.is_cloud_recording_disabled,
                ),
            ];
            for (labels, field, disabled) in features {
                if s.facts.known(field) {
                    out.line(labels, u8::from(disabled));
                }
            }
        },
    ),
    Family::gauge(
        "roomengine_room_info",
        "Static facts about the room; always 1",
        |s, out| {
            let f = &s.facts;
            if f.known(Field::RoomName) || f.known(Field::RoomType) || f.known(Field::Owner) {
                let labels = format!(
                    ",room_name=\"{}\",room_type=\"{}\",owner=\"{}\"",
                    escape(&f.info.room_name),
                    escape(&f.info.room_type),
                    escape(&f.info.owner_account)
                );
                out.line(&labels, 1);
            }
        },
    ),
    Family::gauge(
        "roomengine_room_created_timestamp_seconds",
        "When the room was created (CreateTime, Unix seconds)",
        |s, out| out.known(s, Field::CreateTime, s.facts.info.create_time),
    ),
    Family::gauge(
        "roomengine_room_scheduled_start_timestamp_seconds",
        "Scheduled start of the meeting (ScheduleStartTime, Unix seconds)",
        |s, out| out.known(s, Field::ScheduleStart, s.facts.info.schedule_start_time),
    ),
    Family::gauge(
        "roomengine_room_scheduled_end_timestamp_seconds",
        "Scheduled end of the meeting (ScheduleEndTime, Unix seconds)",
        |s, out| out.known(s, Field::ScheduleEnd, s.facts.info.schedule_end_time),
    ),
    Family::gauge(
        "roomengine_room_seats_occupied",
        "Seats taken by a member (from get_seat_list, seat-enabled rooms only)",
        |s, out| out.seats(s, |seats| seats.occupied),
    ),
    Family::gauge(
        "roomengine_room_seats_locked",
        "Seats locked against taking (IsTakenDisabled, from get_seat_list)",
        |s, out| out.seats(s, |seats| seats.locked),
    ),
    Family::gauge(
        "roomengine_room_seats_audio_disabled",
        "Seats with audio disabled (from get_seat_list)",
        |s, out| out.seats(s, |seats| seats.audio_disabled),
    ),
    Family::gauge(
        "roomengine_room_seats_video_disabled",
        "Seats with video disabled (from get_seat_list)",
        |s, out| out.seats(s, |seats| seats.video_disabled),
    ),
    Family::gauge(
        "roomengine_room_up",
        "1 when the last poll of the room returned its info, else 0",
        |s, out| out.line("", u8::from(s.up && s.facts.exists != Some(false))),
    )
    .kept_when_gone(),
    Family::gauge(
        "roomengine_room_exists",
        "1 when the API returned the room's info, 0 once it answered that the room does not exist (100004)",
        |s, out| {
            if let Some(exists) = s.facts.exists {
                out.line("", u8::from(exists));
            }
        },
    )
    .kept_when_gone(),
    Family::gauge(
        "roomengine_room_last_success_timestamp_seconds",
        "When the room's data was last fetched successfully (Unix seconds)",
        |s, out| out.seconds(s.last_success),
    ),
    Family::gauge(
        "roomengine_room_last_callback_timestamp_seconds",
        "EventTime of the last Room Engine callback applied to the room (Unix seconds)",
        |s, out| out.seconds(s.last_callback),
    ),
];

/// Everything the exporter knows about one room, from which its lines are rendered.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RoomSnapshot {
    pub room_id: compact_str::CompactString,
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
    let gone = s.facts.exists == Some(false);
    let mut ranges = Vec::with_capacity(FAMILIES.len());
    for family in FAMILIES {
        let start = lines.text.len();
        if family.kept_when_gone || !gone {
            lines.name = family.name;
            (family.render)(s, &mut lines);
        }
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

    /// The one series of a field's value, once the field is known.
    fn known(&mut self, s: &RoomSnapshot, field: Field, value: impl std::fmt::Display) {
        if s.facts.known(field) {
            self.line("", value);
        }
    }

    /// A seat count, once seat usage is known.
    fn seats(&mut self, s: &RoomSnapshot, count: fn(&SeatUsage) -> u64) {
        if let Some(seats) = s.facts.seats.as_ref().filter(|_| s.facts.known(Field::Seats)) {
            self.line("", count(seats));
        }
    }

    /// A Unix time in seconds, to the millisecond, when there is one.
    fn seconds(&mut self, at: Option<f64>) {
        if let Some(t) = at {
            self.line("", format_args!("{t:.3}"));
        }
    }

    /// One series per known value; an unknown value gives all zeros and a
    /// warning (once per value, so a new API value cannot flood the log).
    fn state_set(&mut self, label: &str, values: &[&str], current: &str) {
        if !values.contains(&current) {
            warn_unknown_once(label, current);
        }
        for v in values {
            self.line(&format!(",{label}=\"{v}\""), u8::from(*v == current));
        }
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
                    "# HELP {} {} {POLLED}.\n# TYPE {} {}\n",
                    f.name, f.help, f.name, f.kind
                )
            })
            .collect()
    });
    headers.get(index).map_or(&[], |h| h.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::FAMILIES;

    #[test]
    fn the_config_accepts_exactly_the_room_families() {
        let names: Vec<&str> = FAMILIES.iter().map(|f| f.name).collect();
        assert_eq!(names, crate::config::ROOM_FAMILY_NAMES);
    }
}

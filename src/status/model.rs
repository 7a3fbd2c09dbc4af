//! The status data model: one [`Report`] (summary, the room table's page,
//! recent events) or one [`RoomDetail`], built from the store, the journal
//! and the exporter's own metrics; HTML, text and `/status.json` render it.

use std::collections::{HashMap, HashSet};

use serde::{Deserialize, Serialize};

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::exposition::{render_room, RoomSnapshot, FAMILIES};
use crate::journal::{ApiErrorEntry, CallbackEntry, Counters, Journal, Rates, RefusedEntry, RoomEventEntry};
use crate::metrics::SelfMetrics;
use crate::room::Field;
use crate::store::Store;

/// Rows of the room table per page.
pub const PAGE_ROWS: usize = 100;

/// The exporter's own figures, read from its self-metrics text by their
/// contract names, so the page shows what /metrics shows.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Figures {
    pub rate_limit: f64,
    pub calls: f64,
    pub pass_polls: f64,
    pub watch_polls: f64,
    pub callbacks: f64,
    pub callbacks_refused: f64,
    pub sweep_seconds: f64,
    pub rooms_watched: f64,
    pub rooms_configured: f64,
    pub rooms_discovered: f64,
    pub state_up: Option<f64>,
    pub reload_ok: Option<f64>,
    pub reload_success_timestamp: Option<f64>,
}

impl Figures {
    /// Sums each family's samples in `text` (Prometheus text format).
    pub fn parse(text: &str) -> Figures {
        let mut f = Figures::default();
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let Some((series, value)) = line.rsplit_once(' ') else {
                continue;
            };
            let Ok(value) = value.parse::<f64>() else {
                continue;
            };
            let (name, labels) = series.split_once('{').unwrap_or((series, ""));
            match name {
                "roomengine_rate_limit_requests_per_second" => f.rate_limit = value,
                "roomengine_api_requests_total" => f.calls += value,
                "roomengine_polls_total" if labels.contains("tier=\"watch\"") => f.watch_polls += value,
                "roomengine_polls_total" => f.pass_polls += value,
                "roomengine_callbacks_total" => f.callbacks += value,
                "roomengine_callbacks_rejected_total" => f.callbacks_refused += value,
                "roomengine_sweep_duration_seconds" => f.sweep_seconds = value,
                "roomengine_rooms_watched" => f.rooms_watched = value,
                "roomengine_rooms_configured" => f.rooms_configured = value,
                "roomengine_rooms_discovered" => f.rooms_discovered = value,
                "roomengine_state_up" => f.state_up = Some(value),
                "roomengine_config_last_reload_successful" => f.reload_ok = Some(value),
                "roomengine_config_last_reload_success_timestamp_seconds" => {
                    f.reload_success_timestamp = Some(value)
                }
                _ => {}
            }
        }
        f
    }

    pub fn counters(&self) -> Counters {
        Counters {
            calls: self.calls,
            pass_polls: self.pass_polls,
            watch_polls: self.watch_polls,
            callbacks: self.callbacks,
        }
    }
}

/// The room table's filter, sort and page: the query string of `/` and `/status.json`.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(default)]
pub struct RoomQuery {
    /// A substring of the room ID or name (case-insensitive).
    pub q: String,
    /// `Running`, `NotStarted`, `None`, `gone` or `unknown`; empty: any.
    pub status: String,
    /// Any non-empty value: only rooms at or over MaxMemberCount.
    pub full: String,
    /// `configured`, `callback` or `both`; empty: any.
    pub learnt: String,
    /// `occupancy` (default), `members`, `last_poll`, `last_callback` or `room`.
    pub sort: String,
    /// `asc` or `desc` (default: desc, room ID ascending).
    pub order: String,
    /// From 1.
    pub page: usize,
}

impl RoomQuery {
    pub fn full_only(&self) -> bool {
        !self.full.is_empty() && self.full != "0"
    }

    fn sort_key(&self) -> &str {
        match self.sort.as_str() {
            "members" | "last_poll" | "last_callback" | "room" => &self.sort,
            _ => "occupancy",
        }
    }

    fn descending(&self) -> bool {
        match self.order.as_str() {
            "asc" => false,
            "desc" => true,
            _ => self.sort_key() != "room",
        }
    }

    /// The query string for this view with `change` applied (page reset unless changed).
    pub fn link(&self, change: impl FnOnce(&mut RoomQuery)) -> String {
        let mut q = self.clone();
        q.page = 0;
        change(&mut q);
        let mut out = url::form_urlencoded::Serializer::new(String::new());
        for (key, value) in [
            ("q", q.q.as_str()),
            ("status", &q.status),
            ("full", &q.full),
            ("learnt", &q.learnt),
            ("sort", &q.sort),
            ("order", &q.order),
        ] {
            if !value.is_empty() {
                out.append_pair(key, value);
            }
        }
        if q.page > 1 {
            out.append_pair("page", &q.page.to_string());
        }
        let text = out.finish();
        if text.is_empty() {
            "?".to_owned()
        } else {
            format!("?{text}")
        }
    }
}

/// One row of the room table.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Row {
    pub room_id: String,
    pub name: String,
    pub room_type: String,
    /// RoomStatus, or `gone` (destroyed / 100004) or `unknown` (nothing learnt yet).
    pub status: String,
    pub members: u64,
    pub max_members: u64,
    /// Seats taken (seat-enabled rooms with seat usage on), else `null`.
    pub seats_used: Option<u64>,
    pub max_seats: u64,
    /// `configured`, `callback` or `both`.
    pub learnt: &'static str,
    pub up: bool,
    pub full: bool,
    pub last_poll_age_seconds: Option<f64>,
    pub last_callback_age_seconds: Option<f64>,
    /// The last poll's error code, when it failed.
    pub last_error: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct RoomCounts {
    /// Rooms the exporter holds (configured + discovered).
    pub known: usize,
    pub configured: usize,
    pub discovered: usize,
    /// At or over MaxMemberCount.
    pub full: usize,
    pub up: usize,
    pub gone: usize,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct BudgetView {
    pub rate_limit: f64,
    /// After back-off from rate-limit answers.
    pub effective_rate: f64,
    /// API calls per second over the last 10 s.
    pub calls_per_second: f64,
    /// How long the last full pass took.
    pub pass_seconds: f64,
    pub interval_seconds: f64,
    /// Watch-tier polls among all polls over the last 10 s (0..1), and its cap.
    pub watch_share: f64,
    pub watch_max_share: f64,
    pub rooms_watched: f64,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct CallbacksView {
    pub enabled: bool,
    pub per_second: f64,
    pub last_age_seconds: Option<f64>,
    pub total: f64,
    pub refused_total: f64,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct StateView {
    /// The room set's backend, as it describes itself.
    pub backend: String,
    /// `roomengine_state_up`.
    pub up: bool,
    /// Whether replicas share the room set (Redis); no replica count is kept yet.
    pub ha: bool,
}

/// The last reload, for the page.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ReloadView {
    pub config_file: Option<String>,
    pub successful: bool,
    pub last_success_timestamp: Option<f64>,
    /// The last reload attempted since the start, if any.
    pub last_attempt: Option<ReloadAttemptView>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ReloadAttemptView {
    pub timestamp: f64,
    pub ok: bool,
    pub message: String,
}

/// The room table's page.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Table {
    pub query: RoomQuery,
    /// Rooms that pass the filter.
    pub matching: usize,
    pub page: usize,
    pub pages: usize,
    pub rows: Vec<Row>,
}

/// Everything `/` and `/status.json` show.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Report {
    pub version: &'static str,
    pub now: f64,
    pub uptime_seconds: f64,
    pub reload: ReloadView,
    pub rooms: RoomCounts,
    pub budget: BudgetView,
    pub callbacks: CallbacksView,
    pub state: StateView,
    pub table: Table,
    pub recent_callbacks: Vec<CallbackEntry>,
    pub recent_refused: Vec<RefusedEntry>,
    pub recent_api_errors: Vec<ApiErrorEntry>,
}

/// What a report is built from besides the store and the journal.
pub struct Inputs<'a> {
    pub config: &'a Config,
    pub figures: Figures,
    pub effective_rate: f64,
    pub reload: ReloadView,
    pub now_ms: u64,
}

/// Where a room was learnt: `configured`, `callback` or `both`.
fn learnt(configured: bool, snapshot: Option<&RoomSnapshot>) -> &'static str {
    let by_callback = snapshot.is_some_and(|s| s.last_callback.is_some());
    match (configured, by_callback) {
        (true, true) => "both",
        (true, false) => "configured",
        (false, _) => "callback",
    }
}

fn status_of(snapshot: Option<&RoomSnapshot>) -> &str {
    match snapshot {
        Some(s) if s.facts.exists == Some(false) => "gone",
        Some(s) if s.facts.any_info() => &s.facts.info.room_status,
        _ => "unknown",
    }
}

fn age(now_ms: u64, at_seconds: Option<f64>) -> Option<f64> {
    at_seconds.map(|t| (now_ms as f64 / 1000.0 - t).max(0.0))
}

fn row(
    room: &str,
    s: Option<&RoomSnapshot>,
    configured: bool,
    errors: &HashMap<String, String>,
    now_ms: u64,
) -> Row {
    let info = s.map(|s| &s.facts.info);
    let members = info.map_or(0, |i| i.member_count);
    let max_members = info.map_or(0, |i| i.max_member_count);
    Row {
        room_id: room.to_owned(),
        name: info.map_or_else(String::new, |i| i.room_name.to_string()),
        room_type: info.map_or_else(String::new, |i| i.room_type.to_string()),
        status: status_of(s).to_owned(),
        members,
        max_members,
        seats_used: s.and_then(|s| s.facts.seats).map(|u| u.occupied),
        max_seats: info.map_or(0, |i| i.max_seat_count),
        learnt: learnt(configured, s),
        up: s.is_some_and(|s| s.up),
        full: is_full(members, max_members, s),
        last_poll_age_seconds: age(now_ms, s.and_then(|s| s.last_success)),
        last_callback_age_seconds: age(now_ms, s.and_then(|s| s.last_callback)),
        last_error: errors.get(room).cloned(),
    }
}

fn is_full(members: u64, max: u64, s: Option<&RoomSnapshot>) -> bool {
    max > 0 && members >= max && s.is_some_and(|s| s.facts.exists != Some(false))
}

/// Whether the room passes the filter, judged on the snapshot without copying it.
fn passes(query: &RoomQuery, needle: &str, room: &str, s: Option<&RoomSnapshot>, learnt_as: &str) -> bool {
    if !query.status.is_empty() && status_of(s) != query.status {
        return false;
    }
    if !query.learnt.is_empty() && learnt_as != query.learnt {
        return false;
    }
    if query.full_only() {
        let info = s.map(|s| &s.facts.info);
        if !is_full(
            info.map_or(0, |i| i.member_count),
            info.map_or(0, |i| i.max_member_count),
            s,
        ) {
            return false;
        }
    }
    needle.is_empty()
        || contains_folded(room, needle)
        || s.is_some_and(|s| contains_folded(&s.facts.info.room_name, needle))
}

fn contains_folded(haystack: &str, lower_needle: &str) -> bool {
    if haystack.is_ascii() && lower_needle.is_ascii() {
        let (h, n) = (haystack.as_bytes(), lower_needle.as_bytes());
        return n.len() <= h.len() && h.windows(n.len()).any(|w| w.eq_ignore_ascii_case(n));
    }
    haystack.to_lowercase().contains(lower_needle)
}

/// A room that passed the filter: its ID and its sort key, all a sort needs;
/// only the page's rooms become [`Row`]s.
struct Candidate {
    room_id: String,
    key: (f64, f64),
}

/// The sort key of `query`'s order for a room (larger first when descending).
fn sort_key(sort: &str, s: Option<&RoomSnapshot>) -> (f64, f64) {
    let info = s.map(|s| &s.facts.info);
    let members = info.map_or(0, |i| i.member_count) as f64;
    let max = info.map_or(0, |i| i.max_member_count) as f64;
    let never = f64::NEG_INFINITY;
    match sort {
        "members" => (members, 0.0),
        // The instant, not the age: a more recent poll sorts first when descending.
        "last_poll" => (s.and_then(|s| s.last_success).unwrap_or(never), 0.0),
        "last_callback" => (s.and_then(|s| s.last_callback).unwrap_or(never), 0.0),
        "room" => (0.0, 0.0),
        _ => (if max > 0.0 { members / max } else { 0.0 }, members),
    }
}

fn sort_candidates(candidates: &mut [Candidate], descending: bool) {
    let by = |a: &Candidate, b: &Candidate| a.key.0.total_cmp(&b.key.0).then(a.key.1.total_cmp(&b.key.1));
    if descending {
        candidates.sort_unstable_by(|a, b| by(b, a).then_with(|| a.room_id.cmp(&b.room_id)));
    } else {
        candidates.sort_unstable_by(|a, b| by(a, b).then_with(|| a.room_id.cmp(&b.room_id)));
    }
}

/// Builds the report: one walk over the store counts every room and copies
/// the rows that pass the filter; only those are sorted.
pub fn report(status: &Journal, store: &Store, query: RoomQuery, inputs: Inputs<'_>) -> Report {
    let Inputs {
        config,
        figures,
        effective_rate,
        reload,
        now_ms,
    } = inputs;
    let configured: HashSet<&str> = config.rooms.iter().map(String::as_str).collect();
    let errors = status.last_errors();
    let needle = query.q.trim().to_lowercase();
    let mut counts = RoomCounts::default();
    let mut candidates = Vec::new();
    let sort = query.sort_key();
    store.for_each_room(|room, s| {
        let is_configured = configured.contains(room);
        counts.known += 1;
        if is_configured {
            counts.configured += 1;
        } else {
            counts.discovered += 1;
        }
        if let Some(s) = s {
            let info = &s.facts.info;
            counts.full += usize::from(is_full(info.member_count, info.max_member_count, Some(s)));
            counts.up += usize::from(s.up);
            counts.gone += usize::from(s.facts.exists == Some(false));
        }
        let learnt_as = learnt(is_configured, s);
        if passes(&query, &needle, room, s, learnt_as) {
            candidates.push(Candidate {
                room_id: room.to_owned(),
                key: sort_key(sort, s),
            });
        }
    });
    sort_candidates(&mut candidates, query.descending());
    let matching = candidates.len();
    let pages = matching.div_ceil(PAGE_ROWS).max(1);
    let page = query.page.clamp(1, pages);
    let rows: Vec<Row> = candidates
        .iter()
        .skip((page - 1) * PAGE_ROWS)
        .take(PAGE_ROWS)
        .map(|c| {
            let s = store.snapshot(&c.room_id);
            row(
                &c.room_id,
                s.as_ref(),
                configured.contains(c.room_id.as_str()),
                &errors,
                now_ms,
            )
        })
        .collect();
    let rates: Rates = status.rates();
    Report {
        version: env!("CARGO_PKG_VERSION"),
        now: now_ms as f64 / 1000.0,
        uptime_seconds: status.uptime().as_secs_f64(),
        reload,
        rooms: counts,
        budget: BudgetView {
            rate_limit: figures.rate_limit,
            effective_rate,
            calls_per_second: rates.calls_per_second,
            pass_seconds: figures.sweep_seconds,
            interval_seconds: config.interval.as_secs_f64(),
            watch_share: rates.watch_share,
            watch_max_share: if config.watch.enabled {
                config.watch.max_share
            } else {
                0.0
            },
            rooms_watched: figures.rooms_watched,
        },
        callbacks: CallbacksView {
            enabled: config.callbacks.is_some(),
            per_second: rates.callbacks_per_second,
            last_age_seconds: status
                .last_callback_ms()
                .map(|t| now_ms.saturating_sub(t) as f64 / 1000.0),
            total: figures.callbacks,
            refused_total: figures.callbacks_refused,
        },
        state: StateView {
            backend: status.backend(),
            up: figures.state_up != Some(0.0),
            ha: config.callbacks.as_ref().is_some_and(|c| c.redis.is_some()),
        },
        table: Table {
            query: RoomQuery { page, ..query },
            matching,
            page,
            pages,
            rows,
        },
        recent_callbacks: status.recent_callbacks(),
        recent_refused: status.recent_refused(),
        recent_api_errors: status.recent_api_errors(),
    }
}

/// One field of a room and where it came from.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct FieldView {
    /// Tencent's name of the field (`MemberCount`, `RoomName`, ...).
    pub field: &'static str,
    pub value: String,
    /// `poll`, `callback <command>`, or `callback` (older than the events kept).
    pub source: String,
    /// When it was true as of (Unix ms: a poll's request time or a callback's EventTime).
    pub as_of_ms: u64,
}

/// Everything `/rooms/{id}` shows.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct RoomDetail {
    pub room: Row,
    pub fields: Vec<FieldView>,
    pub events: Vec<RoomEventEntry>,
    /// The room's lines as /metrics serves them.
    pub series: String,
}

/// The fields a room page lists, beyond the RoomInfo keys.
/// The name a field is shown under: its RoomInfo key, or ours for the two
/// fields no RoomInfo carries.
fn field_name(field: Field) -> &'static str {
    match (field.info_key(), field) {
        (Some(key), _) => key,
        (None, Field::Seats) => "SeatsOccupied",
        (None, _) => "Exists",
    }
}

fn field_value(s: &RoomSnapshot, field: Field) -> String {
    let i = &s.facts.info;
    match field {
        Field::RoomName => i.room_name.to_string(),
        Field::RoomType => i.room_type.to_string(),
        Field::Owner => i.owner_account.to_string(),
        Field::MaxMembers => i.max_member_count.to_string(),
        Field::MaxSeats => i.max_seat_count.to_string(),
        Field::VideoDisabled => i.is_video_disabled.to_string(),
        Field::AudioDisabled => i.is_audio_disabled.to_string(),
        Field::MessageDisabled => i.is_message_disabled.to_string(),
        Field::ScreenSharingDisabled => i.is_screen_sharing_disabled.to_string(),
        Field::CloudRecordingDisabled => i.is_cloud_recording_disabled.to_string(),
        Field::ScheduleStart => i.schedule_start_time.to_string(),
        Field::ScheduleEnd => i.schedule_end_time.to_string(),
        Field::Status => i.room_status.to_string(),
        Field::SeatEnabled => i.is_seat_enabled.to_string(),
        Field::TakeSeatMode => i.take_seat_mode.to_string(),
        Field::CreateTime => i.create_time.to_string(),
        Field::Members => i.member_count.to_string(),
        Field::Seats => s
            .facts
            .seats
            .map_or_else(|| "-".to_owned(), |u| u.occupied.to_string()),
        Field::Exists => s.facts.exists.map_or_else(|| "-".to_owned(), |e| e.to_string()),
    }
}

/// The room's page, or `None` when the exporter does not hold it.
pub fn room_detail(
    status: &Journal,
    store: &Store,
    config: &Config,
    room: &str,
    now_ms: u64,
) -> Option<RoomDetail> {
    if !store.contains(room) {
        return None;
    }
    let snapshot = store.snapshot(room);
    let configured = config.rooms.iter().any(|r| r == room);
    let errors = status.last_errors();
    let row = row(room, snapshot.as_ref(), configured, &errors, now_ms);
    let events = status.room_events(room);
    let mut fields = Vec::new();
    let mut series = String::new();
    if let Some(s) = &snapshot {
        for field in Field::ALL {
            let name = field_name(field);
            let as_of_ms = s.facts.stamps[field as usize];
            if as_of_ms == 0 {
                continue;
            }
            let source = match events.iter().find(|e| e.as_of_ms == as_of_ms) {
                Some(e) if e.kind == "poll" => "poll".to_owned(),
                Some(e) => format!("callback {}", e.what),
                None if as_of_ms == s.polled_ms => "poll".to_owned(),
                None => "callback".to_owned(),
            };
            fields.push(FieldView {
                field: name,
                value: field_value(s, field),
                source,
                as_of_ms,
            });
        }
        let rendered = render_room(s);
        for family in 0..FAMILIES.len() {
            series.push_str(rendered.family(family));
        }
    }
    Some(RoomDetail {
        room: row,
        fields,
        events,
        series,
    })
}

/// How often rooms that left the set lose their journal (seconds).
const PRUNE_EVERY: u32 = 10;

/// Samples the counters into `journal` once a second (its measured rates)
/// and prunes the journals of rooms that left the set every
/// [`PRUNE_EVERY`] seconds, until `shutdown`.
pub async fn keep_journal(
    journal: Arc<Journal>,
    store: Arc<Store>,
    metrics: Arc<SelfMetrics>,
    shutdown: CancellationToken,
) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut ticks = 0u32;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = shutdown.cancelled() => return,
        }
        let mut text = Vec::with_capacity(16 * 1024);
        metrics.render_into(&mut text);
        let figures = Figures::parse(&String::from_utf8_lossy(&text));
        journal.sample(Instant::now(), figures.counters());
        ticks += 1;
        if ticks.is_multiple_of(PRUNE_EVERY) {
            journal.prune(|room| store.contains(room));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::model::RoomInfo;

    /// 250 rooms, `room-i` with i members of 300 (`room-0` to `room-4` full);
    /// the first 200 configured, the rest announced by a callback.
    fn report_of(query: RoomQuery) -> Report {
        let ids: Vec<String> = (0..250).map(|i| format!("room-{i}")).collect();
        let rooms: String = ids[..200].iter().map(|r| format!("  - {r}\n")).collect();
        let yaml =
            format!("app:\n  sdkappid: 1\n  identifier: a\n  endpoint: http://127.0.0.1:9\nrooms:\n{rooms}");
        let config = match crate::config::parse(&yaml, &crate::status::config::Fixed) {
            Ok(c) => c,
            Err(e) => panic!("test config: {e}"),
        };
        let store = Store::new(&ids);
        for (i, id) in ids.iter().enumerate() {
            let info = RoomInfo {
                room_name: format!("Team {i}").into(),
                member_count: if i < 5 { 300 } else { i as u64 },
                max_member_count: 300,
                room_status: "Running".into(),
                ..RoomInfo::default()
            };
            store.record_success(id, info, None, 1000.0 + i as f64);
            if i >= 200 {
                store.record_callback(id, &crate::room::RoomUpdate::gone(5_000_000));
            }
        }
        let inputs = Inputs {
            config: &config,
            figures: Figures::default(),
            effective_rate: 1.0,
            reload: ReloadView {
                config_file: None,
                successful: true,
                last_success_timestamp: None,
                last_attempt: None,
            },
            now_ms: 2_000_000,
        };
        report(&Journal::new(), &store, query, inputs)
    }

    fn ids(r: &Report) -> Vec<&str> {
        r.table.rows.iter().map(|r| r.room_id.as_str()).collect()
    }

    #[test]
    fn the_table_is_fullest_first_in_pages_of_a_hundred_and_counts_every_room() {
        let r = report_of(RoomQuery::default());
        assert_eq!(
            (r.rooms.known, r.rooms.configured, r.rooms.discovered),
            (250, 200, 50)
        );
        assert_eq!((r.rooms.full, r.rooms.gone), (5, 50));
        assert_eq!(
            (r.table.matching, r.table.pages, r.table.rows.len()),
            (250, 3, 100)
        );
        assert_eq!(
            &ids(&r)[..7],
            ["room-0", "room-1", "room-2", "room-3", "room-4", "room-249", "room-248"]
        );
        let last = report_of(RoomQuery {
            page: 9,
            ..RoomQuery::default()
        });
        assert_eq!(
            (last.table.page, last.table.rows.len()),
            (3, 50),
            "a page past the end is the last"
        );
        assert_eq!(r.table.rows[5].learnt, "callback");
        assert_eq!(r.table.rows[0].learnt, "configured");
    }

    #[test]
    fn filters_and_sorts_are_query_parameters() {
        let full = report_of(RoomQuery {
            full: "1".into(),
            ..RoomQuery::default()
        });
        assert_eq!(ids(&full), ["room-0", "room-1", "room-2", "room-3", "room-4"]);
        let named = report_of(RoomQuery {
            q: "TEAM 12".into(),
            sort: "room".into(),
            ..RoomQuery::default()
        });
        assert_eq!(
            ids(&named),
            [
                "room-12", "room-120", "room-121", "room-122", "room-123", "room-124", "room-125",
                "room-126", "room-127", "room-128", "room-129"
            ]
        );
        let gone = report_of(RoomQuery {
            status: "gone".into(),
            ..RoomQuery::default()
        });
        assert_eq!(gone.table.matching, 50);
        let learnt = report_of(RoomQuery {
            learnt: "configured".into(),
            ..RoomQuery::default()
        });
        assert_eq!(learnt.table.matching, 200);
        let polled = report_of(RoomQuery {
            sort: "last_poll".into(),
            order: "asc".into(),
            ..RoomQuery::default()
        });
        assert_eq!(&ids(&polled)[..2], ["room-0", "room-1"], "the oldest poll first");
        let members = report_of(RoomQuery {
            sort: "members".into(),
            ..RoomQuery::default()
        });
        assert_eq!(
            &ids(&members)[..6],
            ["room-0", "room-1", "room-2", "room-3", "room-4", "room-249"]
        );
    }

    #[test]
    fn figures_sum_each_family_by_its_contract_name() {
        let text = "# HELP x\nroomengine_api_requests_total{api=\"get_room_info\"} 10\n\
                    roomengine_api_requests_total{api=\"get_seat_list\"} 5\n\
                    roomengine_polls_total{tier=\"pass\"} 7\nroomengine_polls_total{tier=\"watch\"} 3\n\
                    roomengine_state_up 0\nroomengine_rate_limit_requests_per_second 50\n";
        let f = Figures::parse(text);
        assert_eq!((f.calls, f.pass_polls, f.watch_polls), (15.0, 7.0, 3.0));
        assert_eq!((f.state_up, f.rate_limit), (Some(0.0), 50.0));
    }

    #[test]
    fn links_keep_the_filter_and_reset_the_page() {
        let q = RoomQuery {
            q: "a b&c".into(),
            full: "1".into(),
            page: 3,
            ..RoomQuery::default()
        };
        assert_eq!(q.link(|_| {}), "?q=a+b%26c&full=1");
        assert_eq!(q.link(|q| q.page = 4), "?q=a+b%26c&full=1&page=4");
        assert_eq!(RoomQuery::default().link(|_| {}), "?");
    }

    #[test]
    fn case_folded_substrings_match_ids_and_names() {
        assert!(contains_folded("Room-0042", "room-00"));
        assert!(contains_folded("Weekly Sync", "ly s"));
        assert!(!contains_folded("abc", "abcd"));
        assert!(contains_folded("Ünïcode Room", "ünï"));
    }
}

//! The simulated rooms and how they live: members arrive and leave in a random
//! walk, a few rooms fill to capacity, meetings start, seats fill and empty,
//! rooms churn. Everything moves in discrete ticks drawn from seeded RNGs, so
//! one seed always gives one history, however requests arrive. Once asked to
//! record, it also notes each change as a plain [`Event`] for the callbacks.

use std::collections::BTreeMap;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

/// Simulated seconds that pass in one tick.
pub const TICK_SECONDS: u64 = 1;

/// One room as `get_room_info` returns it, with Tencent's field names, in the
/// order of the API page's sample. Extra fields are ignored when parsing, so a
/// `/sim/rooms` entry (which adds `SeatsOccupied`) parses too.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct RoomInfo {
    pub room_id: String,
    pub room_name: String,
    pub room_type: String,
    #[serde(rename = "Owner_Account")]
    pub owner_account: String,
    pub max_member_count: u32,
    pub max_seat_count: u32,
    pub is_video_disabled: bool,
    pub is_audio_disabled: bool,
    pub is_message_disabled: bool,
    pub is_screen_sharing_disabled: bool,
    pub is_cloud_recording_disabled: bool,
    pub custom_info: String,
    pub schedule_start_time: u64,
    pub schedule_end_time: u64,
    pub room_status: String,
    pub is_seat_enabled: bool,
    pub take_seat_mode: String,
    pub create_time: u64,
    pub member_count: u32,
}

/// One microphone position of a seat-enabled room.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seat {
    pub index: u32,
    /// The member sitting there, if any.
    pub member: Option<String>,
    /// Locked: nobody may take it.
    pub taken_disabled: bool,
    pub video_disabled: bool,
    pub audio_disabled: bool,
}

impl Seat {
    /// The seat in `get_seat_list`'s shape. An empty seat's `Member_Account`
    /// is `""` on even indexes and left out on odd ones: the API documents both,
    /// so a client must handle both.
    pub fn to_json(&self) -> Value {
        let mut seat = json!({
            "Index": self.index,
            "IsTakenDisabled": self.taken_disabled,
            "IsVideoDisabled": self.video_disabled,
            "IsAudioDisabled": self.audio_disabled,
        });
        let account = match (&self.member, self.index % 2) {
            (Some(member), _) => Some(member.as_str()),
            (None, 0) => Some(""),
            (None, _) => None,
        };
        if let (Some(account), Some(object)) = (account, seat.as_object_mut()) {
            object.insert("Member_Account".into(), account.into());
        }
        seat
    }
}

/// How a room's member count moves.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Crowd {
    /// Wanders around `target`, which is redrawn now and then.
    Steady { target: u32 },
    /// A popular meeting on its way to MaxMemberCount.
    Climbing,
    /// At capacity, staying there for `ticks_left` more ticks.
    Full { ticks_left: u32 },
    /// People drift away towards `target`; then it climbs again.
    Ebbing { target: u32, ticks_left: u32 },
}

/// A room with the state that drives its walk.
#[derive(Debug, Clone)]
pub struct Room {
    pub info: RoomInfo,
    /// `MaxSeatCount` entries when the room is seat-enabled, else none.
    pub seats: Vec<Seat>,
    /// Set through the control API: the walk and churn leave this room alone.
    pub frozen: bool,
    crowd: Crowd,
    /// The room's own RNG, so freezing or destroying one room does not change
    /// another room's history.
    rng: StdRng,
}

/// Who is setting RoomInfo fields, which decides the fields allowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Editor {
    /// `PUT /sim/rooms/{id}`: any field but RoomId, plus `SeatsOccupied`.
    Control,
    /// The `update_room_info` API: the fields a host can change.
    UpdateApi,
    /// The `create_room` API: the fields a room is created with.
    CreateApi,
}

/// A room's state before a change, to tell which events the change makes.
struct Before {
    info: RoomInfo,
    seats: Vec<Seat>,
}

impl Before {
    fn of(room: &Room) -> Before {
        Before {
            info: room.info.clone(),
            seats: room.seats.clone(),
        }
    }
}

/// The events `room`'s change from `before` makes. `by_admin`: an API or
/// control call (which also reports changed RoomInfo fields), else the walk.
fn changes(out: &mut Vec<Event>, rng: &mut StdRng, before: &Before, room: &Room, by_admin: bool) {
    let room_id = &room.info.room_id;
    let event_time_ms = wall_clock_ms();
    let mut push = |change, operator: Option<String>| {
        out.push(Event {
            change,
            operator: if by_admin { None } else { operator },
            event_time_ms,
        })
    };
    if by_admin {
        if let (Ok(Value::Object(old)), Ok(Value::Object(new))) = (
            serde_json::to_value(&before.info),
            serde_json::to_value(&room.info),
        ) {
            let fields: Map<String, Value> = new
                .into_iter()
                .filter(|(k, v)| k != "MemberCount" && old.get(k) != Some(v))
                .collect();
            if !fields.is_empty() {
                let change = Change::Updated {
                    room_id: room_id.clone(),
                    fields,
                };
                push(change, None);
            }
        }
    }
    let (was, now) = (before.info.member_count, room.info.member_count);
    if now > was {
        let accounts: Vec<String> = (was..now).map(|k| member_account(&room.info, k)).collect();
        let operator = accounts.first().cloned();
        let change = Change::Entered {
            room_id: room_id.clone(),
            member_count: now,
            accounts,
        };
        push(change, operator);
    } else if now < was {
        let accounts: Vec<String> = (now..was).map(|k| member_account(&before.info, k)).collect();
        // Now and then the walk's leavers were kicked out or lost their heartbeat.
        let how = match (by_admin, rng.random_range(0..20)) {
            (false, 0) => Leaving::Kicked,
            (false, 1) => Leaving::Expired,
            _ => Leaving::Leave,
        };
        let operator = match how {
            Leaving::Kicked => Some(room.info.owner_account.clone()),
            _ => accounts.first().cloned(),
        };
        let change = Change::Left {
            room_id: room_id.clone(),
            member_count: now,
            accounts,
            how,
        };
        push(change, operator);
    }
    if before.seats != room.seats {
        let change = Change::Seats {
            room_id: room_id.clone(),
            seats: room.seats.clone(),
        };
        push(change, Some(room.info.owner_account.clone()));
    }
}

/// Something that happened to a room, as the callbacks report it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    Created(RoomInfo),
    Destroyed(String),
    /// Members entered; `member_count` is the count after the change.
    Entered {
        room_id: String,
        member_count: u32,
        accounts: Vec<String>,
    },
    Left {
        room_id: String,
        member_count: u32,
        accounts: Vec<String>,
        how: Leaving,
    },
    /// The room's whole seat list after the change.
    Seats {
        room_id: String,
        seats: Vec<Seat>,
    },
    /// RoomInfo fields (other than MemberCount) set to new values.
    Updated {
        room_id: String,
        fields: Map<String, Value>,
    },
}

/// Why members left: Tencent's `Type` of Room.CallbackAfterMemberLeave.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Leaving {
    Leave,
    Kicked,
    /// Heartbeat lost.
    Expired,
}

/// One change, who made it and when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub change: Change,
    /// A member or the owner; `None` is the app administrator (an API or control call).
    pub operator: Option<String>,
    /// Real wall-clock Unix milliseconds at the change (not the world's time):
    /// receivers compare it with their own clock.
    pub event_time_ms: u64,
}

use crate::clock::unix_now_ms as wall_clock_ms;

/// Fields `update_room_info` may change.
const UPDATABLE: &[&str] = &[
    "RoomName",
    "Owner_Account",
    "MaxMemberCount",
    "MaxSeatCount",
    "TakeSeatMode",
    "IsVideoDisabled",
    "IsAudioDisabled",
    "IsMessageDisabled",
    "IsScreenSharingDisabled",
    "IsCloudRecordingDisabled",
    "CustomInfo",
    "ScheduleStartTime",
    "ScheduleEndTime",
];

impl Editor {
    fn may_set(self, field: &str) -> bool {
        match self {
            Editor::Control => true,
            Editor::UpdateApi => UPDATABLE.contains(&field),
            Editor::CreateApi => UPDATABLE.contains(&field) || matches!(field, "RoomType" | "IsSeatEnabled"),
        }
    }
}

const TOPICS: &[&str] = &[
    "Weekly sync",
    "Design review",
    "All hands",
    "Sales standup",
    "Customer demo",
    "Incident review",
    "Town hall",
    "Office hours",
    "Sprint planning",
    "Interview",
    "Training",
    "Board meeting",
];
const CAPACITIES: &[u32] = &[50, 100, 200, 300, 500, 1000];
const SEAT_COUNTS: &[u32] = &[4, 6, 8, 9, 12, 16, 20];
const DURATIONS: &[u64] = &[1800, 3600, 5400, 7200];
const TEAMS: &[&str] = &["sales", "support", "engineering", "hr", "marketing"];

/// One in this many rooms (by number) is a popular meeting that fills up.
const FILLS_UP_EVERY: u64 = 10;

fn pick<T: Copy>(rng: &mut StdRng, from: &[T]) -> T {
    from[rng.random_range(0..from.len())]
}

/// SplitMix64's finaliser: turns (seed, room number) into well-spread seeds.
fn mix(seed: u64, n: u64) -> u64 {
    let mut z = seed ^ n.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// `room-0001` for room number 1: four digits, more once past 9999.
pub fn room_id(number: u64) -> String {
    format!("room-{number:04}")
}

/// The account of the `k`th member of a room; member 0 is the owner.
fn member_account(info: &RoomInfo, k: u32) -> String {
    if k == 0 && !info.owner_account.is_empty() {
        info.owner_account.clone()
    } else {
        format!("member_{k:04}")
    }
}

impl Room {
    /// Room number `number`, drawn from `seed`. `now` is the world's time;
    /// `joined_late` marks a room created by churn rather than at start.
    fn generate(seed: u64, number: u64, now: u64, joined_late: bool) -> Room {
        let mut rng = StdRng::seed_from_u64(mix(seed, number));
        let fills_up = number % FILLS_UP_EVERY == 1;
        let max_member_count = pick(&mut rng, CAPACITIES);
        let is_seat_enabled = rng.random_bool(0.5);
        let room_status = match rng.random_range(0..20) {
            _ if fills_up => "Running",
            0 | 1 if !joined_late => "None",
            0..=4 => "NotStarted",
            _ => "Running",
        };
        let running = room_status == "Running";
        let duration = pick(&mut rng, DURATIONS);
        let schedule_start_time = if running {
            now.saturating_sub(rng.random_range(0..duration / 2))
        } else {
            now + rng.random_range(60..1800)
        };
        let create_time = if joined_late {
            now
        } else {
            schedule_start_time.saturating_sub(rng.random_range(600..3 * 86_400))
        };
        let member_count = match (running, fills_up) {
            (false, _) => 0,
            (true, true) => rng.random_range(max_member_count * 2 / 5..=max_member_count * 7 / 10),
            (true, false) => rng.random_range(0..=max_member_count * 3 / 5),
        };
        let topic = pick(&mut rng, TOPICS);
        let custom_info = if rng.random_bool(0.5) {
            String::new()
        } else {
            format!("team={}", pick(&mut rng, TEAMS))
        };
        let info = RoomInfo {
            room_id: room_id(number),
            room_name: format!("{topic} {number}"),
            room_type: "Conference".into(),
            owner_account: format!("user_{}", rng.random_range(1000..10_000)),
            max_member_count,
            max_seat_count: if is_seat_enabled {
                pick(&mut rng, SEAT_COUNTS)
            } else {
                0
            },
            is_video_disabled: rng.random_bool(0.1),
            is_audio_disabled: rng.random_bool(0.1),
            is_message_disabled: rng.random_bool(0.15),
            is_screen_sharing_disabled: rng.random_bool(0.2),
            is_cloud_recording_disabled: rng.random_bool(0.3),
            custom_info,
            schedule_start_time,
            schedule_end_time: schedule_start_time + duration,
            room_status: room_status.into(),
            is_seat_enabled,
            take_seat_mode: match (is_seat_enabled, rng.random_bool(0.5)) {
                (false, _) => "None",
                (true, true) => "FreeToTake",
                (true, false) => "ApplyToTake",
            }
            .into(),
            create_time,
            member_count,
        };
        let crowd = if fills_up {
            Crowd::Climbing
        } else {
            Crowd::Steady {
                target: rng.random_range(max_member_count / 10..=max_member_count * 7 / 10),
            }
        };
        let mut room = Room {
            info,
            seats: Vec::new(),
            frozen: false,
            crowd,
            rng,
        };
        room.fit_seats();
        for seat in &mut room.seats {
            seat.taken_disabled = room.rng.random_bool(0.05);
            seat.audio_disabled = room.rng.random_bool(0.1);
            seat.video_disabled = room.rng.random_bool(0.1);
        }
        let seated = room.rng.random_range(0..=room.seats.len());
        for _ in 0..seated {
            room.seat_someone();
        }
        room
    }

    /// A room made by `create_room`: defaults, then the caller's fields.
    fn blank(room_id: String, now: u64, rng: StdRng) -> Room {
        Room {
            info: RoomInfo {
                room_name: room_id.clone(),
                room_id,
                room_type: "Conference".into(),
                owner_account: String::new(),
                max_member_count: 300,
                max_seat_count: 0,
                is_video_disabled: false,
                is_audio_disabled: false,
                is_message_disabled: false,
                is_screen_sharing_disabled: false,
                is_cloud_recording_disabled: false,
                custom_info: String::new(),
                schedule_start_time: now,
                schedule_end_time: now + 3600,
                room_status: "NotStarted".into(),
                is_seat_enabled: false,
                take_seat_mode: "None".into(),
                create_time: now,
                member_count: 0,
            },
            seats: Vec::new(),
            frozen: false,
            crowd: Crowd::Steady { target: 100 },
            rng,
        }
    }

    pub fn seats_occupied(&self) -> usize {
        self.seats.iter().filter(|s| s.member.is_some()).count()
    }

    /// `count` member accounts starting at member `from` (for get_room_member_list).
    pub fn member_accounts(&self, from: u32, count: u32) -> Vec<String> {
        let end = self.info.member_count.min(from.saturating_add(count));
        (from..end).map(|k| member_account(&self.info, k)).collect()
    }

    /// The room in `/sim/rooms`' shape: RoomInfo plus `SeatsOccupied` for
    /// seat-enabled rooms.
    pub fn to_control_json(&self) -> Value {
        let mut doc = serde_json::to_value(&self.info).unwrap_or(Value::Null);
        if let (true, Some(object)) = (self.info.is_seat_enabled, doc.as_object_mut()) {
            object.insert("SeatsOccupied".into(), self.seats_occupied().into());
        }
        doc
    }

    /// Seats follow `IsSeatEnabled` and `MaxSeatCount`: new seats start empty.
    fn fit_seats(&mut self) {
        let wanted = if self.info.is_seat_enabled {
            self.info.max_seat_count as usize
        } else {
            0
        };
        self.seats.truncate(wanted);
        while self.seats.len() < wanted {
            self.seats.push(Seat {
                index: self.seats.len() as u32,
                member: None,
                taken_disabled: false,
                video_disabled: false,
                audio_disabled: false,
            });
        }
    }

    /// Seats a member who is not seated yet on a random free, unlocked seat.
    fn seat_someone(&mut self) {
        let members = self.info.member_count;
        if members as usize <= self.seats_occupied() {
            return;
        }
        let free: Vec<usize> = (0..self.seats.len())
            .filter(|&i| self.seats[i].member.is_none() && !self.seats[i].taken_disabled)
            .collect();
        if free.is_empty() {
            return;
        }
        let seat = free[self.rng.random_range(0..free.len())];
        for _ in 0..8 {
            let account = member_account(&self.info, self.rng.random_range(0..members));
            if !self
                .seats
                .iter()
                .any(|s| s.member.as_deref() == Some(account.as_str()))
            {
                self.seats[seat].member = Some(account);
                return;
            }
        }
    }

    /// One tick of this room's life.
    fn step(&mut self) {
        let rng = &mut self.rng;
        let info = &mut self.info;
        match info.room_status.as_str() {
            "Running" => {}
            "NotStarted" if rng.random_bool(1.0 / 30.0) => info.room_status = "Running".into(),
            "None" if rng.random_bool(1.0 / 60.0) => info.room_status = "Running".into(),
            _ => return,
        }
        let max = info.max_member_count;
        let count = info.member_count;
        let step = rng.random_range(1..=(max / 20).max(1));
        let (next, crowd) = match self.crowd.clone() {
            Crowd::Climbing if count.saturating_add(step) >= max => (
                max,
                Crowd::Full {
                    ticks_left: rng.random_range(180..=900),
                },
            ),
            Crowd::Climbing => (count + step, Crowd::Climbing),
            Crowd::Full { ticks_left: 0 } => (
                count,
                Crowd::Ebbing {
                    target: rng.random_range(max / 5..=max / 2),
                    ticks_left: rng.random_range(120..=600),
                },
            ),
            Crowd::Full { ticks_left } => (
                max,
                Crowd::Full {
                    ticks_left: ticks_left - 1,
                },
            ),
            Crowd::Ebbing { ticks_left: 0, .. } => (count, Crowd::Climbing),
            Crowd::Ebbing { target, ticks_left } => (
                wander(rng, count, target, max),
                Crowd::Ebbing {
                    target,
                    ticks_left: ticks_left - 1,
                },
            ),
            Crowd::Steady { target } => {
                let target = if rng.random_bool(1.0 / 120.0) {
                    rng.random_range(max / 10..=max * 7 / 10)
                } else {
                    target
                };
                (wander(rng, count, target, max), Crowd::Steady { target })
            }
        };
        info.member_count = next.min(max);
        self.crowd = crowd;
        self.step_seats();
    }

    /// Seats fill and empty; now and then a seat's audio or video is switched.
    fn step_seats(&mut self) {
        if self.seats.is_empty() {
            return;
        }
        if self.rng.random_bool(0.3) {
            let i = self.rng.random_range(0..self.seats.len());
            if self.seats[i].member.is_some() {
                if self.rng.random_bool(0.4) {
                    self.seats[i].member = None;
                }
            } else if self.rng.random_bool(0.7) {
                self.seat_someone();
            }
        }
        if self.rng.random_bool(0.02) {
            let i = self.rng.random_range(0..self.seats.len());
            let seat = &mut self.seats[i];
            if self.rng.random_bool(0.5) {
                seat.audio_disabled = !seat.audio_disabled;
            } else {
                seat.video_disabled = !seat.video_disabled;
            }
        }
        // Nobody sits in a seat after leaving the room.
        let members = self.info.member_count as usize;
        let mut extra = self.seats_occupied().saturating_sub(members);
        for seat in self.seats.iter_mut().rev() {
            if extra == 0 {
                break;
            }
            if seat.member.take().is_some() {
                extra -= 1;
            }
        }
    }

    /// Sets RoomInfo fields from a JSON object, checking each name and type
    /// first, so a rejected edit changes nothing.
    fn set_fields(&mut self, fields: &Map<String, Value>, editor: Editor) -> Result<(), String> {
        let Ok(Value::Object(mut doc)) = serde_json::to_value(&self.info) else {
            return Err("internal error: RoomInfo did not serialise to an object".into());
        };
        let mut occupied = None;
        for (key, value) in fields {
            match key.as_str() {
                "SeatsOccupied" if editor == Editor::Control => {
                    occupied = Some(
                        value
                            .as_u64()
                            .ok_or_else(|| format!("SeatsOccupied must be a whole number, not {value}"))?,
                    );
                }
                // Naming the room's own ID is harmless; another ID is not.
                "RoomId" if value.as_str() == Some(self.info.room_id.as_str()) => {}
                "RoomId" => return Err("RoomId cannot be changed".into()),
                name => {
                    let Some(current) = doc.get(name) else {
                        return Err(format!("{name:?} is not a RoomInfo field"));
                    };
                    if !editor.may_set(name) {
                        return Err(format!("{name} cannot be set here"));
                    }
                    if !same_kind(current, value) {
                        return Err(format!("{name} must be {}, not {value}", kind_name(current)));
                    }
                    doc.insert(key.clone(), value.clone());
                }
            }
        }
        let info: RoomInfo = serde_json::from_value(Value::Object(doc))
            .map_err(|e| format!("a value is out of range: {e}"))?;
        if let Some(n) = occupied {
            let seats = if info.is_seat_enabled {
                info.max_seat_count
            } else {
                0
            };
            if n > u64::from(seats) {
                return Err(format!("SeatsOccupied {n} is more than the room's {seats} seats"));
            }
        }
        self.info = info;
        self.fit_seats();
        if let Some(n) = occupied {
            for (k, seat) in self.seats.iter_mut().enumerate() {
                seat.member = ((k as u64) < n).then(|| member_account(&self.info, k as u32));
            }
        }
        Ok(())
    }
}

/// A step of the random walk from `count` towards `target`, kept in `[0, max]`.
fn wander(rng: &mut StdRng, count: u32, target: u32, max: u32) -> u32 {
    let pull = rng.random_range(0..=max / 100 + 1) as i64;
    let drift = match count.cmp(&target) {
        std::cmp::Ordering::Less => pull,
        std::cmp::Ordering::Equal => 0,
        std::cmp::Ordering::Greater => -pull,
    };
    let next = i64::from(count) + drift + rng.random_range(-2..=2);
    next.clamp(0, i64::from(max)) as u32
}

fn same_kind(current: &Value, new: &Value) -> bool {
    match current {
        Value::Bool(_) => new.is_boolean(),
        Value::String(_) => new.is_string(),
        Value::Number(_) => new.is_u64(),
        _ => false,
    }
}

fn kind_name(value: &Value) -> &'static str {
    match value {
        Value::Bool(_) => "true or false",
        Value::String(_) => "a string",
        _ => "a whole number",
    }
}

/// Why a room could not be edited.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EditError {
    NoSuchRoom,
    AlreadyExists,
    /// A field name, type or value was wrong: says which.
    Invalid(String),
}

/// All rooms, and the clock of ticks they live by.
#[derive(Debug)]
pub struct World {
    seed: u64,
    /// World time (Unix s) at tick 0.
    epoch: u64,
    ticks: u64,
    rooms: BTreeMap<String, Room>,
    /// Number of the next room churn creates.
    next_number: u64,
    /// Chance per tick that a given room is destroyed and replaced.
    churn_per_tick: f64,
    /// Churn's own RNG, apart from the rooms'.
    rng: StdRng,
    /// Whether changes are noted as events (once a callback URL is set).
    recording: bool,
    /// Events since the last [`World::take_events`].
    events: Vec<Event>,
    /// Picks how members leave; apart from the rooms' RNGs, so recording
    /// events never changes a history.
    event_rng: StdRng,
}

impl World {
    /// `rooms` rooms numbered from 1, as of `epoch`; `churn_per_minute` is the
    /// share of rooms destroyed and replaced per simulated minute.
    pub fn new(seed: u64, rooms: usize, epoch: u64, churn_per_minute: f64) -> World {
        let mut world = World {
            seed,
            epoch,
            ticks: 0,
            rooms: BTreeMap::new(),
            next_number: 1,
            churn_per_tick: (churn_per_minute * TICK_SECONDS as f64 / 60.0).clamp(0.0, 1.0),
            rng: StdRng::seed_from_u64(mix(seed, 0)),
            recording: false,
            events: Vec::new(),
            event_rng: StdRng::seed_from_u64(mix(seed, u64::MAX)),
        };
        for _ in 0..rooms {
            world.add_generated(false);
        }
        world
    }

    /// Opens a new room of the seeded kind, numbered on from the last (a
    /// create callback when recording), as a meeting that starts now.
    pub fn open_room(&mut self) {
        self.add_generated(false);
    }

    fn add_generated(&mut self, joined_late: bool) {
        let room = Room::generate(self.seed, self.next_number, self.now(), joined_late);
        self.next_number += 1;
        if self.recording {
            let operator = Some(room.info.owner_account.clone());
            self.record(Change::Created(room.info.clone()), operator);
        }
        self.rooms.insert(room.info.room_id.clone(), room);
    }

    fn record(&mut self, change: Change, operator: Option<String>) {
        self.events.push(Event {
            change,
            operator,
            event_time_ms: wall_clock_ms(),
        });
    }

    /// From now on (`true`), changes are noted as events.
    pub fn set_recording(&mut self, on: bool) {
        self.recording = on;
    }

    /// The events noted since the previous call, oldest first.
    pub fn take_events(&mut self) -> Vec<Event> {
        std::mem::take(&mut self.events)
    }

    /// World time, Unix seconds: the epoch plus the ticks so far.
    pub fn now(&self) -> u64 {
        self.epoch + self.ticks * TICK_SECONDS
    }

    /// Advances every unfrozen room one tick, then churns.
    pub fn step(&mut self) {
        self.ticks += 1;
        for room in self.rooms.values_mut().filter(|r| !r.frozen) {
            let before = self.recording.then(|| Before::of(room));
            room.step();
            if let Some(before) = before {
                changes(&mut self.events, &mut self.event_rng, &before, room, false);
            }
        }
        if self.churn_per_tick > 0.0 {
            let p = self.churn_per_tick;
            let rng = &mut self.rng;
            let doomed: Vec<String> = self
                .rooms
                .values()
                .filter(|r| !r.frozen)
                .filter(|_| rng.random_bool(p))
                .map(|r| r.info.room_id.clone())
                .collect();
            for id in doomed {
                if let Some(room) = self.rooms.remove(&id) {
                    if self.recording {
                        self.record(Change::Destroyed(id), Some(room.info.owner_account));
                    }
                }
                self.add_generated(true);
            }
        }
    }

    pub fn room(&self, id: &str) -> Option<&Room> {
        self.rooms.get(id)
    }

    /// Rooms sorted by RoomId.
    pub fn rooms(&self) -> impl Iterator<Item = &Room> {
        self.rooms.values()
    }

    pub fn len(&self) -> usize {
        self.rooms.len()
    }

    /// Removes the room (an API or control call); false when there was none.
    pub fn destroy(&mut self, id: &str) -> bool {
        let found = self.rooms.remove(id).is_some();
        if found && self.recording {
            self.record(Change::Destroyed(id.to_owned()), None);
        }
        found
    }

    /// Sets fields of an existing room. The control API's edits also freeze the
    /// room, so the walk does not undo them.
    pub fn edit(
        &mut self,
        id: &str,
        fields: &Map<String, Value>,
        editor: Editor,
    ) -> Result<&Room, EditError> {
        let room = self.rooms.get_mut(id).ok_or(EditError::NoSuchRoom)?;
        let before = self.recording.then(|| Before::of(room));
        room.set_fields(fields, editor).map_err(EditError::Invalid)?;
        if editor == Editor::Control {
            room.frozen = true;
        }
        if let Some(before) = before {
            changes(&mut self.events, &mut self.event_rng, &before, room, true);
        }
        Ok(room)
    }

    /// Creates room `id` with defaults overridden by `fields`: by create_room
    /// (`Editor::CreateApi`) or by the control API (any field; the room is frozen).
    pub fn create(
        &mut self,
        id: &str,
        fields: &Map<String, Value>,
        editor: Editor,
    ) -> Result<&Room, EditError> {
        if self.rooms.contains_key(id) {
            return Err(EditError::AlreadyExists);
        }
        let rng = StdRng::seed_from_u64(self.rng.random());
        let mut room = Room::blank(id.to_owned(), self.now(), rng);
        room.set_fields(fields, editor).map_err(EditError::Invalid)?;
        room.frozen = editor == Editor::Control;
        if self.recording {
            let empty = Before {
                info: RoomInfo {
                    member_count: 0,
                    ..room.info.clone()
                },
                seats: room
                    .seats
                    .iter()
                    .map(|s| Seat {
                        member: None,
                        ..s.clone()
                    })
                    .collect(),
            };
            self.record(Change::Created(empty.info.clone()), None);
            // Members a control call creates the room with enter (and sit) after it.
            changes(&mut self.events, &mut self.event_rng, &empty, &room, true);
        }
        Ok(self.rooms.entry(id.to_owned()).or_insert(room))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot(world: &World) -> Vec<(RoomInfo, Vec<Seat>)> {
        world.rooms().map(|r| (r.info.clone(), r.seats.clone())).collect()
    }

    #[test]
    fn members_stay_within_capacity_and_popular_rooms_fill_up() {
        let mut world = World::new(7, 40, 1_750_000_000, 0.0);
        let mut full_ticks: BTreeMap<String, u32> = BTreeMap::new();
        for _ in 0..400 {
            world.step();
            for room in world.rooms() {
                assert!(room.info.member_count <= room.info.max_member_count);
                assert!(room.seats_occupied() <= room.info.member_count as usize);
                if room.info.member_count == room.info.max_member_count {
                    *full_ticks.entry(room.info.room_id.clone()).or_default() += 1;
                }
            }
        }
        // Rooms 1, 11, 21 and 31 fill up and stay full for minutes.
        for id in ["room-0001", "room-0011", "room-0021", "room-0031"] {
            assert!(
                full_ticks.get(id).copied().unwrap_or(0) >= 150,
                "{id}: {full_ticks:?}"
            );
        }
        assert!(full_ticks.len() <= 8, "too many full rooms: {full_ticks:?}");
    }

    #[test]
    fn same_seed_same_history_other_seed_other_history() {
        let mut a = World::new(3, 30, 1_750_000_000, 0.5);
        let mut b = World::new(3, 30, 1_750_000_000, 0.5);
        let mut c = World::new(4, 30, 1_750_000_000, 0.5);
        for _ in 0..120 {
            a.step();
            b.step();
            c.step();
            assert_eq!(snapshot(&a), snapshot(&b));
        }
        assert_ne!(snapshot(&a), snapshot(&c));
    }

    #[test]
    fn recording_events_leaves_the_history_alone_and_the_events_track_members() {
        let mut quiet = World::new(5, 20, 1_750_000_000, 0.0);
        let mut loud = World::new(5, 20, 1_750_000_000, 0.0);
        loud.set_recording(true);
        let mut counts: BTreeMap<String, u32> = loud
            .rooms()
            .map(|r| (r.info.room_id.clone(), r.info.member_count))
            .collect();
        for _ in 0..60 {
            quiet.step();
            loud.step();
            for event in loud.take_events() {
                match event.change {
                    Change::Entered {
                        room_id,
                        member_count,
                        accounts,
                    } => {
                        let was = counts.insert(room_id, member_count).unwrap_or(0);
                        assert_eq!(was + accounts.len() as u32, member_count);
                    }
                    Change::Left {
                        room_id,
                        member_count,
                        accounts,
                        ..
                    } => {
                        let was = counts.insert(room_id, member_count).unwrap_or(0);
                        assert_eq!(was - accounts.len() as u32, member_count);
                    }
                    _ => {}
                }
            }
        }
        assert!(quiet.take_events().is_empty());
        assert_eq!(snapshot(&quiet), snapshot(&loud));
        let now: BTreeMap<String, u32> = loud
            .rooms()
            .map(|r| (r.info.room_id.clone(), r.info.member_count))
            .collect();
        assert_eq!(counts, now);
    }

    #[test]
    fn a_control_edit_is_checked_whole_and_freezes_the_room() {
        let mut world = World::new(1, 3, 1_750_000_000, 0.0);
        let bad: Map<String, Value> =
            serde_json::from_str(r#"{"MemberCount": 5, "RoomName": 3}"#).expect("json");
        assert_eq!(
            world.edit("room-0002", &bad, Editor::Control).map(|_| ()),
            Err(EditError::Invalid("RoomName must be a string, not 3".into()))
        );
        let good: Map<String, Value> = serde_json::from_str(r#"{"MemberCount": 5}"#).expect("json");
        world.edit("room-0002", &good, Editor::Control).expect("edit");
        for _ in 0..50 {
            world.step();
        }
        let room = world.room("room-0002").expect("room");
        assert_eq!(room.info.member_count, 5);
        assert!(room.frozen);
    }
}

//! The status page's cost in-process at 10,000 rooms: a render of `/` (the
//! self-metrics read, the report over every room, the HTML), filtered and
//! text and JSON variants, a room page, the hooks the hot paths call per
//! callback and per poll, and a scrape's time alone and while pages render
//! on another thread. Prints figures; asserts nothing.

use std::hint::black_box;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use roomengine_exporter::api::model::{RoomInfo, SeatUsage};
use roomengine_exporter::api::{CallError, ErrorClass};
use roomengine_exporter::config::{self, Config, SecretSource};
use roomengine_exporter::journal::{Journal, Seen};
use roomengine_exporter::metrics::SelfMetrics;
use roomengine_exporter::status::model::{self, Figures, Inputs, ReloadView, RoomQuery};
use roomengine_exporter::status::{page, text};
use roomengine_exporter::store::Store;

mod common;
use common::median;

const ROOMS: usize = 10_000;

struct Secrets;
impl SecretSource for Secrets {
    fn env(&self, _: &str) -> Option<String> {
        Some("bench-secret-key".into())
    }
    fn read_file(&self, _: &std::path::Path) -> std::io::Result<String> {
        Ok("bench-secret-key".into())
    }
}

fn id(i: usize) -> String {
    format!("room-{i:05}")
}

fn config() -> Config {
    let rooms: String = (0..ROOMS).map(|i| format!("  - {}\n", id(i))).collect();
    let yaml = format!(
        "app:\n  sdkappid: 1400000000\n  identifier: administrator\n  endpoint: http://127.0.0.1:9\n\
         polling:\n  interval: 60s\n  rate_limit: 200\nrooms:\n{rooms}"
    );
    match config::parse(&yaml, &Secrets) {
        Ok(c) => c,
        Err(e) => panic!("bench config: {e}"),
    }
}

/// A store of every room polled once (a tenth full, half with seats) and a
/// journal with 20 events per room, some failed polls and full rings.
fn filled() -> (Store, Journal) {
    let ids: Vec<String> = (0..ROOMS).map(id).collect();
    let store = Store::new(&ids);
    let status = Journal::new();
    let now = roomengine_exporter::clock::unix_now_f64();
    let timeout = CallError::transport("timeout", ErrorClass::Retryable, "timed out");
    for (i, room) in ids.iter().enumerate() {
        let info = RoomInfo {
            room_id: room.as_str().into(),
            room_name: format!("Weekly sync of team {i}").into(),
            room_type: "Conference".into(),
            max_member_count: 300,
            max_seat_count: 16,
            room_status: "Running".into(),
            member_count: if i % 10 == 0 { 300 } else { (i % 300) as u64 },
            ..RoomInfo::default()
        };
        let seats = (i % 2 == 0).then_some(SeatUsage {
            occupied: 3,
            ..SeatUsage::default()
        });
        store.record_success(room, info, seats, now);
        for k in 0..20u64 {
            if k % 2 == 0 {
                status.poll(room, k, (i % 50 == 0 && k == 18).then_some(&timeout));
            } else {
                let seen = Seen {
                    room_id: room.clone(),
                    event_time_ms: k,
                };
                status.callback("Room.CallbackAfterMemberEnter", Some(&seen), 200);
            }
        }
    }
    for _ in 0..100 {
        status.refused("signature", 401, None);
    }
    (store, status)
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

/// Renders a report into a body; its length is the result.
type Renderer = dyn Fn(&model::Report) -> usize;

/// What `GET /` does: the self-metrics read, the report, then `render`.
fn render<T>(
    store: &Store,
    status: &Journal,
    metrics: &SelfMetrics,
    config: &Config,
    query: RoomQuery,
    out: impl Fn(&model::Report) -> T,
) -> T {
    let mut own = Vec::with_capacity(16 * 1024);
    metrics.render_into(&mut own);
    let figures = Figures::parse(&String::from_utf8_lossy(&own));
    let inputs = Inputs {
        config,
        figures,
        effective_rate: 200.0,
        reload: ReloadView {
            config_file: None,
            successful: true,
            last_success_timestamp: None,
            last_attempt: None,
        },
        now_ms: roomengine_exporter::clock::unix_now_ms(),
    };
    out(&model::report(status, store, query, inputs))
}

fn main() {
    let config = config();
    let (store, status) = filled();
    let metrics = SelfMetrics::new();
    let runs = 41;
    println!("status page at {ROOMS} rooms (median of {runs} runs)");

    let render =
        |query: &RoomQuery, out: &Renderer| render(&store, &status, &metrics, &config, query.clone(), out);
    let html = |r: &model::Report| page::status_page(r, "/metrics", false).len();
    let page_bytes = render(&RoomQuery::default(), &html);
    let filtered = RoomQuery {
        q: "team 12".into(),
        full: "1".into(),
        ..RoomQuery::default()
    };
    let by_poll = RoomQuery {
        sort: "last_poll".into(),
        page: 50,
        ..RoomQuery::default()
    };
    let text = |r: &model::Report| text::render(r).len();
    let json = |r: &model::Report| serde_json::to_string(r).map_or(0, |s| s.len());
    let cases: [(&str, &RoomQuery, &Renderer); 5] = [
        ("/  (fullest first, page 1)", &RoomQuery::default(), &html),
        ("/?q=team 12&full=1", &filtered, &html),
        ("/?sort=last_poll&page=50", &by_poll, &html),
        ("/ as text/plain", &RoomQuery::default(), &text),
        ("/status.json", &RoomQuery::default(), &json),
    ];
    for (name, query, out) in cases {
        let t = median(runs, || {
            black_box(render(query, out));
        });
        println!("  {:<34} {}", format!("{name}:"), ms(t));
    }
    println!("    ({} KiB of HTML for page 1)", page_bytes / 1024);
    let t = median(runs, || {
        let mut own = Vec::with_capacity(16 * 1024);
        metrics.render_into(&mut own);
        black_box(Figures::parse(&String::from_utf8_lossy(&own)));
    });
    println!("    of which the self-metrics read:  {}", ms(t));
    let now = roomengine_exporter::clock::unix_now_ms();
    let t = median(runs, || {
        let detail = model::room_detail(&status, &store, &config, "room-04242", now);
        black_box(detail.map(|d| page::room_page(&d)));
    });
    println!("  /rooms/room-04242:                 {}", ms(t));

    // The hooks: one call each, as the receiver and the poller make them.
    let n = 200_000;
    let seen = Seen {
        room_id: id(77),
        event_time_ms: 1,
    };
    let start = Instant::now();
    for _ in 0..n {
        status.callback("Room.CallbackAfterMemberEnter", Some(black_box(&seen)), 200);
    }
    let per_callback = start.elapsed() / n;
    let start = Instant::now();
    for i in 0..n as usize {
        status.poll(black_box(&id(i % ROOMS)), 1, None);
    }
    let per_poll = start.elapsed() / n;
    println!("  hook per callback: {per_callback:?}, per poll: {per_poll:?} (room ID formatting included)");

    // A scrape alone, then while another thread renders pages back to back.
    let mut body = Vec::with_capacity(16 << 20);
    let scrape = |body: &mut Vec<u8>| {
        body.clear();
        store.render_into(body);
    };
    let alone = median(runs, || scrape(&mut body));
    let stop = AtomicBool::new(false);
    let rendered = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let busy = std::thread::scope(|s| {
        s.spawn(|| {
            while !stop.load(Ordering::Relaxed) {
                black_box(render(&RoomQuery::default(), &html));
                rendered.fetch_add(1, Ordering::Relaxed);
            }
        });
        std::thread::sleep(Duration::from_millis(50));
        let busy = median(runs, || scrape(&mut body));
        stop.store(true, Ordering::Relaxed);
        busy
    });
    println!(
        "  scrape of {} MiB: {} alone, {} while pages render ({} pages meanwhile)",
        body.len() >> 20,
        ms(alone),
        ms(busy),
        rendered.load(Ordering::Relaxed)
    );
}

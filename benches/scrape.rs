//! Scrape rendering cost in-process: render time and body size of the room
//! families for 1,000, 10,000 and 50,000 rooms; at 10,000 rooms also the
//! store's pre-rendered concatenation against re-rendering every room at
//! scrape time (in one run so the ratio holds on a noisy machine), and what
//! gzip of that body costs. Prints figures; asserts nothing.

use std::hint::black_box;
use std::io::Write as _;

use roomengine_exporter::api::model::{RoomInfo, SeatUsage};
use roomengine_exporter::exposition::{render_room, write_families, RoomSnapshot};
use roomengine_exporter::store::Store;

mod common;
use common::median;

const ROOMS: usize = 10_000;
const SIZES: [usize; 3] = [1_000, 10_000, 50_000];

fn info(i: usize) -> RoomInfo {
    RoomInfo {
        room_id: format!("room-{i:05}").into(),
        room_name: format!("Weekly sync of team {i}").into(),
        room_type: "Conference".into(),
        owner_account: format!("user{i}").into(),
        max_member_count: 300,
        max_seat_count: 16,
        room_status: "Running".into(),
        take_seat_mode: "ApplyToTake".into(),
        is_seat_enabled: i.is_multiple_of(2),
        member_count: (i % 300) as u64,
        create_time: 1703491546,
        schedule_start_time: 1703491546,
        schedule_end_time: 1703495146,
        ..RoomInfo::default()
    }
}

/// A store of `rooms` rooms, every one polled once (half with seats), and their snapshots.
fn filled_store(rooms: usize) -> (Store, Vec<RoomSnapshot>) {
    let ids: Vec<String> = (0..rooms).map(|i| format!("room-{i:05}")).collect();
    let store = Store::new(&ids);
    let mut snapshots = Vec::with_capacity(rooms);
    for i in 0..rooms {
        let seats = i.is_multiple_of(2).then_some(SeatUsage {
            occupied: 3,
            locked: 1,
            audio_disabled: 0,
            video_disabled: 2,
        });
        store.record_success(&format!("room-{i:05}"), info(i), seats, 1.7e9);
        snapshots.push(store.snapshot(&format!("room-{i:05}")).expect("stored"));
    }
    (store, snapshots)
}

/// Render time (median of 21) and body size of the room families at each
/// size: the pieces /metrics sends (slices of the shard texts), and the same
/// text copied into one buffer (what a scrape cost before it streamed them).
fn by_size() {
    println!("render of the room families (median of 21): pieces /metrics sends | copied into one buffer");
    for rooms in SIZES {
        let (store, _) = filled_store(rooms);
        let pieces = median(21, || {
            black_box(store.scrape());
        });
        let mut body = Vec::new();
        let took = median(21, || {
            let mut out = Vec::with_capacity(rooms * 2048);
            store.render_into(&mut out);
            body = out;
        });
        let series = body
            .split(|&b| b == b'\n')
            .filter(|l| !l.is_empty() && l[0] != b'#')
            .count();
        println!(
            "  {rooms:>6} rooms: {:>7.3} ms | {:>7.2} ms, {:>6.1} MB, {series} series",
            pieces.as_secs_f64() * 1e3,
            took.as_secs_f64() * 1e3,
            body.len() as f64 / 1e6
        );
    }
}

/// What gzip of the 10,000-room body costs at the levels worth considering.
fn gzip_cost(body: &[u8]) {
    for (name, level) in [
        ("fastest (1)", flate2::Compression::fast()),
        ("default (6)", flate2::Compression::default()),
    ] {
        let mut size = 0;
        let took = median(5, || {
            let mut encoder = flate2::write::GzEncoder::new(Vec::new(), level);
            encoder.write_all(body).expect("in-memory write");
            size = encoder.finish().expect("in-memory write").len();
        });
        println!(
            "  gzip {name} of that body, in-process:              {:>8.2} ms -> {:.2} MB",
            took.as_secs_f64() * 1e3,
            size as f64 / 1e6
        );
    }
}

fn main() {
    by_size();
    let (store, snapshots) = filled_store(ROOMS);

    let mut size = 0;
    let pre_rendered = median(21, || {
        let mut out = Vec::with_capacity(ROOMS * 2048);
        store.render_into(&mut out);
        size = out.len();
        black_box(out);
    });
    let per_room: Vec<_> = snapshots.iter().map(render_room).collect();
    let gathered = median(21, || {
        let mut out = Vec::with_capacity(ROOMS * 2048);
        write_families(per_room.iter(), &mut out);
        black_box(out);
    });
    let rerender = median(21, || {
        let rendered: Vec<_> = snapshots.iter().map(render_room).collect();
        let mut out = Vec::with_capacity(ROOMS * 2048);
        write_families(rendered.iter(), &mut out);
        black_box(out);
    });
    let one: &RoomSnapshot = &snapshots[0];
    let update = median(21, || {
        for i in 0..1000 {
            store.record_success(&one.room_id, info(i), None, 1.7e9);
        }
    }) / 1000;
    let series = {
        let mut out = Vec::new();
        store.render_into(&mut out);
        String::from_utf8_lossy(&out)
            .lines()
            .filter(|l| !l.starts_with('#'))
            .count()
    };

    println!(
        "scrape of {ROOMS} rooms ({series} series, {:.1} MB):",
        size as f64 / 1e6
    );
    println!(
        "  sharded pre-rendered text, copied into one buffer: {:>6.2} ms",
        pre_rendered.as_secs_f64() * 1e3
    );
    println!(
        "  per-room buffers gathered family by family:      {:>8.2} ms",
        gathered.as_secs_f64() * 1e3
    );
    println!(
        "  re-rendering every room at scrape time:          {:>8.2} ms",
        rerender.as_secs_f64() * 1e3
    );
    println!(
        "  sharded is {:.1}x faster than per-room buffers, {:.1}x faster than re-rendering; target <= 5 ms",
        gathered.as_secs_f64() / pre_rendered.as_secs_f64(),
        rerender.as_secs_f64() / pre_rendered.as_secs_f64()
    );
    println!(
        "  one room update (render + splice into its shard): {:>7.2} us",
        update.as_secs_f64() * 1e6
    );
    let mut body = Vec::new();
    store.render_into(&mut body);
    gzip_cost(&body);
}

//! Scrape rendering cost with 10,000 rooms: the store's pre-rendered
//! concatenation against re-rendering every room at scrape time, in one run so
//! the ratio holds on a noisy machine. Prints figures; asserts nothing.

use std::hint::black_box;
use std::time::{Duration, Instant};

use roomengine_exporter::api::model::{RoomInfo, SeatUsage};
use roomengine_exporter::exposition::{render_room, write_families, RoomSnapshot};
use roomengine_exporter::store::Store;

const ROOMS: usize = 10_000;

fn info(i: usize) -> RoomInfo {
    RoomInfo {
        room_id: format!("room-{i:05}"),
        room_name: format!("Weekly sync of team {i}"),
        room_type: "Conference".into(),
        owner_account: format!("user{i}"),
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

/// Median of `runs` timings of `f`.
fn median(runs: usize, mut f: impl FnMut()) -> Duration {
    let mut times: Vec<Duration> = (0..runs)
        .map(|_| {
            let start = Instant::now();
            f();
            start.elapsed()
        })
        .collect();
    times.sort();
    times[runs / 2]
}

fn main() {
    let ids: Vec<String> = (0..ROOMS).map(|i| format!("room-{i:05}")).collect();
    let store = Store::new(&ids);
    let mut snapshots = Vec::with_capacity(ROOMS);
    for i in 0..ROOMS {
        let seats = i.is_multiple_of(2).then_some(SeatUsage {
            occupied: 3,
            locked: 1,
            audio_disabled: 0,
            video_disabled: 2,
        });
        store.record_success(&format!("room-{i:05}"), info(i), seats, 1.7e9);
        snapshots.push(store.snapshot(&format!("room-{i:05}")).expect("stored"));
    }

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
        "  sharded pre-rendered text (what /metrics does): {:>8.2} ms",
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
        "  one room update (render + swap):                 {:>8.2} us",
        update.as_secs_f64() * 1e6
    );
}

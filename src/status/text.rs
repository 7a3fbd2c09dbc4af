//! `/` for `Accept: text/plain` (curl, scripts): the summary as `key: value`
//! lines, then the room table's page as aligned columns, then the recent
//! refused callbacks and API errors.

use std::fmt::Write as _;

use crate::status::model::Report;
use crate::status::page::{ago, when};

/// Columns of the room table, in order.
const COLUMNS: [&str; 9] = [
    "ROOM",
    "STATUS",
    "MEMBERS",
    "MAX",
    "SEATS",
    "LEARNT",
    "LAST_POLL",
    "LAST_CALLBACK",
    "ERROR",
];

/// Control characters would let a room name forge lines of the table.
fn clean(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

pub fn render(r: &Report) -> String {
    let mut out = String::with_capacity(16 * 1024);
    let b = &r.budget;
    let c = &r.callbacks;
    let _ = writeln!(out, "version: {}", r.version);
    let _ = writeln!(out, "uptime: {}", ago(Some(r.uptime_seconds)));
    let _ = writeln!(
        out,
        "config: {} (last reload {})",
        clean(r.reload.config_file.as_deref().unwrap_or("built in memory")),
        match &r.reload.last_attempt {
            Some(a) if a.ok => "ok".to_owned(),
            Some(a) => format!("failed: {}", clean(&a.message)),
            None => "none".to_owned(),
        }
    );
    let _ = writeln!(
        out,
        "rooms: {} known, {} configured, {} discovered, {} full, {} up",
        r.rooms.known, r.rooms.configured, r.rooms.discovered, r.rooms.full, r.rooms.up
    );
    let _ = writeln!(
        out,
        "budget: {:.1} calls/s of rate_limit {} (effective {:.1}); pass {:.1}s of interval {:.0}s; watch share {:.0}% (cap {:.0}%)",
        b.calls_per_second,
        b.rate_limit,
        b.effective_rate,
        b.pass_seconds,
        b.interval_seconds,
        b.watch_share * 100.0,
        b.watch_max_share * 100.0
    );
    if c.enabled {
        let _ = writeln!(
            out,
            "callbacks: {:.1}/s, last {} ago, {} refused in all",
            c.per_second,
            ago(c.last_age_seconds),
            c.refused_total
        );
    } else {
        let _ = writeln!(out, "callbacks: off");
    }
    let _ = writeln!(
        out,
        "state: {} ({}{})",
        clean(&r.state.backend),
        if r.state.up { "healthy" } else { "failing" },
        if r.state.ha { ", shared by HA replicas" } else { "" }
    );
    let t = &r.table;
    let _ = writeln!(
        out,
        "\n{} of {} rooms match; page {} of {}",
        t.matching, r.rooms.known, t.page, t.pages
    );
    let cells: Vec<[String; 9]> = t
        .rows
        .iter()
        .map(|row| {
            [
                clean(&row.room_id),
                clean(&row.status),
                row.members.to_string(),
                row.max_members.to_string(),
                row.seats_used.map_or_else(|| "-".to_owned(), |s| s.to_string()),
                row.learnt.to_owned(),
                ago(row.last_poll_age_seconds),
                ago(row.last_callback_age_seconds),
                row.last_error.as_deref().map_or_else(|| "-".to_owned(), clean),
            ]
        })
        .collect();
    let mut widths = COLUMNS.map(str::len);
    for row in &cells {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |out: &mut String, cells: &mut dyn Iterator<Item = &str>| {
        let text: Vec<String> = cells.zip(widths).map(|(cell, w)| format!("{cell:<w$}")).collect();
        let _ = writeln!(out, "{}", text.join("  ").trim_end());
    };
    line(&mut out, &mut COLUMNS.iter().copied());
    for row in &cells {
        line(&mut out, &mut row.iter().map(String::as_str));
    }
    if !r.recent_refused.is_empty() {
        let _ = writeln!(out, "\nrefused callbacks (newest first):");
        for x in &r.recent_refused {
            let _ = writeln!(
                out,
                "{}  {}  {}  {}",
                when(x.at_ms),
                x.reason,
                x.status,
                x.source.map_or_else(|| "-".to_owned(), |s| s.to_string())
            );
        }
    }
    if !r.recent_api_errors.is_empty() {
        let _ = writeln!(out, "\nAPI errors (newest first):");
        for e in &r.recent_api_errors {
            let _ = writeln!(
                out,
                "{}  {}  {}  {}",
                when(e.at_ms),
                clean(&e.room_id),
                clean(&e.code),
                e.class
            );
        }
    }
    out
}

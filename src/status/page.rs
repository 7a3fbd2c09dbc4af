//! The HTML of `/` and `/rooms/{id}`: server-rendered, no external assets;
//! the filter is a GET form and sorting and paging are links, so the page
//! works with JavaScript off. Every text that came from the API, a callback
//! or the configuration goes through [`Esc`].

use std::fmt::{self, Display, Write as _};
use std::time::{Duration, UNIX_EPOCH};

use crate::api::model::ROOM_STATUSES;
use crate::status::model::{Report, RoomDetail, RoomQuery, Row};

/// HTML-escapes its text (element content and quoted attribute values alike).
pub struct Esc<'a>(pub &'a str);

impl Display for Esc<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut rest = self.0;
        while let Some(at) = rest.find(['&', '<', '>', '"', '\'']) {
            f.write_str(&rest[..at])?;
            f.write_str(match rest.as_bytes()[at] {
                b'&' => "&amp;",
                b'<' => "&lt;",
                b'>' => "&gt;",
                b'"' => "&quot;",
                _ => "&#39;",
            })?;
            rest = &rest[at + 1..];
        }
        f.write_str(rest)
    }
}

/// A room ID as one URL path segment.
pub fn room_href(room: &str) -> String {
    let mut out = String::from("/rooms/");
    for b in room.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// A Unix time (ms) as RFC 3339 UTC to the second.
pub fn when(ms: u64) -> String {
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_millis(ms)).to_string()
}

/// An age in seconds, short: `4.2s`, `3m 10s`, `2h 5m`; `-` for never.
pub fn ago(seconds: Option<f64>) -> String {
    let Some(s) = seconds else {
        return "-".to_owned();
    };
    if s < 60.0 {
        format!("{s:.1}s")
    } else if s < 3600.0 {
        format!("{}m {}s", (s / 60.0) as u64, (s % 60.0) as u64)
    } else {
        format!("{}h {}m", (s / 3600.0) as u64, (s % 3600.0 / 60.0) as u64)
    }
}

const STYLE: &str = "body{font:14px/1.4 system-ui,sans-serif;margin:1.5em;color:#222}\
h1{font-size:1.4em;margin:0 0 .3em}h2{font-size:1.1em;margin:1.4em 0 .4em}\
nav a{margin-right:1em}.cards{display:flex;flex-wrap:wrap;gap:.6em}\
.card{border:1px solid #ccd;border-radius:6px;padding:.4em .8em;min-width:11em}\
.card dt{color:#666;font-size:.85em}.card dd{margin:0;font-size:1.15em;font-weight:600}\
table{border-collapse:collapse;margin:.3em 0}th,td{border-bottom:1px solid #e2e2ea;padding:.2em .6em;text-align:left}\
th{background:#f3f3f8}td.n{text-align:right;font-variant-numeric:tabular-nums}\
tr.full td{background:#fde8e8}.bad{color:#b00}.ok{color:#070}form{margin:.5em 0}\
pre{background:#f6f6f9;padding:.6em;overflow-x:auto}.muted{color:#777}";

/// Submits the filter form when a choice changes; the Apply button does the same without JS.
const SCRIPT: &str = "document.querySelectorAll('#filter select,#filter input[type=checkbox]')\
.forEach(function(e){e.addEventListener('change',function(){e.form.submit()})});";

fn head(out: &mut String, title: &str) {
    let _ = write!(
        out,
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width\"><title>{}</title><style>{STYLE}</style></head><body>",
        Esc(title)
    );
}

fn card(out: &mut String, id: &str, label: &str, value: impl Display) {
    let _ = write!(
        out,
        "<dl class=\"card\"><dt>{label}</dt><dd id=\"{id}\">{}</dd></dl>",
        Esc(&value.to_string())
    );
}

fn rate(v: f64) -> String {
    format!("{v:.1}/s")
}

/// The whole status page.
pub fn status_page(r: &Report, telemetry_path: &str, probe: bool) -> String {
    let mut out = String::with_capacity(64 * 1024);
    head(&mut out, "Room Engine exporter");
    let _ = write!(
        out,
        "<h1>Room Engine exporter</h1><p>Version {} · up {} · config {} · ",
        Esc(r.version),
        ago(Some(r.uptime_seconds)),
        Esc(r.reload.config_file.as_deref().unwrap_or("built in memory")),
    );
    match &r.reload.last_attempt {
        Some(a) if a.ok => {
            let _ = write!(
                out,
                "<span class=\"ok\">last reload OK</span> at {}",
                when((a.timestamp * 1000.0) as u64)
            );
        }
        Some(a) => {
            let _ = write!(
                out,
                "<span class=\"bad\">last reload failed</span> at {}: {}",
                when((a.timestamp * 1000.0) as u64),
                Esc(&a.message)
            );
        }
        None => out.push_str("loaded at start, not reloaded since"),
    }
    out.push_str("</p><nav>");
    for (href, label) in [
        (telemetry_path, telemetry_path),
        ("/status.json", "/status.json"),
        ("/config", "/config"),
        ("/-/healthy", "/-/healthy"),
        ("/-/ready", "/-/ready"),
    ] {
        let _ = write!(out, "<a href=\"{}\">{}</a>", Esc(href), Esc(label));
    }
    if probe {
        out.push_str("<a href=\"/probe?room_id=room-test\">/probe?room_id=…</a>");
    }
    out.push_str(
        "<span class=\"muted\">POST /-/reload (or SIGHUP) re-reads the configuration. \
         Room data comes from background polling and callbacks; a scrape reads snapshots.</span></nav>",
    );

    out.push_str("<h2>Summary</h2><div class=\"cards\">");
    card(&mut out, "rooms-known", "rooms known", r.rooms.known);
    card(&mut out, "rooms-configured", "configured", r.rooms.configured);
    card(&mut out, "rooms-discovered", "discovered", r.rooms.discovered);
    card(&mut out, "rooms-full", "full", r.rooms.full);
    card(&mut out, "rooms-up", "up", r.rooms.up);
    let b = &r.budget;
    card(
        &mut out,
        "budget-calls",
        "calls / rate_limit",
        format!(
            "{} of {} (effective {})",
            rate(b.calls_per_second),
            rate(b.rate_limit),
            rate(b.effective_rate)
        ),
    );
    card(
        &mut out,
        "budget-pass",
        "pass / interval",
        format!("{:.1}s of {:.0}s", b.pass_seconds, b.interval_seconds),
    );
    card(
        &mut out,
        "budget-watch",
        "watch share",
        format!(
            "{:.0}% (cap {:.0}%, {} rooms)",
            b.watch_share * 100.0,
            b.watch_max_share * 100.0,
            b.rooms_watched
        ),
    );
    let c = &r.callbacks;
    if c.enabled {
        card(&mut out, "callbacks-rate", "callbacks", rate(c.per_second));
        card(
            &mut out,
            "callbacks-last",
            "last callback",
            format!("{} ago", ago(c.last_age_seconds)),
        );
        card(&mut out, "callbacks-refused", "refused (total)", c.refused_total);
    } else {
        card(&mut out, "callbacks-rate", "callbacks", "off");
    }
    let s = &r.state;
    card(
        &mut out,
        "state",
        if s.ha {
            "state (HA replicas share it)"
        } else {
            "state"
        },
        format!("{} · {}", s.backend, if s.up { "healthy" } else { "FAILING" }),
    );
    out.push_str("</div>");

    rooms_table(&mut out, r);
    recent(&mut out, r);
    let _ = write!(out, "<script>{SCRIPT}</script></body></html>");
    out
}

fn option(out: &mut String, value: &str, label: &str, current: &str) {
    let selected = if value == current { " selected" } else { "" };
    let _ = write!(
        out,
        "<option value=\"{}\"{selected}>{}</option>",
        Esc(value),
        Esc(label)
    );
}

fn rooms_table(out: &mut String, r: &Report) {
    let t = &r.table;
    let q = &t.query;
    let _ = write!(
        out,
        "<h2 id=\"rooms\">Rooms</h2><form id=\"filter\" method=\"get\" action=\"/\">\
         <input type=\"search\" name=\"q\" value=\"{}\" placeholder=\"room ID or name\" aria-label=\"filter\"> \
         <select name=\"status\" aria-label=\"status\">",
        Esc(&q.q)
    );
    option(out, "", "any status", &q.status);
    for s in ROOM_STATUSES.iter().chain(&["gone", "unknown"]) {
        option(out, s, s, &q.status);
    }
    out.push_str("</select> <select name=\"learnt\" aria-label=\"learnt\">");
    for (v, l) in [
        ("", "learnt anyhow"),
        ("configured", "configured"),
        ("callback", "callback"),
        ("both", "both"),
    ] {
        option(out, v, l, &q.learnt);
    }
    let _ = write!(
        out,
        "</select> <label><input type=\"checkbox\" name=\"full\" value=\"1\"{}> full only</label>",
        if q.full_only() { " checked" } else { "" }
    );
    for (name, value) in [("sort", &q.sort), ("order", &q.order)] {
        if !value.is_empty() {
            let _ = write!(
                out,
                "<input type=\"hidden\" name=\"{name}\" value=\"{}\">",
                Esc(value)
            );
        }
    }
    let _ = write!(
        out,
        " <button type=\"submit\">Apply</button> <a href=\"/\">clear</a></form>\
         <p id=\"matching\">{} of {} rooms match · page {} of {}</p>",
        t.matching, r.rooms.known, t.page, t.pages
    );
    out.push_str(
        "<table id=\"room-table\"><thead><tr><th>room</th><th>name</th><th>type</th><th>status</th>",
    );
    for (key, label) in [("members", "members / max"), ("occupancy", "occupancy")] {
        sort_header(out, q, key, label);
    }
    out.push_str("<th>seats / max</th><th>learnt</th>");
    for (key, label) in [("last_poll", "last poll"), ("last_callback", "last callback")] {
        sort_header(out, q, key, label);
    }
    out.push_str("<th>last error</th></tr></thead><tbody>");
    for row in &t.rows {
        room_row(out, row);
    }
    out.push_str("</tbody></table><p class=\"pager\">");
    if t.page > 1 {
        let _ = write!(
            out,
            "<a id=\"prev\" href=\"/{}\">← prev</a> ",
            Esc(&q.link(|n| n.page = t.page - 1))
        );
    }
    if t.page < t.pages {
        let _ = write!(
            out,
            "<a id=\"next\" href=\"/{}\">next →</a>",
            Esc(&q.link(|n| n.page = t.page + 1))
        );
    }
    out.push_str("</p>");
}

fn sort_header(out: &mut String, q: &RoomQuery, key: &str, label: &str) {
    let current = q.sort == key || (q.sort.is_empty() && key == "occupancy");
    let descending = q.order != "asc";
    let order = if current && descending { "asc" } else { "desc" };
    let arrow = match (current, descending) {
        (false, _) => "",
        (true, true) => " ↓",
        (true, false) => " ↑",
    };
    let href = q.link(|n| {
        n.sort = key.to_owned();
        n.order = order.to_owned();
    });
    let _ = write!(out, "<th><a href=\"/{}\">{label}{arrow}</a></th>", Esc(&href));
}

fn room_row(out: &mut String, row: &Row) {
    let occupancy = if row.max_members > 0 {
        format!("{:.0}%", row.members as f64 * 100.0 / row.max_members as f64)
    } else {
        "-".to_owned()
    };
    let seats = match row.seats_used {
        Some(used) => format!("{used} / {}", row.max_seats),
        None if row.max_seats > 0 => format!("- / {}", row.max_seats),
        None => "-".to_owned(),
    };
    let _ = write!(
        out,
        "<tr{}><td><a href=\"{}\">{}</a></td><td>{}</td><td>{}</td><td>{}</td>\
         <td class=\"n\">{} / {}</td><td class=\"n\">{occupancy}</td><td class=\"n\">{seats}</td><td>{}</td>\
         <td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"bad\">{}</td></tr>",
        if row.full { " class=\"full\"" } else { "" },
        Esc(&room_href(&row.room_id)),
        Esc(&row.room_id),
        Esc(&row.name),
        Esc(&row.room_type),
        Esc(&row.status),
        row.members,
        row.max_members,
        row.learnt,
        ago(row.last_poll_age_seconds),
        ago(row.last_callback_age_seconds),
        Esc(row.last_error.as_deref().unwrap_or("")),
    );
}

fn recent(out: &mut String, r: &Report) {
    let _ = write!(
        out,
        "<h2>Recent callbacks</h2><table id=\"callbacks\"><thead><tr><th>time</th><th>command</th><th>room</th>\
         <th>EventTime</th><th>outcome</th></tr></thead><tbody>"
    );
    for c in &r.recent_callbacks {
        let room = if c.room_id.is_empty() {
            "-".to_owned()
        } else {
            format!(
                "<a href=\"{}\">{}</a>",
                Esc(&room_href(&c.room_id)),
                Esc(&c.room_id)
            )
        };
        let _ = write!(
            out,
            "<tr><td>{}</td><td>{}</td><td>{room}</td><td>{}</td><td>{} ({})</td></tr>",
            when(c.at_ms),
            Esc(c.command),
            if c.event_time_ms > 0 {
                when(c.event_time_ms)
            } else {
                "-".to_owned()
            },
            c.outcome,
            c.status
        );
    }
    out.push_str(
        "</tbody></table><h2>Refused callbacks</h2><table id=\"refused\"><thead><tr><th>time</th><th>reason</th>\
         <th>answer</th><th>source</th></tr></thead><tbody>",
    );
    for x in &r.recent_refused {
        let _ = write!(
            out,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            when(x.at_ms),
            x.reason,
            x.status,
            x.source.map_or_else(|| "-".to_owned(), |s| s.to_string())
        );
    }
    out.push_str(
        "</tbody></table><h2>API errors</h2><table id=\"api-errors\"><thead><tr><th>time</th><th>room</th>\
         <th>code</th><th>class</th></tr></thead><tbody>",
    );
    for e in &r.recent_api_errors {
        let _ = write!(
            out,
            "<tr><td>{}</td><td><a href=\"{}\">{}</a></td><td>{}</td><td>{}</td></tr>",
            when(e.at_ms),
            Esc(&room_href(&e.room_id)),
            Esc(&e.room_id),
            Esc(&e.code),
            e.class
        );
    }
    out.push_str("</tbody></table>");
}

/// A room's page.
pub fn room_page(d: &RoomDetail) -> String {
    let mut out = String::with_capacity(16 * 1024);
    let row = &d.room;
    head(&mut out, &format!("{} · Room Engine exporter", row.room_id));
    let _ = write!(
        out,
        "<p><a href=\"/\">← status</a></p><h1>Room {}</h1><p id=\"room-summary\">{} · {} · {} / {} members · learnt: {} · {} · \
         last poll {} ago · last callback {} ago{}</p>",
        Esc(&row.room_id),
        Esc(&row.name),
        Esc(&row.status),
        row.members,
        row.max_members,
        row.learnt,
        if row.up { "up" } else { "down" },
        ago(row.last_poll_age_seconds),
        ago(row.last_callback_age_seconds),
        row.last_error
            .as_deref()
            .map_or_else(String::new, |e| format!(" · <span class=\"bad\">last error {}</span>", Esc(e))),
    );
    out.push_str(
        "<h2>Fields</h2><table id=\"fields\"><thead><tr><th>field</th><th>value</th><th>from</th><th>as of</th></tr></thead><tbody>",
    );
    for f in &d.fields {
        let _ = write!(
            out,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            f.field,
            Esc(&f.value),
            Esc(&f.source),
            when(f.as_of_ms)
        );
    }
    out.push_str(
        "</tbody></table><h2>Last events</h2><table id=\"events\"><thead><tr><th>recorded</th><th>kind</th><th>what</th>\
         <th>as of</th><th>outcome</th></tr></thead><tbody>",
    );
    for e in &d.events {
        let _ = write!(
            out,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            when(e.at_ms),
            e.kind,
            Esc(e.what),
            if e.as_of_ms > 0 {
                when(e.as_of_ms)
            } else {
                "-".to_owned()
            },
            Esc(&e.outcome)
        );
    }
    let _ = write!(
        out,
        "</tbody></table><h2>Series</h2><pre id=\"series\">{}</pre></body></html>",
        Esc(&d.series)
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostile_text_is_escaped_for_content_and_attributes() {
        assert_eq!(
            Esc("<script>alert(1)</script>").to_string(),
            "&lt;script&gt;alert(1)&lt;/script&gt;"
        );
        assert_eq!(Esc("a\"b'c&d").to_string(), "a&quot;b&#39;c&amp;d");
        assert_eq!(Esc("plain").to_string(), "plain");
    }

    #[test]
    fn room_links_encode_every_byte_outside_the_unreserved_set() {
        assert_eq!(room_href("room-0001"), "/rooms/room-0001");
        assert_eq!(room_href("a/b c\"<"), "/rooms/a%2Fb%20c%22%3C");
    }

    #[test]
    fn ages_are_short() {
        assert_eq!(ago(None), "-");
        assert_eq!(ago(Some(4.25)), "4.2s");
        assert_eq!(ago(Some(190.0)), "3m 10s");
        assert_eq!(ago(Some(7500.0)), "2h 5m");
    }
}

//! docs/metrics.md against what the exporter really exposes: the binary runs
//! against the simulator with seat usage, the watch tier, callbacks and some
//! API faults on, and every family on `/metrics` and `/probe` must be listed
//! in the doc, with the same type, and every family the doc lists must appear.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use roomengine_exporter::config::SecretKey;
use roomengine_exporter::sim::{SimOptions, Simulator};

use common::{free_port, members_body, now_ms, post_callback, Exporter, ENTER, IDENTIFIER, KEY, SDKAPPID};

const DOC: &str = include_str!("../docs/metrics.md");

/// Documented families that may rightly be absent: the process collector
/// writes the address-space limit only when one is set (`ulimit -v`), which
/// a test cannot provoke for the exporter it spawns without changing it; the
/// HA group's families exist only with `callbacks.redis_url` (tests/ha.rs
/// reads them from two replicas).
const ONLY_SOMETIMES: [&str; 7] = [
    "process_virtual_memory_max_bytes",
    "roomengine_ha_replicas",
    "roomengine_ha_owned_rooms",
    "roomengine_ha_budget_fallback",
    "roomengine_ha_rooms_moved_total",
    "roomengine_ha_replica_id_conflicts_total",
    "roomengine_ha_heartbeat_failures_total",
];

/// Family name → type, from the tables of docs/metrics.md: every row whose
/// first cell names metrics in backticks (several names may share a row).
fn documented() -> BTreeMap<String, String> {
    let mut families = BTreeMap::new();
    for line in DOC.lines() {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        // "| `name` | type | ..." splits into ["", "`name`", "type", ...].
        let (Some(first), Some(kind)) = (cells.get(1), cells.get(2)) else {
            continue;
        };
        for (i, piece) in first.split('`').enumerate() {
            let is_name = i % 2 == 1
                && (piece.starts_with("roomengine_") || piece.starts_with("process_"))
                && piece
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
            if is_name {
                families.insert(piece.to_owned(), (*kind).to_owned());
            }
        }
    }
    families
}

/// Family name → type, from the `# TYPE` lines of a text exposition.
fn exposed(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_once(' '))
        .map(|(name, kind)| (name.to_owned(), kind.trim().to_owned()))
        .collect()
}

/// Every disagreement between the doc and the exposition, one line each, naming the family.
fn differences(doc: &BTreeMap<String, String>, seen: &BTreeMap<String, String>) -> Vec<String> {
    let mut out = Vec::new();
    for (name, kind) in seen {
        match doc.get(name) {
            None => out.push(format!(
                "{name} ({kind}) is exposed but docs/metrics.md does not list it"
            )),
            Some(documented) if documented != kind => out.push(format!(
                "{name} is a {kind} on /metrics but docs/metrics.md says {documented}"
            )),
            Some(_) => {}
        }
    }
    let missing = doc
        .keys()
        .filter(|n| !seen.contains_key(*n) && !ONLY_SOMETIMES.contains(&n.as_str()));
    for name in missing {
        out.push(format!("{name} is listed in docs/metrics.md but never exposed"));
    }
    out
}

#[test]
fn the_doc_table_parser_reads_names_and_types() {
    let doc = documented();
    assert_eq!(
        doc.get("roomengine_room_members").map(String::as_str),
        Some("gauge")
    );
    assert_eq!(
        doc.get("roomengine_api_request_duration_seconds")
            .map(String::as_str),
        Some("histogram")
    );
    let seen = exposed("# HELP x_total X.\n# TYPE x_total counter\nx_total 1\n");
    assert_eq!(
        differences(&doc, &seen).first().map(String::as_str),
        Some("x_total (counter) is exposed but docs/metrics.md does not list it")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_exposed_family_is_documented_and_every_documented_family_is_exposed() {
    // Seat-enabled rooms with seats taken, and 100001 on a share of calls so
    // that the error counter (which has no series before an error) shows.
    let sim = Simulator::start(SimOptions {
        rooms: 12,
        tick: None,
        fault_rate: 0.2,
        identifier: IDENTIFIER.into(),
        sdkappid: SDKAPPID,
        ..SimOptions::new(SecretKey::new(KEY.into()))
    })
    .await
    .expect("simulator starts");
    sim.step(120);
    let rooms = sim.room_ids();
    let callbacks_port = free_port();
    let rooms_yaml: String = rooms.iter().map(|r| format!("  - {r}\n")).collect();
    let yaml = format!(
        "app:\n  sdkappid: {SDKAPPID}\n  identifier: {IDENTIFIER}\n  endpoint: {}\n  usersig_ttl: 1h\n\
         polling:\n  interval: 2s\n  rate_limit: 50\n  seat_usage: true\n  watch:\n    enabled: true\n\
         rooms:\n{rooms_yaml}\
         callbacks:\n  listen_address: 127.0.0.1:{callbacks_port}\n",
        sim.base_url()
    );
    let exporter = Exporter::start_yaml(&yaml, &[]);
    exporter.wait_ready(Duration::from_secs(20)).await;

    let callbacks = ([127, 0, 0, 1], callbacks_port).into();
    let accepted = post_callback(callbacks, ENTER, &members_body(&rooms[0], 3, now_ms()), "").await;
    assert_eq!(accepted.0, 200, "member callback accepted: {}", accepted.1);
    let refused = reqwest::get(format!("http://127.0.0.1:{callbacks_port}/callback"))
        .await
        .expect("receiver answers");
    assert_eq!(refused.status().as_u16(), 405, "a GET callback is refused");

    let (status, probe) = exporter.get(&format!("/probe?room_id={}", rooms[0])).await;
    assert_eq!(status, 200, "/probe answers: {probe}");

    // The error counter needs a faulted call, which may take a pass or two.
    let doc = documented();
    let deadline = Instant::now() + Duration::from_secs(20);
    let problems = loop {
        let mut seen = exposed(&exporter.metrics().await);
        seen.extend(exposed(&probe));
        let problems = differences(&doc, &seen);
        if problems.is_empty() || Instant::now() > deadline {
            break problems;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert!(
        problems.is_empty(),
        "docs/metrics.md and the exporter disagree:\n{}",
        problems.join("\n")
    );
    let text = exporter.metrics().await;
    let counted = |series: &str| common::value(&text, series);
    assert_eq!(
        counted(&format!("roomengine_callbacks_total{{command=\"{ENTER}\"}}")),
        Some(1.0)
    );
    assert_eq!(
        counted("roomengine_callbacks_rejected_total{reason=\"method\"}"),
        Some(1.0)
    );
}

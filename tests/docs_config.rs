//! docs/configuration.md against the parser: the doc's key table lists exactly
//! the keys the parser accepts (enumerated from the parser's own "unknown
//! field" errors, level by level), its defaults are the parser's, and its
//! full example is a valid configuration that names every key.

use std::collections::BTreeSet;
use std::path::Path;

use roomengine_exporter::config::{self, Config, ConfigErrors, SecretSource};
use serde_yaml::{Mapping, Value};

const DOC: &str = include_str!("../docs/configuration.md");

/// A key no section has, to make the parser list the keys it expects.
const UNKNOWN: &str = "zz_not_a_key";

/// Every variable is set and every file holds one room ID, so only the
/// shape of a configuration decides whether it parses.
struct AnySecret;

impl SecretSource for AnySecret {
    fn env(&self, _name: &str) -> Option<String> {
        Some("value".to_owned())
    }
    fn read_file(&self, _path: &Path) -> std::io::Result<String> {
        Ok("room-from-file\n".to_owned())
    }
}

fn parse(text: &str) -> Result<Config, ConfigErrors> {
    config::parse(text, &AnySecret)
}

/// `{a: {b: {zz_not_a_key: 1}}}` for the path `a.b`.
fn unknown_key_under(path: &[String]) -> String {
    let mut value = Value::Mapping(Mapping::from_iter([(UNKNOWN.into(), 1.into())]));
    for key in path.iter().rev() {
        value = Value::Mapping(Mapping::from_iter([(key.as_str().into(), value)]));
    }
    serde_yaml::to_string(&value).expect("a mapping serialises")
}

/// The keys the parser expects at `path`, when `path` is a section (a
/// mapping whose unknown keys are refused); `None` for a leaf key.
fn expected_keys(path: &[String]) -> Option<Vec<String>> {
    let errors = parse(&unknown_key_under(path)).err()?.0;
    let marker = format!("unknown field `{UNKNOWN}`, expected");
    let message = errors.iter().find_map(|e| e.split_once(&marker))?.1;
    let listed = message.split(" at line").next().unwrap_or(message);
    Some(listed.split('`').skip(1).step_by(2).map(str::to_owned).collect())
}

/// Every leaf key the parser accepts, as a dotted path.
fn accepted_keys(path: Vec<String>, into: &mut BTreeSet<String>) {
    match expected_keys(&path) {
        Some(keys) => {
            assert!(!keys.is_empty(), "section {path:?} lists no keys");
            for key in keys {
                let mut child = path.clone();
                child.push(key);
                accepted_keys(child, into);
            }
        }
        None => {
            into.insert(path.join("."));
        }
    }
}

/// The rows of the `## Keys` table: (key, default).
fn documented_rows() -> Vec<(String, String)> {
    let section = DOC
        .split("\n## ")
        .find(|s| s.starts_with("Keys\n"))
        .expect("docs/configuration.md has a ## Keys section");
    section
        .lines()
        .filter(|l| l.starts_with("| `"))
        .map(|l| {
            let cells: Vec<&str> = l.split(" | ").collect();
            let key = cells[0].trim_start_matches("| ").trim_matches('`').to_owned();
            (key, cells[2].to_owned())
        })
        .collect()
}

fn documented_keys() -> BTreeSet<String> {
    documented_rows().into_iter().map(|(key, _)| key).collect()
}

#[test]
fn the_doc_lists_exactly_the_keys_the_parser_accepts() {
    let mut accepted = BTreeSet::new();
    accepted_keys(Vec::new(), &mut accepted);
    // The walk itself must work, or an empty set would match an empty table.
    assert!(accepted.contains("polling.watch.max_share"), "{accepted:?}");
    assert!(accepted.contains("rooms_file"), "{accepted:?}");
    let documented = documented_keys();
    let undocumented: Vec<_> = accepted.difference(&documented).collect();
    let rejected: Vec<_> = documented.difference(&accepted).collect();
    assert!(
        undocumented.is_empty() && rejected.is_empty(),
        "accepted by the parser but not in docs/configuration.md: {undocumented:?}; \
         in docs/configuration.md but rejected by the parser: {rejected:?}"
    );
}

/// Sets `key` (dotted) to `value` inside `doc`, creating sections on the way.
fn set(doc: &mut Value, key: &str, value: Value) {
    let mut at = doc;
    let parts: Vec<&str> = key.split('.').collect();
    for part in &parts[..parts.len() - 1] {
        let map = at.as_mapping_mut().expect("a section is a mapping");
        at = map
            .entry((*part).into())
            .or_insert_with(|| Value::Mapping(Mapping::new()));
    }
    let map = at.as_mapping_mut().expect("a section is a mapping");
    map.insert(parts[parts.len() - 1].into(), value);
}

#[test]
fn each_documented_default_is_the_parsers() {
    // The required keys only; the receiver on, so its keys have their defaults too.
    let base = "app:\n  sdkappid: 1400000000\n  identifier: administrator\n  region: singapore\n\
                callbacks:\n  listen_address: 127.0.0.1:39182\n";
    let base_config = format!("{:?}", parse(base).expect("the base is valid"));
    let ha_base = "app:\n  sdkappid: 1400000000\n  identifier: administrator\n  region: singapore\n\
                   callbacks:\n  listen_address: 127.0.0.1:39182\n  redis_url: redis://127.0.0.1:6379/0\n";
    let ha_config = format!("{:?}", parse(ha_base).expect("the HA base is valid"));
    let mut checked = 0;
    for (key, default) in documented_rows() {
        // Only a default that is one literal (`30s`, `true`), not "required" or "absent: …".
        let Some(literal) = default
            .strip_prefix('`')
            .and_then(|d| d.split_once('`'))
            .map(|(literal, _)| literal)
        else {
            continue;
        };
        // `ha.*` only goes with Redis.
        let base = if key.starts_with("ha.") { ha_base } else { base };
        let base_config = if key.starts_with("ha.") {
            &ha_config
        } else {
            &base_config
        };
        let mut doc: Value = serde_yaml::from_str(base).expect("the base is YAML");
        let value: Value = serde_yaml::from_str(literal).expect("a default is a YAML scalar");
        set(&mut doc, &key, value);
        let text = serde_yaml::to_string(&doc).expect("serialises");
        let with_default = parse(&text).unwrap_or_else(|e| panic!("{key}: {literal} is refused: {e}"));
        assert_eq!(
            &format!("{with_default:?}"),
            base_config,
            "{key}: setting the documented default {literal} changes the configuration"
        );
        checked += 1;
    }
    assert!(checked >= 15, "only {checked} defaults were checked");
}

#[test]
fn the_full_example_is_valid_and_names_every_key() {
    let example = DOC
        .split("## A full example")
        .nth(1)
        .and_then(|s| s.split("```yaml\n").nth(1))
        .and_then(|s| s.split("```").next())
        .expect("docs/configuration.md has a yaml example under ## A full example");
    let c = parse(example).unwrap_or_else(|e| panic!("the example is invalid: {e}"));
    assert_eq!(c.rooms, vec!["room-test", "room-from-file"]);
    // Keys that exclude one another appear commented out; each key's own line is there.
    for key in documented_keys() {
        let last = key.rsplit('.').next().unwrap_or(&key);
        assert!(
            example.lines().any(|l| l
                .trim_start()
                .trim_start_matches("# ")
                .starts_with(&format!("{last}:"))),
            "the example does not show {key}"
        );
    }
}

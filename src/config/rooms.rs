//! The configured rooms: the top-level `rooms:` list and `rooms_file` (one
//! room ID a line), read together in order, each ID checked by the room's own
//! rule and every duplicate named with both places.

use std::collections::HashMap;
use std::path::Path;

use super::secrets::SecretSource;
use crate::room::validate_room_id;

/// The rooms of `rooms:` followed by those of `rooms_file`; the list may be
/// empty only when callbacks can discover rooms (`may_be_empty`).
pub(super) fn validate(
    listed: Option<Vec<String>>,
    file: Option<String>,
    base_dir: &Path,
    secrets: &dyn SecretSource,
    may_be_empty: bool,
    errors: &mut Vec<String>,
) -> Vec<String> {
    // (room, where it was listed) in configuration order.
    let mut entries: Vec<(String, String)> = listed
        .unwrap_or_default()
        .into_iter()
        .enumerate()
        .map(|(i, room)| (room, format!("rooms[{i}]")))
        .collect();
    let mut file_unreadable = false;
    if let Some(file) = &file {
        let path = base_dir.join(file);
        match secrets.read_file(&path) {
            Ok(text) => entries.extend(rooms_file_entries(&text, &path.display().to_string())),
            Err(e) => {
                errors.push(format!("rooms_file: cannot read {}: {e}", path.display()));
                file_unreadable = true;
            }
        }
    }
    // An unreadable file already explains the empty list.
    if entries.is_empty() && !may_be_empty && !file_unreadable {
        errors.push(if file.is_some() {
            "rooms: neither rooms nor rooms_file lists a room (name at least one room ID, or turn on callbacks.listen_address to discover rooms)".to_owned()
        } else {
            "rooms: the list is empty (name at least one room ID, or turn on callbacks.listen_address to discover rooms)".to_owned()
        });
    }
    let mut first_seen: HashMap<&str, &str> = HashMap::new();
    for (room, place) in &entries {
        if let Err(problem) = validate_room_id(room) {
            errors.push(format!("{place}: {problem}"));
        } else if let Some(first) = first_seen.insert(room, place) {
            first_seen.insert(room, first);
            errors.push(format!("{place}: {room:?} is already listed at {first}"));
        }
    }
    entries.into_iter().map(|(room, _)| room).collect()
}

/// One room ID a line, trimmed; blank lines and lines starting with `#` are
/// skipped (only whole-line comments: a room ID may itself contain `#`).
/// Each entry carries its place for error messages.
fn rooms_file_entries(text: &str, path: &str) -> Vec<(String, String)> {
    text.lines()
        .enumerate()
        .filter_map(|(i, line)| {
            let room = line.trim();
            (!room.is_empty() && !room.starts_with('#'))
                .then(|| (room.to_owned(), format!("rooms_file {path} line {}", i + 1)))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse_in;
    use crate::config::testing::{errors_of, secrets, with};

    #[test]
    fn rooms_empty_long_duplicate() {
        assert_eq!(
            errors_of(&with("- room-test", "  []").replace("rooms:\n  []", "rooms: []")),
            vec!["rooms: the list is empty (name at least one room ID, or turn on callbacks.listen_address to discover rooms)"]
        );
        let long = "r".repeat(49);
        assert_eq!(
            errors_of(&with(
                "- room-test",
                &format!("  - room-test\n  - ''\n  - {long}\n  - room-test")
            )),
            vec![
                "rooms[1]: room ID is empty".to_owned(),
                format!("rooms[2]: room ID \"{long}\" is 49 bytes, longer than the limit of 48"),
                "rooms[3]: \"room-test\" is already listed at rooms[0]".to_owned(),
            ]
        );
    }

    #[test]
    fn rooms_file_beside_and_instead_of_rooms() {
        let mut s = secrets();
        s.files.insert(
            "/etc/re/rooms.txt".to_owned(),
            "# generated\nroom-a\n\n  room-b  \n#room-c\nroom-#1\n".to_owned(),
        );
        let beside = with("- room-test", "  - room-test\nrooms_file: rooms.txt");
        let c = parse_in(&beside, Path::new("/etc/re"), &s).expect("valid");
        assert_eq!(c.rooms, vec!["room-test", "room-a", "room-b", "room-#1"]);

        let instead = with("rooms:", "rooms_file: /etc/re/rooms.txt").replace("\n  - room-test", "");
        let c = parse_in(&instead, Path::new("/elsewhere"), &s).expect("valid");
        assert_eq!(c.rooms, vec!["room-a", "room-b", "room-#1"]);
    }

    #[test]
    fn rooms_file_missing_empty_and_duplicates() {
        let mut s = secrets();
        let text = with("- room-test", "  - room-test\nrooms_file: rooms.txt");
        let errors = parse_in(&text, Path::new("/etc/re"), &s).unwrap_err().0;
        assert_eq!(
            errors,
            vec!["rooms_file: cannot read /etc/re/rooms.txt: No such file or directory (os error 2)"]
        );
        s.files.insert(
            "/etc/re/rooms.txt".to_owned(),
            "room-x\nroom-test\nroom-x\n".to_owned(),
        );
        assert_eq!(
            parse_in(&text, Path::new("/etc/re"), &s).unwrap_err().0,
            vec![
                "rooms_file /etc/re/rooms.txt line 2: \"room-test\" is already listed at rooms[0]",
                "rooms_file /etc/re/rooms.txt line 3: \"room-x\" is already listed at rooms_file /etc/re/rooms.txt line 1",
            ]
        );
        s.files
            .insert("/etc/re/rooms.txt".to_owned(), "# nothing yet\n".to_owned());
        let only_file = with("rooms:", "rooms_file: rooms.txt").replace("\n  - room-test", "");
        assert_eq!(
            parse_in(&only_file, Path::new("/etc/re"), &s).unwrap_err().0,
            vec!["rooms: neither rooms nor rooms_file lists a room (name at least one room ID, or turn on callbacks.listen_address to discover rooms)"]
        );
    }
}

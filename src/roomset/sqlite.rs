//! The room set in an SQLite file (`callbacks.state_file`): one row per room
//! holding what callbacks said of it, as JSON. WAL with `synchronous=FULL`,
//! so a committed batch survives `kill -9` and power loss alike; the file is
//! locked exclusively, so two exporters can never share it.

use std::path::{Path, PathBuf};

use rusqlite::{params, Connection, OpenFlags};

use super::{Record, StateBackend};

/// The schema this build writes; a file with a higher one is refused.
const SCHEMA_VERSION: i64 = 1;

pub struct SqliteState {
    path: PathBuf,
    db: Connection,
}

impl SqliteState {
    /// Opens (or creates) the file; an unreadable file, another schema or
    /// another process holding it is an error naming the file, never replaced.
    pub fn open(path: &Path) -> Result<SqliteState, String> {
        let named = |e: &dyn std::fmt::Display| format!("callbacks.state_file {}: {e}", path.display());
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            if !dir.is_dir() {
                return Err(named(&format_args!("directory {} does not exist", dir.display())));
            }
        }
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE;
        let db = Connection::open_with_flags(path, flags).map_err(|e| named(&e))?;
        let setup = || -> rusqlite::Result<i64> {
            // Exclusive locking: a second exporter on the same file fails here.
            db.pragma_update(None, "locking_mode", "EXCLUSIVE")?;
            db.pragma_update(None, "journal_mode", "WAL")?;
            db.pragma_update(None, "synchronous", "FULL")?;
            // Checkpoints (WAL pages copied into the file, two fsyncs) every
            // 8 MB of WAL rather than 4 MB: a flood of creates rewrites the
            // same leaf pages, and each checkpoint stalls the writer's answers.
            db.pragma_update(None, "wal_autocheckpoint", 2000)?;
            db.query_row("PRAGMA user_version", [], |row| row.get(0))
        };
        let version = setup().map_err(|e| {
            named(&format_args!(
                "cannot read it as a room set ({e}); it was left untouched: move it away to start with an empty room set"
            ))
        })?;
        if version > SCHEMA_VERSION {
            return Err(named(&format_args!(
                "written by a newer roomengine-exporter (schema {version}; this one reads up to {SCHEMA_VERSION}); it was left untouched"
            )));
        }
        if version < SCHEMA_VERSION {
            db.execute_batch(
                "BEGIN;
                 CREATE TABLE IF NOT EXISTS rooms (
                     room_id TEXT PRIMARY KEY NOT NULL,
                     record TEXT NOT NULL
                 ) WITHOUT ROWID;
                 PRAGMA user_version = 1;
                 COMMIT;",
            )
            .map_err(|e| named(&format_args!("cannot create the rooms table: {e}")))?;
        }
        Ok(SqliteState {
            path: path.to_owned(),
            db,
        })
    }
}

impl StateBackend for SqliteState {
    fn load(&mut self) -> Result<Vec<(String, Record)>, String> {
        let named = |e: &dyn std::fmt::Display| format!("callbacks.state_file {}: {e}", self.path.display());
        let mut query = self
            .db
            .prepare("SELECT room_id, record FROM rooms")
            .map_err(|e| named(&e))?;
        let rows = query
            .query_map([], |row| Ok((row.get::<_, String>(0)?, row.get::<_, String>(1)?)))
            .map_err(|e| named(&e))?;
        let mut rooms = Vec::new();
        for row in rows {
            let (room, text) = row.map_err(|e| named(&e))?;
            let record = serde_json::from_str(&text)
                .map_err(|e| named(&format_args!("room {room:?} has an unreadable record: {e}")))?;
            rooms.push((room, record));
        }
        Ok(rooms)
    }

    fn commit(&mut self, changes: &[(&str, Option<&Record>)]) -> Result<Vec<(String, Record)>, String> {
        let tx = self.db.transaction().map_err(|e| e.to_string())?;
        {
            let mut upsert = tx
                .prepare_cached(
                    "INSERT INTO rooms (room_id, record) VALUES (?1, ?2)
                     ON CONFLICT (room_id) DO UPDATE SET record = excluded.record",
                )
                .map_err(|e| e.to_string())?;
            let mut delete = tx
                .prepare_cached("DELETE FROM rooms WHERE room_id = ?1")
                .map_err(|e| e.to_string())?;
            for (room, record) in changes {
                match record {
                    Some(record) => {
                        let text = serde_json::to_string(record).map_err(|e| e.to_string())?;
                        upsert.execute(params![room, text]).map_err(|e| e.to_string())?;
                    }
                    None => {
                        delete.execute(params![room]).map_err(|e| e.to_string())?;
                    }
                }
            }
        }
        // The only writer: what it kept is what it was given.
        tx.commit().map(|()| Vec::new()).map_err(|e| e.to_string())
    }

    fn describe(&self) -> String {
        format!("SQLite file {}", self.path.display())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_survive_reopening_and_deletes_stick() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("state.db");
        let mut record = Record {
            last_callback_ms: 1_700_000_000_123,
            ..Record::default()
        };
        record.facts.info.member_count = 12;
        {
            let mut state = SqliteState::open(&path).expect("opens");
            state
                .commit(&[("a", Some(&record)), ("b", Some(&record))])
                .expect("commits");
            state.commit(&[("b", None)]).expect("deletes");
        }
        let mut state = SqliteState::open(&path).expect("reopens");
        assert_eq!(state.load().expect("loads"), vec![("a".to_owned(), record)]);
    }

    #[test]
    fn a_file_that_is_not_a_room_set_is_refused_and_left_alone() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("state.db");
        std::fs::write(&path, "this is not SQLite, it is someone's notes\n".repeat(100)).expect("writes");
        let error = SqliteState::open(&path).err().expect("refused");
        assert!(
            error.starts_with(&format!(
                "callbacks.state_file {}: cannot read it as a room set (file is not a database)",
                path.display()
            )),
            "{error}"
        );
        assert!(std::fs::read_to_string(&path)
            .expect("still there")
            .starts_with("this is not SQLite"));
    }

    #[test]
    fn a_newer_schema_is_refused() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("state.db");
        Connection::open(&path)
            .and_then(|db| db.pragma_update(None, "user_version", 7))
            .expect("writes a newer file");
        let error = SqliteState::open(&path).err().expect("refused");
        assert_eq!(
            error,
            format!(
                "callbacks.state_file {}: written by a newer roomengine-exporter (schema 7; this one reads up to 1); it was left untouched",
                path.display()
            )
        );
    }

    #[test]
    fn a_second_process_cannot_share_the_file() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("state.db");
        let mut first = SqliteState::open(&path).expect("opens");
        first.commit(&[("a", Some(&Record::default()))]).expect("commits");
        let error = SqliteState::open(&path)
            .err()
            .expect("refused while the first holds it");
        assert!(error.contains("database is locked"), "{error}");
    }
}

//! Test helpers shared by every section's tests: secrets without the process
//! env or files, a minimal valid configuration, and line-replacing edits of it.

use std::collections::HashMap;
use std::path::Path;

use super::{parse, ConfigErrors, SecretSource};

pub struct FakeSecrets {
    pub env: HashMap<String, String>,
    pub files: HashMap<String, String>,
}

impl SecretSource for FakeSecrets {
    fn env(&self, name: &str) -> Option<String> {
        self.env.get(name).cloned()
    }
    fn read_file(&self, path: &Path) -> std::io::Result<String> {
        self.files
            .get(path.to_str().unwrap_or_default())
            .cloned()
            .ok_or_else(|| {
                std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    "No such file or directory (os error 2)",
                )
            })
    }
}

/// The SecretKey in the default variable, and `/run/key` holding another.
pub fn secrets() -> FakeSecrets {
    FakeSecrets {
        env: HashMap::from([("ROOMENGINE_SECRET_KEY".to_owned(), "k3y".to_owned())]),
        files: HashMap::from([("/run/key".to_owned(), "  filek3y\n".to_owned())]),
    }
}

pub const GOOD: &str = "app:\n  sdkappid: 1400000000\n  identifier: administrator\n  region: singapore\npolling:\n  interval: 30s\n  rate_limit: 100\n  timeout: 5s\nrooms:\n  - room-test\n";

/// GOOD with one line replaced (by its starting text) or removed.
pub fn with(from: &str, to: &str) -> String {
    let out: Vec<String> = GOOD
        .lines()
        .filter_map(|l| {
            if l.trim_start().starts_with(from) {
                (!to.is_empty()).then(|| to.to_owned())
            } else {
                Some(l.to_owned())
            }
        })
        .collect();
    out.join("\n")
}

pub fn errors_of(text: &str) -> Vec<String> {
    match parse(text, &secrets()) {
        Ok(c) => panic!("expected errors, got {c:?}"),
        Err(ConfigErrors(e)) => e,
    }
}

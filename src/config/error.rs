//! How a configuration's problems are reported: [`ConfigErrors`] (every
//! problem, each naming its key), serde_yaml's message kept whole, and the
//! duration parser every section shares so their errors read alike.

use std::fmt;
use std::time::Duration;

/// Every problem found in a configuration, each naming its key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<String>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            f.write_str(e)?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// Parses a humantime duration, `default` when the key is absent; `None`
/// (with the error recorded) when it does not parse.
pub(super) fn duration(
    key: &str,
    value: Option<String>,
    default: &str,
    errors: &mut Vec<String>,
) -> Option<Duration> {
    let text = value.unwrap_or_else(|| default.to_owned());
    match humantime::parse_duration(&text) {
        Ok(d) => Some(d),
        Err(e) => {
            errors.push(format!("{key}: {text:?} is not a duration like 30s or 5m: {e}"));
            None
        }
    }
}

/// serde_yaml's message already names the key path and position
/// (`polling.rate_limit: invalid type ... at line 9 column 15`); keep it whole.
pub(super) fn yaml_error(e: &serde_yaml::Error) -> String {
    let msg = e.to_string();
    if msg.contains("EOF while parsing") || msg.is_empty() {
        "the file is empty or not a YAML mapping".to_owned()
    } else {
        msg
    }
}

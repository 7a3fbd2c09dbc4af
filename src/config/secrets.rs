//! Secrets: [`SecretKey`], whose Debug never shows the value, and loading one
//! from `{key}_env` (a variable's name) or `{key}_file` through a
//! [`SecretSource`], so tests need neither the process env nor files.

use std::fmt;
use std::path::Path;

/// The variable `app.secret_key_env` names when neither source is set.
pub const DEFAULT_SECRET_ENV: &str = "ROOMENGINE_SECRET_KEY";

/// The console SecretKey. Its Debug and Display never show the value, so it
/// cannot leak through a log line or an error by accident.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretKey(String);

impl SecretKey {
    pub fn new(value: String) -> Self {
        SecretKey(value)
    }
    /// The key itself: only for HMAC computation.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretKey(<redacted>)")
    }
}

/// Where the SecretKey and the rooms_file are read from; injectable so tests
/// need no process env or files.
pub trait SecretSource {
    fn env(&self, name: &str) -> Option<String>;
    fn read_file(&self, path: &Path) -> std::io::Result<String>;
}

/// The real process environment and file system.
pub struct ProcessSecrets;

impl SecretSource for ProcessSecrets {
    fn env(&self, name: &str) -> Option<String> {
        std::env::var(name).ok()
    }
    fn read_file(&self, path: &Path) -> std::io::Result<String> {
        std::fs::read_to_string(path)
    }
}

/// One secret's two possible sources as the YAML gave them, and how errors name it.
pub(super) struct SecretKeys<'a> {
    /// The keys' common prefix: `{key}_env` and `{key}_file`.
    pub key: &'a str,
    /// What the secret is, in error texts ("the SecretKey").
    pub what: &'a str,
    pub env: Option<String>,
    pub file: Option<String>,
    /// The variable read when neither key is set; `None`: there is no secret then.
    pub default_env: Option<&'a str>,
}

impl SecretKeys<'_> {
    /// The secret from exactly one of its sources; errors never show its value.
    pub(super) fn load(self, secrets: &dyn SecretSource, errors: &mut Vec<String>) -> Option<SecretKey> {
        let (key, what) = (self.key, self.what);
        let env = match (self.env, &self.file) {
            (None, None) => Some(self.default_env?.to_owned()),
            (env, _) => env,
        };
        let (secret, source) = match (env, self.file) {
            (Some(_), Some(_)) => {
                errors.push(format!("{key}_env, {key}_file: set only one source for {what}"));
                return None;
            }
            (None, Some(path)) => match secrets.read_file(Path::new(&path)) {
                Ok(text) => (text.trim().to_owned(), format!("{key}_file: {path}")),
                Err(e) => {
                    errors.push(format!("{key}_file: cannot read {path}: {e}"));
                    return None;
                }
            },
            (env, None) => {
                let name = env.unwrap_or_default();
                if name.is_empty() {
                    errors.push(format!("{key}_env: empty variable name"));
                    return None;
                }
                match secrets.env(&name) {
                    Some(v) => (
                        v.trim().to_owned(),
                        format!("{key}_env: environment variable {name}"),
                    ),
                    None => {
                        errors.push(format!(
                            "{key}_env: environment variable {name} is not set (it must hold {what})"
                        ));
                        return None;
                    }
                }
            }
        };
        if secret.is_empty() {
            errors.push(format!("{source} is empty (it must hold {what})"));
            return None;
        }
        Some(SecretKey::new(secret))
    }
}

#[cfg(test)]
mod tests {
    use crate::config::parse;
    use crate::config::testing::{errors_of, secrets, with, GOOD};

    #[test]
    fn secret_env_unset_and_empty() {
        assert_eq!(
            errors_of(&with(
                "identifier",
                "  identifier: administrator\n  secret_key_env: NOPE"
            )),
            vec!["app.secret_key_env: environment variable NOPE is not set (it must hold the SecretKey)"]
        );
        let mut s = secrets();
        s.env.insert("ROOMENGINE_SECRET_KEY".into(), "  ".into());
        assert_eq!(
            parse(GOOD, &s).unwrap_err().0,
            vec!["app.secret_key_env: environment variable ROOMENGINE_SECRET_KEY is empty (it must hold the SecretKey)"]
        );
    }

    #[test]
    fn secret_from_file_is_trimmed_and_missing_file_named() {
        let c = parse(
            &with(
                "identifier",
                "  identifier: administrator\n  secret_key_file: /run/key",
            ),
            &secrets(),
        )
        .expect("valid");
        assert_eq!(c.secret_key.expose(), "filek3y");
        assert_eq!(
            errors_of(&with(
                "identifier",
                "  identifier: administrator\n  secret_key_file: /nope"
            )),
            vec!["app.secret_key_file: cannot read /nope: No such file or directory (os error 2)"]
        );
    }

    #[test]
    fn two_secret_sources() {
        assert_eq!(
            errors_of(&with(
                "identifier",
                "  identifier: administrator\n  secret_key_env: ROOMENGINE_SECRET_KEY\n  secret_key_file: /run/key"
            )),
            vec!["app.secret_key_env, app.secret_key_file: set only one source for the SecretKey"]
        );
    }
}

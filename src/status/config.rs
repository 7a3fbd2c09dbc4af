//! `/config`: the configuration in use as YAML, in the file's layout, with
//! every secret (the SecretKey, the callback token, the Redis password)
//! shown as `<secret>` and nothing else derived from it.

use serde_yaml::{Mapping, Value};

use crate::config::{Config, SecretKey};

/// What a secret is shown as.
pub const SECRET: &str = "<secret>";

fn map<const N: usize>(entries: [(&str, Value); N]) -> Value {
    let mut m = Mapping::new();
    for (key, value) in entries {
        m.insert(Value::from(key), value);
    }
    Value::Mapping(m)
}

fn duration(d: std::time::Duration) -> Value {
    Value::from(humantime::format_duration(d).to_string())
}

fn secret(s: Option<&SecretKey>) -> Value {
    s.map_or(Value::Null, |_| Value::from(SECRET))
}

/// The configuration as YAML; secrets are `<secret>`, unset ones `null`.
pub fn render(config: &Config) -> String {
    let watch = &config.watch;
    let callbacks = config.callbacks.as_ref().map_or(Value::Null, |c| {
        map([
            ("listen_address", Value::from(c.listen_address.as_str())),
            ("path", Value::from(c.path.as_str())),
            (
                "state_file",
                c.state_file
                    .as_ref()
                    .map_or(Value::Null, |p| Value::from(p.display().to_string())),
            ),
            (
                "redis_url",
                c.redis
                    .as_ref()
                    .map_or(Value::Null, |r| Value::from(r.url.as_str())),
            ),
            (
                "redis_password",
                secret(c.redis.as_ref().and_then(|r| r.password.as_ref())),
            ),
            ("forget_after", duration(c.forget_after)),
            ("token", secret(c.token.as_ref())),
            ("max_connections", Value::from(c.max_connections as u64)),
        ])
    });
    let doc = map([
        (
            "app",
            map([
                ("sdkappid", Value::from(config.sdkappid)),
                ("identifier", Value::from(config.identifier.as_str())),
                ("secret_key", secret(Some(&config.secret_key))),
                ("endpoint", Value::from(config.endpoint.as_str())),
                ("usersig_ttl", duration(config.usersig_ttl)),
            ]),
        ),
        (
            "polling",
            map([
                ("interval", duration(config.interval)),
                ("rate_limit", Value::from(config.rate_limit)),
                ("timeout", duration(config.timeout)),
                ("seat_usage", Value::from(config.seat_usage)),
                (
                    "watch",
                    map([
                        ("enabled", Value::from(watch.enabled)),
                        ("threshold", Value::from(watch.threshold)),
                        ("interval", duration(watch.interval)),
                        ("max_share", Value::from(watch.max_share)),
                    ]),
                ),
            ]),
        ),
        ("probe", map([("enabled", Value::from(config.probe_enabled))])),
        (
            "rooms",
            Value::Sequence(config.rooms.iter().map(|r| Value::from(r.as_str())).collect()),
        ),
        ("callbacks", callbacks),
    ]);
    serde_yaml::to_string(&doc).unwrap_or_else(|e| format!("# cannot render the configuration: {e}\n"))
}

/// Every secret is `s3cr3t-value-1234567890` (the status tests' configurations).
#[cfg(test)]
pub(crate) struct Fixed;

#[cfg(test)]
impl crate::config::SecretSource for Fixed {
    fn env(&self, _: &str) -> Option<String> {
        Some("s3cr3t-value-1234567890".into())
    }
    fn read_file(&self, _: &std::path::Path) -> std::io::Result<String> {
        Ok("s3cr3t-value-1234567890".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse;

    #[test]
    fn every_secret_is_shown_as_secret_and_the_rest_as_loaded() {
        let yaml = "app:\n  sdkappid: 1400000001\n  identifier: admin\n  endpoint: http://127.0.0.1:9\n\
                    polling:\n  interval: 30s\nrooms: [a, b]\n\
                    callbacks:\n  listen_address: 127.0.0.1:0\n  token_env: T\n  redis_url: redis://127.0.0.1:6379/0\n  redis_password_env: P\n";
        let config = match parse(yaml, &Fixed) {
            Ok(c) => c,
            Err(e) => panic!("test config: {e}"),
        };
        let text = render(&config);
        assert!(!text.contains("s3cr3t"), "{text}");
        assert_eq!(text.matches(SECRET).count(), 3, "{text}");
        assert!(text.contains("sdkappid: 1400000001"), "{text}");
        assert!(text.contains("interval: 30s"), "{text}");
        assert!(
            text.contains("- a\n  - b\n") || text.contains("- a\n- b\n"),
            "{text}"
        );
    }
}

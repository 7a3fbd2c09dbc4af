//! The `app:` section: who the exporter calls as (sdkappid, identifier, the
//! SecretKey), where (a region's API domain or an explicit endpoint), and how
//! long each UserSig it signs lives.

use std::time::Duration;

use serde::Deserialize;
use url::Url;

use super::error::duration;
use super::secrets::{SecretKey, SecretKeys, SecretSource, DEFAULT_SECRET_ENV};

/// Tencent data centres and their REST API domains.
pub(super) const REGIONS: &[(&str, &str)] = &[
    ("china", "https://console.tim.qq.com"),
    ("singapore", "https://adminapisgp.im.qcloud.com"),
    ("seoul", "https://adminapikr.im.qcloud.com"),
    ("frankfurt", "https://adminapiger.im.qcloud.com"),
    ("mumbai", "https://adminapiind.im.qcloud.com"),
    ("silicon-valley", "https://adminapiusa.im.qcloud.com"),
    ("jakarta", "https://adminapiidn.im.qcloud.com"),
];

/// The one error when the section is absent: nothing else can be checked without it.
pub(super) const MISSING: &str = "app: missing (sdkappid, identifier and the SecretKey are required)";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawApp {
    sdkappid: Option<i64>,
    identifier: Option<String>,
    secret_key_env: Option<String>,
    secret_key_file: Option<String>,
    region: Option<String>,
    endpoint: Option<String>,
    usersig_ttl: Option<String>,
}

/// The validated section; its values are placeholders where `errors` got a problem.
pub(super) struct App {
    pub sdkappid: u64,
    pub identifier: String,
    pub secret_key: SecretKey,
    pub endpoint: String,
    pub usersig_ttl: Duration,
}

pub(super) fn validate(raw: RawApp, secrets: &dyn SecretSource, errors: &mut Vec<String>) -> App {
    let sdkappid = match raw.sdkappid {
        None => {
            errors.push("app.sdkappid: missing".to_owned());
            0
        }
        Some(n) if n <= 0 => {
            errors.push(format!("app.sdkappid: {n} is not a positive SDKAppID"));
            0
        }
        Some(n) => n as u64,
    };

    let identifier = raw.identifier.unwrap_or_default();
    if identifier.trim().is_empty() {
        errors.push("app.identifier: missing or empty (an app administrator account is required)".to_owned());
    }

    // Neither source set means the default variable, so a bare config still finds its key.
    let secret_key = SecretKeys {
        key: "app.secret_key",
        what: "the SecretKey",
        env: raw.secret_key_env,
        file: raw.secret_key_file,
        default_env: Some(DEFAULT_SECRET_ENV),
    }
    .load(secrets, errors);

    let endpoint = match (raw.endpoint, raw.region) {
        (Some(endpoint), _) => endpoint_url(&endpoint, errors),
        (None, Some(region)) => region_domain(&region, errors),
        (None, None) => {
            errors.push("app.region: missing (or set app.endpoint)".to_owned());
            String::new()
        }
    };

    let usersig_ttl = duration("app.usersig_ttl", raw.usersig_ttl, "24h", errors);
    if let Some(short) = usersig_ttl.filter(|d| *d < Duration::from_secs(60)) {
        errors.push(format!(
            "app.usersig_ttl: {} is too short (at least 1m)",
            humantime::format_duration(short)
        ));
    }

    App {
        sdkappid,
        identifier,
        secret_key: secret_key.unwrap_or_else(|| SecretKey::new(String::new())),
        endpoint,
        usersig_ttl: usersig_ttl.unwrap_or_default(),
    }
}

/// `app.endpoint` without its trailing slash; only http(s) with a host.
fn endpoint_url(endpoint: &str, errors: &mut Vec<String>) -> String {
    match Url::parse(endpoint) {
        Ok(url) if (url.scheme() == "http" || url.scheme() == "https") && url.host().is_some() => {
            endpoint.trim_end_matches('/').to_owned()
        }
        Ok(url) => {
            errors.push(format!(
                "app.endpoint: {endpoint:?} must be an http:// or https:// URL with a host (scheme {:?})",
                url.scheme()
            ));
            String::new()
        }
        Err(e) => {
            errors.push(format!("app.endpoint: {endpoint:?} is not a valid URL: {e}"));
            String::new()
        }
    }
}

/// `app.region`'s API domain from [`REGIONS`].
fn region_domain(region: &str, errors: &mut Vec<String>) -> String {
    match REGIONS.iter().find(|(name, _)| *name == region) {
        Some((_, domain)) => (*domain).to_owned(),
        None => {
            let known: Vec<&str> = REGIONS.iter().map(|(n, _)| *n).collect();
            errors.push(format!(
                "app.region: unknown region {region:?} (known: {})",
                known.join(", ")
            ));
            String::new()
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::config::parse;
    use crate::config::testing::{errors_of, secrets, with};

    #[test]
    fn sdkappid_missing_and_not_positive() {
        assert_eq!(errors_of(&with("sdkappid", "")), vec!["app.sdkappid: missing"]);
        assert_eq!(
            errors_of(&with("sdkappid", "  sdkappid: -5")),
            vec!["app.sdkappid: -5 is not a positive SDKAppID"]
        );
    }

    #[test]
    fn identifier_empty() {
        assert_eq!(
            errors_of(&with("identifier", "  identifier: ''")),
            vec!["app.identifier: missing or empty (an app administrator account is required)"]
        );
    }

    #[test]
    fn region_unknown_and_missing() {
        assert_eq!(
            errors_of(&with("region", "  region: mars")),
            vec!["app.region: unknown region \"mars\" (known: china, singapore, seoul, frankfurt, mumbai, silicon-valley, jakarta)"]
        );
        assert_eq!(
            errors_of(&with("region", "")),
            vec!["app.region: missing (or set app.endpoint)"]
        );
    }

    #[test]
    fn endpoint_overrides_region_and_must_be_http() {
        let c = parse(&with("region", "  endpoint: http://127.0.0.1:39181/"), &secrets()).expect("valid");
        assert_eq!(c.endpoint, "http://127.0.0.1:39181");
        assert_eq!(
            errors_of(&with("region", "  endpoint: ftp://example.com")),
            vec!["app.endpoint: \"ftp://example.com\" must be an http:// or https:// URL with a host (scheme \"ftp\")"]
        );
        assert_eq!(
            errors_of(&with("region", "  endpoint: not a url")),
            vec!["app.endpoint: \"not a url\" is not a valid URL: relative URL without a base"]
        );
    }

    #[test]
    fn usersig_ttl_too_short() {
        assert_eq!(
            errors_of(&with("region", "  region: singapore\n  usersig_ttl: 10s")),
            vec!["app.usersig_ttl: 10s is too short (at least 1m)"]
        );
    }
}

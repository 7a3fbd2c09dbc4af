//! What one API call came to, and the class each Tencent ErrorCode belongs to:
//! the poller acts on the class (retry, back off, give up, mark gone), metrics
//! count the code, and auth/config codes carry a hint for the operator.

use std::fmt;

/// The class of a failed call, which decides what the poller does next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// 100004: the room does not exist or was destroyed.
    RoomGone,
    /// Worth retrying after a back-off: 100001, 60008, 70169, 70202, 70500, timeouts, connect errors, HTTP 5xx.
    Retryable,
    /// The API's frequency limit: 60007, 60011, 60018, 60019. Halves the effective rate.
    RateLimited,
    /// Credentials or app configuration are wrong: nothing will work until a human acts.
    Auth,
    /// 100211 on a seat call: the room has no seats.
    NoSeats,
    /// Anything else: the request itself was refused.
    BadRequest,
}

/// A failed call: the label value for `code` and the class.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallError {
    /// The ErrorCode as text, or `timeout`, `connect`, `http_NNN`, `decode`, `body_too_large`.
    pub code: String,
    pub class: ErrorClass,
    /// Human-readable detail, already free of URLs and secrets.
    pub detail: String,
}

impl CallError {
    pub fn from_error_code(code: i64, info: &str) -> CallError {
        CallError {
            code: code.to_string(),
            class: classify(code),
            detail: format!("ErrorCode {code}: {}", info.trim()),
        }
    }

    pub fn transport(code: &str, class: ErrorClass, detail: impl Into<String>) -> CallError {
        CallError {
            code: code.to_owned(),
            class,
            detail: detail.into(),
        }
    }
}

impl fmt::Display for CallError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.detail)
    }
}

impl std::error::Error for CallError {}

pub fn classify(code: i64) -> ErrorClass {
    match code {
        100004 => ErrorClass::RoomGone,
        100211 => ErrorClass::NoSeats,
        100001 | 60008 | 60013 | 60014 | 70169 | 70202 | 70500 => ErrorClass::Retryable,
        60007 | 60011 | 60018 | 60019 => ErrorClass::RateLimited,
        60006 | 60010 | 60016 | 60017 | 60020 | 60021 | 70001..=70020 | 70050 | 70051 | 70052 | 70403 => {
            ErrorClass::Auth
        }
        _ => ErrorClass::BadRequest,
    }
}

/// What an operator should check for an auth/config code; logged once per code.
pub fn auth_hint(code: &str, sdkappid: u64, identifier: &str) -> String {
    match code {
        "60006" => format!("sdkappid {sdkappid} is not valid: check app.sdkappid"),
        "60010" | "70403" => format!("{identifier} is not an app administrator: check app.identifier"),
        "60016" | "60017" => format!("sdkappid {sdkappid} or this request is disabled in the console"),
        "60020" => format!("the plan of sdkappid {sdkappid} has expired: the service is disabled"),
        "60021" => "this host's IP address is not on the app's allow-list".to_owned(),
        "70001" | "70052" => {
            "the UserSig expired: check the host clock (it must be in sync) and app.usersig_ttl".to_owned()
        }
        "70002" | "70003" | "70005" => "the UserSig was rejected as malformed".to_owned(),
        "70009" => format!("the SecretKey does not belong to sdkappid {sdkappid}"),
        "70013" => format!("identifier {identifier} differs from the one in the UserSig"),
        "70014" => format!("sdkappid {sdkappid} differs from the one in the UserSig"),
        "70016" | "70020" => format!(
            "sdkappid {sdkappid} or its key is unknown at this endpoint: check app.region (wrong data centre?)"
        ),
        "70050" => "too many UserSig failures: locked out for a minute".to_owned(),
        "70051" => format!("account {identifier} is blacklisted"),
        _ => format!("authentication or configuration error {code}: check sdkappid, identifier, SecretKey and region"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_of_documented_codes() {
        assert_eq!(classify(100004), ErrorClass::RoomGone);
        for c in [100001, 60008, 70169, 70202, 70500] {
            assert_eq!(classify(c), ErrorClass::Retryable, "{c}");
        }
        for c in [60007, 60011, 60018, 60019] {
            assert_eq!(classify(c), ErrorClass::RateLimited, "{c}");
        }
        for c in [
            60006, 60010, 60016, 60017, 60020, 60021, 70001, 70009, 70020, 70050, 70051, 70052, 70403,
        ] {
            assert_eq!(classify(c), ErrorClass::Auth, "{c}");
        }
        for c in [100002, 100005, 100006, 60003, 70402] {
            assert_eq!(classify(c), ErrorClass::BadRequest, "{c}");
        }
    }

    #[test]
    fn hint_for_wrong_key() {
        assert_eq!(
            auth_hint("70009", 1400000000, "administrator"),
            "the SecretKey does not belong to sdkappid 1400000000"
        );
    }
}

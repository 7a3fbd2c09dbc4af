//! Who may send callbacks: the query must name this exporter's SDKAppID and,
//! when a callback token is set, carry `Sign = hex(sha256(token + RequestTime))`
//! with a `RequestTime` within a minute of now. Checked before the body is read.

use std::borrow::Cow;

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::config::SecretKey;

/// How far `RequestTime` may be from our clock, as Tencent's Live docs ask.
pub const MAX_SKEW_SECS: u64 = 60;

/// Why a request's query was refused: the metric's `reason` and the answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    SdkAppid(String),
    Signature(String),
    RequestTime(String),
}

/// The query parameters the receiver reads (names as Tencent sends them,
/// matched without regard to case); the first of a repeated key counts.
/// Values borrow from the query when they need no percent-decoding.
#[derive(Debug, Default)]
pub struct Query<'a> {
    pub sdkappid: Option<Cow<'a, str>>,
    pub command: Option<Cow<'a, str>>,
    pub sign: Option<Cow<'a, str>>,
    pub request_time: Option<Cow<'a, str>>,
}

impl<'a> Query<'a> {
    pub fn parse(query: &'a str) -> Query<'a> {
        let mut q = Query::default();
        for (key, value) in url::form_urlencoded::parse(query.as_bytes()) {
            let slot = if key.eq_ignore_ascii_case("sdkappid") {
                &mut q.sdkappid
            } else if key.eq_ignore_ascii_case("callbackcommand") {
                &mut q.command
            } else if key.eq_ignore_ascii_case("sign") {
                &mut q.sign
            } else if key.eq_ignore_ascii_case("requesttime") {
                &mut q.request_time
            } else {
                continue;
            };
            if slot.is_none() {
                *slot = Some(value);
            }
        }
        q
    }
}

/// Checks the query against `sdkappid` and (when set) `token`, at `now_secs`.
pub fn check(query: &Query, sdkappid: u64, token: Option<&SecretKey>, now_secs: u64) -> Result<(), Refusal> {
    match query.sdkappid.as_deref().map(str::trim) {
        None => return Err(Refusal::SdkAppid("SdkAppid is missing from the query".into())),
        Some(id) if id.parse::<u64>().ok() != Some(sdkappid) => {
            return Err(Refusal::SdkAppid(format!(
                "SdkAppid {:?} is not this exporter's app",
                shorten(id)
            )))
        }
        Some(_) => {}
    }
    let Some(token) = token else {
        return Ok(());
    };
    let (Some(sign), Some(time)) = (query.sign.as_deref(), query.request_time.as_deref()) else {
        return Err(Refusal::Signature(
            "Sign and RequestTime are required (a callback token is set)".into(),
        ));
    };
    let expected = sign_hex(token.expose(), time);
    let given = sign.trim().as_bytes();
    // Lowercased on the stack: the check allocates nothing.
    let mut lower = [0u8; 64];
    let matches = given.len() == lower.len() && {
        for (l, g) in lower.iter_mut().zip(given) {
            *l = g.to_ascii_lowercase();
        }
        bool::from(expected.ct_eq(&lower))
    };
    if !matches {
        return Err(Refusal::Signature(
            "Sign does not match the callback token".into(),
        ));
    }
    let Ok(sent) = time.trim().parse::<u64>() else {
        return Err(Refusal::RequestTime(format!(
            "RequestTime {:?} is not Unix seconds",
            shorten(time)
        )));
    };
    if sent.abs_diff(now_secs) > MAX_SKEW_SECS {
        return Err(Refusal::RequestTime(format!(
            "RequestTime {sent} is {}s away from this exporter's clock (at most {MAX_SKEW_SECS}s)",
            sent.abs_diff(now_secs)
        )));
    }
    Ok(())
}

/// `Sign` as Tencent computes it: lowercase hex SHA-256 of token + RequestTime.
pub fn sign_of(token: &str, request_time: &str) -> String {
    String::from_utf8_lossy(&sign_hex(token, request_time)).into_owned()
}

/// [`sign_of`] as ASCII bytes, without an allocation.
fn sign_hex(token: &str, request_time: &str) -> [u8; 64] {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let digest = Sha256::new()
        .chain_update(token.as_bytes())
        .chain_update(request_time.as_bytes())
        .finalize();
    let mut hex = [0u8; 64];
    for (pair, byte) in hex.chunks_exact_mut(2).zip(digest.iter()) {
        pair[0] = HEX[usize::from(byte >> 4)];
        pair[1] = HEX[usize::from(byte & 0xf)];
    }
    hex
}

/// A value from the request, cut short for an error message.
fn shorten(value: &str) -> String {
    value.chars().take(32).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(text: &str) -> Query<'_> {
        Query::parse(text)
    }

    #[test]
    fn sign_matches_the_documented_vector() {
        assert_eq!(
            sign_of("xxxxyyyy", "1669872112"),
            "17773bc39a671d7b9aa835458704d2a6db81360a5940292b587d6d760d484061"
        );
    }

    #[test]
    fn sdkappid_sign_and_time_are_checked_in_that_order() {
        let token = SecretKey::new("xxxxyyyy".into());
        let good = "SdkAppid=1400000000&CallbackCommand=x&Sign=17773bc39a671d7b9aa835458704d2a6db81360a5940292b587d6d760d484061&RequestTime=1669872112";
        assert_eq!(
            check(&query(good), 1_400_000_000, Some(&token), 1_669_872_150),
            Ok(())
        );
        assert_eq!(check(&query(good), 1_400_000_000, None, 0), Ok(()));
        assert_eq!(
            check(&query("CallbackCommand=x"), 1_400_000_000, None, 0),
            Err(Refusal::SdkAppid("SdkAppid is missing from the query".into()))
        );
        assert_eq!(
            check(&query(good), 1_400_000_001, Some(&token), 1_669_872_112),
            Err(Refusal::SdkAppid(
                "SdkAppid \"1400000000\" is not this exporter's app".into()
            ))
        );
        assert_eq!(
            check(&query("SdkAppid=1400000000"), 1_400_000_000, Some(&token), 0),
            Err(Refusal::Signature(
                "Sign and RequestTime are required (a callback token is set)".into()
            ))
        );
        let forged = good.replace("Sign=1", "Sign=2");
        assert_eq!(
            check(&query(&forged), 1_400_000_000, Some(&token), 1_669_872_112),
            Err(Refusal::Signature(
                "Sign does not match the callback token".into()
            ))
        );
        assert_eq!(
            check(&query(good), 1_400_000_000, Some(&token), 1_669_872_173),
            Err(Refusal::RequestTime(
                "RequestTime 1669872112 is 61s away from this exporter's clock (at most 60s)".into()
            ))
        );
    }
}

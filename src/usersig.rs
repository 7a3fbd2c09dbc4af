//! TLSSigAPIv2 UserSigs: signing (for the exporter's own calls), decoding and
//! verification (for the simulator and tests), and a [`Signer`] that caches one
//! UserSig and renews it once 80% of its lifetime has passed.

use std::fmt;
use std::io::{Read, Write};
use std::sync::Mutex;
use std::time::Duration;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use flate2::read::ZlibDecoder;
use flate2::write::ZlibEncoder;
use flate2::Compression;
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;

use crate::clock::unix_now;

use crate::config::SecretKey;

/// Largest inflated UserSig we accept: real ones are a few hundred bytes, and a
/// hostile one must not make the verifier allocate without bound.
const MAX_INFLATED_BYTES: u64 = 16 * 1024;

/// The fields a UserSig carries, as decoded from its JSON.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claims {
    pub identifier: String,
    pub sdkappid: u64,
    /// Issue time, Unix seconds.
    pub time: u64,
    /// Lifetime in seconds (not a timestamp).
    pub expire: u64,
    /// `TLS.sig`: standard base64 of the HMAC-SHA256.
    pub sig: String,
}

impl Claims {
    /// Unix second after which the server rejects the UserSig.
    pub fn expires_at(&self) -> u64 {
        self.time.saturating_add(self.expire)
    }

    pub fn is_expired(&self, now_unix: u64) -> bool {
        now_unix > self.expires_at()
    }

    /// Recomputes the HMAC with `key` and compares it in constant time.
    pub fn signature_matches(&self, key: &SecretKey) -> bool {
        let Ok(expected) = STANDARD.decode(self.sig.as_bytes()) else {
            return false;
        };
        let mut mac = new_mac(key);
        mac.update(signed_text(&self.identifier, self.sdkappid, self.time, self.expire).as_bytes());
        mac.verify_slice(&expected).is_ok()
    }
}

/// Why a UserSig could not be decoded or did not verify.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VerifyError {
    /// Not base64url-ish, not zlib, not JSON, or a field missing (Tencent: 70003).
    Malformed(&'static str),
    /// `now > time + expire` (Tencent: 70001).
    Expired { expired_at: u64 },
    /// The sdkappid inside differs from the request's (Tencent: 70014).
    SdkAppIdMismatch,
    /// The identifier inside differs from the request's (Tencent: 70013).
    IdentifierMismatch,
    /// The HMAC was made with another key (Tencent: 70009).
    BadSignature,
}

impl fmt::Display for VerifyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            VerifyError::Malformed(what) => write!(f, "UserSig cannot be decoded: {what}"),
            VerifyError::Expired { expired_at } => write!(f, "UserSig expired at {expired_at}"),
            VerifyError::SdkAppIdMismatch => f.write_str("UserSig belongs to another sdkappid"),
            VerifyError::IdentifierMismatch => f.write_str("UserSig belongs to another identifier"),
            VerifyError::BadSignature => f.write_str("UserSig HMAC does not verify with this key"),
        }
    }
}

impl std::error::Error for VerifyError {}

fn new_mac(key: &SecretKey) -> Hmac<Sha256> {
    // HMAC accepts keys of any length, so this cannot fail.
    <Hmac<Sha256> as Mac>::new_from_slice(key.expose().as_bytes()).expect("HMAC takes any key length")
}

fn signed_text(identifier: &str, sdkappid: u64, time: u64, expire: u64) -> String {
    format!("TLS.identifier:{identifier}\nTLS.sdkappid:{sdkappid}\nTLS.time:{time}\nTLS.expire:{expire}\n")
}

/// `TLS.sig` for the given fields: base64 of HMAC-SHA256 keyed by the SecretKey's UTF-8 bytes.
pub fn tls_sig(key: &SecretKey, identifier: &str, sdkappid: u64, time: u64, expire: u64) -> String {
    let mut mac = new_mac(key);
    mac.update(signed_text(identifier, sdkappid, time, expire).as_bytes());
    STANDARD.encode(mac.finalize().into_bytes())
}

/// A complete UserSig issued at `time` (Unix s) and valid for `expire` seconds.
pub fn sign(key: &SecretKey, sdkappid: u64, identifier: &str, time: u64, expire: u64) -> String {
    let doc = json!({
        "TLS.ver": "2.0",
        "TLS.identifier": identifier,
        "TLS.sdkappid": sdkappid,
        "TLS.time": time,
        "TLS.expire": expire,
        "TLS.sig": tls_sig(key, identifier, sdkappid, time, expire),
    });
    let mut encoder = ZlibEncoder::new(Vec::new(), Compression::default());
    // Writing to a Vec cannot fail.
    encoder
        .write_all(doc.to_string().as_bytes())
        .expect("write to Vec");
    let compressed = encoder.finish().expect("finish to Vec");
    STANDARD
        .encode(compressed)
        .chars()
        .map(|c| match c {
            '+' => '*',
            '/' => '-',
            '=' => '_',
            other => other,
        })
        .collect()
}

/// Decodes a UserSig into its claims without checking signature or expiry.
pub fn decode(usersig: &str) -> Result<Claims, VerifyError> {
    let standard: String = usersig
        .chars()
        .map(|c| match c {
            '*' => '+',
            '-' => '/',
            '_' => '=',
            other => other,
        })
        .collect();
    let compressed = STANDARD
        .decode(standard.as_bytes())
        .map_err(|_| VerifyError::Malformed("not base64"))?;
    let mut inflated = Vec::new();
    ZlibDecoder::new(compressed.as_slice())
        .take(MAX_INFLATED_BYTES)
        .read_to_end(&mut inflated)
        .map_err(|_| VerifyError::Malformed("not a zlib stream"))?;
    let doc: Value = serde_json::from_slice(&inflated).map_err(|_| VerifyError::Malformed("not JSON"))?;
    let number = |key: &'static str| -> Result<u64, VerifyError> {
        match doc.get(key) {
            Some(Value::Number(n)) => n.as_u64().ok_or(VerifyError::Malformed(key)),
            // Some library versions wrote numbers as strings.
            Some(Value::String(s)) => s.parse().map_err(|_| VerifyError::Malformed(key)),
            _ => Err(VerifyError::Malformed(key)),
        }
    };
    let string = |key: &'static str| -> Result<String, VerifyError> {
        doc.get(key)
            .and_then(Value::as_str)
            .map(str::to_owned)
            .ok_or(VerifyError::Malformed(key))
    };
    Ok(Claims {
        identifier: string("TLS.identifier")?,
        sdkappid: number("TLS.sdkappid")?,
        time: number("TLS.time")?,
        expire: number("TLS.expire")?,
        sig: string("TLS.sig")?,
    })
}

/// What the server does with a request's UserSig: decode, match sdkappid and
/// identifier, check expiry at `now_unix`, then the HMAC.
pub fn verify(
    key: &SecretKey,
    usersig: &str,
    sdkappid: u64,
    identifier: &str,
    now_unix: u64,
) -> Result<Claims, VerifyError> {
    let claims = decode(usersig)?;
    if claims.sdkappid != sdkappid {
        return Err(VerifyError::SdkAppIdMismatch);
    }
    if claims.identifier != identifier {
        return Err(VerifyError::IdentifierMismatch);
    }
    if claims.is_expired(now_unix) {
        return Err(VerifyError::Expired {
            expired_at: claims.expires_at(),
        });
    }
    if !claims.signature_matches(key) {
        return Err(VerifyError::BadSignature);
    }
    Ok(claims)
}

/// The UserSig's metric: when the one in use expires.
#[derive(Clone)]
pub struct UserSigMetrics {
    pub expiry: prometheus::Gauge,
}

impl UserSigMetrics {
    pub fn new(registry: &prometheus::Registry) -> UserSigMetrics {
        use crate::metrics::Register;
        UserSigMetrics {
            expiry: registry.gauge(
                "roomengine_usersig_expiry_timestamp_seconds",
                "When the UserSig in use expires (Unix seconds); it is renewed after 80% of its lifetime.",
            ),
        }
    }
}

/// Hands out the current UserSig, signing a new one only when 80% of the
/// lifetime has passed, so requests pay no signing cost.
pub struct Signer {
    key: SecretKey,
    sdkappid: u64,
    identifier: String,
    ttl: Duration,
    current: Mutex<Option<Issued>>,
}

#[derive(Clone)]
struct Issued {
    usersig: std::sync::Arc<str>,
    issued_at: u64,
    expires_at: u64,
}

impl Signer {
    pub fn new(key: SecretKey, sdkappid: u64, identifier: String, ttl: Duration) -> Self {
        Signer {
            key,
            sdkappid,
            identifier,
            ttl,
            current: Mutex::new(None),
        }
    }

    /// Whether this signer signs for exactly these credentials.
    pub fn is_for(&self, key: &SecretKey, sdkappid: u64, identifier: &str, ttl: Duration) -> bool {
        self.key == *key && self.sdkappid == sdkappid && self.identifier == identifier && self.ttl == ttl
    }

    /// The UserSig to put in the next request (renewed when due) and the Unix
    /// second it expires.
    pub fn current(&self) -> (std::sync::Arc<str>, u64) {
        self.current_at(unix_now())
    }

    pub fn current_at(&self, now: u64) -> (std::sync::Arc<str>, u64) {
        let ttl = self.ttl.as_secs().max(1);
        let renew_after = ttl * 4 / 5;
        let mut slot = self.current.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(issued) = slot.as_ref() {
            if now < issued.issued_at + renew_after && now >= issued.issued_at {
                return (issued.usersig.clone(), issued.expires_at);
            }
        }
        let usersig: std::sync::Arc<str> = sign(&self.key, self.sdkappid, &self.identifier, now, ttl).into();
        let issued = Issued {
            usersig: usersig.clone(),
            issued_at: now,
            expires_at: now + ttl,
        };
        *slot = Some(issued);
        (usersig, now + ttl)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY1: &str = "5bd2850fff3ecb11d7c805251c51ee463a25727bddc2385f3fa8bfee1bb93b5e";
    const OFFICIAL: &str = "eJyrVgrxCdYrSy1SslJQMtIzUNJRAItkpqTmlWSmZUIkKjIT87NK82CSxSnZiQUFmSlAKUMTAyiAyqVWFGQWpYJkTE1NjRDiJZm5YFFzNPXFmekgG3zKHM1T9D3LzdODi-OKs8vCqpxcAvydnV2SSv2cy03cPcpDnA2SMgu0nUxslWoBHdYzUg__";

    fn key(s: &str) -> SecretKey {
        SecretKey::new(s.to_owned())
    }

    #[test]
    fn reproduces_reference_vectors() {
        assert_eq!(
            tls_sig(&key(KEY1), "xiaojun", 1400000000, 1700000000, 15552000),
            "LvA7d/Iw7gSsnskvVzBDPOCCDbuNCw4GHwTC0bip+B4="
        );
        assert_eq!(
            tls_sig(&key(KEY1), "administrator", 1400000000, 1700000000, 86400),
            "yLAe+w7WUeUuqbV9h/TX78u21oTGi+i9Zp1u3PpnY60="
        );
        assert_eq!(
            tls_sig(
                &key("test-secret-key-1234567890abcdef"),
                "user_42",
                20030819,
                1718764800,
                604800
            ),
            "8y4PAvIKGCmKvubBW+DGnAa/LQ9VpBWp4fEjtiQ/VHQ="
        );
    }

    #[test]
    fn generated_usersig_decodes_to_its_fields() {
        let sig = sign(&key(KEY1), 1400000000, "administrator", 1700000000, 86400);
        assert!(!sig.contains(['+', '/', '=']));
        let claims = decode(&sig).expect("decodes");
        assert_eq!(
            claims,
            Claims {
                identifier: "administrator".into(),
                sdkappid: 1400000000,
                time: 1700000000,
                expire: 86400,
                sig: "yLAe+w7WUeUuqbV9h/TX78u21oTGi+i9Zp1u3PpnY60=".into(),
            }
        );
    }

    #[test]
    fn verifies_official_library_usersig() {
        let claims = verify(&key(KEY1), OFFICIAL, 1400000000, "xiaojun", 1700000000).expect("valid");
        assert_eq!(claims.sig, "LvA7d/Iw7gSsnskvVzBDPOCCDbuNCw4GHwTC0bip+B4=");
        assert_eq!(claims.expires_at(), 1700000000 + 15552000);
    }

    #[test]
    fn verify_rejects_each_way_a_usersig_can_be_wrong() {
        let k = key(KEY1);
        assert_eq!(
            verify(&k, OFFICIAL, 1400000000, "xiaojun", 1700000000 + 15552001),
            Err(VerifyError::Expired {
                expired_at: 1715552000
            })
        );
        assert_eq!(
            verify(&key("other"), OFFICIAL, 1400000000, "xiaojun", 1700000000),
            Err(VerifyError::BadSignature)
        );
        assert_eq!(
            verify(&k, OFFICIAL, 1400000001, "xiaojun", 1700000000),
            Err(VerifyError::SdkAppIdMismatch)
        );
        assert_eq!(
            verify(&k, OFFICIAL, 1400000000, "admin", 1700000000),
            Err(VerifyError::IdentifierMismatch)
        );
        assert!(matches!(
            verify(&k, "not-a-usersig!", 1400000000, "xiaojun", 1700000000),
            Err(VerifyError::Malformed(_))
        ));
    }

    #[test]
    fn signer_reuses_until_80_percent_of_ttl() {
        let signer = Signer::new(
            key(KEY1),
            1400000000,
            "administrator".into(),
            Duration::from_secs(100),
        );
        let (first, exp) = signer.current_at(1000);
        assert_eq!(exp, 1100);
        assert_eq!(signer.current_at(1079).0, first);
        let (renewed, exp2) = signer.current_at(1080);
        assert_ne!(renewed, first);
        assert_eq!(exp2, 1180);
    }
}

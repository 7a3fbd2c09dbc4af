//! HTTP basic auth for every endpoint, checked against the bcrypt hashes of
//! the web config's `basic_auth_users`. A bcrypt check costs tens of
//! milliseconds, so successful checks are remembered (keyed by a keyed digest
//! of user, password and hash); failures are never remembered.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use tokio::sync::Semaphore;

use crate::web_config::WebConfigWatch;

/// A cost-10 hash (of the example password in web-config.example.yml),
/// checked for unknown users and its answer ignored, so that "no such user"
/// takes as long as "wrong password".
const DUMMY_HASH: &str = "$2y$10$6jEO6wk5R6KOG98YSDXv3uE8norZwzgc.778f0qF7XYT8i1HIJVKS";

/// The state of the auth middleware: the web config and the success cache.
#[derive(Clone)]
pub struct BasicAuth {
    web: Arc<WebConfigWatch>,
    cache: Arc<Cache>,
    /// bcrypt checks running at once, at most one a core: a flood of wrong
    /// passwords then queues here instead of filling the blocking pool, and
    /// cached scrapes (which skip bcrypt) keep being answered.
    checks: Arc<Semaphore>,
}

struct Cache {
    /// Random per process: the cached digests are useless outside it.
    key: [u8; 32],
    /// User → digest of (user, password, hash) of the last password that verified.
    /// At most one entry per user ever configured.
    verified: Mutex<HashMap<String, Vec<u8>>>,
}

impl BasicAuth {
    pub fn new(web: Arc<WebConfigWatch>) -> BasicAuth {
        BasicAuth {
            web,
            cache: Arc::new(Cache {
                key: rand::random(),
                verified: Mutex::new(HashMap::new()),
            }),
            checks: Arc::new(Semaphore::new(
                std::thread::available_parallelism().map_or(2, |n| n.get()),
            )),
        }
    }

    /// Whether `user:password` matches a configured user (or no users are configured).
    pub async fn allows(&self, headers: &HeaderMap) -> bool {
        let config = self.web.current();
        if config.users.is_empty() {
            return true;
        }
        let Some((user, password)) = credentials(headers) else {
            return false;
        };
        let Some(hash) = config.users.get(&user).cloned() else {
            self.bcrypt(password, DUMMY_HASH.to_owned()).await;
            return false;
        };
        let mac = self.cache.digest(&user, &password, &hash);
        let cached = self
            .cache
            .verified
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&user)
            .cloned();
        // verify_slice compares in constant time.
        if cached.is_some_and(|d| mac.clone().verify_slice(&d).is_ok()) {
            return true;
        }
        let ok = self.bcrypt(password, hash).await;
        if ok {
            self.cache
                .verified
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(user, mac.finalize().into_bytes().to_vec());
        }
        ok
    }

    /// One bcrypt check, off the async workers (it blocks for tens of milliseconds).
    async fn bcrypt(&self, password: String, hash: String) -> bool {
        let Ok(_permit) = self.checks.acquire().await else {
            return false;
        };
        tokio::task::spawn_blocking(move || bcrypt::verify(password, &hash).unwrap_or(false))
            .await
            .unwrap_or(false)
    }
}

impl Cache {
    fn digest(&self, user: &str, password: &str, hash: &str) -> Hmac<Sha256> {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.key).expect("HMAC takes any key length");
        // Length-prefixed, so that no two different triples feed the same bytes.
        for part in [user, password, hash] {
            mac.update(&(part.len() as u64).to_be_bytes());
            mac.update(part.as_bytes());
        }
        mac
    }
}

/// User and password from `Authorization: Basic base64(user:password)`.
fn credentials(headers: &HeaderMap) -> Option<(String, String)> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, encoded) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (user, password) = text.split_once(':')?;
    Some((user.to_owned(), password.to_owned()))
}

/// The middleware: 401 with `WWW-Authenticate: Basic` unless the request
/// carries the credentials of a configured user.
pub async fn require(State(auth): State<BasicAuth>, request: Request, next: Next) -> Response {
    if auth.allows(request.headers()).await {
        next.run(request).await
    } else {
        (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Basic")],
            "Unauthorized\n",
        )
            .into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;
    use std::time::Duration;

    fn basic(s: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        let v = format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(s));
        h.insert(header::AUTHORIZATION, HeaderValue::from_str(&v).unwrap());
        h
    }

    #[test]
    fn parses_basic_credentials() {
        assert_eq!(
            credentials(&basic("alice:pa:ss")),
            Some(("alice".into(), "pa:ss".into()))
        );
        assert_eq!(credentials(&basic("alice")), None);
        assert_eq!(credentials(&HeaderMap::new()), None);
        let mut bearer = HeaderMap::new();
        bearer.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer abc"));
        assert_eq!(credentials(&bearer), None);
    }

    #[tokio::test]
    async fn cached_success_never_lets_another_password_in() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("web.yml");
        // Cost 4 keeps the test quick; the cache works the same at any cost.
        let hash = bcrypt::hash("right", 4).unwrap();
        std::fs::write(&path, format!("basic_auth_users:\n  alice: {hash}\n")).unwrap();
        let auth = BasicAuth::new(WebConfigWatch::load(&path).unwrap());
        assert!(auth.allows(&basic("alice:right")).await);
        assert_eq!(auth.cache.verified.lock().unwrap().len(), 1);
        assert!(auth.allows(&basic("alice:right")).await);
        assert!(!auth.allows(&basic("alice:wrong")).await);
        assert!(!auth.allows(&basic("alice:righ")).await);
        assert!(!auth.allows(&basic("mallory:right")).await);
        assert!(!auth.allows(&HeaderMap::new()).await);
        // The failures did not evict or replace the good entry.
        assert!(auth.allows(&basic("alice:right")).await);
        assert_eq!(auth.cache.verified.lock().unwrap().len(), 1);
    }

    #[tokio::test]
    async fn a_changed_password_ends_the_cached_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("web.yml");
        let write = |password: &str| {
            let hash = bcrypt::hash(password, 4).unwrap();
            std::fs::write(&path, format!("basic_auth_users:\n  alice: {hash}\n")).unwrap();
        };
        write("old");
        let watch =
            WebConfigWatch::with_interval(&path, crate::web_config::load(&path).unwrap(), Duration::ZERO);
        let auth = BasicAuth::new(watch);
        assert!(auth.allows(&basic("alice:old")).await);
        write("new-and-longer");
        assert!(!auth.allows(&basic("alice:old")).await);
        assert!(auth.allows(&basic("alice:new-and-longer")).await);
    }
}

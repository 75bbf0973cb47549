//! The web UI's sign-in sessions and their protection against cross-site requests.
//!
//! A browser cannot attach a bearer token to an `EventSource`, and a token kept in
//! page script is one XSS away from theft. So the UI trades the token once, at
//! `POST /login`, for a random session id in an `HttpOnly; SameSite=Strict` cookie.
//! The server keeps the token's principal under the SHA-256 of that id (never the
//! token, never the id itself), with an expiry.
//!
//! A cookie rides along with every request the browser makes, including ones a
//! hostile page triggers, so a state-changing request authenticated by cookie must
//! also carry the session's CSRF token in [`CSRF_HEADER`] (a header a cross-site form
//! cannot set). Requests with a bearer token need no CSRF token: a browser never adds
//! one by itself. Independently, any state-changing request a browser marks as coming
//! from another site (`Origin` not matching `Host`, or `Sec-Fetch-Site: cross-site`)
//! is refused, which also covers the open, token-less loopback mode.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::{HeaderMap, Method, header};
use rand::Rng as _;
use subtle::ConstantTimeEq;
use tokio::time::Instant;

use crate::error::ApiError;
use crate::principal::{Principal, sha256, to_hex};

/// The session cookie's name.
pub const COOKIE: &str = "fledge_session";

/// The header carrying the session's CSRF token on state-changing requests.
pub const CSRF_HEADER: &str = "x-csrf-token";

/// How long a session lives after sign-in.
pub const TTL: Duration = Duration::from_secs(12 * 3600);

/// The most sessions kept at once; signing in beyond it evicts the oldest, so a
/// flood of sign-ins cannot grow memory without bound.
const MAX_SESSIONS: usize = 10_000;

/// One signed-in browser.
#[derive(Debug, Clone)]
struct Session {
    principal: Principal,
    csrf: String,
    expires: Instant,
}

/// A session found from a request's cookie.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionInfo {
    /// Who signed in.
    pub principal: Principal,
    /// The token the session's state-changing requests must carry in [`CSRF_HEADER`].
    pub csrf: String,
}

/// The live sessions, shared by the auth middleware and the UI's endpoints.
#[derive(Clone, Default)]
pub struct Sessions {
    inner: Arc<Mutex<HashMap<[u8; 32], Session>>>,
}

impl std::fmt::Debug for Sessions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Session ids and CSRF tokens have no place in logs.
        f.debug_struct("Sessions")
            .field("count", &self.lock().len())
            .finish()
    }
}

// === impl Sessions ===

impl Sessions {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; 32], Session>> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Starts a session for `principal`; returns its id (for the cookie) and its CSRF
    /// token.
    pub fn create(&self, principal: Principal) -> (String, String) {
        self.create_at(principal, Instant::now())
    }

    fn create_at(&self, principal: Principal, now: Instant) -> (String, String) {
        let id = random_hex();
        let csrf = random_hex();
        let mut all = self.lock();
        all.retain(|_, s| s.expires > now);
        if all.len() >= MAX_SESSIONS
            && let Some(oldest) = all.iter().min_by_key(|(_, s)| s.expires).map(|(k, _)| *k)
        {
            all.remove(&oldest);
        }
        all.insert(
            sha256(id.as_bytes()),
            Session {
                principal,
                csrf: csrf.clone(),
                expires: now + TTL,
            },
        );
        (id, csrf)
    }

    /// The live session with this id, if any.
    pub fn get(&self, id: &str) -> Option<SessionInfo> {
        self.get_at(id, Instant::now())
    }

    fn get_at(&self, id: &str, now: Instant) -> Option<SessionInfo> {
        let key = sha256(id.as_bytes());
        let mut all = self.lock();
        match all.get(&key) {
            Some(s) if s.expires > now => Some(SessionInfo {
                principal: s.principal.clone(),
                csrf: s.csrf.clone(),
            }),
            Some(_) => {
                all.remove(&key);
                None
            }
            None => None,
        }
    }

    /// Ends the session with this id (signing out); unknown ids are ignored.
    pub fn remove(&self, id: &str) {
        self.lock().remove(&sha256(id.as_bytes()));
    }

    /// Resolves a request that carries no `Authorization` header by its session
    /// cookie: `Ok(None)` without a cookie (or with a stale one), the principal when
    /// the session is live, and 403 when a state-changing request lacks the session's
    /// CSRF token.
    pub fn authenticate(
        &self,
        method: &Method,
        headers: &HeaderMap,
    ) -> Result<Option<Principal>, ApiError> {
        let Some(id) = cookie(headers, COOKIE) else {
            return Ok(None);
        };
        let Some(session) = self.get(id) else {
            return Ok(None);
        };
        if !is_safe(method) {
            let sent = headers
                .get(CSRF_HEADER)
                .map(|v| v.as_bytes())
                .unwrap_or_default();
            if !bool::from(sent.ct_eq(session.csrf.as_bytes())) {
                return Err(ApiError::forbidden(format!(
                    "a signed-in browser request that changes something must carry the \
                     session's CSRF token in the {CSRF_HEADER} header (GET /session gives it)"
                ))
                .with_code("csrf"));
            }
        }
        Ok(Some(session.principal))
    }
}

/// Whether a method only reads.
pub fn is_safe(method: &Method) -> bool {
    matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// Refuses a state-changing request that a browser says comes from another site:
/// `Sec-Fetch-Site: cross-site`, or an `Origin` whose host is not the `Host` the
/// request was sent to. Clients that send neither header (the CLI, scripts) pass.
pub fn check_same_origin(method: &Method, headers: &HeaderMap) -> Result<(), ApiError> {
    if is_safe(method) {
        return Ok(());
    }
    let refuse = |why: &str| {
        Err(ApiError::forbidden(format!("cross-site request refused: {why}")).with_code("csrf"))
    };
    if headers
        .get("sec-fetch-site")
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"cross-site"))
    {
        return refuse("the browser marked it as coming from another site");
    }
    if let Some(origin) = headers.get(header::ORIGIN) {
        let origin = origin.to_str().unwrap_or("");
        let origin_host = origin
            .split_once("://")
            .map(|(_, rest)| rest.trim_end_matches('/'))
            .unwrap_or("");
        let host = headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .unwrap_or("");
        if origin_host.is_empty() || !origin_host.eq_ignore_ascii_case(host) {
            return refuse("its Origin is not this server");
        }
    }
    Ok(())
}

/// The value of cookie `name` in the request's `Cookie` headers.
pub fn cookie<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim())
        .filter(|v| !v.is_empty())
}

/// The `Set-Cookie` value that stores session `id` in the browser; `secure` when
/// the page was reached over HTTPS (the cookie then never travels in clear text).
pub fn set_cookie(id: &str, secure: bool) -> String {
    format!(
        "{COOKIE}={id}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}{}",
        TTL.as_secs(),
        if secure { "; Secure" } else { "" }
    )
}

/// Whether the browser reached the server over HTTPS through a TLS-terminating
/// proxy in front of it, as it reports with `X-Forwarded-Proto`. (When the server
/// itself serves TLS, `tls` in its config, the cookie is always `Secure`.)
pub fn via_https(headers: &HeaderMap) -> bool {
    headers
        .get("x-forwarded-proto")
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"https"))
}

/// The `Set-Cookie` value that deletes the session cookie.
pub fn clear_cookie() -> String {
    format!("{COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0")
}

/// 32 random bytes from the operating system's generator, in hex.
fn random_hex() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    to_hex(&bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Role;

    fn alice() -> Principal {
        Principal {
            name: "alice".into(),
            role: Role::Operator,
        }
    }

    fn with_cookie(id: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            format!("theme=dark; {COOKIE}={id}").parse().unwrap(),
        );
        h
    }

    #[test]
    fn a_session_resolves_to_its_principal_until_it_expires() {
        let sessions = Sessions::default();
        let now = Instant::now();
        let (id, csrf) = sessions.create_at(alice(), now);
        assert_eq!(id.len(), 64);
        assert_ne!(id, csrf);
        let found = sessions.get_at(&id, now).unwrap();
        assert_eq!(found.principal, alice());
        assert_eq!(found.csrf, csrf);
        assert!(sessions.get_at("nope", now).is_none());
        assert!(sessions.get_at(&id, now + TTL).is_none());
        // Expired sessions are dropped once seen.
        assert!(sessions.get_at(&id, now).is_none());
    }

    #[test]
    fn the_store_keeps_neither_the_id_nor_logs_it() {
        let sessions = Sessions::default();
        let (id, csrf) = sessions.create(alice());
        let debug = format!("{sessions:?}");
        assert!(!debug.contains(&id) && !debug.contains(&csrf), "{debug}");
        assert!(!sessions.lock().contains_key(id.as_bytes()));
        sessions.remove(&id);
        assert!(sessions.get(&id).is_none());
    }

    #[test]
    fn cookie_requests_need_the_csrf_token_to_change_things() {
        let sessions = Sessions::default();
        let (id, csrf) = sessions.create(alice());
        let headers = with_cookie(&id);
        assert_eq!(
            sessions.authenticate(&Method::GET, &headers).unwrap(),
            Some(alice())
        );
        let err = sessions.authenticate(&Method::POST, &headers).unwrap_err();
        assert_eq!((err.status(), err.code()), (403, "csrf"));
        let mut wrong = headers.clone();
        wrong.insert(CSRF_HEADER, "0".repeat(64).parse().unwrap());
        assert_eq!(
            sessions
                .authenticate(&Method::POST, &wrong)
                .unwrap_err()
                .status(),
            403
        );
        let mut good = headers;
        good.insert(CSRF_HEADER, csrf.parse().unwrap());
        assert_eq!(
            sessions.authenticate(&Method::POST, &good).unwrap(),
            Some(alice())
        );
        // No cookie, or a stale one: not a session request at all.
        assert_eq!(
            sessions
                .authenticate(&Method::POST, &HeaderMap::new())
                .unwrap(),
            None
        );
        assert_eq!(
            sessions
                .authenticate(&Method::POST, &with_cookie("stale"))
                .unwrap(),
            None
        );
    }

    #[test]
    fn cross_site_writes_are_refused() {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, "127.0.0.1:8080".parse().unwrap());
        assert!(check_same_origin(&Method::POST, &h).is_ok());
        h.insert(header::ORIGIN, "http://127.0.0.1:8080".parse().unwrap());
        assert!(check_same_origin(&Method::POST, &h).is_ok());
        h.insert(header::ORIGIN, "https://evil.example".parse().unwrap());
        assert_eq!(
            check_same_origin(&Method::POST, &h).unwrap_err().status(),
            403
        );
        assert!(check_same_origin(&Method::GET, &h).is_ok());
        let mut h = HeaderMap::new();
        h.insert("sec-fetch-site", "cross-site".parse().unwrap());
        assert!(check_same_origin(&Method::POST, &h).is_err());
    }

    #[test]
    fn cookies_are_http_only_and_strict() {
        let c = set_cookie("abc", false);
        assert!(c.starts_with("fledge_session=abc;"), "{c}");
        assert!(!c.contains("Secure"), "{c}");
        assert!(set_cookie("abc", true).ends_with("; Secure"));
        let mut https = HeaderMap::new();
        https.insert("x-forwarded-proto", "https".parse().unwrap());
        assert!(via_https(&https) && !via_https(&HeaderMap::new()));
        assert!(
            c.contains("HttpOnly") && c.contains("SameSite=Strict"),
            "{c}"
        );
        assert!(clear_cookie().contains("Max-Age=0"));
        let mut h = HeaderMap::new();
        h.insert(header::COOKIE, "a=1; fledge_session=xyz".parse().unwrap());
        assert_eq!(cookie(&h, COOKIE), Some("xyz"));
        assert_eq!(cookie(&h, "b"), None);
    }
}

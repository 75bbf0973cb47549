//! Who is calling: bearer tokens with roles (viewer < operator < admin).
//!
//! A middleware resolves every request to a [`Principal`] (or rejects it with 401)
//! and puts it in the request's extensions; handlers take the `Principal` extractor
//! and ask [`Principal::require`] for the role they need (403 otherwise). Another
//! source of principals (the web UI's cookie sessions) only has to be added to
//! [`Authenticator::authenticate`].
//!
//! Tokens are kept as SHA-256 hashes, compared in constant time, and never logged.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use subtle::ConstantTimeEq;

use crate::config::{Role, TokenConfig};
use crate::error::ApiError;
pub use crate::principal::{Principal, sha256, to_hex};
use crate::session::{self, Sessions};

/// The actor recorded when auth is off.
pub const ANONYMOUS: &str = "anonymous";

/// The environment variable with extra tokens: `name:role:token,...` in plain text,
/// hashed when read.
pub const TOKENS_ENV: &str = "FLEDGE_TOKENS";

/// One known token.
#[derive(Clone)]
struct KnownToken {
    name: String,
    role: Role,
    hash: [u8; 32],
}

impl std::fmt::Debug for KnownToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The hash is not secret in the way the token is, but it has no place in logs.
        f.debug_struct("KnownToken")
            .field("name", &self.name)
            .field("role", &self.role)
            .finish_non_exhaustive()
    }
}

/// Resolves requests to principals.
#[derive(Debug, Clone, Default)]
pub struct Authenticator {
    tokens: Arc<Vec<KnownToken>>,
    /// The web UI's signed-in browsers (see `crate::session`).
    sessions: Sessions,
}

// === impl Authenticator ===

impl Authenticator {
    /// From the config's hashed tokens and the plain tokens of `FLEDGE_TOKENS`
    /// (`env_tokens` is that variable's value, if set).
    pub fn new(config: &[TokenConfig], env_tokens: Option<&str>) -> anyhow::Result<Self> {
        let mut tokens = Vec::new();
        for (i, t) in config.iter().enumerate() {
            let hash = parse_hex_hash(&t.sha256).ok_or_else(|| {
                anyhow::anyhow!("auth.tokens[{i}].sha256: expected 64 hex digits")
            })?;
            tokens.push(KnownToken {
                name: t.name.clone(),
                role: t.role,
                hash,
            });
        }
        if let Some(env) = env_tokens {
            for (i, entry) in env.split(',').map(str::trim).enumerate() {
                if entry.is_empty() {
                    continue;
                }
                let mut parts = entry.splitn(3, ':');
                let (Some(name), Some(role), Some(token)) =
                    (parts.next(), parts.next(), parts.next())
                else {
                    anyhow::bail!("{TOKENS_ENV}: entry {} is not `name:role:token`", i + 1);
                };
                let role: Role = role
                    .parse()
                    .map_err(|e| anyhow::anyhow!("{TOKENS_ENV}: entry {}: {e}", i + 1))?;
                if name.is_empty() || token.is_empty() {
                    anyhow::bail!("{TOKENS_ENV}: entry {} has an empty name or token", i + 1);
                }
                tokens.push(KnownToken {
                    name: name.to_owned(),
                    role,
                    hash: sha256(token.as_bytes()),
                });
            }
        }
        Ok(Self {
            tokens: Arc::new(tokens),
            sessions: Sessions::default(),
        })
    }

    /// Whether any token is configured; without one the API is open to everyone,
    /// as `anonymous` with every role.
    pub fn enabled(&self) -> bool {
        !self.tokens.is_empty()
    }

    /// Resolves a request's headers to its principal.
    pub fn authenticate(&self, headers: &axum::http::HeaderMap) -> Result<Principal, ApiError> {
        if !self.enabled() {
            return Ok(Principal {
                name: ANONYMOUS.to_owned(),
                role: Role::Admin,
            });
        }
        let Some(value) = headers.get(axum::http::header::AUTHORIZATION) else {
            return Err(ApiError::unauthorized(
                "this API needs a bearer token: send `Authorization: Bearer <token>`",
            ));
        };
        let token = value
            .to_str()
            .ok()
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
            })
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| {
                ApiError::unauthorized("the Authorization header must be `Bearer <token>`")
            })?;
        self.lookup(token)
            .ok_or_else(|| ApiError::unauthorized("the bearer token is not valid"))
    }

    /// Resolves a request to its principal: a bearer token if it sends one, else the
    /// web UI's session cookie (with its CSRF token on state-changing requests).
    /// State-changing requests a browser marks as cross-site are refused (403).
    pub fn authenticate_request(
        &self,
        method: &axum::http::Method,
        headers: &axum::http::HeaderMap,
    ) -> Result<Principal, ApiError> {
        session::check_same_origin(method, headers)?;
        if self.enabled()
            && !headers.contains_key(axum::http::header::AUTHORIZATION)
            && let Some(principal) = self.sessions.authenticate(method, headers)?
        {
            return Ok(principal);
        }
        self.authenticate(headers)
    }

    /// The name of the valid token a request carries, as a bearer token or through a
    /// web UI session, without checking roles or CSRF: who the rate limiter counts
    /// the request against. `None` with no valid token, or when auth is off.
    pub fn identify(&self, headers: &axum::http::HeaderMap) -> Option<String> {
        if !self.enabled() {
            return None;
        }
        if headers.contains_key(axum::http::header::AUTHORIZATION) {
            return self.authenticate(headers).ok().map(|p| p.name);
        }
        let id = session::cookie(headers, session::COOKIE)?;
        self.sessions.get(id).map(|s| s.principal.name)
    }

    /// The principal of a plain token (the web UI's sign-in), if it is known.
    pub fn principal_for_token(&self, token: &str) -> Option<Principal> {
        self.lookup(token)
    }

    /// The web UI's sessions.
    pub fn sessions(&self) -> &Sessions {
        &self.sessions
    }

    /// Finds the token's principal, comparing against every known hash in constant
    /// time so the answer's timing does not depend on which hash matched.
    fn lookup(&self, token: &str) -> Option<Principal> {
        let hash = sha256(token.as_bytes());
        let mut found = None;
        for known in self.tokens.iter() {
            if bool::from(known.hash.ct_eq(&hash)) && found.is_none() {
                found = Some(Principal {
                    name: known.name.clone(),
                    role: known.role,
                });
            }
        }
        found
    }
}

/// Middleware: resolves the principal of every request (bearer token or UI session),
/// or answers 401 (403 for a cross-site or CSRF-less write).
pub async fn authenticate(
    State(auth): State<Authenticator>,
    mut request: Request,
    next: Next,
) -> Response {
    match auth.authenticate_request(request.method(), request.headers()) {
        Ok(principal) => {
            request.extensions_mut().insert(principal.clone());
            let mut response = next.run(request).await;
            // For the access log, which runs outside this layer.
            response.extensions_mut().insert(principal);
            response
        }
        Err(e) => e.into_response(),
    }
}

fn parse_hex_hash(text: &str) -> Option<[u8; 32]> {
    if text.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(text.get(i * 2..i * 2 + 2)?, 16).ok()?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderMap;

    fn headers(token: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            axum::http::header::AUTHORIZATION,
            format!("Bearer {token}").parse().unwrap(),
        );
        h
    }

    #[test]
    fn config_and_env_tokens_resolve_to_their_principal() {
        let cfg = [TokenConfig {
            name: "alice".into(),
            role: Role::Admin,
            sha256: to_hex(&sha256(b"s3cret")),
        }];
        let auth = Authenticator::new(&cfg, Some("ci:operator:tok1, view:viewer:tok2")).unwrap();
        assert!(auth.enabled());
        assert_eq!(auth.authenticate(&headers("s3cret")).unwrap().name, "alice");
        let ci = auth.authenticate(&headers("tok1")).unwrap();
        assert_eq!((ci.name.as_str(), ci.role), ("ci", Role::Operator));
        assert_eq!(
            auth.authenticate(&headers("tok2")).unwrap().role,
            Role::Viewer
        );
        assert_eq!(
            auth.authenticate(&headers("nope")).unwrap_err().status(),
            401
        );
        assert_eq!(
            auth.authenticate(&HeaderMap::new()).unwrap_err().status(),
            401
        );
    }

    #[test]
    fn roles_are_ordered() {
        let viewer = Principal {
            name: "v".into(),
            role: Role::Viewer,
        };
        assert!(viewer.require(Role::Viewer).is_ok());
        assert_eq!(viewer.require(Role::Operator).unwrap_err().status(), 403);
    }

    #[test]
    fn no_tokens_means_anonymous_admin() {
        let auth = Authenticator::new(&[], None).unwrap();
        let p = auth.authenticate(&HeaderMap::new()).unwrap();
        assert_eq!((p.name.as_str(), p.role), (ANONYMOUS, Role::Admin));
    }

    #[test]
    fn malformed_env_is_rejected_without_echoing_the_token() {
        let err = Authenticator::new(&[], Some("ci:boss:hunter2"))
            .unwrap_err()
            .to_string();
        assert!(!err.contains("hunter2"), "{err}");
        assert!(Authenticator::new(&[], Some("just-a-token")).is_err());
    }
}

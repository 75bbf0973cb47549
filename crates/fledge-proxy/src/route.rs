//! The routing contract: what the control plane tells the proxy for one app.
//!
//! A [`Route`] is plain data. The proxy validates it and compiles it into an internal
//! routing table that requests read without locks; a new `Route` replaces the table
//! atomically, so a weight change applies to the very next request.

use serde::{Deserialize, Serialize};

use crate::error::ProxyError;

pub use fledge_stats::Arm;

/// One version of the app and the endpoints that serve it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamGroup {
    /// The version label these endpoints run (e.g. `v2.3.0`); statistics are kept
    /// under this name.
    pub version: String,
    /// Where the version listens, as `host:port` (a name or an IP address). Requests
    /// are spread over them round-robin. Must not be empty.
    pub endpoints: Vec<String>,
}

// === impl UpstreamGroup ===

impl UpstreamGroup {
    /// Version `version`, served at `endpoints`.
    pub fn new(version: impl Into<String>, endpoints: Vec<String>) -> Self {
        Self {
            version: version.into(),
            endpoints,
        }
    }
}

/// Where the proxy reads the key that keeps one user on one version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", deny_unknown_fields)]
pub enum Stickiness {
    /// A request header carrying a user identity (e.g. `x-user-id`). Requests
    /// without the header are split at random.
    Header {
        /// Header name, case-insensitive.
        name: String,
    },
    /// A cookie. Requests without it get a fresh random id, sent back in a
    /// `Set-Cookie` (HttpOnly, SameSite=Lax, Path=/) so the choice survives.
    Cookie {
        /// Cookie name, e.g. `fledge_id`.
        name: String,
    },
}

/// What part of a request a [`MatchRule`] looks at.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", deny_unknown_fields)]
pub enum MatchOn {
    /// A request header, by name (case-insensitive).
    Header {
        /// Header name.
        name: String,
    },
    /// A cookie, by name (case-sensitive, as browsers send it).
    Cookie {
        /// Cookie name.
        name: String,
    },
}

/// Sends every request that carries a given header or cookie value to one side,
/// whatever the weight (e.g. `x-canary: always` for testers).
///
/// Rules apply only while a canary group is present: with no rollout there is
/// nothing to pin to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MatchRule {
    /// Where the value is read.
    pub on: MatchOn,
    /// The exact value that triggers the rule.
    pub value: String,
    /// The side matching requests go to.
    pub target: Arm,
}

// === impl MatchRule ===

impl MatchRule {
    /// Sends requests whose header `name` is `value` to `target`.
    pub fn header(name: impl Into<String>, value: impl Into<String>, target: Arm) -> Self {
        let on = MatchOn::Header { name: name.into() };
        Self {
            on,
            value: value.into(),
            target,
        }
    }

    /// Sends requests whose cookie `name` is `value` to `target`.
    pub fn cookie(name: impl Into<String>, value: impl Into<String>, target: Arm) -> Self {
        let on = MatchOn::Cookie { name: name.into() };
        Self {
            on,
            value: value.into(),
            target,
        }
    }
}

/// Copies of the requests stable serves, sent to the canary as well (a dark
/// canary): its answers are thrown away and counted as the canary's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MirrorPolicy {
    /// Percentage (0 to 100) of stable's requests copied.
    pub percent: u8,
    /// Methods whose requests may be copied (e.g. `GET`).
    pub methods: Vec<String>,
    /// The largest request body copied, in bytes; a request with a larger one is
    /// not copied.
    pub max_body_bytes: u64,
}

/// The complete routing state of one app.
///
/// To roll back completely (testers included), remove the canary group: match rules
/// still send their requests to a canary that is present at weight 0, which is what
/// a "testers only" first stage wants.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Route {
    /// The version serving production traffic.
    pub stable: UpstreamGroup,
    /// The version being rolled out, when a rollout is active.
    #[serde(default)]
    pub canary: Option<UpstreamGroup>,
    /// Percentage (0 to 100) of requests sent to the canary. Ignored without a canary.
    #[serde(default)]
    pub canary_weight: u8,
    /// Keeps a user on one version; `None` splits every request independently.
    #[serde(default)]
    pub stickiness: Option<Stickiness>,
    /// Header or cookie rules that override the weight; the first that matches wins.
    #[serde(default)]
    pub match_rules: Vec<MatchRule>,
    /// Whether the canary's upgraded connections (WebSocket and the like) are
    /// closed when a later route no longer names the canary version (a rollback).
    /// Otherwise they stay open until either end closes them; only new requests
    /// follow the new route.
    #[serde(default)]
    pub close_upgraded_on_abort: bool,
    /// Copies of stable's requests to the canary; `None` copies nothing. Ignored
    /// without a canary.
    #[serde(default)]
    pub mirror: Option<MirrorPolicy>,
}

// === impl Route ===

impl Route {
    /// A route that sends everything to one stable version.
    pub fn stable_only(version: impl Into<String>, endpoints: Vec<String>) -> Self {
        Self {
            stable: UpstreamGroup::new(version, endpoints),
            canary: None,
            canary_weight: 0,
            stickiness: None,
            match_rules: Vec::new(),
            close_upgraded_on_abort: false,
            mirror: None,
        }
    }

    /// A route that sends `weight`% of requests to `canary` and the rest to `stable`,
    /// with no stickiness, match rules or mirroring.
    pub fn split(stable: UpstreamGroup, canary: UpstreamGroup, weight: u8) -> Self {
        Self {
            canary: Some(canary),
            canary_weight: weight,
            ..Self::stable_only(stable.version, stable.endpoints)
        }
    }

    /// The share of requests the route gives the canary by weight: 0 without one.
    pub fn effective_canary_weight(&self) -> u8 {
        if self.canary.is_some() {
            self.canary_weight
        } else {
            0
        }
    }

    /// Checks what the compiled table relies on: a weight and a mirror share in
    /// 0..=100, non-empty versions and endpoint lists, and valid header and cookie
    /// names.
    pub fn validate(&self) -> Result<(), ProxyError> {
        let mirror = self.mirror.as_ref().map(|m| m.percent);
        for (field, share) in [
            ("canary_weight", Some(self.canary_weight)),
            ("mirror.percent", mirror),
        ] {
            if let Some(share) = share.filter(|s| *s > 100) {
                return Err(ProxyError::InvalidRoute {
                    field: field.into(),
                    reason: format!("must be between 0 and 100, found {share}"),
                });
            }
        }
        validate_group("stable", &self.stable)?;
        if let Some(canary) = &self.canary {
            validate_group("canary", canary)?;
        }
        if let Some(s) = &self.stickiness {
            let (kind, name) = match s {
                Stickiness::Header { name } => ("header", name),
                Stickiness::Cookie { name } => ("cookie", name),
            };
            validate_name(&format!("stickiness.{kind}.name"), kind, name)?;
        }
        for (i, rule) in self.match_rules.iter().enumerate() {
            let (kind, name) = match &rule.on {
                MatchOn::Header { name } => ("header", name),
                MatchOn::Cookie { name } => ("cookie", name),
            };
            validate_name(&format!("match_rules[{i}].on.{kind}.name"), kind, name)?;
        }
        Ok(())
    }
}

fn validate_group(field: &str, group: &UpstreamGroup) -> Result<(), ProxyError> {
    if group.version.trim().is_empty() {
        return Err(ProxyError::InvalidRoute {
            field: format!("{field}.version"),
            reason: "must not be empty".into(),
        });
    }
    if group.endpoints.is_empty() {
        return Err(ProxyError::InvalidRoute {
            field: format!("{field}.endpoints"),
            reason: "needs at least one host:port".into(),
        });
    }
    for ep in &group.endpoints {
        crate::table::parse_endpoint(ep)?;
    }
    Ok(())
}

fn validate_name(field: &str, kind: &str, name: &str) -> Result<(), ProxyError> {
    let ok = match kind {
        "header" => http::HeaderName::from_bytes(name.as_bytes()).is_ok(),
        _ => {
            !name.is_empty()
                && name
                    .bytes()
                    .all(|b| b.is_ascii_graphic() && !b"()<>@,;:\\\"/[]?={}".contains(&b))
        }
    };
    if ok {
        Ok(())
    } else {
        Err(ProxyError::InvalidRoute {
            field: field.into(),
            reason: format!("{name:?} is not a valid {kind} name"),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route() -> Route {
        Route::stable_only("v1", vec!["127.0.0.1:9001".into()])
    }

    #[test]
    fn rejects_bad_routes_naming_the_field() {
        let mut r = route();
        r.canary_weight = 101;
        assert!(
            r.validate()
                .unwrap_err()
                .to_string()
                .contains("canary_weight")
        );

        let mut r = route();
        r.stable.endpoints.clear();
        assert!(
            r.validate()
                .unwrap_err()
                .to_string()
                .contains("stable.endpoints")
        );

        let mut r = route();
        r.canary = Some(UpstreamGroup {
            version: "v2".into(),
            endpoints: vec!["no port".into()],
        });
        assert!(r.validate().unwrap_err().to_string().contains("no port"));

        let mut r = route();
        r.stickiness = Some(Stickiness::Cookie { name: "a b".into() });
        assert!(r.validate().unwrap_err().to_string().contains("stickiness"));

        assert!(route().validate().is_ok());
    }
}

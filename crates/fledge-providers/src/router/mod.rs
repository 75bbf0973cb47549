//! Traffic routers: how the canary's share of requests is set in a data plane that is
//! not fledge's own proxy.
//!
//! A router is built for one app (its settings name the app's backend or upstream) and
//! does one thing, [`TrafficRouter::set_weights`], idempotently: the controller calls
//! it at every stage change and again whenever it reconciles. Routers never retry on
//! their own; wrap one in a [`RetryingRouter`] to get bounded retries and the
//! `in_sync` / last-applied bookkeeping the rollout shows.
//!
//! The built-in proxy is not a router of this crate: the server owns the proxy and
//! implements [`TrafficRouter`] for it itself (this crate stays free of the proxy, the
//! store and the API).

pub mod haproxy;
pub mod nginx;
pub mod retrying;

use std::sync::Arc;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

pub use self::haproxy::{HaproxyRouter, HaproxySettings};
pub use self::nginx::{NginxRouter, NginxSettings};
pub use self::retrying::{Backoff, RetryingRouter, SyncStatus};

/// The split a router has actually put in place, in percent of requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AppliedWeights {
    /// The stable version's share, 0–100.
    pub stable: u8,
    /// The canary's share, 0–100; `stable + canary == 100`.
    pub canary: u8,
}

impl AppliedWeights {
    /// The split with `canary` percent to the canary (clamped to 100).
    pub fn canary(canary: u8) -> Self {
        let canary = canary.min(100);
        AppliedWeights {
            stable: 100 - canary,
            canary,
        }
    }
}

/// One version's servers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upstreams {
    /// The version label, e.g. `v2.3.1`.
    pub version: String,
    /// `host:port` of each server.
    pub endpoints: Vec<String>,
}

impl Upstreams {
    /// Version `version` at `endpoints`.
    pub fn new(version: impl Into<String>, endpoints: Vec<String>) -> Self {
        Upstreams {
            version: version.into(),
            endpoints,
        }
    }
}

/// The request-level rules of a rollout beyond the split: requests that match a
/// header or cookie go to a chosen version (testers to the canary), and stickiness
/// keeps a user on the version they first got.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RoutingRules {
    /// The spec's `match` rules, in order.
    pub matches: Vec<fledge_spec::MatchRule>,
    /// The spec's `stickiness`, if any.
    pub stickiness: Option<fledge_spec::Stickiness>,
    /// The spec's `closeUpgradedOnAbort`.
    pub close_upgraded_on_abort: bool,
    /// The spec's request copies, when a stage asks for them.
    pub mirror: Option<MirrorRules>,
}

/// A rollout's copies of requests to the canary (`stages[].mirror`, `mirroring`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MirrorRules {
    /// The first stage that copies requests: the field a router that cannot copy
    /// names when it refuses the spec.
    pub first_stage: usize,
    /// Which requests may be copied.
    pub mirroring: fledge_spec::Mirroring,
}

impl MirrorRules {
    /// The copies `spec` asks for, if any stage asks.
    pub fn of_spec(spec: &fledge_spec::RolloutSpec) -> Option<Self> {
        spec.first_mirror_stage().map(|first_stage| MirrorRules {
            first_stage,
            mirroring: spec.mirroring.clone(),
        })
    }

    /// The spec field that asks for copies, e.g. `stages[0].mirror`.
    pub fn field(&self) -> String {
        format!("stages[{}].mirror", self.first_stage)
    }
}

impl RoutingRules {
    /// Whether any rule asks for more than a weighted split.
    pub fn is_empty(&self) -> bool {
        self.matches.is_empty()
            && self.stickiness.is_none()
            && !self.close_upgraded_on_abort
            && self.mirror.is_none()
    }
}

/// A request header or cookie that a data plane's own configuration looks at:
/// written `{header: x-canary}` or `{cookie: beta}` in router settings.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub enum RequestKey {
    /// A request header; names compare case-insensitively (kept lowercase).
    Header(String),
    /// A cookie; names compare exactly.
    Cookie(String),
}

impl RequestKey {
    /// The key of a spec's match rule (`None` for a rule without exactly one of
    /// `header` and `cookie`, which the spec refuses).
    pub fn of_rule(rule: &fledge_spec::MatchRule) -> Option<RequestKey> {
        match (&rule.header, &rule.cookie) {
            (Some(h), None) => Some(RequestKey::Header(h.to_ascii_lowercase())),
            (None, Some(c)) => Some(RequestKey::Cookie(c.clone())),
            _ => None,
        }
    }

    /// The key of a spec's stickiness.
    pub fn of_stickiness(s: &fledge_spec::Stickiness) -> Option<RequestKey> {
        match s.key()? {
            fledge_spec::StickyKey::Header(h) => Some(RequestKey::Header(h.to_ascii_lowercase())),
            fledge_spec::StickyKey::Cookie { name, .. } => {
                Some(RequestKey::Cookie(name.to_owned()))
            }
        }
    }

    /// The same key with a header name in lowercase.
    pub fn normalized(&self) -> RequestKey {
        match self {
            RequestKey::Header(h) => RequestKey::Header(h.to_ascii_lowercase()),
            RequestKey::Cookie(c) => RequestKey::Cookie(c.clone()),
        }
    }

    /// The name alone.
    pub fn name(&self) -> &str {
        match self {
            RequestKey::Header(n) | RequestKey::Cookie(n) => n,
        }
    }
}

impl std::fmt::Display for RequestKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RequestKey::Header(n) => write!(f, "header `{n}`"),
            RequestKey::Cookie(n) => write!(f, "cookie `{n}`"),
        }
    }
}

/// Whether `name` is an HTTP token (RFC 9110), as header and cookie names must be.
pub(crate) fn is_token(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// What an app's data plane must serve: where each version runs, the canary's share
/// of requests, and the rollout's rules. Without a canary everything goes to stable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Desired {
    /// The stable version.
    pub stable: Upstreams,
    /// The canary version, while a rollout needs one.
    pub canary: Option<Upstreams>,
    /// The canary's share of requests, 0–100 (ignored without a canary).
    pub canary_weight: u8,
    /// The share of stable's requests copied to the canary now, 0–100 (ignored
    /// without a canary).
    pub mirror: u8,
    /// The rollout's match rules and stickiness.
    pub rules: RoutingRules,
}

impl Desired {
    /// All traffic to the stable version.
    pub fn stable_only(version: impl Into<String>, endpoints: Vec<String>) -> Self {
        Desired {
            stable: Upstreams::new(version, endpoints),
            canary: None,
            canary_weight: 0,
            mirror: 0,
            rules: RoutingRules::default(),
        }
    }

    /// The canary's share as served: 0 without a canary.
    pub fn weight(&self) -> u8 {
        if self.canary.is_some() {
            self.canary_weight.min(100)
        } else {
            0
        }
    }

    /// The servers of both versions (no canary server without a canary).
    pub fn endpoints(&self) -> Endpoints {
        Endpoints {
            stable: self.stable.endpoints.clone(),
            canary: self
                .canary
                .as_ref()
                .map(|c| c.endpoints.clone())
                .unwrap_or_default(),
        }
    }
}

/// The refusal of a router that cannot copy requests to the canary, when the spec
/// asks for copies; `why` says what keeps it from copying them.
pub fn no_mirror(router: &'static str, rules: &RoutingRules, why: &str) -> Result<(), RouterError> {
    match &rules.mirror {
        Some(m) => unsupported(
            router,
            m.field(),
            format!(
                "{why}; use the built-in router (or Istio in the operator), or remove `mirror`"
            ),
        ),
        None => Ok(()),
    }
}

/// The refusal of a router that cannot close the canary's upgraded connections on a
/// rollback, when the spec asks for it; `why` says what keeps it from closing them.
pub fn no_close_upgraded(
    router: &'static str,
    rules: &RoutingRules,
    why: &str,
) -> Result<(), RouterError> {
    if rules.close_upgraded_on_abort {
        unsupported(
            router,
            "closeUpgradedOnAbort",
            format!("{why}; use the built-in router, or remove the field"),
        )
    } else {
        Ok(())
    }
}

/// The refusal of a router that splits by weight only, for the first rule it
/// cannot express.
pub fn weight_only(router: &'static str, rules: &RoutingRules) -> Result<(), RouterError> {
    no_mirror(router, rules, "this router cannot copy requests")?;
    let field = if !rules.matches.is_empty() {
        "match"
    } else if rules.stickiness.is_some() {
        "stickiness"
    } else if rules.close_upgraded_on_abort {
        "closeUpgradedOnAbort"
    } else {
        return Ok(());
    };
    unsupported(
        router,
        field,
        "this router only splits traffic by weight; use the built-in router, or remove the field"
            .to_owned(),
    )
}

/// `router`'s refusal of the spec's `field`, for `reason`.
pub fn unsupported(
    router: &'static str,
    field: impl Into<String>,
    reason: String,
) -> Result<(), RouterError> {
    Err(RouterError::Unsupported {
        router,
        field: field.into(),
        reason,
    })
}

/// Sets and reads the stable/canary split of one app in a data plane.
#[async_trait]
pub trait TrafficRouter: Send + Sync + std::fmt::Debug {
    /// The kind of router (`haproxy`, `nginx`, ...), for events and errors.
    fn kind(&self) -> &'static str;

    /// Sends `canary_weight` percent (0–100) of the app's requests to the canary and
    /// the rest to stable, and returns the split the data plane reports afterwards.
    /// Idempotent. An error means the split is unknown or unchanged: the caller must
    /// not report `canary_weight` as applied.
    async fn set_weights(&self, canary_weight: u8) -> Result<AppliedWeights, RouterError>;

    /// The split currently in place, as the data plane reports it.
    async fn current(&self) -> Result<AppliedWeights, RouterError>;

    /// Points the data plane's stable and canary servers at `endpoints`, keeping the
    /// current split. The server calls it when a rollout brings its own canary
    /// endpoints, and at promotion: at 100% canary it passes the new version's
    /// endpoints as both `stable` and `canary`, then sets the weight back to 0, so no
    /// request reaches the old version after the first step. A router whose addresses
    /// are owned by the data plane's own configuration (HAProxy without
    /// `manageAddresses`) does nothing and says so in its return value.
    async fn set_endpoints(&self, endpoints: &Endpoints) -> Result<EndpointsApplied, RouterError>;

    /// Makes the data plane serve `endpoints` with `canary_weight` percent to the
    /// canary: what a reconcile does with the desired route. By default
    /// [`set_endpoints`](Self::set_endpoints) then [`set_weights`](Self::set_weights);
    /// routers that can do both in one step (nginx: one file, one reload) do. With no
    /// canary endpoint pass weight 0.
    async fn apply(
        &self,
        endpoints: &Endpoints,
        canary_weight: u8,
    ) -> Result<AppliedWeights, RouterError> {
        self.set_endpoints(endpoints).await?;
        self.set_weights(canary_weight).await
    }

    /// Whether this router can serve `rules`; the error names the first field it
    /// cannot express. A rule is refused before a rollout starts, never dropped. By
    /// default a router splits by weight only ([`weight_only`]).
    fn supports(&self, rules: &RoutingRules) -> Result<(), RouterError> {
        weight_only(self.kind(), rules)
    }

    /// Makes the data plane serve `desired`: what a reconcile does. By default the
    /// rules must be [`supported`](Self::supports), then [`apply`](Self::apply).
    async fn serve(&self, desired: &Desired) -> Result<AppliedWeights, RouterError> {
        self.supports(&desired.rules)?;
        self.apply(&desired.endpoints(), desired.weight()).await
    }
}

/// What [`TrafficRouter::set_endpoints`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum EndpointsApplied {
    /// The data plane now sends each version to the given endpoints.
    Applied,
    /// The router leaves addresses to the data plane's configuration.
    Unmanaged,
}

#[async_trait]
impl<T: TrafficRouter + ?Sized> TrafficRouter for Arc<T> {
    fn kind(&self) -> &'static str {
        (**self).kind()
    }

    async fn set_weights(&self, canary_weight: u8) -> Result<AppliedWeights, RouterError> {
        (**self).set_weights(canary_weight).await
    }

    async fn current(&self) -> Result<AppliedWeights, RouterError> {
        (**self).current().await
    }

    async fn set_endpoints(&self, endpoints: &Endpoints) -> Result<EndpointsApplied, RouterError> {
        (**self).set_endpoints(endpoints).await
    }

    async fn apply(
        &self,
        endpoints: &Endpoints,
        canary_weight: u8,
    ) -> Result<AppliedWeights, RouterError> {
        (**self).apply(endpoints, canary_weight).await
    }

    fn supports(&self, rules: &RoutingRules) -> Result<(), RouterError> {
        (**self).supports(rules)
    }

    async fn serve(&self, desired: &Desired) -> Result<AppliedWeights, RouterError> {
        (**self).serve(desired).await
    }
}

/// Why a router could not set or read the split. Every variant names the router and
/// where it was talking to.
#[derive(Debug, thiserror::Error)]
pub enum RouterError {
    /// The data plane could not be reached (socket gone, connection refused, timeout).
    #[error("{router} at {target} is unreachable: {reason}")]
    Unreachable {
        /// `haproxy`, `nginx`, ...
        router: &'static str,
        /// The socket path, address or file.
        target: String,
        /// What failed.
        reason: String,
    },
    /// The data plane refused the change or answered something unexpected (unknown
    /// backend or server, a reload command that failed, a config test that failed).
    #[error("{router} at {target} rejected the change: {reason}")]
    Rejected {
        /// `haproxy`, `nginx`, ...
        router: &'static str,
        /// The socket path, address or file.
        target: String,
        /// The data plane's own message.
        reason: String,
    },
    /// The change was accepted but reading it back shows a different split.
    #[error("{router} at {target} reports {found:?} after setting {wanted:?}")]
    Mismatch {
        /// `haproxy`, `nginx`, ...
        router: &'static str,
        /// The socket path, address or file.
        target: String,
        /// The split that was asked for.
        wanted: AppliedWeights,
        /// The split read back.
        found: AppliedWeights,
    },
    /// The rollout asks for a rule this router cannot express.
    #[error("the {router} router cannot express `{field}`: {reason}")]
    Unsupported {
        /// `haproxy`, `nginx`, ...
        router: &'static str,
        /// The spec field it cannot express (`match`, `stickiness`,
        /// `stages[0].mirror`).
        field: String,
        /// Why, and what to do instead.
        reason: String,
    },
    /// The router's settings are unusable.
    #[error("{router} settings: {reason}")]
    Config {
        /// `haproxy`, `nginx`, ...
        router: &'static str,
        /// What is wrong and which setting holds it.
        reason: String,
    },
}

/// The `router:` setting of an app in `fledge.yaml`.
///
/// Written as `router: builtin`, as `router: {type: haproxy, socket: ..., backend:
/// ...}`, or as `router: {haproxy: {socket: ..., backend: ...}}`; see
/// [`RouterSettings::from_parts`] for a caller that has already split the kind off.
#[derive(Debug, Clone, Default, PartialEq)]
pub enum RouterSettings {
    /// fledge's own proxy (implemented by the server, which owns the proxy).
    #[default]
    Builtin,
    /// An HAProxy backend, through the runtime API.
    Haproxy(HaproxySettings),
    /// An nginx upstream, through a generated include file and a reload.
    Nginx(NginxSettings),
}

impl<'de> Deserialize<'de> for RouterSettings {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        crate::settings::deserialize(d, "router", RouterSettings::from_parts)
    }
}

impl Serialize for RouterSettings {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            RouterSettings::Builtin => s.serialize_str("builtin"),
            RouterSettings::Haproxy(h) => crate::settings::write("haproxy", h).serialize(s),
            RouterSettings::Nginx(n) => crate::settings::write("nginx", n).serialize(s),
        }
    }
}

/// Where an app's versions run, for routers that write server addresses themselves
/// (nginx). HAProxy names servers that its own configuration defines.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Endpoints {
    /// `host:port` of each stable server.
    pub stable: Vec<String>,
    /// `host:port` of each canary server.
    pub canary: Vec<String>,
}

impl RouterSettings {
    /// The settings for router `kind` (`builtin`, `haproxy`, `nginx`) from its
    /// settings map; the error names the kind and the bad or unknown field.
    pub fn from_parts(
        kind: &str,
        settings: serde_json::Map<String, serde_json::Value>,
    ) -> Result<Self, String> {
        match kind {
            "builtin" if settings.is_empty() => Ok(RouterSettings::Builtin),
            "builtin" => Err("router builtin takes no settings".to_owned()),
            "haproxy" => {
                crate::settings::read("router", kind, settings).map(RouterSettings::Haproxy)
            }
            "nginx" => crate::settings::read("router", kind, settings).map(RouterSettings::Nginx),
            other => Err(format!(
                "unknown router `{other}`: expected builtin, haproxy or nginx"
            )),
        }
    }

    /// The kind: `builtin`, `haproxy` or `nginx`.
    pub fn kind(&self) -> &'static str {
        match self {
            RouterSettings::Builtin => "builtin",
            RouterSettings::Haproxy(_) => "haproxy",
            RouterSettings::Nginx(_) => "nginx",
        }
    }

    /// Builds the router these settings describe for an app whose versions run at
    /// `endpoints`; `Ok(None)` for `builtin`, which the server provides.
    pub fn build(
        &self,
        endpoints: &Endpoints,
    ) -> Result<Option<Arc<dyn TrafficRouter>>, RouterError> {
        Ok(match self {
            RouterSettings::Builtin => None,
            RouterSettings::Haproxy(s) => Some(Arc::new(HaproxyRouter::new(s.clone())?)),
            RouterSettings::Nginx(s) => {
                Some(Arc::new(NginxRouter::new(s.clone(), endpoints.clone())?))
            }
        })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Rules whose stage `first_stage` copies requests to the canary.
    pub(crate) fn mirrored(first_stage: usize) -> RoutingRules {
        RoutingRules {
            mirror: Some(MirrorRules {
                first_stage,
                mirroring: fledge_spec::Mirroring::default(),
            }),
            ..Default::default()
        }
    }

    #[test]
    fn a_weight_only_router_refuses_copies_naming_the_stage() {
        let err = weight_only("smi", &mirrored(2)).unwrap_err();
        assert!(
            matches!(&err, RouterError::Unsupported { field, .. } if field == "stages[2].mirror"),
            "{err:?}"
        );
        assert!(
            err.to_string()
                .starts_with("the smi router cannot express `stages[2].mirror`"),
            "{err}"
        );
        weight_only("smi", &RoutingRules::default()).unwrap();
    }

    /// A match rule on a header or a cookie, to the canary or to stable.
    pub(crate) fn rule(
        header: Option<&str>,
        cookie: Option<&str>,
        value: &str,
        canary: bool,
    ) -> fledge_spec::MatchRule {
        fledge_spec::MatchRule {
            header: header.map(Into::into),
            cookie: cookie.map(Into::into),
            value: value.into(),
            target: if canary {
                fledge_spec::Target::Canary
            } else {
                fledge_spec::Target::Stable
            },
        }
    }
}

//! The compiled routing table that requests read: a validated [`Route`] with parsed
//! endpoints, lowercase header names and the counters of each arm already resolved.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use http::HeaderName;
use http::uri::Authority;

use crate::error::ProxyError;
use crate::mirror::{Mirror, MirrorQueue};
use crate::pool::{EndpointPool, Pools};
use crate::route::{Arm, MatchOn, MatchRule, Route, Stickiness, UpstreamGroup};
use crate::stats::{StatsRegistry, VersionStats};

/// One side of the split, as the data path needs it.
#[derive(Debug)]
pub(crate) struct Side {
    // Shown in Debug output and checked by tests; the data path needs only `stats`.
    #[cfg_attr(not(test), allow(dead_code))]
    pub(crate) role: Arm,
    pub(crate) version: String,
    endpoints: Vec<Arc<EndpointPool>>,
    next: AtomicUsize,
    pub(crate) stats: Arc<VersionStats>,
}

/// Where a sticky key or a match rule is read, with names pre-parsed.
#[derive(Debug, Clone)]
pub(crate) enum Key {
    Header(HeaderName),
    Cookie(String),
}

/// A match rule, compiled.
#[derive(Debug, Clone)]
pub(crate) struct Rule {
    pub(crate) key: Key,
    pub(crate) value: String,
    pub(crate) target: Arm,
}

/// Everything one request needs to choose and reach its upstream.
#[derive(Debug)]
pub(crate) struct RouteTable {
    pub(crate) route: Arc<Route>,
    pub(crate) stable: Arc<Side>,
    pub(crate) canary: Option<Arc<Side>>,
    pub(crate) weight: u8,
    pub(crate) sticky: Option<Key>,
    pub(crate) rules: Vec<Rule>,
    /// Copies of stable's requests to the canary, while the route asks for them.
    pub(crate) mirror: Option<Arc<Mirror>>,
}

// === impl Side ===

impl Side {
    /// Its endpoints' pools.
    #[cfg(test)]
    pub(crate) fn endpoints(&self) -> &[Arc<EndpointPool>] {
        &self.endpoints
    }

    /// The next endpoint, round-robin. A relaxed counter is enough: the only
    /// promise is an even spread.
    pub(crate) fn next_endpoint(&self) -> &Arc<EndpointPool> {
        let i = self.next.fetch_add(1, Ordering::Relaxed);
        &self.endpoints[i % self.endpoints.len()]
    }

    fn compile(
        group: &UpstreamGroup,
        role: Arm,
        stats: &StatsRegistry,
        pools: &Pools,
    ) -> Result<Self, ProxyError> {
        let endpoints = group
            .endpoints
            .iter()
            .map(|e| parse_endpoint(e).map(|a| pools.get(&a)))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            role,
            version: group.version.clone(),
            endpoints,
            next: AtomicUsize::new(0),
            stats: stats.get_or_create(&group.version, role),
        })
    }

    #[cfg(test)]
    pub(crate) fn for_test(role: Arm, endpoint: &str) -> Arc<Self> {
        let pools = Pools::for_test();
        Arc::new(Self {
            role,
            version: format!("{role}-v"),
            endpoints: vec![pools.get(&parse_endpoint(endpoint).expect("test endpoint"))],
            next: AtomicUsize::new(0),
            stats: Arc::default(),
        })
    }
}

// === impl RouteTable ===

impl RouteTable {
    /// Validates and compiles `route`, resolving each arm's counters in `stats`;
    /// copies to the canary take their slots from `mirrors`.
    pub(crate) fn compile(
        route: Route,
        stats: &StatsRegistry,
        pools: &Pools,
        mirrors: &Arc<MirrorQueue>,
    ) -> Result<Self, ProxyError> {
        route.validate()?;
        let stable = Arc::new(Side::compile(&route.stable, Arm::Stable, stats, pools)?);
        let canary = match &route.canary {
            Some(g) => Some(Arc::new(Side::compile(g, Arm::Canary, stats, pools)?)),
            None => None,
        };
        let sticky = route.stickiness.as_ref().map(|s| match s {
            Stickiness::Header { name } => Key::Header(header_name(name)),
            Stickiness::Cookie { name } => Key::Cookie(name.clone()),
        });
        let rules = route.match_rules.iter().map(compile_rule).collect();
        let mirror = match (&route.mirror, &canary) {
            (Some(policy), Some(canary)) => Mirror::compile(policy, canary, mirrors)?,
            _ => None,
        };
        Ok(Self {
            mirror,
            weight: route.canary_weight,
            route: Arc::new(route),
            stable,
            canary,
            sticky,
            rules,
        })
    }

    /// The arm for `role`; stable when there is no canary.
    pub(crate) fn arm(&self, role: Arm) -> &Arc<Side> {
        match (role, &self.canary) {
            (Arm::Canary, Some(c)) => c,
            _ => &self.stable,
        }
    }
}

fn compile_rule(rule: &MatchRule) -> Rule {
    let key = match &rule.on {
        MatchOn::Header { name } => Key::Header(header_name(name)),
        MatchOn::Cookie { name } => Key::Cookie(name.clone()),
    };
    Rule {
        key,
        value: rule.value.clone(),
        target: rule.target,
    }
}

/// `Route::validate` has checked the name; the fallback is never used.
fn header_name(name: &str) -> HeaderName {
    HeaderName::from_bytes(name.as_bytes()).unwrap_or(HeaderName::from_static("x-invalid"))
}

/// Parses `host:port` into the authority requests are sent to.
pub(crate) fn parse_endpoint(endpoint: &str) -> Result<Authority, ProxyError> {
    let invalid = |reason: &str| ProxyError::InvalidEndpoint {
        endpoint: endpoint.to_owned(),
        reason: reason.to_owned(),
    };
    let authority: Authority = endpoint
        .parse()
        .map_err(|e: http::uri::InvalidUri| invalid(&e.to_string()))?;
    if authority.as_str().contains('@') {
        return Err(invalid("must not carry user information"));
    }
    match authority.port_u16() {
        Some(0) => Err(invalid("port must not be 0")),
        Some(_) => Ok(authority),
        None => Err(invalid("missing port")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_need_host_and_port() {
        for good in ["127.0.0.1:9001", "backend.local:80", "[::1]:8080"] {
            assert!(parse_endpoint(good).is_ok(), "{good:?} refused");
        }
        for bad in ["127.0.0.1", "", "a b:80", "user@h:80", "h:0", "http://h:80"] {
            assert!(parse_endpoint(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn endpoints_rotate() {
        let registry = StatsRegistry::default();
        let group = UpstreamGroup {
            version: "v1".into(),
            endpoints: vec!["a:1".into(), "b:2".into(), "c:3".into()],
        };
        let arm = Side::compile(&group, Arm::Stable, &registry, &Pools::for_test()).unwrap();
        let seen: Vec<_> = (0..6)
            .map(|_| arm.next_endpoint().authority.host().to_owned())
            .collect();
        assert_eq!(seen, ["a", "b", "c", "a", "b", "c"]);
    }
}

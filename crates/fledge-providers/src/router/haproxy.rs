//! HAProxy as a traffic router, through its runtime API.
//!
//! The app's backend holds one stable and one canary server (named in the settings);
//! the router sets their weights to the stable and canary percentages with
//! `set weight <backend>/<server> <n>` and reads them back with `get weight`. One
//! connection per command, in HAProxy's non-interactive mode, over the unix socket or
//! TCP address of a `stats socket ... level admin` line.
//!
//! The weight that grows is set first: the split in between is then always between
//! the old and the new one, and never both 0 (which would answer 503 to everyone, as
//! going from 100% canary back to 0% would if the canary were lowered first).
//!
//! The backend must use a balance algorithm that honours weight changes at run time:
//! `roundrobin` (recommended), `leastconn`, `random(1)`. Not `static-rr` (weights fixed
//! at start) and not hash-based ones (`source`, `uri`, `hdr`), where weights move whole
//! hash ranges. A canary weight of 0 sends every new request to stable; requests
//! already in flight on the canary finish.
//!
//! With `manageAddresses`, [`TrafficRouter::set_endpoints`] also points the two
//! servers at the app's endpoints (`set server ... addr ... port ...`, checked with
//! `show servers state`), so a rollout can bring its own canary endpoint and a
//! promotion can move the stable server to the new version.

use std::path::PathBuf;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{AppliedWeights, Endpoints, EndpointsApplied, RouterError, TrafficRouter};

const KIND: &str = "haproxy";
/// HAProxy answers a command in a few bytes; anything longer is not what we asked.
const MAX_RESPONSE: u64 = 64 * 1024;

/// Settings of the HAProxy router (`router: {haproxy: {...}}`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct HaproxySettings {
    /// Path of the runtime API's unix socket (`stats socket /run/haproxy.sock mode
    /// 600 level admin` in haproxy.cfg). Exactly one of `socket` and `address`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub socket: Option<PathBuf>,
    /// `host:port` of the runtime API on TCP (`stats socket ipv4@127.0.0.1:9999 level
    /// admin`). Exactly one of `socket` and `address`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    /// The backend that serves the app.
    pub backend: String,
    /// The backend's server that runs the stable version.
    #[serde(default = "default_stable")]
    pub stable_server: String,
    /// The backend's server that runs the canary.
    #[serde(default = "default_canary")]
    pub canary_server: String,
    /// How long one runtime API command may take.
    #[serde(default = "default_timeout", with = "fledge_spec::duration::required")]
    pub timeout: Duration,
    /// Whether fledge points the two servers at the app's endpoints (`set server
    /// <backend>/<server> addr <ip> port <port>`): each version must then run at one
    /// `ip:port` (no host names: the runtime API does not resolve them). Off by
    /// default: the addresses in haproxy.cfg are used as they are.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub manage_addresses: bool,
}

fn default_stable() -> String {
    "stable".to_owned()
}
fn default_canary() -> String {
    "canary".to_owned()
}
fn default_timeout() -> Duration {
    Duration::from_secs(2)
}

/// Where the runtime API listens.
#[derive(Debug, Clone)]
enum Target {
    Unix(PathBuf),
    Tcp(String),
}

/// Sets an HAProxy backend's stable/canary server weights.
#[derive(Debug, Clone)]
pub struct HaproxyRouter {
    settings: HaproxySettings,
    target: Target,
}

// === impl HaproxyRouter ===

impl HaproxyRouter {
    /// A router for `settings`; checks that exactly one of `socket` and `address` is
    /// set and that the backend and server names are usable in a command.
    pub fn new(settings: HaproxySettings) -> Result<Self, RouterError> {
        let config = |reason: String| RouterError::Config {
            router: KIND,
            reason,
        };
        let target =
            match (&settings.socket, &settings.address) {
                (Some(p), None) => Target::Unix(p.clone()),
                (None, Some(a)) => Target::Tcp(a.clone()),
                _ => return Err(config(
                    "set exactly one of `socket` (a unix socket path) and `address` (host:port)"
                        .into(),
                )),
            };
        for (field, name) in [
            ("backend", &settings.backend),
            ("stableServer", &settings.stable_server),
            ("canaryServer", &settings.canary_server),
        ] {
            if name.is_empty() || name.contains(|c: char| c.is_whitespace() || c == ';' || c == '/')
            {
                return Err(config(format!(
                    "{field} `{name}` must be a non-empty name without spaces, `;` or `/`"
                )));
            }
        }
        if settings.stable_server == settings.canary_server {
            return Err(config("stableServer and canaryServer must differ".into()));
        }
        Ok(HaproxyRouter { settings, target })
    }

    fn target_text(&self) -> String {
        match &self.target {
            Target::Unix(p) => p.display().to_string(),
            Target::Tcp(a) => a.clone(),
        }
    }

    fn unreachable(&self, reason: String) -> RouterError {
        RouterError::Unreachable {
            router: KIND,
            target: self.target_text(),
            reason,
        }
    }

    /// Sends one command and returns HAProxy's answer.
    pub async fn command(&self, cmd: &str) -> Result<String, RouterError> {
        let exchange = async {
            let mut out = String::new();
            match &self.target {
                Target::Unix(path) => {
                    let mut s = tokio::net::UnixStream::connect(path).await?;
                    s.write_all(format!("{cmd}\n").as_bytes()).await?;
                    s.take(MAX_RESPONSE).read_to_string(&mut out).await?;
                }
                Target::Tcp(addr) => {
                    let mut s = tokio::net::TcpStream::connect(addr.as_str()).await?;
                    s.write_all(format!("{cmd}\n").as_bytes()).await?;
                    s.take(MAX_RESPONSE).read_to_string(&mut out).await?;
                }
            }
            Ok::<_, std::io::Error>(out)
        };
        match tokio::time::timeout(self.settings.timeout, exchange).await {
            Err(_) => Err(self.unreachable(format!(
                "no answer to `{cmd}` within {:?}",
                self.settings.timeout
            ))),
            Ok(Err(e)) => Err(self.unreachable(format!("`{cmd}`: {e}"))),
            Ok(Ok(out)) => Ok(out),
        }
    }

    async fn set(&self, server: &str, weight: u8) -> Result<(), RouterError> {
        let cmd = format!("set weight {}/{server} {weight}", self.settings.backend);
        let answer = self.command(&cmd).await?;
        // Success is an empty answer; anything else is HAProxy's complaint
        // ("No such server.", "Permission denied", "Unknown command").
        let answer = answer.trim();
        if answer.is_empty() {
            Ok(())
        } else {
            Err(RouterError::Rejected {
                router: KIND,
                target: self.target_text(),
                reason: format!("`{cmd}`: {answer}"),
            })
        }
    }

    async fn get(&self, server: &str) -> Result<u32, RouterError> {
        let cmd = format!("get weight {}/{server}", self.settings.backend);
        let answer = self.command(&cmd).await?;
        // "20 (initial 1)"
        answer
            .split_whitespace()
            .next()
            .and_then(|w| w.parse::<u32>().ok())
            .ok_or_else(|| RouterError::Rejected {
                router: KIND,
                target: self.target_text(),
                reason: format!("`{cmd}`: {}", answer.trim()),
            })
    }
}

impl HaproxyRouter {
    /// The `(address, port)` of each server of the backend, from `show servers
    /// state`.
    pub async fn server_addresses(&self) -> Result<Vec<(String, String, String)>, RouterError> {
        let cmd = format!("show servers state {}", self.settings.backend);
        let answer = self.command(&cmd).await?;
        let rejected = |reason: String| RouterError::Rejected {
            router: KIND,
            target: self.target_text(),
            reason: format!("`{cmd}`: {reason}"),
        };
        let header = answer
            .lines()
            .find_map(|l| l.strip_prefix("# "))
            .ok_or_else(|| rejected(answer.trim().to_owned()))?;
        let cols: Vec<&str> = header.split_whitespace().collect();
        let col = |name: &str| {
            cols.iter()
                .position(|c| *c == name)
                .ok_or_else(|| rejected(format!("no `{name}` column")))
        };
        let (name, addr, port) = (col("srv_name")?, col("srv_addr")?, col("srv_port")?);
        Ok(answer
            .lines()
            .filter(|l| !l.starts_with('#'))
            .map(|l| l.split_whitespace().collect::<Vec<_>>())
            .filter(|f| f.len() == cols.len())
            .map(|f| (f[name].to_owned(), f[addr].to_owned(), f[port].to_owned()))
            .collect())
    }

    /// Without `manageAddresses`: every endpoint written as `ip:port` must be where its
    /// server already is (names cannot be compared and are trusted).
    async fn check_unmanaged(&self, endpoints: &Endpoints) -> Result<(), RouterError> {
        let wanted: Vec<(&str, std::net::SocketAddr)> = [
            (self.settings.stable_server.as_str(), &endpoints.stable),
            (self.settings.canary_server.as_str(), &endpoints.canary),
        ]
        .into_iter()
        .filter_map(|(server, list)| match list.as_slice() {
            [one] => one.parse().ok().map(|a| (server, a)),
            _ => None,
        })
        .collect();
        if wanted.is_empty() {
            return Ok(());
        }
        let state = self.server_addresses().await?;
        for (server, addr) in wanted {
            let Some((_, ip, port)) = state.iter().find(|(name, _, _)| name == server) else {
                continue;
            };
            if *ip != addr.ip().to_string() || *port != addr.port().to_string() {
                return Err(RouterError::Rejected {
                    router: KIND,
                    target: self.target_text(),
                    reason: format!(
                        "the route puts {server} at {addr}, but {}/{server} is at {ip}:{port}: set manageAddresses: true, or change haproxy.cfg",
                        self.settings.backend
                    ),
                });
            }
        }
        Ok(())
    }

    async fn set_address(&self, server: &str, endpoint: &str) -> Result<(), RouterError> {
        let addr: std::net::SocketAddr = endpoint.parse().map_err(|_| RouterError::Config {
            router: KIND,
            reason: format!(
                "endpoint `{endpoint}` must be ip:port ([ip6]:port): HAProxy's runtime API does not resolve host names"
            ),
        })?;
        let (ip, port) = (addr.ip().to_string(), addr.port().to_string());
        let cmd = format!(
            "set server {}/{server} addr {ip} port {port}",
            self.settings.backend
        );
        let answer = self.command(&cmd).await?;
        // The answer is informational ("IP changed from ...", "no need to change ...");
        // reading the state back is what tells success.
        let state = self.server_addresses().await?;
        match state.iter().find(|(name, _, _)| name == server) {
            Some((_, a, p)) if *a == ip && *p == port => Ok(()),
            found => Err(RouterError::Rejected {
                router: KIND,
                target: self.target_text(),
                reason: format!(
                    "`{cmd}` answered {:?}; the server is now at {}",
                    answer.trim(),
                    found
                        .map(|(_, a, p)| format!("{a}:{p}"))
                        .unwrap_or_else(|| "(no such server)".into())
                ),
            }),
        }
    }
}

#[async_trait]
impl TrafficRouter for HaproxyRouter {
    fn kind(&self) -> &'static str {
        KIND
    }

    async fn set_weights(&self, canary_weight: u8) -> Result<AppliedWeights, RouterError> {
        let wanted = AppliedWeights::canary(canary_weight);
        let (stable, canary) = (&self.settings.stable_server, &self.settings.canary_server);
        let before = self.get(canary).await?;
        if u32::from(wanted.canary) >= before {
            self.set(canary, wanted.canary).await?;
            self.set(stable, wanted.stable).await?;
        } else {
            self.set(stable, wanted.stable).await?;
            self.set(canary, wanted.canary).await?;
        }
        let found = self.current().await?;
        if found != wanted {
            return Err(RouterError::Mismatch {
                router: KIND,
                target: self.target_text(),
                wanted,
                found,
            });
        }
        tracing::info!(backend = %self.settings.backend, canary = wanted.canary, "haproxy weights set");
        Ok(found)
    }

    async fn current(&self) -> Result<AppliedWeights, RouterError> {
        let stable = self.get(&self.settings.stable_server).await?;
        let canary = self.get(&self.settings.canary_server).await?;
        if stable + canary == 0 {
            return Err(RouterError::Rejected {
                router: KIND,
                target: self.target_text(),
                reason: format!(
                    "both servers of backend {} have weight 0: nothing is served",
                    self.settings.backend
                ),
            });
        }
        let pct = ((canary as f64 * 100.0) / (stable + canary) as f64).round() as u8;
        Ok(AppliedWeights::canary(pct))
    }

    async fn set_endpoints(&self, endpoints: &Endpoints) -> Result<EndpointsApplied, RouterError> {
        if !self.settings.manage_addresses {
            // haproxy.cfg owns the addresses; but a route that puts a version somewhere
            // the server is not must not look applied (after a promotion it would send
            // everyone back to the old version).
            self.check_unmanaged(endpoints).await?;
            return Ok(EndpointsApplied::Unmanaged);
        }
        let one = |what: &str, list: &[String]| match list {
            [] | [_] => Ok(list.first().cloned()),
            many => Err(RouterError::Config {
                router: KIND,
                reason: format!(
                    "{} {what} endpoints, but the backend has one {what} server: list the instances as servers in haproxy.cfg instead",
                    many.len()
                ),
            }),
        };
        let stable = one("stable", &endpoints.stable)?;
        let canary = one("canary", &endpoints.canary)?;
        // A missing canary endpoint leaves that server where it is (its weight is 0).
        if let Some(e) = &stable {
            self.set_address(&self.settings.stable_server, e).await?;
        }
        if let Some(e) = &canary {
            self.set_address(&self.settings.canary_server, e).await?;
        }
        tracing::info!(backend = %self.settings.backend, ?stable, ?canary, "haproxy server addresses set");
        Ok(EndpointsApplied::Applied)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> HaproxySettings {
        HaproxySettings {
            socket: Some("/nonexistent/fledge-test.sock".into()),
            address: None,
            backend: "be_app".into(),
            stable_server: "stable".into(),
            canary_server: "canary".into(),
            timeout: Duration::from_secs(1),
            manage_addresses: false,
        }
    }

    #[test]
    fn settings_must_name_one_target_and_clean_names() {
        assert!(HaproxyRouter::new(settings()).is_ok());
        let mut s = settings();
        s.address = Some("127.0.0.1:1".into());
        assert!(HaproxyRouter::new(s).is_err());
        let mut s = settings();
        s.backend = "be; shutdown sessions".into();
        assert!(HaproxyRouter::new(s).is_err());
        let mut s = settings();
        s.canary_server = "stable".into();
        assert!(HaproxyRouter::new(s).is_err());
    }

    #[test]
    fn deserializes_the_documented_shape() {
        let s: super::super::RouterSettings = serde_json::from_value(serde_json::json!({
            "haproxy": {"socket": "/run/haproxy.sock", "backend": "be_app", "stableServer": "s", "canaryServer": "c"}
        }))
        .unwrap();
        let super::super::RouterSettings::Haproxy(h) = s else {
            panic!("not haproxy")
        };
        assert_eq!(h.stable_server, "s");
        let typed: super::super::RouterSettings = serde_json::from_value(serde_json::json!({
            "type": "haproxy", "socket": "/run/haproxy.sock", "backend": "be_app", "stableServer": "s", "canaryServer": "c"
        }))
        .unwrap();
        assert_eq!(typed, super::super::RouterSettings::Haproxy(h));
        let serde_json::Value::Object(parts) =
            serde_json::json!({"address": "127.0.0.1:9999", "backend": "b"})
        else {
            unreachable!()
        };
        let from_parts = super::super::RouterSettings::from_parts("haproxy", parts).unwrap();
        assert_eq!(from_parts.kind(), "haproxy");
        let err =
            super::super::RouterSettings::from_parts("envoy", Default::default()).unwrap_err();
        assert!(err.contains("unknown router `envoy`"), "{err}");
        let builtin: super::super::RouterSettings =
            serde_json::from_value(serde_json::json!("builtin")).unwrap();
        assert_eq!(builtin, super::super::RouterSettings::Builtin);
        assert!(
            serde_json::from_value::<HaproxySettings>(
                serde_json::json!({"backend": "b", "sockt": "/x"})
            )
            .is_err()
        );
    }

    #[tokio::test]
    async fn missing_socket_is_unreachable() {
        let r = HaproxyRouter::new(settings()).unwrap();
        let err = r.set_weights(20).await.unwrap_err();
        assert!(matches!(err, RouterError::Unreachable { .. }), "{err}");
        assert!(
            err.to_string().contains("/nonexistent/fledge-test.sock"),
            "{err}"
        );
    }
}

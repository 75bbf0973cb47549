//! Alertmanager as a rollback trigger: the alerts that fire now, read from its v2
//! API (`GET /api/v2/alerts`), so a rollout fails as soon as an alert a team already
//! has for its service fires.
//!
//! One request per matcher set of the spec (`alerts[].match`), with Alertmanager's
//! own filter (`filter=service="checkout"`, every label ANDed) and only alerts that
//! are active: `silenced=false`, `inhibited=false`, `unprocessed=false`. The answer
//! is checked again here (state `active`, every label equal), so a server that
//! ignores a filter cannot fail a rollout on an alert that does not match.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::metrics::{MetricError, query_api, source_client};

const KIND: &str = "alertmanager";

/// Where the server reads alerts (`alertmanager:` in fledge.yaml).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct AlertmanagerSettings {
    /// Alertmanager's base URL, e.g. `http://127.0.0.1:9093`.
    pub url: String,
    /// How long one read may take before Alertmanager counts as unreachable.
    #[serde(default = "default_timeout", with = "fledge_spec::duration::required")]
    pub timeout: Duration,
}

fn default_timeout() -> Duration {
    Duration::from_secs(5)
}

/// A firing alert.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Alert {
    /// Its `alertname` label.
    pub name: String,
    /// All its labels.
    pub labels: BTreeMap<String, String>,
    /// When it started firing (RFC 3339).
    pub starts_at: String,
    /// Alertmanager's id of the alert.
    pub fingerprint: String,
}

/// A client of one Alertmanager.
#[derive(Debug, Clone)]
pub struct Alertmanager {
    client: reqwest::Client,
    url: String,
}

impl Alertmanager {
    /// A client for `settings`.
    pub fn new(settings: &AlertmanagerSettings) -> Result<Self, MetricError> {
        Ok(Self {
            client: source_client(KIND, settings.timeout)?,
            url: format!("{}/api/v2/alerts", settings.url.trim_end_matches('/')),
        })
    }

    /// The active alerts whose labels include every label of one of `matchers`,
    /// each once. An unreachable Alertmanager or a bad answer is an error, never
    /// "no alert".
    pub async fn firing(
        &self,
        matchers: &[BTreeMap<String, String>],
    ) -> Result<Vec<Alert>, MetricError> {
        let mut found: Vec<Alert> = Vec::new();
        for labels in matchers {
            let mut params = vec![
                ("active", "true".to_owned()),
                ("silenced", "false".to_owned()),
                ("inhibited", "false".to_owned()),
                ("unprocessed", "false".to_owned()),
            ];
            params.extend(labels.iter().map(|(k, v)| ("filter", matcher(k, v))));
            let filter: Vec<String> = labels.iter().map(|(k, v)| matcher(k, v)).collect();
            let alerts = query_api(
                &self.client,
                KIND,
                &self.url,
                &params,
                &[],
                &filter.join(","),
                parse,
            )
            .await?;
            for alert in alerts {
                let matches = labels.iter().all(|(k, v)| alert.labels.get(k) == Some(v));
                if matches && !found.iter().any(|f| f.fingerprint == alert.fingerprint) {
                    found.push(alert);
                }
            }
        }
        Ok(found)
    }
}

/// `name="value"`, with the value quoted as Alertmanager's matcher syntax wants.
fn matcher(name: &str, value: &str) -> String {
    let escaped = value.replace('\\', "\\\\").replace('"', "\\\"");
    format!("{name}=\"{escaped}\"")
}

/// The active alerts of a `GET /api/v2/alerts` answer (a list of gettable alerts).
fn parse(body: &Value) -> Result<Vec<Alert>, String> {
    let list = body.as_array().ok_or("expected a list of alerts")?;
    let mut alerts = Vec::new();
    for a in list {
        if a["status"]["state"].as_str() != Some("active") {
            continue;
        }
        let labels: BTreeMap<String, String> = a["labels"]
            .as_object()
            .ok_or("an alert without labels")?
            .iter()
            .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_owned())))
            .collect();
        alerts.push(Alert {
            name: labels.get("alertname").cloned().unwrap_or_default(),
            starts_at: a["startsAt"].as_str().unwrap_or_default().to_owned(),
            fingerprint: a["fingerprint"].as_str().unwrap_or_default().to_owned(),
            labels,
        });
    }
    Ok(alerts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_active_alerts_are_read() {
        let body = serde_json::json!([
            {"labels": {"alertname": "CanaryErrors", "service": "shop"}, "startsAt": "2026-12-03T10:00:00Z",
             "fingerprint": "a1", "status": {"state": "active", "silencedBy": [], "inhibitedBy": []}},
            {"labels": {"alertname": "Old", "service": "shop"}, "startsAt": "2026-12-03T09:00:00Z",
             "fingerprint": "b2", "status": {"state": "suppressed", "silencedBy": ["s"], "inhibitedBy": []}}
        ]);
        let alerts = parse(&body).unwrap();
        assert_eq!(alerts.len(), 1);
        assert_eq!(alerts[0].name, "CanaryErrors");
        assert_eq!(alerts[0].labels["service"], "shop");
        assert!(parse(&serde_json::json!({"error": "x"})).is_err());
    }

    #[test]
    fn matchers_quote_their_values() {
        assert_eq!(matcher("service", "shop"), "service=\"shop\"");
        assert_eq!(matcher("msg", "a\"b"), "msg=\"a\\\"b\"");
    }
}

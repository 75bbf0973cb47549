//! Alerts as a rollback trigger, end to end: a real Prometheus scrapes the server's
//! own `/metrics` and evaluates a rule on the canary's error ratio; it sends what
//! fires to a real Alertmanager, which the server reads. A rollout naming that alert
//! is rolled back with the alert as its reason; a silenced alert does not roll it
//! back.

mod support;

use std::time::{Duration, SystemTime};

use fledge_providers::alerts::AlertmanagerSettings;
use fledge_providers::testing::process::{Alertmanager, Prometheus};
use serde_json::{Value, json};
use support::rollout::{create, event, get, until_phase};
use support::{Load, Shop, json_answer, spec, wait_for};

/// Fires while more than 20% of the canary's recent requests fail.
const RULES: &str = r#"
groups:
  - name: shop
    rules:
      - alert: CanaryErrorRatio
        expr: >-
          sum by (app, version) (rate(fledge_proxy_errors_total{app="shop",role="canary"}[5s]))
          / sum by (app, version) (rate(fledge_proxy_requests_total{app="shop",role="canary"}[5s]))
          > 0.2
        labels:
          service: shop
"#;

/// A stage long enough that only the alert can end it, and no criteria.
const ALERTED: &str = "  - traffic: 50\n    duration: 10m\n";

/// The spec: `ALERTED`, failing on `CanaryErrorRatio` of this app and version.
fn alerted_spec() -> String {
    let mut text = spec("shop", "v2", ALERTED);
    text.push_str("alerts:\n  - match:\n      alertname: CanaryErrorRatio\n      service: \"{{app}}\"\n      version: \"{{version}}\"\n");
    text
}

/// A shop whose canary fails every other request, reading `alertmanager`, and a
/// Prometheus that scrapes it and alerts to `alertmanager`.
async fn world(alertmanager: &Alertmanager) -> (Shop, Prometheus) {
    let settings = AlertmanagerSettings {
        url: alertmanager.url.clone(),
        timeout: Duration::from_secs(2),
    };
    let shop = Shop::start_with(
        Some(2),
        |c| c.alertmanager = Some(settings),
        Default::default(),
    )
    .await;
    let prometheus = Prometheus::start_alerting(
        &[shop.server.api_addr()],
        Duration::from_secs(1),
        Some((RULES, alertmanager)),
    )
    .await
    .expect("prometheus starts");
    (shop, prometheus)
}

/// The alerts Alertmanager holds, silenced or not.
async fn alerts_held(alertmanager: &Alertmanager) -> Vec<Value> {
    let url = format!("{}/api/v2/alerts", alertmanager.url);
    match json_answer(reqwest::Client::new().get(url)).await {
        Ok(Value::Array(alerts)) => alerts,
        _ => Vec::new(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs prometheus and prometheus-alertmanager"]
async fn a_firing_alert_rolls_the_rollout_back_with_the_alert_as_reason() {
    let alertmanager = Alertmanager::start().await.expect("alertmanager starts");
    let (shop, _prometheus) = world(&alertmanager).await;
    let load = Load::start(shop.proxy().await, 4);
    let id = create(&shop.api, &alerted_spec()).await;
    let failed = until_phase(&shop.api, &id, Duration::from_secs(90), "Failed").await;
    load.stop().await;
    let ev = event(&failed, "Failed");
    let message = ev["message"].as_str().unwrap();
    assert!(
        message.contains("alert CanaryErrorRatio firing since")
            && message.contains("service=shop")
            && message.contains("version=v2"),
        "{message}"
    );
    assert_eq!(ev["actor"], "engine", "{ev}");
    assert_eq!(failed["canaryWeight"], 0);
    shop.assert_only_stable_serves(20).await;
    eprintln!("rolled back on: {message}");
    shop.server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs prometheus and prometheus-alertmanager"]
async fn a_silenced_alert_does_not_roll_back() {
    let alertmanager = Alertmanager::start().await.expect("alertmanager starts");
    // Silence the alert for an hour, as a team would during maintenance.
    let now = SystemTime::now();
    let silence = json!({
        "matchers": [{"name": "alertname", "value": "CanaryErrorRatio", "isRegex": false, "isEqual": true}],
        "startsAt": humantime::format_rfc3339_seconds(now).to_string(),
        "endsAt": humantime::format_rfc3339_seconds(now + Duration::from_secs(3600)).to_string(),
        "createdBy": "fledge-test",
        "comment": "maintenance",
    });
    let client = reqwest::Client::new();
    json_answer(
        client
            .post(format!("{}/api/v2/silences", alertmanager.url))
            .json(&silence),
    )
    .await
    .expect("the silence is created");
    let (shop, _prometheus) = world(&alertmanager).await;
    let load = Load::start(shop.proxy().await, 4);
    let id = create(&shop.api, &alerted_spec()).await;
    // The alert reaches Alertmanager, silenced.
    wait_for(Duration::from_secs(90), "the silenced alert", || async {
        let alerts = alerts_held(&alertmanager).await;
        match alerts
            .iter()
            .find(|a| a["labels"]["alertname"] == "CanaryErrorRatio")
        {
            Some(a) if a["status"]["state"] == "suppressed" => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    // Several analysis intervals later the rollout still runs.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rollout = get(&shop.api, &id).await;
    load.stop().await;
    assert_eq!(rollout["phase"], "Progressing", "{rollout}");
    shop.server.shutdown().await;
}

#[tokio::test]
async fn alerts_without_an_alertmanager_are_refused() {
    let shop = Shop::start(None).await;
    let reply = shop.api.post_yaml("/rollouts", &alerted_spec()).await;
    assert_eq!(reply.status, 400, "{}", reply.text);
    assert!(
        reply
            .text
            .contains("alerts: this server reads no Alertmanager"),
        "{}",
        reply.text
    );
    shop.server.shutdown().await;
}

#[tokio::test]
async fn an_unreachable_alertmanager_holds_the_rollout_like_a_dead_metric_source() {
    let settings = AlertmanagerSettings {
        url: "http://127.0.0.1:9".to_owned(),
        timeout: Duration::from_secs(1),
    };
    let shop = Shop::start_with(
        None,
        |c| c.alertmanager = Some(settings),
        Default::default(),
    )
    .await;
    let id = create(&shop.api, &alerted_spec()).await;
    let held = support::rollout::until(
        &shop.api,
        &id,
        Duration::from_secs(20),
        "an analysis error",
        |r| {
            r["events"]
                .as_array()
                .is_some_and(|e| e.iter().any(|e| e["kind"] == "AnalysisError"))
        },
    )
    .await;
    let ev = event(&held, "AnalysisError");
    assert!(
        ev["message"]
            .as_str()
            .unwrap()
            .contains("alertmanager at http://127.0.0.1:9"),
        "{ev}"
    );
    shop.server.shutdown().await;
}

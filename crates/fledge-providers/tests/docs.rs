//! Every configuration example in docs/integrations.md parses with the types the
//! server embeds, and builds the integration it describes.

use std::collections::BTreeMap;

use fledge_providers::hooks::HookContext;
use fledge_providers::metrics::{
    DatadogKeys, DatadogSource, LokiAuth, LokiSource, MetricsSettings, NewRelicSource, Secret,
};
use fledge_providers::notify::Notice;
use fledge_providers::router::{Endpoints, RouterSettings};
use fledge_spec::{Notification, RolloutSpec};
use serde::Deserialize;

const DOC: &str = include_str!("../../../docs/integrations.md");

/// The `fledge.yaml` shape of DESIGN.md, with this crate's settings types.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct ServerConfig {
    listen: Option<String>,
    apps: Vec<App>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct App {
    name: String,
    listen: Option<String>,
    stable: BTreeMap<String, serde_json::Value>,
    canary: BTreeMap<String, serde_json::Value>,
    #[serde(default)]
    router: RouterSettings,
    #[serde(default)]
    metrics: MetricsSettings,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct MetricsOnly {
    metrics: MetricsSettings,
}

/// The scrape job and rule file docs/integrations.md shows for Prometheus.
#[derive(Debug, Deserialize)]
struct PrometheusJob {
    rule_files: Vec<String>,
    scrape_configs: Vec<serde_json::Value>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RouterOnly {
    router: RouterSettings,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NotificationsOnly {
    notifications: Vec<Notification>,
}

/// The fenced blocks of `lang`, with their first line number, un-indented by the
/// fence's own indentation.
fn blocks(lang: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    // (first line, fence indentation, text)
    let mut current: Option<(usize, usize, String)> = None;
    for (i, line) in DOC.lines().enumerate() {
        let trimmed = line.trim_start();
        let indent = line.len() - trimmed.len();
        match &mut current {
            None if trimmed == format!("```{lang}") => {
                current = Some((i + 1, indent, String::new()))
            }
            Some(_) if trimmed == "```" => {
                let (first, _, text) = current.take().expect("open block");
                out.push((first, text));
            }
            Some((_, fence, text)) => {
                let cut = indent.min(*fence);
                text.push_str(&line[cut..]);
                text.push('\n');
            }
            None => {}
        }
    }
    out
}

fn build_metrics(m: &MetricsSettings) {
    match m {
        // Keys come from the environment in production; any key will do to build.
        MetricsSettings::Datadog(s) => {
            let keys = DatadogKeys {
                api_key: "k".into(),
                app_key: "k".into(),
            };
            DatadogSource::new(s.clone(), keys).expect("datadog example builds");
        }
        MetricsSettings::NewRelic(s) => {
            NewRelicSource::new(s.clone(), Secret::new("k")).expect("newrelic example builds");
        }
        MetricsSettings::Loki(s) => {
            // The auth the example asks for must be one the source accepts.
            let auth = match (&s.username, &s.token_env) {
                (Some(u), None) => LokiAuth::Basic {
                    username: u.clone(),
                    password: Secret::new("k"),
                },
                (None, Some(_)) => LokiAuth::Bearer(Secret::new("k")),
                _ => LokiAuth::None,
            };
            LokiSource::new(s.clone(), auth).expect("loki example builds");
        }
        other => {
            other.build().expect("metrics example builds");
        }
    }
}

/// Builds the router of the example at `origin`, between two sample endpoints.
fn build_router(router: &RouterSettings, origin: &str) {
    let endpoints = Endpoints {
        stable: vec!["10.0.0.11:9001".into()],
        canary: vec!["10.0.0.12:9001".into()],
    };
    router
        .build(&endpoints)
        .unwrap_or_else(|e| panic!("{origin}: {e}"));
}

#[test]
fn yaml_examples_parse_and_build() {
    let yaml = blocks("yaml");
    assert!(yaml.len() >= 8, "found only {} yaml blocks", yaml.len());
    for (line, text) in yaml {
        let origin = format!("docs/integrations.md:{line}");
        let first = text.lines().next().unwrap_or_default();
        if first.starts_with("# fledge.yaml") {
            let c: ServerConfig =
                fledge_spec::from_yaml_str(&text, &origin).unwrap_or_else(|e| panic!("{e}"));
            for app in &c.apps {
                build_metrics(&app.metrics);
                build_router(&app.router, &origin);
            }
        } else if first.starts_with("metrics:") {
            let m: MetricsOnly =
                fledge_spec::from_yaml_str(&text, &origin).unwrap_or_else(|e| panic!("{e}"));
            build_metrics(&m.metrics);
        } else if first.starts_with("router:") {
            let r: RouterOnly =
                fledge_spec::from_yaml_str(&text, &origin).unwrap_or_else(|e| panic!("{e}"));
            build_router(&r.router, &origin);
        } else if text.contains("\nstages:") {
            let spec: RolloutSpec =
                fledge_spec::parse_spec(&text, &origin).unwrap_or_else(|e| panic!("{e}"));
            assert!(!spec.stages.is_empty());
        } else if first.starts_with("# rollout spec") && text.contains("notifications:") {
            let n: NotificationsOnly =
                fledge_spec::from_yaml_str(&text, &origin).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(n.notifications.len(), 2);
        } else if first.starts_with("# prometheus.yml") {
            let p: PrometheusJob =
                fledge_spec::from_yaml_str(&text, &origin).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(p.scrape_configs.len(), 1, "{origin}");
            for rules in &p.rule_files {
                let shipped = std::path::Path::new("../../deploy/prometheus").join(rules);
                assert!(shipped.exists(), "{origin}: no {}", shipped.display());
            }
        } else {
            panic!("{origin}: a yaml example this test does not know how to check:\n{text}");
        }
    }
}

#[test]
fn json_examples_are_the_real_payloads() {
    let json = blocks("json");
    assert_eq!(json.len(), 2, "the hook payload and the webhook notice");
    let ctx: HookContext = serde_json::from_str(&json[0].1).expect("hook payload");
    assert_eq!(ctx.rollout.canary_weight, 50);
    let notice: Notice = serde_json::from_str(&json[1].1).expect("webhook notice");
    assert_eq!(notice.rollout.app, "shop");
}

/// The nginx file shown for the documented rules is what the router writes for them.
#[test]
fn the_documented_nginx_rules_file_is_what_the_router_writes() {
    use fledge_providers::router::{Desired, NginxRouter, RoutingRules, Upstreams};
    let (_, yaml) = blocks("yaml")
        .into_iter()
        .find(|(_, t)| t.contains("variable: fledge_shop"))
        .expect("the nginx rules settings");
    let r: RouterOnly = fledge_spec::from_yaml_str(&yaml, "docs").unwrap();
    let RouterSettings::Nginx(settings) = r.router else {
        panic!("not nginx")
    };
    let endpoints = Endpoints {
        stable: vec!["10.0.0.11:9001".into()],
        canary: vec!["10.0.0.12:9001".into()],
    };
    let router = NginxRouter::new(settings, endpoints).unwrap();
    let spec = fledge_spec::parse_spec(
        "app: shop\nversion: v2\nstages:\n  - traffic: 20\n    duration: 1m\n  - traffic: 100\n    final: true\n\
         match:\n  - {header: X-Canary, value: always}\n  - {cookie: beta, value: old, target: stable}\n\
         stickiness: {cookie: fledge, ttl: 24h}\n",
        "docs",
    )
    .unwrap();
    let desired = Desired {
        stable: Upstreams::new("v1", vec!["10.0.0.11:9001".into()]),
        canary: Some(Upstreams::new("v2", vec!["10.0.0.12:9001".into()])),
        canary_weight: 20,
        mirror: 0,
        rules: RoutingRules {
            matches: spec.match_rules.clone(),
            stickiness: spec.stickiness,
            close_upgraded_on_abort: false,
            mirror: None,
        },
    };
    let written = router.render_route(&desired).unwrap();
    let (_, shown) = blocks("nginx")
        .into_iter()
        .find(|(_, t)| t.starts_with("upstream be_shop_stable"))
        .expect("the documented rules file");
    assert!(
        written.contains(&shown),
        "docs show\n{shown}\nthe router writes\n{written}"
    );
}

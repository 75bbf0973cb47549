//! The metric sources a CanaryRollout's `spec.metrics` names, built by the real
//! factory: credentials read from Secrets through a mocked API server, then sent to a
//! fake of the vendor's API on loopback.

mod support;

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::Query;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use fledge_k8s::Error;
use fledge_k8s::controller::{MetricsFactory, SourceFactory};
use fledge_k8s::crd::MetricsSpec;
use fledge_providers::metrics::MetricSource;
use fledge_providers::testing::{TestServer, header_text, shop_observation};
use fledge_stats::Observation;
use serde_json::{Value, json};
use support::mock::Script;

const NS: &str = "shop";

/// A Secret `name` in the test namespace holding `key: value`, as the API server
/// answers it (the value base64-encoded).
fn secret(name: &str, key: &str, value_base64: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Secret",
           "metadata": {"name": name, "namespace": NS},
           "data": {key: value_base64}})
}

fn metrics(spec: Value) -> MetricsSpec {
    serde_json::from_value(spec).expect("a valid spec.metrics")
}

/// Builds the source `spec` names through the real factory, the API server expecting
/// one read of the Secret `name` and answering it with `key: value_base64`.
async fn build_reading_secret(
    spec: MetricsSpec,
    (name, key, value_base64): (&str, &str, &str),
) -> Result<Arc<dyn MetricSource>, Error> {
    Script::new()
        .expect("GET", &format!("/api/v1/namespaces/{NS}/secrets/{name}"))
        .respond(200, secret(name, key, value_base64))
        .run(|client| async move { SourceFactory.source(&client, NS, &spec).await })
        .await
}

/// Builds the source `spec` names reading one Secret (as [`build_reading_secret`]),
/// checks that it is of `kind` and that its debug output does not show the secret's
/// `hidden` text, and returns what it observes of `shop` v2.
async fn observe_shop(
    spec: MetricsSpec,
    secret: (&str, &str, &str),
    kind: &str,
    hidden: &str,
) -> Observation {
    let source = build_reading_secret(spec, secret)
        .await
        .expect("the source builds");
    assert_eq!(source.kind(), kind);
    assert!(!format!("{source:?}").contains(hidden));
    shop_observation(source.as_ref()).await
}

#[tokio::test]
async fn new_relic_sends_the_key_from_the_secret() {
    // NerdGraph counting 5 of everything, for the key "NRAK-secret" only.
    let nerdgraph = TestServer::start(axum::Router::new().route(
        "/graphql",
        post(|headers: HeaderMap| async move {
            if header_text(&headers, "api-key") != "NRAK-secret" {
                return (
                    StatusCode::UNAUTHORIZED,
                    axum::Json(json!({"errors": [{"message": "Invalid API key"}]})),
                );
            }
            let results = json!([{"count": 5}]);
            (
                StatusCode::OK,
                axum::Json(json!({"data": {"actor": {"account": {"nrql": {"results": results}}}}})),
            )
        }),
    ))
    .await
    .unwrap();
    let spec = metrics(json!({"newRelic": {
        "accountId": 1234567, "region": "eu", "baseUrl": nerdgraph.url(),
        "apiKeySecretRef": {"name": "newrelic", "key": "apiKey"},
        "timeout": "2s",
    }}));
    let secret = ("newrelic", "apiKey", "TlJBSy1zZWNyZXQ=");
    let obs = observe_shop(spec, secret, "newrelic", "NRAK-secret").await;
    assert_eq!((obs.canary.requests, obs.stable.requests), (5, 5));
}

#[tokio::test]
async fn loki_sends_the_tenant_and_the_password_from_the_secret() {
    // Loki answering 3 lines to every query with the tenant and "123456:loki-pw".
    let loki = TestServer::start(axum::Router::new().route(
        "/loki/api/v1/query",
        get(
            |headers: HeaderMap, Query(p): Query<HashMap<String, String>>| async move {
                let ok = header_text(&headers, "authorization") == "Basic MTIzNDU2Omxva2ktcHc="
                    && header_text(&headers, "x-scope-orgid") == "team-shop"
                    && p.contains_key("query");
                if !ok {
                    return (StatusCode::UNAUTHORIZED, "no org id / bad auth".to_owned());
                }
                let body = json!({"status": "success", "data": {"resultType": "vector",
                    "result": [{"metric": {}, "value": [1700000000, "3"]}]}});
                (StatusCode::OK, body.to_string())
            },
        ),
    ))
    .await
    .unwrap();
    let spec = metrics(json!({"loki": {
        "address": loki.url(), "tenant": "team-shop",
        "basicAuth": {"username": "123456", "passwordSecretRef": {"name": "loki", "key": "password"}},
    }}));
    let secret = ("loki", "password", "bG9raS1wdw==");
    let obs = observe_shop(spec, secret, "loki", "loki-pw").await;
    assert_eq!((obs.canary.requests, obs.canary.errors), (3, 3));
}

#[tokio::test]
async fn a_spec_naming_two_sources_or_a_bad_region_is_invalid_without_reading_secrets() {
    let key = json!({"name": "nr", "key": "k"});
    let cases = [
        (
            json!({"newRelic": {"accountId": 1, "apiKeySecretRef": key}, "loki": {"address": "http://l"}}),
            "exactly one of prometheus, datadog, web, newRelic and loki",
        ),
        (
            json!({"newRelic": {"accountId": 1, "region": "ap", "apiKeySecretRef": key}}),
            "spec.metrics.newRelic.region",
        ),
        (
            json!({"loki": {"address": "http://l", "bearerTokenSecretRef": key,
                            "basicAuth": {"username": "u", "passwordSecretRef": key}}}),
            "not both",
        ),
    ];
    for (spec, expected) in cases {
        let spec = metrics(spec);
        let err = Script::new()
            .run(|client| async move { SourceFactory.source(&client, NS, &spec).await })
            .await
            .unwrap_err();
        assert!(
            matches!(&err, Error::InvalidSpec(m) if m.contains(expected)),
            "{err}"
        );
    }
}

#[tokio::test]
async fn a_missing_secret_key_is_named_without_values() {
    let spec = metrics(json!({"loki": {"address": "http://l",
        "bearerTokenSecretRef": {"name": "loki", "key": "token"}}}));
    let err = build_reading_secret(spec, ("loki", "other", "c2VjcmV0LXZhbHVl"))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("spec.metrics.loki.bearerTokenSecretRef") && err.contains("token"),
        "{err}"
    );
    assert!(!err.contains("secret-value"), "{err}");
}

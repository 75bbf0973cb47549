//! The metric sources a CanaryRollout's `spec.metrics` names, built by the real
//! factory: credentials read from Secrets through a mocked API server, then sent to a
//! fake of the vendor's API on loopback.

mod support;

use std::collections::HashMap;

use axum::extract::Query;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use fledge_k8s::Error;
use fledge_k8s::controller::{MetricsFactory, SourceFactory};
use fledge_k8s::crd::MetricsSpec;
use fledge_providers::testing::{TestServer, shop_query};
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

fn header(headers: &HeaderMap, name: &str) -> String {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

fn metrics(spec: Value) -> MetricsSpec {
    serde_json::from_value(spec).expect("a valid spec.metrics")
}

#[tokio::test]
async fn new_relic_sends_the_key_from_the_secret() {
    // NerdGraph counting 5 of everything, for the key "NRAK-secret" only.
    let nerdgraph = TestServer::start(axum::Router::new().route(
        "/graphql",
        post(|headers: HeaderMap| async move {
            if header(&headers, "api-key") != "NRAK-secret" {
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
    let source = Script::new()
        .expect("GET", &format!("/api/v1/namespaces/{NS}/secrets/newrelic"))
        .respond(200, secret("newrelic", "apiKey", "TlJBSy1zZWNyZXQ="))
        .run(|client| async move { SourceFactory.source(&client, NS, &spec).await })
        .await
        .expect("the source builds");
    assert_eq!(source.kind(), "newrelic");
    assert!(!format!("{source:?}").contains("NRAK-secret"));
    let obs = source.observe(&shop_query("v2", vec![])).await.unwrap();
    assert_eq!((obs.canary.requests, obs.stable.requests), (5, 5));
}

#[tokio::test]
async fn loki_sends_the_tenant_and_the_password_from_the_secret() {
    // Loki answering 3 lines to every query with the tenant and "123456:loki-pw".
    let loki = TestServer::start(axum::Router::new().route(
        "/loki/api/v1/query",
        get(
            |headers: HeaderMap, Query(p): Query<HashMap<String, String>>| async move {
                let ok = header(&headers, "authorization") == "Basic MTIzNDU2Omxva2ktcHc="
                    && header(&headers, "x-scope-orgid") == "team-shop"
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
    let source = Script::new()
        .expect("GET", &format!("/api/v1/namespaces/{NS}/secrets/loki"))
        .respond(200, secret("loki", "password", "bG9raS1wdw=="))
        .run(|client| async move { SourceFactory.source(&client, NS, &spec).await })
        .await
        .expect("the source builds");
    assert_eq!(source.kind(), "loki");
    assert!(!format!("{source:?}").contains("loki-pw"));
    let obs = source.observe(&shop_query("v2", vec![])).await.unwrap();
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
    let err = Script::new()
        .expect("GET", &format!("/api/v1/namespaces/{NS}/secrets/loki"))
        .respond(200, secret("loki", "other", "c2VjcmV0LXZhbHVl"))
        .run(|client| async move { SourceFactory.source(&client, NS, &spec).await })
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("spec.metrics.loki.bearerTokenSecretRef") && err.contains("token"),
        "{err}"
    );
    assert!(!err.contains("secret-value"), "{err}");
}

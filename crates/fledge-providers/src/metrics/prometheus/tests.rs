use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::Json;
use axum::extract::Query;
use axum::http::StatusCode;
use axum::routing::get;
use serde_json::{Value, json};

use super::*;
use crate::metrics::CustomQuery;
use crate::metrics::instant::parse_response;
use crate::template;
use crate::testing::{TestServer, assert_counts, assert_custom};

/// A fake `/api/v1/query` answering from a table of query → body; unknown queries get
/// an empty vector. Records the queries it was asked.
async fn fake(answers: Vec<(String, Value)>) -> (TestServer, Arc<Mutex<Vec<String>>>) {
    let asked: Arc<Mutex<Vec<String>>> = Arc::default();
    let log = asked.clone();
    let answers: HashMap<String, Value> = answers.into_iter().collect();
    let app = axum::Router::new().route(
        "/api/v1/query",
        get(move |Query(params): Query<HashMap<String, String>>| {
            let q = params.get("query").cloned().unwrap_or_default();
            let at = params.get("time").cloned().unwrap_or_default();
            log.lock().unwrap().push(format!("{at} {q}"));
            let body = answers.get(&q).cloned().unwrap_or_else(|| vector(&[]));
            async move { Json(body) }
        }),
    );
    (TestServer::start(app).await.unwrap(), asked)
}

fn vector(values: &[(&[(&str, &str)], &str)]) -> Value {
    let result: Vec<Value> = values
        .iter()
        .map(|(labels, v)| {
            let metric: serde_json::Map<String, Value> = labels
                .iter()
                .map(|(k, l)| ((*k).to_owned(), json!(l)))
                .collect();
            json!({"metric": metric, "value": [1700000000.123, v]})
        })
        .collect();
    json!({"status": "success", "data": {"resultType": "vector", "result": result}})
}

fn query(custom: Vec<CustomQuery>) -> ObserveQuery {
    ObserveQuery {
        app: "shop".into(),
        stable_version: "v1".into(),
        canary_version: "v2".into(),
        window: Duration::from_secs(90),
        custom,
    }
}

fn q(template: &str, version: &str) -> String {
    template::render(
        template,
        &[("app", "shop"), ("version", version), ("window", "90s")],
    )
    .unwrap()
}

#[tokio::test]
async fn reads_counters_and_histogram_per_version() {
    let s = PrometheusSettings::new("http://unused");
    let mut answers = Vec::new();
    for (version, requests, errors) in [("v1", "1000", "10"), ("v2", "200", "")] {
        answers.push((q(&s.requests, version), vector(&[(&[], requests)])));
        if !errors.is_empty() {
            answers.push((q(&s.errors, version), vector(&[(&[], errors)])));
        }
        answers.push((
            q(&s.latency_buckets, version),
            vector(&[
                (&[("le", "0.1")], "50"),
                (&[("le", "0.5")], "190"),
                (&[("le", "+Inf")], "200"),
            ]),
        ));
    }
    answers.push((
        "sum(checkout_ok{version=\"v2\"})".into(),
        vector(&[(&[], "0.97")]),
    ));
    answers.push((
        "sum(checkout_ok{version=\"v1\"})".into(),
        vector(&[(&[], "0.99")]),
    ));
    let (server, asked) = fake(answers).await;
    let source = PrometheusSource::new(PrometheusSettings::new(server.url())).unwrap();

    let obs = source
        .observe(&query(vec![
            CustomQuery::gauge("checkout", "sum(checkout_ok{version=\"{{version}}\"})"),
            CustomQuery::gauge("missing", "sum(nothing{version=\"{{version}}\"})"),
        ]))
        .await
        .unwrap();

    // No 5xx series yet for the canary: zero errors, not "no data".
    assert_counts(&obs, (1000, 10), (200, 0));
    assert_eq!(obs.canary.latency.total(), 200);
    assert_eq!(obs.canary.latency.count_above(0.5), 10);
    assert_eq!(obs.canary.latency.count_above(0.1), 150);
    assert_custom(&obs, "checkout", 0.97, Some(0.99));
    assert!(!obs.custom.contains_key("missing"));
    let asked = asked.lock().unwrap();
    // Every query of one observation is evaluated at the same instant.
    let at = asked[0].split_once(' ').unwrap().0.to_owned();
    assert!(at.parse::<f64>().unwrap() > 1.7e9, "{at}");
    assert!(
        asked.iter().all(|a| a.starts_with(&format!("{at} "))),
        "{asked:?}"
    );
    let errors_q = r#"sum(http_requests_total{app="shop",version="v2",code=~"5.."})"#;
    assert!(asked.contains(&format!("{at} {errors_q}")), "{asked:?}");
}

#[tokio::test]
async fn empty_requests_is_no_data() {
    let (server, _) = fake(vec![]).await;
    let source = PrometheusSource::new(PrometheusSettings::new(server.url())).unwrap();
    let err = source.observe(&query(vec![])).await.unwrap_err();
    assert!(matches!(err, MetricError::NoData { .. }), "{err}");
    assert!(err.to_string().contains("http_requests_total"), "{err}");
}

#[tokio::test]
async fn api_errors_and_garbage_are_bad_responses() {
    let app = axum::Router::new().route(
        "/api/v1/query",
        get(|| async {
            (
                StatusCode::BAD_REQUEST,
                Json(json!({"status": "error", "errorType": "bad_data", "error": "parse error at char 5"})),
            )
        }),
    );
    let server = TestServer::start(app).await.unwrap();
    let source = PrometheusSource::new(PrometheusSettings::new(server.url())).unwrap();
    let err = source.observe(&query(vec![])).await.unwrap_err();
    assert!(matches!(err, MetricError::BadResponse { .. }), "{err}");
    assert!(err.to_string().contains("parse error at char 5"), "{err}");

    let app = axum::Router::new().route("/api/v1/query", get(|| async { "<html>hello</html>" }));
    let server = TestServer::start(app).await.unwrap();
    let source = PrometheusSource::new(PrometheusSettings::new(server.url())).unwrap();
    let err = source.observe(&query(vec![])).await.unwrap_err();
    assert!(err.to_string().contains("not JSON"), "{err}");
}

#[tokio::test]
async fn unreachable_prometheus_names_the_url() {
    let port = crate::testing::free_port().unwrap();
    let url = format!("http://127.0.0.1:{port}");
    let source = PrometheusSource::new(PrometheusSettings::new(url.clone())).unwrap();
    let err = source.observe(&query(vec![])).await.unwrap_err();
    assert!(matches!(err, MetricError::Unreachable { .. }), "{err}");
    assert!(err.to_string().contains(&url), "{err}");
}

#[test]
fn template_typos_are_config_errors() {
    let mut s = PrometheusSettings::new("http://x");
    s.requests = "sum(x{app=\"{{ap}}\"})".into();
    let err = PrometheusSource::new(s).unwrap_err();
    assert!(matches!(err, MetricError::Config { .. }), "{err}");
    assert!(err.to_string().contains("requests"), "{err}");
}

#[test]
fn parses_scalars_and_rejects_matrices() {
    let scalar =
        json!({"status": "success", "data": {"resultType": "scalar", "result": [1.0, "4"]}});
    assert_eq!(parse_response(&scalar), Ok(Sample::Scalar(4.0)));
    let matrix = json!({"status": "success", "data": {"resultType": "matrix", "result": []}});
    assert!(
        parse_response(&matrix)
            .unwrap_err()
            .contains("instant vector")
    );
    assert_eq!(escape(r#"a"b\c"#), r#"a\"b\\c"#);
}

#[test]
fn settings_deserialize_with_defaults_and_reject_unknown_fields() {
    let s: PrometheusSettings =
        serde_json::from_value(json!({"url": "http://p:9090", "timeout": "2s"})).unwrap();
    assert_eq!(s.timeout, Duration::from_secs(2));
    assert_eq!(s.requests, default_requests());
    assert!(
        serde_json::from_value::<PrometheusSettings>(json!({"url": "x", "querry": "y"})).is_err()
    );
}

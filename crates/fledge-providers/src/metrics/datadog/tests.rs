use std::collections::HashMap;

use axum::Json;
use axum::extract::Query;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::get;
use serde_json::json;

use super::*;
use crate::metrics::CustomQuery;
use crate::testing::{TestServer, assert_counts, assert_custom, header_text, shop_query};

fn keys() -> DatadogKeys {
    DatadogKeys {
        api_key: "api-secret-123".into(),
        app_key: "app-secret-456".into(),
    }
}

/// Answers like Datadog's `/api/v1/query`: 403 without the right keys, a 400 when
/// `from`/`to` are missing or `from > to`, and per-version series otherwise.
async fn fake_datadog() -> TestServer {
    let app = axum::Router::new().route(
        "/api/v1/query",
        get(
            |headers: HeaderMap, Query(p): Query<HashMap<String, String>>| async move {
                let key = |h: &str| header_text(&headers, h);
                if key("dd-api-key") != "api-secret-123"
                    || key("dd-application-key") != "app-secret-456"
                {
                    return (
                        StatusCode::FORBIDDEN,
                        Json(json!({"errors": ["Forbidden"]})),
                    );
                }
                let (Some(from), Some(to)) = (
                    p.get("from").and_then(|v| v.parse::<i64>().ok()),
                    p.get("to").and_then(|v| v.parse::<i64>().ok()),
                ) else {
                    return (
                        StatusCode::BAD_REQUEST,
                        Json(json!({"errors": ["from and to are required"]})),
                    );
                };
                if to - from != 120 {
                    return (
                        StatusCode::BAD_REQUEST,
                        Json(json!({"errors": ["unexpected window"]})),
                    );
                }
                let query = p.get("query").cloned().unwrap_or_default();
                let points: Vec<Value> = match query.as_str() {
                    q if q.contains("hits") && q.contains("version:v1") => {
                        vec![
                            json!([from * 1000, 400.0]),
                            json!([from * 1000 + 60_000, 600.0]),
                        ]
                    }
                    q if q.contains("hits") && q.contains("version:v2") => {
                        vec![
                            json!([from * 1000, 40.0]),
                            json!([from * 1000 + 60_000, null]),
                            json!([to * 1000, 60.0]),
                        ]
                    }
                    q if q.contains("errors") && q.contains("version:v2") => {
                        vec![json!([from * 1000, 7.0])]
                    }
                    q if q.starts_with("p95:") && q.contains("version:v2") => {
                        vec![json!([from * 1000, 180.0]), json!([to * 1000, 210.5])]
                    }
                    _ => vec![],
                };
                let series = if points.is_empty() {
                    vec![]
                } else {
                    vec![json!({
                        "metric": "trace.http.request.hits",
                        "scope": "service:shop",
                        "expression": query,
                        "interval": 60,
                        "length": points.len(),
                        "pointlist": points,
                    })]
                };
                (
                    StatusCode::OK,
                    Json(json!({
                        "status": "ok",
                        "res_type": "time_series",
                        "query": query,
                        "from_date": from * 1000,
                        "to_date": to * 1000,
                        "series": series,
                    })),
                )
            },
        ),
    );
    TestServer::start(app).await.unwrap()
}

fn settings(url: String) -> DatadogSettings {
    DatadogSettings {
        base_url: Some(url),
        ..Default::default()
    }
}

/// The shop's query over the two minutes the fake expects.
fn query() -> ObserveQuery {
    let p95 = CustomQuery::gauge(
        "dd_p95_ms",
        "p95:trace.http.request{service:{{app}},version:{{version}}}",
    );
    ObserveQuery {
        window: Duration::from_secs(120),
        ..shop_query("v2", vec![p95])
    }
}

#[tokio::test]
async fn sums_points_per_arm_and_sends_the_keys() {
    let server = fake_datadog().await;
    let source = DatadogSource::new(settings(server.url()), keys()).unwrap();
    let obs = source.observe(&query()).await.unwrap();
    assert_counts(&obs, (1000, 0), (100, 7));
    assert_eq!(obs.canary.latency.total(), 0, "Datadog gives no buckets");
    assert_custom(&obs, "dd_p95_ms", 210.5, None);
}

#[tokio::test]
async fn wrong_keys_are_a_bad_response_without_the_keys() {
    let server = fake_datadog().await;
    let wrong = DatadogKeys {
        api_key: "nope-secret".into(),
        app_key: "nope-secret".into(),
    };
    let source = DatadogSource::new(settings(server.url()), wrong).unwrap();
    let err = source.observe(&query()).await.unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, MetricError::BadResponse { .. }), "{text}");
    assert!(text.contains("403") && text.contains("Forbidden"), "{text}");
    assert!(!text.contains("secret"), "{text}");
    assert!(!format!("{source:?}").contains("secret"));
}

#[tokio::test]
async fn no_series_is_no_data() {
    let server = fake_datadog().await;
    let source = DatadogSource::new(settings(server.url()), keys()).unwrap();
    let mut q = query();
    q.canary_version = "v3".into();
    let err = source.observe(&q).await.unwrap_err();
    assert!(matches!(err, MetricError::NoData { .. }), "{err}");
}

#[test]
fn keys_come_from_the_named_variables() {
    let s = DatadogSettings {
        api_key_env: "FLEDGE_TEST_SURELY_UNSET_DD_KEY".into(),
        ..Default::default()
    };
    let err = DatadogKeys::from_env(&s).unwrap_err();
    assert!(
        err.to_string().contains("FLEDGE_TEST_SURELY_UNSET_DD_KEY"),
        "{err}"
    );
    assert_eq!(
        DatadogSettings::default().api_base(),
        "https://api.datadoghq.com"
    );
    let eu: DatadogSettings = serde_json::from_value(json!({"site": "datadoghq.eu"})).unwrap();
    assert_eq!(eu.api_base(), "https://api.datadoghq.eu");
}

#[test]
fn parses_datadog_errors() {
    let err = parse_response(&json!({"status": "error", "error": "Rule parse error"})).unwrap_err();
    assert!(err.contains("Rule parse error"));
    assert!(parse_response(&json!({"data": []})).is_err());
}

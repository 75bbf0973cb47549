use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::extract::Query;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::get;
use serde_json::{Value, json};

use super::*;
use crate::metrics::CustomQuery;
use crate::testing::{
    TestServer, answering, answers_by_query, assert_counts, assert_custom, assert_missing_series,
    header_text, shop_error, shop_observation, shop_query,
};

/// What the fake was asked: `time`, the query, the tenant and `Authorization` headers.
type Asked = Arc<Mutex<Vec<[String; 4]>>>;

/// An instant-query answer holding one sample per value.
fn vector(values: &[&str]) -> Value {
    let result: Vec<Value> = values
        .iter()
        .map(|v| json!({"metric": {}, "value": [1700000000.123, v]}))
        .collect();
    json!({"status": "success", "data": {"resultType": "vector", "result": result,
           "stats": {"summary": {"execTime": 0.001}}}})
}

/// Answers like Loki's `/loki/api/v1/query`: 400 without `query` or with a `time` that
/// is not a Unix timestamp, the table's answer for a known query, an empty vector for
/// any other.
async fn fake_loki(answers: Vec<(&str, Value)>) -> (TestServer, Asked) {
    let asked: Asked = Arc::default();
    let log = asked.clone();
    let answers = answers_by_query(answers);
    let app = axum::Router::new().route(
        "/loki/api/v1/query",
        get(
            move |headers: HeaderMap, Query(p): Query<HashMap<String, String>>| {
                let header = |h: &str| header_text(&headers, h).to_owned();
                let time = p.get("time").cloned().unwrap_or_default();
                let query = p.get("query").cloned();
                let answer = match (query, time.parse::<u128>()) {
                    (Some(q), Ok(_)) => {
                        log.lock().unwrap().push([
                            time,
                            q.clone(),
                            header("x-scope-orgid"),
                            header("authorization"),
                        ]);
                        let body = answers.get(&q).cloned().unwrap_or_else(|| vector(&[]));
                        (StatusCode::OK, body.to_string())
                    }
                    _ => (
                        StatusCode::BAD_REQUEST,
                        "invalid parameters: query and time are required".to_owned(),
                    ),
                };
                async move { answer }
            },
        ),
    );
    (TestServer::start(app).await.unwrap(), asked)
}

fn source(url: String) -> LokiSource {
    LokiSource::new(LokiSettings::new(url), LokiAuth::None).unwrap()
}

const REQ_V1: &str = r#"sum(count_over_time({app="shop",version="v1"}[60s]))"#;
const REQ_V2: &str = r#"sum(count_over_time({app="shop",version="v2"}[60s]))"#;
const ERR_V2: &str = r#"sum(count_over_time({app="shop",version="v2"} |= "error" [60s]))"#;

#[tokio::test]
async fn counts_log_lines_per_version_with_tenant_and_auth() {
    let (server, asked) = fake_loki(vec![
        (REQ_V1, vector(&["800", "200"])),
        (REQ_V2, vector(&["100"])),
        (ERR_V2, vector(&["12"])),
        (
            r#"max(max_over_time({app="shop",version="v2"} | unwrap queue_depth [60s]))"#,
            vector(&["41"]),
        ),
    ])
    .await;
    let settings = LokiSettings {
        tenant: Some("team-shop".into()),
        ..LokiSettings::new(server.url())
    };
    let auth = LokiAuth::Basic {
        username: "1234".into(),
        password: Secret::new("loki-secret"),
    };
    let source = LokiSource::new(settings, auth).unwrap();
    let custom = vec![CustomQuery::gauge(
        "queue_depth",
        r#"max(max_over_time({app="{{app}}",version="{{version}}"} | unwrap queue_depth [{{window}}]))"#,
    )];
    let obs = source.observe(&shop_query("v2", custom)).await.unwrap();
    assert_counts(&obs, (1000, 0), (100, 12));
    assert_custom(&obs, "queue_depth", 41.0, None);
    let asked = asked.lock().unwrap().clone();
    // "1234:loki-secret" in base64.
    let basic = "Basic MTIzNDpsb2tpLXNlY3JldA==";
    assert!(
        asked
            .iter()
            .all(|[_, _, tenant, auth]| tenant == "team-shop" && auth == basic),
        "{asked:?}"
    );
    let times: std::collections::BTreeSet<&String> = asked.iter().map(|[t, ..]| t).collect();
    assert_eq!(times.len(), 1, "one instant for the whole observation");
    assert!(asked.iter().any(|[_, q, ..]| q == ERR_V2), "{asked:?}");
    assert!(!format!("{source:?}").contains("secret"));
    assert!(!format!("{source:?}").contains("MTIzNDpsb2tpLXNlY3JldA"));
}

#[tokio::test]
async fn bearer_tokens_are_sent_as_such() {
    let (server, asked) = fake_loki(vec![(REQ_V1, vector(&["1"])), (REQ_V2, vector(&["1"]))]).await;
    let source = LokiSource::new(
        LokiSettings::new(server.url()),
        LokiAuth::Bearer(Secret::new("tok")),
    )
    .unwrap();
    shop_observation(&source).await;
    let asked = asked.lock().unwrap().clone();
    assert!(asked.iter().all(|[.., a]| a == "Bearer tok"), "{asked:?}");
}

#[tokio::test]
async fn no_log_lines_is_no_data_and_no_error_lines_zero() {
    let (both, _) = fake_loki(vec![(REQ_V1, vector(&["10"])), (REQ_V2, vector(&["5"]))]).await;
    let (stable_only, _) = fake_loki(vec![(REQ_V1, vector(&["10"]))]).await;
    assert_missing_series(&source(both.url()), 5, &source(stable_only.url()), REQ_V2).await;
}

#[tokio::test]
async fn errors_are_bad_responses_that_say_why() {
    let cases = [
        (
            StatusCode::OK,
            json!({"status": "error", "errorType": "bad_data", "error": "parse error at line 1"}),
            "parse error at line 1",
        ),
        (StatusCode::UNAUTHORIZED, json!("no org id"), "401"),
        (
            StatusCode::TOO_MANY_REQUESTS,
            json!("too many outstanding requests"),
            "429",
        ),
        (
            StatusCode::INTERNAL_SERVER_ERROR,
            json!("querier unavailable"),
            "500",
        ),
        (
            StatusCode::OK,
            json!({"status": "success", "data": {"resultType": "streams", "result": []}}),
            "streams",
        ),
    ];
    for (status, body, expected) in cases {
        let server = answering("/loki/api/v1/query", status, body).await.unwrap();
        let err = shop_error(
            &LokiSource::new(
                LokiSettings::new(server.url()),
                LokiAuth::Bearer(Secret::new("tok-secret")),
            )
            .unwrap(),
        )
        .await;
        let text = err.to_string();
        assert!(matches!(err, MetricError::BadResponse { .. }), "{text}");
        assert!(text.contains(expected), "{text}");
        assert!(!text.contains("secret"), "{text}");
    }
}

#[tokio::test]
async fn a_slow_answer_is_unreachable() {
    let server = crate::testing::never_answering().await.unwrap();
    let settings = LokiSettings {
        timeout: Duration::from_millis(200),
        ..LokiSettings::new(server.url())
    };
    let err = shop_error(&LokiSource::new(settings, LokiAuth::None).unwrap()).await;
    assert!(matches!(err, MetricError::Unreachable { .. }), "{err}");
}

#[test]
fn auth_comes_from_the_named_variables() {
    assert_eq!(
        LokiAuth::from_env(&LokiSettings::new("http://l")).unwrap(),
        LokiAuth::None
    );
    let basic = LokiSettings {
        username: Some("u".into()),
        password_env: Some("FLEDGE_TEST_SURELY_UNSET_LOKI_PASSWORD".into()),
        ..LokiSettings::new("http://l")
    };
    let err = LokiAuth::from_env(&basic).unwrap_err().to_string();
    assert!(
        err.contains("FLEDGE_TEST_SURELY_UNSET_LOKI_PASSWORD"),
        "{err}"
    );
    let both = LokiSettings {
        token_env: Some("X".into()),
        ..basic
    };
    assert!(LokiAuth::from_env(&both).is_err());
    let bad = LokiSettings {
        errors: "{{aap}}".into(),
        ..LokiSettings::new("http://l")
    };
    assert!(LokiSource::new(bad, LokiAuth::None).is_err());
}

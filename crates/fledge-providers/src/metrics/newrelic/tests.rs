use std::sync::{Arc, Mutex};

use axum::Json;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;

use super::*;
use crate::metrics::CustomQuery;
use crate::testing::{
    TestServer, answering, answers_by_query, assert_counts, assert_custom, assert_missing_series,
    header_text, shop_error, shop_query,
};

const KEY: &str = "nr-secret-key";

/// What the fake was asked: the account id and the NRQL of each query.
type Asked = Arc<Mutex<Vec<(u64, String)>>>;

/// Reads the account id and the NRQL string out of the documented document
/// `{ actor { account(id: N) { nrql(query: "...") { results } } } }`.
fn read_document(doc: &str) -> Option<(u64, String)> {
    let rest = doc.trim().strip_prefix("{ actor { account(id: ")?;
    let (id, rest) = rest.split_once(')')?;
    let rest = rest.trim_start().strip_prefix("{ nrql(query: ")?;
    let mut strings = serde_json::Deserializer::from_str(rest).into_iter::<String>();
    let nrql = strings.next()?.ok()?;
    let tail = &rest[strings.byte_offset()..];
    (tail.trim() == ") { results } } } }").then_some((id.parse().ok()?, nrql))
}

/// Answers like NerdGraph: 401 without the user key, a GraphQL error for a document
/// it cannot read, and the results of `answers` by NRQL (empty for any other query).
async fn fake_nerdgraph(answers: Vec<(&str, Value)>) -> (TestServer, Asked) {
    let asked: Asked = Arc::default();
    let log = asked.clone();
    let answers = answers_by_query(answers);
    let app = axum::Router::new().route(
        "/graphql",
        post(move |headers: HeaderMap, Json(body): Json<Value>| {
            let key = header_text(&headers, "api-key");
            let json_body = header_text(&headers, "content-type") == "application/json";
            let doc = body.get("query").and_then(Value::as_str).unwrap_or("");
            let answer = match (key == KEY, json_body, read_document(doc)) {
                (false, _, _) => (
                    StatusCode::UNAUTHORIZED,
                    json!({"errors": [{"message": "Invalid API key"}]}),
                ),
                (true, true, Some((account, nrql))) => {
                    let results = answers.get(&nrql).cloned().unwrap_or(json!([]));
                    log.lock().unwrap().push((account, nrql));
                    (
                        StatusCode::OK,
                        json!({"data": {"actor": {"account": {"nrql": {"results": results}}}}}),
                    )
                }
                _ => (
                    StatusCode::OK,
                    json!({"data": null, "errors": [{"message": format!("Syntax Error: {doc}")}]}),
                ),
            };
            async move { (answer.0, Json(answer.1)) }
        }),
    );
    (TestServer::start(app).await.unwrap(), asked)
}

fn source(url: String) -> NewRelicSource {
    let settings = NewRelicSettings {
        base_url: Some(url),
        ..NewRelicSettings::new(1234)
    };
    NewRelicSource::new(settings, Secret::new(KEY)).unwrap()
}

const REQ_V1: &str = "SELECT count(*) FROM Transaction WHERE appName = 'shop' AND tags.version = 'v1' SINCE 60 seconds ago";
const REQ_V2: &str = "SELECT count(*) FROM Transaction WHERE appName = 'shop' AND tags.version = 'v2' SINCE 60 seconds ago";
const ERR_V1: &str = "SELECT count(*) FROM Transaction WHERE appName = 'shop' AND tags.version = 'v1' AND error IS true SINCE 60 seconds ago";
const ERR_V2: &str = "SELECT count(*) FROM Transaction WHERE appName = 'shop' AND tags.version = 'v2' AND error IS true SINCE 60 seconds ago";

#[tokio::test]
async fn counts_each_version_with_the_documented_request() {
    let (server, asked) = fake_nerdgraph(vec![
        (REQ_V1, json!([{"count": 1000}])),
        (REQ_V2, json!([{"count": 100}])),
        (ERR_V1, json!([{"count": 0}])),
        (ERR_V2, json!([{"count": 7}])),
        (
            "SELECT percentile(duration, 95) FROM Transaction WHERE tags.version = 'v2'",
            json!([{"percentile.duration": {"95": 0.25}}]),
        ),
        (
            "SELECT count(*) FROM Checkout WHERE version = 'v2' AND failed FACET region",
            json!([{"facet": "eu", "region": "eu", "count": 3}, {"facet": "us", "region": "us", "count": 1}]),
        ),
        (
            "SELECT count(*) FROM Checkout WHERE version = 'v2' FACET region",
            json!([{"facet": "eu", "region": "eu", "count": 150}, {"facet": "us", "region": "us", "count": 50}]),
        ),
    ])
    .await;
    let custom = vec![
        CustomQuery::gauge(
            "nr_p95",
            "SELECT percentile(duration, 95) FROM Transaction WHERE tags.version = '{{version}}'",
        ),
        CustomQuery {
            name: "checkout_failures".into(),
            kind: crate::metrics::CustomKind::Ratio {
                bad: "SELECT count(*) FROM Checkout WHERE version = '{{version}}' AND failed FACET region".into(),
                total: "SELECT count(*) FROM Checkout WHERE version = '{{version}}' FACET region".into(),
            },
        },
    ];
    let obs = source(server.url())
        .observe(&shop_query("v2", custom))
        .await
        .unwrap();
    assert_counts(&obs, (1000, 0), (100, 7));
    assert_eq!(obs.canary.latency.total(), 0, "NRQL gives no buckets");
    assert_custom(&obs, "nr_p95", 0.25, None);
    assert_eq!(
        obs.custom.get("checkout_failures").map(|c| c.canary),
        Some(0.02)
    );
    let asked = asked.lock().unwrap().clone();
    assert!(
        asked.iter().all(|(account, _)| *account == 1234),
        "{asked:?}"
    );
    for q in [REQ_V1, REQ_V2, ERR_V1, ERR_V2] {
        assert!(
            asked.iter().any(|(_, n)| n == q),
            "never asked {q}: {asked:?}"
        );
    }
}

#[tokio::test]
async fn names_are_escaped_for_nrql_and_graphql() {
    let (server, asked) = fake_nerdgraph(vec![]).await;
    let mut q = shop_query("v2", vec![]);
    q.app = r#"o'brien "shop"\"#.into();
    let err = source(server.url()).observe(&q).await.unwrap_err();
    assert!(matches!(err, MetricError::NoData { .. }), "{err}");
    let asked = asked.lock().unwrap().clone();
    assert!(
        asked
            .iter()
            .any(|(_, n)| n.contains(r#"appName = 'o\'brien "shop"\\'"#)),
        "{asked:?}"
    );
}

#[tokio::test]
async fn empty_results_for_requests_are_no_data_and_for_errors_zero() {
    let (both, _) = fake_nerdgraph(vec![
        (REQ_V1, json!([{"count": 10}])),
        (REQ_V2, json!([{"count": 5}])),
    ])
    .await;
    let (stable_only, _) = fake_nerdgraph(vec![(REQ_V1, json!([{"count": 10}]))]).await;
    assert_missing_series(&source(both.url()), 5, &source(stable_only.url()), REQ_V2).await;
}

#[tokio::test]
async fn error_statuses_and_graphql_errors_are_bad_responses_without_the_key() {
    let (server, _) = fake_nerdgraph(vec![]).await;
    let wrong = NewRelicSource::new(
        NewRelicSettings {
            base_url: Some(server.url()),
            ..NewRelicSettings::new(1234)
        },
        Secret::new("nope-secret"),
    )
    .unwrap();
    let check = |err: MetricError, expected: &[&str]| {
        let text = err.to_string();
        assert!(matches!(err, MetricError::BadResponse { .. }), "{text}");
        assert!(expected.iter().all(|e| text.contains(e)), "{text}");
        assert!(!text.contains("secret") && !text.contains(KEY), "{text}");
    };
    check(shop_error(&wrong).await, &["401", "Invalid API key"]);
    let cases = [
        (
            StatusCode::TOO_MANY_REQUESTS,
            json!({"errors": [{"message": "rate limited"}]}),
            ["429", "rate limited"],
        ),
        (
            StatusCode::BAD_GATEWAY,
            json!("upstream down"),
            ["502", "upstream down"],
        ),
        // NerdGraph reports a bad query as a GraphQL error with status 200.
        (
            StatusCode::OK,
            json!({"data": {"actor": {"account": {"nrql": null}}},
                   "errors": [{"message": "NRQL Syntax Error: Error at line 1"}]}),
            ["NerdGraph error", "NRQL Syntax Error"],
        ),
    ];
    for (status, body, expected) in cases {
        let server = answering("/graphql", status, body).await.unwrap();
        check(shop_error(&source(server.url())).await, &expected);
    }
    assert!(!format!("{wrong:?}").contains("secret"));
}

#[tokio::test]
async fn a_slow_answer_is_unreachable() {
    let server = crate::testing::never_answering().await.unwrap();
    let settings = NewRelicSettings {
        base_url: Some(server.url()),
        timeout: Duration::from_millis(200),
        ..NewRelicSettings::new(1234)
    };
    let err = shop_error(&NewRelicSource::new(settings, Secret::new(KEY)).unwrap()).await;
    assert!(matches!(err, MetricError::Unreachable { .. }), "{err}");
}

#[test]
fn regions_pick_the_endpoint_and_the_key_comes_from_the_named_variable() {
    assert_eq!(
        NewRelicSettings::new(1).endpoint(),
        "https://api.newrelic.com/graphql"
    );
    let eu: NewRelicSettings =
        serde_json::from_value(json!({"accountId": 1, "region": "eu"})).unwrap();
    assert_eq!(eu.endpoint(), "https://api.eu.newrelic.com/graphql");
    assert!(
        serde_json::from_value::<NewRelicSettings>(json!({"accountId": 1, "region": "ap"}))
            .is_err()
    );
    let s = NewRelicSettings {
        api_key_env: "FLEDGE_TEST_SURELY_UNSET_NR_KEY".into(),
        ..NewRelicSettings::new(1)
    };
    let err = NewRelicSource::from_env(s).unwrap_err().to_string();
    assert!(err.contains("FLEDGE_TEST_SURELY_UNSET_NR_KEY"), "{err}");
}

#[test]
fn rows_hold_one_value() {
    assert_eq!(row_value(&json!({"count": 3})), Ok(Some(3.0)));
    assert_eq!(row_value(&json!({"average.duration": null})), Ok(None));
    assert_eq!(
        row_value(&json!({"percentile.duration": {"95": 0.5}})),
        Ok(Some(0.5))
    );
    assert!(row_value(&json!({"count": 1, "sum.duration": 2})).is_err());
    assert!(row_value(&json!({"facet": "x", "appName": "x"})).is_err());
    assert!(parse_response(&json!({"data": {}})).is_err());
}

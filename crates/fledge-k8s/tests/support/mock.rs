//! A mocked API server: the test scripts every request it expects (method, path,
//! checks on the body) and the answer, and the reconcile under test must make exactly
//! those requests in that order.

use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::BodyExt;
use kube::client::Body;
use serde_json::Value;
use tokio::task::JoinHandle;

/// Checks on a request's query string and JSON body.
pub type Check = Box<dyn FnOnce(&str, &Value) + Send>;

/// One expected request and its answer.
pub struct Exchange {
    /// `GET`, `POST`, `PUT`, `PATCH`.
    pub method: &'static str,
    /// The path, query string excluded.
    pub path: String,
    /// Checks on the request (query string and JSON body); panics on a mismatch.
    pub check: Check,
    /// The status code.
    pub status: u16,
    /// The answer's body.
    pub answer: Value,
}

/// An expected request with no body checks.
pub fn expect(method: &'static str, path: &str, status: u16, answer: Value) -> Exchange {
    Exchange {
        method,
        path: path.to_owned(),
        check: Box::new(|_, _| {}),
        status,
        answer,
    }
}

/// An expected request whose query and body `check` inspects.
pub fn expect_with(
    method: &'static str,
    path: &str,
    check: impl FnOnce(&str, &Value) + Send + 'static,
    status: u16,
    answer: Value,
) -> Exchange {
    Exchange {
        method,
        path: path.to_owned(),
        check: Box::new(check),
        status,
        answer,
    }
}

/// A `Status` answer for an error code.
pub fn status(code: u16, reason: &str) -> Value {
    serde_json::json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": format!("mock {reason}"), "reason": reason, "code": code})
}

/// A client and the task that serves `script`; the task panics on any request not in
/// the script, and the test must `verify` it to know every request came.
pub fn server(script: Vec<Exchange>) -> (kube::Client, JoinHandle<Vec<String>>) {
    let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let task = tokio::spawn(async move {
        let mut seen = Vec::new();
        for ex in script {
            let (request, send) = handle
                .next_request()
                .await
                .unwrap_or_else(|| panic!("the client stopped before {} {}", ex.method, ex.path));
            let method = request.method().to_string();
            let path = request.uri().path().to_owned();
            let query = request.uri().query().unwrap_or_default().to_owned();
            let bytes = request.into_body().collect().await.unwrap().to_bytes();
            let body: Value = if bytes.is_empty() {
                Value::Null
            } else {
                serde_json::from_slice(&bytes).unwrap()
            };
            assert_eq!(
                (method.as_str(), path.as_str()),
                (ex.method, ex.path.as_str()),
                "unexpected request; body {body}"
            );
            (ex.check)(&query, &body);
            seen.push(format!("{method} {path}"));
            let answer = Bytes::from(serde_json::to_vec(&ex.answer).unwrap());
            send.send_response(
                Response::builder()
                    .status(ex.status)
                    .header("content-type", "application/json")
                    .body(Body::from(answer.to_vec()))
                    .unwrap(),
            );
        }
        seen
    });
    (kube::Client::new(service, "default"), task)
}

/// Waits for the script to be served in full.
pub async fn verify(task: JoinHandle<Vec<String>>) -> Vec<String> {
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("the script was not served in time")
        .expect("the mock server panicked")
}

/// Like [`server`], but answers any request after the script with `200 {}` (for
/// tests that check only the first requests of each reconcile).
pub fn server_lenient(script: Vec<Exchange>) -> (kube::Client, JoinHandle<Vec<String>>) {
    let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let task = tokio::spawn(async move {
        let mut seen = Vec::new();
        let mut script = script.into_iter();
        while let Some((request, send)) = handle.next_request().await {
            let method = request.method().to_string();
            let path = request.uri().path().to_owned();
            let query = request.uri().query().unwrap_or_default().to_owned();
            let bytes = request.into_body().collect().await.unwrap().to_bytes();
            let body: Value = if bytes.is_empty() {
                Value::Null
            } else {
                serde_json::from_slice(&bytes).unwrap()
            };
            let (status, answer) = match script.next() {
                Some(ex) => {
                    assert_eq!(
                        (method.as_str(), path.as_str()),
                        (ex.method, ex.path.as_str()),
                        "unexpected request; body {body}"
                    );
                    (ex.check)(&query, &body);
                    (ex.status, ex.answer)
                }
                None => (200, serde_json::json!({})),
            };
            seen.push(format!("{method} {path}"));
            send.send_response(
                Response::builder()
                    .status(status)
                    .header("content-type", "application/json")
                    .body(Body::from(serde_json::to_vec(&answer).unwrap()))
                    .unwrap(),
            );
        }
        seen
    });
    (kube::Client::new(service, "default"), task)
}

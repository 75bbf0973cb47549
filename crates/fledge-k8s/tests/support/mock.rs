//! A mocked API server, scripted as the sequence of requests the code under test
//! must make, each with its answer:
//!
//! ```ignore
//! Script::new()
//!     .expect("GET", LEASE).respond(200, lease("a", t(0), 0))
//!     .expect("PUT", LEASE).body(|b| assert_eq!(b["spec"]["holderIdentity"], "a")).respond(200, renewed)
//!     .run(|client| async move { LeaderElector::new(client, ...).try_acquire_or_renew(at).await })
//!     .await
//! ```
//!
//! The server fails the test on the first request that is not the next one in the
//! script (naming it), on a request after the script, and when the code under test
//! stops before the script is done or hangs.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{Request, Response};
use http_body_util::BodyExt;
use kube::client::Body;
use serde_json::{Value, json};
use tokio::task::JoinHandle;

/// How long the code under test may take, and the server after it.
const TIMEOUT: Duration = Duration::from_secs(5);

/// Checks on a request's query string and JSON body (`null` when it has none).
type Check = Box<dyn FnOnce(&str, &Value) + Send>;

/// One expected request and its answer.
struct Exchange {
    method: &'static str,
    /// The path, query string excluded.
    path: String,
    checks: Vec<Check>,
    status: u16,
    answer: Value,
}

/// The requests the code under test must make, in order, and the answers.
#[must_use]
pub struct Script {
    exchanges: Vec<Exchange>,
    /// Answer `200 {}` to any request after the script instead of failing.
    then_anything: bool,
}

/// An expected request waiting for its answer.
#[must_use]
pub struct Expect {
    script: Script,
    exchange: Exchange,
}

/// A `Status` answer for an error code.
pub fn status(code: u16, reason: &str) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": format!("mock {reason}"), "reason": reason, "code": code})
}

// === impl Script ===

impl Script {
    /// An empty script: any request fails the test.
    pub fn new() -> Script {
        Script {
            exchanges: Vec::new(),
            then_anything: false,
        }
    }

    /// The next request must be `method path` (the path without its query string).
    pub fn expect(self, method: &'static str, path: &str) -> Expect {
        Expect {
            script: self,
            exchange: Exchange {
                method,
                path: path.to_owned(),
                checks: Vec::new(),
                status: 200,
                answer: Value::Null,
            },
        }
    }

    /// Appends what `part` expects (a sequence several tests share).
    pub fn then(self, part: impl FnOnce(Script) -> Script) -> Script {
        part(self)
    }

    /// After the script, answers any request with `200 {}`: for tests that check
    /// only the first requests of a call.
    pub fn then_anything(mut self) -> Script {
        self.then_anything = true;
        self
    }

    /// Runs `call` against a client of this script, under a timeout, then checks that
    /// every scripted request came; returns what `call` returned.
    pub async fn run<F, T>(self, call: impl FnOnce(kube::Client) -> F) -> T
    where
        F: Future<Output = T>,
    {
        let (client, server) = self.serve();
        let out = tokio::time::timeout(TIMEOUT, call(client))
            .await
            .unwrap_or_else(|_| panic!("hung; requests served: {:?}", server.seen()));
        server.verify().await;
        out
    }

    /// A client of this script and the server, to [`Server::verify`] once the client
    /// is dropped.
    pub fn serve(self) -> (kube::Client, Server) {
        let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let task = tokio::spawn(self.answer(handle, seen.clone()));
        (kube::Client::new(service, "default"), Server { task, seen })
    }

    async fn answer(
        self,
        mut handle: tower_test::mock::Handle<Request<Body>, Response<Body>>,
        seen: Arc<Mutex<Vec<String>>>,
    ) {
        let mut script = self.exchanges.into_iter();
        loop {
            let next = script.next();
            let Some((request, send)) = handle.next_request().await else {
                if let Some(ex) = next {
                    panic!("the client stopped before {} {}", ex.method, ex.path);
                }
                return;
            };
            let method = request.method().to_string();
            let path = request.uri().path().to_owned();
            let query = request.uri().query().unwrap_or_default().to_owned();
            let bytes = request.into_body().collect().await.unwrap().to_bytes();
            let body: Value = if bytes.is_empty() {
                Value::Null
            } else {
                serde_json::from_slice(&bytes).unwrap()
            };
            let request = format!("{method} {path}");
            let shown = match query.as_str() {
                "" => request.clone(),
                query => format!("{request}?{query}"),
            };
            let (status, answer) = match next {
                Some(ex) => {
                    assert!(
                        method == ex.method && path == ex.path,
                        "unexpected request {shown} where {} {} was expected; body {body}",
                        ex.method,
                        ex.path
                    );
                    for check in ex.checks {
                        check(&query, &body);
                    }
                    (ex.status, ex.answer)
                }
                None if self.then_anything => (200, json!({})),
                None => {
                    panic!("unexpected request {shown} after the script; body {body}")
                }
            };
            seen.lock().unwrap().push(request);
            send.send_response(
                Response::builder()
                    .status(status)
                    .header("content-type", "application/json")
                    .body(Body::from(serde_json::to_vec(&answer).unwrap()))
                    .unwrap(),
            );
        }
    }
}

// === impl Expect ===

impl Expect {
    /// Checks the request's query string and body; panics on a mismatch.
    pub fn check(mut self, check: impl FnOnce(&str, &Value) + Send + 'static) -> Expect {
        self.exchange.checks.push(Box::new(check));
        self
    }

    /// Checks the request's JSON body; panics on a mismatch.
    pub fn body(self, check: impl FnOnce(&Value) + Send + 'static) -> Expect {
        self.check(move |_, body| check(body))
    }

    /// Answers the request with `status` and the JSON `answer`.
    pub fn respond(mut self, status: u16, answer: Value) -> Script {
        self.exchange.status = status;
        self.exchange.answer = answer;
        self.script.exchanges.push(self.exchange);
        self.script
    }
}

/// The server of a [`Script`].
pub struct Server {
    task: JoinHandle<()>,
    seen: Arc<Mutex<Vec<String>>>,
}

// === impl Server ===

impl Server {
    /// The requests served so far, `METHOD path` each.
    pub fn seen(&self) -> Vec<String> {
        self.seen.lock().unwrap().clone()
    }

    /// Waits until the client is dropped and checks that the whole script was served
    /// and nothing else; returns the requests served.
    pub async fn verify(self) -> Vec<String> {
        let Server { task, seen } = self;
        tokio::time::timeout(TIMEOUT, task)
            .await
            .unwrap_or_else(|_| panic!("the client was not dropped; served: {seen:?}"))
            .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()));
        seen.lock().unwrap().clone()
    }
}

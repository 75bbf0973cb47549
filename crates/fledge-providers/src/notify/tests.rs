use std::sync::atomic::AtomicU32;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;

use super::*;
use crate::testing::TestServer;

fn notice(event: NotifyEvent, message: &str) -> Notice {
    Notice {
        event,
        rollout: RolloutInfo {
            id: "r-7".into(),
            app: "shop".into(),
            version: "v2".into(),
            stable_version: "v1".into(),
            phase: "Failed".into(),
            stage_index: Some(0),
            canary_weight: 0,
        },
        message: message.into(),
        actor: Some("engine".into()),
        evidence: Some(
            json!({"criterion": "error_rate < 0.5%", "canary": {"errors": 21, "requests": 1000}}),
        ),
        at: "2026-11-26T05:40:00Z".into(),
    }
}

fn fast() -> DispatcherSettings {
    DispatcherSettings {
        capacity: 16,
        concurrency: 2,
        backoff: Backoff {
            initial: Duration::from_millis(10),
            max: Duration::from_millis(40),
            attempts: 3,
        },
        timeout: Duration::from_secs(5),
    }
}

#[derive(Clone, Default)]
struct Inbox {
    bodies: Arc<Mutex<Vec<(String, Value)>>>,
    /// Answer 500 to this many requests first.
    fail_first: Arc<AtomicU32>,
    calls: Arc<AtomicU32>,
}

async fn inbox() -> (TestServer, Inbox) {
    let inbox = Inbox::default();
    async fn take(
        path: &'static str,
        State(i): State<Inbox>,
        Json(body): Json<Value>,
    ) -> StatusCode {
        i.calls.fetch_add(1, Ordering::SeqCst);
        if i.fail_first.load(Ordering::SeqCst) > 0 {
            i.fail_first.fetch_sub(1, Ordering::SeqCst);
            return StatusCode::INTERNAL_SERVER_ERROR;
        }
        i.bodies.lock().unwrap().push((path.to_owned(), body));
        StatusCode::OK
    }
    let app = axum::Router::new()
        .route("/hook", post(|s, b| take("/hook", s, b)))
        .route(
            "/services/T000/B000/secretpart",
            post(|s, b| take("/slack", s, b)),
        )
        .with_state(inbox.clone());
    (TestServer::start(app).await.unwrap(), inbox)
}

fn notification(kind: NotificationKind, url: String, events: Vec<NotifyEvent>) -> Notification {
    Notification { kind, url, events }
}

#[tokio::test]
async fn webhook_and_slack_get_their_formats_and_filters_apply() {
    let (server, inbox) = inbox().await;
    let d = Dispatcher::start(fast()).unwrap();
    let targets = vec![
        notification(
            NotificationKind::Webhook,
            format!("{}/hook", server.url()),
            vec![],
        ),
        notification(
            NotificationKind::Slack,
            format!("{}/services/T000/B000/secretpart", server.url()),
            vec![NotifyEvent::Failed, NotifyEvent::Succeeded],
        ),
    ];
    let failed = notice(NotifyEvent::Failed, "error_rate 2.1% > 0.5%");
    d.notify(&targets, failed.clone());
    d.notify(
        &targets,
        notice(NotifyEvent::StageStarted, "stage 2 at 50%"),
    );
    assert!(d.flush(Duration::from_secs(10)).await);

    let bodies = inbox.bodies.lock().unwrap().clone();
    assert_eq!(bodies.len(), 3, "{bodies:?}");
    let hooks: Vec<&Value> = bodies
        .iter()
        .filter(|(p, _)| p == "/hook")
        .map(|(_, b)| b)
        .collect();
    assert_eq!(hooks.len(), 2);
    assert!(hooks.contains(&&serde_json::to_value(&failed).unwrap()));
    let slack: Vec<&Value> = bodies
        .iter()
        .filter(|(p, _)| p == "/slack")
        .map(|(_, b)| b)
        .collect();
    assert_eq!(
        slack.len(),
        1,
        "slack only subscribed to failed and succeeded"
    );
    let msg = slack[0];
    assert_eq!(
        msg["text"],
        ":x: shop v2 failed and was rolled back: error_rate 2.1% > 0.5%"
    );
    let blocks = msg["blocks"].as_array().unwrap();
    assert_eq!(blocks[0]["type"], "header");
    assert!(blocks.iter().any(|b| {
        b["text"]["text"]
            .as_str()
            .unwrap_or("")
            .contains("error_rate < 0.5%")
    }));
    assert_eq!(
        d.stats(),
        DispatchStats {
            delivered: 3,
            ..Default::default()
        }
    );
}

#[tokio::test]
async fn failures_are_retried_with_backoff() {
    let (server, inbox) = inbox().await;
    inbox.fail_first.store(2, Ordering::SeqCst);
    let d = Dispatcher::start(fast()).unwrap();
    let target = [notification(
        NotificationKind::Webhook,
        format!("{}/hook", server.url()),
        vec![],
    )];
    d.notify(&target, notice(NotifyEvent::Started, "started"));
    assert!(d.flush(Duration::from_secs(10)).await);
    assert_eq!(inbox.calls.load(Ordering::SeqCst), 3);
    assert_eq!(inbox.bodies.lock().unwrap().len(), 1);
    assert_eq!(d.stats().delivered, 1);

    // Past the attempts it gives up and counts the failure; nothing else happens.
    inbox.fail_first.store(100, Ordering::SeqCst);
    d.notify(&target, notice(NotifyEvent::Aborted, "aborted"));
    assert!(d.flush(Duration::from_secs(10)).await);
    assert_eq!(d.stats().failed, 1);
    assert_eq!(inbox.calls.load(Ordering::SeqCst), 3 + 3);
}

#[tokio::test]
async fn unreachable_endpoints_do_not_leak_the_url() {
    let port = crate::testing::free_port().unwrap();
    let n = notification(
        NotificationKind::Slack,
        format!("http://127.0.0.1:{port}/services/T1/B1/verysecret"),
        vec![],
    );
    let notifier =
        WebhookNotifier::new(&n, crate::tls::http_client(Duration::from_secs(2)).unwrap());
    let err = notifier
        .send(&notice(NotifyEvent::Failed, "x"))
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("127.0.0.1") && !text.contains("verysecret"),
        "{text}"
    );
    assert!(!format!("{notifier:?}").contains("verysecret"));
}

/// Blocks every send until released, and records what it sent.
#[derive(Debug)]
struct Blocking {
    started: Notify,
    release: Semaphore,
    sent: Mutex<Vec<String>>,
}

impl Default for Blocking {
    fn default() -> Self {
        Blocking {
            started: Notify::new(),
            release: Semaphore::new(0),
            sent: Mutex::default(),
        }
    }
}

#[async_trait]
impl Notifier for Blocking {
    async fn send(&self, notice: &Notice) -> Result<(), NotifyError> {
        self.started.notify_one();
        let permit = self.release.acquire().await.expect("semaphore open");
        permit.forget();
        self.sent.lock().unwrap().push(notice.message.clone());
        Ok(())
    }
}

#[tokio::test]
async fn a_full_queue_drops_the_oldest_and_never_blocks() {
    let d = Dispatcher::start(DispatcherSettings {
        capacity: 2,
        concurrency: 1,
        ..fast()
    })
    .unwrap();
    let stuck = Arc::new(Blocking::default());
    d.enqueue(stuck.clone(), Arc::new(notice(NotifyEvent::Started, "n1")));
    // n1 is being delivered (and hangs); the queue behind it holds two.
    stuck.started.notified().await;
    for i in 2..=5 {
        d.enqueue(
            stuck.clone(),
            Arc::new(notice(NotifyEvent::StageStarted, &format!("n{i}"))),
        );
    }
    assert_eq!(d.stats().dropped, 2);
    assert_eq!(d.stats().pending, 3);
    stuck.release.add_permits(10);
    assert!(d.flush(Duration::from_secs(10)).await);
    assert_eq!(*stuck.sent.lock().unwrap(), vec!["n1", "n4", "n5"]);
}

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use axum::Json;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;

use super::*;
use crate::testing::{TestServer, header_text};

fn ctx(point: HookList) -> HookContext {
    HookContext {
        hook: point,
        rollout: RolloutInfo {
            id: "r-42".into(),
            app: "shop".into(),
            version: "v2".into(),
            stable_version: "v1".into(),
            phase: "Progressing".into(),
            stage_index: Some(1),
            canary_weight: 50,
        },
        event: None,
    }
}

fn exec(argv: &[&str], timeout: Duration) -> Hook {
    Hook::Exec(ExecHook {
        command: argv.iter().map(|s| s.to_string()).collect(),
        timeout,
    })
}

fn http(url: String) -> Hook {
    Hook::Http(HttpHook {
        url,
        method: "POST".into(),
        headers: BTreeMap::from([("Authorization".into(), "Bearer hook-secret".into())]),
        timeout: Duration::from_secs(5),
    })
}

fn runner() -> HookRunner {
    HookRunner::new(DEFAULT_MAX_OUTPUT).unwrap()
}

/// Runs `hook`, the first of its point, at `point` with the default runner.
async fn run_hook(hook: &Hook, point: HookList) -> HookOutcome {
    runner().run(hook, 0, &ctx(point)).await
}

/// Asserts that `out` is a failure whose error says `why`.
fn assert_failed_with(out: &HookOutcome, why: &str) {
    assert!(!out.success, "{out:?}");
    assert!(
        out.error.as_deref().is_some_and(|e| e.contains(why)),
        "{out:?}"
    );
}

#[tokio::test]
async fn exec_gets_the_context_and_its_output_is_kept() {
    let hook = exec(
        &[
            "sh",
            "-c",
            "cat; echo; echo \"$FLEDGE_APP $FLEDGE_HOOK $FLEDGE_STAGE $FLEDGE_CANARY_WEIGHT\"; echo oops >&2",
        ],
        Duration::from_secs(10),
    );
    let out = run_hook(&hook, HookList::BeforePromotion).await;
    assert!(out.success, "{out:?}");
    assert_eq!(out.exit_code, Some(0));
    let (json, env) = out.stdout.split_once('\n').unwrap();
    let sent: HookContext = serde_json::from_str(json).unwrap();
    assert_eq!(sent, ctx(HookList::BeforePromotion));
    assert_eq!(env.trim(), "shop beforePromotion 1 50");
    assert_eq!(out.stderr.trim(), "oops");
}

#[tokio::test]
async fn exec_runs_without_a_shell_and_reports_failure() {
    let out = run_hook(
        &exec(&["echo", "$HOME;", "x"], Duration::from_secs(5)),
        HookList::AfterRollback,
    )
    .await;
    assert_eq!(out.stdout, "$HOME; x\n");
    let out = run_hook(
        &exec(&["sh", "-c", "exit 3"], Duration::from_secs(5)),
        HookList::AfterRollback,
    )
    .await;
    assert!(!out.success);
    assert_eq!(out.exit_code, Some(3));
    let out = run_hook(
        &exec(&["/nonexistent/scale-down"], Duration::from_secs(5)),
        HookList::AfterRollback,
    )
    .await;
    assert_failed_with(&out, "cannot start `/nonexistent/scale-down`");
}

#[tokio::test]
async fn exec_output_is_bounded() {
    let out = HookRunner::new(1000)
        .unwrap()
        .run(
            &exec(
                &["sh", "-c", "head -c 200000 /dev/zero | tr '\\0' x"],
                Duration::from_secs(10),
            ),
            0,
            &ctx(HookList::OnEvent),
        )
        .await;
    assert!(out.success, "{out:?}");
    assert_eq!(out.stdout.len(), 1000);
    assert!(out.truncated);
}

#[tokio::test]
async fn exec_timeout_kills_the_whole_process_group() {
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("child.pid");
    let script = format!("sleep 30 & echo $! > {}; wait", pidfile.display());
    let out = run_hook(
        &exec(&["sh", "-c", &script], Duration::from_millis(500)),
        HookList::BeforeRollout,
    )
    .await;
    assert_failed_with(&out, "timed out after 500ms");
    let pid = std::fs::read_to_string(&pidfile).unwrap().trim().to_owned();
    // The background `sleep` was in the hook's process group: it must be gone.
    let gone = crate::testing::wait_for(Duration::from_secs(5), || {
        let pid = pid.clone();
        async move {
            let alive = std::path::Path::new(&format!("/proc/{pid}")).exists()
                && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
                    .unwrap_or_default()
                    .contains(") Z ");
            (!alive).then_some(())
        }
    })
    .await;
    assert!(gone.is_some(), "grandchild {pid} survived the timeout");
}

#[tokio::test]
async fn http_hook_posts_the_context_and_needs_a_2xx() {
    let seen: Arc<Mutex<Vec<(String, HookContext)>>> = Arc::default();
    let log = seen.clone();
    let app = axum::Router::new()
        .route(
            "/ok",
            post(move |headers: HeaderMap, Json(body): Json<HookContext>| {
                let auth = header_text(&headers, "authorization").to_owned();
                log.lock().unwrap().push((auth, body));
                async { "approved" }
            }),
        )
        .route(
            "/no",
            post(|| async { (StatusCode::SERVICE_UNAVAILABLE, "not now") }),
        );
    let server = TestServer::start(app).await.unwrap();

    let out = run_hook(
        &http(format!("{}/ok?token=abc", server.url())),
        HookList::BeforePromotion,
    )
    .await;
    assert!(out.success, "{out:?}");
    assert_eq!(out.http_status, Some(200));
    assert_eq!(out.stdout, "approved");
    assert_eq!(
        out.target,
        format!("{}/ok", server.url()),
        "query string is not recorded"
    );
    let seen = seen.lock().unwrap().clone();
    assert_eq!(
        seen,
        vec![(
            "Bearer hook-secret".to_owned(),
            ctx(HookList::BeforePromotion)
        )]
    );

    let out = run_hook(
        &http(format!("{}/no", server.url())),
        HookList::BeforePromotion,
    )
    .await;
    assert!(!out.success);
    assert_eq!(out.http_status, Some(503));
    assert_eq!(out.stdout, "not now");

    let port = crate::testing::free_port().unwrap();
    let out = run_hook(
        &http(format!("http://127.0.0.1:{port}/gate")),
        HookList::BeforePromotion,
    )
    .await;
    assert_failed_with(&out, "unreachable");
    assert!(!format!("{out:?}").contains("hook-secret"));
}

#[tokio::test]
async fn gates_stop_at_the_first_failure_and_other_points_run_everything() {
    let failing = vec![
        exec(&["true"], Duration::from_secs(5)),
        exec(&["false"], Duration::from_secs(5)),
        exec(&["true"], Duration::from_secs(5)),
    ];
    let hooks = Hooks {
        before_promotion: failing.clone(),
        after_rollback: failing,
        ..Default::default()
    };
    let gate = run_point(&runner(), &hooks, &ctx(HookList::BeforePromotion)).await;
    assert!(!gate.passed);
    assert_eq!(gate.outcomes.len(), 2);
    let after = run_point(&runner(), &hooks, &ctx(HookList::AfterRollback)).await;
    assert!(after.passed);
    assert_eq!(after.outcomes.len(), 3);
    assert!(!after.outcomes[1].success);
    let none = run_point(&runner(), &hooks, &ctx(HookList::EachStage)).await;
    assert!(none.passed && none.outcomes.is_empty());
}

#[tokio::test]
async fn http_hook_that_is_never_answered_times_out() {
    // Accepts connections and never answers.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let silent = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((conn, _)) = listener.accept().await {
            held.push(conn);
        }
    });
    let hook = Hook::Http(HttpHook {
        url: format!("http://{addr}/gate"),
        method: "POST".into(),
        headers: BTreeMap::new(),
        timeout: Duration::from_millis(300),
    });
    let started = std::time::Instant::now();
    let out = run_hook(&hook, HookList::BeforePromotion).await;
    silent.abort();
    assert!(started.elapsed() < Duration::from_secs(5), "{out:?}");
    assert_failed_with(&out, "timed out after 300ms without an answer");
}

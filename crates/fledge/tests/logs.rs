//! The logs of the real `fledge serve` and `fledge operator run` processes, as a log
//! collector reads them from a pipe: no ANSI escapes, one JSON object per line with
//! `--log-format json`, one access log line per API request that names the token's
//! owner and never the token.

mod support;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use hyper::StatusCode;
use serde_json::Value;
use support::process::ChildGuard;
use support::serve::free_addr;
use support::{Http, backend, non_empty, wait_for};

const LIMIT: Duration = Duration::from_secs(30);
const TOKEN: &str = "log-test-token-3f9a1c";

/// Every line of `log` as JSON, after checking that none holds an escape.
fn json_lines(log: &str) -> Vec<Value> {
    assert!(!log.contains('\x1b'), "ANSI escape in the log:\n{log}");
    log.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

/// Starts the binary with `args`, stderr to `log`, `RUST_LOG=info` and `NO_COLOR`
/// unset, so that only the missing terminal keeps colour away.
fn spawn(args: &[&str], log: &Path, env: &[(&str, &str)]) -> ChildGuard {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_fledge"));
    cmd.args(args)
        .env("RUST_LOG", "info")
        .env_remove("NO_COLOR")
        .envs(env.iter().copied())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap());
    ChildGuard::spawn(cmd, false).expect("the fledge binary starts")
}

fn read(log: &Path) -> String {
    std::fs::read_to_string(log).unwrap_or_default()
}

#[tokio::test]
async fn serve_logs_json_lines_and_one_access_line_per_request_without_the_token() {
    let dir = tempfile::tempdir().unwrap();
    let (stable, canary) = (backend("v1", None).await, backend("v2", None).await);
    let api = free_addr();
    let config = dir.path().join("fledge.yaml");
    std::fs::write(
        &config,
        format!(
            "listen: {api}\nstore: sqlite://{db}\napps:\n  - name: shop\n    listen: 127.0.0.1:0\n    stable:\n      version: v1\n      endpoints: [\"{s}\"]\n    canary:\n      endpoints: [\"{c}\"]\n",
            db = dir.path().join("fledge.db").display(),
            s = stable.endpoint(),
            c = canary.endpoint(),
        ),
    )
    .unwrap();
    let log = dir.path().join("serve.log");
    let config = config.to_str().unwrap();
    let mut serve = spawn(
        &["serve", "--config", config, "--log-format", "json"],
        &log,
        &[("FLEDGE_TOKENS", &format!("ci-bot:viewer:{TOKEN}"))],
    );
    let http = Http::new(api);
    wait_for(LIMIT, "readyz", || {
        let http = http.clone();
        async move {
            match http.try_get("/readyz").await {
                Some(StatusCode::OK) => Ok(()),
                other => Err(format!("{other:?}")),
            }
        }
    })
    .await;

    let reply = http.with_token(TOKEN).get("/rollouts").await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    let refused = http.get("/apps/shop").await;
    assert_eq!(refused.status, StatusCode::UNAUTHORIZED, "{}", refused.text);

    let access = |route: &str| {
        json_lines(&read(&log))
            .into_iter()
            .filter(|l| l["target"] == "fledge_server::access" && l["fields"]["route"] == route)
            .collect::<Vec<_>>()
    };
    let lines = wait_for(LIMIT, "the access log line of GET /rollouts", || {
        let lines = access("/rollouts");
        async move { non_empty(lines) }
    })
    .await;
    assert_eq!(lines.len(), 1, "{lines:#?}");
    let fields = &lines[0]["fields"];
    assert_eq!(fields["method"], "GET");
    assert_eq!(fields["status"], 200);
    assert_eq!(fields["actor"], "ci-bot");
    assert!(fields["duration_ms"].as_f64().is_some(), "{fields}");
    let refused = access("/apps/{app}");
    assert_eq!(refused.len(), 1, "{refused:#?}");
    assert_eq!(refused[0]["fields"]["status"], 401);
    assert_eq!(refused[0]["fields"]["actor"], "-");

    let status = serve
        .terminate(LIMIT)
        .await
        .expect("serve exits on SIGTERM");
    assert!(status.success(), "{status}");
    let log = read(&log);
    assert!(!log.contains(TOKEN), "the token is in the log:\n{log}");
    json_lines(&log);
}

/// `fledge operator run` against an API server that refuses connections: it logs the
/// failed leader election, and exits cleanly on SIGTERM.
async fn operator_log(dir: &Path, format: &str) -> String {
    let kubeconfig = dir.join(format!("kubeconfig-{format}"));
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: http://{}\ncontexts:\n- name: c\n  context:\n    cluster: c\n    user: u\nusers:\n- name: u\n  user: {{}}\ncurrent-context: c\n",
            free_addr()
        ),
    )
    .unwrap();
    let log = dir.join(format!("operator-{format}.log"));
    let mut operator = spawn(
        &[
            "operator",
            "run",
            "--log-format",
            format,
            "--listen",
            "127.0.0.1:0",
        ],
        &log,
        &[("KUBECONFIG", kubeconfig.to_str().unwrap())],
    );
    wait_for(LIMIT, "the operator's leader election warning", || {
        let text = read(&log);
        async move {
            if text.contains("leader election") {
                Ok(())
            } else {
                Err(text)
            }
        }
    })
    .await;
    let status = operator
        .terminate(LIMIT)
        .await
        .expect("the operator exits on SIGTERM");
    assert!(status.success(), "{status}: {}", read(&log));
    read(&log)
}

#[tokio::test]
async fn operator_logs_no_ansi_to_a_pipe_and_json_lines_on_request() {
    let dir = tempfile::tempdir().unwrap();
    let text = operator_log(dir.path(), "text").await;
    assert!(!text.contains('\x1b'), "ANSI escape in the log:\n{text}");
    assert!(text.contains("WARN"), "{text}");

    let lines = json_lines(&operator_log(dir.path(), "json").await);
    assert!(
        lines
            .iter()
            .any(|l| l["level"] == "WARN" && l["fields"]["message"] == "leader election"),
        "{lines:#?}"
    );
}

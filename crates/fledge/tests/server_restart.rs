//! A real process restart of the built `fledge` binary in the middle of a stage,
//! against the same SQLite file: the rollout resumes in the same stage with the same
//! weight and loses no event.

mod support;

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use hyper::StatusCode;
use serde_json::Value;
use support::{Http, Load, backend, spec, wait_for};

const LIMIT: Duration = Duration::from_secs(30);

fn free_port() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

fn serve(config: &Path, log: &Path) -> Child {
    let log = std::fs::File::create(log).unwrap();
    Command::new(env!("CARGO_BIN_EXE_fledge"))
        .args(["serve", "--config"])
        .arg(config)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("the fledge binary starts")
}

async fn ready(api: &Http) {
    wait_for(LIMIT, "readyz", || async {
        let r = tokio::time::timeout(Duration::from_secs(2), api.try_get("/readyz")).await;
        match r {
            Ok(Some(StatusCode::OK)) => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await
}

async fn rollout(api: &Http, id: &str) -> Value {
    api.get(&format!("/rollouts/{id}")).await.body
}

fn events(r: &Value) -> Vec<(i64, String)> {
    r["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["seq"].as_i64().unwrap(),
                e["kind"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn restart_mid_stage_resumes_the_same_stage_and_weight() {
    let dir = tempfile::tempdir().unwrap();
    let stable = backend("stable", None).await;
    let canary = backend("canary", None).await;
    let api_addr = free_port();
    let proxy_addr = free_port();
    let config = dir.path().join("fledge.yaml");
    std::fs::write(
        &config,
        format!(
            "listen: {api_addr}\nstore: sqlite://{db}\ncontroller:\n  tick: 200ms\napps:\n  - name: shop\n    listen: {proxy_addr}\n    stable:\n      version: v1\n      endpoints: [\"{s}\"]\n    canary:\n      endpoints: [\"{c}\"]\n",
            db = dir.path().join("fledge.db").display(),
            s = stable.endpoint(),
            c = canary.endpoint(),
        ),
    )
    .unwrap();

    let mut first = serve(&config, &dir.path().join("first.log"));
    let api = Http::new(api_addr);
    ready(&api).await;
    let load = Load::start(proxy_addr, 2);
    let stages = "  - traffic: 10\n    duration: 1s\n  - traffic: 30\n    duration: 10m\n  - traffic: 100\n    final: true\n    promote: true\n";
    let r = api
        .post_yaml("/rollouts", &spec("shop", "v2", stages))
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let id = r.body["id"].as_str().unwrap().to_owned();
    let before = wait_for(LIMIT, "stage 1", || async {
        let r = rollout(&api, &id).await;
        if r["stageIndex"] == 1 {
            Ok(r)
        } else {
            Err(r["stageIndex"].to_string())
        }
    })
    .await;
    load.stop().await;

    // A crash: no chance to clean up.
    first.kill().unwrap();
    first.wait().unwrap();

    let mut second = serve(&config, &dir.path().join("second.log"));
    ready(&api).await;
    let after = rollout(&api, &id).await;
    assert_eq!(after["phase"], "Progressing", "{after}");
    assert_eq!(after["stageIndex"], 1);
    assert_eq!(after["canaryWeight"], 30);
    let (old, new) = (events(&before), events(&after));
    assert_eq!(&new[..old.len()], &old[..], "history kept as it was");
    let starts = new.iter().filter(|(_, k)| k == "StageStarted").count();
    assert_eq!(starts, 2, "the stage was not restarted: {new:?}");

    // The persisted weight is applied by the new process's proxy.
    let proxy = Http::new(proxy_addr);
    let c0 = canary.hits();
    for _ in 0..300 {
        assert_eq!(proxy.get("/").await.status, StatusCode::OK);
    }
    let share = (canary.hits() - c0) as f64 / 300.0;
    assert!((0.15..=0.45).contains(&share), "canary share {share}");

    // SIGTERM: a graceful stop with exit code 0.
    let status = Command::new("kill")
        .args(["-TERM", &second.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let exit = wait_for(LIMIT, "exit after SIGTERM", || {
        let st = second.try_wait().unwrap();
        async move { st.ok_or_else(|| "running".to_owned()) }
    })
    .await;
    assert!(exit.success(), "{exit:?}");
}

//! A real process restart of the built `fledge` binary in the middle of a stage,
//! against the same SQLite file: the rollout resumes in the same stage with the same
//! weight and loses no event.

mod support;

use std::time::Duration;

use hyper::StatusCode;
use serde_json::Value;
use support::rollout::{create, get as rollout};
use support::serve::ServedShop;
use support::{Http, Load, spec, wait_for};

const LIMIT: Duration = Duration::from_secs(30);

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
    let mut shop = ServedShop::start(None).await;
    let api = shop.api.clone();
    let proxy_addr = shop.proxy;
    let load = Load::start(proxy_addr, 2);
    let stages = "  - traffic: 10\n    duration: 1s\n  - traffic: 30\n    duration: 10m\n  - traffic: 100\n    final: true\n    promote: true\n";
    let id = create(&api, &spec("shop", "v2", stages)).await;
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
    shop.server.kill9();

    shop.server.restart().await;
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
    let c0 = shop.canary.hits();
    for _ in 0..300 {
        assert_eq!(proxy.get("/").await.status, StatusCode::OK);
    }
    let share = (shop.canary.hits() - c0) as f64 / 300.0;
    assert!((0.15..=0.45).contains(&share), "canary share {share}");

    // SIGTERM: a graceful stop with exit code 0.
    let exit = shop.server.terminate(LIMIT).await;
    assert!(exit.success(), "{exit:?}");
}

//! High availability on PostgreSQL: three `fledge serve` replicas share one database.
//! Exactly one holds the controller lease and judges rollouts; all of them serve the
//! API and run their own proxy (on a port of their own). Killing the leader with
//! SIGKILL hands the lease to another replica within a few seconds, and the rollout
//! continues from its persisted state. A leader frozen with SIGSTOP past its lease
//! is deposed too, and when it wakes up it does not write: the history stays whole.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::Value;
use support::rollout::{create, get as rollout};
use support::serve::Serve;
use support::{backend, spec, wait_for};

const LIMIT: Duration = Duration::from_secs(30);

struct Replica {
    name: usize,
    serve: Serve,
}

impl Replica {
    /// How many times this replica took the lease, from its log.
    fn takeovers(&self) -> usize {
        self.serve
            .log()
            .matches("took the controller lease")
            .count()
    }
}

/// The one replica that leads (has taken the lease more often than it lost it, by
/// its log); waits until exactly one of the running ones does.
async fn leader(replicas: &[Replica], not: &[usize]) -> usize {
    wait_for(LIMIT, "exactly one leader", || async {
        let leading: Vec<usize> = replicas
            .iter()
            .filter(|r| r.serve.is_running() && !not.contains(&r.name) && r.takeovers() > 0)
            .map(|r| r.name)
            .collect();
        if leading.len() == 1 {
            Ok(leading[0])
        } else {
            Err(format!("{leading:?}"))
        }
    })
    .await
}

/// The running replicas whose `GET /status` says they lead, with what it says.
async fn reported_leaders(replicas: &[Replica]) -> Vec<(usize, Value)> {
    let mut leading = Vec::new();
    for r in replicas.iter().filter(|r| r.serve.is_running()) {
        let controller = r.serve.api.get("/status").await.body["controller"].clone();
        if controller["leader"] == true {
            leading.push((r.name, controller));
        }
    }
    leading
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs postgresql: run scripts/test"]
async fn leader_failover_continues_the_rollout() {
    let store = support::postgres::fresh_database("fledge_ha");
    let dir = tempfile::tempdir().unwrap();
    let stable = backend("stable", None).await;
    let canary = backend("canary", None).await;
    let mut replicas = Vec::new();
    for name in 0..3 {
        // The proxy listens on a port of its own in each replica (`:0`).
        let serve = Serve::replica(
            dir.path(),
            &format!("replica-{name}"),
            &store,
            &stable,
            &canary,
        )
        .await;
        replicas.push(Replica { name, serve });
    }
    let first = leader(&replicas, &[]).await;

    // Load through a follower's proxy, which follows the stored route too.
    let follower = (first + 1) % 3;
    let status = replicas[follower].serve.api.get("/status").await.body;
    let proxy: SocketAddr = status["apps"][0]["proxy"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let load = support::Load::start(proxy, 2);

    // Every replica serves the API: create on a follower.
    let stages = "  - traffic: 10\n    duration: 3s\n  - traffic: 30\n    duration: 3s\n  - traffic: 60\n    duration: 3s\n  - traffic: 100\n    final: true\n    promote: true\n";
    let id = create(&replicas[follower].serve.api, &spec("shop", "v2", stages)).await;
    wait_for(LIMIT, "stage 1", || async {
        let r = rollout(&replicas[follower].serve.api, &id).await;
        if r["stageIndex"].as_i64() >= Some(1) {
            Ok(())
        } else {
            Err(r["stageIndex"].to_string())
        }
    })
    .await;

    // Failover 1: SIGKILL the leader.
    replicas[first].serve.kill9();
    let killed_at = tokio::time::Instant::now();
    let second = leader(&replicas, &[first]).await;
    let takeover = killed_at.elapsed();
    let seen = rollout(&replicas[second].serve.api, &id).await["stageIndex"].as_i64();
    wait_for(
        LIMIT,
        "the rollout to move on under the new leader",
        || async {
            let r = rollout(&replicas[second].serve.api, &id).await;
            if r["stageIndex"].as_i64() > seen || r["phase"] == "Succeeded" {
                Ok(())
            } else {
                Err(format!("{} {}", r["phase"], r["stageIndex"]))
            }
        },
    )
    .await;

    // Failover 2: freeze the new leader past its lease; the third replica takes
    // over, and the frozen one, once thawed, must not write.
    replicas[second].serve.signal("-STOP");
    let third = leader(&replicas, &[first, second]).await;
    replicas[second].serve.signal("-CONT");

    let done = wait_for(Duration::from_secs(60), "Succeeded", || async {
        let r = rollout(&replicas[third].serve.api, &id).await;
        if r["phase"] == "Succeeded" {
            Ok(r)
        } else {
            Err(format!("{} {}", r["phase"], r["stageIndex"]))
        }
    })
    .await;
    load.stop().await;

    let events = done["events"].as_array().unwrap();
    let seqs: Vec<i64> = events.iter().map(|e| e["seq"].as_i64().unwrap()).collect();
    assert_eq!(seqs, (1..=events.len() as i64).collect::<Vec<_>>());
    let kinds: Vec<&str> = events.iter().map(|e| e["kind"].as_str().unwrap()).collect();
    let count = |k: &str| kinds.iter().filter(|x| **x == k).count();
    assert_eq!(count("Started"), 1, "{kinds:?}");
    assert_eq!(count("StageStarted"), 4, "each stage once: {kinds:?}");
    assert_eq!(count("Succeeded"), 1, "{kinds:?}");
    assert_eq!(kinds.last(), Some(&"Succeeded"));
    // Every replica answers the same.
    for r in replicas.iter().filter(|r| r.serve.is_running()) {
        assert_eq!(rollout(&r.serve.api, &id).await["phase"], "Succeeded");
    }
    // The thawed replica sees that its lease is gone and stays a follower.
    wait_for(LIMIT, "the thawed leader to step down", || async {
        let log = replicas[second].serve.log();
        if log.contains("lost the controller lease") {
            Ok(())
        } else {
            Err("still believes it leads".to_owned())
        }
    })
    .await;
    // The API says the same: exactly one running replica reports that it leads, the
    // third, with the lease's newest epoch (one take-over each).
    let leading: Vec<(usize, Value)> = reported_leaders(&replicas).await;
    assert_eq!(leading.len(), 1, "{leading:?}");
    assert_eq!(leading[0].0, third, "{leading:?}");
    assert!(leading[0].1["epoch"].as_i64() >= Some(3), "{leading:?}");
    eprintln!(
        "failovers: 2, first takeover after SIGKILL: {takeover:?}, leaders {first} → {second} → {third}"
    );
}

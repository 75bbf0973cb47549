//! High availability on PostgreSQL: three `fledge serve` replicas share one database.
//! Exactly one holds the controller lease and judges rollouts; all of them serve the
//! API and run their own proxy (on a port of their own). Killing the leader with
//! SIGKILL hands the lease to another replica within a few seconds, and the rollout
//! continues from its persisted state. A leader frozen with SIGSTOP past its lease
//! is deposed too, and when it wakes up it does not write: the history stays whole.

mod support;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use hyper::StatusCode;
use serde_json::Value;
use support::{Http, backend, spec, wait_for};

const LIMIT: Duration = Duration::from_secs(30);

fn free_port() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

struct Replica {
    name: usize,
    api: Http,
    log: PathBuf,
    config: PathBuf,
    child: Option<Child>,
}

impl Replica {
    fn start(&mut self) {
        let log = std::fs::File::create(&self.log).unwrap();
        self.child = Some(
            Command::new(env!("CARGO_BIN_EXE_fledge"))
                .args(["serve", "--config"])
                .arg(&self.config)
                .env("RUST_LOG", "info")
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .expect("the fledge binary starts"),
        );
    }

    fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([sig, &self.pid().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill {sig}");
    }

    /// How many times this replica took the lease, from its log.
    fn takeovers(&self) -> usize {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .matches("took the controller lease")
            .count()
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        if self.child.is_some() {
            self.signal("-CONT");
        }
        self.kill9();
    }
}

async fn ready(api: &Http) {
    wait_for(LIMIT, "readyz", || async {
        match tokio::time::timeout(Duration::from_secs(2), api.try_get("/readyz")).await {
            Ok(Some(StatusCode::OK)) => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await
}

/// The one replica that leads (has taken the lease more often than it lost it, by
/// its log); waits until exactly one of the running ones does.
async fn leader(replicas: &[Replica], not: &[usize]) -> usize {
    wait_for(LIMIT, "exactly one leader", || async {
        let leading: Vec<usize> = replicas
            .iter()
            .filter(|r| r.child.is_some() && !not.contains(&r.name) && r.takeovers() > 0)
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
    for r in replicas.iter().filter(|r| r.child.is_some()) {
        let controller = r.api.get("/status").await.body["controller"].clone();
        if controller["leader"] == true {
            leading.push((r.name, controller));
        }
    }
    leading
}

async fn rollout(api: &Http, id: &str) -> Value {
    api.get(&format!("/rollouts/{id}")).await.body
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
        let api = free_port();
        let config = dir.path().join(format!("fledge-{name}.yaml"));
        // The proxy listens on a port of its own in each replica (`:0`).
        std::fs::write(
            &config,
            format!(
                "listen: {api}\nstore: {store}\ncontroller:\n  tick: 200ms\napps:\n  - name: shop\n    listen: 127.0.0.1:0\n    stable:\n      version: v1\n      endpoints: [\"{s}\"]\n    canary:\n      endpoints: [\"{c}\"]\n",
                s = stable.endpoint(),
                c = canary.endpoint(),
            ),
        )
        .unwrap();
        let mut r = Replica {
            name,
            api: Http::new(api),
            log: dir.path().join(format!("replica-{name}.log")),
            config,
            child: None,
        };
        r.start();
        ready(&r.api).await;
        replicas.push(r);
    }
    let first = leader(&replicas, &[]).await;

    // Load through a follower's proxy, which follows the stored route too.
    let follower = (first + 1) % 3;
    let status = replicas[follower].api.get("/status").await.body;
    let proxy: SocketAddr = status["apps"][0]["proxy"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let load = support::Load::start(proxy, 2);

    // Every replica serves the API: create on a follower.
    let stages = "  - traffic: 10\n    duration: 3s\n  - traffic: 30\n    duration: 3s\n  - traffic: 60\n    duration: 3s\n  - traffic: 100\n    final: true\n    promote: true\n";
    let r = replicas[follower]
        .api
        .post_yaml("/rollouts", &spec("shop", "v2", stages))
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let id = r.body["id"].as_str().unwrap().to_owned();
    wait_for(LIMIT, "stage 1", || async {
        let r = rollout(&replicas[follower].api, &id).await;
        if r["stageIndex"].as_i64() >= Some(1) {
            Ok(())
        } else {
            Err(r["stageIndex"].to_string())
        }
    })
    .await;

    // Failover 1: SIGKILL the leader.
    replicas[first].kill9();
    let killed_at = tokio::time::Instant::now();
    let second = leader(&replicas, &[first]).await;
    let takeover = killed_at.elapsed();
    let seen = rollout(&replicas[second].api, &id).await["stageIndex"].as_i64();
    wait_for(
        LIMIT,
        "the rollout to move on under the new leader",
        || async {
            let r = rollout(&replicas[second].api, &id).await;
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
    replicas[second].signal("-STOP");
    let third = leader(&replicas, &[first, second]).await;
    replicas[second].signal("-CONT");

    let done = wait_for(Duration::from_secs(60), "Succeeded", || async {
        let r = rollout(&replicas[third].api, &id).await;
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
    for r in replicas.iter().filter(|r| r.child.is_some()) {
        assert_eq!(rollout(&r.api, &id).await["phase"], "Succeeded");
    }
    // The thawed replica sees that its lease is gone and stays a follower.
    wait_for(LIMIT, "the thawed leader to step down", || async {
        let log = std::fs::read_to_string(&replicas[second].log).unwrap_or_default();
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

//! A store that stops taking writes mid-rollout: PostgreSQL turned read-only (and
//! the server's connections cut), and SQLite on a disk that fills up (a tiny tmpfs).
//!
//! What an operator must see: the server stays up; `/readyz` answers 503 with the
//! one error shape naming the store's error; API writes are refused the same way;
//! the traffic stays at the last persisted weight (the controller applies nothing it
//! could not persist); once the store takes writes again the rollout goes on from
//! its persisted state to the end, with its history complete and in order, and the
//! SQLite file passes `PRAGMA integrity_check`.

mod support;

use std::time::{Duration, Instant};

use fledge_server::{StartOptions, start};
use hyper::StatusCode;
use serde_json::Value;
use support::{Backend, Http, Load, applied_weight_percent, backend, wait_for};

const LIMIT: Duration = Duration::from_secs(30);

/// How long the store stays broken: longer than any stage of [`SPEC`].
const OUTAGE: Duration = Duration::from_secs(5);

/// Stage 1 (50%) lasts 2 s: the outage spans it, so a controller that decided
/// without persisting would have moved on to 100%.
const SPEC: &str = "app: shop\nversion: v2\nanalysis:\n  interval: 200ms\nstages:\n  - traffic: 20\n    duration: 1s\n  - traffic: 50\n    duration: 2s\n  - traffic: 100\n    final: true\n    promote: true\n";

fn config(store: &str, stable: &Backend, canary: &Backend) -> fledge_server::config::ServerConfig {
    let text = format!(
        "listen: 127.0.0.1:0\nstore: {store}\ncontroller:\n  tick: 200ms\napps:\n  - name: shop\n    listen: 127.0.0.1:0\n    stable:\n      version: v1\n      endpoints: [\"{s}\"]\n    canary:\n      endpoints: [\"{c}\"]\n",
        s = stable.endpoint(),
        c = canary.endpoint(),
    );
    fledge_server::config::ServerConfig::parse(&text, "store.yaml").expect("config parses")
}

/// The canary weight the app's proxy applies, from `/metrics`.
async fn proxy_weight(api: &Http) -> Option<f64> {
    let metrics = api.get("/metrics").await.text;
    applied_weight_percent(&metrics, "shop")
}

/// Runs a rollout on `store`, calls `break_store` once it is at 50%, checks what
/// the operator sees for [`OUTAGE`], calls `heal_store`, and checks that the
/// rollout then succeeds with a whole history. Returns the finished rollout.
async fn store_outage(store: &str, break_store: impl FnOnce(), heal_store: impl FnOnce()) -> Value {
    let stable = backend("stable", None).await;
    let canary = backend("canary", None).await;
    let server = start(config(store, &stable, &canary), StartOptions::default())
        .await
        .unwrap();
    let api = Http::new(server.api_addr());
    let proxy = server.proxy_addr("shop").await.unwrap();
    let load = Load::start(proxy, 2);
    let r = api.post_yaml("/rollouts", SPEC).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let id = r.body["id"].as_str().unwrap().to_owned();
    let rollout = || {
        let (api, id) = (api.clone(), id.clone());
        async move { api.get(&format!("/rollouts/{id}")).await.body }
    };
    wait_for(LIMIT, "stage 1 at 50%", || async {
        let r = rollout().await;
        if r["stageIndex"] == 1 && proxy_weight(&api).await == Some(50.0) {
            Ok(())
        } else {
            Err(r["stageIndex"].to_string())
        }
    })
    .await;

    break_store();
    let broken = Instant::now();
    // The server notices (a lease renewal or a rollout write fails) and says so.
    let ready = wait_for(LIMIT, "/readyz to report the store", || async {
        let r = api.get("/readyz").await;
        if r.status == StatusCode::SERVICE_UNAVAILABLE {
            Ok(r)
        } else {
            Err(format!("{} {}", r.status, r.text))
        }
    })
    .await;
    assert_eq!(ready.body["error"]["code"], "unavailable", "{}", ready.text);
    let message = ready.body["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("store"), "{message}");
    assert!(
        !message.contains("panicked") && !message.contains("backtrace"),
        "{message}"
    );
    // Writes are refused with the same shape; the abort is not taken.
    let r = api.post(&format!("/rollouts/{id}/abort"), None).await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{}", r.text);
    assert_eq!(r.body["error"]["code"], "unavailable", "{}", r.text);
    // A changed app config is refused too, and the app keeps the stored one.
    let mut app = api.get("/apps/shop").await.body;
    if let Some(fields) = app.as_object_mut() {
        fields.remove("proxyAddr");
        fields.remove("routerSync");
    }
    app["canary"]["endpoints"] = serde_json::json!([stable.endpoint()]);
    let r = api.put("/apps/shop", &app.to_string()).await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{}", r.text);
    let app = api.get("/apps/shop").await.body;
    assert_eq!(
        app["canary"]["endpoints"],
        serde_json::json!([canary.endpoint()]),
        "{app}"
    );
    // For longer than the stage lasts, traffic stays at the persisted 50% and
    // the rollout where it was persisted; the API keeps answering reads.
    while broken.elapsed() < OUTAGE {
        assert_eq!(proxy_weight(&api).await, Some(50.0));
        let r = rollout().await;
        assert_eq!(r["stageIndex"], 1, "{r}");
        assert_eq!(r["phase"], "Progressing", "{r}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    heal_store();
    wait_for(LIMIT, "/readyz to recover", || async {
        let r = api.get("/readyz").await;
        if r.status == StatusCode::OK {
            Ok(())
        } else {
            Err(format!("{} {}", r.status, r.text))
        }
    })
    .await;
    // The rollout goes on from where it was persisted, to the end.
    let done = wait_for(LIMIT, "Succeeded", || async {
        let r = rollout().await;
        if r["phase"] == "Succeeded" {
            Ok(r)
        } else {
            Err(r["phase"].to_string())
        }
    })
    .await;
    load.stop().await;
    let events = done["events"].as_array().unwrap();
    let seqs: Vec<i64> = events.iter().map(|e| e["seq"].as_i64().unwrap()).collect();
    assert!(
        seqs.windows(2).all(|w| w[1] == w[0] + 1),
        "gaps or disorder: {seqs:?}"
    );
    let ats: Vec<&str> = events.iter().map(|e| e["at"].as_str().unwrap()).collect();
    assert!(ats.windows(2).all(|w| w[0] <= w[1]), "{ats:?}");
    let kinds: Vec<&str> = events.iter().map(|e| e["kind"].as_str().unwrap()).collect();
    // Each stage once: nothing decided twice, nothing lost.
    let count = |k: &str| kinds.iter().filter(|x| **x == k).count();
    assert_eq!(count("StageStarted"), 3, "{kinds:?}");
    assert_eq!(count("StageAdvanced"), 2, "{kinds:?}");
    assert_eq!(count("Succeeded"), 1, "{kinds:?}");
    assert!(!kinds.contains(&"Aborted"), "{kinds:?}");
    let app = api.get("/apps/shop").await.body;
    assert_eq!(app["stable"]["version"], "v2", "{app}");
    eprintln!(
        "store outage: held at 50% for {OUTAGE:?}, then {} events: {kinds:?}",
        kinds.len()
    );
    server.shutdown().await;
    done
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs postgres: run scripts/test"]
async fn postgres_turned_read_only_holds_the_rollout_until_it_takes_writes() {
    let url = support::postgres::fresh_database("fledge_ro");
    let admin = support::postgres::server_url();
    let db = url
        .rsplit('/')
        .next()
        .and_then(|d| d.split('?').next())
        .unwrap()
        .to_owned();
    // New transactions are read-only, and the server's connections (already
    // open, with the old default) are cut so that it has to reconnect.
    let set_read_only = |on: bool| {
        support::postgres::run_sql(
            &admin,
            &format!(
                "ALTER DATABASE {db} SET default_transaction_read_only = {}",
                if on { "on" } else { "off" }
            ),
        );
        support::postgres::run_sql(
            &admin,
            &format!(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{db}'"
            ),
        );
    };
    store_outage(&url, || set_read_only(true), || set_read_only(false)).await;
}

/// A tmpfs of a few MiB mounted on a temporary directory, unmounted when dropped.
struct TinyDisk {
    dir: tempfile::TempDir,
}

impl TinyDisk {
    fn mount() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let status = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=4m", "fledge-test-full"])
            .arg(dir.path())
            .status()
            .expect("mount runs");
        assert!(status.success(), "cannot mount a tmpfs (needs root)");
        Self { dir }
    }

    /// Writes a file until the disk is full.
    fn fill(&self) {
        use std::io::Write as _;
        let mut f = std::fs::File::create(self.dir.path().join("filler")).unwrap();
        let block = vec![0u8; 64 * 1024];
        loop {
            match f.write(&block) {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
        // Then the last few KiB, in small writes.
        let small = [0u8; 512];
        while f.write(&small).is_ok_and(|n| n > 0) {}
        let _ = f.sync_all();
    }

    fn free(&self) {
        std::fs::remove_file(self.dir.path().join("filler")).unwrap();
    }
}

impl Drop for TinyDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root (mounts a tmpfs): run scripts/test as root"]
async fn sqlite_on_a_full_disk_holds_the_rollout_and_stays_intact() {
    let disk = TinyDisk::mount();
    let db = disk.dir.path().join("fledge.db");
    store_outage(
        &format!("sqlite://{}", db.display()),
        || disk.fill(),
        || disk.free(),
    )
    .await;
    // The file is whole, and holds the finished rollout.
    use sqlx::Connection as _;
    let mut conn = sqlx::SqliteConnection::connect(&format!("sqlite://{}", db.display()))
        .await
        .unwrap();
    let check: String = sqlx::query_scalar("PRAGMA integrity_check")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(check, "ok");
    let phase: String = sqlx::query_scalar("SELECT phase FROM rollouts")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(phase, "Succeeded");
    conn.close().await.unwrap();
}

//! The store contract on SQLite (a file in a temp dir), plus what only SQLite can
//! show: a full disk, a bad path, a schema from the future, two stores on one file.

mod common;

use std::sync::Arc;

use common::Harness;
use fledge_store::{NewEvent, NewRollout, RolloutUpdate, SqliteStore, Store, StoreError};
use serde_json::json;
use tempfile::TempDir;

/// A fresh database file in its own temp dir.
struct SqliteHarness {
    dir: TempDir,
}

impl common::Harness for SqliteHarness {
    fn url(&self) -> String {
        format!("sqlite://{}", self.dir.path().join("fledge.db").display())
    }

    async fn execute(&self, sql: &'static str) {
        // Creating the file if need be: a test may build a database before the store.
        let url = format!("{}?mode=rwc", self.url());
        let mut conn = <sqlx::SqliteConnection as sqlx::Connection>::connect(&url)
            .await
            .unwrap();
        sqlx::raw_sql(sql).execute(&mut conn).await.unwrap();
    }
}

/// Runs `sql` on the database at `url` on a connection of its own; the first column
/// of the first row, if there is one.
async fn query_text(url: &str, sql: &'static str) -> Option<String> {
    let mut conn = <sqlx::SqliteConnection as sqlx::Connection>::connect(url)
        .await
        .unwrap();
    sqlx::query_scalar(sql)
        .fetch_optional(&mut conn)
        .await
        .unwrap()
}

async fn sqlite() -> SqliteHarness {
    SqliteHarness {
        dir: tempfile::tempdir().unwrap(),
    }
}

contract_tests!(sqlite);

fn rollout(app: &str) -> NewRollout {
    NewRollout {
        app: app.into(),
        version: "v2".into(),
        phase: "Progressing".into(),
        spec_text: "{}".into(),
        spec: json!({}),
        state: json!({"pad": "x".repeat(2000)}),
        events: vec![NewEvent::new("Created", "engine", "created")],
        group: None,
        fence: None,
    }
}

#[tokio::test]
async fn a_full_disk_is_reported_as_unavailable_and_leaves_the_file_intact() {
    let h = sqlite().await;
    // Cap the database at a few pages, as a full disk would.
    let store = SqliteStore::open_with(&h.url(), |o| o.pragma("max_page_count", "40"))
        .await
        .unwrap();
    let first = store.create_rollout(rollout("app-0")).await.unwrap();
    let mut last_err = None;
    for i in 1..200 {
        match store.create_rollout(rollout(&format!("app-{i}"))).await {
            Ok(_) => {}
            Err(e) => {
                last_err = Some(e);
                break;
            }
        }
    }
    let err = last_err.expect("the capped database fills up");
    assert!(err.is_unavailable(), "{err:?}");
    assert!(err.to_string().contains("free space"), "{err}");
    // Updates fail the same way, and the failed transaction left nothing behind.
    let big = RolloutUpdate {
        id: first.id.clone(),
        expected_revision: 1,
        phase: "Paused".into(),
        state: json!({"pad": "y".repeat(200_000)}),
        events: vec![NewEvent::new("Paused", "alice", "pause")],
        app_update: None,
        fence: None,
    };
    assert!(
        store
            .update_rollout(big)
            .await
            .unwrap_err()
            .is_unavailable()
    );
    store.close().await;

    let reopened = SqliteStore::open(&h.url()).await.unwrap();
    let back = reopened.get_rollout(&first.id).await.unwrap().unwrap();
    assert_eq!(back, first);
    assert_eq!(reopened.events(&first.id, 0).await.unwrap().len(), 1);
    // And the file is healthy: it takes writes again once there is room.
    let mut u = RolloutUpdate {
        id: first.id.clone(),
        expected_revision: 1,
        phase: "Paused".into(),
        state: json!({}),
        events: vec![],
        app_update: None,
        fence: None,
    };
    u.events.push(NewEvent::new("Paused", "alice", "pause"));
    assert_eq!(reopened.update_rollout(u).await.unwrap().revision, 2);
}

#[tokio::test]
async fn a_path_that_cannot_hold_a_database_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    // A directory where the file should be.
    let err = fledge_store::connect(&format!("sqlite://{}", dir.path().display()))
        .await
        .unwrap_err();
    assert!(err.is_unavailable(), "{err:?}");
    assert!(
        err.to_string().contains(&dir.path().display().to_string()),
        "{err}"
    );
    // A missing parent directory.
    let missing = dir.path().join("no/such/dir/fledge.db");
    let err = fledge_store::connect(&format!("sqlite://{}", missing.display()))
        .await
        .unwrap_err();
    assert!(err.is_unavailable(), "{err:?}");
    // A file that is not a database.
    let junk = dir.path().join("junk.db");
    std::fs::write(&junk, vec![0x5a; 8192]).unwrap();
    let err = fledge_store::connect(junk.to_str().unwrap())
        .await
        .unwrap_err();
    assert!(err.is_unavailable(), "{err:?}");
    assert_eq!(
        std::fs::read(&junk).unwrap(),
        vec![0x5a; 8192],
        "not overwritten"
    );
}

#[tokio::test]
async fn urls_are_checked() {
    for (url, needle) in [
        ("mysql://localhost/fledge", "unknown scheme `mysql`"),
        ("sqlite://", "no file name"),
        ("sqlite://fledge.db?mode=ro", "query parameters"),
    ] {
        let err = fledge_store::connect(url).await.unwrap_err();
        assert!(
            matches!(err, StoreError::InvalidUrl { .. }),
            "{url}: {err:?}"
        );
        assert!(err.to_string().contains(needle), "{url}: {err}");
    }
    let memory = fledge_store::connect("sqlite::memory:").await.unwrap();
    assert_eq!(memory.backend(), "sqlite");
    memory.put_app("web", &json!({})).await.unwrap();
    assert_eq!(memory.list_apps().await.unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_stores_on_one_file_still_serialize_writes() {
    // Two servers pointed at the same file by mistake must not corrupt it or lose
    // updates: SQLite's own locking (BEGIN IMMEDIATE + busy timeout) takes over
    // from the in-process mutex.
    let h = sqlite().await;
    let a: Arc<dyn Store> = Arc::new(SqliteStore::open(&h.url()).await.unwrap());
    let b: Arc<dyn Store> = Arc::new(SqliteStore::open(&h.url()).await.unwrap());
    let r = a.create_rollout(rollout("web")).await.unwrap();
    let tasks: Vec<_> = (0..10)
        .map(|i| {
            let store = if i % 2 == 0 { a.clone() } else { b.clone() };
            let id = r.id.clone();
            tokio::spawn(async move {
                loop {
                    let cur = store.get_rollout(&id).await.unwrap().unwrap();
                    let n = cur.state["n"].as_i64().unwrap_or(0);
                    let u = RolloutUpdate {
                        id: id.clone(),
                        expected_revision: cur.revision,
                        phase: "Progressing".into(),
                        state: json!({"n": n + 1}),
                        events: vec![NewEvent::new("Tick", "engine", "tick")],
                        app_update: None,
                        fence: None,
                    };
                    match store.update_rollout(u).await {
                        Ok(_) => break,
                        Err(StoreError::Conflict { .. }) => continue,
                        Err(e) => panic!("{e}"),
                    }
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let end = b.get_rollout(&r.id).await.unwrap().unwrap();
    assert_eq!(end.state["n"], json!(10));
    assert_eq!(a.events(&r.id, 0).await.unwrap().len(), 11);
}

/// Set in the child process of `a_killed_writer_loses_no_commit`.
const CRASH_CHILD_DB: &str = "FLEDGE_STORE_TEST_CRASH_CHILD_DB";

/// The child half of `a_killed_writer_loses_no_commit`: does nothing unless started
/// by it. Writes updates as fast as it can and reports each commit on stdout.
#[tokio::test]
async fn crash_child() {
    let Ok(url) = std::env::var(CRASH_CHILD_DB) else {
        return;
    };
    use std::io::Write;
    let store = SqliteStore::open(&url).await.unwrap();
    let r = store.create_rollout(rollout("web")).await.unwrap();
    println!("created {}", r.id);
    let mut revision = r.revision;
    // Bounded: the parent kills this process long before the end.
    for i in 0..100_000 {
        let u = RolloutUpdate {
            id: r.id.clone(),
            expected_revision: revision,
            phase: "Progressing".into(),
            state: json!({"i": i, "pad": "z".repeat(500)}),
            events: vec![NewEvent::new("Tick", "engine", format!("{i}"))],
            app_update: None,
            fence: None,
        };
        revision = store.update_rollout(u).await.unwrap().revision;
        println!("committed {revision}");
        std::io::stdout().flush().unwrap();
    }
}

#[tokio::test]
async fn a_killed_writer_loses_no_commit_and_leaves_a_sound_file() {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};

    let h = sqlite().await;
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "crash_child", "--nocapture", "--test-threads=1"])
        .env(CRASH_CHILD_DB, h.url())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut id = None;
    let mut last_commit = 0;
    for line in BufReader::new(child.stdout.take().unwrap()).lines() {
        let line = line.unwrap();
        // libtest prints "test crash_child ... " on the same line as the first output.
        if let Some((_, rest)) = line.split_once("created ") {
            id = Some(rest.to_owned());
        } else if let Some(rest) = line.strip_prefix("committed ") {
            last_commit = rest.parse::<i64>().unwrap();
            if last_commit >= 60 {
                // SIGKILL: no destructor, no clean close, mid-transaction.
                child.kill().unwrap();
                break;
            }
        }
    }
    child.wait().unwrap();
    let id = id.expect("the child created a rollout");
    assert!(last_commit >= 60, "the child died early");

    let store = SqliteStore::open(&h.url()).await.unwrap();
    let r = store.get_rollout(&id).await.unwrap().unwrap();
    assert!(
        r.revision >= last_commit,
        "revision {} < reported {last_commit}",
        r.revision
    );
    let events = store.events(&id, 0).await.unwrap();
    assert_eq!(
        events.len() as i64,
        r.revision,
        "one event per revision, none torn"
    );
    assert_eq!(r.state["i"], json!(r.revision - 2));
    store.close().await;
    let check = query_text(&h.url(), "PRAGMA integrity_check").await;
    assert_eq!(check.as_deref(), Some("ok"));
}

#[tokio::test]
async fn a_read_only_database_opens_and_refuses_writes_clearly() {
    let h = sqlite().await;
    let store = SqliteStore::open(&h.url()).await.unwrap();
    let r = store.create_rollout(rollout("web")).await.unwrap();
    store.close().await;
    // Root ignores file permissions, so open the connections read-only instead: the
    // same SQLITE_READONLY a read-only mount or file would give.
    let ro = SqliteStore::open_with(&h.url(), |o| o.read_only(true))
        .await
        .unwrap();
    assert_eq!(ro.get_rollout(&r.id).await.unwrap(), Some(r.clone()));
    let err = ro.put_app("web", &json!({})).await.unwrap_err();
    assert!(err.is_unavailable(), "{err:?}");
    assert!(err.to_string().contains("writable"), "{err}");
    let err = ro
        .try_acquire_lease("controller", "a", std::time::Duration::from_secs(1))
        .await
        .unwrap_err();
    assert!(err.is_unavailable(), "{err:?}");
}

#[tokio::test]
async fn the_file_is_in_wal_mode_and_bare_paths_work() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bare.db");
    // A bare path, as `store: /var/lib/fledge/fledge.db` in the config.
    let store = fledge_store::connect(path.to_str().unwrap()).await.unwrap();
    store.put_app("web", &json!({})).await.unwrap();
    store.close().await;
    let url = format!("sqlite://{}", path.display());
    let mode = query_text(&url, "PRAGMA journal_mode").await;
    assert_eq!(mode.as_deref(), Some("wal"));
}

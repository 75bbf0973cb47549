//! The store contract on PostgreSQL. Each test gets its own database on one server:
//! the one named by `FLEDGE_TEST_POSTGRES_URL`, or else a throwaway server that
//! `scripts/pg-test-server` starts for this test process and stops when it exits.

mod common;
// The same test server as the binary's tests; its database helpers go unused here.
#[allow(dead_code)]
#[path = "../../fledge/tests/support/postgres.rs"]
mod server;

use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use fledge_store::{IDLE_IN_TRANSACTION_TIMEOUT, PgStore, StateUpdate, Store};
use sqlx::Connection;
use sqlx::postgres::{PgConnectOptions, PgConnection};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use server::{server_url, with_database};

/// A fresh database, dropped at the end of the test.
struct PgHarness {
    db: String,
    url: String,
}

impl common::Harness for PgHarness {
    fn url(&self) -> String {
        self.url.clone()
    }

    async fn execute(&self, sql: &'static str) {
        let mut conn = PgConnection::connect(&self.url).await.unwrap();
        sqlx::raw_sql(sql).execute(&mut conn).await.unwrap();
    }
}

impl Drop for PgHarness {
    fn drop(&mut self) {
        // Drop runs inside the test's runtime: do the async cleanup on a thread of
        // its own. A leftover database only matters on a long-lived server.
        let admin = server_url();
        let db = self.db.clone();
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            rt.block_on(async {
                let mut conn = PgConnection::connect(&admin).await.ok()?;
                sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
                    "DROP DATABASE IF EXISTS \"{db}\" WITH (FORCE)"
                )))
                .execute(&mut conn)
                .await
                .ok()
            })
        })
        .join();
    }
}

async fn postgres() -> PgHarness {
    let admin = server_url();
    let db = format!("fledge_test_{}", uuid::Uuid::new_v4().simple());
    let mut conn = PgConnection::connect(&admin)
        .await
        .unwrap_or_else(|e| panic!("connecting to the test server: {e}"));
    // The name is ours (hex), so formatting it into the statement is safe.
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE \"{db}\"")))
        .execute(&mut conn)
        .await
        .unwrap();
    conn.close().await.unwrap();
    PgHarness {
        url: with_database(&admin, &db),
        db,
    }
}

contract_tests!(postgres, #[ignore = "needs postgresql: run scripts/test"]);

#[tokio::test]
#[ignore = "needs postgresql: run scripts/test"]
async fn a_read_only_database_is_unavailable_not_a_crash() {
    // A hot standby, or a database switched to read-only: every write is refused
    // with a clear error and nothing is half-written.
    let h = postgres().await;
    let store = PgStore::connect(&h.url).await.unwrap();
    store
        .put_app("web", &serde_json::json!({"v": 1}))
        .await
        .unwrap();
    store.close().await;
    let mut conn = PgConnection::connect(&server_url()).await.unwrap();
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "ALTER DATABASE \"{}\" SET default_transaction_read_only = on",
        h.db
    )))
    .execute(&mut conn)
    .await
    .unwrap();
    let store = PgStore::connect(&h.url).await.unwrap();
    let err = store
        .put_app("web", &serde_json::json!({"v": 2}))
        .await
        .unwrap_err();
    assert!(err.is_unavailable(), "{err:?}");
    assert!(err.to_string().contains("writable"), "{err}");
    assert_eq!(
        store.get_app("web").await.unwrap().unwrap().config,
        serde_json::json!({"v": 1})
    );
}

#[test]
fn database_names_are_swapped_in_urls() {
    assert_eq!(
        with_database("postgres://postgres@127.0.0.1:5432/postgres", "x"),
        "postgres://postgres@127.0.0.1:5432/x"
    );
    assert_eq!(
        with_database("postgres://u:p@h/db?sslmode=disable", "x"),
        "postgres://u:p@h/x?sslmode=disable"
    );
    assert_eq!(with_database("postgres://h:1", "x"), "postgres://h:1/x");
    let _ = PgConnectOptions::from_str("postgres://h/x").unwrap();
}

#[tokio::test]
#[ignore = "needs postgresql: run scripts/test"]
async fn tls_is_used_when_the_url_requires_it() {
    let h = postgres().await;
    let mut probe = PgConnection::connect(&h.url).await.unwrap();
    let ssl: String = sqlx::query_scalar("SHOW ssl")
        .fetch_one(&mut probe)
        .await
        .unwrap();
    if ssl != "on" {
        eprintln!("skipped: the test server has TLS off");
        return;
    }
    let url = format!("{}?sslmode=require", h.url);
    let store = fledge_store::connect(&url).await.unwrap();
    store.put_app("web", &serde_json::json!({})).await.unwrap();
    // And the connection really is encrypted.
    let mut conn = PgConnection::connect(&url).await.unwrap();
    let encrypted: bool =
        sqlx::query_scalar("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
            .fetch_one(&mut conn)
            .await
            .unwrap();
    assert!(encrypted);
}

#[tokio::test]
#[ignore = "needs postgresql: run scripts/test"]
async fn a_leader_cut_off_in_the_middle_of_a_write_does_not_hold_up_the_take_over() {
    // Node A reaches the database through a link that goes silent as soon as its
    // fenced write has the lease row's share lock: to the database, A's session then
    // sits idle in a transaction, as it would under a leader frozen (SIGSTOP, a
    // paused VM) or cut off in the middle of a write. Node B must still take the
    // lease over once A's has run out, and soon after.
    let h = postgres().await;
    let b = PgStore::connect(&h.url).await.unwrap();
    let link = SilentLink::start(&h.url).await;
    let a = PgStore::connect(&link.url).await.unwrap();
    let ttl = Duration::from_secs(1);
    let lease_a = a
        .try_acquire_lease("controller", "node-a", ttl)
        .await
        .unwrap()
        .expect("the lease is free");

    // The fence answers with the holder's name: the link goes silent right after.
    link.silence_after_the_server_says("node-a");
    let fence = lease_a.fence();
    let write = tokio::spawn(async move {
        let update = StateUpdate {
            id: "r-1".to_owned(),
            expected_revision: 1,
            state: serde_json::json!({}),
        };
        a.update_states(&[update], Some(&fence)).await
    });
    tokio::time::timeout(Duration::from_secs(10), link.silenced())
        .await
        .expect("A's write reached its fence");

    let cut_off = Instant::now();
    let lease_b = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            if let Some(lease) = b
                .try_acquire_lease("controller", "node-b", ttl)
                .await
                .unwrap()
            {
                return lease;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .expect("B takes the lease over while A's transaction is left open");
    let waited = cut_off.elapsed();
    assert!(
        lease_b.epoch > lease_a.epoch,
        "{lease_b:?} after {lease_a:?}"
    );
    assert!(
        waited < IDLE_IN_TRANSACTION_TIMEOUT + Duration::from_secs(3),
        "the take-over waited {waited:?}"
    );
    // The database ended A's transaction (its write is not applied); A's call is
    // still waiting on the silent link.
    let mut probe = PgConnection::connect(&h.url).await.unwrap();
    let open: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pg_stat_activity \
         WHERE datname = current_database() AND state LIKE 'idle in transaction%'",
    )
    .fetch_one(&mut probe)
    .await
    .unwrap();
    assert_eq!(open, 0, "a session is still idle in a transaction");
    write.abort();
}

/// A TCP relay to the PostgreSQL server that, once told, stops passing anything on
/// either way (holding both connections open) right after the server sent a given
/// text to the client.
struct SilentLink {
    url: String,
    trigger: Arc<std::sync::Mutex<Option<Vec<u8>>>>,
    silenced: Arc<tokio::sync::Notify>,
    relay: tokio::task::JoinHandle<()>,
}

impl SilentLink {
    async fn start(url: &str) -> Self {
        let target = PgConnectOptions::from_str(url).unwrap();
        let upstream = format!("{}:{}", target.get_host(), target.get_port());
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        // The same user, password and database at the relay's address, in the clear
        // so that the server's answers can be read.
        let (scheme, rest) = url.split_once("://").expect("a postgres:// URL");
        let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
        let user = authority
            .rsplit_once('@')
            .map_or(String::new(), |(user, _)| format!("{user}@"));
        let database = path.split_once('?').map_or(path, |(db, _)| db);
        let url = format!(
            "{scheme}://{user}{}/{database}?sslmode=disable",
            listener.local_addr().unwrap()
        );
        let trigger: Arc<std::sync::Mutex<Option<Vec<u8>>>> = Arc::default();
        let silenced = Arc::new(tokio::sync::Notify::new());
        let relay = tokio::spawn({
            let (trigger, silenced) = (trigger.clone(), silenced.clone());
            async move {
                let silent = Arc::new(AtomicBool::new(false));
                while let Ok((client, _)) = listener.accept().await {
                    let server = TcpStream::connect(&upstream).await.unwrap();
                    let (trigger, silenced, silent) =
                        (trigger.clone(), silenced.clone(), silent.clone());
                    tokio::spawn(relay(client, server, trigger, silenced, silent));
                }
            }
        });
        SilentLink {
            url,
            trigger,
            silenced,
            relay,
        }
    }

    fn silence_after_the_server_says(&self, text: &str) {
        *self.trigger.lock().unwrap() = Some(text.as_bytes().to_vec());
    }

    async fn silenced(&self) {
        self.silenced.notified().await;
    }
}

impl Drop for SilentLink {
    fn drop(&mut self) {
        self.relay.abort();
    }
}

/// Passes bytes both ways until the link is silenced; then holds both sockets open.
async fn relay(
    client: TcpStream,
    server: TcpStream,
    trigger: Arc<std::sync::Mutex<Option<Vec<u8>>>>,
    silenced: Arc<tokio::sync::Notify>,
    silent: Arc<AtomicBool>,
) {
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    let up = {
        let silent = silent.clone();
        async move {
            let mut buf = vec![0; 16 * 1024];
            loop {
                let n = client_read.read(&mut buf).await.unwrap_or(0);
                if n == 0 || silent.load(Ordering::SeqCst) {
                    return (client_read, server_write);
                }
                if server_write.write_all(&buf[..n]).await.is_err() {
                    return (client_read, server_write);
                }
            }
        }
    };
    let down = async move {
        let mut buf = vec![0; 16 * 1024];
        loop {
            let n = server_read.read(&mut buf).await.unwrap_or(0);
            if n == 0 {
                return (server_read, client_write);
            }
            let said = trigger
                .lock()
                .unwrap()
                .as_ref()
                .is_some_and(|text| buf[..n].windows(text.len()).any(|w| w == text.as_slice()));
            if said {
                silent.store(true, Ordering::SeqCst);
                silenced.notify_one();
                return (server_read, client_write);
            }
            if client_write.write_all(&buf[..n]).await.is_err() {
                return (server_read, client_write);
            }
        }
    };
    // Both halves are kept (not dropped) once silent: the connections stay open.
    let (_up, _down) = tokio::join!(up, down);
    std::future::pending::<()>().await;
}

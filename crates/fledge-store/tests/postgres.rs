//! The store contract on PostgreSQL. Each test gets its own database on one server:
//! the one named by `FLEDGE_TEST_POSTGRES_URL`, or else a throwaway server that
//! `scripts/pg-test-server` starts for this test process and stops when it exits.

mod common;
// The same test server as the binary's tests; its database helpers go unused here.
#[allow(dead_code)]
#[path = "../../fledge/tests/support/postgres.rs"]
mod server;

use std::str::FromStr;

use fledge_store::{PgStore, Store};
use sqlx::Connection;
use sqlx::postgres::{PgConnectOptions, PgConnection};

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

//! A PostgreSQL server for tests: the one `FLEDGE_TEST_POSTGRES_URL` names (CI and
//! `scripts/test` start it), else one `scripts/pg-test-server` starts for this test
//! process; and fresh databases on it. The store's own PostgreSQL tests use it too.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The test server's admin URL: `FLEDGE_TEST_POSTGRES_URL`, else one started by
/// `scripts/pg-test-server` for this process (once, however often this is called).
pub fn server_url() -> String {
    static URL: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    URL.get_or_init(start_server).clone()
}

fn start_server() -> String {
    if let Ok(url) = std::env::var("FLEDGE_TEST_POSTGRES_URL") {
        return url;
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/pg-test-server");
    let out = Command::new(&script)
        .arg("--watch-pid")
        .arg(std::process::id().to_string())
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .unwrap_or_else(|e| panic!("running {}: {e}", script.display()));
    assert!(out.status.success(), "{} failed", script.display());
    let stdout = String::from_utf8_lossy(&out.stdout);
    stdout
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix("FLEDGE_TEST_POSTGRES_URL="))
        .unwrap_or_else(|| panic!("no URL in the output of pg-test-server: {stdout}"))
        .to_owned()
}

/// `url` with its database name replaced.
pub fn with_database(url: &str, db: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, format!("?{q}")),
        None => (url, String::new()),
    };
    let (scheme, rest) = base.split_once("://").expect("a postgres:// URL");
    let authority = rest.split_once('/').map_or(rest, |(a, _)| a);
    format!("{scheme}://{authority}/{db}{query}")
}

pub fn psql() -> PathBuf {
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().join("bin/psql"))
        .filter(|p| p.exists())
        .collect();
    found.sort();
    found.pop().unwrap_or_else(|| PathBuf::from("psql"))
}

/// A fresh database `{prefix}_{pid}` on the test server, so the lease and the
/// rollouts are the test's alone; returns its URL.
pub fn fresh_database(prefix: &str) -> String {
    let admin = server_url();
    let db = format!("{prefix}_{}", std::process::id());
    let status = Command::new(psql())
        .arg(&admin)
        .args(["-q", "-c", &format!("DROP DATABASE IF EXISTS {db}")])
        .args(["-c", &format!("CREATE DATABASE {db}")])
        .status()
        .expect("psql runs");
    assert!(status.success(), "cannot create database {db}");
    with_database(&admin, &db)
}

/// Runs `sql` (one or more statements) through psql against the database at `url`.
pub fn run_sql(url: &str, sql: &str) {
    let out = Command::new(psql())
        .arg(url)
        .args(["-q", "-v", "ON_ERROR_STOP=1", "-c", sql])
        .output()
        .expect("psql runs");
    assert!(
        out.status.success(),
        "psql `{sql}` failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

//! A headless Chromium driven over WebDriver for the web UI's tests: starts
//! `chromedriver` on a free loopback port with a fresh profile, opens a session, and
//! stops both at the end, pass or fail: the driver leads a process group of its own,
//! and dropping the [`Browser`] kills that group, Chromium and its helpers with it.
//! Also a raw HTTP helper that can send cookies and headers.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use axum::body::Bytes;
use fantoccini::elements::Element;
use fantoccini::error::CmdError;
use fantoccini::{Client, ClientBuilder, Locator};
use http_body_util::{BodyExt, Full};
use hyper::{HeaderMap, Method, Request, StatusCode};
use hyper_util::client::legacy::Client as HttpClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};

use crate::support::process::ChildGuard;

/// The browser and driver binaries (Debian's `chromium` and `chromium-driver`).
pub const CHROMIUM: &str = "/usr/bin/chromium";
/// See [`CHROMIUM`].
pub const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// A running chromedriver with one browser session.
#[derive(Debug)]
pub struct Browser {
    /// The WebDriver session.
    pub client: Client,
    driver: ChildGuard,
    driver_addr: SocketAddr,
    session: String,
    _profile: tempfile::TempDir,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

impl Browser {
    /// Starts chromedriver and a headless Chromium with a `width`×`height` window.
    pub async fn start(width: u32, height: u32) -> Self {
        let port = free_port();
        let driver_addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let mut cmd = Command::new(CHROMEDRIVER);
        cmd.arg(format!("--port={port}"))
            .arg("--allowed-ips=127.0.0.1")
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        // Chromium and its helpers join the driver's group: killed together.
        let driver = ChildGuard::spawn(cmd, true)
            .unwrap_or_else(|e| panic!("cannot start {CHROMEDRIVER}: {e}"));
        // Poll the driver's status endpoint until it answers (bounded).
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let ready = raw(driver_addr, Method::GET, "/status", &[], None)
                .await
                .is_some_and(|r| r.body["value"]["ready"] == true);
            if ready {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "chromedriver did not become ready on {driver_addr}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let profile = tempfile::tempdir().unwrap();
        let args = vec![
            "--headless=new".to_owned(),
            "--no-sandbox".to_owned(),
            "--disable-gpu".to_owned(),
            "--disable-dev-shm-usage".to_owned(),
            "--disable-background-networking".to_owned(),
            "--disable-component-update".to_owned(),
            "--no-first-run".to_owned(),
            "--disable-sync".to_owned(),
            "--hide-scrollbars".to_owned(),
            format!("--window-size={width},{height}"),
            format!("--user-data-dir={}", profile.path().display()),
        ];
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            json!({"binary": CHROMIUM, "args": args}),
        );
        caps.insert("goog:loggingPrefs".into(), json!({"browser": "ALL"}));
        let client = ClientBuilder::new(HttpConnector::new())
            .capabilities(caps)
            .connect(&format!("http://{driver_addr}"))
            .await
            .expect("a WebDriver session with headless Chromium");
        let session = client
            .session_id()
            .await
            .unwrap()
            .expect("the session has an id");
        let browser = Self {
            client,
            driver,
            driver_addr,
            session,
            _profile: profile,
        };
        browser.resize(width, height).await;
        browser
    }

    /// Makes the page's viewport `width`×`height` CSS pixels.
    pub async fn resize(&self, width: u32, height: u32) {
        self.client.set_window_size(width, height).await.unwrap();
        // The window includes no chrome in headless mode, but check and correct.
        let inner = self
            .client
            .execute("return [window.innerWidth, window.innerHeight]", vec![])
            .await
            .unwrap_or(Value::Null);
        if let (Some(w), Some(h)) = (inner[0].as_u64(), inner[1].as_u64())
            && (w != u64::from(width) || h != u64::from(height))
        {
            let dw = u64::from(width) as i64 - w as i64;
            let dh = u64::from(height) as i64 - h as i64;
            let _ = self
                .client
                .set_window_size(
                    (i64::from(width) + dw).max(100) as u32,
                    (i64::from(height) + dh).max(100) as u32,
                )
                .await;
        }
    }

    /// Opens `url`.
    pub async fn goto(&self, url: &str) {
        self.client.goto(url).await.unwrap();
    }

    /// Runs `script` (a function body) in the page and returns its value.
    pub async fn js(&self, script: &str) -> Value {
        self.client
            .execute(script, vec![])
            .await
            .unwrap_or_else(|e| panic!("script failed: {e}\n{script}"))
    }

    /// The text of the first element matching `css`, or `None`.
    pub async fn text(&self, css: &str) -> Option<String> {
        let script = format!(
            "const el = document.querySelector({}); return el ? el.textContent : null;",
            json!(css)
        );
        self.js(&script).await.as_str().map(str::to_owned)
    }

    /// How many elements match `css`.
    pub async fn count(&self, css: &str) -> usize {
        let script = format!("return document.querySelectorAll({}).length;", json!(css));
        self.js(&script).await.as_u64().unwrap_or(0) as usize
    }

    /// Polls until `check` returns `Some`, or panics after `limit` naming `what`.
    pub async fn wait_until<T, F, Fut>(&self, limit: Duration, what: &str, check: F) -> T
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, String>>,
    {
        match crate::support::poll(limit, check).await {
            Ok(v) => v,
            Err(last) => {
                let shot = self.screenshot("failure").await;
                panic!(
                    "timed out after {limit:?} waiting for {what}; last seen: {last} (screenshot: {})",
                    shot.display()
                );
            }
        }
    }

    /// Waits until `script` (a function body) returns `expected`.
    pub async fn wait_js(&self, limit: Duration, what: &str, script: &str, expected: Value) {
        self.wait_until(limit, what, || async {
            match self.js(script).await {
                seen if seen == expected => Ok(()),
                other => Err(other.to_string()),
            }
        })
        .await
    }

    /// Waits until an element matches `css` and its text contains `needle`.
    pub async fn wait_text(&self, css: &str, needle: &str, limit: Duration) -> String {
        self.wait_until(limit, &format!("`{needle}` in {css}"), || async {
            match self.text(css).await {
                Some(t) if t.contains(needle) => Ok(t),
                other => Err(format!("{other:?}")),
            }
        })
        .await
    }

    /// Clicks the element matching `css`, retrying while the page re-renders it.
    pub async fn click(&self, css: &str) {
        self.on_element(css, "click", |el| async move { el.click().await })
            .await;
    }

    /// Chooses the option with `value` in the `<select>` matching `css`, retrying
    /// while the page re-renders it (as it does on a change it reacts to).
    pub async fn select(&self, css: &str, value: &str) {
        self.on_element(css, "select an option of", |el| async move {
            el.select_by_value(value).await
        })
        .await;
    }

    /// Does `act` to the element matching `css`, finding it again while that fails
    /// (not there yet, or replaced by a re-render during the act), for 10 s.
    async fn on_element<F, Fut>(&self, css: &str, what: &str, act: F)
    where
        F: Fn(Element) -> Fut,
        Fut: Future<Output = Result<(), CmdError>>,
    {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let result = match self.client.find(Locator::Css(css)).await {
                Ok(el) => act(el).await.map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            };
            match result {
                Ok(()) => return,
                Err(e) if tokio::time::Instant::now() >= deadline => {
                    panic!("cannot {what} {css}: {e}")
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }

    /// Types `text` into the element matching `css`.
    pub async fn type_into(&self, css: &str, text: &str) {
        let el = self
            .client
            .wait()
            .at_most(Duration::from_secs(10))
            .for_element(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("no {css}: {e}"));
        el.send_keys(text).await.unwrap();
    }

    /// Errors the page recorded (`window.__fledgeErrors`) and severe entries of the
    /// browser's console log (failed loads, uncaught exceptions, CSP violations).
    pub async fn console_errors(&self) -> Vec<String> {
        let mut out: Vec<String> = self
            .js("return window.__fledgeErrors || ['the page script did not load'];")
            .await
            .as_array()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .map(|v| v.as_str().unwrap_or_default().to_owned())
            .collect();
        let path = format!("/session/{}/se/log", self.session);
        let body = json!({"type": "browser"}).to_string();
        if let Some(reply) = raw(
            self.driver_addr,
            Method::POST,
            &path,
            &[("content-type", "application/json")],
            Some(&body),
        )
        .await
        {
            for entry in reply.body["value"].as_array().cloned().unwrap_or_default() {
                if entry["level"] == "SEVERE" {
                    out.push(entry["message"].as_str().unwrap_or_default().to_owned());
                }
            }
        }
        out
    }

    /// Saves a screenshot of the viewport as `target/ui-screenshots/NAME.png` and
    /// returns its path.
    pub async fn screenshot(&self, name: &str) -> PathBuf {
        let dir = screenshot_dir();
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(format!("{name}.png"));
        match self.client.screenshot().await {
            Ok(png) => std::fs::write(&path, png).unwrap(),
            Err(e) => eprintln!("screenshot {name} failed: {e}"),
        }
        path
    }

    /// Ends the session, then stops the driver and whatever the browser left.
    pub async fn close(self) {
        let _ = tokio::time::timeout(Duration::from_secs(10), self.client.clone().close()).await;
    }
}

/// `target/ui-screenshots` at the workspace root.
pub fn screenshot_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../target/ui-screenshots")
        .components()
        .collect()
}

/// A raw HTTP answer.
#[derive(Debug, Clone)]
pub struct RawReply {
    /// The status code.
    pub status: StatusCode,
    /// The response headers.
    pub headers: HeaderMap,
    /// The body as JSON (a string when it is not JSON).
    pub body: Value,
}

/// Sends one request with the given headers; `None` when the connection fails.
pub async fn raw(
    addr: SocketAddr,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> Option<RawReply> {
    let client: HttpClient<HttpConnector, Full<Bytes>> =
        HttpClient::builder(TokioExecutor::new()).build_http();
    let mut req = Request::builder()
        .method(method)
        .uri(format!("http://{addr}{path}"));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req
        .body(Full::new(Bytes::from(body.unwrap_or_default().to_owned())))
        .ok()?;
    let resp = tokio::time::timeout(Duration::from_secs(20), client.request(req))
        .await
        .ok()?
        .ok()?;
    let status = resp.status();
    let headers = resp.headers().clone();
    let bytes = resp.into_body().collect().await.ok()?.to_bytes();
    let text = String::from_utf8_lossy(&bytes).into_owned();
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    Some(RawReply {
        status,
        headers,
        body,
    })
}

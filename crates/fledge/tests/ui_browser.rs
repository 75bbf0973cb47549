//! The web UI in a real browser (headless Chromium over WebDriver) against an
//! in-process server with loopback backends, the built-in proxy and live traffic.
//!
//! Screenshots land in `target/ui-screenshots/`; regenerate them with
//! `cargo test -p fledge --test ui_browser -- --ignored`.

mod support;
#[path = "support/webdriver.rs"]
mod webdriver;

use std::net::SocketAddr;
use std::time::Duration;

use fledge_engine::AnalysisReport;
use fledge_server::{RunningServer, StartOptions, start};
use hyper::{Method, StatusCode};
use serde_json::Value;
use support::rollout::{chart_points, event, has_event_by, member_of};
use support::serve::free_addr;
use support::{Backend, Http, Load, backend, config, spec};
use webdriver::{Browser, RawReply, raw};

/// One browser test at a time: each runs Chromium, and the machine is small.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const WAIT: Duration = Duration::from_secs(30);
const DESKTOP: (u32, u32) = (1280, 900);
const PHONE: (u32, u32) = (375, 812);

const OPERATOR_TOKEN: &str = "op-7b1f0c2e9d4a";
const VIEWER_TOKEN: &str = "view-3c8e5a1d6f20";
const ADMIN_TOKEN: &str = "admin-94d2b7e05a13";

struct Fixture {
    server: RunningServer,
    api: SocketAddr,
    http: Http,
    load: Option<Load>,
    _stable: Backend,
    _canary: Backend,
    _extra: Vec<Backend>,
    _dir: tempfile::TempDir,
    /// This test's turn at the browser, until everything above is dropped.
    _serial: tokio::sync::MutexGuard<'static, ()>,
}

impl Fixture {
    /// A server with app `shop` (stable v1) under steady traffic, and an idle app
    /// `search`; `tokens` as in `FLEDGE_TOKENS`; the canary fails every
    /// `canary_fail_every`-th request when set.
    async fn start(tokens: Option<&str>, canary_fail_every: Option<u64>) -> Self {
        let serial = SERIAL.lock().await;
        let dir = tempfile::tempdir().unwrap();
        let stable = backend("stable", None).await;
        let canary = backend("canary", canary_fail_every).await;
        let server = start(
            config(dir.path(), "shop", &stable, &canary),
            StartOptions {
                env_tokens: tokens.map(str::to_owned),
                ..Default::default()
            },
        )
        .await
        .expect("the server starts");
        let api = server.api_addr();
        let mut http = Http::new(api);
        if tokens.is_some() {
            http = http.with_token(ADMIN_TOKEN);
        }
        let search_stable = backend("search-stable", None).await;
        let search_canary = backend("search-canary", None).await;
        // A concrete port: the server refuses `127.0.0.1:0` as "its own address"
        // when its own config says port 0.
        let port = free_addr().port();
        let app = serde_json::json!({
            "listen": format!("127.0.0.1:{port}"),
            "stable": {"version": "v7.4.0", "endpoints": [search_stable.endpoint()]},
            "canary": {"endpoints": [search_canary.endpoint()]},
        });
        let reply = http.put("/apps/search", &app.to_string()).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
        let proxy = server.proxy_addr("shop").await.expect("shop has a proxy");
        let load = Load::start(proxy, 2);
        Self {
            server,
            api,
            http,
            load: Some(load),
            _stable: stable,
            _canary: canary,
            _extra: vec![search_stable, search_canary],
            _dir: dir,
            _serial: serial,
        }
    }

    /// [`Fixture::start`] with sign-in: `ops` (operator), `watcher` (viewer) and
    /// `root` (admin), whose tokens are the `*_TOKEN` constants.
    async fn with_roles() -> Self {
        let tokens = format!(
            "ops:operator:{OPERATOR_TOKEN},watcher:viewer:{VIEWER_TOKEN},root:admin:{ADMIN_TOKEN}"
        );
        Self::start(Some(&tokens), None).await
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.api)
    }

    /// Starts a rollout of `shop` to `v2` with these stages; returns its id.
    async fn rollout(&self, stages: &str) -> String {
        support::rollout::create(&self.http, &spec("shop", "v2", stages)).await
    }

    async fn rollout_json(&self, id: &str) -> Value {
        rollout_as(&self.http, id).await
    }

    /// Checks that the page logged no errors, then closes the browser and stops.
    async fn finish(self, browser: Browser) {
        assert_no_console_errors(&browser).await;
        browser.close().await;
        self.stop().await;
    }

    async fn stop(mut self) {
        if let Some(load) = self.load.take() {
            load.stop().await;
        }
        shutdown(self.server).await;
    }
}

/// Stops a server, failing (instead of hanging) if it does not stop, e.g. because
/// an open event stream holds it.
async fn shutdown(server: RunningServer) {
    tokio::time::timeout(Duration::from_secs(30), server.shutdown())
        .await
        .expect("the server stops within 30 s with browsers connected");
}

/// `GET path` as `http`'s caller sees it.
async fn get_as(http: &Http, path: &str) -> Value {
    let reply = http.get(path).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    reply.body
}

/// `GET /rollouts/{id}` as `http`'s caller sees it.
async fn rollout_as(http: &Http, id: &str) -> Value {
    get_as(http, &format!("/rollouts/{id}")).await
}

/// The actions a rollout or group view allows, sorted.
fn allowed_actions(rollout: &Value) -> Vec<String> {
    let mut names: Vec<String> = rollout["allowedActions"]
        .as_array()
        .unwrap_or_else(|| panic!("no allowedActions in {rollout}"))
        .iter()
        .map(|a| a.as_str().unwrap().to_owned())
        .collect();
    names.sort();
    names
}

/// Waits until the rollout page's buttons offer exactly the actions that
/// `GET /rollouts/{id}` allows `http`'s caller, and returns them.
async fn wait_actions_as(browser: &Browser, http: &Http, id: &str) -> Vec<String> {
    wait_buttons_for(browser, http, &format!("/rollouts/{id}"), true).await
}

/// Waits until the page's buttons offer exactly the actions that `GET path` (a
/// rollout or a group) allows `http`'s caller, and returns them; "promote" comes
/// with a second button, "Promote fully", when `full`.
async fn wait_buttons_for(browser: &Browser, http: &Http, path: &str, full: bool) -> Vec<String> {
    browser
        .wait_until(WAIT, "buttons for exactly the allowed actions", || async {
            let allowed = allowed_actions(&get_as(http, path).await);
            let shown = browser
                .js("return [...document.querySelectorAll('.actions button')].map((b) => b.dataset.action);")
                .await;
            let mut shown: Vec<String> = serde_json::from_value(shown).unwrap_or_default();
            let fully = browser.count("#act-promote-full").await;
            shown.sort();
            shown.dedup();
            let promote = allowed.iter().any(|a| a == "promote");
            if shown == allowed && fully == usize::from(promote && full) {
                Ok(shown)
            } else {
                Err(format!(
                    "shown {shown:?} (promote fully: {fully}), allowed {allowed:?}"
                ))
            }
        })
        .await
}

/// The seconds a stage line says are left: `Stage 2 of 3 · 4m 52s left of 5m` → 292.
fn seconds_left(line: &str) -> Option<u64> {
    let before = line.split(" left").next()?;
    let words = before.rsplit('·').next()?.trim();
    let words = words.strip_prefix("paused, ").unwrap_or(words);
    let mut total = 0;
    for word in words.split_whitespace() {
        let (n, unit) = word.split_at(word.len().checked_sub(1)?);
        let n: u64 = n.parse().ok()?;
        total += n * match unit {
            "d" => 86_400,
            "h" => 3_600,
            "m" => 60,
            "s" => 1,
            _ => return None,
        };
    }
    Some(total)
}

/// Waits until the stage line at `css` shows a time left, and returns it in seconds
/// with the line.
async fn wait_seconds_left(browser: &Browser, css: &str) -> (u64, String) {
    browser
        .wait_until(WAIT, &format!("time left in {css}"), || async {
            let line = browser.text(css).await.unwrap_or_default();
            match seconds_left(&line) {
                Some(s) if line.contains(" left") => Ok((s, line)),
                _ => Err(line),
            }
        })
        .await
}

async fn assert_no_console_errors(browser: &Browser) {
    let errors = browser.console_errors().await;
    assert!(
        errors.is_empty(),
        "the browser console has errors: {errors:#?}"
    );
}

/// Waits until the rollout page shows `phase`.
async fn wait_phase(browser: &Browser, phase: &str) {
    wait_page_phase(browser, "rollout", phase).await;
}

/// Waits until the `page` page (`rollout`, `group`) shows `phase`.
async fn wait_page_phase(browser: &Browser, page: &str, phase: &str) {
    browser
        .wait_js(
            WAIT,
            &format!("phase {phase} on the {page} page"),
            &format!("const el = document.querySelector('section.{page}'); return el ? el.dataset.phase : null;"),
            Value::from(phase),
        )
        .await;
}

/// Waits until the rollout page shows the canary at `weight`.
async fn wait_weight(browser: &Browser, weight: &str) {
    browser
        .wait_text(".rollout .weight-value", weight, WAIT)
        .await;
}

/// Waits until the rollout page's stage line shows `text`.
/// Waits until the part `part` (a selector) of the card `card` shows `text`;
/// returns the part's whole text.
async fn wait_card_text(browser: &Browser, card: &str, part: &str, text: &str) -> String {
    browser
        .wait_text(&format!("{card} {part}"), text, WAIT)
        .await
}

async fn wait_stage_line(browser: &Browser, text: &str) {
    browser.wait_text(".rollout .stage-line", text, WAIT).await;
}

/// Waits until the charts are redrawn to fit a `width`-pixel-wide page.
async fn wait_chart_width(browser: &Browser, width: u32) {
    browser
        .wait_until(WAIT, "charts that fit the page", || async {
            let w = browser
                .js("const c = document.querySelector('svg.chart'); return c ? c.width.baseVal.value : null;")
                .await;
            match w.as_f64() {
                Some(w) if w <= f64::from(width) - 40.0 => Ok(()),
                _ => Err(w.to_string()),
            }
        })
        .await;
}

/// A request with these headers and no body, straight to the API.
async fn request(
    api: SocketAddr,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
) -> RawReply {
    raw(api, method, path, headers, None)
        .await
        .unwrap_or_else(|| panic!("no answer to {path}"))
}

/// The browser's session cookie.
async fn session_cookie(browser: &Browser) -> fantoccini::cookies::Cookie<'static> {
    browser
        .client
        .get_named_cookie("fledge_session")
        .await
        .unwrap()
}

/// The CSRF token of the session that `cookie` carries, from `GET /session`.
async fn csrf_token(api: SocketAddr, cookie: &str) -> String {
    let session = request(api, Method::GET, "/session", &[("cookie", cookie)]).await;
    session.body["csrfToken"].as_str().unwrap().to_owned()
}

/// Waits until the page offers the sign-in form.
async fn wait_signin_form(browser: &Browser) {
    browser
        .wait_js(
            WAIT,
            "the sign-in form",
            "return document.querySelectorAll('#signin-form').length;",
            Value::from(1),
        )
        .await;
}

/// Signs in with `token` on the sign-in form and waits until the page names the
/// viewer as `who` (`name · role`).
async fn sign_in(browser: &Browser, token: &str, who: &str) {
    wait_signin_form(browser).await;
    browser.type_into("#token", token).await;
    browser.click("#signin").await;
    browser.wait_text("#who", who, WAIT).await;
}

/// Chooses `phase` in the history page's outcome filter (`""`: any outcome).
async fn select_phase(browser: &Browser, phase: &str) {
    browser.select("#filter-phase", phase).await;
}

/// Waits until the confirmation dialog is open.
async fn dialog_open(browser: &Browser) {
    browser
        .wait_js(
            WAIT,
            "the confirmation dialog",
            "return document.getElementById('confirm').open;",
            Value::Bool(true),
        )
        .await;
}

/// Clicks the action `button` and confirms it in the dialog (with `reason`).
async fn act(browser: &Browser, button: &str, reason: Option<&str>) {
    browser.click(button).await;
    confirm_dialog(browser, reason).await;
}

/// Confirms the open (or opening) dialog, typing `reason` first if given.
async fn confirm_dialog(browser: &Browser, reason: Option<&str>) {
    dialog_open(browser).await;
    if let Some(reason) = reason {
        browser.type_into("#confirm-reason", reason).await;
    }
    browser.click("#confirm-ok").await;
}

const LIVE_STAGES: &str = "  - traffic: 10\n    duration: 3s\n    successCriteria:\n      - error_rate < 5%\n  - traffic: 60\n    duration: 5m\n    successCriteria:\n      - error_rate < 5%\n      - latency_p95 < 500ms\n  - traffic: 100\n    final: true\n";

#[tokio::test]
#[ignore = "needs chromium: run scripts/test"]
async fn overview_shows_the_weight_change_live() {
    let fx = Fixture::start(None, None).await;
    let browser = Browser::start(DESKTOP.0, DESKTOP.1).await;
    let id = fx.rollout(LIVE_STAGES).await;

    browser.goto(&fx.url("/")).await;
    // The browser's time of day is two hours behind the server's: the page must
    // count a stage down from the server's `stageRemainingMs` with the time that
    // passed since it arrived, never set the server's timestamps against its own.
    browser
        .js("const real = Date.now; Date.now = () => real.call(Date) - 2 * 3600 * 1000; return null;")
        .await;
    let card = ".app-card[data-app=\"shop\"]";
    wait_card_text(&browser, card, ".weight-value", "10%").await;
    wait_card_text(&browser, card, ".stage-line", "Stage 1 of 3").await;
    assert_eq!(
        browser.text(&format!("{card} .badge")).await.as_deref(),
        Some("Progressing")
    );
    assert_eq!(
        browser
            .text(".app-card[data-app=\"search\"] .stable-version")
            .await
            .as_deref(),
        Some("v7.4.0")
    );
    // A marker that a reload would wipe out.
    browser.js("window.__sameDocument = 42; return null;").await;

    // The engine moves to 60% after 3 s of healthy traffic; the page follows live.
    browser
        .wait_text(
            &format!("{card} .weight-value"),
            "60%",
            Duration::from_secs(60),
        )
        .await;
    let line = wait_card_text(&browser, card, ".stage-line", "Stage 2 of 3").await;
    assert_eq!(
        browser.js("return window.__sameDocument;").await,
        42,
        "the page reloaded instead of updating live"
    );
    // Time left in the 5 m stage as the server counts it, moving down between the
    // server's updates; then the health of both versions.
    assert!(line.contains("Stage 2 of 3"), "{line}");
    let stage_line = format!("{card} .stage-line");
    let (left, line) = wait_seconds_left(&browser, &stage_line).await;
    assert!(line.ends_with(" left of 5m"), "{line}");
    let server_left = fx.rollout_json(&id).await["stageRemainingMs"]
        .as_u64()
        .expect("a timed stage has stageRemainingMs")
        / 1000;
    assert!(
        (240..=300).contains(&left) && left.abs_diff(server_left) <= 3,
        "the page says {left} s left ({line}), the server {server_left} s"
    );
    browser
        .wait_until(WAIT, "the countdown to move on", || async {
            let line = browser.text(&stage_line).await.unwrap_or_default();
            match seconds_left(&line) {
                Some(now) if now < left => Ok(()),
                _ => Err(line),
            }
        })
        .await;
    // Paused, the count stands still at the server's figure; resumed, it goes on
    // from there.
    let paused = fx.http.post(&format!("/rollouts/{id}/pause"), None).await;
    assert_eq!(paused.status, StatusCode::OK, "{}", paused.text);
    browser.wait_text(&stage_line, "paused, ", WAIT).await;
    let frozen = fx.rollout_json(&id).await["stageRemainingMs"]
        .as_u64()
        .expect("a paused stage keeps its remaining time");
    let (shown, line) = wait_seconds_left(&browser, &stage_line).await;
    assert!(
        shown.abs_diff(frozen / 1000) <= 1,
        "paused at {frozen} ms, the page says {line}"
    );
    let resumed = fx.http.post(&format!("/rollouts/{id}/resume"), None).await;
    assert_eq!(resumed.status, StatusCode::OK, "{}", resumed.text);
    let (shown, line) = browser
        .wait_until(WAIT, "the countdown to run again", || async {
            let line = browser.text(&stage_line).await.unwrap_or_default();
            match seconds_left(&line) {
                Some(s) if !line.contains("paused") => Ok((s, line)),
                _ => Err(line),
            }
        })
        .await;
    assert!(
        shown <= frozen / 1000 + 1 && shown + 5 >= frozen / 1000,
        "resumed from {frozen} ms, the page says {line}"
    );
    browser
        .wait_until(WAIT, "canary health in the overview", || async {
            match browser.text(&format!("{card} .arm-canary .err")).await {
                Some(t) if t.ends_with('%') => Ok(()),
                other => Err(format!("{other:?}")),
            }
        })
        .await;
    assert_eq!(fx.rollout_json(&id).await["canaryWeight"], 60);

    browser.screenshot("overview-desktop").await;
    browser.resize(PHONE.0, PHONE.1).await;
    wait_card_text(&browser, card, ".weight-value", "60%").await;
    browser.screenshot("overview-phone").await;
    fx.finish(browser).await;
}

#[tokio::test]
#[ignore = "needs chromium: run scripts/test"]
async fn abort_from_the_rollout_page_rolls_back() {
    let fx = Fixture::start(None, None).await;
    let browser = Browser::start(DESKTOP.0, 2300).await;
    let id = fx.rollout(LIVE_STAGES).await;

    browser.goto(&fx.url(&format!("/#/rollouts/{id}"))).await;
    wait_phase(&browser, "Progressing").await;
    browser
        .wait_text(
            ".rollout .stage-line",
            "Stage 2 of 3",
            Duration::from_secs(60),
        )
        .await;
    // Let the charts gather some readings (one every two seconds) for the screenshots.
    browser
        .wait_until(
            Duration::from_secs(40),
            "the charts to have lines",
            || async {
                let n = browser.count(".chart path.series.canary").await;
                if n >= 3 {
                    Ok(())
                } else {
                    Err(format!("{n} canary lines"))
                }
            },
        )
        .await;
    browser
        .wait_until(WAIT, "the analysis of stage 2", || async {
            let n = browser.count(".criteria tbody tr").await;
            if n == 2 {
                Ok(())
            } else {
                Err(format!("{n} criteria rows"))
            }
        })
        .await;
    // The health checks are the engine's analysis, row by row: its criteria in
    // order, with values and limits in the units it reports them in.
    let report: AnalysisReport =
        serde_json::from_value(fx.rollout_json(&id).await["analysis"].clone())
            .expect("the rollout has an analysis");
    let rows = browser
        .js(
            "return [...document.querySelectorAll('.criteria tbody tr')].map((tr) => ({\
             metric: tr.dataset.metric, check: tr.querySelector('code').textContent,\
             canary: tr.querySelector('.crit-canary').textContent,\
             limit: tr.querySelector('.crit-limit').textContent }));",
        )
        .await;
    let rows = rows.as_array().unwrap();
    assert_eq!(rows.len(), report.criteria.len(), "{rows:?}");
    for (row, c) in rows.iter().zip(&report.criteria) {
        assert_eq!(row["check"], c.criterion.as_str(), "{row}");
        assert_eq!(row["metric"], c.metric.as_str(), "{row}");
        let limit = c.threshold.map(|t| c.unit.format(t));
        assert_eq!(row["limit"].as_str(), limit.as_deref(), "{row}");
        let canary = row["canary"].as_str().unwrap();
        let unit = match c.metric.as_str() {
            "error_rate" => "%",
            _ => " ms",
        };
        assert!(canary.ends_with(unit) || canary == "–", "{row}");
    }
    // The charts draw the same limits.
    let limits = browser
        .js("return [...document.querySelectorAll('.chart .threshold-label')].map((t) => t.textContent).join(' | ');")
        .await;
    let limits = limits.as_str().unwrap();
    assert!(
        limits.contains("limit 5.0%") && limits.contains("limit 500 ms"),
        "{limits}"
    );
    tokio::time::sleep(Duration::from_secs(6)).await; // a few more chart points
    browser.screenshot("rollout-desktop").await;
    browser.resize(PHONE.0, 2600).await;
    wait_stage_line(&browser, "Stage 2 of 3").await;
    wait_chart_width(&browser, PHONE.0).await;
    browser.screenshot("rollout-phone").await;
    browser.resize(DESKTOP.0, DESKTOP.1).await;

    // Timeline: stage 1 done, stage 2 now, stage 3 to come, with their traffic.
    assert_eq!(browser.count(".timeline .stage-done").await, 1);
    assert_eq!(browser.count(".timeline .stage-current").await, 1);
    assert_eq!(browser.count(".timeline .stage-todo").await, 1);
    let third = browser
        .text(".timeline [data-stage=\"2\"] .stage-title")
        .await
        .unwrap();
    assert!(third.contains("100%"), "{third}");
    // Exactly the actions the server allows while progressing.
    assert_eq!(
        wait_actions_as(&browser, &fx.http, &id).await,
        ["abort", "pause", "promote"]
    );

    act(&browser, "#act-abort", Some("checkout errors in v2")).await;
    wait_phase(&browser, "Aborted").await;
    wait_weight(&browser, "0%").await;
    browser
        .wait_text(".decision", "checkout errors in v2", WAIT)
        .await;
    browser.wait_text(".events", "Aborted", WAIT).await;
    assert_eq!(wait_actions_as(&browser, &fx.http, &id).await, ["retry"]);

    // The API agrees, and so does the proxy.
    let r = fx.rollout_json(&id).await;
    assert_eq!(r["phase"], "Aborted");
    assert_eq!(r["canaryWeight"], 0);
    let aborted = event(&r, "Aborted");
    assert_eq!(aborted["actor"], "anonymous");
    assert!(
        aborted["message"]
            .as_str()
            .unwrap()
            .contains("checkout errors in v2"),
        "{aborted}"
    );
    let route = fx
        .server
        .shared()
        .apps
        .get("shop")
        .await
        .unwrap()
        .applied_route()
        .await
        .unwrap();
    assert!(route.canary.is_none(), "{route:?}");

    // The history page lists it with who aborted and why.
    browser
        .goto(&fx.url("/#/history?app=shop&phase=Aborted"))
        .await;
    browser
        .wait_text(
            &format!("tr[data-rollout=\"{id}\"] .why"),
            "anonymous aborted",
            WAIT,
        )
        .await;
    browser.screenshot("history-desktop").await;
    // Filtering by another outcome hides it; "any outcome" shows it again.
    select_phase(&browser, "Succeeded").await;
    browser
        .wait_text(".history", "No rollouts match", WAIT)
        .await;
    select_phase(&browser, "").await;
    browser
        .wait_text(
            &format!("tr[data-rollout=\"{id}\"] .why"),
            "checkout errors in v2",
            WAIT,
        )
        .await;
    fx.finish(browser).await;
}

#[tokio::test]
#[ignore = "needs chromium: run scripts/test"]
async fn promote_advances_a_stage_that_waits_for_it() {
    let fx = Fixture::start(None, None).await;
    let browser = Browser::start(DESKTOP.0, DESKTOP.1).await;
    let id = fx
        .rollout("  - traffic: 25\n  - traffic: 50\n  - traffic: 100\n    final: true\n    promote: true\n")
        .await;

    browser.goto(&fx.url(&format!("/#/rollouts/{id}"))).await;
    wait_phase(&browser, "Progressing").await;
    wait_stage_line(&browser, "waiting for a manual promote").await;
    wait_weight(&browser, "25%").await;

    act(&browser, "#act-promote", None).await;
    wait_weight(&browser, "50%").await;
    wait_stage_line(&browser, "Stage 2 of 3").await;
    let r = fx.rollout_json(&id).await;
    assert_eq!(
        (r["stageIndex"].as_u64(), r["canaryWeight"].as_u64()),
        (Some(1), Some(50))
    );
    assert!(has_event_by(&r, "Promoted", "anonymous"), "{r}");

    // Cancelling the dialog does nothing.
    browser.click("#act-promote-full").await;
    dialog_open(&browser).await;
    browser.click("#confirm-cancel").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(fx.rollout_json(&id).await["canaryWeight"], 50);

    // Promote fully: the canary becomes stable.
    act(&browser, "#act-promote-full", None).await;
    wait_phase(&browser, "Succeeded").await;
    wait_weight(&browser, "100%").await;
    assert_eq!(fx.rollout_json(&id).await["phase"], "Succeeded");
    fx.finish(browser).await;
}

#[tokio::test]
#[ignore = "needs chromium: run scripts/test"]
async fn a_blue_green_rollout_shows_its_preview_and_its_switch() {
    let fx = Fixture::start(None, None).await;
    let browser = Browser::start(DESKTOP.0, DESKTOP.1).await;
    let stages = "  - traffic: 0\n  - traffic: 100\n    duration: 10m\n    promote: true\n";
    let yaml = spec("shop", "v2", stages).replace(
        "strategy: canary\n",
        "strategy: blueGreen\nmatch:\n  - header: x-preview\n    value: \"1\"\n",
    );
    let id = support::rollout::create(&fx.http, &yaml).await;

    browser.goto(&fx.url(&format!("/#/rollouts/{id}"))).await;
    wait_phase(&browser, "Progressing").await;
    wait_stage_line(&browser, "Preview 1 of 2").await;
    browser
        .wait_text(".timeline", "stable kept warm for 10m", WAIT)
        .await;
    wait_weight(&browser, "0%").await;

    // The switch: every user at once, stable kept warm.
    act(&browser, "#act-promote", None).await;
    wait_weight(&browser, "100%").await;
    wait_stage_line(&browser, "Switch 2 of 2").await;
    assert_eq!(fx.rollout_json(&id).await["strategy"], "blueGreen");
    fx.finish(browser).await;
}

#[tokio::test]
#[ignore = "needs chromium: run scripts/test"]
async fn a_failed_rollout_shows_the_decision_evidence() {
    // One canary request in four fails: 25% errors against a 1% limit.
    let fx = Fixture::start(None, Some(4)).await;
    let browser = Browser::start(DESKTOP.0, 1800).await;
    let id = fx
        .rollout("  - traffic: 20\n    duration: 8s\n  - traffic: 50\n    duration: 5m\n    successCriteria:\n      - error_rate < 1%\n  - traffic: 100\n    final: true\n    promote: true\n")
        .await;
    browser.goto(&fx.url(&format!("/#/rollouts/{id}"))).await;
    wait_phase(&browser, "Failed").await;
    let decision = browser.wait_text(".decision", "error_rate", WAIT).await;
    assert!(decision.contains("rolled back automatically"), "{decision}");
    assert!(
        decision.contains("n="),
        "the evidence names the sample size: {decision}"
    );
    wait_weight(&browser, "0%").await;
    browser.wait_text(".criteria", "fail", WAIT).await;
    assert_eq!(wait_actions_as(&browser, &fx.http, &id).await, ["retry"]);
    tokio::time::sleep(Duration::from_secs(3)).await;
    browser.screenshot("rollout-failed-desktop").await;

    // Retry starts it again from stage 1 (where it fails again: the canary is
    // still broken).
    act(&browser, "#act-retry", None).await;
    browser
        .wait_until(WAIT, "a Retried event by anonymous", || async {
            let r = fx.rollout_json(&id).await;
            if has_event_by(&r, "Retried", "anonymous") {
                Ok(())
            } else {
                Err(r["phase"].to_string())
            }
        })
        .await;
    browser.wait_text(".events", "Retried", WAIT).await;
    fx.finish(browser).await;
}

#[tokio::test]
#[ignore = "needs chromium: run scripts/test"]
async fn sign_in_roles_and_csrf() {
    let fx = Fixture::with_roles().await;
    let id = fx
        .rollout("  - traffic: 30\n  - traffic: 100\n    final: true\n")
        .await;
    let browser = Browser::start(DESKTOP.0, DESKTOP.1).await;

    // The page itself is open, with a strict policy; the data is not.
    let page = request(fx.api, Method::GET, "/", &[]).await;
    assert_eq!(page.status, StatusCode::OK);
    let csp = page.headers["content-security-policy"].to_str().unwrap();
    assert!(
        csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"),
        "{csp}"
    );
    assert_eq!(page.headers["x-frame-options"], "DENY");
    assert_eq!(
        request(fx.api, Method::GET, "/status", &[]).await.status,
        StatusCode::UNAUTHORIZED
    );

    // A viewer signs in and sees no buttons.
    browser.goto(&fx.url(&format!("/#/rollouts/{id}"))).await;
    wait_signin_form(&browser).await;
    assert_eq!(
        browser.count(".nav:not([hidden])").await,
        0,
        "nothing but sign-in before signing in"
    );
    browser.screenshot("signin-desktop").await;
    sign_in(&browser, VIEWER_TOKEN, "watcher · viewer").await;
    wait_phase(&browser, "Progressing").await;
    browser
        .wait_text(".actions", "cannot change it", WAIT)
        .await;
    assert_eq!(browser.count(".actions button").await, 0);
    let viewer = fx.http.with_token(VIEWER_TOKEN);
    assert_eq!(
        allowed_actions(&rollout_as(&viewer, &id).await),
        Vec::<String>::new(),
        "a viewer is allowed nothing"
    );
    browser.screenshot("rollout-viewer-desktop").await;
    let cookie = session_cookie(&browser).await;
    assert!(cookie.http_only().unwrap_or(false), "{cookie:?}");
    assert_eq!(
        format!("{:?}", cookie.same_site()),
        "Some(Strict)",
        "{cookie:?}"
    );
    assert_ne!(cookie.value(), VIEWER_TOKEN);
    let viewer_cookie = format!("fledge_session={}", cookie.value());
    // Even with its CSRF token, a viewer's session may not act.
    let csrf = csrf_token(fx.api, &viewer_cookie).await;
    let refused = request(
        fx.api,
        Method::POST,
        &format!("/rollouts/{id}/pause"),
        &[("cookie", &viewer_cookie), ("x-csrf-token", &csrf)],
    )
    .await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN, "{:?}", refused.body);

    // Sign out: the session is gone server-side too.
    browser.click("#signout").await;
    wait_signin_form(&browser).await;
    let after = request(
        fx.api,
        Method::GET,
        "/status",
        &[("cookie", &viewer_cookie)],
    )
    .await;
    assert_eq!(after.status, StatusCode::UNAUTHORIZED);

    // An operator sees the buttons and can use them.
    sign_in(&browser, OPERATOR_TOKEN, "ops · operator").await;
    wait_phase(&browser, "Progressing").await;
    let operator = fx.http.with_token(OPERATOR_TOKEN);
    assert_eq!(
        wait_actions_as(&browser, &operator, &id).await,
        ["abort", "pause", "promote"]
    );
    act(&browser, "#act-pause", None).await;
    wait_phase(&browser, "Paused").await;
    assert_eq!(
        wait_actions_as(&browser, &operator, &id).await,
        ["abort", "promote", "resume"]
    );
    let r = fx.rollout_json(&id).await;
    assert!(has_event_by(&r, "Paused", "ops"), "{r}");
    assert_no_console_errors(&browser).await;

    // A cookie-authenticated POST without the CSRF token is refused...
    let cookie = session_cookie(&browser).await;
    let op_cookie = format!("fledge_session={}", cookie.value());
    let resume = format!("/rollouts/{id}/resume");
    let no_csrf = request(fx.api, Method::POST, &resume, &[("cookie", &op_cookie)]).await;
    assert_eq!(no_csrf.status, StatusCode::FORBIDDEN, "{:?}", no_csrf.body);
    assert_eq!(no_csrf.body["error"]["code"], "csrf");
    // ...from inside the page too (same origin, cookie sent, no header)...
    let in_page = browser
        .client
        .execute_async(
            "const done = arguments[arguments.length - 1];\
             fetch(arguments[0], {method: 'POST', credentials: 'same-origin'}).then(r => done(r.status), e => done(String(e)));",
            vec![Value::String(resume.clone())],
        )
        .await
        .unwrap();
    assert_eq!(in_page, 403);
    // ...as is a cross-site one, even with the token...
    let csrf = csrf_token(fx.api, &op_cookie).await;
    let host = fx.api.to_string();
    let cross = request(
        fx.api,
        Method::POST,
        &resume,
        &[
            ("cookie", &op_cookie),
            ("x-csrf-token", &csrf),
            ("origin", "https://evil.example"),
            ("host", &host),
        ],
    )
    .await;
    assert_eq!(cross.status, StatusCode::FORBIDDEN);
    assert_eq!(fx.rollout_json(&id).await["phase"], "Paused");
    // ...while the same request with the token is accepted, and so is a bearer token
    // with no CSRF token at all.
    let ok = request(
        fx.api,
        Method::POST,
        &resume,
        &[("cookie", &op_cookie), ("x-csrf-token", &csrf)],
    )
    .await;
    assert_eq!(ok.status, StatusCode::OK, "{:?}", ok.body);
    assert_eq!(ok.body["phase"], "Progressing");
    let bearer = format!("Bearer {OPERATOR_TOKEN}");
    let pause = request(
        fx.api,
        Method::POST,
        &format!("/rollouts/{id}/pause"),
        &[("authorization", &bearer)],
    )
    .await;
    assert_eq!(pause.status, StatusCode::OK, "{:?}", pause.body);

    // A wrong token is refused at sign-in.
    let bad = raw(
        fx.api,
        Method::POST,
        "/login",
        &[("content-type", "application/json")],
        Some(r#"{"token":"nope"}"#),
    )
    .await
    .unwrap();
    assert_eq!(bad.status, StatusCode::UNAUTHORIZED);
    assert!(bad.headers.get("set-cookie").is_none());
    browser.close().await;
    fx.stop().await;
}

/// How many Undo buttons app `shop`'s card offers.
async fn undo_buttons(browser: &Browser) -> usize {
    browser
        .count(".app-card[data-app=\"shop\"] button[data-action=\"undo\"]")
        .await
}

/// Waits until app `shop`'s card offers `n` Undo buttons.
async fn wait_undo_buttons(browser: &Browser, n: usize) {
    browser
        .wait_until(
            WAIT,
            &format!("{n} Undo buttons on shop's card"),
            || async {
                match undo_buttons(browser).await {
                    seen if seen == n => Ok(()),
                    seen => Err(seen.to_string()),
                }
            },
        )
        .await;
}

/// Waits until the page shows the rollout page of a rollout other than `not`, and
/// returns its id.
async fn wait_other_rollout_page(browser: &Browser, not: &str) -> String {
    browser
        .wait_until(WAIT, "the new rollout's page", || async {
            let id = browser
                .js("const el = document.querySelector('.rollout'); return el ? el.dataset.rollout : null;")
                .await;
            match id.as_str() {
                Some(id) if id != not => Ok(id.to_owned()),
                _ => Err(id.to_string()),
            }
        })
        .await
}

#[tokio::test]
#[ignore = "needs chromium: run scripts/test"]
async fn undo_from_the_overview_goes_back_to_the_previous_version() {
    let fx = Fixture::with_roles().await;
    let operator = fx.http.with_token(OPERATOR_TOKEN);
    let proxy = Http::new(fx.server.proxy_addr("shop").await.unwrap());
    // v2 becomes stable, so v1 is the version an undo goes back to.
    let v2 = fx
        .rollout("  - traffic: 50\n  - traffic: 100\n    final: true\n    promote: true\n")
        .await;
    let promoted = operator
        .post(&format!("/rollouts/{v2}/promote?full=true"), None)
        .await;
    assert_eq!(promoted.body["phase"], "Succeeded", "{}", promoted.text);
    assert_eq!(proxy.get("/").await.text, "canary");
    let browser = Browser::start(DESKTOP.0, DESKTOP.1).await;
    let card = ".app-card[data-app=\"shop\"]";

    // A viewer sees where an undo would go, and no button.
    browser.goto(&fx.url("/")).await;
    sign_in(&browser, VIEWER_TOKEN, "watcher · viewer").await;
    wait_card_text(&browser, card, ".previous", "Stable before: v1").await;
    wait_card_text(&browser, card, ".stable-version", "v2").await;
    assert_eq!(undo_buttons(&browser).await, 0, "a viewer cannot undo");
    browser.click("#signout").await;

    // An operator undoes through the stages of the latest spec, with a reason: a
    // rollout of v1 that starts at the first stage's 50%.
    sign_in(&browser, OPERATOR_TOKEN, "ops · operator").await;
    wait_undo_buttons(&browser, 1).await;
    browser.screenshot("overview-undo-desktop").await;
    browser
        .click(&format!("{card} button[data-action=\"undo\"]"))
        .await;
    let words = browser.wait_text("#confirm-text", "back to v1", WAIT).await;
    assert!(words.contains("stable before v2"), "{words}");
    assert_eq!(
        browser
            .js("return document.getElementById('confirm-stages').checked;")
            .await,
        true,
        "through the stages unless asked otherwise"
    );
    browser.screenshot("undo-dialog-desktop").await;
    confirm_dialog(&browser, Some("checkout broke in v2")).await;
    let back = wait_other_rollout_page(&browser, &v2).await;
    wait_phase(&browser, "Progressing").await;
    wait_weight(&browser, "50%").await;
    let r = fx.rollout_json(&back).await;
    assert_eq!(r["version"], "v1", "{r}");
    let created = event(&r, "Created");
    assert_eq!(created["actor"], "ops", "{created}");
    assert!(
        created["message"]
            .as_str()
            .is_some_and(|m| m.contains("undo: back from v2 to v1: checkout broke in v2")),
        "{created}"
    );

    // No second undo while it runs; once it is aborted, there is one again.
    browser.goto(&fx.url("/")).await;
    wait_card_text(&browser, card, ".canary-version", "v1").await;
    assert_eq!(undo_buttons(&browser).await, 0, "a rollout is active");
    let aborted = operator
        .post(&format!("/rollouts/{back}/abort"), None)
        .await;
    assert_eq!(aborted.body["phase"], "Aborted", "{}", aborted.text);
    wait_undo_buttons(&browser, 1).await;
    assert_no_console_errors(&browser).await;

    // The server's refusal is shown as it words it: here a rollout started by
    // someone else while the dialog was open.
    browser
        .click(&format!("{card} button[data-action=\"undo\"]"))
        .await;
    browser.wait_text("#confirm-text", "back to v1", WAIT).await;
    let v3 = support::rollout::create(
        &operator,
        &spec(
            "shop",
            "v3",
            "  - traffic: 10\n  - traffic: 100\n    final: true\n",
        ),
    )
    .await;
    confirm_dialog(&browser, None).await;
    browser
        .wait_text(
            "#toast",
            "Undo refused: app `shop` already has an active rollout",
            WAIT,
        )
        .await;
    let logged = browser.console_errors().await;
    assert!(
        logged.iter().all(|e| e.contains("409")),
        "only the refused request is logged: {logged:#?}"
    );
    let aborted = operator.post(&format!("/rollouts/{v3}/abort"), None).await;
    assert_eq!(aborted.body["phase"], "Aborted", "{}", aborted.text);
    wait_undo_buttons(&browser, 1).await;

    // Now, all at once: the rollout succeeds in its first step and the proxy
    // serves v1 again.
    browser
        .click(&format!("{card} button[data-action=\"undo\"]"))
        .await;
    browser.wait_text("#confirm-text", "back to v1", WAIT).await;
    act(&browser, "#confirm-now", None).await;
    let now = wait_other_rollout_page(&browser, &back).await;
    wait_phase(&browser, "Succeeded").await;
    wait_weight(&browser, "100%").await;
    let r = fx.rollout_json(&now).await;
    assert_eq!(
        (r["version"].as_str(), r["phase"].as_str()),
        (Some("v1"), Some("Succeeded")),
        "{r}"
    );
    for _ in 0..20 {
        assert_eq!(proxy.get("/").await.text, "stable", "v1 serves again");
    }
    let app = &fx.http.get("/apps/shop").await.body;
    assert_eq!(
        (&app["stable"]["version"], &app["previousStable"]["version"]),
        (&"v1".into(), &"v2".into()),
        "{app}"
    );
    fx.finish(browser).await;
}

#[tokio::test]
#[ignore = "needs chromium: run scripts/test"]
async fn the_page_survives_a_server_restart() {
    let _serial = SERIAL.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let stable = backend("stable", None).await;
    let canary = backend("canary", None).await;
    let port = free_addr().port();
    let mut cfg = config(dir.path(), "shop", &stable, &canary);
    cfg.listen = format!("127.0.0.1:{port}").parse().unwrap();
    let server = start(cfg.clone(), StartOptions::default()).await.unwrap();
    let http = Http::new(server.api_addr());
    let created = http
        .post_yaml(
            "/rollouts",
            &spec(
                "shop",
                "v2",
                "  - traffic: 25\n  - traffic: 50\n  - traffic: 100\n    final: true\n",
            ),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.text);
    let browser = Browser::start(DESKTOP.0, DESKTOP.1).await;
    browser.goto(&format!("http://127.0.0.1:{port}/")).await;
    let weight = ".app-card[data-app=\"shop\"] .weight-value";
    browser.wait_text(weight, "25%", WAIT).await;
    browser.js("window.__sameDocument = 7; return null;").await;

    // The server goes away: the page says so and keeps trying.
    shutdown(server).await;
    browser.wait_text("#conn", "retrying", WAIT).await;

    // It comes back on the same address with the same store; a promotion made
    // meanwhile through the API shows up without a reload.
    let server = start(cfg, StartOptions::default()).await.unwrap();
    let promoted = Http::new(server.api_addr())
        .post("/rollouts/shop/promote", None)
        .await;
    assert_eq!(promoted.status, StatusCode::OK, "{}", promoted.text);
    browser.wait_text(weight, "50%", WAIT).await;
    browser
        .wait_js(
            WAIT,
            "the live stream to be back",
            "return document.getElementById('conn').hidden;",
            Value::Bool(true),
        )
        .await;
    assert_eq!(browser.js("return window.__sameDocument;").await, 7);
    // Failed loads while the server was down are expected in the browser's log;
    // the page itself must not have thrown.
    let thrown = browser.js("return window.__fledgeErrors;").await;
    assert_eq!(thrown, serde_json::json!([]), "{thrown}");
    browser.close().await;
    shutdown(server).await;
}

#[tokio::test]
#[ignore = "needs chromium: run scripts/test"]
async fn the_charts_keep_their_earlier_points_after_a_restart() {
    let _serial = SERIAL.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let stable = backend("stable", None).await;
    let canary = backend("canary", None).await;
    let cfg = config(dir.path(), "shop", &stable, &canary);
    let server = start(cfg.clone(), StartOptions::default()).await.unwrap();
    let http = Http::new(server.api_addr());
    let load = Load::start(server.proxy_addr("shop").await.unwrap(), 2);
    let stages = "  - traffic: 25\n  - traffic: 100\n    final: true\n";
    let id = support::rollout::create(&http, &spec("shop", "v2", stages)).await;
    chart_points(&http, &id, 4).await;
    // Aborted, the rollout gets no more points: whatever the page draws after the
    // restart was recorded before it.
    let aborted = http.post(&format!("/rollouts/{id}/abort"), None).await;
    assert_eq!(aborted.status, StatusCode::OK, "{}", aborted.text);
    load.stop().await;
    shutdown(server).await;

    // A new server on the same store; nobody watched the rollout page before.
    let server = start(cfg, StartOptions::default()).await.unwrap();
    let recorded = chart_points(&Http::new(server.api_addr()), &id, 4)
        .await
        .len();
    let browser = Browser::start(DESKTOP.0, 2300).await;
    browser
        .goto(&format!("http://{}/#/rollouts/{id}", server.api_addr()))
        .await;
    wait_phase(&browser, "Aborted").await;
    // The canary-share line draws every point recorded before the restart (the
    // weight is never missing), and the error-rate chart has the canary's line.
    let script = "const d = (css) => { const p = document.querySelector(css); \
                  return p ? (p.getAttribute('d').match(/[ML]/g) || []).length : 0; }; \
                  return [d('.chart path.series.weight-line'), d('.chart path.series.canary')];";
    let drawn = browser
        .wait_until(WAIT, "the earlier points on the charts", || async {
            let v = browser.js(script).await;
            if v[0].as_u64() == Some(recorded as u64) && v[1].as_u64() > Some(0) {
                Ok(v)
            } else {
                Err(format!("{v} drawn of {recorded} points"))
            }
        })
        .await;
    assert!(recorded >= 4, "{drawn:?}");
    browser.screenshot("rollout-after-restart").await;
    let thrown = browser.js("return window.__fledgeErrors;").await;
    assert_eq!(thrown, serde_json::json!([]), "{thrown}");
    browser.close().await;
    shutdown(server).await;
}

/// A lock-step group document: `shop` v2 through a 1 s first stage, `search` v7.5.0
/// through a 5 m one, each then 100% by hand.
const LOCK_STEP_GROUP: &str = "\
name: checkout
order: together
rollouts:
  - app: shop
    version: v2
    analysis:
      interval: 200ms
    stages:
      - traffic: 20
        duration: 1s
      - traffic: 100
        final: true
        promote: true
  - app: search
    version: v7.5.0
    analysis:
      interval: 200ms
    stages:
      - traffic: 30
        duration: 5m
      - traffic: 100
        final: true
        promote: true
";

/// The card of member `app` on the group page.
fn member_card(app: &str) -> String {
    format!(".members .member[data-app=\"{app}\"]")
}

/// The left and top edges of the first element matching `css`, in CSS pixels.
async fn position(browser: &Browser, css: &str) -> (f64, f64) {
    let script = format!(
        "const r = document.querySelector({}).getBoundingClientRect(); return [r.left, r.top];",
        serde_json::json!(css)
    );
    let xy = browser.js(&script).await;
    (xy[0].as_f64().unwrap(), xy[1].as_f64().unwrap())
}

#[tokio::test]
#[ignore = "needs chromium: run scripts/test"]
async fn a_lock_step_group_page_shows_its_members_side_by_side_and_acts_on_them() {
    let fx = Fixture::with_roles().await;
    let created = fx.http.post_yaml("/groups", LOCK_STEP_GROUP).await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.text);
    let id = created.body["id"].as_str().unwrap().to_owned();
    let group_path = format!("/groups/{id}");
    let member_rollout = |g: &Value, app: &str| {
        member_of(g, app)["rollout"]["id"]
            .as_str()
            .unwrap_or_else(|| panic!("no rollout of {app} in {g}"))
            .to_owned()
    };
    let shop_rollout = member_rollout(&created.body, "shop");
    let browser = Browser::start(DESKTOP.0, DESKTOP.1).await;
    let (shop, search) = (member_card("shop"), member_card("search"));

    // A viewer sees both members side by side, each at its first stage, and no button.
    browser.goto(&fx.url(&format!("/#/groups/{id}"))).await;
    sign_in(&browser, VIEWER_TOKEN, "watcher · viewer").await;
    wait_page_phase(&browser, "group", "Progressing").await;
    browser.wait_text(".group-order", "Lock step", WAIT).await;
    wait_card_text(&browser, &search, ".stage-line", "Stage 1 of 2").await;
    wait_card_text(&browser, &search, ".weight-value", "30%").await;
    wait_card_text(&browser, &shop, ".weight-value", "20%").await;
    let (shop_xy, search_xy) = (
        position(&browser, &shop).await,
        position(&browser, &search).await,
    );
    assert!(
        shop_xy.1 == search_xy.1 && shop_xy.0 < search_xy.0,
        "side by side: shop at {shop_xy:?}, search at {search_xy:?}"
    );
    // shop passes its 1 s stage and waits for search, whose stage lasts 5 m: the page
    // reads the group again while it moves.
    browser
        .wait_text(
            &format!("{shop} .waiting-badge"),
            "Waiting for the group",
            WAIT,
        )
        .await;
    let line = wait_card_text(&browser, &shop, ".stage-line", "Stage 1 of 2").await;
    assert!(line.contains("waiting for the other members"), "{line}");
    assert_eq!(browser.count(&format!("{search} .waiting-badge")).await, 0);
    let (left, line) = wait_seconds_left(&browser, &format!("{search} .stage-line")).await;
    assert!(line.ends_with("left of 5m") && left > 200, "{line}");
    browser
        .wait_text(".group .actions", "cannot change it", WAIT)
        .await;
    assert_eq!(browser.count(".group .actions button").await, 0);
    browser.screenshot("group-viewer-desktop").await;

    // A member's rollout page links back to its group.
    browser
        .click(&format!("{shop} a[href=\"#/rollouts/{shop_rollout}\"]"))
        .await;
    wait_phase(&browser, "Progressing").await;
    browser
        .wait_text(".member-of", "Member of group checkout", WAIT)
        .await;
    browser.click(".member-of a").await;
    wait_page_phase(&browser, "group", "Progressing").await;
    browser.click("#signout").await;

    // An operator gets the group's actions (no full promote: lock step), and pauses it.
    sign_in(&browser, OPERATOR_TOKEN, "ops · operator").await;
    let operator = fx.http.with_token(OPERATOR_TOKEN);
    assert_eq!(
        wait_buttons_for(&browser, &operator, &group_path, false).await,
        ["abort", "pause", "promote"]
    );
    act(&browser, "#act-pause", None).await;
    wait_page_phase(&browser, "group", "Paused").await;
    wait_card_text(&browser, &search, ".badge", "Paused").await;
    assert_eq!(
        wait_buttons_for(&browser, &operator, &group_path, false).await,
        ["abort", "promote", "resume"]
    );
    assert_eq!(get_as(&fx.http, &group_path).await["phase"], "Paused");

    // Resumed from elsewhere while the dialog is open: the server's refusal is shown
    // as it words it, and the page catches up.
    browser.click("#act-resume").await;
    browser
        .wait_text("#confirm-title", "Resume the group?", WAIT)
        .await;
    let resumed = operator.post(&format!("{group_path}/resume"), None).await;
    assert_eq!(resumed.status, StatusCode::OK, "{}", resumed.text);
    confirm_dialog(&browser, None).await;
    browser
        .wait_text("#toast", "Resume refused: cannot resume group", WAIT)
        .await;
    wait_page_phase(&browser, "group", "Progressing").await;
    let logged = browser.console_errors().await;
    assert!(
        logged.iter().all(|e| e.contains("409")),
        "only the refused request is logged: {logged:#?}"
    );

    // Abort with a reason: the group ends Aborted, its message says why, and the page
    // stops reading it.
    act(&browser, "#act-abort", Some("bad migration in search")).await;
    wait_page_phase(&browser, "group", "Aborted").await;
    browser
        .wait_text(".group-message", "bad migration in search", WAIT)
        .await;
    wait_card_text(&browser, &shop, ".badge", "Aborted").await;
    browser.wait_text(".events", "Abort asked", WAIT).await;
    browser
        .wait_text(".group .actions", "the group is over", WAIT)
        .await;
    let g = get_as(&fx.http, &group_path).await;
    assert_eq!(g["phase"], "Aborted", "{g}");
    assert!(
        g["message"]
            .as_str()
            .is_some_and(|m| m.contains("bad migration in search")),
        "{g}"
    );
    browser
        .wait_js(
            WAIT,
            "the page to stop reading the group",
            "return state.groupTimer === null;",
            Value::Bool(true),
        )
        .await;
    browser.screenshot("group-aborted-desktop").await;
    browser.resize(PHONE.0, 1600).await;
    browser
        .wait_until(WAIT, "the members one above the other", || async {
            let (a, b) = (
                position(&browser, &shop).await,
                position(&browser, &search).await,
            );
            if a.0 == b.0 && a.1 < b.1 {
                Ok(())
            } else {
                Err(format!("{a:?} {b:?}"))
            }
        })
        .await;
    browser.screenshot("group-aborted-phone").await;
    browser.resize(DESKTOP.0, DESKTOP.1).await;

    // The list of groups, from the navigation.
    browser.click("a[data-nav=\"groups\"]").await;
    let row = browser
        .wait_text(&format!("tr[data-group=\"{id}\"]"), "Aborted", WAIT)
        .await;
    assert!(
        row.contains("checkout") && row.contains("shop v2") && row.contains("search v7.5.0"),
        "{row}"
    );
    fx.finish(browser).await;
}

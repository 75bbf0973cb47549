//! The web UI's HTTP side without a browser: assets and their security headers,
//! sign-in with a session cookie, CSRF protection of cookie-authenticated writes,
//! and the chart history endpoint.

mod support;

use axum::body::Body;
use http_body_util::BodyExt;
use hyper::{Request, StatusCode};
use serde_json::Value;
use support::rollout::{chart_points, has_event_by};
use support::{Load, Shop, config, spec};
use tower::ServiceExt;

struct Answer {
    status: StatusCode,
    headers: hyper::HeaderMap,
    body: Value,
    text: String,
}

async fn call(
    router: &axum::Router,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Answer {
    let mut req = Request::builder().method(method).uri(path);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = router
        .clone()
        .oneshot(req.body(Body::from(body.to_owned())).unwrap())
        .await
        .unwrap();
    let status = resp.status();
    let headers = resp.headers().clone();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    let text = String::from_utf8_lossy(&bytes).into_owned();
    let body = serde_json::from_str(&text).unwrap_or(Value::Null);
    Answer {
        status,
        headers,
        body,
        text,
    }
}

/// `POST /login` with this token.
async fn login(router: &axum::Router, token: &str) -> Answer {
    let body = serde_json::json!({ "token": token }).to_string();
    let json = [("content-type", "application/json")];
    call(router, "POST", "/login", &json, &body).await
}

/// A bodiless `POST path` from the session `cookie` with this CSRF token.
async fn post_with_csrf(router: &axum::Router, path: &str, cookie: &str, csrf: &str) -> Answer {
    let headers = [("cookie", cookie), ("x-csrf-token", csrf)];
    call(router, "POST", path, &headers, "").await
}

/// The `name=value` of the cookie a sign-in set, to send back.
fn session_cookie(login: &Answer) -> String {
    let set = login.headers["set-cookie"].to_str().unwrap();
    set.split(';').next().unwrap().to_owned()
}

const STAGES: &str = "  - traffic: 20\n  - traffic: 100\n    final: true\n";

#[tokio::test]
async fn open_mode_serves_the_ui_with_strict_headers() {
    let shop = Shop::start(None).await;
    let router = shop.router();

    for (path, ct) in [
        ("/", "text/html"),
        ("/ui/app.js", "text/javascript"),
        ("/ui/app.css", "text/css"),
        ("/ui/icon.svg", "image/svg+xml"),
    ] {
        let a = call(&router, "GET", path, &[], "").await;
        assert_eq!(a.status, StatusCode::OK, "{path}");
        assert!(
            a.headers["content-type"].to_str().unwrap().starts_with(ct),
            "{path}"
        );
        let csp = a.headers["content-security-policy"].to_str().unwrap();
        assert!(
            csp.contains("script-src 'self'") && csp.contains("frame-ancestors 'none'"),
            "{csp}"
        );
        assert!(!csp.contains("unsafe"), "{csp}");
        assert_eq!(a.headers["x-frame-options"], "DENY");
        assert_eq!(a.headers["x-content-type-options"], "nosniff");
    }
    // No inline script in the page: every script comes from /ui/.
    let page = call(&router, "GET", "/", &[], "").await.text;
    assert!(page.contains("<script src=\"/ui/app.js\""), "{page}");
    assert_eq!(page.matches("<script").count(), 1, "{page}");

    // Without tokens everyone may operate and no sign-in is needed.
    let s = call(&router, "GET", "/session", &[], "").await;
    assert_eq!(s.body["authRequired"], false);
    assert_eq!(s.body["canOperate"], true);
    assert_eq!(s.body["name"], "anonymous");

    // A write a browser marks as cross-site is refused even in open mode; the same
    // origin and clients that send no Origin (the CLI) pass.
    let created = call(
        &router,
        "POST",
        "/rollouts",
        &[("content-type", "application/yaml")],
        &spec("shop", "v2", STAGES),
    )
    .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.text);
    let id = created.body["id"].as_str().unwrap().to_owned();
    let pause = format!("/rollouts/{id}/pause");
    let cross = call(
        &router,
        "POST",
        &pause,
        &[
            ("host", "127.0.0.1:8080"),
            ("origin", "https://evil.example"),
        ],
        "",
    )
    .await;
    assert_eq!(
        (cross.status, cross.body["error"]["code"].as_str()),
        (StatusCode::FORBIDDEN, Some("csrf"))
    );
    let fetch_site = call(
        &router,
        "POST",
        &pause,
        &[("sec-fetch-site", "cross-site")],
        "",
    )
    .await;
    assert_eq!(fetch_site.status, StatusCode::FORBIDDEN);
    let same = call(
        &router,
        "POST",
        &pause,
        &[
            ("host", "127.0.0.1:8080"),
            ("origin", "http://127.0.0.1:8080"),
        ],
        "",
    )
    .await;
    assert_eq!(same.status, StatusCode::OK, "{}", same.text);

    // The chart history answers (points arrive every two seconds once recording).
    let series = call(&router, "GET", "/ui/api/series?rollout=shop", &[], "").await;
    assert_eq!(series.status, StatusCode::OK, "{}", series.text);
    assert!(series.body["points"].is_array());
    shop.server.shutdown().await;
}

#[tokio::test]
async fn sessions_replace_tokens_in_the_browser_and_need_csrf_to_write() {
    let opts = fledge_server::StartOptions {
        env_tokens: Some("ops:operator:op-token-1,watch:viewer:view-token-1".into()),
        ..Default::default()
    };
    let shop = Shop::start_with(None, |_| {}, opts).await;
    let router = shop.router();
    let bearer = [
        ("authorization", "Bearer op-token-1"),
        ("content-type", "application/yaml"),
    ];
    let created = call(
        &router,
        "POST",
        "/rollouts",
        &bearer,
        &spec("shop", "v2", STAGES),
    )
    .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.text);
    let id = created.body["id"].as_str().unwrap().to_owned();

    // Not signed in: the page loads, the session says so, the data is refused.
    assert_eq!(
        call(&router, "GET", "/", &[], "").await.status,
        StatusCode::OK
    );
    let s = call(&router, "GET", "/session", &[], "").await;
    assert_eq!(
        (
            s.body["authRequired"].as_bool(),
            s.body["signedIn"].as_bool()
        ),
        (Some(true), Some(false))
    );
    assert_eq!(
        call(&router, "GET", "/status", &[], "").await.status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        call(&router, "GET", "/ui/api/series?rollout=shop", &[], "")
            .await
            .status,
        StatusCode::UNAUTHORIZED
    );

    // A wrong token: 401, no cookie. A malformed body: 400.
    let json = [("content-type", "application/json")];
    let bad = login(&router, "nope").await;
    assert_eq!(bad.status, StatusCode::UNAUTHORIZED);
    assert!(bad.headers.get("set-cookie").is_none());
    assert_eq!(
        call(&router, "POST", "/login", &json, "token=x")
            .await
            .status,
        StatusCode::BAD_REQUEST
    );

    // The right token: an HttpOnly, SameSite=Strict cookie that is not the token.
    let ok = login(&router, "op-token-1").await;
    assert_eq!(ok.status, StatusCode::OK, "{}", ok.text);
    let set = ok.headers["set-cookie"].to_str().unwrap().to_owned();
    assert!(
        set.contains("HttpOnly") && set.contains("SameSite=Strict") && set.contains("Max-Age="),
        "{set}"
    );
    assert!(!set.contains("op-token-1"), "{set}");
    let cookie = session_cookie(&ok);
    let csrf = ok.body["csrfToken"].as_str().unwrap().to_owned();
    assert_eq!(
        (ok.body["name"].as_str(), ok.body["role"].as_str()),
        (Some("ops"), Some("operator"))
    );

    // Reads work by cookie alone; /session gives the CSRF token back.
    assert_eq!(
        call(&router, "GET", "/status", &[("cookie", &cookie)], "")
            .await
            .status,
        StatusCode::OK
    );
    let s = call(&router, "GET", "/session", &[("cookie", &cookie)], "").await;
    assert_eq!(s.body["csrfToken"].as_str(), Some(csrf.as_str()));

    // Writes by cookie need the CSRF token; the actor is the token's name.
    let pause = format!("/rollouts/{id}/pause");
    let no_csrf = call(&router, "POST", &pause, &[("cookie", &cookie)], "").await;
    assert_eq!(
        (no_csrf.status, no_csrf.body["error"]["code"].as_str()),
        (StatusCode::FORBIDDEN, Some("csrf"))
    );
    let wrong = post_with_csrf(&router, &pause, &cookie, "abc").await;
    assert_eq!(wrong.status, StatusCode::FORBIDDEN);
    let paused = post_with_csrf(&router, &pause, &cookie, &csrf).await;
    assert_eq!(paused.status, StatusCode::OK, "{}", paused.text);
    assert!(
        has_event_by(&paused.body, "Paused", "ops"),
        "{}",
        paused.text
    );

    // A bearer token needs no CSRF token; a bearer token wins over a cookie.
    let resume = call(
        &router,
        "POST",
        &format!("/rollouts/{id}/resume"),
        &[("authorization", "Bearer op-token-1")],
        "",
    )
    .await;
    assert_eq!(resume.status, StatusCode::OK, "{}", resume.text);

    // A viewer's session reads but cannot act, CSRF token or not.
    let v = login(&router, "view-token-1").await;
    let v_cookie = session_cookie(&v);
    let v_csrf = v.body["csrfToken"].as_str().unwrap().to_owned();
    assert_eq!(v.body["canOperate"], false);
    let refused = post_with_csrf(&router, &pause, &v_cookie, &v_csrf).await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN, "{}", refused.text);

    // Sign-out ends the session server-side and clears the cookie.
    let out = call(&router, "POST", "/logout", &[("cookie", &cookie)], "").await;
    assert_eq!(out.status, StatusCode::NO_CONTENT);
    assert!(
        out.headers["set-cookie"]
            .to_str()
            .unwrap()
            .contains("Max-Age=0")
    );
    assert_eq!(
        call(&router, "GET", "/status", &[("cookie", &cookie)], "")
            .await
            .status,
        StatusCode::UNAUTHORIZED
    );
    shop.server.shutdown().await;
}

#[tokio::test]
async fn chart_points_outlive_a_restart_and_are_asked_for_by_rollout() {
    let Shop {
        server,
        api,
        stable,
        canary,
        dir,
    } = Shop::start(None).await;
    let proxy = server.proxy_addr("shop").await.expect("shop has a proxy");
    let load = Load::start(proxy, 2);
    let stages = "  - traffic: 25\n  - traffic: 100\n    final: true\n";
    let id = support::rollout::create(&api, &spec("shop", "v2", stages)).await;
    let before = chart_points(&api, &id, 3).await;
    load.stop().await;
    assert!(before.iter().all(|p| p["rolloutId"] == id.as_str()));
    assert!(before.iter().all(|p| p["canaryWeight"] == 25), "{before:?}");
    server.shutdown().await;

    // The same store, a new server: every earlier point is still there, in order.
    let server = fledge_server::start(
        config(dir.path(), "shop", &stable, &canary),
        Default::default(),
    )
    .await
    .expect("the server starts again");
    let router = fledge_server::api::router(server.shared().clone());
    let after = call(
        &router,
        "GET",
        &format!("/ui/api/series?rollout={id}"),
        &[],
        "",
    )
    .await;
    assert_eq!(after.status, StatusCode::OK, "{}", after.text);
    assert_eq!(after.body["rolloutId"], id.as_str());
    let points = after.body["points"].as_array().unwrap();
    assert_eq!(&points[..before.len()], &before[..], "{}", after.text);
    // By app name (its active rollout), and only the newer points with `since`.
    let by_app = call(&router, "GET", "/ui/api/series?rollout=shop", &[], "").await;
    assert_eq!(by_app.body["rolloutId"], id.as_str(), "{}", by_app.text);
    let last_t = before.last().unwrap()["t"].as_i64().unwrap();
    let since = call(
        &router,
        "GET",
        &format!("/ui/api/series?rollout={id}&since={last_t}"),
        &[],
        "",
    )
    .await;
    assert_eq!(since.body["points"][0], before[before.len() - 1]);

    // Asking wrongly says what was wrong.
    for (path, status, code) in [
        ("/ui/api/series", 400, "invalid_query"),
        ("/ui/api/series?since=0", 400, "invalid_query"),
        ("/ui/api/series?rollout=ro-nothing", 404, "not_found"),
        ("/ui/api/series?rollout=nope", 404, "not_found"),
        ("/ui/api/series?rollout=x&color=red", 400, "invalid_query"),
    ] {
        let a = call(&router, "GET", path, &[], "").await;
        assert_eq!(a.status.as_u16(), status, "{path}: {}", a.text);
        assert_eq!(a.body["error"]["code"], code, "{path}: {}", a.text);
    }
    server.shutdown().await;
}

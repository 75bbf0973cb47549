//! The web UI: one page of plain HTML, CSS and JavaScript (no build step, nothing
//! fetched from elsewhere), compiled into the binary, plus the endpoints it needs
//! beyond the API: sign-in and sign-out with a cookie session, the session's
//! details (role, CSRF token), and the recorded health history of a rollout for
//! its charts.
//!
//! The page itself reads the API (`GET /status`, `/rollouts`, the `GET /events`
//! stream) and posts operator actions to it like any other client; see
//! [`session`] for how a browser authenticates and why it needs a CSRF token.
//!
//! Every UI response carries a strict Content-Security-Policy (scripts and styles
//! from this server only, no inline script, no framing).

pub mod series;

use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use fledge_api::ui::{LoginRequest, Series, SeriesQuery, Session};

use super::Shared;
use super::auth::{self, Principal};
use super::error::ApiError;
use super::rollouts;
use super::session;
use crate::config::Role;

const INDEX_HTML: &str = include_str!("assets/index.html");
const APP_JS: &str = include_str!("assets/app.js");
const APP_CSS: &str = include_str!("assets/app.css");
const ICON_SVG: &str = include_str!("assets/icon.svg");

/// The policy on every UI response: everything from this server only, no inline
/// script or style elements, no plugins, no framing, forms post only here.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self'; img-src 'self'; connect-src 'self'; font-src 'self'; \
     form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// The UI's routes: `/`, `/ui/*` assets, `/session`, `/login`, `/logout` and
/// `/ui/api/series` (whose points [`series::run_recorder`] records).
pub fn router(shared: &Arc<Shared>) -> Router<Arc<Shared>> {
    let protected = Router::new()
        .route("/ui/api/series", get(series_points))
        .route_layer(middleware::from_fn_with_state(
            shared.auth.clone(),
            auth::authenticate,
        ));
    Router::new()
        .route("/", get(index))
        .route("/ui/app.js", get(app_js))
        .route("/ui/app.css", get(app_css))
        .route("/ui/icon.svg", get(icon))
        .route("/session", get(session_info))
        .route("/login", post(login))
        .route("/logout", post(logout))
        .merge(protected)
        .layer(middleware::from_fn(security_headers))
}

/// Adds the UI's security headers to every response of its routes.
async fn security_headers(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    if !h.contains_key(header::CACHE_CONTROL) {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    }
    response
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    ([(header::CONTENT_TYPE, content_type)], body).into_response()
}

async fn index() -> Response {
    asset("text/html; charset=utf-8", INDEX_HTML)
}

async fn app_js() -> Response {
    asset("text/javascript; charset=utf-8", APP_JS)
}

async fn app_css() -> Response {
    asset("text/css; charset=utf-8", APP_CSS)
}

async fn icon() -> Response {
    asset("image/svg+xml", ICON_SVG)
}

// === session endpoints ===

/// What the page needs to know about its viewer.
fn session_json(auth_required: bool, principal: Option<&Principal>, csrf: Option<&str>) -> Session {
    Session {
        auth_required,
        signed_in: principal.is_some(),
        name: principal.map(|p| p.name.clone()),
        role: principal.map(|p| p.role),
        can_operate: principal.is_some_and(|p| p.role >= Role::Operator),
        csrf_token: csrf.map(str::to_owned),
    }
}

/// `GET /session`: who this browser is signed in as, its role and CSRF token; when
/// no token is configured, everyone is `anonymous` with every role.
async fn session_info(State(shared): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    let auth = &shared.auth;
    let body = if !auth.enabled() {
        match auth.authenticate(&headers) {
            Ok(p) => session_json(false, Some(&p), None),
            Err(e) => return e.into_response(),
        }
    } else {
        match session::cookie(&headers, session::COOKIE).and_then(|id| auth.sessions().get(id)) {
            Some(s) => session_json(true, Some(&s.principal), Some(&s.csrf)),
            None => session_json(true, None, None),
        }
    };
    ([(header::CACHE_CONTROL, "no-store")], Json(body)).into_response()
}

/// `POST /login` with `{"token": "..."}`: trades a valid token for a session cookie.
async fn login(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    bytes: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    session::check_same_origin(&axum::http::Method::POST, &headers)?;
    let bytes = bytes.map_err(|e| ApiError::bad_request("invalid_body", e.body_text()))?;
    let body: LoginRequest = super::body::from_json_object(&bytes).map_err(|e| {
        ApiError::bad_request(
            "invalid_body",
            format!("expected a JSON object like {{\"token\": \"...\"}}: {e}"),
        )
    })?;
    let auth = &shared.auth;
    if !auth.enabled() {
        let anonymous = auth.authenticate(&headers)?;
        return Ok(Json(session_json(false, Some(&anonymous), None)).into_response());
    }
    let Some(principal) = auth.principal_for_token(body.token.trim()) else {
        tracing::info!("web UI sign-in refused: unknown token");
        return Err(ApiError::unauthorized("that token is not valid"));
    };
    let (id, csrf) = auth.sessions().create(principal.clone());
    tracing::info!(actor = %principal.name, role = %principal.role, "web UI sign-in");
    let mut response = Json(session_json(true, Some(&principal), Some(&csrf))).into_response();
    let h = response.headers_mut();
    h.insert(
        header::SET_COOKIE,
        HeaderValue::from_str(&session::set_cookie(
            &id,
            shared.config.tls.is_some() || session::via_https(&headers),
        ))
        .map_err(|_| ApiError::internal("cannot build the session cookie"))?,
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

/// `POST /logout`: ends this browser's session and deletes its cookie.
async fn logout(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    session::check_same_origin(&axum::http::Method::POST, &headers)?;
    if let Some(id) = session::cookie(&headers, session::COOKIE) {
        shared.auth.sessions().remove(id);
    }
    let mut response = StatusCode::NO_CONTENT.into_response();
    response.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_str(&session::clear_cookie())
            .map_err(|_| ApiError::internal("cannot build the session cookie"))?,
    );
    Ok(response)
}

// === chart history ===

/// `GET /ui/api/series?rollout=ID&since=MS` (`rollout` may name an app: its active
/// or latest rollout): the rollout's recorded health points (see [`series`]), oldest
/// first.
async fn series_points(
    State(shared): State<Arc<Shared>>,
    principal: Principal,
    query: Result<Query<SeriesQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Series>, ApiError> {
    principal.require(Role::Viewer)?;
    let Query(q) = query?;
    let rollout = rollouts::resolve(&shared, &q.rollout).await?;
    let since = fledge_store::Timestamp(q.since.unwrap_or(0));
    let samples = shared
        .store
        .samples(&rollout.id, since)
        .await
        .map_err(rollouts::store_error)?;
    Ok(Json(Series {
        points: samples.iter().map(series::point).collect(),
        app: rollout.app,
        rollout_id: rollout.id,
    }))
}

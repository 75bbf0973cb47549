//! The HTTP API (DESIGN.md, "HTTP API"): a `Router` built by [`router`], testable
//! with `oneshot` and no socket.
//!
//! Every error is `{"error": {"code", "message"}}` with the right status, unknown
//! routes included. Reads need the viewer role, rollout actions the operator role,
//! app changes the admin role; `/healthz`, `/readyz`, `/openapi.json` and `/` are
//! open.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, MatchedPath, Path, Query, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use fledge_api::app::App;
use fledge_api::client::ORIGIN_HEADER;
use fledge_api::group::{Group, GroupListQuery};
use fledge_api::openapi::SPEC_MEDIA_TYPES;
use fledge_api::rollout::{
    AbortRequest, ActionRequest, Event, EventsQuery, ListQuery, PromoteQuery, PromoteRequest,
    Rollout, UndoQuery,
};
use fledge_api::status::Health;
use fledge_stats::exposition::{Format, Page};
use fledge_store::RolloutFilter;
use serde_json::{Value, json};

use super::auth::{self, Principal};
use super::body::{body, from_json_object, json_object};
use super::engine::Command;
use super::error::ApiError;
use super::groups::{self, GroupCommand};
use super::{Shared, rollouts, sse, status, view};
use crate::config::{AppConfig, Role};

/// Builds the API, each request written to the access log.
pub fn router(shared: Arc<Shared>) -> Router {
    routes(shared).layer(middleware::from_fn(access_log))
}

/// The API as served on a socket: [`router`] behind the per-client rate limit
/// (see `server::ratelimit`), which needs each connection's address. Refused
/// requests are in the access log too.
pub fn served_router(shared: Arc<Shared>) -> Router {
    routes(shared.clone())
        .layer(middleware::from_fn_with_state(
            shared,
            super::ratelimit::limit,
        ))
        .layer(middleware::from_fn(access_log))
}

fn routes(shared: Arc<Shared>) -> Router {
    let limits = shared.config.limits.clone();
    let protected = Router::new()
        .route("/rollouts", get(list_rollouts).post(create_rollout))
        .route("/rollouts/{id}", get(get_rollout))
        .route("/rollouts/{id}/events", get(rollout_events))
        .route("/rollouts/{id}/promote", post(promote))
        .route("/rollouts/{id}/abort", post(abort))
        .route("/rollouts/{id}/pause", post(pause))
        .route("/rollouts/{id}/resume", post(resume))
        .route("/rollouts/{id}/retry", post(retry))
        .route("/promote", post(promote_named))
        .route("/abort", post(abort_named))
        .route("/apps/{app}/undo", post(undo))
        .route("/groups", get(list_groups).post(create_group))
        .route("/groups/{id}", get(get_group))
        .route("/groups/{id}/promote", post(promote_group))
        .route("/groups/{id}/abort", post(abort_group))
        .route("/groups/{id}/pause", post(pause_group))
        .route("/groups/{id}/resume", post(resume_group))
        .route("/status", get(status))
        .route("/apps", get(list_apps))
        .route("/apps/{app}", put(put_app).get(get_app))
        .route("/metrics", get(metrics))
        .layer(middleware::from_fn_with_state(
            limits.request_timeout,
            timeout,
        ))
        .route("/events", get(sse::stream))
        .route_layer(middleware::from_fn_with_state(
            shared.auth.clone(),
            auth::authenticate,
        ));
    let open = Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/openapi.json", get(openapi_json))
        .merge(super::ui::router(&shared));
    Router::new()
        .merge(protected)
        .merge(open)
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(limits.max_body_bytes))
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(on_panic))
        .with_state(shared)
}

// === middleware and fallbacks ===

/// One line per request (target `fledge_server::access`): method, matched route
/// (never the raw path or query), status, duration and the token's name as the
/// actor (`-` when unauthenticated). Runs after routing, outside every other layer,
/// so refusals (401, 413, 429) and panics (500) are counted as answered.
async fn access_log(request: Request, next: Next) -> Response {
    let started = std::time::Instant::now();
    let method = request.method().clone();
    let route = request.extensions().get::<MatchedPath>().cloned();
    let response = next.run(request).await;
    let actor = response.extensions().get::<Principal>();
    tracing::info!(
        target: "fledge_server::access",
        method = %method,
        route = route.as_ref().map_or("-", MatchedPath::as_str),
        status = response.status().as_u16(),
        duration_ms = started.elapsed().as_secs_f64() * 1000.0,
        actor = actor.map_or("-", |p| p.name.as_str()),
        "request",
    );
    response
}

async fn timeout(State(limit): State<Duration>, request: Request, next: Next) -> Response {
    match tokio::time::timeout(limit, next.run(request)).await {
        Ok(response) => response,
        Err(_) => ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            "timeout",
            format!("the request took longer than {limit:?}"),
        )
        .into_response(),
    }
}

/// A handler's panic is a 500 for the caller; the log says what panicked.
fn on_panic(payload: Box<dyn std::any::Any + Send + 'static>) -> Response {
    let what = match payload.downcast::<String>() {
        Ok(message) => *message,
        Err(payload) => payload
            .downcast_ref::<&str>()
            .map_or("a panic without a message", |m| m)
            .to_owned(),
    };
    ApiError::internal(format!("a request handler panicked: {what}")).into_response()
}

async fn not_found(request: Request) -> ApiError {
    ApiError::not_found(format!(
        "no route for {} {}; see /openapi.json",
        request.method(),
        request.uri().path()
    ))
}

async fn method_not_allowed(request: Request) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!(
            "{} is not allowed on {}; see /openapi.json",
            request.method(),
            request.uri().path()
        ),
    )
}

// === rollouts ===

async fn create_rollout(
    State(shared): State<Arc<Shared>>,
    principal: Principal,
    headers: HeaderMap,
    bytes: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let (text, origin) = document(&principal, &headers, bytes, "spec")?;
    let record = rollouts::create(&shared, &text, &origin, &principal).await?;
    Ok(created(with_history(&shared, &record, &principal).await?))
}

/// `201 Created` with `body` as JSON.
fn created<T: serde::Serialize>(body: T) -> Response {
    (StatusCode::CREATED, Json(body)).into_response()
}

/// A YAML or JSON document an operator sent as a body (a spec or a group), and the
/// name it goes by in error messages (the client's `Fledge-Origin`, e.g. its file
/// name).
fn document(
    principal: &Principal,
    headers: &HeaderMap,
    bytes: Result<Bytes, BytesRejection>,
    what: &str,
) -> Result<(String, String), ApiError> {
    principal.require(Role::Operator)?;
    let bytes = body(bytes)?;
    if let Some(ct) = headers.get(header::CONTENT_TYPE) {
        let ct = ct.to_str().unwrap_or("").to_ascii_lowercase();
        let essence = ct.split(';').next().unwrap_or("").trim();
        let accepted = essence.is_empty() || SPEC_MEDIA_TYPES.contains(&essence);
        if !accepted {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                format!(
                    "expected the {what} as application/yaml or application/json, found {essence}"
                ),
            ));
        }
    }
    let text = String::from_utf8(bytes.to_vec()).map_err(|e| {
        ApiError::bad_request("invalid_spec", format!("the {what} is not UTF-8: {e}"))
    })?;
    let origin = headers
        .get(ORIGIN_HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|o| !o.is_empty() && o.len() <= 256 && !o.chars().any(char::is_control))
        .unwrap_or("request body");
    Ok((text, origin.to_owned()))
}

async fn list_rollouts(
    State(shared): State<Arc<Shared>>,
    principal: Principal,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Vec<Rollout>>, ApiError> {
    principal.require(Role::Viewer)?;
    let Query(q) = query?;
    let records = shared
        .store
        .list_rollouts(&RolloutFilter {
            app: q.app,
            phase: q.phase.map(|p| p.as_str().to_owned()),
            limit: Some(q.limit.unwrap_or(100).min(1000)),
        })
        .await
        .map_err(rollouts::store_error)?;
    let now = shared.clock.now();
    let stables = view::Stables::read(&shared).await;
    Ok(Json(
        records
            .iter()
            .map(|r| view::rollout(r, None, principal.role, now, &stables))
            .collect(),
    ))
}

async fn get_rollout(
    State(shared): State<Arc<Shared>>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<Json<Rollout>, ApiError> {
    principal.require(Role::Viewer)?;
    let record = rollouts::resolve(&shared, &id).await?;
    let mut out = with_history(&shared, &record, &principal).await?;
    // The app's route follows its newest rollout (an aborted one included, until
    // the router applies the rollback): show whether the router keeps up with it.
    let latest = shared
        .store
        .latest_rollout_for_app(&record.app)
        .await
        .map_err(rollouts::store_error)?;
    if latest.is_some_and(|l| l.id == record.id)
        && let Some(app) = shared.apps.get(&record.app).await
    {
        out.router_sync = Some(app.route_sync());
    }
    Ok(Json(out))
}

async fn rollout_events(
    State(shared): State<Arc<Shared>>,
    principal: Principal,
    Path(id): Path<String>,
    query: Result<Query<EventsQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Vec<Event>>, ApiError> {
    principal.require(Role::Viewer)?;
    let Query(q) = query?;
    let record = rollouts::resolve(&shared, &id).await?;
    let events = shared
        .store
        .events(&record.id, q.after.unwrap_or(0))
        .await
        .map_err(rollouts::store_error)?;
    Ok(Json(events.iter().map(view::event).collect()))
}

/// The optional JSON body of an action: none (an empty body) or a JSON object.
fn action_body(bytes: Result<Bytes, BytesRejection>) -> Result<ActionRequest, ApiError> {
    let bytes = body(bytes)?;
    if bytes.is_empty() {
        return Ok(ActionRequest::default());
    }
    from_json_object(&bytes).map_err(|e| {
        ApiError::bad_request(
            "invalid_body",
            format!("expected an optional JSON object like {{\"reason\": \"...\"}}: {e}"),
        )
    })
}

async fn act(
    shared: &Shared,
    principal: &Principal,
    id: &str,
    command: Command,
) -> Result<Json<Rollout>, ApiError> {
    principal.require(Role::Operator)?;
    let record = rollouts::command(shared, id, command, principal).await?;
    Ok(Json(with_history(shared, &record, principal).await?))
}

/// A rollout with its whole history, as `principal` sees it now.
async fn with_history(
    shared: &Shared,
    record: &fledge_store::RolloutRecord,
    principal: &Principal,
) -> Result<Rollout, ApiError> {
    let events = shared
        .store
        .events(&record.id, 0)
        .await
        .map_err(rollouts::store_error)?;
    let now = shared.clock.now();
    let stables = view::Stables::of(shared, &record.app).await;
    Ok(view::rollout(
        record,
        Some(&events),
        principal.role,
        now,
        &stables,
    ))
}

async fn promote(
    State(shared): State<Arc<Shared>>,
    principal: Principal,
    Path(id): Path<String>,
    query: Result<Query<PromoteQuery>, axum::extract::rejection::QueryRejection>,
    bytes: Result<Bytes, BytesRejection>,
) -> Result<Json<Rollout>, ApiError> {
    let Query(q) = query?;
    action_body(bytes)?;
    let full = q.full.unwrap_or(false);
    act(&shared, &principal, &id, Command::Promote { full }).await
}

async fn abort(
    State(shared): State<Arc<Shared>>,
    principal: Principal,
    Path(id): Path<String>,
    bytes: Result<Bytes, BytesRejection>,
) -> Result<Json<Rollout>, ApiError> {
    let reason = action_body(bytes)?.reason;
    act(&shared, &principal, &id, Command::Abort { reason }).await
}

/// The body of `POST /promote` or `POST /abort`, which names the rollout.
fn named<T: serde::de::DeserializeOwned>(
    bytes: Result<Bytes, BytesRejection>,
    options: &str,
) -> Result<T, ApiError> {
    from_json_object(&body(bytes)?).map_err(|e| {
        ApiError::bad_request(
            "invalid_body",
            format!(
                "expected a JSON object naming the rollout, {{\"rollout\": \"ro-…\"}} or \
                 {{\"app\": \"…\"}}, optionally with {options}: {e}"
            ),
        )
    })
}

/// `POST /promote`: `POST /rollouts/{id}/promote` with the rollout in the body.
async fn promote_named(
    State(shared): State<Arc<Shared>>,
    principal: Principal,
    bytes: Result<Bytes, BytesRejection>,
) -> Result<Json<Rollout>, ApiError> {
    let (key, full) = match named(bytes, "\"full\": true")? {
        PromoteRequest::Rollout { rollout, full } => (rollout, full),
        PromoteRequest::App { app, full } => (app, full),
    };
    let full = full.unwrap_or(false);
    act(&shared, &principal, &key, Command::Promote { full }).await
}

/// `POST /abort`: `POST /rollouts/{id}/abort` with the rollout in the body.
async fn abort_named(
    State(shared): State<Arc<Shared>>,
    principal: Principal,
    bytes: Result<Bytes, BytesRejection>,
) -> Result<Json<Rollout>, ApiError> {
    let (key, reason) = match named(bytes, "a \"reason\"")? {
        AbortRequest::Rollout { rollout, reason } => (rollout, reason),
        AbortRequest::App { app, reason } => (app, reason),
    };
    act(&shared, &principal, &key, Command::Abort { reason }).await
}

/// `POST /apps/{app}/undo`: a rollout back to the app's previous stable version.
async fn undo(
    State(shared): State<Arc<Shared>>,
    principal: Principal,
    Path(app): Path<String>,
    query: Result<Query<UndoQuery>, axum::extract::rejection::QueryRejection>,
    bytes: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    principal.require(Role::Operator)?;
    let Query(q) = query?;
    let reason = action_body(bytes)?.reason;
    let now = q.now.unwrap_or(false);
    let record = rollouts::undo(&shared, &app, now, reason.as_deref(), &principal).await?;
    Ok(created(with_history(&shared, &record, &principal).await?))
}

/// Defines the handler of an action that takes no options besides a reason (an
/// empty body, `{}` or `{"reason": …}`): `$act` on the path's id, answering `$out`.
macro_rules! plain_action {
    ($name:ident -> $out:ty, |$shared:ident, $principal:ident, $id:ident, $reason:ident| $act:expr) => {
        async fn $name(
            State($shared): State<Arc<Shared>>,
            $principal: Principal,
            Path($id): Path<String>,
            bytes: Result<Bytes, BytesRejection>,
        ) -> Result<Json<$out>, ApiError> {
            let $reason = action_body(bytes)?.reason;
            $act.await
        }
    };
}

plain_action!(pause -> Rollout, |shared, principal, id, _reason| act(&shared, &principal, &id, Command::Pause));
plain_action!(resume -> Rollout, |shared, principal, id, _reason| act(&shared, &principal, &id, Command::Resume));
plain_action!(retry -> Rollout, |shared, principal, id, _reason| act(&shared, &principal, &id, Command::Retry));

// === groups ===

async fn create_group(
    State(shared): State<Arc<Shared>>,
    principal: Principal,
    headers: HeaderMap,
    bytes: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let (text, origin) = document(&principal, &headers, bytes, "group document")?;
    let record = groups::create(&shared, &text, &origin, &principal).await?;
    Ok(created(group_view(&shared, &record, &principal).await?))
}

async fn list_groups(
    State(shared): State<Arc<Shared>>,
    principal: Principal,
    query: Result<Query<GroupListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Vec<Group>>, ApiError> {
    principal.require(Role::Viewer)?;
    let Query(q) = query?;
    let records = shared
        .store
        .list_groups(
            q.active.unwrap_or(false),
            Some(q.limit.unwrap_or(100).min(1000)),
        )
        .await
        .map_err(rollouts::store_error)?;
    let mut out = Vec::with_capacity(records.len());
    for record in &records {
        out.push(group_view(&shared, record, &principal).await?);
    }
    Ok(Json(out))
}

async fn get_group(
    State(shared): State<Arc<Shared>>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<Json<Group>, ApiError> {
    principal.require(Role::Viewer)?;
    let record = groups::get(&shared, &id).await?;
    Ok(Json(group_view(&shared, &record, &principal).await?))
}

async fn promote_group(
    State(shared): State<Arc<Shared>>,
    principal: Principal,
    Path(id): Path<String>,
    query: Result<Query<PromoteQuery>, axum::extract::rejection::QueryRejection>,
    bytes: Result<Bytes, BytesRejection>,
) -> Result<Json<Group>, ApiError> {
    let Query(q) = query?;
    let reason = action_body(bytes)?.reason;
    let full = q.full.unwrap_or(false);
    act_on_group(
        &shared,
        &principal,
        &id,
        GroupCommand::Promote { full },
        reason,
    )
    .await
}

plain_action!(abort_group -> Group, |shared, principal, id, reason| act_on_group(&shared, &principal, &id, GroupCommand::Abort, reason));
plain_action!(pause_group -> Group, |shared, principal, id, reason| act_on_group(&shared, &principal, &id, GroupCommand::Pause, reason));
plain_action!(resume_group -> Group, |shared, principal, id, reason| act_on_group(&shared, &principal, &id, GroupCommand::Resume, reason));

async fn act_on_group(
    shared: &Shared,
    principal: &Principal,
    id: &str,
    command: GroupCommand,
    reason: Option<String>,
) -> Result<Json<Group>, ApiError> {
    principal.require(Role::Operator)?;
    let record = groups::command(shared, id, command, reason, principal).await?;
    Ok(Json(group_view(shared, &record, principal).await?))
}

/// A group with its members' rollouts, as `principal` sees it now.
async fn group_view(
    shared: &Shared,
    record: &fledge_store::GroupRecord,
    principal: &Principal,
) -> Result<Group, ApiError> {
    let rollouts = shared
        .store
        .rollouts_of_group(&record.id)
        .await
        .map_err(rollouts::store_error)?;
    let stables = view::Stables::read(shared).await;
    groups::view(
        record,
        &rollouts,
        principal.role,
        shared.clock.now(),
        &stables,
    )
}

// === status and apps ===

async fn status(
    State(shared): State<Arc<Shared>>,
    principal: Principal,
) -> Result<Response, ApiError> {
    principal.require(Role::Viewer)?;
    let body = shared.status.get(&shared, principal.role).await?;
    Ok(([(header::CONTENT_TYPE, "application/json")], body).into_response())
}

async fn app_json(shared: &Shared, config: &AppConfig) -> App {
    let running = shared.apps.get(&config.name).await;
    let proxy_addr = match &running {
        Some(app) => app.proxy_addr().await.map(|a| a.to_string()),
        None => None,
    };
    App {
        config: config.clone(),
        proxy_addr,
        router_sync: running.map(|app| app.route_sync()),
    }
}

async fn list_apps(
    State(shared): State<Arc<Shared>>,
    principal: Principal,
) -> Result<Json<Vec<App>>, ApiError> {
    principal.require(Role::Viewer)?;
    let mut out = Vec::new();
    for app in shared.apps.all().await {
        out.push(app_json(&shared, &app.config().await).await);
    }
    Ok(Json(out))
}

async fn get_app(
    State(shared): State<Arc<Shared>>,
    principal: Principal,
    Path(name): Path<String>,
) -> Result<Json<App>, ApiError> {
    principal.require(Role::Viewer)?;
    let app = shared
        .apps
        .get(&name)
        .await
        .ok_or_else(|| ApiError::not_found(format!("no app `{name}`")))?;
    Ok(Json(app_json(&shared, &app.config().await).await))
}

async fn put_app(
    State(shared): State<Arc<Shared>>,
    principal: Principal,
    Path(name): Path<String>,
    bytes: Result<Bytes, BytesRejection>,
) -> Result<Json<App>, ApiError> {
    principal.require(Role::Admin)?;
    let bytes = body(bytes)?;
    let mut value = json_object(&bytes)
        .map_err(|e| ApiError::bad_request("invalid_app", format!("request body: {e}")))?;
    // What `GET /apps/{app}` reports beside the config is not config: a body read
    // from it and edited can be sent back as it is.
    if let Some(obj) = value.as_object_mut() {
        for field in App::STATUS_FIELDS {
            obj.remove(field);
        }
    }
    match value.get("name") {
        None => {
            if let Some(obj) = value.as_object_mut() {
                obj.insert("name".into(), json!(name));
            }
        }
        Some(n) if n.as_str() == Some(name.as_str()) => {}
        Some(n) => {
            return Err(ApiError::bad_request(
                "invalid_app",
                format!("name: the body says {n} but the path says `{name}`"),
            ));
        }
    }
    let mut config: AppConfig = serde_json::from_value(value)
        .map_err(|e| ApiError::bad_request("invalid_app", format!("request body: {e}")))?;
    config
        .validate()
        .map_err(|e| ApiError::bad_request("invalid_app", e))?;
    if config
        .listen
        .is_some_and(|l| l.port() != 0 && l == shared.config.listen)
    {
        return Err(ApiError::bad_request(
            "invalid_app",
            format!("listen: {} is the API's own address", shared.config.listen),
        ));
    }
    let previous = match shared.apps.get(&name).await {
        Some(existing) => Some(existing.config().await),
        None => None,
    };
    if let Some(current) = &previous {
        config.keep_previous_stable(current);
        let active = rollouts::active_rollout(&shared, &name)
            .await
            .map_err(rollouts::store_error)?;
        if let Some(active) = active
            && current.stable != config.stable
        {
            return Err(ApiError::conflict(
                "active_rollout",
                format!(
                    "app `{name}` has an active rollout ({}); its stable version cannot change until it ends",
                    active.id
                ),
            ));
        }
    }
    shared
        .apps
        .start_app(&shared, config.clone())
        .await
        .map_err(|e| ApiError::bad_request("invalid_app", format!("{e:#}")))?;
    if let Err(e) = shared
        .store
        .put_app(&name, &serde_json::to_value(&config).unwrap_or_default())
        .await
    {
        // The store did not take it: the running app goes back to the stored config
        // (a new one stops), so that traffic never follows a config that was not
        // persisted.
        match previous {
            Some(previous) => {
                if let Err(undo) = shared.apps.start_app(&shared, previous).await {
                    tracing::warn!(app = %name, error = %format!("{undo:#}"),
                        "cannot restore the stored config; the controller re-applies it every tick");
                }
            }
            None => shared.apps.remove(&name).await,
        }
        return Err(rollouts::store_error(e));
    }
    shared.note_write();
    tracing::info!(app = %name, actor = %principal.name, "app registered");
    Ok(Json(app_json(&shared, &config).await))
}

// === operations ===

async fn metrics(
    State(shared): State<Arc<Shared>>,
    principal: Principal,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    principal.require(Role::Viewer)?;
    let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok());
    let mut page = Page::new(Format::negotiate(accept));
    let scrape = status::metrics_scrape(&shared).await?;
    if let Some(limiter) = &shared.rate_limiter {
        shared.metrics.set_rate_limit_clients(limiter.clients());
    }
    shared.metrics.write(&mut page, &scrape);
    shared.apps.write_proxy_metrics(&mut page).await;
    let content_type = page.format().content_type();
    Ok(([(header::CONTENT_TYPE, content_type)], page.finish()).into_response())
}

async fn healthz() -> Json<Health> {
    Json(Health {
        status: "ok".to_owned(),
    })
}

/// Ready once the persisted routes are applied, while the store answers and takes
/// writes (a store that refuses them holds every decision: say so).
async fn readyz(State(shared): State<Arc<Shared>>) -> Result<Json<Health>, ApiError> {
    if !shared.ready.load(Ordering::SeqCst) {
        return Err(ApiError::unavailable(
            "not ready: the persisted routes are not applied yet, or the server is stopping",
        ));
    }
    shared
        .store
        .ping()
        .await
        .map_err(|e| ApiError::unavailable(format!("not ready: {e}")))?;
    if let Some(problem) = shared.store_health.problem() {
        return Err(ApiError::unavailable(format!("not ready: {problem}")));
    }
    Ok(Json(Health {
        status: "ready".to_owned(),
    }))
}

async fn openapi_json() -> Json<Value> {
    Json(fledge_api::openapi::document())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::InProcess;

    #[tokio::test]
    async fn an_app_the_store_refuses_is_not_served() {
        let h = InProcess::start().await;
        let api = router(h.shared.clone());
        let put = |body: &'static str| {
            axum::http::Request::put("/apps/extra")
                .header("content-type", "application/json")
                .body(axum::body::Body::from(body))
                .unwrap()
        };
        let body = r#"{"listen": "127.0.0.1:0", "stable": {"version": "v1", "endpoints": ["127.0.0.1:9"]}}"#;
        h.store.refuse(true);
        let answer = tower::ServiceExt::oneshot(api.clone(), put(body))
            .await
            .unwrap();
        assert_eq!(answer.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(h.shared.apps.get("extra").await.is_none(), "not running");
        assert!(
            h.shared.store.get_app("extra").await.unwrap().is_none(),
            "not stored"
        );

        h.store.refuse(false);
        let answer = tower::ServiceExt::oneshot(api, put(body)).await.unwrap();
        assert_eq!(answer.status(), StatusCode::OK);
        let addr = h.shared.apps.proxy_addr("extra").await.expect("serving");
        assert!(tokio::net::TcpStream::connect(addr).await.is_ok());
    }

    #[test]
    fn bodies_must_be_json_objects() {
        assert!(json_object(br#"{"reason": "why"}"#).is_ok());
        // serde reads a struct from an array of its fields: not through the API.
        let err = json_object(br#"["why"]"#).unwrap_err();
        assert_eq!(err, "expected a JSON object, found an array");
        assert!(json_object(b"null").is_err());
        assert!(json_object(b"{").is_err());

        let action = |text: &'static str| action_body(Ok(Bytes::from_static(text.as_bytes())));
        assert_eq!(action("").unwrap(), ActionRequest::default());
        assert_eq!(action("{}").unwrap(), ActionRequest::default());
        assert_eq!(
            action(r#"{"reason": "slow"}"#).unwrap().reason.as_deref(),
            Some("slow")
        );
        // A body that is there must be JSON: blanks are not.
        for bad in ["[]", r#"["slow"]"#, r#"{"why": 1}"#, "1", " ", "\n"] {
            let err = action(bad).unwrap_err();
            assert_eq!((err.status(), err.code()), (400, "invalid_body"), "{bad}");
        }
    }
}

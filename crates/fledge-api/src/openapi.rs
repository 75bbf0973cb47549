//! The OpenAPI 3.0 document served at `GET /openapi.json`, generated from the types
//! of this crate: every schema is the JSON Schema of the type the server returns or
//! reads (through `schemars`), and every route is one entry of [`operations`], the
//! table the server's router is checked against.

use schemars::generate::{SchemaGenerator, SchemaSettings};
use schemars::transform::{Transform, transform_subschemas};
use schemars::{JsonSchema, Schema};
use serde_json::{Map, Value, json};

use crate::app::{App, AppRequest, Role};
use crate::error::ErrorBody;
use crate::group::{Group, GroupListQuery};
use crate::rollout::{
    AbortRequest, ActionRequest, Event, EventsQuery, ListQuery, PromoteQuery, PromoteRequest,
    Rollout, UndoQuery,
};
use crate::status::{Health, LiveMessage, Status};
use crate::ui::{LoginRequest, Series, SeriesQuery, Session};

/// The media types `POST /rollouts` accepts a spec in.
pub const SPEC_MEDIA_TYPES: [&str; 6] = [
    "application/yaml",
    "application/x-yaml",
    "text/yaml",
    "text/x-yaml",
    "application/json",
    "text/plain",
];

/// The content types of `GET /metrics`: OpenMetrics, or the Prometheus text format
/// for a client whose `Accept` prefers `text/plain`.
pub use fledge_stats::exposition::{OPENMETRICS, PROMETHEUS_TEXT};

/// What a route answers or reads.
#[derive(Debug, Clone, Copy)]
pub enum Body {
    /// JSON of a type, by its schema.
    Json(fn(&mut SchemaGenerator) -> Schema),
    /// A rollout spec as YAML or JSON (the spec's own JSON Schema).
    Spec,
    /// A rollout group document as YAML or JSON (its own JSON Schema).
    Group,
    /// Text of the given media type.
    Text(&'static str),
    /// A metrics page: OpenMetrics or the Prometheus text format, as negotiated.
    Metrics,
    /// A server-sent-events stream of [`LiveMessage`]s.
    EventStream,
    /// No body.
    Empty,
}

/// Where a parameter goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum In {
    /// A path segment.
    Path,
    /// The query string.
    Query,
}

/// One answer of a route: status, description, body.
pub type Answer = (u16, &'static str, Body);

/// One route of the API.
#[derive(Debug, Clone)]
pub struct Operation {
    /// `get`, `post` or `put`.
    pub method: &'static str,
    /// The path, with `{param}` segments as the router writes them.
    pub path: &'static str,
    /// One line for people.
    pub summary: &'static str,
    /// The group it belongs to.
    pub tag: &'static str,
    /// The least role that may call it; `None` for open routes.
    pub role: Option<Role>,
    /// Path parameters (name, description), and the query's type.
    pub path_params: &'static [(&'static str, &'static str)],
    /// The query string's type, as a struct of optional fields.
    pub query: Option<fn(&mut SchemaGenerator) -> Schema>,
    /// The request body, and whether it is required.
    pub request: Option<(Body, bool)>,
    /// The answers: status, description, body.
    pub responses: Vec<Answer>,
}

fn schema<T: JsonSchema>(generator: &mut SchemaGenerator) -> Schema {
    generator.subschema_for::<T>()
}

/// An answer in the API's one error shape.
const fn error(status: u16, description: &'static str) -> Answer {
    (status, description, Body::Json(schema::<ErrorBody>))
}

const ROLLOUT_ID: (&str, &str) = (
    "id",
    "A rollout id, or an app name meaning its active (or else latest) rollout.",
);

const APP_NAME: (&str, &str) = ("app", "The app's name.");

const NO_ROLLOUT: Answer = error(404, "No such rollout or app (code `not_found`).");

const GROUP_ID: (&str, &str) = (
    "id",
    "A group id, or a group name meaning the newest group of that name.",
);

const NO_GROUP: Answer = error(404, "No such group (code `not_found`).");

const GROUP_ACTION_ANSWERS: &[Answer] = &[
    (
        200,
        "The group after the action.",
        Body::Json(schema::<Group>),
    ),
    NO_GROUP,
    error(
        409,
        "The action is not allowed in the group's phase (code `invalid_phase`), or no member could take it (code `conflict`).",
    ),
];

const CROSS_ORIGIN: Answer = error(
    403,
    "The request came from another origin (code `forbidden`).",
);

/// Answers every protected route may give besides its own.
const PROTECTED: &[Answer] = &[
    error(401, "No valid token (code `unauthorized`)."),
    error(403, "The token's role is too low (code `forbidden`)."),
    error(
        408,
        "The request took longer than `limits.requestTimeout` (code `timeout`).",
    ),
    error(
        429,
        "Too many requests from this client (code `rate_limited`); retry after `Retry-After` seconds.",
    ),
];

/// Answers any route may give: an unparsable request, a body over the size limit, a
/// store that cannot be read.
const ANY: &[Answer] = &[
    error(
        400,
        "The request is malformed: its body, query or path (code `invalid_body`, `invalid_query`, …).",
    ),
    error(
        413,
        "The body is larger than `limits.maxBodyBytes` (code `payload_too_large`).",
    ),
    error(
        503,
        "The store cannot be read or written now (code `unavailable`).",
    ),
];

const ACTION_ANSWERS: &[Answer] = &[
    (
        200,
        "The rollout after the action.",
        Body::Json(schema::<Rollout>),
    ),
    NO_ROLLOUT,
    error(
        409,
        "The action is not allowed in the rollout's phase (code `invalid_phase`), the rollout kept changing (code `conflict`), or a retry would start the app's stable version again (code `already_stable`).",
    ),
];

// === impl Operation ===

/// The table below is built with these: an open route with no parameters, no body
/// and no answers, and one method per thing that differs from that.
impl Operation {
    fn new(method: &'static str, path: &'static str, summary: &'static str) -> Self {
        Self {
            method,
            path,
            summary,
            tag: "",
            role: None,
            path_params: &[],
            query: None,
            request: None,
            responses: Vec::new(),
        }
    }

    fn get(path: &'static str, summary: &'static str) -> Self {
        Self::new("get", path, summary)
    }

    fn post(path: &'static str, summary: &'static str) -> Self {
        Self::new("post", path, summary)
    }

    fn put(path: &'static str, summary: &'static str) -> Self {
        Self::new("put", path, summary)
    }

    fn role(mut self, role: Role) -> Self {
        self.role = Some(role);
        self
    }

    fn path_params(mut self, params: &'static [(&'static str, &'static str)]) -> Self {
        self.path_params = params;
        self
    }

    fn query<T: JsonSchema>(mut self) -> Self {
        self.query = Some(schema::<T>);
        self
    }

    fn request(mut self, body: Body, required: bool) -> Self {
        self.request = Some((body, required));
        self
    }

    /// Answers `status` with JSON of type `T`.
    fn json<T: JsonSchema>(self, status: u16, description: &'static str) -> Self {
        self.answers(&[(status, description, Body::Json(schema::<T>))])
    }

    /// Answers `200` with text of the media type `ty`.
    fn text(self, description: &'static str, ty: &'static str) -> Self {
        self.answers(&[(200, description, Body::Text(ty))])
    }

    fn answers(mut self, answers: &[Answer]) -> Self {
        self.responses.extend_from_slice(answers);
        self
    }
}

fn action(path: &'static str, summary: &'static str) -> Operation {
    Operation::post(path, summary)
        .role(Role::Operator)
        .path_params(&[ROLLOUT_ID])
        .request(Body::Json(schema::<ActionRequest>), false)
        .answers(ACTION_ANSWERS)
}

fn group_action(path: &'static str, summary: &'static str) -> Operation {
    Operation::post(path, summary)
        .role(Role::Operator)
        .path_params(&[GROUP_ID])
        .request(Body::Json(schema::<ActionRequest>), false)
        .answers(GROUP_ACTION_ANSWERS)
}

/// `POST /promote` or `POST /abort`: the action with the rollout named in the body
/// `T`, by id or by app.
fn named_action<T: JsonSchema>(path: &'static str) -> Operation {
    Operation::post(
        path,
        "The action of `POST /rollouts/{id}/…` with the rollout named in the body, by id or by app (operator).",
    )
    .role(Role::Operator)
    .request(Body::Json(schema::<T>), true)
    .answers(ACTION_ANSWERS)
}

/// Why a [`start`] route refuses its document, besides a body that is not YAML or
/// JSON (415): each description names its error code.
#[derive(Clone, Copy)]
struct Refusals {
    /// 404: an app the document names is not registered.
    unknown_app: &'static str,
    /// 409: an app the document names already has an active rollout.
    active_rollout: &'static str,
    /// 400: the document is invalid.
    invalid: &'static str,
}

/// `POST /rollouts` or `POST /groups`: start `T` from a `document` in YAML or JSON
/// (operator), answered with the new `T` (201) or one of its `refusals`.
fn start<T: JsonSchema>(
    path: &'static str,
    summary: &'static str,
    document: Body,
    created: &'static str,
    refusals: Refusals,
) -> Operation {
    Operation::post(path, summary)
        .role(Role::Operator)
        .request(document, true)
        .json::<T>(201, created)
        .answers(&[
            error(404, refusals.unknown_app),
            error(409, refusals.active_rollout),
            error(
                415,
                "The body is not YAML or JSON (code `unsupported_media_type`).",
            ),
            error(400, refusals.invalid),
        ])
}

/// Every route the server serves.
pub fn operations() -> Vec<Operation> {
    let rollouts = vec![
        start::<Rollout>(
            "/rollouts",
            "Start a rollout from a spec in YAML or JSON (operator).",
            Body::Spec,
            "The new rollout, with its first events.",
            Refusals {
                unknown_app: "The spec's app is not registered (code `unknown_app`).",
                active_rollout: "The app already has an active rollout (code `active_rollout`).",
                invalid: "The spec is invalid, with each problem's file:line:column (code `invalid_spec`); this includes rules its schema cannot express, e.g. stages whose traffic goes down.",
            },
        ),
        Operation::get(
            "/rollouts",
            "List rollouts, newest first, without their events (viewer).",
        )
        .role(Role::Viewer)
        .query::<ListQuery>()
        .json::<Vec<Rollout>>(200, "The rollouts."),
        Operation::get(
            "/rollouts/{id}",
            "One rollout with its latest analysis and its events (viewer).",
        )
        .role(Role::Viewer)
        .path_params(&[ROLLOUT_ID])
        .json::<Rollout>(200, "The rollout.")
        .answers(&[NO_ROLLOUT]),
        Operation::get(
            "/rollouts/{id}/events",
            "A rollout's history, oldest first (viewer).",
        )
        .role(Role::Viewer)
        .path_params(&[ROLLOUT_ID])
        .query::<EventsQuery>()
        .json::<Vec<Event>>(200, "The events.")
        .answers(&[NO_ROLLOUT]),
        action(
            "/rollouts/{id}/promote",
            "End the current stage now, or with `full=true` go to 100% and succeed (operator).",
        )
        .query::<PromoteQuery>(),
        action(
            "/rollouts/{id}/abort",
            "Abort: all traffic back to stable (operator).",
        ),
        action(
            "/rollouts/{id}/pause",
            "Pause: hold the weight, stop the stage clock (operator).",
        ),
        action(
            "/rollouts/{id}/resume",
            "Resume a paused rollout (operator).",
        ),
        action(
            "/rollouts/{id}/retry",
            "Restart a failed or aborted rollout from stage 0 (operator).",
        ),
        named_action::<PromoteRequest>("/promote"),
        named_action::<AbortRequest>("/abort"),
    ];
    let groups = vec![
        start::<Group>(
            "/groups",
            "Start a rollout group from a group document in YAML or JSON: its members start together, or the first in its order (operator).",
            Body::Group,
            "The new group, with its started members.",
            Refusals {
                unknown_app: "A member's app is not registered (code `app_not_found`).",
                active_rollout: "A member's app already has an active rollout (code `active_rollout`).",
                invalid: "The document or one of its rollouts is invalid, with each problem's file:line:column (code `invalid_spec`).",
            },
        ),
        Operation::get("/groups", "List rollout groups, newest first (viewer).")
            .role(Role::Viewer)
            .query::<GroupListQuery>()
            .json::<Vec<Group>>(200, "The groups."),
        Operation::get(
            "/groups/{id}",
            "One group with its members side by side and its history (viewer).",
        )
        .role(Role::Viewer)
        .path_params(&[GROUP_ID])
        .json::<Group>(200, "The group.")
        .answers(&[NO_GROUP]),
        group_action(
            "/groups/{id}/promote",
            "End the current stage of every active member now, or with `full=true` take them all to 100% (operator).",
        )
        .query::<PromoteQuery>(),
        group_action(
            "/groups/{id}/abort",
            "Abort the group: every member that has not succeeded back to stable, and with `rollbackSucceeded` the others too (operator).",
        ),
        group_action(
            "/groups/{id}/pause",
            "Pause every active member; no member starts until resumed (operator).",
        ),
        group_action("/groups/{id}/resume", "Resume a paused group (operator)."),
    ];
    let status = vec![
        Operation::get(
            "/status",
            "Every app with its stable version, active rollout and the live health of both versions; and this replica: its name, whether it leads, the lease epoch (viewer).",
        )
        .role(Role::Viewer)
        .json::<Status>(200, "The status."),
        Operation::get(
            "/events",
            "Server-sent events: `rollout` (a rollout changed), `event` (a new history entry) and `status` (a snapshot every two seconds) (viewer).",
        )
        .role(Role::Viewer)
        .answers(&[(
            200,
            "The event stream; it ends when the server stops.",
            Body::EventStream,
        )]),
    ];
    let apps = vec![
        Operation::get("/apps", "The registered apps (viewer).")
            .role(Role::Viewer)
            .json::<Vec<App>>(200, "The apps."),
        Operation::get("/apps/{app}", "One registered app (viewer).")
            .role(Role::Viewer)
            .path_params(&[APP_NAME])
            .json::<App>(200, "The app.")
            .answers(&[error(404, "No such app (code `not_found`).")]),
        Operation::put(
            "/apps/{app}",
            "Register or change an app and (re)start its proxy listener (admin). A body read from `GET /apps/{app}` can be sent back as it is.",
        )
        .role(Role::Admin)
        .path_params(&[APP_NAME])
        .request(Body::Json(schema::<AppRequest>), true)
        .json::<App>(200, "The app as registered.")
        .answers(&[
            error(
                409,
                "The app has an active rollout: its stable version cannot change now (code `active_rollout`).",
            ),
            error(
                400,
                "The app is invalid or cannot be served: a bad field, a name that differs from the path's, a listener that cannot be bound, a router or metric source that refuses its settings (code `invalid_app`).",
            ),
        ]),
        Operation::post(
            "/apps/{app}/undo",
            "Start a rollout back to the app's previous stable version (`previousStable`), through the stages of its latest spec, or with `now=true` all at once (operator).",
        )
        .role(Role::Operator)
        .path_params(&[APP_NAME])
        .query::<UndoQuery>()
        .request(Body::Json(schema::<ActionRequest>), false)
        .json::<Rollout>(201, "The new rollout, with its first events.")
        .answers(&[
            error(404, "No such app (code `app_not_found`)."),
            error(
                409,
                "The app has no previous stable version (code `nothing_to_undo`), or it has an active rollout (code `active_rollout`).",
            ),
            error(
                400,
                "The rollout back cannot be made from the latest spec, e.g. the app's router cannot serve its rules (code `invalid_spec`).",
            ),
        ]),
    ];
    let ops = vec![
        Operation::get(
            "/metrics",
            "The server's and the built-in proxies' metrics (viewer): OpenMetrics, or the \
             Prometheus text format 0.0.4 when `Accept` prefers `text/plain`.",
        )
        .role(Role::Viewer)
        .answers(&[(200, "The metrics.", Body::Metrics)]),
        Operation::get("/healthz", "Liveness.").json::<Health>(200, "Alive."),
        Operation::get(
            "/readyz",
            "Readiness: the persisted routes are applied and the store takes writes.",
        )
        .json::<Health>(200, "Ready."),
        Operation::get("/openapi.json", "This document.")
            .json::<Map<String, Value>>(200, "OpenAPI 3.0."),
    ];
    let ui = vec![
        Operation::get("/", "The web UI's page.").text("HTML.", "text/html; charset=utf-8"),
        Operation::get("/ui/app.js", "The web UI's script.")
            .text("JavaScript.", "text/javascript; charset=utf-8"),
        Operation::get("/ui/app.css", "The web UI's style sheet.")
            .text("CSS.", "text/css; charset=utf-8"),
        Operation::get("/ui/icon.svg", "The web UI's icon.").text("SVG.", "image/svg+xml"),
        Operation::get(
            "/session",
            "Who this browser is signed in as (by its session cookie), its role and CSRF token.",
        )
        .json::<Session>(200, "The session."),
        Operation::post(
            "/login",
            "Trade a valid token for a session cookie (web UI; same-origin only).",
        )
        .request(Body::Json(schema::<LoginRequest>), true)
        .json::<Session>(200, "Signed in; the cookie is set.")
        .answers(&[
            error(401, "The token is not valid (code `unauthorized`)."),
            CROSS_ORIGIN,
        ]),
        Operation::post(
            "/logout",
            "End this browser's session (web UI; same-origin only).",
        )
        .answers(&[
            (204, "Signed out; the cookie is cleared.", Body::Empty),
            CROSS_ORIGIN,
        ]),
        Operation::get(
            "/ui/api/series",
            "A rollout's recorded health points for the web UI's charts (viewer).",
        )
        .role(Role::Viewer)
        .query::<SeriesQuery>()
        .json::<Series>(200, "The points, oldest first.")
        .answers(&[error(
            404,
            "No such rollout, or an app that has had none (code `not_found`).",
        )]),
    ];
    [
        ("rollouts", rollouts),
        ("groups", groups),
        ("status", status),
        ("apps", apps),
        ("ops", ops),
        ("ui", ui),
    ]
    .into_iter()
    .flat_map(|(tag, ops)| ops.into_iter().map(move |op| Operation { tag, ..op }))
    .collect()
}

fn content(body: Body, generator: &mut SchemaGenerator) -> Option<Value> {
    match body {
        Body::Json(f) => Some(json!({"application/json": {"schema": f(generator)}})),
        Body::Spec | Body::Group => {
            let spec = if matches!(body, Body::Spec) {
                generator.subschema_for::<fledge_spec::RolloutSpec>()
            } else {
                generator.subschema_for::<fledge_spec::GroupSpec>()
            };
            let mut media = Map::new();
            for ty in SPEC_MEDIA_TYPES {
                let schema = if ty == "application/json" {
                    json!(spec)
                } else {
                    json!({"type": "string", "description": "The document as YAML (JSON is YAML too)."})
                };
                media.insert(ty.to_owned(), json!({"schema": schema}));
            }
            Some(Value::Object(media))
        }
        Body::Text(ty) => Some(json!({ty: {"schema": {"type": "string"}}})),
        Body::Metrics => Some(json!({
            OPENMETRICS: {"schema": {"type": "string"}},
            PROMETHEUS_TEXT: {"schema": {"type": "string"}},
        })),
        // Before OpenAPI 3.2 (`itemSchema`), the schema of an event stream describes
        // one event, as its fields: `event`, `data`, and `id` once one was sent.
        Body::EventStream => Some(json!({"text/event-stream": {
            "schema": {
                "type": "object",
                "description": "One event of the stream; `x-events` describes each one's data.",
                "required": ["event", "data"],
                "properties": {
                    "event": {"type": "string", "enum": ["rollout", "event", "status"], "description": "What the data is."},
                    "data": {"type": "string", "description": "The JSON described by `LiveMessage`'s variant of the same name as the event."},
                    "id": {"type": "string", "description": "The `id` of the latest `event` message: a new history entry's id."},
                    "retry": {"type": "integer", "minimum": 0, "description": "Milliseconds to wait before reconnecting."},
                },
                "additionalProperties": false,
            },
            "x-events": generator.subschema_for::<LiveMessage>(),
        }})),
        Body::Empty => None,
    }
}

/// The name of the schema a `$ref` points to.
fn reference_name(reference: &Schema) -> String {
    reference
        .get("$ref")
        .and_then(Value::as_str)
        .and_then(|r| r.rsplit('/').next())
        .unwrap_or_default()
        .to_owned()
}

/// A query struct's fields as query parameters.
fn query_params(definition: &Value) -> Vec<Value> {
    let required: Vec<&str> = definition
        .get("required")
        .and_then(Value::as_array)
        .map(|r| r.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let Some(properties) = definition.get("properties").and_then(Value::as_object) else {
        return Vec::new();
    };
    properties
        .iter()
        .map(|(field, schema)| {
            let mut schema = schema.clone();
            let description = schema
                .as_object_mut()
                .and_then(|o| o.remove("description"))
                .unwrap_or(Value::Null);
            json!({
                "name": field,
                "in": "query",
                "required": required.contains(&field.as_str()),
                "description": description,
                "schema": schema,
            })
        })
        .collect()
}

/// Gives every integer of a fixed width the bounds of its Rust type. `schemars` only
/// writes the format of 32- and 64-bit integers (`uint32`, `int64`, …), which a
/// client may read as advice; a value beyond the bounds is refused by the server,
/// so the schema says so.
#[derive(Debug, Clone, Copy)]
struct IntegerBounds;

impl Transform for IntegerBounds {
    fn transform(&mut self, schema: &mut Schema) {
        let bounds: Option<(Value, Value)> = match schema.get("format").and_then(Value::as_str) {
            Some("int32") => Some((i32::MIN.into(), i32::MAX.into())),
            Some("int64" | "int") => Some((i64::MIN.into(), i64::MAX.into())),
            Some("uint32") => Some((0.into(), u32::MAX.into())),
            Some("uint64" | "uint") => Some((0.into(), u64::MAX.into())),
            _ => None,
        };
        if let Some((min, max)) = bounds
            && let Some(object) = schema.as_object_mut()
        {
            object.entry("minimum").or_insert(min);
            object.entry("maximum").or_insert(max);
        }
        transform_subschemas(self, schema);
    }
}

/// The OpenAPI document served at `GET /openapi.json`.
pub fn document() -> Value {
    let mut generator = SchemaSettings::openapi3()
        .with_transform(IntegerBounds)
        .into_generator();
    let mut paths = Map::new();
    // Query structs are only vehicles for their fields: read once every schema is
    // generated (and made OpenAPI 3.0), then dropped from the schemas.
    let mut queries = Vec::new();
    for op in operations() {
        let parameters: Vec<Value> = op
            .path_params
            .iter()
            .map(|(name, description)| {
                json!({"name": name, "in": "path", "required": true, "description": description,
                       "schema": {"type": "string", "minLength": 1}})
            })
            .collect();
        if let Some(query) = op.query {
            queries.push((op.path, op.method, reference_name(&query(&mut generator))));
        }
        let mut responses = Map::new();
        let extra: &[(u16, &str, Body)] = if op.role.is_some() { PROTECTED } else { &[] };
        for (status, description, body) in op.responses.iter().chain(extra).chain(ANY) {
            let key = status.to_string();
            if responses.contains_key(&key) {
                continue;
            }
            let mut answer = json!({"description": description});
            if let Some(c) = content(*body, &mut generator) {
                answer["content"] = c;
            }
            if *status == 429 {
                answer["headers"] = json!({"Retry-After": {"description": "Seconds to wait.", "schema": {"type": "integer", "minimum": 1}}});
            }
            responses.insert(key, answer);
        }
        let mut operation = json!({
            "summary": op.summary,
            "operationId": operation_id(&op),
            "tags": [op.tag],
            "responses": responses,
        });
        operation["parameters"] = Value::Array(parameters);
        if let Some((body, required)) = op.request
            && let Some(c) = content(body, &mut generator)
        {
            operation["requestBody"] = json!({"required": required, "content": c});
        }
        if op.role.is_none() {
            operation["security"] = json!([]);
        }
        let entry = paths
            .entry(op.path.to_owned())
            .or_insert_with(|| Value::Object(Map::new()));
        entry[op.method] = operation;
    }
    let mut schemas = generator.take_definitions(true);
    for (path, method, name) in &queries {
        let definition = schemas.get(name).cloned().unwrap_or_default();
        let operation = &mut paths[*path][*method];
        let mut parameters = operation["parameters"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        parameters.extend(query_params(&definition));
        operation["parameters"] = Value::Array(parameters);
    }
    for (_, _, name) in &queries {
        schemas.remove(name);
    }
    json!({
        "openapi": "3.0.3",
        "info": {
            "title": "fledge API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Progressive delivery: start canary rollouts, watch them, promote or abort them. Authenticate with `Authorization: Bearer <token>` when tokens are configured; roles are viewer < operator < admin. Every error is `{\"error\": {\"code\", \"message\"}}`. Each client (token, or source address without one) is rate limited: beyond `limits.ratePerSecond` (bursts of `limits.rateBurst`) any route but `/healthz` and `/readyz` answers 429 (code `rate_limited`) with `Retry-After` in seconds."
        },
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": schemas,
        },
        "security": [{"bearer": []}],
        "paths": paths,
    })
}

/// `getRollouts`, `postRolloutsIdPromote`, …: the method and the path's words.
fn operation_id(op: &Operation) -> String {
    let mut id = op.method.to_owned();
    for word in op
        .path
        .split(['/', '.', '{', '}'])
        .filter(|w| !w.is_empty())
    {
        let mut chars = word.chars();
        if let Some(first) = chars.next() {
            id.push(first.to_ascii_uppercase());
            id.extend(chars);
        }
    }
    if op.path == "/" {
        id.push_str("Index");
    }
    id
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reference_resolves() {
        let doc = document();
        let text = doc.to_string();
        let schemas = doc["components"]["schemas"].as_object().unwrap();
        for part in text.split("\"$ref\":\"#/components/schemas/").skip(1) {
            let name = part.split('"').next().unwrap();
            assert!(schemas.contains_key(name), "dangling reference to {name}");
        }
    }

    #[test]
    fn operation_ids_are_unique() {
        let mut seen = std::collections::BTreeSet::new();
        for op in operations() {
            assert!(seen.insert(operation_id(&op)), "{} {}", op.method, op.path);
        }
    }

    #[test]
    fn integers_carry_the_bounds_of_their_type() {
        let doc = document();
        let list = doc["paths"]["/rollouts"]["get"]["parameters"]
            .as_array()
            .unwrap();
        let limit = list.iter().find(|p| p["name"] == "limit").unwrap();
        // `?limit=4294967296` is refused (400): the schema must not allow it.
        assert_eq!(limit["schema"]["maximum"], u32::MAX, "{limit}");
        assert_eq!(limit["schema"]["minimum"], 0, "{limit}");
        let revision = &doc["components"]["schemas"]["Rollout"]["properties"]["revision"];
        assert_eq!(revision["maximum"], i64::MAX, "{revision}");
        // Bounds a type states itself are kept.
        let traffic = &doc["components"]["schemas"]["Stage"]["properties"]["traffic"];
        assert_eq!(traffic["maximum"], 100, "{traffic}");
    }

    #[test]
    fn event_stream_schema_describes_one_event() {
        let doc = document();
        let stream =
            &doc["paths"]["/events"]["get"]["responses"]["200"]["content"]["text/event-stream"];
        let event = &stream["schema"];
        assert_eq!(event["type"], "object");
        assert_eq!(event["required"], json!(["event", "data"]));
        assert_eq!(
            event["properties"]["event"]["enum"],
            json!(["rollout", "event", "status"])
        );
        assert!(stream["x-events"]["$ref"].is_string(), "{stream}");
    }

    #[test]
    fn request_schemas_are_as_strict_as_the_server() {
        let doc = document();
        let schemas = &doc["components"]["schemas"];
        // `{}` is not a spec, and an action body takes no other field than `reason`.
        let spec = &schemas["RolloutSpec"];
        let required = spec["required"].as_array().unwrap();
        for field in ["app", "version", "stages"] {
            assert!(
                required.iter().any(|r| r == field),
                "spec must require {field}"
            );
        }
        assert_eq!(schemas["ActionRequest"]["additionalProperties"], false);
        // `PUT /apps/{app}` takes the path's name when the body has none, and refuses
        // unknown fields.
        let app = &schemas["AppRequest"];
        assert_eq!(app["additionalProperties"], false, "{app}");
        assert!(
            !app["required"]
                .as_array()
                .unwrap()
                .iter()
                .any(|r| r == "name")
        );
        assert!(app["properties"]["proxyAddr"].is_object(), "{app}");
        assert_eq!(schemas["App"]["properties"]["name"]["maxLength"], 63);
        // The spec's names follow the server's rules (`fledge_spec::check_app_name`).
        assert_eq!(spec["properties"]["app"]["maxLength"], 63);
        assert!(spec["properties"]["version"]["pattern"].is_string());
        let list = &doc["paths"]["/rollouts"]["get"]["parameters"];
        assert_eq!(list.as_array().unwrap().len(), 3, "{list}");
        assert!(
            schemas.get("ListQuery").is_none(),
            "query structs are not schemas"
        );
    }
}

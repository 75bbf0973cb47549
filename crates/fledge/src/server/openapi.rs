//! The API's OpenAPI 3 description, written by hand next to the router it describes
//! (a test checks that every route of the router is listed here).

use serde_json::{Value, json};

/// The OpenAPI document served at `GET /openapi.json`.
pub fn document() -> Value {
    let error = json!({"$ref": "#/components/responses/Error"});
    let id_param = json!({
        "name": "id", "in": "path", "required": true,
        "description": "A rollout id, or an app name meaning its active (or else latest) rollout.",
        "schema": {"type": "string"}
    });
    let action = |summary: &str, extra: Vec<Value>| {
        let mut params = vec![id_param.clone()];
        params.extend(extra);
        json!({"post": {
            "summary": summary,
            "tags": ["rollouts"],
            "parameters": params,
            "requestBody": {"required": false, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ActionRequest"}}}},
            "responses": {
                "200": {"description": "The rollout after the action.", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Rollout"}}}},
                "401": error, "403": error, "404": error,
                "409": {"description": "The action is not allowed in the rollout's phase (code `invalid_phase`), or the rollout kept changing (code `conflict`).", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
            }
        }})
    };
    json!({
        "openapi": "3.0.3",
        "info": {
            "title": "fledge API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Progressive delivery: start canary rollouts, watch them, promote or abort them. Authenticate with `Authorization: Bearer <token>` when tokens are configured; roles are viewer < operator < admin. Every error is `{\"error\": {\"code\", \"message\"}}`. Each client (token, or source address without one) is rate limited: beyond `limits.ratePerSecond` (bursts of `limits.rateBurst`) any route but `/healthz` and `/readyz` answers 429 (code `rate_limited`) with `Retry-After` in seconds."
        },
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "responses": {
                "Error": {"description": "An error.", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}},
                "RateLimited": {"description": "Too many requests from this client (code `rate_limited`); retry after `Retry-After` seconds.",
                    "headers": {"Retry-After": {"schema": {"type": "integer", "minimum": 1}}},
                    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
            },
            "schemas": {
                "Error": {"type": "object", "required": ["error"], "properties": {"error": {
                    "type": "object", "required": ["code", "message"],
                    "properties": {
                        "code": {"type": "string", "example": "invalid_spec"},
                        "message": {"type": "string"},
                        "details": {"type": "array", "items": {"type": "object"}}
                    }}}},
                "ActionRequest": {"type": "object", "properties": {"reason": {"type": "string", "description": "Why, recorded in the event."}}},
                "Rollout": {"type": "object", "required": ["id", "app", "version", "phase", "stageIndex", "canaryWeight", "stages", "createdAt", "updatedAt"],
                    "properties": {
                        "id": {"type": "string"}, "app": {"type": "string"}, "version": {"type": "string"},
                        "phase": {"type": "string", "enum": ["Pending", "Progressing", "Paused", "Succeeded", "Failed", "Aborted"]},
                        "stageIndex": {"type": "integer"}, "canaryWeight": {"type": "number"},
                        "stages": {"type": "array", "items": {"type": "object"}},
                        "createdAt": {"type": "string", "format": "date-time"},
                        "updatedAt": {"type": "string", "format": "date-time"},
                        "revision": {"type": "integer"},
                        "analysis": {"type": "object", "nullable": true, "description": "The latest judgement with its evidence."},
                        "events": {"type": "array", "items": {"$ref": "#/components/schemas/Event"}},
                        "spec": {"type": "object"}
                    }},
                "Event": {"type": "object", "properties": {
                    "seq": {"type": "integer"}, "at": {"type": "string", "format": "date-time"},
                    "kind": {"type": "string"}, "actor": {"type": "string"},
                    "message": {"type": "string"}, "evidence": {}
                }},
                "App": {"type": "object", "required": ["name", "stable"], "properties": {
                    "name": {"type": "string"}, "listen": {"type": "string"},
                    "stable": {"type": "object", "properties": {"version": {"type": "string"}, "endpoints": {"type": "array", "items": {"type": "string"}}}},
                    "canary": {"type": "object", "properties": {"endpoints": {"type": "array", "items": {"type": "string"}}}},
                    "router": {}, "metrics": {},
                    "timeouts": {"type": "object", "description": "The built-in proxy's timeouts for the app, as durations (`2s`, `500ms`).", "properties": {"connect": {"type": "string"}, "response": {"type": "string"}, "clientHeaders": {"type": "string"}}},
                    "routerSync": {"$ref": "#/components/schemas/RouterSync"}
                }},
                "RouterSync": {"type": "object", "description": "Whether the app's router serves the route the store asks for (read only; also on the app's newest rollout).", "properties": {
                    "router": {"type": "string"}, "inSync": {"type": "boolean"},
                    "desiredWeight": {"type": "integer"}, "appliedWeight": {"type": ["integer", "null"]},
                    "consecutiveFailures": {"type": "integer"}, "lastError": {"type": ["string", "null"]},
                    "outOfSyncSince": {"type": ["string", "null"]}
                }}
            }
        },
        "security": [{"bearer": []}],
        "paths": {
            "/rollouts": {
                "post": {
                    "summary": "Start a rollout (operator).", "tags": ["rollouts"],
                    "requestBody": {"required": true, "content": {
                        "application/yaml": {"schema": {"type": "string"}},
                        "application/json": {"schema": {"type": "object"}}
                    }},
                    "responses": {
                        "201": {"description": "The new rollout.", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Rollout"}}}},
                        "400": {"description": "The spec is invalid (code `invalid_spec`, with file:line:column).", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}},
                        "401": error, "403": error,
                        "404": {"description": "The spec's app is not registered.", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}},
                        "409": {"description": "The app already has an active rollout (code `active_rollout`).", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}},
                        "413": {"description": "The body is larger than the limit.", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
                    }
                },
                "get": {
                    "summary": "List rollouts, newest first (viewer).", "tags": ["rollouts"],
                    "parameters": [
                        {"name": "app", "in": "query", "schema": {"type": "string"}},
                        {"name": "phase", "in": "query", "schema": {"type": "string"}},
                        {"name": "limit", "in": "query", "schema": {"type": "integer"}}
                    ],
                    "responses": {"200": {"description": "The rollouts (without their events).", "content": {"application/json": {"schema": {"type": "array", "items": {"$ref": "#/components/schemas/Rollout"}}}}}, "401": error, "403": error}
                }
            },
            "/rollouts/{id}": {"get": {
                "summary": "One rollout with its latest analysis and events (viewer).", "tags": ["rollouts"],
                "parameters": [id_param.clone()],
                "responses": {"200": {"description": "The rollout.", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Rollout"}}}}, "401": error, "403": error, "404": error}
            }},
            "/rollouts/{id}/events": {"get": {
                "summary": "A rollout's history (viewer).", "tags": ["rollouts"],
                "parameters": [id_param.clone(), {"name": "after", "in": "query", "description": "Only events with a larger seq.", "schema": {"type": "integer"}}],
                "responses": {"200": {"description": "The events, oldest first.", "content": {"application/json": {"schema": {"type": "array", "items": {"$ref": "#/components/schemas/Event"}}}}}, "401": error, "403": error, "404": error}
            }},
            "/rollouts/{id}/promote": action("End the current stage now, or with `full=true` go to 100% and succeed (operator).",
                vec![json!({"name": "full", "in": "query", "schema": {"type": "boolean"}})]),
            "/rollouts/{id}/abort": action("Abort: all traffic back to stable (operator).", vec![]),
            "/rollouts/{id}/pause": action("Pause: hold the weight, stop the stage clock (operator).", vec![]),
            "/rollouts/{id}/resume": action("Resume a paused rollout (operator).", vec![]),
            "/rollouts/{id}/retry": action("Restart a failed or aborted rollout from stage 0 (operator).", vec![]),
            "/status": {"get": {
                "summary": "Every app: stable version, active rollout, live health of both versions; and this replica: its name, whether it leads the controller, the lease epoch (viewer).", "tags": ["status"],
                "responses": {"200": {"description": "The status.", "content": {"application/json": {"schema": {"type": "object"}}}}, "401": error, "403": error}
            }},
            "/events": {"get": {
                "summary": "Server-sent events: `rollout` (a rollout changed), `event` (a new history entry) and `status` (a periodic snapshot) (viewer).", "tags": ["status"],
                "responses": {"200": {"description": "An event stream.", "content": {"text/event-stream": {"schema": {"type": "string"}}}}, "401": error, "403": error}
            }},
            "/apps": {"get": {
                "summary": "The registered apps (viewer).", "tags": ["apps"],
                "responses": {"200": {"description": "The apps.", "content": {"application/json": {"schema": {"type": "array", "items": {"$ref": "#/components/schemas/App"}}}}}, "401": error, "403": error}
            }},
            "/apps/{app}": {"put": {
                "summary": "Register or change an app; starts its proxy listener (admin).", "tags": ["apps"],
                "parameters": [{"name": "app", "in": "path", "required": true, "schema": {"type": "string"}}],
                "requestBody": {"required": true, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/App"}}}},
                "responses": {
                    "200": {"description": "The app as registered.", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/App"}}}},
                    "400": error, "401": error, "403": error,
                    "409": {"description": "The app has an active rollout; its stable version cannot change now.", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
                }
            }},
            "/metrics": {"get": {"summary": "Prometheus exposition (viewer).", "tags": ["ops"], "responses": {"200": {"description": "Metrics.", "content": {"text/plain": {"schema": {"type": "string"}}}}, "401": error, "403": error}}},
            "/healthz": {"get": {"summary": "Liveness.", "tags": ["ops"], "security": [], "responses": {"200": {"description": "Alive."}}}},
            "/readyz": {"get": {"summary": "Readiness: the persisted weights of every active rollout have been re-applied.", "tags": ["ops"], "security": [], "responses": {"200": {"description": "Ready."}, "503": error}}},
            "/openapi.json": {"get": {"summary": "This document.", "tags": ["ops"], "security": [], "responses": {"200": {"description": "OpenAPI 3."}}}},
            "/": {"get": {"summary": "The web UI.", "tags": ["ui"], "security": [], "responses": {"200": {"description": "HTML."}}}}
        }
    })
}

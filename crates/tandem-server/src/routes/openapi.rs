//! The `/v1` routes as one table: the router is built from it ([`v1_router`]) and the
//! OpenAPI document at `/openapi.json` is generated from it ([`document`]), so the two cannot
//! disagree.

use axum::Router;
use axum::routing::{MethodRouter, delete, get, post, put};
use serde_json::{Map, Value, json};

use super::{AppState, agent, api, auth, onboarding, privacy, tenants};
use crate::config::Scope;

/// One `/v1` route.
#[derive(Debug, Clone, Copy)]
pub struct Route {
    /// `GET`, `POST`, `PUT` or `DELETE`.
    pub method: &'static str,
    /// The path under `/v1`, with `{name}` parameters.
    pub path: &'static str,
    /// The scope a token needs.
    pub scope: Scope,
    /// What it does.
    pub summary: &'static str,
    /// The JSON body it takes, as an OpenAPI schema (`Null` for none).
    body: fn() -> Value,
    /// The action an audit entry names for each call (`None`: a read, not audited).
    pub audit: Option<&'static str>,
}

fn no_body() -> Value {
    Value::Null
}

fn agent_body() -> Value {
    json!({"type": "object", "additionalProperties": false, "properties": {
        "agent": {"type": "string", "description": "The agent acting; default: the token's agent"}
    }})
}

fn assign_body() -> Value {
    json!({"type": "object", "additionalProperties": false, "properties": {
        "agent": {"type": "string"}, "team": {"type": "string"}
    }, "minProperties": 1})
}

fn message_body() -> Value {
    json!({"type": "object", "additionalProperties": false, "properties": {
        "text": {"type": "string", "maxLength": 4096, "description": "Only inside the customer's 24-hour window"},
        "template": {"type": "object", "required": ["name", "language"], "properties": {
            "name": {"type": "string"}, "language": {"type": "string"}
        }},
        "agent": {"type": "string"}
    }})
}

fn onboard_body() -> Value {
    json!({"type": "object", "required": ["phone_number_id", "waba_id"], "additionalProperties": false, "properties": {
        "phone_number_id": {"type": "string"},
        "waba_id": {"type": "string"},
        "coexistence": {"type": "boolean", "description": "Shared with the WhatsApp Business App; default: as Meta reports it"},
        "access_token": {"type": "string", "description": "The business's token; default: TANDEM_ACCESS_TOKEN"},
        "code": {"type": "string", "description": "An Embedded Signup code, exchanged for the business's token (needs TANDEM_APP_ID)"}
    }})
}

fn availability_body() -> Value {
    json!({"type": "object", "required": ["status"], "additionalProperties": false, "properties": {
        "status": {"type": "string", "enum": ["online", "away", "offline"]}
    }})
}

/// Every `/v1` route.
pub const ROUTES: &[Route] = &[
    Route {
        method: "GET",
        path: "/tenants",
        scope: Scope::Admin,
        summary: "The tenants in force: numbers, WABAs, flows, teams (deployment tokens only)",
        body: no_body,
        audit: None,
    },
    Route {
        method: "DELETE",
        path: "/tenants/{id}",
        scope: Scope::Admin,
        summary: "Remove a tenant: it stops owning its numbers, its directory moves to .removed/, every customer of it is erased (customer.erased hooks); deployment tokens only",
        body: no_body,
        audit: Some("tenant.remove"),
    },
    Route {
        method: "DELETE",
        path: "/customers/{id}",
        scope: Scope::Admin,
        summary: "Erase a customer (customer id, phone or BSUID): conversations, transcripts, queued messages, contact data, aliases, undelivered hooks; fires customer.erased",
        body: no_body,
        audit: Some("customer.erase"),
    },
    Route {
        method: "GET",
        path: "/audit",
        scope: Scope::Admin,
        summary: "The audit log as JSON lines, oldest first (?since=RFC3339|ms&after=id&limit=)",
        body: no_body,
        audit: Some("audit.export"),
    },
    Route {
        method: "GET",
        path: "/conversations",
        scope: Scope::Read,
        summary: "List conversations (?mode=bot|handoff|human&limit=&after=)",
        body: no_body,
        audit: None,
    },
    Route {
        method: "GET",
        path: "/conversations/{id}",
        scope: Scope::Read,
        summary: "A conversation's state, routing and transcript ({id}: {phone_number_id}:{customer id, phone or BSUID})",
        body: no_body,
        audit: None,
    },
    Route {
        method: "GET",
        path: "/customers/{id}",
        scope: Scope::Read,
        summary: "A customer by customer id, phone or BSUID: identifiers and conversations",
        body: no_body,
        audit: None,
    },
    Route {
        method: "POST",
        path: "/conversations/{id}/takeover",
        scope: Scope::Agent,
        summary: "A person takes over: the bot is paused before the answer",
        body: agent_body,
        audit: Some("conversation.takeover"),
    },
    Route {
        method: "POST",
        path: "/conversations/{id}/release",
        scope: Scope::Agent,
        summary: "Hand the conversation back to the bot",
        body: agent_body,
        audit: Some("conversation.release"),
    },
    Route {
        method: "POST",
        path: "/conversations/{id}/close",
        scope: Scope::Agent,
        summary: "Close the conversation; the bot starts afresh",
        body: agent_body,
        audit: Some("conversation.close"),
    },
    Route {
        method: "POST",
        path: "/conversations/{id}/assign",
        scope: Scope::Agent,
        summary: "Assign to an agent or queue for a team",
        body: assign_body,
        audit: Some("conversation.assign"),
    },
    Route {
        method: "POST",
        path: "/conversations/{id}/messages",
        scope: Scope::Agent,
        summary: "Send a message as a person through the Cloud API",
        body: message_body,
        audit: Some("conversation.message"),
    },
    Route {
        method: "GET",
        path: "/queue",
        scope: Scope::Read,
        summary: "Conversations waiting for an agent, in serving order (?team=)",
        body: no_body,
        audit: None,
    },
    Route {
        method: "GET",
        path: "/agents",
        scope: Scope::Read,
        summary: "Agents with availability and open conversations",
        body: no_body,
        audit: None,
    },
    Route {
        method: "PUT",
        path: "/agents/{id}/availability",
        scope: Scope::Agent,
        summary: "Set an agent online, away or offline",
        body: availability_body,
        audit: Some("agent.availability"),
    },
    Route {
        method: "GET",
        path: "/hooks/dead",
        scope: Scope::Admin,
        summary: "Hook deliveries given up on (?limit=)",
        body: no_body,
        audit: None,
    },
    Route {
        method: "POST",
        path: "/hooks/dead/{id}/redrive",
        scope: Scope::Admin,
        summary: "Queue a dead hook delivery again",
        body: no_body,
        audit: Some("hook.redrive"),
    },
    Route {
        method: "GET",
        path: "/classifier/review",
        scope: Scope::Read,
        summary: "Customer texts no stage was sure of (or only the LLM was), page by page of conversations (?stage=none|llm|all&limit=&after=)",
        body: no_body,
        audit: None,
    },
    Route {
        method: "GET",
        path: "/dead-letters",
        scope: Scope::Read,
        summary: "Signed webhook input kept raw (?limit=)",
        body: no_body,
        audit: None,
    },
    Route {
        method: "GET",
        path: "/accounts/{id}",
        scope: Scope::Read,
        summary: "Recent account or number events",
        body: no_body,
        audit: None,
    },
    Route {
        method: "GET",
        path: "/numbers",
        scope: Scope::Read,
        summary: "Every business number's link health",
        body: no_body,
        audit: None,
    },
    Route {
        method: "POST",
        path: "/numbers",
        scope: Scope::Admin,
        summary: "Onboard a number: check the token, subscribe the app to the account's webhooks, request the Coexistence syncs once",
        body: onboard_body,
        audit: Some("number.onboard"),
    },
    Route {
        method: "GET",
        path: "/numbers/{id}",
        scope: Scope::Read,
        summary: "One number's link health: state, phone and API activity, sends held",
        body: no_body,
        audit: None,
    },
];

/// The handler of a route of [`ROUTES`].
fn handler(route: &Route) -> Option<MethodRouter<AppState>> {
    let h = match (route.method, route.path) {
        ("GET", "/conversations") => get(api::list),
        ("GET", "/conversations/{id}") => get(api::get),
        ("GET", "/customers/{id}") => get(api::customer),
        ("DELETE", "/customers/{id}") => delete(privacy::erase),
        ("GET", "/audit") => get(privacy::audit),
        ("POST", "/conversations/{id}/takeover") => post(agent::takeover),
        ("POST", "/conversations/{id}/release") => post(agent::release),
        ("POST", "/conversations/{id}/close") => post(agent::close),
        ("POST", "/conversations/{id}/assign") => post(agent::assign),
        ("POST", "/conversations/{id}/messages") => post(agent::message),
        ("GET", "/queue") => get(agent::queue),
        ("GET", "/agents") => get(agent::agents),
        ("PUT", "/agents/{id}/availability") => put(agent::availability),
        ("GET", "/hooks/dead") => get(agent::dead_hooks),
        ("POST", "/hooks/dead/{id}/redrive") => post(agent::redrive),
        ("GET", "/dead-letters") => get(api::dead_letters),
        ("GET", "/classifier/review") => get(api::review),
        ("GET", "/accounts/{id}") => get(api::account),
        ("GET", "/numbers") => get(api::numbers),
        ("POST", "/numbers") => post(onboarding::onboard),
        ("GET", "/numbers/{id}") => get(api::number),
        ("GET", "/tenants") => get(tenants::list),
        ("DELETE", "/tenants/{id}") => delete(tenants::remove),
        _ => return None,
    };
    Some(h)
}

/// Builds the `/v1` router from [`ROUTES`], each route behind its scope.
pub fn v1_router(state: &AppState) -> Router<AppState> {
    let mut router = Router::new();
    for route in ROUTES {
        let Some(handler) = handler(route) else {
            tracing::error!(
                method = route.method,
                path = route.path,
                "a /v1 route has no handler"
            );
            continue;
        };
        let handler = match route.audit {
            Some(_) => handler.route_layer(axum::middleware::from_fn_with_state(
                (state.clone(), route),
                privacy::record,
            )),
            None => handler,
        };
        let guarded = match route.scope {
            Scope::Read => handler.route_layer(axum::middleware::from_fn_with_state(
                state.clone(),
                auth::read,
            )),
            Scope::Agent => handler.route_layer(axum::middleware::from_fn_with_state(
                state.clone(),
                auth::agent,
            )),
            Scope::Admin => handler.route_layer(axum::middleware::from_fn_with_state(
                state.clone(),
                auth::admin,
            )),
        };
        router = router.route(route.path, guarded);
    }
    router
}

/// The OpenAPI 3.1 document of the `/v1` API.
pub fn document() -> Value {
    let mut paths: Map<String, Value> = Map::new();
    for route in ROUTES {
        let mut operation = json!({
            "summary": route.summary,
            "security": [{"bearer": [route.scope.as_str()]}],
            "x-tandem-scope": route.scope.as_str(),
            "responses": {
                "200": {"description": "OK"},
                "202": {"description": "Accepted: stored, applied in order"},
                "400": {"description": "Bad request, with a readable reason"},
                "401": {"description": "Missing or wrong bearer token"},
                "403": {"description": "The token lacks the scope"},
                "429": {"description": "The token made more than `api.rate_limit` requests a second; see Retry-After"},
                "404": {"description": "Not found"},
                "409": {"description": "Conflict (for example the 24-hour window is closed)"}
            }
        });
        let params: Vec<Value> = route
            .path
            .split('/')
            .filter_map(|p| p.strip_prefix('{').and_then(|p| p.strip_suffix('}')))
            .map(|name| json!({"name": name, "in": "path", "required": true, "schema": {"type": "string"}}))
            .collect();
        if !params.is_empty() {
            operation["parameters"] = Value::Array(params);
        }
        let body = (route.body)();
        if !body.is_null() {
            operation["requestBody"] =
                json!({"required": false, "content": {"application/json": {"schema": body}}});
        }
        let item = paths
            .entry(format!("/v1{}", route.path))
            .or_insert_with(|| json!({}));
        item[route.method.to_lowercase()] = operation;
    }
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "Tandem agent API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Read conversations, act on them as a person, watch the queue and operate the hook outbox. Bearer tokens carry scopes: read, agent, admin."
        },
        "components": {"securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
        "paths": paths,
    })
}

/// `GET /openapi.json`.
pub async fn serve() -> axum::Json<Value> {
    axum::Json(document())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_route_has_a_handler_and_a_documented_operation() {
        let doc = document();
        for route in ROUTES {
            assert!(
                handler(route).is_some(),
                "{} {} has no handler",
                route.method,
                route.path
            );
            let op = &doc["paths"][format!("/v1{}", route.path)][route.method.to_lowercase()];
            assert_eq!(op["x-tandem-scope"], route.scope.as_str());
        }
        let documented: usize = doc["paths"]
            .as_object()
            .unwrap()
            .values()
            .map(|item| item.as_object().unwrap().len())
            .sum();
        assert_eq!(documented, ROUTES.len());
    }
}

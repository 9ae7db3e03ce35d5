//! The demo origin: an axum app that sits behind the edge Worker, echoes the identity the edge
//! vouched for (`X-Auth-*` headers), and keeps a few secret messages per user.
//!
//! It trusts `X-Auth-Subject` because only the edge can reach it (it listens on 127.0.0.1 and the
//! edge removes any `X-Auth-*` header a client sends). A real origin would also check that a
//! request came through the edge. An identity header that comes more than once is no identity.
//!
//! It answers CORS preflights (`OPTIONS` with `Origin` and `Access-Control-Request-Method`, which the
//! edge lets through without a token) with 200, allowing the caller's origin, `GET` and `POST`, and
//! the `Authorization` and `Content-Type` headers.
//!
//! | route | policy in `wrangler.toml` | answer |
//! |---|---|---|
//! | `GET /public/hello` | public | a greeting, no identity |
//! | `GET /api/me` | authenticated | the identity headers it received |
//! | `GET /api/messages` | authenticated | the caller's messages |
//! | `POST /api/messages` | authenticated | adds a message (text body, at most 1 KiB) |
//! | `GET /api/admin/messages` | role `admin` | how many messages each user has |

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, body::Bytes};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};

/// The most bytes one message may have.
pub const MAX_MESSAGE_BYTES: usize = 1024;

/// The most messages one user keeps (older ones are dropped).
pub const MAX_MESSAGES_PER_USER: usize = 20;

/// Messages by subject.
#[derive(Clone, Default)]
pub struct Messages {
    by_subject: Arc<Mutex<BTreeMap<String, Vec<String>>>>,
}

impl Messages {
    /// A store with a message for the demo users `alice` and `admin`.
    pub fn seeded() -> Self {
        let messages = Self::default();
        messages.add("alice", "the coffee machine on floor 3 works again");
        messages.add("admin", "rotate the keys before the audit");
        messages
    }

    fn add(&self, subject: &str, message: &str) {
        let mut by_subject = self.by_subject.lock().unwrap_or_else(PoisonError::into_inner);
        let list = by_subject.entry(subject.to_owned()).or_default();
        list.push(message.to_owned());
        if list.len() > MAX_MESSAGES_PER_USER {
            list.remove(0);
        }
    }

    fn of(&self, subject: &str) -> Vec<String> {
        let by_subject = self.by_subject.lock().unwrap_or_else(PoisonError::into_inner);
        by_subject.get(subject).cloned().unwrap_or_default()
    }

    fn counts(&self) -> BTreeMap<String, usize> {
        let by_subject = self.by_subject.lock().unwrap_or_else(PoisonError::into_inner);
        by_subject.iter().map(|(subject, list)| (subject.clone(), list.len())).collect()
    }
}

/// The identity the edge put in the request's `X-Auth-*` headers.
struct Identity {
    subject: String,
    roles: Vec<String>,
    issuer: Option<String>,
    token_id: Option<String>,
}

impl Identity {
    /// `None` when the request carries no `X-Auth-Subject` (it did not come through the edge), or
    /// any `X-Auth-*` header more than once or not as text (something other than the edge set it).
    fn from_headers(headers: &HeaderMap) -> Option<Self> {
        let text = |name: &str| -> Option<Option<String>> {
            let mut values = headers.get_all(name).iter();
            match (values.next(), values.next()) {
                (None, _) => Some(None),
                (Some(value), None) => value.to_str().ok().map(|value| Some(value.to_owned())),
                (Some(_), Some(_)) => None,
            }
        };
        let roles = text("x-auth-roles")?.unwrap_or_default();
        Some(Self {
            subject: text("x-auth-subject")?.filter(|subject| !subject.is_empty())?,
            roles: roles.split(',').filter(|role| !role.is_empty()).map(str::to_owned).collect(),
            issuer: text("x-auth-issuer")?,
            token_id: text("x-auth-token-id")?,
        })
    }
}

/// Answers 401 when the request has no identity from the edge.
fn with_identity(headers: &HeaderMap, answer: impl FnOnce(Identity) -> Response) -> Response {
    match Identity::from_headers(headers) {
        Some(identity) => answer(identity),
        None => (StatusCode::UNAUTHORIZED, Json(json!({"error": "no identity: call this through the edge"})))
            .into_response(),
    }
}

async fn hello() -> Json<Value> {
    Json(json!({"message": "hello from the demo origin; this route is public"}))
}

async fn me(headers: HeaderMap) -> Response {
    with_identity(&headers, |identity| {
        Json(json!({
            "subject": identity.subject,
            "roles": identity.roles,
            "issuer": identity.issuer,
            "token_id": identity.token_id,
        }))
        .into_response()
    })
}

async fn list_messages(State(messages): State<Messages>, headers: HeaderMap) -> Response {
    with_identity(&headers, |identity| {
        Json(json!({"subject": identity.subject, "messages": messages.of(&identity.subject)})).into_response()
    })
}

async fn add_message(State(messages): State<Messages>, headers: HeaderMap, body: Bytes) -> Response {
    with_identity(&headers, |identity| {
        let Ok(text) = std::str::from_utf8(&body) else {
            return (StatusCode::BAD_REQUEST, Json(json!({"error": "the message must be UTF-8 text"}))).into_response();
        };
        let text = text.trim();
        if text.is_empty() {
            return (StatusCode::BAD_REQUEST, Json(json!({"error": "the message is empty"}))).into_response();
        }
        messages.add(&identity.subject, text);
        (StatusCode::CREATED, Json(json!({"subject": identity.subject, "messages": messages.of(&identity.subject)})))
            .into_response()
    })
}

async fn message_counts(State(messages): State<Messages>, headers: HeaderMap) -> Response {
    with_identity(&headers, |_| Json(json!({"messages_by_user": messages.counts()})).into_response())
}

/// Answers a CORS preflight itself; lets every other request through.
async fn preflight(request: Request, next: Next) -> Response {
    let headers = request.headers();
    let origin = headers.get(header::ORIGIN).cloned();
    let preflight = request.method() == Method::OPTIONS && headers.contains_key(header::ACCESS_CONTROL_REQUEST_METHOD);
    match origin {
        Some(origin) if preflight => (
            StatusCode::OK,
            [
                (header::ACCESS_CONTROL_ALLOW_ORIGIN, origin),
                (header::ACCESS_CONTROL_ALLOW_METHODS, HeaderValue::from_static("GET, POST")),
                (header::ACCESS_CONTROL_ALLOW_HEADERS, HeaderValue::from_static("authorization, content-type")),
                (header::ACCESS_CONTROL_MAX_AGE, HeaderValue::from_static("600")),
                (header::VARY, HeaderValue::from_static("origin")),
            ],
        )
            .into_response(),
        _ => next.run(request).await,
    }
}

/// The demo origin's routes.
pub fn app(messages: Messages) -> Router {
    Router::new()
        .route("/public/hello", get(hello))
        .route("/api/me", get(me))
        .route("/api/messages", get(list_messages).post(add_message))
        .route("/api/admin/messages", get(message_counts))
        .layer(DefaultBodyLimit::max(MAX_MESSAGE_BYTES))
        .layer(middleware::from_fn(preflight))
        .with_state(messages)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::Request;
    use tower::ServiceExt as _;

    async fn call(app: &Router, method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> (u16, Value) {
        let mut request = Request::builder().method(method).uri(path);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = app.clone().oneshot(request.body(Body::from(body.to_owned())).unwrap()).await.unwrap();
        let status = response.status().as_u16();
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 20).await.unwrap();
        (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
    }

    const ALICE: &[(&str, &str)] = &[("x-auth-subject", "alice"), ("x-auth-roles", "reader,writer")];

    #[tokio::test]
    async fn echoes_the_identity_from_the_edge() {
        let app = app(Messages::seeded());
        let (status, body) = call(&app, "GET", "/api/me", ALICE, "").await;
        assert_eq!(status, 200);
        assert_eq!(body["subject"], "alice");
        assert_eq!(body["roles"], json!(["reader", "writer"]));
        let (status, _) = call(&app, "GET", "/api/me", &[], "").await;
        assert_eq!(status, 401, "no identity, no answer");
        let (status, body) = call(&app, "GET", "/public/hello", &[], "").await;
        assert_eq!(status, 200);
        assert!(body["message"].is_string());
        let twice = [("x-auth-subject", "alice"), ("x-auth-subject", "admin")];
        let (status, _) = call(&app, "GET", "/api/me", &twice, "").await;
        assert_eq!(status, 401, "an identity header twice is no identity");
        let (status, _) = call(&app, "GET", "/api/me", &[ALICE[0], ALICE[1], ("x-auth-roles", "admin")], "").await;
        assert_eq!(status, 401, "nor are roles twice");
    }

    #[tokio::test]
    async fn answers_cors_preflights() {
        let app = app(Messages::seeded());
        let preflight = [("origin", "https://app.test"), ("access-control-request-method", "GET")];
        let request = Request::builder().method("OPTIONS").uri("/api/me");
        let request = preflight.iter().fold(request, |request, (name, value)| request.header(*name, *value));
        let response = app.clone().oneshot(request.body(Body::empty()).unwrap()).await.unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()["access-control-allow-origin"], "https://app.test");
        let (status, _) = call(&app, "OPTIONS", "/api/me", &preflight[..1], "").await;
        assert_eq!(status, 405, "a plain OPTIONS is no preflight");
    }

    #[tokio::test]
    async fn keeps_messages_per_user() {
        let app = app(Messages::seeded());
        let (status, body) = call(&app, "POST", "/api/messages", ALICE, "lunch at noon").await;
        assert_eq!(status, 201);
        assert_eq!(body["messages"].as_array().map(Vec::len), Some(2));
        let (_, body) = call(&app, "GET", "/api/messages", &[("x-auth-subject", "bob")], "").await;
        assert_eq!(body["messages"], json!([]), "bob does not see alice's messages");
        let (status, _) = call(&app, "POST", "/api/messages", ALICE, "   ").await;
        assert_eq!(status, 400);
        let (status, _) = call(&app, "POST", "/api/messages", ALICE, &"x".repeat(MAX_MESSAGE_BYTES + 1)).await;
        assert_eq!(status, 413);
        for i in 0..MAX_MESSAGES_PER_USER {
            call(&app, "POST", "/api/messages", ALICE, &format!("note {i}")).await;
        }
        let (_, body) = call(&app, "GET", "/api/admin/messages", ALICE, "").await;
        assert_eq!(body["messages_by_user"], json!({"admin": 1, "alice": MAX_MESSAGES_PER_USER}));
    }
}

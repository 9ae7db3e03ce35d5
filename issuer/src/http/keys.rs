//! The admin endpoints for signing keys: list, rotate on demand, revoke.

use super::ApiError;
use super::extract::Admin;
use crate::domain::keys::Rotation;
use crate::state::AppState;
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// `/admin/keys`, `/admin/keys/rotate`, `/admin/keys/{kid}/revoke`.
pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(list_keys)).routes(routes!(rotate_keys)).routes(routes!(revoke_key))
}

/// `GET /admin/keys`: every key with its lifecycle times.
#[utoipa::path(
    get,
    path = "/admin/keys",
    tag = "admin",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Every key with its state and times", content_type = "application/json"),
        (status = 401, description = "No valid admin token"),
        (status = 403, description = "The token lacks the admin role"),
    )
)]
async fn list_keys(admin: Admin, State(state): State<AppState>) -> Result<Response, ApiError> {
    admin.audit("list keys");
    let keys = state.keys().list().await?;
    Ok(Json(serde_json::json!({ "keys": keys })).into_response())
}

/// `POST /admin/keys/rotate`: 200 when a next key took over, 202 when one is scheduled to.
#[utoipa::path(
    post,
    path = "/admin/keys/rotate",
    tag = "admin",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "A next key took over", content_type = "application/json"),
        (status = 202, description = "A next key is published and scheduled to take over", content_type = "application/json"),
        (status = 401, description = "No valid admin token"),
        (status = 409, description = "Too many keys are published"),
    )
)]
async fn rotate_keys(admin: Admin, State(state): State<AppState>) -> Result<Response, ApiError> {
    admin.audit("rotate");
    let rotation = state.rotate_keys().await?;
    let status = match rotation {
        Rotation::Rotated { .. } => StatusCode::OK,
        Rotation::Scheduled { .. } => StatusCode::ACCEPTED,
    };
    Ok((status, Json(rotation)).into_response())
}

/// `POST /admin/keys/{kid}/revoke`: emergency revocation.
#[utoipa::path(
    post,
    path = "/admin/keys/{kid}/revoke",
    tag = "admin",
    security(("bearer" = [])),
    params(("kid" = String, Path, description = "The key id (RFC 7638 thumbprint)")),
    responses(
        (status = 200, description = "The key left the JWKS", content_type = "application/json"),
        (status = 400, description = "Not a key id"),
        (status = 401, description = "No valid admin token"),
        (status = 404, description = "No such key"),
    )
)]
async fn revoke_key(
    admin: Admin,
    State(state): State<AppState>,
    Path(kid): Path<String>,
) -> Result<Response, ApiError> {
    admin.audit("revoke");
    if !is_key_id(&kid) {
        return Err(ApiError::InvalidKid);
    }
    Ok(Json(state.revoke_key(&kid).await?).into_response())
}

/// An RFC 7638 SHA-256 thumbprint: 43 base64url characters.
fn is_key_id(kid: &str) -> bool {
    kid.len() == 43 && kid.bytes().all(|byte| byte.is_ascii_alphanumeric() || byte == b'-' || byte == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_ids() {
        assert!(is_key_id("oKIywvGUpTVTyxMQ3bwIIeQUudfr_CkLMjCE19ECD-U"));
        assert!(!is_key_id("oKIywvGUpTVTyxMQ3bwIIeQUudfr_CkLMjCE19ECD-"));
        assert!(!is_key_id("oKIywvGUpTVTyxMQ3bwIIeQUudfr_CkLMjCE19ECD+U"));
        assert!(!is_key_id("../../../../etc/passwd"));
    }
}

//! API keys: `/api-keys`, `/api-keys/{id}`.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use serde::{Deserialize, Serialize};
use serde_json::json;
use siteward_store::*;

use super::common::{audit, check_len, created, no_content, ApiResult};
use super::error::ApiError;
use super::extract::{Json, Path, Principal};
use super::openapi::{delete, get, post, Access, Api};
use crate::AdminState;

/// An API key to create.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateApiKey {
    /// A label.
    #[serde(default)]
    pub name: String,
    /// Expiry (RFC 3339), if any.
    pub expires_at: Option<chrono::DateTime<chrono::Utc>>,
    /// Administrators only: the owner's login name (default: yourself).
    pub username: Option<String>,
}

/// A created key: the secret appears only in this response.
#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct CreatedApiKey {
    #[serde(flatten)]
    key: ApiKey,
    /// The full key: `Authorization: Bearer <key>`.
    secret: String,
}

async fn list_api_keys(
    State(s): State<AdminState>,
    p: Principal,
) -> ApiResult<axum::Json<Vec<ApiKey>>> {
    Ok(axum::Json(s.store.list_api_keys(p.uid_filter()).await?))
}

async fn create_api_key(
    State(s): State<AdminState>,
    p: Principal,
    Json(b): Json<CreateApiKey>,
) -> ApiResult<Response> {
    check_len("name", &b.name, 0, 200)?;
    let owner = match b.username {
        Some(u) if p.is_admin => u,
        Some(_) => {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                "only administrators create keys for others",
            )
            .field("username"))
        }
        None => p.username.clone(),
    };
    if b.expires_at.is_some_and(|t| t <= chrono::Utc::now()) {
        return Err(ApiError::invalid(
            "expires_at",
            "expires_at must be in the future",
        ));
    }
    let (key, secret) = s
        .store
        .create_api_key(&owner, &b.name, b.expires_at)
        .await?;
    audit(
        &s,
        &p.actor(),
        "create",
        "api_key",
        key.id,
        json!({ "owner": owner, "prefix": key.prefix }),
    )
    .await;
    Ok(created(CreatedApiKey { key, secret }))
}

async fn delete_api_key(
    State(s): State<AdminState>,
    p: Principal,
    Path(id): Path<i64>,
) -> ApiResult<Response> {
    s.store.delete_api_key(ApiKeyId(id), p.uid_filter()).await?;
    audit(&s, &p.actor(), "delete", "api_key", id, json!({})).await;
    Ok(no_content())
}

/// Registers the routes above in the route table (router and OpenAPI document).
pub(super) fn routes(a: &mut Api) {
    use Access::*;
    a.op::<(), Vec<ApiKey>>(
        get(list_api_keys),
        "/api-keys",
        "List API keys (yours, or all for administrators)",
        "accounts",
        User,
        200,
    );
    a.op::<CreateApiKey, CreatedApiKey>(
        post(create_api_key),
        "/api-keys",
        "Create an API key (shown once)",
        "accounts",
        User,
        201,
    );
    a.op::<(), ()>(
        delete(delete_api_key),
        "/api-keys/{id}",
        "Revoke an API key",
        "accounts",
        User,
        204,
    );
}

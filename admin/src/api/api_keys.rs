//! API keys: `/api-keys`, `/api-keys/{id}`.

use axum::extract::State;
use axum::response::Response;
use siteward_store::*;

use super::common::{created, no_content, ApiResult};
use super::extract::{Json, Path, Principal};
use super::openapi::{delete, get, post, Access, Api};
use crate::service::api_keys as service;
pub use crate::service::api_keys::{CreateApiKey, CreatedApiKey};
use crate::AdminState;

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
    Ok(created(service::create(&s.store, &p, b).await?))
}

async fn delete_api_key(
    State(s): State<AdminState>,
    p: Principal,
    Path(id): Path<ApiKeyId>,
) -> ApiResult<Response> {
    service::delete(&s.store, &p, id).await?;
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

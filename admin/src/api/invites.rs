//! Invites: `/invites`, `/invites/{id}`; issuing a one-time link (e-mailed or handed back), which
//! password resets share.

use axum::extract::State;
use axum::response::Response;
use siteward_store::resources;

use super::common::{created, no_content, ApiResult};
use super::extract::{Admin, Json, Path};
use super::openapi::{delete, get, post, Access, Api};
use crate::service::invites as service;
pub use crate::service::invites::{CreateInvite, IssuedToken};
use crate::AdminState;

async fn list_invites(
    State(s): State<AdminState>,
    _: Admin,
) -> ApiResult<axum::Json<Vec<resources::TokenInfo>>> {
    Ok(axum::Json(s.store.list_invites().await?))
}

async fn create_invite(
    State(s): State<AdminState>,
    Admin(p): Admin,
    Json(b): Json<CreateInvite>,
) -> ApiResult<Response> {
    Ok(created(service::create(&s, &p.actor(), b).await?))
}

async fn delete_invite(
    State(s): State<AdminState>,
    Admin(p): Admin,
    Path(id): Path<uuid::Uuid>,
) -> ApiResult<Response> {
    service::delete(&s, &p.actor(), id).await?;
    Ok(no_content())
}

/// Registers the routes above in the route table (router and OpenAPI document).
pub(super) fn routes(a: &mut Api) {
    use Access::*;
    a.op::<(), Vec<resources::TokenInfo>>(
        get(list_invites),
        "/invites",
        "List invites",
        "accounts",
        Admin,
        200,
    );
    a.op::<CreateInvite, IssuedToken>(
        post(create_invite),
        "/invites",
        "Invite someone (valid 24 h)",
        "accounts",
        Admin,
        201,
    );
    a.op::<(), ()>(
        delete(delete_invite),
        "/invites/{id}",
        "Revoke an invite",
        "accounts",
        Admin,
        204,
    );
}

//! Password resets: `/password-resets` (issue a link), `/password-resets/{token}` (use it).

use axum::extract::State;
use axum::response::Response;

use super::common::{created, no_content, ApiResult};
use super::extract::{Admin, ClientAddr, Json, Path};
use super::invites::IssuedToken;
use super::openapi::{post, Access, Api};
use crate::service::resets as service;
pub use crate::service::resets::{CreateReset, UseReset};
use crate::AdminState;

async fn create_reset(
    State(s): State<AdminState>,
    Admin(p): Admin,
    Json(b): Json<CreateReset>,
) -> ApiResult<Response> {
    Ok(created(service::create(&s, &p.actor(), b).await?))
}

async fn use_reset(
    State(s): State<AdminState>,
    ClientAddr(addr): ClientAddr,
    Path(token): Path<String>,
    Json(b): Json<UseReset>,
) -> ApiResult<Response> {
    service::confirm(&s, &token, b.password, addr).await?;
    Ok(no_content())
}

/// Registers the routes above in the route table (router and OpenAPI document).
pub(super) fn routes(a: &mut Api) {
    use Access::*;
    a.op::<CreateReset, IssuedToken>(
        post(create_reset),
        "/password-resets",
        "Issue a password-reset link (valid 1 h)",
        "accounts",
        Admin,
        201,
    );
    a.op::<UseReset, ()>(
        post(use_reset),
        "/password-resets/{token}",
        "Set a new password with a reset token",
        "accounts",
        Public,
        204,
    );
}

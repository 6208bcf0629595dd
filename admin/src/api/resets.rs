//! Password resets: `/password-resets` (issue a link), `/password-resets/{token}` (use it).

use axum::extract::State;
use axum::response::Response;
use serde::Deserialize;
use serde_json::json;
use siteward_store::resources::Actor;

use super::common::{audit, check_len, created, no_content, ApiResult};
use super::error::ApiError;
use super::extract::{Admin, ClientAddr, Json, Path};
use super::invites::{issue, IssuedToken};
use super::openapi::{post, Access, Api};
use crate::AdminState;

/// Whose password to reset.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateReset {
    /// Login name.
    pub username: String,
}

/// A new password for a reset token.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UseReset {
    /// The new password.
    pub password: String,
}

async fn create_reset(
    State(s): State<AdminState>,
    Admin(p): Admin,
    Json(b): Json<CreateReset>,
) -> ApiResult<Response> {
    let user = s.store.user(&b.username).await?;
    let (info, token) = s
        .store
        .create_password_reset(user.uid_number, chrono::Utc::now())
        .await?;
    audit(
        &s,
        &p.actor(),
        "create",
        "password_reset",
        info.id,
        json!({ "username": user.username }),
    )
    .await;
    let link = format!("{}/reset-password/{token}", s.public_url);
    let issued = issue(
        &s,
        info,
        token,
        link,
        user.mail.as_deref(),
        "Reset your siteward password",
    )
    .await?;
    Ok(created(issued))
}

async fn use_reset(
    State(s): State<AdminState>,
    ClientAddr(addr): ClientAddr,
    Path(token): Path<String>,
    Json(b): Json<UseReset>,
) -> ApiResult<Response> {
    if s.throttle.blocked(addr) {
        return Err(ApiError::rate_limited());
    }
    check_len("password", &b.password, 8, 1024)?;
    match s
        .store
        .consume_password_reset(&token, b.password, chrono::Utc::now())
        .await
    {
        Ok(uid) => {
            let actor = Actor {
                uid: Some(uid),
                name: None,
                remote_addr: addr,
            };
            audit(&s, &actor, "reset_password", "user", uid, json!({})).await;
            Ok(no_content())
        }
        Err(e) => {
            s.throttle.fail(addr);
            Err(e.into())
        }
    }
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

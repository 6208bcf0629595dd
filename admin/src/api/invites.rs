//! Invites: `/invites`, `/invites/{id}`; issuing a one-time link (e-mailed or handed back), which
//! password resets share.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use serde::{Deserialize, Serialize};
use serde_json::json;
use siteward_store::resources;

use super::common::{audit, check_mail, created, no_content, ApiResult};
use super::error::ApiError;
use super::extract::{Admin, Json, Path};
use super::openapi::{delete, get, post, Access, Api};
use crate::AdminState;

/// An invite to create.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateInvite {
    /// The e-mail the invited user will have.
    pub email: String,
}

/// A token handed out once, with the link to pass on.
#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct IssuedToken {
    #[serde(flatten)]
    info: resources::TokenInfo,
    /// The token (shown only here), when it was not e-mailed.
    #[serde(skip_serializing_if = "Option::is_none")]
    token: Option<String>,
    /// The link that uses it, when it was not e-mailed.
    #[serde(skip_serializing_if = "Option::is_none")]
    link: Option<String>,
    /// Where the link was e-mailed (`smtp_url` set), instead of being shown.
    #[serde(skip_serializing_if = "Option::is_none")]
    sent_to: Option<String>,
}

/// E-mails the link when SMTP is configured and the recipient is known; else hands it back.
pub(super) async fn issue(
    s: &AdminState,
    info: resources::TokenInfo,
    token: String,
    link: String,
    to: Option<&str>,
    subject: &str,
) -> ApiResult<IssuedToken> {
    if let Some(to) = to {
        let body = format!(
            "{subject}:\n\n{link}\n\nThe link works once and expires at {}.\n",
            info.expires_at
        );
        match crate::mail::send(&s.store, to, subject, body).await {
            Ok(true) => {
                return Ok(IssuedToken {
                    info,
                    token: None,
                    link: None,
                    sent_to: Some(to.to_owned()),
                });
            }
            Ok(false) => {}
            Err(e) => {
                tracing::warn!(error = %e, "e-mailing a link failed");
                return Err(ApiError::new(
                    StatusCode::BAD_GATEWAY,
                    "mail_failed",
                    format!("{e}; the link was not sent"),
                ));
            }
        }
    }
    Ok(IssuedToken {
        info,
        token: Some(token),
        link: Some(link),
        sent_to: None,
    })
}

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
    check_mail("email", &b.email)?;
    let (info, token) = s.store.create_invite(&b.email, chrono::Utc::now()).await?;
    audit(
        &s,
        &p.actor(),
        "create",
        "invite",
        info.id,
        json!({ "email": b.email }),
    )
    .await;
    let link = format!("{}/register?invite={token}", s.public_url);
    let issued = issue(
        &s,
        info,
        token,
        link,
        Some(&b.email),
        "You are invited to siteward",
    )
    .await?;
    Ok(created(issued))
}

async fn delete_invite(
    State(s): State<AdminState>,
    Admin(p): Admin,
    Path(id): Path<uuid::Uuid>,
) -> ApiResult<Response> {
    s.store.delete_invite(id).await?;
    audit(&s, &p.actor(), "delete", "invite", id, json!({})).await;
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

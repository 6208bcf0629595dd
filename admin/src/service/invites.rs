//! Invites: issue (e-mailed when SMTP is set up, else handed back once), revoke; and the
//! one-time-link delivery password resets share.

use serde::{Deserialize, Serialize};
use siteward_store::resources;
use siteward_store::Actor;

use super::rules::check_mail;
use super::{ApiError, Result};
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

impl IssuedToken {
    /// The link to pass on, when it was not e-mailed.
    pub fn link(&self) -> Option<&str> {
        self.link.as_deref()
    }

    /// Where the link was e-mailed, if it was.
    pub fn sent_to(&self) -> Option<&str> {
        self.sent_to.as_deref()
    }
}

/// E-mails the link when SMTP is configured and the recipient is known; else hands it back.
pub async fn issue(
    s: &AdminState,
    info: resources::TokenInfo,
    token: String,
    link: String,
    to: Option<&str>,
    subject: &str,
) -> Result<IssuedToken> {
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
                    axum::http::StatusCode::BAD_GATEWAY,
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

/// Issues an invite for `email`, valid for 24 hours.
pub async fn create(s: &AdminState, by: &Actor, b: CreateInvite) -> Result<IssuedToken> {
    check_mail("email", &b.email)?;
    let (info, token) = s
        .store
        .create_invite(&b.email, chrono::Utc::now(), by)
        .await?;
    let link = format!("{}/register?invite={token}", s.public_url);
    issue(
        s,
        info,
        token,
        link,
        Some(&b.email),
        "You are invited to siteward",
    )
    .await
}

/// Revokes an invite.
pub async fn delete(s: &AdminState, by: &Actor, id: uuid::Uuid) -> Result<()> {
    Ok(s.store.delete_invite(id, by).await?)
}

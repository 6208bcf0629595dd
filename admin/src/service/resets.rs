//! Password resets: an administrator issues a link for someone; anyone asks for their own by
//! e-mail (the answer never tells whether the account exists); a link is used once.

use std::net::IpAddr;

use serde::Deserialize;
use siteward_store::{Actor, Uid, User};

use super::invites::{issue, IssuedToken};
use super::rules::check_password;
use super::{ApiError, Result};
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

/// Issues a reset link for a user (administrators): e-mailed when possible, else handed back.
pub async fn create(s: &AdminState, by: &Actor, b: CreateReset) -> Result<IssuedToken> {
    let user = s.store.user(&b.username).await?;
    let (info, token) = s
        .store
        .create_password_reset(user.uid_number, chrono::Utc::now(), by)
        .await?;
    let link = format!("{}/reset-password/{token}", s.public_url);
    issue(
        s,
        info,
        token,
        link,
        user.mail.as_deref(),
        "Reset your siteward password",
    )
    .await
}

/// A self-service reset for `user`, asked for from `addr`: at most one mail per account per
/// five minutes. Returns whether a mail went out. The caller answers the same either way.
pub async fn mail_own(s: &AdminState, user: &User, addr: Option<IpAddr>) -> Result<bool> {
    let Some(to) = user.mail.as_deref() else {
        return Ok(false);
    };
    let account = user.username.to_string();
    if s.login_throttle.reset_mail.blocked(&account) {
        return Ok(false);
    }
    s.login_throttle.reset_mail.fail(account);
    // Nobody is signed in: the audit row names no user, only the address that asked.
    let by = Actor {
        remote_addr: addr,
        via: siteward_store::Via::Public,
        ..Actor::default()
    };
    let (info, token) = s
        .store
        .create_password_reset(user.uid_number, chrono::Utc::now(), &by)
        .await?;
    let link = format!("{}/reset-password/{token}", s.public_url);
    let body = format!(
        "Someone (hopefully you) asked to reset the password of {} at {}.\n\n{link}\n\n\
         The link works once and expires at {}. If it was not you, ignore this mail.\n",
        user.username, s.public_url, info.expires_at
    );
    crate::mail::send(&s.store, to, "Reset your siteward password", body)
        .await
        .map_err(|e| {
            ApiError::new(
                axum::http::StatusCode::BAD_GATEWAY,
                "mail_failed",
                e.to_string(),
            )
        })
}

/// Uses a reset token from `addr`: sets the password and ends every session of the user.
/// Failures count as failed sign-ins of the address (guessing tokens is guessing
/// credentials); while the address is over its limit no token is tried (429).
pub async fn confirm(
    s: &AdminState,
    token: &str,
    password: String,
    addr: Option<IpAddr>,
) -> Result<Uid> {
    if addr.is_some_and(|a| s.login_throttle.address.blocked(&a)) {
        return Err(ApiError::rate_limited());
    }
    check_password("password", &password)?;
    match s
        .store
        .consume_password_reset(token, password, chrono::Utc::now(), addr)
        .await
    {
        Ok(uid) => Ok(uid),
        Err(e) => {
            if let Some(a) = addr {
                s.login_throttle.address.fail(a);
            }
            Err(e.into())
        }
    }
}

//! Account use cases of the person signing up or signed in, shared by the JSON API and the
//! pages: registration and one's own password change, with their throttles. (Profile changes
//! are [`super::users::update_own`]; API keys are [`super::api_keys`]; resets are
//! [`super::resets`].)

use std::net::IpAddr;

use siteward_store::resources::Actor;
use siteward_store::User;

use super::users::CreateUser;
use super::ApiError;
use crate::AdminState;

/// Self-registration from `addr`: the very first account becomes an administrator, one with a
/// valid invite is active, any other waits for approval (and is deleted after
/// `http.pending_account_days` if nobody approves it).
///
/// Every attempt counts against the address's registration budget
/// (`http.registrations_per_hour`); a wrong invite also counts as a failed sign-in of the
/// address, since guessing invites is guessing credentials.
pub async fn register(
    s: &AdminState,
    body: CreateUser,
    addr: Option<IpAddr>,
) -> Result<User, ApiError> {
    if let Some(a) = addr {
        if s.login_throttle.registration.blocked(&a) || s.login_throttle.address.blocked(&a) {
            return Err(ApiError::new(
                axum::http::StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                "too many registrations from your address; try again later",
            ));
        }
        s.login_throttle.registration.fail(a);
    }
    if body.admin {
        return Err(ApiError::invalid(
            "admin",
            "admin cannot be requested when registering",
        ));
    }
    body.check()?;
    let invite = body.invite.clone();
    let user = match s
        .store
        .register(body.new_user(), invite.as_deref(), chrono::Utc::now(), addr)
        .await
    {
        Ok(user) => user,
        Err(e) => {
            if let (Some(a), Some(_)) = (addr, &invite) {
                s.login_throttle.address.fail(a);
            }
            return Err(e.into());
        }
    };
    Ok(user)
}

/// Changes `user`'s own password after checking the current one. Wrong current passwords
/// count against the account and the address like failed sign-ins, and while either is over
/// its limit no password is checked at all (429). Every other session of the user ends; the
/// browser session `keep` (the cookie value) stays.
pub async fn change_own_password(
    s: &AdminState,
    user: &User,
    old_password: String,
    new_password: String,
    keep: Option<&str>,
    actor: &Actor,
) -> Result<(), ApiError> {
    let account = user.username.to_ascii_lowercase();
    let addr = actor.remote_addr;
    if s.login_throttle.account.blocked(&account)
        || addr.is_some_and(|a| s.login_throttle.address.blocked(&a))
    {
        return Err(ApiError::new(
            axum::http::StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            "too many wrong passwords; wait a few minutes",
        ));
    }
    let ok = siteward_store::password::verify_password(old_password, user.password_hash.clone())
        .await
        .map_err(ApiError::from)?;
    if !ok {
        s.login_throttle.account.fail(account);
        if let Some(a) = addr {
            s.login_throttle.address.fail(a);
        }
        return Err(ApiError::invalid(
            "old_password",
            "old_password is not correct",
        ));
    }
    s.store
        .set_password_keeping(&user.username, new_password, keep, actor)
        .await?;
    Ok(())
}

//! Users and one's own account: `/users`, `/users/{uid}`, `/users/{uid}/password`, and
//! `/register`, `/me`, `/me/password`.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use serde::{Deserialize, Serialize};
use serde_json::json;
use siteward_store::resources::UserPatch;
use siteward_store::*;

use super::common::{
    audit, check_len, check_mail, check_ssh_keys, created, fields, no_content, nullable, ApiResult,
    ListResponse,
};
use super::error::ApiError;
use super::extract::{encode_cursor, Admin, ClientAddr, Json, PageQuery, Path, Principal, Q};
use super::openapi::{delete, get, patch, post, put, Access, Api};
use crate::AdminState;

/// A user to create (administrators) or register (anyone).
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateUser {
    /// POSIX login name.
    pub username: String,
    /// Password (8-1024 characters).
    pub password: String,
    /// Given name.
    pub given_name: Option<String>,
    /// Surname.
    pub sn: Option<String>,
    /// Common name (default "given surname").
    pub cn: Option<String>,
    /// E-mail (fixed by the invite when registering with one).
    pub mail: Option<String>,
    /// OpenSSH public keys.
    #[serde(default)]
    pub ssh_public_keys: Vec<String>,
    /// Registration only: an invite token.
    pub invite: Option<String>,
    /// Administrators only: make the user an administrator.
    #[serde(default)]
    pub admin: bool,
}

/// A user as the API shows it (no password hash, ever).
#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct UserView {
    #[serde(flatten)]
    user: User,
    /// Groups by name.
    groups: Vec<String>,
}

pub(super) fn view(s: &AdminState, user: User) -> UserView {
    let snap = s.store.snapshot();
    let groups = snap
        .identity
        .groups_of
        .get(&user.uid_number)
        .map(|gids| {
            gids.iter()
                .filter_map(|g| snap.identity.groups.get(g))
                .map(|g| g.cn.clone())
                .collect()
        })
        .unwrap_or_default();
    UserView { user, groups }
}

impl CreateUser {
    pub(crate) fn check(&self) -> ApiResult<()> {
        PosixName::parse(&self.username).map_err(|_| ApiError::invalid("username", "username must be a POSIX name: a-z, 0-9, _ . -, starting with a letter or _, at most 32"))?;
        check_len("password", &self.password, 8, 1024)?;
        if let Some(m) = &self.mail {
            check_mail("mail", m)?;
        }
        for (f, v) in [
            ("given_name", &self.given_name),
            ("sn", &self.sn),
            ("cn", &self.cn),
        ] {
            if let Some(v) = v {
                check_len(f, v, 1, 256)?;
            }
        }
        check_ssh_keys(&self.ssh_public_keys)
    }
    pub(crate) fn new_user(self) -> NewUser {
        NewUser {
            username: self.username,
            cn: self.cn,
            sn: self.sn,
            given_name: self.given_name,
            mail: self.mail,
            ssh_public_keys: self.ssh_public_keys,
            password: Some(self.password),
            status: None,
            admin: self.admin,
        }
    }
}

/// Profile changes. `status` only for administrators.
#[derive(Debug, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateUser {
    /// Common name.
    pub cn: Option<String>,
    /// Surname.
    pub sn: Option<String>,
    /// Given name.
    #[serde(default, deserialize_with = "nullable")]
    pub given_name: Option<Option<String>>,
    /// E-mail.
    #[serde(default, deserialize_with = "nullable")]
    pub mail: Option<Option<String>>,
    /// SSH keys (replaces the list).
    pub ssh_public_keys: Option<Vec<String>>,
    /// `pending`, `active` or `suspended` (administrators).
    pub status: Option<UserStatus>,
}

impl UpdateUser {
    pub(crate) fn check(&self) -> ApiResult<()> {
        for (f, v) in [("cn", &self.cn), ("sn", &self.sn)] {
            if let Some(v) = v {
                check_len(f, v, 1, 256)?;
            }
        }
        if let Some(Some(g)) = &self.given_name {
            check_len("given_name", g, 1, 256)?;
        }
        if let Some(Some(m)) = &self.mail {
            check_mail("mail", m)?;
        }
        if let Some(keys) = &self.ssh_public_keys {
            check_ssh_keys(keys)?;
        }
        Ok(())
    }
    pub(crate) fn patch(self) -> UserPatch {
        UserPatch {
            cn: self.cn,
            sn: self.sn,
            given_name: self.given_name,
            mail: self.mail,
            ssh_public_keys: self.ssh_public_keys,
            status: self.status,
        }
    }
}

/// A new password.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SetPassword {
    /// The current password (required when changing one's own).
    pub old_password: Option<String>,
    /// The new password.
    pub password: String,
}

async fn register(
    State(s): State<AdminState>,
    ClientAddr(addr): ClientAddr,
    Json(b): Json<CreateUser>,
) -> ApiResult<Response> {
    let user = crate::accounts::register(&s, b, addr).await?;
    Ok(created(view(&s, user)))
}

async fn me(State(s): State<AdminState>, p: Principal) -> ApiResult<axum::Json<UserView>> {
    Ok(axum::Json(view(&s, s.store.user_by_uid(p.uid).await?)))
}

async fn update_me(
    State(s): State<AdminState>,
    p: Principal,
    Json(b): Json<UpdateUser>,
) -> ApiResult<axum::Json<UserView>> {
    if b.status.is_some() {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "you cannot change your own status",
        )
        .field("status"));
    }
    b.check()?;
    let details = fields(&b);
    let user = s.store.update_user(p.uid, b.patch()).await?;
    audit(&s, &p.actor(), "update", "user", p.uid, details).await;
    Ok(axum::Json(view(&s, user)))
}

async fn change_my_password(
    State(s): State<AdminState>,
    headers: axum::http::HeaderMap,
    p: Principal,
    Json(b): Json<SetPassword>,
) -> ApiResult<Response> {
    let current = s.store.user_by_uid(p.uid).await?;
    let old = b
        .old_password
        .ok_or_else(|| ApiError::invalid("old_password", "old_password is required"))?;
    // Sessions opened with the old password end; a browser changing it keeps its own.
    let keep = match crate::api::extract::live_session(&s, &headers).await? {
        Some((id, info)) if info.uid == p.uid => Some(id),
        _ => None,
    };
    crate::accounts::change_own_password(
        &s,
        &current,
        old,
        b.password,
        keep.as_deref(),
        &p.actor(),
    )
    .await?;
    Ok(no_content())
}

async fn list_users(
    State(s): State<AdminState>,
    _: Admin,
    Q(q): Q<PageQuery>,
) -> ApiResult<axum::Json<ListResponse<UserView>>> {
    let l = s.store.list_users(q.page()?).await?;
    let next = l.next_after;
    Ok(axum::Json(ListResponse {
        items: l.items.into_iter().map(|u| view(&s, u)).collect(),
        next_cursor: next.map(encode_cursor),
    }))
}

async fn get_user(
    State(s): State<AdminState>,
    p: Principal,
    Path(uid): Path<i32>,
) -> ApiResult<axum::Json<UserView>> {
    if !p.is_admin && p.uid != Uid(uid) {
        return Err(ApiError::not_found("user"));
    }
    Ok(axum::Json(view(&s, s.store.user_by_uid(Uid(uid)).await?)))
}

async fn create_user(
    State(s): State<AdminState>,
    Admin(p): Admin,
    Json(b): Json<CreateUser>,
) -> ApiResult<Response> {
    if b.invite.is_some() {
        return Err(ApiError::invalid(
            "invite",
            "invite is for registration; administrators create users directly",
        ));
    }
    b.check()?;
    let user = s.store.create_user(b.new_user()).await?;
    audit(
        &s,
        &p.actor(),
        "create",
        "user",
        user.uid_number,
        json!({ "username": user.username }),
    )
    .await;
    Ok(created(view(&s, user)))
}

async fn update_user(
    State(s): State<AdminState>,
    Admin(p): Admin,
    Path(uid): Path<i32>,
    Json(b): Json<UpdateUser>,
) -> ApiResult<axum::Json<UserView>> {
    let user = update(&s, &p, Uid(uid), b).await?;
    Ok(axum::Json(view(&s, user)))
}

/// An administrator's change to an account (approval, suspension, profile), audited; a
/// suspended or pending account is signed out everywhere.
pub(crate) async fn update(
    s: &AdminState,
    p: &Principal,
    uid: Uid,
    b: UpdateUser,
) -> ApiResult<User> {
    b.check()?;
    let suspend = matches!(b.status, Some(UserStatus::Suspended | UserStatus::Pending));
    let details = fields(&b);
    let user = s.store.update_user(uid, b.patch()).await?;
    if suspend {
        s.store.delete_sessions_of(uid).await?;
    }
    audit(s, &p.actor(), "update", "user", uid.0, details).await;
    Ok(user)
}

async fn set_user_password(
    State(s): State<AdminState>,
    Admin(p): Admin,
    Path(uid): Path<i32>,
    Json(b): Json<SetPassword>,
) -> ApiResult<Response> {
    let user = s.store.user_by_uid(Uid(uid)).await?;
    // Signs the user out everywhere (a suspected compromise, a forgotten password).
    s.store.set_password(&user.username, b.password).await?;
    audit(&s, &p.actor(), "set_password", "user", uid, json!({})).await;
    Ok(no_content())
}

async fn delete_user(
    State(s): State<AdminState>,
    Admin(p): Admin,
    Path(uid): Path<i32>,
) -> ApiResult<Response> {
    let user = s.store.user_by_uid(Uid(uid)).await?;
    s.store.delete_user(&user.username).await?;
    audit(
        &s,
        &p.actor(),
        "delete",
        "user",
        uid,
        json!({ "username": user.username }),
    )
    .await;
    Ok(no_content())
}

/// Registers the routes above in the route table (router and OpenAPI document).
pub(super) fn routes(a: &mut Api) {
    use Access::*;
    a.op::<CreateUser, UserView>(
        post(register),
        "/register",
        "Register an account (the first becomes administrator)",
        "accounts",
        Public,
        201,
    );
    a.op::<(), UserView>(get(me), "/me", "Your account", "accounts", User, 200);
    a.op::<UpdateUser, UserView>(
        patch(update_me),
        "/me",
        "Change your profile",
        "accounts",
        User,
        200,
    );
    a.op::<SetPassword, ()>(
        put(change_my_password),
        "/me/password",
        "Change your password; every other session of yours ends",
        "accounts",
        User,
        204,
    );
    a.op::<(), ListResponse<UserView>>(
        get(list_users),
        "/users",
        "List users",
        "users",
        Admin,
        200,
    );
    a.op::<CreateUser, UserView>(
        post(create_user),
        "/users",
        "Create an active user",
        "users",
        Admin,
        201,
    );
    a.op::<(), UserView>(
        get(get_user),
        "/users/{uid}",
        "Get a user (yourself, or anyone for administrators)",
        "users",
        User,
        200,
    );
    a.op::<UpdateUser, UserView>(
        patch(update_user),
        "/users/{uid}",
        "Change a user, suspend or activate",
        "users",
        Admin,
        200,
    );
    a.op::<(), ()>(
        delete(delete_user),
        "/users/{uid}",
        "Delete a user",
        "users",
        Admin,
        204,
    );
    a.op::<SetPassword, ()>(
        put(set_user_password),
        "/users/{uid}/password",
        "Set a user's password; every session of theirs ends",
        "users",
        Admin,
        204,
    );
}

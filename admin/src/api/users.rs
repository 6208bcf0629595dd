//! Users and one's own account: `/users`, `/users/{uid}`, `/users/{uid}/password`, and
//! `/register`, `/me`, `/me/password`.

use axum::extract::State;
use axum::response::Response;
use serde::Serialize;
use siteward_store::*;

use super::common::{created, no_content, ApiResult, ListResponse};
use super::error::ApiError;
use super::extract::{encode_cursor, Admin, ClientAddr, Json, PageQuery, Path, Principal, Q};
use super::openapi::{delete, get, patch, post, put, Access, Api};
use crate::service::users as service;
pub use crate::service::users::{CreateUser, SetPassword, UpdateUser};
use crate::AdminState;

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

async fn register(
    State(s): State<AdminState>,
    ClientAddr(addr): ClientAddr,
    Json(b): Json<CreateUser>,
) -> ApiResult<Response> {
    let user = crate::service::accounts::register(&s, b, addr).await?;
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
    let user = service::update_own(&s.store, &p.actor(), p.uid, b).await?;
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
    crate::service::accounts::change_own_password(
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
    Path(uid): Path<Uid>,
) -> ApiResult<axum::Json<UserView>> {
    if !p.is_admin && p.uid != uid {
        return Err(ApiError::not_found("user"));
    }
    Ok(axum::Json(view(&s, s.store.user_by_uid(uid).await?)))
}

async fn create_user(
    State(s): State<AdminState>,
    Admin(p): Admin,
    Json(b): Json<CreateUser>,
) -> ApiResult<Response> {
    let user = service::create(&s.store, &p.actor(), b).await?;
    Ok(created(view(&s, user)))
}

async fn update_user(
    State(s): State<AdminState>,
    Admin(p): Admin,
    Path(uid): Path<Uid>,
    Json(b): Json<UpdateUser>,
) -> ApiResult<axum::Json<UserView>> {
    let user = service::update(&s.store, &p.actor(), uid, b).await?;
    Ok(axum::Json(view(&s, user)))
}

async fn set_user_password(
    State(s): State<AdminState>,
    Admin(p): Admin,
    Path(uid): Path<Uid>,
    Json(b): Json<SetPassword>,
) -> ApiResult<Response> {
    let user = s.store.user_by_uid(uid).await?;
    service::set_password(&s.store, &p.actor(), &user.username, b.password).await?;
    Ok(no_content())
}

async fn delete_user(
    State(s): State<AdminState>,
    Admin(p): Admin,
    Path(uid): Path<Uid>,
) -> ApiResult<Response> {
    service::delete(&s.store, &p.actor(), uid).await?;
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

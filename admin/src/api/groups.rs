//! Groups and their members: `/groups`, `/groups/{gid}`, `/groups/{gid}/members`.

use axum::extract::State;
use axum::response::Response;
use serde::{Deserialize, Serialize};
use serde_json::json;
use siteward_store::*;

use super::common::{audit, created, fields, no_content, nullable, ApiResult, ListResponse};
use super::error::ApiError;
use super::extract::{Admin, Json, PageQuery, Path, Q};
use super::openapi::{delete, get, patch, post, Access, Api};
use super::users::{view, UserView};
use crate::AdminState;

/// A group to create.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateGroup {
    /// POSIX group name.
    pub cn: String,
    /// Free text.
    pub description: Option<String>,
    /// Members are administrators.
    #[serde(default)]
    pub is_administrator: bool,
}

/// Changes to a group.
#[derive(Debug, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateGroup {
    /// Free text.
    #[serde(default, deserialize_with = "nullable")]
    pub description: Option<Option<String>>,
    /// Members are administrators.
    pub is_administrator: Option<bool>,
}

/// A member to add.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AddMember {
    /// Login name.
    pub username: String,
}

async fn list_groups(
    State(s): State<AdminState>,
    _: Admin,
    Q(q): Q<PageQuery>,
) -> ApiResult<axum::Json<ListResponse<Group>>> {
    Ok(axum::Json(s.store.list_groups(q.page()?).await?.into()))
}

async fn get_group(
    State(s): State<AdminState>,
    _: Admin,
    Path(gid): Path<i32>,
) -> ApiResult<axum::Json<Group>> {
    Ok(axum::Json(s.store.group(Gid(gid)).await?))
}

async fn create_group(
    State(s): State<AdminState>,
    Admin(p): Admin,
    Json(b): Json<CreateGroup>,
) -> ApiResult<Response> {
    PosixName::parse(&b.cn)
        .map_err(|_| ApiError::invalid("cn", "cn must be a POSIX group name"))?;
    let mut g = s
        .store
        .create_group(&b.cn, b.description.as_deref())
        .await?;
    if b.is_administrator {
        g = s.store.update_group(g.gid_number, None, Some(true)).await?;
    }
    audit(
        &s,
        &p.actor(),
        "create",
        "group",
        g.gid_number,
        json!({ "cn": g.cn }),
    )
    .await;
    Ok(created(g))
}

async fn update_group(
    State(s): State<AdminState>,
    Admin(p): Admin,
    Path(gid): Path<i32>,
    Json(b): Json<UpdateGroup>,
) -> ApiResult<axum::Json<Group>> {
    let details = fields(&b);
    let g = s
        .store
        .update_group(Gid(gid), b.description, b.is_administrator)
        .await?;
    audit(&s, &p.actor(), "update", "group", gid, details).await;
    Ok(axum::Json(g))
}

async fn delete_group(
    State(s): State<AdminState>,
    Admin(p): Admin,
    Path(gid): Path<i32>,
) -> ApiResult<Response> {
    s.store.delete_group(Gid(gid)).await?;
    audit(&s, &p.actor(), "delete", "group", gid, json!({})).await;
    Ok(no_content())
}

async fn list_members(
    State(s): State<AdminState>,
    _: Admin,
    Path(gid): Path<i32>,
) -> ApiResult<axum::Json<Vec<UserView>>> {
    let users = s.store.group_members(Gid(gid)).await?;
    Ok(axum::Json(users.into_iter().map(|u| view(&s, u)).collect()))
}

async fn add_member(
    State(s): State<AdminState>,
    Admin(p): Admin,
    Path(gid): Path<i32>,
    Json(b): Json<AddMember>,
) -> ApiResult<Response> {
    let g = s.store.group(Gid(gid)).await?;
    s.store.add_group_member(&g.cn, &b.username).await?;
    audit(
        &s,
        &p.actor(),
        "add_member",
        "group",
        gid,
        json!({ "username": b.username.to_ascii_lowercase() }),
    )
    .await;
    Ok(no_content())
}

async fn remove_member(
    State(s): State<AdminState>,
    Admin(p): Admin,
    Path((gid, uid)): Path<(i32, i32)>,
) -> ApiResult<Response> {
    let g = s.store.group(Gid(gid)).await?;
    let u = s.store.user_by_uid(Uid(uid)).await?;
    s.store.remove_group_member(&g.cn, &u.username).await?;
    audit(
        &s,
        &p.actor(),
        "remove_member",
        "group",
        gid,
        json!({ "username": u.username }),
    )
    .await;
    Ok(no_content())
}

/// Registers the routes above in the route table (router and OpenAPI document).
pub(super) fn routes(a: &mut Api) {
    use Access::*;
    a.op::<(), ListResponse<Group>>(
        get(list_groups),
        "/groups",
        "List groups",
        "groups",
        Admin,
        200,
    );
    a.op::<CreateGroup, Group>(
        post(create_group),
        "/groups",
        "Create a group",
        "groups",
        Admin,
        201,
    );
    a.op::<(), Group>(
        get(get_group),
        "/groups/{gid}",
        "Get a group",
        "groups",
        Admin,
        200,
    );
    a.op::<UpdateGroup, Group>(
        patch(update_group),
        "/groups/{gid}",
        "Change a group",
        "groups",
        Admin,
        200,
    );
    a.op::<(), ()>(
        delete(delete_group),
        "/groups/{gid}",
        "Delete a group",
        "groups",
        Admin,
        204,
    );
    a.op::<(), Vec<UserView>>(
        get(list_members),
        "/groups/{gid}/members",
        "List members",
        "groups",
        Admin,
        200,
    );
    a.op::<AddMember, ()>(
        post(add_member),
        "/groups/{gid}/members",
        "Add a member",
        "groups",
        Admin,
        204,
    );
    a.op::<(), ()>(
        delete(remove_member),
        "/groups/{gid}/members/{uid}",
        "Remove a member",
        "groups",
        Admin,
        204,
    );
}

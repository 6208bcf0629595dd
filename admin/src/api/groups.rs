//! Groups and their members: `/groups`, `/groups/{gid}`, `/groups/{gid}/members`.

use axum::extract::State;
use axum::response::Response;
use siteward_store::*;

use super::common::{created, no_content, ApiResult, ListResponse};
use super::extract::{Admin, Json, PageQuery, Path, Q};
use super::openapi::{delete, get, patch, post, Access, Api};
use super::users::{view, UserView};
use crate::service::groups as service;
pub use crate::service::groups::{AddMember, CreateGroup, UpdateGroup};
use crate::AdminState;

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
    Path(gid): Path<Gid>,
) -> ApiResult<axum::Json<Group>> {
    Ok(axum::Json(s.store.group(gid).await?))
}

async fn create_group(
    State(s): State<AdminState>,
    Admin(p): Admin,
    Json(b): Json<CreateGroup>,
) -> ApiResult<Response> {
    Ok(created(service::create(&s.store, &p.actor(), b).await?))
}

async fn update_group(
    State(s): State<AdminState>,
    Admin(p): Admin,
    Path(gid): Path<Gid>,
    Json(b): Json<UpdateGroup>,
) -> ApiResult<axum::Json<Group>> {
    Ok(axum::Json(
        service::update(&s.store, &p.actor(), gid, b).await?,
    ))
}

async fn delete_group(
    State(s): State<AdminState>,
    Admin(p): Admin,
    Path(gid): Path<Gid>,
) -> ApiResult<Response> {
    service::delete(&s.store, &p.actor(), gid).await?;
    Ok(no_content())
}

async fn list_members(
    State(s): State<AdminState>,
    _: Admin,
    Path(gid): Path<Gid>,
) -> ApiResult<axum::Json<Vec<UserView>>> {
    let users = s.store.group_members(gid).await?;
    Ok(axum::Json(users.into_iter().map(|u| view(&s, u)).collect()))
}

async fn add_member(
    State(s): State<AdminState>,
    Admin(p): Admin,
    Path(gid): Path<Gid>,
    Json(b): Json<AddMember>,
) -> ApiResult<Response> {
    let g = s.store.group(gid).await?;
    service::add_member(&s.store, &p.actor(), &g.cn, &b.username).await?;
    Ok(no_content())
}

async fn remove_member(
    State(s): State<AdminState>,
    Admin(p): Admin,
    Path((gid, uid)): Path<(Gid, Uid)>,
) -> ApiResult<Response> {
    service::remove_member(&s.store, &p.actor(), gid, uid).await?;
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

//! Proxmox nodes: `/nodes`, `/nodes/{id}`, and importing a node's containers (`/nodes/{id}/import`).

use axum::extract::State;
use axum::response::Response;
use siteward_store::*;

use super::common::{created, no_content, ApiResult, ListResponse, SiteFilter};
use super::extract::{Admin, Json, PageQuery, Path, Q};
use super::openapi::{delete, get, patch, post, Access, Api};
use crate::service::nodes as service;
pub use crate::service::nodes::{CreateNode, UpdateNode};
use crate::AdminState;

async fn list_nodes(
    State(s): State<AdminState>,
    _: Admin,
    Q(q): Q<SiteFilter>,
) -> ApiResult<axum::Json<ListResponse<Node>>> {
    let page = PageQuery {
        limit: q.limit,
        cursor: q.cursor,
    }
    .page()?;
    Ok(axum::Json(
        s.store
            .list_nodes(page, q.site_id.map(SiteId))
            .await?
            .into(),
    ))
}

async fn get_node(
    State(s): State<AdminState>,
    _: Admin,
    Path(id): Path<NodeId>,
) -> ApiResult<axum::Json<Node>> {
    Ok(axum::Json(s.store.node(id).await?))
}

async fn create_node(
    State(s): State<AdminState>,
    Admin(p): Admin,
    Json(b): Json<CreateNode>,
) -> ApiResult<Response> {
    Ok(created(service::create(&s.store, &p.actor(), b).await?))
}

async fn update_node(
    State(s): State<AdminState>,
    Admin(p): Admin,
    Path(id): Path<NodeId>,
    Json(b): Json<UpdateNode>,
) -> ApiResult<axum::Json<Node>> {
    Ok(axum::Json(
        service::update(&s.store, &p.actor(), id, b).await?,
    ))
}

async fn delete_node(
    State(s): State<AdminState>,
    Admin(p): Admin,
    Path(id): Path<NodeId>,
) -> ApiResult<Response> {
    service::delete(&s.store, &p.actor(), id).await?;
    Ok(no_content())
}

async fn import_node(
    State(s): State<AdminState>,
    Admin(p): Admin,
    Path(id): Path<NodeId>,
) -> ApiResult<axum::Json<Vec<Container>>> {
    Ok(axum::Json(service::import(&s, &p.actor(), id).await?))
}

/// Registers the routes above in the route table (router and OpenAPI document).
pub(super) fn routes(a: &mut Api) {
    use Access::*;
    a.op::<(), ListResponse<Node>>(
        get(list_nodes),
        "/nodes",
        "List Proxmox nodes",
        "nodes",
        Admin,
        200,
    );
    a.op::<CreateNode, Node>(
        post(create_node),
        "/nodes",
        "Add a Proxmox node",
        "nodes",
        Admin,
        201,
    );
    a.op::<(), Node>(
        get(get_node),
        "/nodes/{id}",
        "Get a node",
        "nodes",
        Admin,
        200,
    );
    a.op::<UpdateNode, Node>(
        patch(update_node),
        "/nodes/{id}",
        "Change a node",
        "nodes",
        Admin,
        200,
    );
    a.op::<(), ()>(
        delete(delete_node),
        "/nodes/{id}",
        "Remove a node",
        "nodes",
        Admin,
        204,
    );
    a.op::<(), Vec<Container>>(
        post(import_node),
        "/nodes/{id}/import",
        "Register the node's containers siteward does not know yet",
        "nodes",
        Admin,
        200,
    );
}

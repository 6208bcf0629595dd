//! A container's services: `/containers/{id}/services`, `/containers/{id}/services/{service_id}`.

use axum::extract::State;
use axum::response::Response;
use siteward_store::resources;
use siteward_store::*;

use super::common::{created, no_content, ApiResult};
use super::extract::{Json, Path, Principal};
use super::openapi::{delete, get, post, Access, Api};
use crate::service::services as service;
pub use crate::service::services::CreateService;
use crate::AdminState;

async fn owned_container(s: &AdminState, p: &Principal, id: ContainerId) -> ApiResult<ContainerId> {
    Ok(s.store.container(id, p.owner_filter()).await?.id)
}

async fn list_services(
    State(s): State<AdminState>,
    p: Principal,
    Path(id): Path<ContainerId>,
) -> ApiResult<axum::Json<Vec<resources::ServiceView>>> {
    let c = owned_container(&s, &p, id).await?;
    Ok(axum::Json(s.store.list_services(c).await?))
}

async fn get_service(
    State(s): State<AdminState>,
    p: Principal,
    Path((id, sid)): Path<(ContainerId, ServiceId)>,
) -> ApiResult<axum::Json<resources::ServiceView>> {
    let c = owned_container(&s, &p, id).await?;
    Ok(axum::Json(s.store.service(c, sid).await?))
}

async fn create_service(
    State(s): State<AdminState>,
    p: Principal,
    Path(id): Path<ContainerId>,
    Json(b): Json<CreateService>,
) -> ApiResult<Response> {
    Ok(created(service::create(&s, &p, id, b).await?))
}

async fn delete_service(
    State(s): State<AdminState>,
    p: Principal,
    Path((id, sid)): Path<(ContainerId, ServiceId)>,
) -> ApiResult<Response> {
    service::delete(&s, &p, id, sid).await?;
    Ok(no_content())
}

/// Registers the routes above in the route table (router and OpenAPI document).
pub(super) fn routes(a: &mut Api) {
    use Access::*;
    a.op::<(), Vec<resources::ServiceView>>(
        get(list_services),
        "/containers/{id}/services",
        "List a container's services",
        "containers",
        User,
        200,
    );
    a.op::<CreateService, resources::ServiceView>(
        post(create_service),
        "/containers/{id}/services",
        "Add a service",
        "containers",
        User,
        201,
    );
    a.op::<(), resources::ServiceView>(
        get(get_service),
        "/containers/{id}/services/{service_id}",
        "Get a service",
        "containers",
        User,
        200,
    );
    a.op::<(), ()>(
        delete(delete_service),
        "/containers/{id}/services/{service_id}",
        "Remove a service",
        "containers",
        User,
        204,
    );
}

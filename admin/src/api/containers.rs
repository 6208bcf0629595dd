//! Containers: `/containers` (creation as a job, with `Idempotency-Key`), `/containers/register`,
//! `/containers/{id}` and lifecycle actions (`/containers/{id}/actions`).

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use siteward_store::*;

use super::common::{created, no_content, ApiResult, ListResponse, SiteFilter};
use super::error::ApiError;
use super::extract::{Admin, Json, PageQuery, Path, Principal, Q};
use super::jobs::JobAccepted;
use super::openapi::{delete, get, patch, post, Access, Api};
use crate::service::containers as service;
pub use crate::service::containers::{CreateContainer, UpdateContainer};
use crate::AdminState;

async fn list_containers(
    State(s): State<AdminState>,
    p: Principal,
    Q(q): Q<SiteFilter>,
) -> ApiResult<axum::Json<ListResponse<Container>>> {
    let page = PageQuery {
        limit: q.limit,
        cursor: q.cursor,
    }
    .page()?;
    Ok(axum::Json(
        s.store
            .list_containers(page, p.owner_filter(), q.site_id.map(SiteId))
            .await?
            .into(),
    ))
}

/// A container with its live state on Proxmox (absent when the node cannot be asked).
#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct ContainerView {
    #[serde(flatten)]
    container: Container,
    /// What Proxmox reports now.
    live: Option<crate::proxmox::LxcStatus>,
}

async fn get_container(
    State(s): State<AdminState>,
    p: Principal,
    Path(id): Path<ContainerId>,
) -> ApiResult<axum::Json<ContainerView>> {
    let container = s.store.container(id, p.owner_filter()).await?;
    let live = s.jobs.live_status(&container).await;
    Ok(axum::Json(ContainerView { container, live }))
}

/// A container being created, and the job creating it.
#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct CreationAccepted {
    /// The container (status `creating`).
    container: Container,
    /// The job; follow it at `/api/v1/jobs/{id}/events`.
    job_id: JobId,
}

async fn create_container_job(
    State(s): State<AdminState>,
    p: Principal,
    headers: axum::http::HeaderMap,
    Json(b): Json<crate::jobs::CreateContainerRequest>,
) -> ApiResult<Response> {
    let key = headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let Some(key) = key else {
        return create_container_inner(&s, &p, b).await;
    };
    if key.is_empty() || key.len() > 255 {
        return Err(ApiError::bad_request(
            "Idempotency-Key must be 1 to 255 characters",
        ));
    }
    match s.store.claim_idempotency_key(p.uid, &key).await? {
        siteward_store::jobs::Idempotent::Replay(status, body) => {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
            Ok((status, axum::Json(body)).into_response())
        }
        siteward_store::jobs::Idempotent::InProgress => Err(ApiError::new(
            StatusCode::CONFLICT,
            "in_progress",
            "a request with this Idempotency-Key is still being processed",
        )),
        siteward_store::jobs::Idempotent::Proceed => {
            let result = create_container_inner(&s, &p, b).await;
            match result {
                Ok(resp) => {
                    let (parts, body) = resp.into_parts();
                    let bytes = axum::body::to_bytes(body, 1024 * 1024)
                        .await
                        .unwrap_or_default();
                    let value: serde_json::Value =
                        serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
                    s.store
                        .finish_idempotent(p.uid, &key, Some((parts.status.as_u16(), value)))
                        .await?;
                    Ok(Response::from_parts(parts, axum::body::Body::from(bytes)))
                }
                Err(e) => {
                    s.store.finish_idempotent(p.uid, &key, None).await?;
                    Err(e)
                }
            }
        }
    }
}

async fn create_container_inner(
    s: &AdminState,
    p: &Principal,
    b: crate::jobs::CreateContainerRequest,
) -> ApiResult<Response> {
    let (container, job_id) = service::create(s, p, b).await?;
    Ok((
        StatusCode::ACCEPTED,
        axum::Json(CreationAccepted { container, job_id }),
    )
        .into_response())
}

async fn create_container(
    State(s): State<AdminState>,
    Admin(p): Admin,
    Json(b): Json<CreateContainer>,
) -> ApiResult<Response> {
    Ok(created(service::register(&s, &p, b).await?))
}

async fn update_container(
    State(s): State<AdminState>,
    p: Principal,
    Path(id): Path<ContainerId>,
    Json(b): Json<UpdateContainer>,
) -> ApiResult<axum::Json<Container>> {
    Ok(axum::Json(service::update(&s, &p, id, b).await?))
}

/// Deletes a container: on Proxmox (stop, destroy with purge) as a job (202), or just the
/// record when it never reached Proxmox (204).
async fn delete_container(
    State(s): State<AdminState>,
    p: Principal,
    Path(id): Path<ContainerId>,
) -> ApiResult<Response> {
    match service::delete(&s, &p, id).await? {
        service::Deletion::RecordOnly => Ok(no_content()),
        service::Deletion::Job(job_id) => {
            Ok((StatusCode::ACCEPTED, axum::Json(JobAccepted { job_id })).into_response())
        }
    }
}

async fn container_action(
    State(s): State<AdminState>,
    p: Principal,
    Path(id): Path<ContainerId>,
    Json(b): Json<crate::jobs::Lifecycle>,
) -> ApiResult<Response> {
    let job_id = service::act(&s, &p, id, b).await?;
    Ok((StatusCode::ACCEPTED, axum::Json(JobAccepted { job_id })).into_response())
}

/// Registers the routes above in the route table (router and OpenAPI document).
pub(super) fn routes(a: &mut Api) {
    use Access::*;
    a.op::<(), ListResponse<Container>>(
        get(list_containers),
        "/containers",
        "List containers (yours, or all for administrators)",
        "containers",
        User,
        200,
    );
    a.op::<crate::jobs::CreateContainerRequest, CreationAccepted>(
        post(create_container_job),
        "/containers",
        "Create a container on Proxmox (202; a job does the work)",
        "containers",
        User,
        202,
    );
    a.op::<CreateContainer, Container>(
        post(create_container),
        "/containers/register",
        "Register an existing container",
        "containers",
        Admin,
        201,
    );
    a.op::<(), ContainerView>(
        get(get_container),
        "/containers/{id}",
        "Get a container with its live Proxmox state",
        "containers",
        User,
        200,
    );
    a.op::<UpdateContainer, Container>(
        patch(update_container),
        "/containers/{id}",
        "Change a container record",
        "containers",
        User,
        200,
    );
    a.op::<crate::jobs::Lifecycle, JobAccepted>(
        post(container_action),
        "/containers/{id}/actions",
        "Start, stop, shut down, restart or reconfigure a container (202; a job does it)",
        "containers",
        User,
        202,
    );
    a.op::<(), JobAccepted>(delete(delete_container), "/containers/{id}",
        "Delete a container: destroyed on Proxmox by a job (202), or the record alone when it is not on a managed node (204)",
        "containers",
        User,
        202,
    );
}

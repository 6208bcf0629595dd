//! Containers: `/containers` (creation as a job, with `Idempotency-Key`), `/containers/register`,
//! `/containers/{id}` and lifecycle actions (`/containers/{id}/actions`).

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::json;
use siteward_store::resources::ContainerInput;
use siteward_store::*;

use super::common::{
    audit, check_label, check_ssh_keys, created, fields, no_content, nullable, ApiResult,
    ListResponse, SiteFilter,
};
use super::error::ApiError;
use super::extract::{Admin, Json, PageQuery, Path, Principal, Q};
use super::jobs::JobAccepted;
use super::openapi::{delete, get, patch, post, Access, Api};
use crate::AdminState;

/// An existing container to register.
#[derive(Debug, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateContainer {
    /// Host name (DNS label).
    pub hostname: String,
    /// Node.
    pub node_id: i64,
    /// Proxmox VMID.
    pub container_id: Option<i32>,
    /// MAC of net0.
    pub mac_address: Option<String>,
    /// Static IPv4 inside the site's subnet, outside its DHCP range.
    pub ipv4_address: Option<std::net::Ipv4Addr>,
    /// Owner's login name.
    pub username: Option<String>,
    /// State (default `pending`). A bad value is a 422 naming the field.
    #[schemars(with = "Option<ContainerStatus>")]
    pub status: Option<String>,
    /// Template.
    pub template: Option<String>,
    /// GPU.
    pub nvidia_requested: Option<bool>,
}

/// Changes to a container record. Owners may change `hostname` and `template` only.
#[derive(Debug, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateContainer {
    /// Host name.
    pub hostname: Option<String>,
    /// Template.
    #[serde(default, deserialize_with = "nullable")]
    pub template: Option<Option<String>>,
    /// Node (admin).
    pub node_id: Option<i64>,
    /// VMID (admin).
    #[serde(default, deserialize_with = "nullable")]
    pub container_id: Option<Option<i32>>,
    /// MAC (admin).
    #[serde(default, deserialize_with = "nullable")]
    pub mac_address: Option<Option<String>>,
    /// IPv4 (admin).
    #[serde(default, deserialize_with = "nullable")]
    pub ipv4_address: Option<Option<std::net::Ipv4Addr>>,
    /// Owner (admin).
    #[serde(default, deserialize_with = "nullable")]
    pub username: Option<Option<String>>,
    /// Status (admin). A bad value is a 422 naming the field.
    #[schemars(with = "Option<ContainerStatus>")]
    pub status: Option<String>,
}

fn check_status(s: Option<&str>) -> ApiResult<Option<ContainerStatus>> {
    Ok(s.map(str::parse).transpose()?)
}

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
    let (container, job_id) = start_creation(s, p, b).await?;
    Ok((
        StatusCode::ACCEPTED,
        axum::Json(CreationAccepted { container, job_id }),
    )
        .into_response())
}

/// Validates a creation request, reserves the container and starts its job, audited: what
/// the API and the console both call.
pub(crate) async fn start_creation(
    s: &AdminState,
    p: &Principal,
    b: crate::jobs::CreateContainerRequest,
) -> ApiResult<(Container, JobId)> {
    check_label("hostname", &b.hostname)?;
    // Its shape here; whether Proxmox has it as a template in `Jobs::create_container`.
    crate::templates::TemplateRef::parse(&b.template)?;
    if let Some(c) = b.cores {
        if !(1..=128).contains(&c) {
            return Err(ApiError::invalid("cores", "cores must be 1 to 128"));
        }
    }
    if let Some(m) = b.memory {
        if !(64..=1_048_576).contains(&m) {
            return Err(ApiError::invalid(
                "memory",
                "memory must be 64 to 1048576 MiB",
            ));
        }
    }
    if let Some(d) = b.disk {
        if !(1..=65536).contains(&d) {
            return Err(ApiError::invalid("disk", "disk must be 1 to 65536 GiB"));
        }
    }
    check_ssh_keys(&b.ssh_keys)?;
    if let Some(problem) = crate::jobs::environment_problem(&b.environment) {
        return Err(ApiError::invalid("environment", problem));
    }
    let details = fields(&b);
    let (container, job_id) = s
        .jobs
        .create_container((p.uid, p.username.clone()), b)
        .await?;
    audit(s, &p.actor(), "create", "container", container.id, details).await;
    Ok((container, job_id))
}

async fn create_container(
    State(s): State<AdminState>,
    Admin(p): Admin,
    Json(b): Json<CreateContainer>,
) -> ApiResult<Response> {
    check_label("hostname", &b.hostname)?;
    let status = check_status(b.status.as_deref())?;
    if let Some(t) = &b.template {
        crate::templates::TemplateRef::parse(t)?;
    }
    let details = fields(&b);
    let c = s
        .store
        .create_container(ContainerInput {
            hostname: Some(b.hostname),
            node_id: Some(NodeId(b.node_id)),
            username: Some(b.username.map(|u| u.to_ascii_lowercase())),
            status,
            template: Some(b.template),
            container_id: Some(b.container_id),
            mac_address: Some(b.mac_address),
            ipv4_address: Some(b.ipv4_address),
            nvidia_requested: b.nvidia_requested,
        })
        .await?;
    audit(&s, &p.actor(), "create", "container", c.id, details).await;
    Ok(created(c))
}

async fn update_container(
    State(s): State<AdminState>,
    p: Principal,
    Path(id): Path<ContainerId>,
    Json(b): Json<UpdateContainer>,
) -> ApiResult<axum::Json<Container>> {
    if let Some(h) = &b.hostname {
        check_label("hostname", h)?;
    }
    let status = check_status(b.status.as_deref())?;
    if !p.is_admin {
        let admin_only = [
            ("node_id", b.node_id.is_some()),
            ("container_id", b.container_id.is_some()),
            ("mac_address", b.mac_address.is_some()),
            ("ipv4_address", b.ipv4_address.is_some()),
            ("username", b.username.is_some()),
            ("status", b.status.is_some()),
        ];
        if let Some((f, _)) = admin_only.iter().find(|(_, set)| *set) {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                format!("only an administrator can change {f}"),
            )
            .field(*f));
        }
    }
    if let Some(Some(t)) = &b.template {
        crate::templates::TemplateRef::parse(t)?;
        if !p.is_admin {
            // An owner names only a template Proxmox has on the container's node.
            let c = s.store.container(id, p.owner_filter()).await?;
            s.jobs.check_template_for(&c, t).await?;
        }
    }
    let details = fields(&b);
    let c = s
        .store
        .update_container(
            id,
            ContainerInput {
                hostname: b.hostname,
                node_id: b.node_id.map(NodeId),
                username: b.username.map(|u| u.map(|u| u.to_ascii_lowercase())),
                status,
                template: b.template,
                container_id: b.container_id,
                mac_address: b.mac_address,
                ipv4_address: b.ipv4_address,
                nvidia_requested: None,
            },
            p.owner_filter(),
        )
        .await?;
    audit(&s, &p.actor(), "update", "container", id, details).await;
    Ok(axum::Json(c))
}

/// Deletes a container: on Proxmox (stop, destroy with purge) as a job (202), or just the
/// record when it never reached Proxmox (204).
async fn delete_container(
    State(s): State<AdminState>,
    p: Principal,
    Path(id): Path<ContainerId>,
) -> ApiResult<Response> {
    Ok(match remove(&s, &p, id).await? {
        Some(job_id) => (StatusCode::ACCEPTED, axum::Json(JobAccepted { job_id })).into_response(),
        None => no_content(),
    })
}

/// Deletes a container, audited: the job destroying it on Proxmox, or `None` when only the
/// record was removed.
pub(crate) async fn remove(
    s: &AdminState,
    p: &Principal,
    id: ContainerId,
) -> ApiResult<Option<JobId>> {
    let c = s.store.container(id, p.owner_filter()).await?;
    audit(s, &p.actor(), "delete", "container", id, json!({})).await;
    let managed = s.store.node(c.node_id).await?.api_url.is_some();
    if c.container_id.is_none() || !managed {
        s.store.delete_container(c.id, p.owner_filter()).await?;
        audit(
            s,
            &p.actor(),
            "delete",
            "container",
            id,
            json!({ "record_only": true }),
        )
        .await;
        return Ok(None);
    }
    Ok(Some(s.jobs.lifecycle(p.uid, c, None).await?))
}

async fn container_action(
    State(s): State<AdminState>,
    p: Principal,
    Path(id): Path<ContainerId>,
    Json(b): Json<crate::jobs::Lifecycle>,
) -> ApiResult<Response> {
    let job_id = act(&s, &p, id, b).await?;
    Ok((StatusCode::ACCEPTED, axum::Json(JobAccepted { job_id })).into_response())
}

/// Validates a lifecycle operation and starts its job, audited.
pub(crate) async fn act(
    s: &AdminState,
    p: &Principal,
    id: ContainerId,
    b: crate::jobs::Lifecycle,
) -> ApiResult<JobId> {
    if let crate::jobs::Lifecycle::Reconfigure { cores, memory } = &b {
        if cores.is_none() && memory.is_none() {
            return Err(ApiError::invalid("cores", "give cores, memory or both"));
        }
        if cores.is_some_and(|c| !(1..=128).contains(&c)) {
            return Err(ApiError::invalid("cores", "cores must be 1 to 128"));
        }
        if memory.is_some_and(|m| !(64..=1_048_576).contains(&m)) {
            return Err(ApiError::invalid(
                "memory",
                "memory must be 64 to 1048576 MiB",
            ));
        }
    }
    let c = s.store.container(id, p.owner_filter()).await?;
    let details = fields(&b);
    let job_id = s.jobs.lifecycle(p.uid, c, Some(b)).await?;
    audit(s, &p.actor(), "action", "container", id, details).await;
    Ok(job_id)
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

//! A container's services: `/containers/{id}/services`, `/containers/{id}/services/{service_id}`.

use axum::extract::State;
use axum::response::Response;
use serde::{Deserialize, Serialize};
use serde_json::json;
use siteward_store::resources::{self, ServiceInput};
use siteward_store::*;

use super::common::{audit, check_label, created, fields, no_content, ApiResult};
use super::error::ApiError;
use super::extract::{Json, Path, Principal};
use super::openapi::{delete, get, post, Access, Api};
use crate::AdminState;

fn check_port(field: &str, value: i32) -> ApiResult<()> {
    if !(1..=65535).contains(&value) {
        return Err(ApiError::invalid(
            field,
            format!("{field} must be 1 to 65535"),
        ));
    }
    Ok(())
}

/// A service to add to a container.
#[derive(Debug, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
pub enum CreateService {
    /// HTTP(S) through the edge NGINX.
    Http {
        /// Port on the container.
        container_port: i32,
        /// Label under the external domain.
        external_hostname: String,
        /// External domain.
        external_domain_id: i64,
        /// Backend scheme (default `http`). A bad value is a 422 naming the field.
        #[serde(default)]
        #[schemars(with = "Option<BackendProtocol>")]
        backend_protocol: Option<String>,
        /// Require sign-in (the domain needs an auth server).
        #[serde(default)]
        auth_required: bool,
    },
    /// TCP or UDP through the edge NGINX.
    Transport {
        /// Port on the container.
        container_port: i32,
        /// Protocol. A bad value is a 422 naming the field.
        #[schemars(with = "TransportProtocol")]
        protocol: String,
        /// Edge port; the next free one in the range when absent.
        external_port: Option<i32>,
        /// Must be false: the edge does not terminate TLS for transport services (it would
        /// hand the session cookie to the container); the container terminates TLS itself.
        #[serde(default)]
        use_tls: bool,
    },
    /// An SRV record in the site's zone.
    Dns {
        /// Port on the container.
        container_port: i32,
        /// `_service._proto`, e.g. `_ldap._tcp`.
        service_name: String,
    },
}

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
    Ok(created(add(&s, &p, id, b).await?))
}

/// Validates and adds a service to a container of the caller's, audited.
pub(crate) async fn add(
    s: &AdminState,
    p: &Principal,
    id: ContainerId,
    b: CreateService,
) -> ApiResult<resources::ServiceView> {
    let c = owned_container(s, p, id).await?;
    let details = fields(&b);
    let input = match b {
        CreateService::Http {
            container_port,
            external_hostname,
            external_domain_id,
            backend_protocol,
            auth_required,
        } => {
            check_port("container_port", container_port)?;
            check_label("external_hostname", &external_hostname)?;
            crate::edge::reserved::check_http(s, &external_hostname)?;
            let backend_protocol = match backend_protocol {
                Some(v) => v.parse()?,
                None => BackendProtocol::Http,
            };
            ServiceInput::Http {
                container_port,
                external_hostname,
                external_domain_id: ExternalDomainId(external_domain_id),
                backend_protocol,
                auth_required,
            }
        }
        CreateService::Transport {
            container_port,
            protocol,
            external_port,
            use_tls,
        } => {
            check_port("container_port", container_port)?;
            let protocol: TransportProtocol = protocol.parse()?;
            if let Some(p) = external_port {
                check_port("external_port", p)?;
            }
            if use_tls && protocol == TransportProtocol::Udp {
                return Err(ApiError::invalid(
                    "use_tls",
                    "use_tls is only possible over tcp",
                ));
            }
            crate::edge::reserved::check_transport(s, external_port, use_tls)?;
            ServiceInput::Transport {
                container_port,
                protocol,
                external_port,
                use_tls,
            }
        }
        CreateService::Dns {
            container_port,
            service_name,
        } => {
            check_port("container_port", container_port)?;
            let ok = service_name.split_once("._").is_some_and(|(svc, proto)| {
                svc.starts_with('_')
                    && svc.len() > 1
                    && ["tcp", "udp", "tls", "sctp"].contains(&proto)
            });
            if !ok {
                return Err(ApiError::invalid(
                    "service_name",
                    "service_name must look like _ldap._tcp",
                ));
            }
            ServiceInput::Dns {
                container_port,
                service_name,
            }
        }
    };
    let svc = s.store.create_service(c, input, s.port_range).await?;
    audit(s, &p.actor(), "create", "service", svc.id, details).await;
    Ok(svc)
}

async fn delete_service(
    State(s): State<AdminState>,
    p: Principal,
    Path((id, sid)): Path<(ContainerId, ServiceId)>,
) -> ApiResult<Response> {
    remove(&s, &p, id, sid).await?;
    Ok(no_content())
}

/// Removes a service of a container of the caller's, audited.
pub(crate) async fn remove(
    s: &AdminState,
    p: &Principal,
    id: ContainerId,
    sid: ServiceId,
) -> ApiResult<()> {
    let c = owned_container(s, p, id).await?;
    s.store.delete_service(c, sid).await?;
    audit(
        s,
        &p.actor(),
        "delete",
        "service",
        sid,
        json!({ "container_id": id }),
    )
    .await;
    Ok(())
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

//! A container's services: add (HTTP through the edge, TCP/UDP through the edge, DNS SRV),
//! remove, and who may pass sign-in for an HTTP service.

use serde::{Deserialize, Serialize};
use siteward_store::resources::{ServiceInput, ServiceView};
use siteward_store::{
    BackendProtocol, ContainerId, ExternalDomainId, ServiceId, TransportProtocol,
};

use super::rules::{check_label, check_port};
use super::{ApiError, Result};
use crate::api::extract::Principal;
use crate::AdminState;

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
        external_domain_id: ExternalDomainId,
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

/// Adds a service to a container of the caller (any container for administrators). Names
/// and ports the edge reserves are refused here and, again, by the database.
pub async fn create(
    s: &AdminState,
    who: &Principal,
    container: ContainerId,
    b: CreateService,
) -> Result<ServiceView> {
    let c = s.store.container(container, who.owner_filter()).await?.id;
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
                external_domain_id,
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
    Ok(s.store
        .create_service(c, input, s.port_range, &who.actor())
        .await?)
}

/// Removes a service of a container of the caller.
pub async fn delete(
    s: &AdminState,
    who: &Principal,
    container: ContainerId,
    id: ServiceId,
) -> Result<()> {
    let c = s.store.container(container, who.owner_filter()).await?.id;
    Ok(s.store.delete_service(c, id, &who.actor()).await?)
}

/// Sets the groups whose members pass sign-in for an HTTP service (administrators); empty
/// admits every active user.
pub async fn set_allowed_groups(
    s: &AdminState,
    who: &Principal,
    container: ContainerId,
    id: ServiceId,
    groups: &[String],
) -> Result<()> {
    let c = s.store.container(container, None).await?.id;
    s.store.service(c, id).await?;
    Ok(s.store.set_allowed_groups(id, groups, &who.actor()).await?)
}

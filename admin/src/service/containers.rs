//! Containers: create on Proxmox (a job), register an existing one, change, delete, start/stop/
//! restart/reconfigure. Owners act on their own containers; administrators on any.

use serde::{Deserialize, Serialize};
use siteward_store::resources::{ContainerPatch, NewContainer};
use siteward_store::{Container, ContainerId, ContainerStatus, JobId, NodeId};

use super::rules::{check_label, check_ssh_keys};
use super::{nullable, ApiError, Result};
use crate::api::extract::Principal;
use crate::jobs::{CreateContainerRequest, Lifecycle};
use crate::AdminState;

/// An existing container to register.
#[derive(Debug, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateContainer {
    /// Host name (DNS label).
    pub hostname: String,
    /// Node.
    pub node_id: NodeId,
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
    pub node_id: Option<NodeId>,
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

fn check_status(s: Option<&str>) -> Result<Option<ContainerStatus>> {
    Ok(s.map(str::parse).transpose()?)
}

fn check_cores(c: Option<u32>) -> Result<()> {
    if c.is_some_and(|c| !(1..=128).contains(&c)) {
        return Err(ApiError::invalid("cores", "cores must be 1 to 128"));
    }
    Ok(())
}

fn check_memory(m: Option<u32>) -> Result<()> {
    if m.is_some_and(|m| !(64..=1_048_576).contains(&m)) {
        return Err(ApiError::invalid(
            "memory",
            "memory must be 64 to 1048576 MiB",
        ));
    }
    Ok(())
}

/// Creates a container on Proxmox for the caller: validates the request, reserves node,
/// address and MAC (with the audit row), and starts the job that builds it.
pub async fn create(
    s: &AdminState,
    who: &Principal,
    b: CreateContainerRequest,
) -> Result<(Container, JobId)> {
    check_label("hostname", &b.hostname)?;
    // Its shape here; whether Proxmox has it as a template in `Jobs::create_container`.
    crate::templates::TemplateRef::parse(&b.template)?;
    check_cores(b.cores)?;
    check_memory(b.memory)?;
    if let Some(d) = b.disk {
        if !(1..=65536).contains(&d) {
            return Err(ApiError::invalid("disk", "disk must be 1 to 65536 GiB"));
        }
    }
    check_ssh_keys(&b.ssh_keys)?;
    if let Some(problem) = crate::jobs::environment_problem(&b.environment) {
        return Err(ApiError::invalid("environment", problem));
    }
    Ok(s.jobs
        .create_container((who.uid, who.username.clone()), b, &who.actor())
        .await?)
}

/// Registers a container that exists already (administrators).
pub async fn register(s: &AdminState, who: &Principal, b: CreateContainer) -> Result<Container> {
    check_label("hostname", &b.hostname)?;
    let status = check_status(b.status.as_deref())?;
    if let Some(t) = &b.template {
        crate::templates::TemplateRef::parse(t)?;
    }
    let input = NewContainer {
        hostname: b.hostname,
        node_id: b.node_id,
        username: b.username.map(|u| u.to_ascii_lowercase()),
        status,
        template: b.template,
        container_id: b.container_id,
        mac_address: b.mac_address,
        ipv4_address: b.ipv4_address,
        nvidia_requested: b.nvidia_requested.unwrap_or(false),
    };
    Ok(s.store.create_container(input, &who.actor()).await?)
}

/// Changes a container record; owners may change `hostname` and `template` only.
pub async fn update(
    s: &AdminState,
    who: &Principal,
    id: ContainerId,
    b: UpdateContainer,
) -> Result<Container> {
    if let Some(h) = &b.hostname {
        check_label("hostname", h)?;
    }
    let status = check_status(b.status.as_deref())?;
    if !who.is_admin {
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
                axum::http::StatusCode::FORBIDDEN,
                "forbidden",
                format!("only an administrator can change {f}"),
            )
            .field(*f));
        }
    }
    if let Some(Some(t)) = &b.template {
        crate::templates::TemplateRef::parse(t)?;
        if !who.is_admin {
            // An owner names only a template Proxmox has on the container's node.
            let c = s.store.container(id, who.owner_filter()).await?;
            s.jobs.check_template_for(&c, t).await?;
        }
    }
    let input = ContainerPatch {
        hostname: b.hostname,
        node_id: b.node_id,
        username: b.username.map(|u| u.map(|u| u.to_ascii_lowercase())),
        status,
        template: b.template,
        container_id: b.container_id,
        mac_address: b.mac_address,
        ipv4_address: b.ipv4_address,
        nvidia_requested: None,
    };
    Ok(s.store
        .update_container(id, input, who.owner_filter(), &who.actor())
        .await?)
}

/// How a deletion went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Deletion {
    /// The container never reached Proxmox (or its node is not managed): the record is gone.
    RecordOnly,
    /// A job stops and destroys it on Proxmox, then removes the record.
    Job(JobId),
}

/// Deletes a container: on Proxmox as a job, or just the record when it never reached Proxmox.
pub async fn delete(s: &AdminState, who: &Principal, id: ContainerId) -> Result<Deletion> {
    let c = s.store.container(id, who.owner_filter()).await?;
    let managed = s.store.node(c.node_id).await?.api_url.is_some();
    if c.container_id.is_none() || !managed {
        s.store
            .delete_container(c.id, who.owner_filter(), &who.actor())
            .await?;
        return Ok(Deletion::RecordOnly);
    }
    Ok(Deletion::Job(
        s.jobs.lifecycle(who.uid, c, None, &who.actor()).await?,
    ))
}

/// Starts, stops, restarts or reconfigures a container (a job).
pub async fn act(s: &AdminState, who: &Principal, id: ContainerId, b: Lifecycle) -> Result<JobId> {
    if let Lifecycle::Reconfigure { cores, memory } = &b {
        if cores.is_none() && memory.is_none() {
            return Err(ApiError::invalid("cores", "give cores, memory or both"));
        }
        check_cores(*cores)?;
        check_memory(*memory)?;
    }
    let c = s.store.container(id, who.owner_filter()).await?;
    Ok(s.jobs.lifecycle(who.uid, c, Some(b), &who.actor()).await?)
}

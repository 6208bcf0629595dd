//! Proxmox nodes: add, change, delete, import the containers a node already has.

use serde::Deserialize;
use siteward_store::resources::NodePatch;
use siteward_store::{Actor, Container, NewNode, Node, NodeId, SiteId, Store};

use super::rules::{check_label, check_len, check_url};
use super::{nullable, ApiError, Result};
use crate::AdminState;

/// A Proxmox node to add. The secret is write-only.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateNode {
    /// Proxmox host name.
    pub name: String,
    /// Site.
    pub site_id: SiteId,
    /// Address.
    pub ipv4_address: Option<std::net::Ipv4Addr>,
    /// API URL, e.g. https://pve1:8006/api2/json.
    pub api_url: Option<String>,
    /// `user@realm!tokenid` or `user@realm`.
    pub api_token_id_or_username: Option<String>,
    /// Token secret or password (write-only, encrypted at rest).
    pub api_token_secret_or_password: Option<String>,
    /// Skip TLS verification.
    #[serde(default)]
    pub disable_tls_verification: bool,
    /// GPU passthrough.
    #[serde(default)]
    pub nvidia_available: bool,
}

/// Changes to a node.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateNode {
    /// Name.
    pub name: Option<String>,
    /// Address.
    #[serde(default, deserialize_with = "nullable")]
    pub ipv4_address: Option<Option<std::net::Ipv4Addr>>,
    /// API URL.
    #[serde(default, deserialize_with = "nullable")]
    pub api_url: Option<Option<String>>,
    /// Token id or user.
    #[serde(default, deserialize_with = "nullable")]
    pub api_token_id_or_username: Option<Option<String>>,
    /// Secret (write-only).
    #[serde(default, deserialize_with = "nullable")]
    pub api_token_secret_or_password: Option<Option<String>>,
    /// TLS verification off.
    pub disable_tls_verification: Option<bool>,
    /// Template storage.
    pub image_storage: Option<String>,
    /// Volume storage.
    pub volume_storage: Option<String>,
    /// Bridge.
    pub network_bridge: Option<String>,
    /// GPU.
    pub nvidia_available: Option<bool>,
}

/// Adds a node; its secret is sealed before it reaches the database.
pub async fn create(store: &Store, by: &Actor, b: CreateNode) -> Result<Node> {
    check_label("name", &b.name)?;
    if let Some(u) = &b.api_url {
        check_url("api_url", u)?;
    }
    let new = NewNode {
        name: b.name,
        site_id: Some(b.site_id),
        ipv4_address: b.ipv4_address,
        api_url: b.api_url,
        api_token_id_or_username: b.api_token_id_or_username,
        api_token_secret_or_password: b.api_token_secret_or_password,
        disable_tls_verification: b.disable_tls_verification,
        nvidia_available: b.nvidia_available,
    };
    Ok(store.create_node(new, by).await?)
}

/// Changes a node.
pub async fn update(store: &Store, by: &Actor, id: NodeId, b: UpdateNode) -> Result<Node> {
    if let Some(n) = &b.name {
        check_label("name", n)?;
    }
    if let Some(Some(u)) = &b.api_url {
        check_url("api_url", u)?;
    }
    for (f, v) in [
        ("image_storage", &b.image_storage),
        ("volume_storage", &b.volume_storage),
        ("network_bridge", &b.network_bridge),
    ] {
        if let Some(v) = v {
            check_len(f, v, 1, 64)?;
        }
    }
    let patch = NodePatch {
        name: b.name,
        ipv4_address: b.ipv4_address,
        api_url: b.api_url,
        api_token_id_or_username: b.api_token_id_or_username,
        api_token_secret_or_password: b.api_token_secret_or_password,
        disable_tls_verification: b.disable_tls_verification,
        image_storage: b.image_storage,
        volume_storage: b.volume_storage,
        network_bridge: b.network_bridge,
        nvidia_available: b.nvidia_available,
    };
    Ok(store.update_node(id, patch, by).await?)
}

/// Deletes a node (refused while it hosts containers).
pub async fn delete(store: &Store, by: &Actor, id: NodeId) -> Result<()> {
    Ok(store.delete_node(id, by).await?)
}

/// Registers the containers Proxmox has on the node that siteward does not know yet; each gets
/// its own `import` audit row.
pub async fn import(s: &AdminState, by: &Actor, id: NodeId) -> Result<Vec<Container>> {
    s.jobs.import(id, by).await.map_err(|e| {
        ApiError::new(
            axum::http::StatusCode::BAD_GATEWAY,
            "proxmox_error",
            format!("import failed: {e}"),
        )
    })
}

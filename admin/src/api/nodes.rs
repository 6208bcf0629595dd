//! Proxmox nodes: `/nodes`, `/nodes/{id}`, and importing a node's containers (`/nodes/{id}/import`).

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use serde::Deserialize;
use serde_json::json;
use siteward_store::resources::NodePatch;
use siteward_store::*;

use super::common::{
    audit, check_label, check_len, check_url, created, no_content, nullable, ApiResult,
    ListResponse, SiteFilter,
};
use super::error::ApiError;
use super::extract::{Admin, Json, PageQuery, Path, Q};
use super::openapi::{delete, get, patch, post, Access, Api};
use crate::AdminState;

/// A Proxmox node to add. The secret is write-only.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateNode {
    /// Proxmox host name.
    pub name: String,
    /// Site.
    pub site_id: i64,
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
    check_label("name", &b.name)?;
    if let Some(u) = &b.api_url {
        check_url("api_url", u)?;
    }
    let node = s
        .store
        .create_node(NewNode {
            name: b.name,
            site_id: Some(SiteId(b.site_id)),
            ipv4_address: b.ipv4_address,
            api_url: b.api_url,
            api_token_id_or_username: b.api_token_id_or_username,
            api_token_secret_or_password: b.api_token_secret_or_password,
            disable_tls_verification: b.disable_tls_verification,
            nvidia_available: b.nvidia_available,
        })
        .await?;
    audit(
        &s,
        &p.actor(),
        "create",
        "node",
        node.id,
        json!({ "name": node.name }),
    )
    .await;
    Ok(created(node))
}

async fn update_node(
    State(s): State<AdminState>,
    Admin(p): Admin,
    Path(id): Path<NodeId>,
    Json(b): Json<UpdateNode>,
) -> ApiResult<axum::Json<Node>> {
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
    let secret_changed = b.api_token_secret_or_password.is_some();
    let node = s
        .store
        .update_node(
            id,
            NodePatch {
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
            },
        )
        .await?;
    audit(
        &s,
        &p.actor(),
        "update",
        "node",
        id,
        json!({ "secret_changed": secret_changed }),
    )
    .await;
    Ok(axum::Json(node))
}

async fn delete_node(
    State(s): State<AdminState>,
    Admin(p): Admin,
    Path(id): Path<NodeId>,
) -> ApiResult<Response> {
    s.store.delete_node(id).await?;
    audit(&s, &p.actor(), "delete", "node", id, json!({})).await;
    Ok(no_content())
}

async fn import_node(
    State(s): State<AdminState>,
    Admin(p): Admin,
    Path(id): Path<NodeId>,
) -> ApiResult<axum::Json<Vec<Container>>> {
    let imported = s.jobs.import(id).await.map_err(|e| {
        ApiError::new(
            StatusCode::BAD_GATEWAY,
            "proxmox_error",
            format!("import failed: {e}"),
        )
    })?;
    audit(
        &s,
        &p.actor(),
        "import",
        "node",
        id,
        json!({ "imported": imported.len() }),
    )
    .await;
    audit(&s, &p.actor(), "import", "container", id, json!({})).await;
    Ok(axum::Json(imported))
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

//! The admin API under `/api/v1`. Every route is registered through [`Api::op`], which adds it
//! to the router and to the OpenAPI document at once, so the document cannot miss a route.
//!
//! Access: [`Admin`] routes answer 404 to non-admins; owner-scoped routes filter by the caller
//! in the query itself, so another user's id is indistinguishable from a missing one.

pub mod error;
pub mod extract;
mod openapi;
pub mod streams;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, patch, post, put, MethodRouter};
use axum::Router;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::json;
use siteward_store::resources::{
    self, Actor, ContainerInput, DomainInput, NodePatch, ServiceInput, SitePatch, UserPatch,
};
use siteward_store::*;

use crate::AdminState;
use error::ApiError;
use extract::{encode_cursor, Admin, ClientAddr, Json, PageQuery, Path, Principal, Q};
pub use openapi::Access;
use tracing::Instrument;

type ApiResult<T> = Result<T, ApiError>;

/// `Some(None)` for an explicit `null`, `None` when absent.
fn nullable<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
    d: D,
) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

/// A page of items.
#[derive(Serialize, schemars::JsonSchema)]
pub struct ListResponse<T> {
    /// The items.
    pub items: Vec<T>,
    /// Pass as `cursor` for the next page; absent on the last.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

impl<T> From<resources::Listing<T>> for ListResponse<T> {
    fn from(l: resources::Listing<T>) -> Self {
        Self {
            next_cursor: l.next_after.map(encode_cursor),
            items: l.items,
        }
    }
}

fn created<T: Serialize>(v: T) -> Response {
    (StatusCode::CREATED, axum::Json(v)).into_response()
}

fn no_content() -> Response {
    StatusCode::NO_CONTENT.into_response()
}

pub(crate) async fn audit(
    state: &AdminState,
    actor: &Actor,
    action: &str,
    resource: &str,
    id: impl ToString,
    details: serde_json::Value,
) {
    if let Err(e) = state
        .store
        .audit(actor, action, resource, Some(id.to_string()), details)
        .await
    {
        tracing::error!(error = %e, action, resource, "writing the audit log failed");
    }
    // Read your writes: the next request (LDAP, DNS, this API) sees the change even before the
    // change feed's notification arrives.
    let table = match resource {
        "site" => "sites",
        "node" => "nodes",
        "container" => "containers",
        "service" => "services",
        "external_domain" => "external_domains",
        "dns_record" => "dns_records",
        "user" => "users",
        "group" => "groups",
        "api_key" => "api_keys",
        _ => return,
    };
    let mut dirty = Dirty::default();
    dirty.mark(table);
    if let Err(e) = state.store.reload(dirty).await {
        tracing::warn!(error = %e, "snapshot reload after a write failed; the change feed will retry");
    }
}

/// Keys of a JSON object (what changed), never values: secrets stay out of the audit log.
fn fields<T: Serialize>(body: &T) -> serde_json::Value {
    match serde_json::to_value(body) {
        Ok(serde_json::Value::Object(m)) => json!({ "fields": m.keys().collect::<Vec<_>>() }),
        _ => json!({}),
    }
}

fn check_len(field: &str, value: &str, min: usize, max: usize) -> ApiResult<()> {
    let n = value.chars().count();
    if n < min || n > max {
        return Err(ApiError::invalid(
            field,
            format!("{field} must be {min} to {max} characters"),
        ));
    }
    Ok(())
}

fn check_label(field: &str, value: &str) -> ApiResult<()> {
    let ok = !value.is_empty()
        && value.len() <= 63
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        && !value.starts_with('-')
        && !value.ends_with('-');
    if !ok {
        return Err(ApiError::invalid(
            field,
            format!(
                "{field} must be a DNS label (RFC 1123): letters, digits, hyphens, 1-63 characters"
            ),
        ));
    }
    Ok(())
}

fn check_domain(field: &str, value: &str) -> ApiResult<()> {
    let v = value.trim_end_matches('.');
    if v.is_empty() || v.len() > 253 || v.split('.').any(|l| check_label(field, l).is_err()) {
        return Err(ApiError::invalid(
            field,
            format!("{field} must be a domain name like lab.example.org"),
        ));
    }
    Ok(())
}

fn check_url(field: &str, value: &str) -> ApiResult<()> {
    if !(value.starts_with("https://") || value.starts_with("http://"))
        || value.len() > 2048
        || value.contains(char::is_whitespace)
    {
        return Err(ApiError::invalid(
            field,
            format!("{field} must be an http(s) URL"),
        ));
    }
    Ok(())
}

fn check_port(field: &str, value: i32) -> ApiResult<()> {
    if !(1..=65535).contains(&value) {
        return Err(ApiError::invalid(
            field,
            format!("{field} must be 1 to 65535"),
        ));
    }
    Ok(())
}

fn check_mail(field: &str, value: &str) -> ApiResult<()> {
    let ok = value.len() <= 320
        && value
            .split_once('@')
            .is_some_and(|(l, d)| !l.is_empty() && d.contains('.') && !d.contains('@'))
        && !value.contains(char::is_whitespace);
    if !ok {
        return Err(ApiError::invalid(
            field,
            format!("{field} must be an e-mail address"),
        ));
    }
    Ok(())
}

fn check_ssh_keys(keys: &[String]) -> ApiResult<()> {
    for k in keys {
        let mut parts = k.split_whitespace();
        let kind = parts.next().unwrap_or_default();
        let blob = parts.next().unwrap_or_default();
        let known =
            kind.starts_with("ssh-") || kind.starts_with("ecdsa-") || kind.starts_with("sk-");
        if !known || blob.is_empty() || k.contains('\n') || k.len() > 16 * 1024 {
            return Err(ApiError::invalid(
                "ssh_public_keys",
                "each SSH key must be one OpenSSH public key line (ssh-ed25519 AAAA... comment)",
            ));
        }
    }
    Ok(())
}

fn check_forwarders(value: &str) -> ApiResult<()> {
    for part in value.split([',', ' ']).filter(|s| !s.is_empty()) {
        if part.parse::<std::net::IpAddr>().is_err() {
            return Err(ApiError::invalid(
                "dns_forwarders",
                "dns_forwarders must be IP addresses separated by commas",
            ));
        }
    }
    Ok(())
}

// ------------------------------------------------------------------------------ sites

/// A site to create.
#[derive(Debug, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateSite {
    /// Display name.
    pub name: String,
    /// The site's DNS zone.
    pub internal_domain: String,
    /// `first-last` DHCP range inside the subnet.
    pub dhcp_range: Option<String>,
    /// Netmask, e.g. 255.255.255.0.
    pub subnet_mask: Option<std::net::Ipv4Addr>,
    /// Gateway.
    pub gateway: Option<std::net::Ipv4Addr>,
    /// Upstream resolvers, comma-separated.
    pub dns_forwarders: Option<String>,
    /// Public address.
    pub external_ip: Option<std::net::IpAddr>,
}

/// Changes to a site; `null` clears an optional field.
#[derive(Debug, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateSite {
    /// Display name.
    pub name: Option<String>,
    /// Zone.
    pub internal_domain: Option<String>,
    /// DHCP range.
    #[serde(default, deserialize_with = "nullable")]
    pub dhcp_range: Option<Option<String>>,
    /// Netmask.
    #[serde(default, deserialize_with = "nullable")]
    pub subnet_mask: Option<Option<std::net::Ipv4Addr>>,
    /// Gateway.
    #[serde(default, deserialize_with = "nullable")]
    pub gateway: Option<Option<std::net::Ipv4Addr>>,
    /// Resolvers.
    #[serde(default, deserialize_with = "nullable")]
    pub dns_forwarders: Option<Option<String>>,
    /// Public address.
    #[serde(default, deserialize_with = "nullable")]
    pub external_ip: Option<Option<std::net::IpAddr>>,
}

async fn list_sites(
    State(s): State<AdminState>,
    _: Admin,
    Q(q): Q<PageQuery>,
) -> ApiResult<axum::Json<ListResponse<Site>>> {
    Ok(axum::Json(s.store.list_sites(q.page()?).await?.into()))
}

async fn get_site(
    State(s): State<AdminState>,
    _: Admin,
    Path(id): Path<i64>,
) -> ApiResult<axum::Json<Site>> {
    Ok(axum::Json(s.store.site(SiteId(id)).await?))
}

async fn create_site(
    State(s): State<AdminState>,
    Admin(p): Admin,
    Json(b): Json<CreateSite>,
) -> ApiResult<Response> {
    check_len("name", &b.name, 1, 100)?;
    check_domain("internal_domain", &b.internal_domain)?;
    if let Some(f) = &b.dns_forwarders {
        check_forwarders(f)?;
    }
    let site = s
        .store
        .create_site_checked(NewSite {
            name: b.name.clone(),
            internal_domain: b.internal_domain.clone(),
            dhcp_range: b.dhcp_range.clone(),
            subnet_mask: b.subnet_mask,
            gateway: b.gateway,
            dns_forwarders: b.dns_forwarders.clone(),
            external_ip: b.external_ip,
        })
        .await?;
    audit(&s, &p.actor(), "create", "site", site.id, fields(&b)).await;
    Ok(created(site))
}

async fn update_site(
    State(s): State<AdminState>,
    Admin(p): Admin,
    Path(id): Path<i64>,
    Json(b): Json<UpdateSite>,
) -> ApiResult<axum::Json<Site>> {
    if let Some(n) = &b.name {
        check_len("name", n, 1, 100)?;
    }
    if let Some(d) = &b.internal_domain {
        check_domain("internal_domain", d)?;
    }
    if let Some(Some(f)) = &b.dns_forwarders {
        check_forwarders(f)?;
    }
    let details = fields(&b);
    let site = s
        .store
        .update_site(
            SiteId(id),
            SitePatch {
                name: b.name,
                internal_domain: b.internal_domain,
                dhcp_range: b.dhcp_range,
                subnet_mask: b.subnet_mask,
                gateway: b.gateway,
                dns_forwarders: b.dns_forwarders,
                external_ip: b.external_ip,
            },
        )
        .await?;
    audit(&s, &p.actor(), "update", "site", id, details).await;
    Ok(axum::Json(site))
}

async fn delete_site(
    State(s): State<AdminState>,
    Admin(p): Admin,
    Path(id): Path<i64>,
) -> ApiResult<Response> {
    s.store.delete_site(SiteId(id)).await?;
    audit(&s, &p.actor(), "delete", "site", id, json!({})).await;
    Ok(no_content())
}

// ------------------------------------------------------------------------------ nodes

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

/// `?site_id=` filter.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SiteFilter {
    /// 1 to 500.
    pub limit: Option<i64>,
    /// Next page.
    pub cursor: Option<String>,
    /// Only this site's.
    pub site_id: Option<i64>,
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
    Path(id): Path<i64>,
) -> ApiResult<axum::Json<Node>> {
    Ok(axum::Json(s.store.node(NodeId(id)).await?))
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
    Path(id): Path<i64>,
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
            NodeId(id),
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
    Path(id): Path<i64>,
) -> ApiResult<Response> {
    s.store.delete_node(NodeId(id)).await?;
    audit(&s, &p.actor(), "delete", "node", id, json!({})).await;
    Ok(no_content())
}

// ------------------------------------------------------------------------------ containers

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
    /// `pending`, `creating`, `running` or `failed`.
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
    /// Status (admin).
    pub status: Option<String>,
}

fn check_status(s: &Option<String>) -> ApiResult<()> {
    if let Some(v) = s {
        if !["pending", "creating", "running", "failed"].contains(&v.as_str()) {
            return Err(ApiError::invalid(
                "status",
                "status must be pending, creating, running or failed",
            ));
        }
    }
    Ok(())
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
    Path(id): Path<i64>,
) -> ApiResult<axum::Json<ContainerView>> {
    let container = s.store.container(ContainerId(id), p.owner_filter()).await?;
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
    Ok((
        StatusCode::ACCEPTED,
        axum::Json(CreationAccepted { container, job_id }),
    )
        .into_response())
}

async fn job_events(
    State(s): State<AdminState>,
    p: Principal,
    Path(id): Path<i64>,
    headers: axum::http::HeaderMap,
) -> ApiResult<Response> {
    use axum::response::sse::{Event, KeepAlive, Sse};
    let job = JobId(id);
    s.store.job(job, p.uid_filter()).await?;
    let Some(slot) = s.streams.open(p.uid) else {
        return Err(ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "too_many_streams",
            format!(
                "you have {} job event streams open; close one first",
                s.streams.per_user()
            ),
        ));
    };
    let mut last: i64 = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let (tx, rx) = tokio::sync::mpsc::channel::<Event>(64);
    let store = s.store.clone();
    let span = tracing::debug_span!("job_events", job = id, uid = p.uid.0);
    tokio::spawn(
        async move {
            // The slot is held for as long as this task polls.
            let _slot = slot;
            loop {
                let lines = match store.job_lines_after(job, last).await {
                    Ok(l) => l,
                    Err(e) => {
                        tracing::debug!(error = %e, "job event stream ended: reading lines failed");
                        return;
                    }
                };
                for line in lines {
                    last = line.id;
                    let data =
                        json!({ "message": line.message, "at": line.created_at }).to_string();
                    let event = Event::default()
                        .id(line.id.to_string())
                        .event("status")
                        .data(data);
                    if tx.send(event).await.is_err() {
                        return;
                    }
                }
                let status = match store.job(job, None).await {
                    Ok((j, _)) => j.status,
                    Err(e) => {
                        tracing::debug!(error = %e, "job event stream ended: reading the job failed");
                        return;
                    }
                };
                if !matches!(status.as_str(), "pending" | "running") {
                    // Lines written just before the final status go out first.
                    if let Ok(rest) = store.job_lines_after(job, last).await {
                        if !rest.is_empty() {
                            continue;
                        }
                    }
                    let end = Event::default()
                        .event("end")
                        .data(json!({ "status": status }).to_string());
                    // The client may have left already; there is nothing more to send either way.
                    let _ = tx.send(end).await;
                    return;
                }
                // Stop polling the moment the client leaves, not at the job's end.
                tokio::select! {
                    _ = tx.closed() => return,
                    _ = tokio::time::sleep(std::time::Duration::from_millis(100)) => {}
                }
            }
        }
        .instrument(span),
    );
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|event| (Ok::<_, std::convert::Infallible>(event), rx))
    });
    Ok(Sse::new(stream)
        .keep_alive(
            KeepAlive::new()
                .interval(std::time::Duration::from_secs(15))
                .text("heartbeat"),
        )
        .into_response())
}

async fn create_container(
    State(s): State<AdminState>,
    Admin(p): Admin,
    Json(b): Json<CreateContainer>,
) -> ApiResult<Response> {
    check_label("hostname", &b.hostname)?;
    check_status(&b.status)?;
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
            status: b.status,
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
    Path(id): Path<i64>,
    Json(b): Json<UpdateContainer>,
) -> ApiResult<axum::Json<Container>> {
    if let Some(h) = &b.hostname {
        check_label("hostname", h)?;
    }
    check_status(&b.status)?;
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
            let c = s.store.container(ContainerId(id), p.owner_filter()).await?;
            s.jobs.check_template_for(&c, t).await?;
        }
    }
    let details = fields(&b);
    let c = s
        .store
        .update_container(
            ContainerId(id),
            ContainerInput {
                hostname: b.hostname,
                node_id: b.node_id.map(NodeId),
                username: b.username.map(|u| u.map(|u| u.to_ascii_lowercase())),
                status: b.status,
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

/// A job that was started.
#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct JobAccepted {
    /// Follow it at `/api/v1/jobs/{id}/events`.
    job_id: JobId,
}

/// Deletes a container: on Proxmox (stop, destroy with purge) as a job (202), or just the
/// record when it never reached Proxmox (204).
async fn delete_container(
    State(s): State<AdminState>,
    p: Principal,
    Path(id): Path<i64>,
) -> ApiResult<Response> {
    let c = s.store.container(ContainerId(id), p.owner_filter()).await?;
    audit(&s, &p.actor(), "delete", "container", id, json!({})).await;
    let managed = s.store.node(c.node_id).await?.api_url.is_some();
    if c.container_id.is_none() || !managed {
        s.store.delete_container(c.id, p.owner_filter()).await?;
        audit(
            &s,
            &p.actor(),
            "delete",
            "container",
            id,
            json!({ "record_only": true }),
        )
        .await;
        return Ok(no_content());
    }
    let job_id = s.jobs.lifecycle(p.uid, c, None).await?;
    Ok((StatusCode::ACCEPTED, axum::Json(JobAccepted { job_id })).into_response())
}

async fn container_action(
    State(s): State<AdminState>,
    p: Principal,
    Path(id): Path<i64>,
    Json(b): Json<crate::jobs::Lifecycle>,
) -> ApiResult<Response> {
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
    let c = s.store.container(ContainerId(id), p.owner_filter()).await?;
    let details = fields(&b);
    let job_id = s.jobs.lifecycle(p.uid, c, Some(b)).await?;
    audit(&s, &p.actor(), "action", "container", id, details).await;
    Ok((StatusCode::ACCEPTED, axum::Json(JobAccepted { job_id })).into_response())
}

/// `?site_id=` (required) and `?node_id=`.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TemplateQuery {
    /// The site.
    pub site_id: i64,
    /// Only this node's.
    pub node_id: Option<i64>,
}

async fn list_templates(
    State(s): State<AdminState>,
    _: Principal,
    Q(q): Q<TemplateQuery>,
) -> ApiResult<axum::Json<Vec<crate::templates::AllowedTemplate>>> {
    let list = s
        .jobs
        .allowed_templates(SiteId(q.site_id), q.node_id.map(NodeId))
        .await?;
    Ok(axum::Json(list))
}

async fn import_node(
    State(s): State<AdminState>,
    Admin(p): Admin,
    Path(id): Path<i64>,
) -> ApiResult<axum::Json<Vec<Container>>> {
    let imported = s.jobs.import(NodeId(id)).await.map_err(|e| {
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

// ------------------------------------------------------------------------------ services

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
        /// `http` (default) or `https`.
        #[serde(default)]
        backend_protocol: Option<String>,
        /// Require sign-in (the domain needs an auth server).
        #[serde(default)]
        auth_required: bool,
    },
    /// TCP or UDP through the edge NGINX.
    Transport {
        /// Port on the container.
        container_port: i32,
        /// `tcp` or `udp`.
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

async fn owned_container(s: &AdminState, p: &Principal, id: i64) -> ApiResult<ContainerId> {
    Ok(s.store
        .container(ContainerId(id), p.owner_filter())
        .await?
        .id)
}

async fn list_services(
    State(s): State<AdminState>,
    p: Principal,
    Path(id): Path<i64>,
) -> ApiResult<axum::Json<Vec<resources::ServiceView>>> {
    let c = owned_container(&s, &p, id).await?;
    Ok(axum::Json(s.store.list_services(c).await?))
}

async fn get_service(
    State(s): State<AdminState>,
    p: Principal,
    Path((id, sid)): Path<(i64, i64)>,
) -> ApiResult<axum::Json<resources::ServiceView>> {
    let c = owned_container(&s, &p, id).await?;
    Ok(axum::Json(s.store.service(c, ServiceId(sid)).await?))
}

async fn create_service(
    State(s): State<AdminState>,
    p: Principal,
    Path(id): Path<i64>,
    Json(b): Json<CreateService>,
) -> ApiResult<Response> {
    let c = owned_container(&s, &p, id).await?;
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
            crate::auth::reserved::check_http(&s, &external_hostname)?;
            let backend_protocol = backend_protocol.unwrap_or_else(|| "http".into());
            if backend_protocol != "http" && backend_protocol != "https" {
                return Err(ApiError::invalid(
                    "backend_protocol",
                    "backend_protocol must be http or https",
                ));
            }
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
            if protocol != "tcp" && protocol != "udp" {
                return Err(ApiError::invalid("protocol", "protocol must be tcp or udp"));
            }
            if let Some(p) = external_port {
                check_port("external_port", p)?;
            }
            if use_tls && protocol == "udp" {
                return Err(ApiError::invalid(
                    "use_tls",
                    "use_tls is only possible over tcp",
                ));
            }
            crate::auth::reserved::check_transport(&s, external_port, use_tls)?;
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
    audit(&s, &p.actor(), "create", "service", svc.id, details).await;
    Ok(created(svc))
}

async fn delete_service(
    State(s): State<AdminState>,
    p: Principal,
    Path((id, sid)): Path<(i64, i64)>,
) -> ApiResult<Response> {
    let c = owned_container(&s, &p, id).await?;
    s.store.delete_service(c, ServiceId(sid)).await?;
    audit(
        &s,
        &p.actor(),
        "delete",
        "service",
        sid,
        json!({ "container_id": id }),
    )
    .await;
    Ok(no_content())
}

// ------------------------------------------------------------------------------ external domains

/// An external domain. `cloudflare_api_key` is write-only.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DomainBody {
    /// Domain name.
    pub domain: Option<String>,
    /// ACME account e-mail.
    #[serde(default, deserialize_with = "nullable")]
    pub acme_email: Option<Option<String>>,
    /// ACME directory URL.
    #[serde(default, deserialize_with = "nullable")]
    pub acme_directory: Option<Option<String>>,
    /// Cloudflare account e-mail (global key auth).
    #[serde(default, deserialize_with = "nullable")]
    pub cloudflare_api_email: Option<Option<String>>,
    /// Cloudflare API token or global key (write-only).
    #[serde(default, deserialize_with = "nullable")]
    pub cloudflare_api_key: Option<Option<String>>,
    /// Default site.
    #[serde(default, deserialize_with = "nullable")]
    pub site_id: Option<Option<i64>>,
    /// auth_request server URL.
    #[serde(default, deserialize_with = "nullable")]
    pub auth_server: Option<Option<String>>,
}

impl DomainBody {
    fn check(&self) -> ApiResult<()> {
        if let Some(d) = &self.domain {
            check_domain("domain", d)?;
        }
        if let Some(Some(m)) = &self.acme_email {
            check_mail("acme_email", m)?;
        }
        if let Some(Some(u)) = &self.acme_directory {
            check_url("acme_directory", u)?;
        }
        if let Some(Some(u)) = &self.auth_server {
            check_url("auth_server", u)?;
        }
        Ok(())
    }
    fn input(self) -> DomainInput {
        DomainInput {
            domain: self.domain,
            acme_email: self.acme_email,
            acme_directory: self.acme_directory,
            cloudflare_api_email: self.cloudflare_api_email,
            cloudflare_api_key: self.cloudflare_api_key,
            site_id: self.site_id.map(|v| v.map(SiteId)),
            auth_server: self.auth_server,
        }
    }
}

async fn list_domains(
    State(s): State<AdminState>,
    _: Admin,
    Q(q): Q<PageQuery>,
) -> ApiResult<axum::Json<ListResponse<ExternalDomain>>> {
    Ok(axum::Json(s.store.list_domains(q.page()?).await?.into()))
}

async fn get_domain(
    State(s): State<AdminState>,
    _: Admin,
    Path(id): Path<i64>,
) -> ApiResult<axum::Json<ExternalDomain>> {
    Ok(axum::Json(s.store.domain(ExternalDomainId(id)).await?))
}

/// Starts a certificate order for the domain as a job (202; follow `/api/v1/jobs/{id}/events`).
async fn order_certificate(
    State(s): State<AdminState>,
    Admin(p): Admin,
    Path(id): Path<i64>,
) -> ApiResult<Response> {
    let domain = s.store.domain(ExternalDomainId(id)).await?;
    let Some(orders) = s.certificates.clone() else {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "acme_unavailable",
            "certificate orders are not available in this process",
        ));
    };
    let job_id = s
        .store
        .create_job("certificate", &format!("external_domain:{id}"), Some(p.uid))
        .await?;
    audit(
        &s,
        &p.actor(),
        "order_certificate",
        "external_domain",
        id,
        json!({ "domain": domain.domain }),
    )
    .await;
    orders.start(domain.id, job_id);
    Ok((StatusCode::ACCEPTED, axum::Json(JobAccepted { job_id })).into_response())
}

/// The domain's certificate: names, issuer, serial, validity, renewal and last error.
async fn get_certificate(
    State(s): State<AdminState>,
    _: Admin,
    Path(id): Path<i64>,
) -> ApiResult<axum::Json<siteward_store::acme::CertificateInfo>> {
    Ok(axum::Json(s.store.certificate(ExternalDomainId(id)).await?))
}

async fn create_domain(
    State(s): State<AdminState>,
    Admin(p): Admin,
    Json(b): Json<DomainBody>,
) -> ApiResult<Response> {
    if b.domain.is_none() {
        return Err(ApiError::invalid("domain", "domain is required"));
    }
    b.check()?;
    let d = s.store.create_domain(b.input()).await?;
    audit(
        &s,
        &p.actor(),
        "create",
        "external_domain",
        d.id,
        json!({ "domain": d.domain }),
    )
    .await;
    Ok(created(d))
}

async fn update_domain(
    State(s): State<AdminState>,
    Admin(p): Admin,
    Path(id): Path<i64>,
    Json(b): Json<DomainBody>,
) -> ApiResult<axum::Json<ExternalDomain>> {
    b.check()?;
    let key_changed = b.cloudflare_api_key.is_some();
    let d = s
        .store
        .update_domain(ExternalDomainId(id), b.input())
        .await?;
    audit(
        &s,
        &p.actor(),
        "update",
        "external_domain",
        id,
        json!({ "cloudflare_api_key_changed": key_changed }),
    )
    .await;
    Ok(axum::Json(d))
}

async fn delete_domain(
    State(s): State<AdminState>,
    Admin(p): Admin,
    Path(id): Path<i64>,
) -> ApiResult<Response> {
    s.store.delete_domain(ExternalDomainId(id)).await?;
    audit(&s, &p.actor(), "delete", "external_domain", id, json!({})).await;
    Ok(no_content())
}

// ------------------------------------------------------------------------------ dns records

/// A static record.
#[derive(Debug, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateRecord {
    /// Owner relative to the zone (`@` for the apex, `*` for a wildcard).
    pub name: String,
    /// A, AAAA, CNAME, TXT, MX, SRV, CAA, NS or PTR.
    #[serde(rename = "type")]
    pub rtype: String,
    /// Presentation-format RDATA.
    pub value: String,
    /// TTL in seconds (default 300).
    pub ttl: Option<i32>,
}

fn check_record(r: &CreateRecord) -> ApiResult<()> {
    let t = r.rtype.to_ascii_uppercase();
    let v = r.value.trim();
    let ok = match t.as_str() {
        "A" => v.parse::<std::net::Ipv4Addr>().is_ok(),
        "AAAA" => v.parse::<std::net::Ipv6Addr>().is_ok(),
        "CNAME" | "NS" | "PTR" => check_domain("value", v).is_ok(),
        "MX" => v.split_once(' ').is_some_and(|(p, h)| {
            p.parse::<u16>().is_ok() && check_domain("value", h.trim()).is_ok()
        }),
        "SRV" => {
            let f: Vec<&str> = v.split_whitespace().collect();
            f.len() == 4
                && f[..3].iter().all(|n| n.parse::<u16>().is_ok())
                && check_domain("value", f[3]).is_ok()
        }
        "TXT" => !v.is_empty() && v.len() <= 4000,
        "CAA" => v.split_whitespace().count() >= 3,
        _ => {
            return Err(ApiError::invalid(
                "type",
                "type must be A, AAAA, CNAME, TXT, MX, SRV, CAA, NS or PTR",
            ))
        }
    };
    if !ok {
        return Err(ApiError::invalid(
            "value",
            format!("value is not valid {t} data"),
        ));
    }
    if let Some(ttl) = r.ttl {
        if !(0..=604_800).contains(&ttl) {
            return Err(ApiError::invalid("ttl", "ttl must be 0 to 604800"));
        }
    }
    Ok(())
}

async fn list_records(
    State(s): State<AdminState>,
    _: Admin,
    Path(site): Path<i64>,
    Q(q): Q<PageQuery>,
) -> ApiResult<axum::Json<ListResponse<DnsRecord>>> {
    s.store.site(SiteId(site)).await?;
    Ok(axum::Json(
        s.store
            .list_dns_records(SiteId(site), q.page()?)
            .await?
            .into(),
    ))
}

async fn create_record(
    State(s): State<AdminState>,
    Admin(p): Admin,
    Path(site): Path<i64>,
    Json(b): Json<CreateRecord>,
) -> ApiResult<Response> {
    check_record(&b)?;
    let r = s
        .store
        .create_dns_record(
            SiteId(site),
            &b.name,
            &b.rtype,
            b.value.trim(),
            b.ttl.unwrap_or(300),
        )
        .await?;
    audit(&s, &p.actor(), "create", "dns_record", r.id, fields(&b)).await;
    Ok(created(r))
}

async fn delete_record(
    State(s): State<AdminState>,
    Admin(p): Admin,
    Path((site, id)): Path<(i64, i64)>,
) -> ApiResult<Response> {
    s.store
        .delete_dns_record(SiteId(site), DnsRecordId(id))
        .await?;
    audit(
        &s,
        &p.actor(),
        "delete",
        "dns_record",
        id,
        json!({ "site_id": site }),
    )
    .await;
    Ok(no_content())
}

// ------------------------------------------------------------------------------ users

/// A user to create (administrators) or register (anyone).
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateUser {
    /// POSIX login name.
    pub username: String,
    /// Password (8-1024 characters).
    pub password: String,
    /// Given name.
    pub given_name: Option<String>,
    /// Surname.
    pub sn: Option<String>,
    /// Common name (default "given surname").
    pub cn: Option<String>,
    /// E-mail (fixed by the invite when registering with one).
    pub mail: Option<String>,
    /// OpenSSH public keys.
    #[serde(default)]
    pub ssh_public_keys: Vec<String>,
    /// Registration only: an invite token.
    pub invite: Option<String>,
    /// Administrators only: make the user an administrator.
    #[serde(default)]
    pub admin: bool,
}

/// A user as the API shows it (no password hash, ever).
#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct UserView {
    #[serde(flatten)]
    user: User,
    /// Groups by name.
    groups: Vec<String>,
}

fn view(s: &AdminState, user: User) -> UserView {
    let snap = s.store.snapshot();
    let groups = snap
        .identity
        .groups_of
        .get(&user.uid_number)
        .map(|gids| {
            gids.iter()
                .filter_map(|g| snap.identity.groups.get(g))
                .map(|g| g.cn.clone())
                .collect()
        })
        .unwrap_or_default();
    UserView { user, groups }
}

impl CreateUser {
    pub(crate) fn check(&self) -> ApiResult<()> {
        PosixName::parse(&self.username).map_err(|_| ApiError::invalid("username", "username must be a POSIX name: a-z, 0-9, _ . -, starting with a letter or _, at most 32"))?;
        check_len("password", &self.password, 8, 1024)?;
        if let Some(m) = &self.mail {
            check_mail("mail", m)?;
        }
        for (f, v) in [
            ("given_name", &self.given_name),
            ("sn", &self.sn),
            ("cn", &self.cn),
        ] {
            if let Some(v) = v {
                check_len(f, v, 1, 256)?;
            }
        }
        check_ssh_keys(&self.ssh_public_keys)
    }
    pub(crate) fn new_user(self) -> NewUser {
        NewUser {
            username: self.username,
            cn: self.cn,
            sn: self.sn,
            given_name: self.given_name,
            mail: self.mail,
            ssh_public_keys: self.ssh_public_keys,
            password: Some(self.password),
            status: None,
            admin: self.admin,
        }
    }
}

/// Profile changes. `status` only for administrators.
#[derive(Debug, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateUser {
    /// Common name.
    pub cn: Option<String>,
    /// Surname.
    pub sn: Option<String>,
    /// Given name.
    #[serde(default, deserialize_with = "nullable")]
    pub given_name: Option<Option<String>>,
    /// E-mail.
    #[serde(default, deserialize_with = "nullable")]
    pub mail: Option<Option<String>>,
    /// SSH keys (replaces the list).
    pub ssh_public_keys: Option<Vec<String>>,
    /// `pending`, `active` or `suspended` (administrators).
    pub status: Option<UserStatus>,
}

impl UpdateUser {
    pub(crate) fn check(&self) -> ApiResult<()> {
        for (f, v) in [("cn", &self.cn), ("sn", &self.sn)] {
            if let Some(v) = v {
                check_len(f, v, 1, 256)?;
            }
        }
        if let Some(Some(g)) = &self.given_name {
            check_len("given_name", g, 1, 256)?;
        }
        if let Some(Some(m)) = &self.mail {
            check_mail("mail", m)?;
        }
        if let Some(keys) = &self.ssh_public_keys {
            check_ssh_keys(keys)?;
        }
        Ok(())
    }
    pub(crate) fn patch(self) -> UserPatch {
        UserPatch {
            cn: self.cn,
            sn: self.sn,
            given_name: self.given_name,
            mail: self.mail,
            ssh_public_keys: self.ssh_public_keys,
            status: self.status,
        }
    }
}

/// A new password.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SetPassword {
    /// The current password (required when changing one's own).
    pub old_password: Option<String>,
    /// The new password.
    pub password: String,
}

async fn register(
    State(s): State<AdminState>,
    ClientAddr(addr): ClientAddr,
    Json(b): Json<CreateUser>,
) -> ApiResult<Response> {
    let user = crate::accounts::register(&s, b, addr).await?;
    Ok(created(view(&s, user)))
}

async fn me(State(s): State<AdminState>, p: Principal) -> ApiResult<axum::Json<UserView>> {
    Ok(axum::Json(view(&s, s.store.user_by_uid(p.uid).await?)))
}

async fn update_me(
    State(s): State<AdminState>,
    p: Principal,
    Json(b): Json<UpdateUser>,
) -> ApiResult<axum::Json<UserView>> {
    if b.status.is_some() {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "you cannot change your own status",
        )
        .field("status"));
    }
    b.check()?;
    let details = fields(&b);
    let user = s.store.update_user(p.uid, b.patch()).await?;
    audit(&s, &p.actor(), "update", "user", p.uid, details).await;
    Ok(axum::Json(view(&s, user)))
}

async fn change_my_password(
    State(s): State<AdminState>,
    headers: axum::http::HeaderMap,
    p: Principal,
    Json(b): Json<SetPassword>,
) -> ApiResult<Response> {
    let current = s.store.user_by_uid(p.uid).await?;
    let old = b
        .old_password
        .ok_or_else(|| ApiError::invalid("old_password", "old_password is required"))?;
    // Sessions opened with the old password end; a browser changing it keeps its own.
    let keep = match crate::api::extract::live_session(&s, &headers).await? {
        Some((id, info)) if info.uid == p.uid => Some(id),
        _ => None,
    };
    crate::accounts::change_own_password(
        &s,
        &current,
        old,
        b.password,
        keep.as_deref(),
        &p.actor(),
    )
    .await?;
    Ok(no_content())
}

async fn list_users(
    State(s): State<AdminState>,
    _: Admin,
    Q(q): Q<PageQuery>,
) -> ApiResult<axum::Json<ListResponse<UserView>>> {
    let l = s.store.list_users(q.page()?).await?;
    let next = l.next_after;
    Ok(axum::Json(ListResponse {
        items: l.items.into_iter().map(|u| view(&s, u)).collect(),
        next_cursor: next.map(encode_cursor),
    }))
}

async fn get_user(
    State(s): State<AdminState>,
    p: Principal,
    Path(uid): Path<i32>,
) -> ApiResult<axum::Json<UserView>> {
    if !p.is_admin && p.uid != Uid(uid) {
        return Err(ApiError::not_found("user"));
    }
    Ok(axum::Json(view(&s, s.store.user_by_uid(Uid(uid)).await?)))
}

async fn create_user(
    State(s): State<AdminState>,
    Admin(p): Admin,
    Json(b): Json<CreateUser>,
) -> ApiResult<Response> {
    if b.invite.is_some() {
        return Err(ApiError::invalid(
            "invite",
            "invite is for registration; administrators create users directly",
        ));
    }
    b.check()?;
    let user = s.store.create_user(b.new_user()).await?;
    audit(
        &s,
        &p.actor(),
        "create",
        "user",
        user.uid_number,
        json!({ "username": user.username }),
    )
    .await;
    Ok(created(view(&s, user)))
}

async fn update_user(
    State(s): State<AdminState>,
    Admin(p): Admin,
    Path(uid): Path<i32>,
    Json(b): Json<UpdateUser>,
) -> ApiResult<axum::Json<UserView>> {
    b.check()?;
    let suspend = matches!(b.status, Some(UserStatus::Suspended | UserStatus::Pending));
    let details = fields(&b);
    let user = s.store.update_user(Uid(uid), b.patch()).await?;
    if suspend {
        s.store.delete_sessions_of(Uid(uid)).await?;
    }
    audit(&s, &p.actor(), "update", "user", uid, details).await;
    Ok(axum::Json(view(&s, user)))
}

async fn set_user_password(
    State(s): State<AdminState>,
    Admin(p): Admin,
    Path(uid): Path<i32>,
    Json(b): Json<SetPassword>,
) -> ApiResult<Response> {
    let user = s.store.user_by_uid(Uid(uid)).await?;
    // Signs the user out everywhere (a suspected compromise, a forgotten password).
    s.store.set_password(&user.username, b.password).await?;
    audit(&s, &p.actor(), "set_password", "user", uid, json!({})).await;
    Ok(no_content())
}

async fn delete_user(
    State(s): State<AdminState>,
    Admin(p): Admin,
    Path(uid): Path<i32>,
) -> ApiResult<Response> {
    let user = s.store.user_by_uid(Uid(uid)).await?;
    s.store.delete_user(&user.username).await?;
    audit(
        &s,
        &p.actor(),
        "delete",
        "user",
        uid,
        json!({ "username": user.username }),
    )
    .await;
    Ok(no_content())
}

// ------------------------------------------------------------------------------ groups

/// A group to create.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateGroup {
    /// POSIX group name.
    pub cn: String,
    /// Free text.
    pub description: Option<String>,
    /// Members are administrators.
    #[serde(default)]
    pub is_administrator: bool,
}

/// Changes to a group.
#[derive(Debug, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateGroup {
    /// Free text.
    #[serde(default, deserialize_with = "nullable")]
    pub description: Option<Option<String>>,
    /// Members are administrators.
    pub is_administrator: Option<bool>,
}

/// A member to add.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AddMember {
    /// Login name.
    pub username: String,
}

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
    Path(gid): Path<i32>,
) -> ApiResult<axum::Json<Group>> {
    Ok(axum::Json(s.store.group(Gid(gid)).await?))
}

async fn create_group(
    State(s): State<AdminState>,
    Admin(p): Admin,
    Json(b): Json<CreateGroup>,
) -> ApiResult<Response> {
    PosixName::parse(&b.cn)
        .map_err(|_| ApiError::invalid("cn", "cn must be a POSIX group name"))?;
    let mut g = s
        .store
        .create_group(&b.cn, b.description.as_deref())
        .await?;
    if b.is_administrator {
        g = s.store.update_group(g.gid_number, None, Some(true)).await?;
    }
    audit(
        &s,
        &p.actor(),
        "create",
        "group",
        g.gid_number,
        json!({ "cn": g.cn }),
    )
    .await;
    Ok(created(g))
}

async fn update_group(
    State(s): State<AdminState>,
    Admin(p): Admin,
    Path(gid): Path<i32>,
    Json(b): Json<UpdateGroup>,
) -> ApiResult<axum::Json<Group>> {
    let details = fields(&b);
    let g = s
        .store
        .update_group(Gid(gid), b.description, b.is_administrator)
        .await?;
    audit(&s, &p.actor(), "update", "group", gid, details).await;
    Ok(axum::Json(g))
}

async fn delete_group(
    State(s): State<AdminState>,
    Admin(p): Admin,
    Path(gid): Path<i32>,
) -> ApiResult<Response> {
    s.store.delete_group(Gid(gid)).await?;
    audit(&s, &p.actor(), "delete", "group", gid, json!({})).await;
    Ok(no_content())
}

async fn list_members(
    State(s): State<AdminState>,
    _: Admin,
    Path(gid): Path<i32>,
) -> ApiResult<axum::Json<Vec<UserView>>> {
    let users = s.store.group_members(Gid(gid)).await?;
    Ok(axum::Json(users.into_iter().map(|u| view(&s, u)).collect()))
}

async fn add_member(
    State(s): State<AdminState>,
    Admin(p): Admin,
    Path(gid): Path<i32>,
    Json(b): Json<AddMember>,
) -> ApiResult<Response> {
    let g = s.store.group(Gid(gid)).await?;
    s.store.add_group_member(&g.cn, &b.username).await?;
    audit(
        &s,
        &p.actor(),
        "add_member",
        "group",
        gid,
        json!({ "username": b.username.to_ascii_lowercase() }),
    )
    .await;
    Ok(no_content())
}

async fn remove_member(
    State(s): State<AdminState>,
    Admin(p): Admin,
    Path((gid, uid)): Path<(i32, i32)>,
) -> ApiResult<Response> {
    let g = s.store.group(Gid(gid)).await?;
    let u = s.store.user_by_uid(Uid(uid)).await?;
    s.store.remove_group_member(&g.cn, &u.username).await?;
    audit(
        &s,
        &p.actor(),
        "remove_member",
        "group",
        gid,
        json!({ "username": u.username }),
    )
    .await;
    Ok(no_content())
}

// ------------------------------------------------------------------------------ invites and resets

/// An invite to create.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateInvite {
    /// The e-mail the invited user will have.
    pub email: String,
}

/// A token handed out once, with the link to pass on.
#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct IssuedToken {
    #[serde(flatten)]
    info: resources::TokenInfo,
    /// The token (shown only here), when it was not e-mailed.
    #[serde(skip_serializing_if = "Option::is_none")]
    token: Option<String>,
    /// The link that uses it, when it was not e-mailed.
    #[serde(skip_serializing_if = "Option::is_none")]
    link: Option<String>,
    /// Where the link was e-mailed (`smtp_url` set), instead of being shown.
    #[serde(skip_serializing_if = "Option::is_none")]
    sent_to: Option<String>,
}

/// E-mails the link when SMTP is configured and the recipient is known; else hands it back.
async fn issue(
    s: &AdminState,
    info: resources::TokenInfo,
    token: String,
    link: String,
    to: Option<&str>,
    subject: &str,
) -> ApiResult<IssuedToken> {
    if let Some(to) = to {
        let body = format!(
            "{subject}:\n\n{link}\n\nThe link works once and expires at {}.\n",
            info.expires_at
        );
        match crate::mail::send(&s.store, to, subject, body).await {
            Ok(true) => {
                return Ok(IssuedToken {
                    info,
                    token: None,
                    link: None,
                    sent_to: Some(to.to_owned()),
                });
            }
            Ok(false) => {}
            Err(e) => {
                tracing::warn!(error = %e, "e-mailing a link failed");
                return Err(ApiError::new(
                    StatusCode::BAD_GATEWAY,
                    "mail_failed",
                    format!("{e}; the link was not sent"),
                ));
            }
        }
    }
    Ok(IssuedToken {
        info,
        token: Some(token),
        link: Some(link),
        sent_to: None,
    })
}

async fn list_invites(
    State(s): State<AdminState>,
    _: Admin,
) -> ApiResult<axum::Json<Vec<resources::TokenInfo>>> {
    Ok(axum::Json(s.store.list_invites().await?))
}

async fn create_invite(
    State(s): State<AdminState>,
    Admin(p): Admin,
    Json(b): Json<CreateInvite>,
) -> ApiResult<Response> {
    check_mail("email", &b.email)?;
    let (info, token) = s.store.create_invite(&b.email, chrono::Utc::now()).await?;
    audit(
        &s,
        &p.actor(),
        "create",
        "invite",
        info.id,
        json!({ "email": b.email }),
    )
    .await;
    let link = format!("{}/register?invite={token}", s.public_url);
    let issued = issue(
        &s,
        info,
        token,
        link,
        Some(&b.email),
        "You are invited to siteward",
    )
    .await?;
    Ok(created(issued))
}

async fn delete_invite(
    State(s): State<AdminState>,
    Admin(p): Admin,
    Path(id): Path<uuid::Uuid>,
) -> ApiResult<Response> {
    s.store.delete_invite(id).await?;
    audit(&s, &p.actor(), "delete", "invite", id, json!({})).await;
    Ok(no_content())
}

/// Whose password to reset.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateReset {
    /// Login name.
    pub username: String,
}

/// A new password for a reset token.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UseReset {
    /// The new password.
    pub password: String,
}

async fn create_reset(
    State(s): State<AdminState>,
    Admin(p): Admin,
    Json(b): Json<CreateReset>,
) -> ApiResult<Response> {
    let user = s.store.user(&b.username).await?;
    let (info, token) = s
        .store
        .create_password_reset(user.uid_number, chrono::Utc::now())
        .await?;
    audit(
        &s,
        &p.actor(),
        "create",
        "password_reset",
        info.id,
        json!({ "username": user.username }),
    )
    .await;
    let link = format!("{}/reset-password/{token}", s.public_url);
    let issued = issue(
        &s,
        info,
        token,
        link,
        user.mail.as_deref(),
        "Reset your siteward password",
    )
    .await?;
    Ok(created(issued))
}

async fn use_reset(
    State(s): State<AdminState>,
    ClientAddr(addr): ClientAddr,
    Path(token): Path<String>,
    Json(b): Json<UseReset>,
) -> ApiResult<Response> {
    if s.throttle.blocked(addr) {
        return Err(ApiError::rate_limited());
    }
    check_len("password", &b.password, 8, 1024)?;
    match s
        .store
        .consume_password_reset(&token, b.password, chrono::Utc::now())
        .await
    {
        Ok(uid) => {
            let actor = Actor {
                uid: Some(uid),
                name: None,
                remote_addr: addr,
            };
            audit(&s, &actor, "reset_password", "user", uid, json!({})).await;
            Ok(no_content())
        }
        Err(e) => {
            s.throttle.fail(addr);
            Err(e.into())
        }
    }
}

// ------------------------------------------------------------------------------ settings

/// A setting's value.
#[derive(Debug, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SettingValue {
    /// The value.
    pub value: String,
}

/// A setting.
#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct Setting {
    /// Key.
    pub key: String,
    /// Value.
    pub value: String,
}

fn check_key(key: &str) -> ApiResult<()> {
    let ok = key.len() <= 128
        && key.starts_with(|c: char| c.is_ascii_lowercase())
        && key
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '.');
    if !ok {
        return Err(ApiError::invalid(
            "key",
            "key must be lower-case letters, digits, _ and .",
        ));
    }
    Ok(())
}

async fn list_settings(
    State(s): State<AdminState>,
    _: Admin,
) -> ApiResult<axum::Json<Vec<Setting>>> {
    Ok(axum::Json(
        s.store
            .list_settings()
            .await?
            .into_iter()
            .map(|(key, value)| Setting { key, value })
            .collect(),
    ))
}

async fn get_setting(
    State(s): State<AdminState>,
    _: Admin,
    Path(key): Path<String>,
) -> ApiResult<axum::Json<Setting>> {
    let value = s
        .store
        .setting(&key)
        .await?
        .ok_or_else(|| ApiError::not_found("setting"))?;
    Ok(axum::Json(Setting { key, value }))
}

async fn put_setting(
    State(s): State<AdminState>,
    Admin(p): Admin,
    Path(key): Path<String>,
    Json(b): Json<SettingValue>,
) -> ApiResult<axum::Json<Setting>> {
    check_key(&key)?;
    check_len("value", &b.value, 0, 65536)?;
    s.store.set_setting(&key, &b.value).await?;
    audit(&s, &p.actor(), "update", "setting", &key, json!({})).await;
    Ok(axum::Json(Setting {
        key,
        value: b.value,
    }))
}

async fn delete_setting(
    State(s): State<AdminState>,
    Admin(p): Admin,
    Path(key): Path<String>,
) -> ApiResult<Response> {
    s.store.delete_setting(&key).await?;
    audit(&s, &p.actor(), "delete", "setting", &key, json!({})).await;
    Ok(no_content())
}

// ------------------------------------------------------------------------------ api keys

/// An API key to create.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateApiKey {
    /// A label.
    #[serde(default)]
    pub name: String,
    /// Expiry (RFC 3339), if any.
    pub expires_at: Option<chrono::DateTime<chrono::Utc>>,
    /// Administrators only: the owner's login name (default: yourself).
    pub username: Option<String>,
}

/// A created key: the secret appears only in this response.
#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct CreatedApiKey {
    #[serde(flatten)]
    key: ApiKey,
    /// The full key: `Authorization: Bearer <key>`.
    secret: String,
}

async fn list_api_keys(
    State(s): State<AdminState>,
    p: Principal,
) -> ApiResult<axum::Json<Vec<ApiKey>>> {
    Ok(axum::Json(s.store.list_api_keys(p.uid_filter()).await?))
}

async fn create_api_key(
    State(s): State<AdminState>,
    p: Principal,
    Json(b): Json<CreateApiKey>,
) -> ApiResult<Response> {
    check_len("name", &b.name, 0, 200)?;
    let owner = match b.username {
        Some(u) if p.is_admin => u,
        Some(_) => {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                "only administrators create keys for others",
            )
            .field("username"))
        }
        None => p.username.clone(),
    };
    if b.expires_at.is_some_and(|t| t <= chrono::Utc::now()) {
        return Err(ApiError::invalid(
            "expires_at",
            "expires_at must be in the future",
        ));
    }
    let (key, secret) = s
        .store
        .create_api_key(&owner, &b.name, b.expires_at)
        .await?;
    audit(
        &s,
        &p.actor(),
        "create",
        "api_key",
        key.id,
        json!({ "owner": owner, "prefix": key.prefix }),
    )
    .await;
    Ok(created(CreatedApiKey { key, secret }))
}

async fn delete_api_key(
    State(s): State<AdminState>,
    p: Principal,
    Path(id): Path<i64>,
) -> ApiResult<Response> {
    s.store.delete_api_key(ApiKeyId(id), p.uid_filter()).await?;
    audit(&s, &p.actor(), "delete", "api_key", id, json!({})).await;
    Ok(no_content())
}

// ------------------------------------------------------------------------------ jobs, audit

/// A job and its progress.
#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct JobView {
    #[serde(flatten)]
    job: resources::Job,
    /// Progress lines, oldest first.
    statuses: Vec<resources::JobStatus>,
}

async fn list_jobs(
    State(s): State<AdminState>,
    p: Principal,
    Q(q): Q<PageQuery>,
) -> ApiResult<axum::Json<ListResponse<resources::Job>>> {
    Ok(axum::Json(
        s.store.list_jobs(q.page()?, p.uid_filter()).await?.into(),
    ))
}

async fn get_job(
    State(s): State<AdminState>,
    p: Principal,
    Path(id): Path<i64>,
) -> ApiResult<axum::Json<JobView>> {
    let (job, statuses) = s.store.job(JobId(id), p.uid_filter()).await?;
    Ok(axum::Json(JobView { job, statuses }))
}

async fn list_audit(
    State(s): State<AdminState>,
    _: Admin,
    Q(q): Q<PageQuery>,
) -> ApiResult<axum::Json<ListResponse<resources::AuditEntry>>> {
    Ok(axum::Json(s.store.audit_log(q.page()?).await?.into()))
}

// ------------------------------------------------------------------------------ edge (NGINX)

async fn site_nginx_conf(
    State(s): State<AdminState>,
    _: Admin,
    Path(id): Path<i64>,
    Q(mut o): Q<crate::auth::nginx::RenderOptions>,
    headers: axum::http::HeaderMap,
) -> ApiResult<Response> {
    // With no cert_dir given, the files are where this server's ACME side writes them: on this
    // machine, where their presence can be seen.
    let own_files = o.cert_dir.is_none() && s.cert_dir.is_some();
    if o.cert_dir.is_none() {
        o.cert_dir.clone_from(&s.cert_dir);
    }
    let snap = s.store.snapshot();
    let site = snap
        .naming
        .sites
        .get(&SiteId(id))
        .ok_or_else(|| ApiError::not_found("site"))?;
    // Domains without usable certificate files yet get no TLS server (nginx -t would refuse
    // the whole configuration). Known for certain when the files are ours; otherwise: domains
    // this server obtains certificates for (ACME on, an ACME contact) and has none of yet.
    let issued: std::collections::BTreeSet<_> = if own_files || !s.acme_enabled {
        Default::default()
    } else {
        s.store
            .certificates()
            .await?
            .into_iter()
            .filter(|c| c.serial.is_some())
            .map(|c| c.external_domain_id)
            .collect()
    };
    let pending = snap
        .naming
        .external_domains
        .iter()
        .filter(|d| {
            if own_files {
                let dir = std::path::Path::new(o.cert_dir()).join(d.domain.to_ascii_lowercase());
                !(dir.join("fullchain.pem").is_file() && dir.join("privkey.pem").is_file())
            } else {
                s.acme_enabled && d.acme_email.is_some() && !issued.contains(&d.id)
            }
        })
        .map(|d| d.id)
        .collect();
    let text = crate::auth::nginx::render(site, &snap.naming, &s.public_url, &o, &pending)
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    let tag = crate::auth::nginx::etag(&text);
    let matches = headers
        .get(axum::http::header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == tag || t.trim() == "*"));
    let status = if matches {
        StatusCode::NOT_MODIFIED
    } else {
        StatusCode::OK
    };
    let body = if matches { String::new() } else { text };
    Ok((
        status,
        [
            (axum::http::header::ETAG, tag),
            (
                axum::http::header::CONTENT_TYPE,
                "text/plain; charset=utf-8".to_owned(),
            ),
            (axum::http::header::CACHE_CONTROL, "no-cache".to_owned()),
        ],
        body,
    )
        .into_response())
}

/// Groups allowed through sign-in for an HTTP service.
#[derive(Debug, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AllowedGroups {
    /// Group names; empty admits every active user.
    pub groups: Vec<String>,
}

async fn put_allowed_groups(
    State(s): State<AdminState>,
    Admin(p): Admin,
    Path((id, sid)): Path<(i64, i64)>,
    Json(b): Json<AllowedGroups>,
) -> ApiResult<axum::Json<AllowedGroups>> {
    let c = s.store.container(ContainerId(id), None).await?.id;
    s.store.service(c, ServiceId(sid)).await?;
    s.store
        .set_allowed_groups(ServiceId(sid), &b.groups)
        .await?;
    audit(
        &s,
        &p.actor(),
        "update",
        "service",
        sid,
        json!({ "allowed_groups": b.groups }),
    )
    .await;
    Ok(axum::Json(b))
}

// ------------------------------------------------------------------------------ the table

/// Every route of the API, registered in the router and the OpenAPI document together.
pub fn api() -> openapi::Api {
    use openapi::Access::*;
    let mut a = openapi::Api::new();
    a.op::<CreateUser, UserView>(
        post(register),
        "POST",
        "/register",
        "Register an account (the first becomes administrator)",
        "accounts",
        Public,
        201,
    );
    a.op::<(), UserView>(get(me), "GET", "/me", "Your account", "accounts", User, 200);
    a.op::<UpdateUser, UserView>(
        patch(update_me),
        "PATCH",
        "/me",
        "Change your profile",
        "accounts",
        User,
        200,
    );
    a.op::<SetPassword, ()>(
        put(change_my_password),
        "PUT",
        "/me/password",
        "Change your password; every other session of yours ends",
        "accounts",
        User,
        204,
    );

    a.op::<(), ListResponse<Site>>(
        get(list_sites),
        "GET",
        "/sites",
        "List sites",
        "sites",
        Admin,
        200,
    );
    a.op::<CreateSite, Site>(
        post(create_site),
        "POST",
        "/sites",
        "Create a site",
        "sites",
        Admin,
        201,
    );
    a.op::<(), Site>(
        get(get_site),
        "GET",
        "/sites/{id}",
        "Get a site",
        "sites",
        Admin,
        200,
    );
    a.op::<UpdateSite, Site>(
        patch(update_site),
        "PATCH",
        "/sites/{id}",
        "Change a site",
        "sites",
        Admin,
        200,
    );
    a.op::<(), ()>(
        delete(delete_site),
        "DELETE",
        "/sites/{id}",
        "Delete a site",
        "sites",
        Admin,
        204,
    );
    a.op::<(), String>(
        get(site_nginx_conf),
        "GET",
        "/sites/{id}/nginx.conf",
        "Render the site's edge NGINX configuration (ETag; 304 on If-None-Match)",
        "sites",
        Admin,
        200,
    );
    a.op::<AllowedGroups, AllowedGroups>(
        put(put_allowed_groups),
        "PUT",
        "/containers/{id}/services/{sid}/allowed-groups",
        "Set the groups allowed through sign-in to an HTTP service",
        "services",
        Admin,
        200,
    );
    a.op::<(), ListResponse<DnsRecord>>(
        get(list_records),
        "GET",
        "/sites/{id}/dns-records",
        "List a site's static DNS records",
        "dns",
        Admin,
        200,
    );
    a.op::<CreateRecord, DnsRecord>(
        post(create_record),
        "POST",
        "/sites/{id}/dns-records",
        "Add a static DNS record",
        "dns",
        Admin,
        201,
    );
    a.op::<(), ()>(
        delete(delete_record),
        "DELETE",
        "/sites/{id}/dns-records/{record_id}",
        "Remove a static DNS record",
        "dns",
        Admin,
        204,
    );

    a.op::<(), ListResponse<Node>>(
        get(list_nodes),
        "GET",
        "/nodes",
        "List Proxmox nodes",
        "nodes",
        Admin,
        200,
    );
    a.op::<CreateNode, Node>(
        post(create_node),
        "POST",
        "/nodes",
        "Add a Proxmox node",
        "nodes",
        Admin,
        201,
    );
    a.op::<(), Node>(
        get(get_node),
        "GET",
        "/nodes/{id}",
        "Get a node",
        "nodes",
        Admin,
        200,
    );
    a.op::<UpdateNode, Node>(
        patch(update_node),
        "PATCH",
        "/nodes/{id}",
        "Change a node",
        "nodes",
        Admin,
        200,
    );
    a.op::<(), ()>(
        delete(delete_node),
        "DELETE",
        "/nodes/{id}",
        "Remove a node",
        "nodes",
        Admin,
        204,
    );

    a.op::<(), ListResponse<Container>>(
        get(list_containers),
        "GET",
        "/containers",
        "List containers (yours, or all for administrators)",
        "containers",
        User,
        200,
    );
    a.op::<crate::jobs::CreateContainerRequest, CreationAccepted>(
        post(create_container_job),
        "POST",
        "/containers",
        "Create a container on Proxmox (202; a job does the work)",
        "containers",
        User,
        202,
    );
    a.op::<CreateContainer, Container>(
        post(create_container),
        "POST",
        "/containers/register",
        "Register an existing container",
        "containers",
        Admin,
        201,
    );
    a.op::<(), ContainerView>(
        get(get_container),
        "GET",
        "/containers/{id}",
        "Get a container with its live Proxmox state",
        "containers",
        User,
        200,
    );
    a.op::<UpdateContainer, Container>(
        patch(update_container),
        "PATCH",
        "/containers/{id}",
        "Change a container record",
        "containers",
        User,
        200,
    );
    a.op::<crate::jobs::Lifecycle, JobAccepted>(
        post(container_action),
        "POST",
        "/containers/{id}/actions",
        "Start, stop, shut down, restart or reconfigure a container (202; a job does it)",
        "containers",
        User,
        202,
    );
    a.op::<(), Vec<crate::templates::AllowedTemplate>>(
        get(list_templates),
        "GET",
        "/templates",
        "Templates containers may be made from on a site's nodes (?site_id=, ?node_id=)",
        "containers",
        User,
        200,
    );
    a.op::<(), Vec<Container>>(
        post(import_node),
        "POST",
        "/nodes/{id}/import",
        "Register the node's containers siteward does not know yet",
        "nodes",
        Admin,
        200,
    );
    a.op::<(), JobAccepted>(
        delete(delete_container),
        "DELETE",
        "/containers/{id}",
        "Delete a container: destroyed on Proxmox by a job (202), or the record alone when it is not on a managed node (204)",
        "containers",
        User,
        202,
    );
    a.op::<(), Vec<resources::ServiceView>>(
        get(list_services),
        "GET",
        "/containers/{id}/services",
        "List a container's services",
        "containers",
        User,
        200,
    );
    a.op::<CreateService, resources::ServiceView>(
        post(create_service),
        "POST",
        "/containers/{id}/services",
        "Add a service",
        "containers",
        User,
        201,
    );
    a.op::<(), resources::ServiceView>(
        get(get_service),
        "GET",
        "/containers/{id}/services/{service_id}",
        "Get a service",
        "containers",
        User,
        200,
    );
    a.op::<(), ()>(
        delete(delete_service),
        "DELETE",
        "/containers/{id}/services/{service_id}",
        "Remove a service",
        "containers",
        User,
        204,
    );

    a.op::<(), ListResponse<ExternalDomain>>(
        get(list_domains),
        "GET",
        "/external-domains",
        "List external domains",
        "domains",
        Admin,
        200,
    );
    a.op::<DomainBody, ExternalDomain>(
        post(create_domain),
        "POST",
        "/external-domains",
        "Add an external domain",
        "domains",
        Admin,
        201,
    );
    a.op::<(), ExternalDomain>(
        get(get_domain),
        "GET",
        "/external-domains/{id}",
        "Get an external domain",
        "domains",
        Admin,
        200,
    );
    a.op::<DomainBody, ExternalDomain>(
        patch(update_domain),
        "PATCH",
        "/external-domains/{id}",
        "Change an external domain",
        "domains",
        Admin,
        200,
    );
    a.op::<(), ()>(
        delete(delete_domain),
        "DELETE",
        "/external-domains/{id}",
        "Remove an external domain",
        "domains",
        Admin,
        204,
    );
    a.op::<(), JobAccepted>(
        post(order_certificate),
        "POST",
        "/external-domains/{id}/certificate",
        "Order the domain's certificate now (a job)",
        "domains",
        Admin,
        202,
    );
    a.op::<(), siteward_store::acme::CertificateInfo>(
        get(get_certificate),
        "GET",
        "/external-domains/{id}/certificate",
        "The domain's certificate and its renewal state",
        "domains",
        Admin,
        200,
    );

    a.op::<(), ListResponse<UserView>>(
        get(list_users),
        "GET",
        "/users",
        "List users",
        "users",
        Admin,
        200,
    );
    a.op::<CreateUser, UserView>(
        post(create_user),
        "POST",
        "/users",
        "Create an active user",
        "users",
        Admin,
        201,
    );
    a.op::<(), UserView>(
        get(get_user),
        "GET",
        "/users/{uid}",
        "Get a user (yourself, or anyone for administrators)",
        "users",
        User,
        200,
    );
    a.op::<UpdateUser, UserView>(
        patch(update_user),
        "PATCH",
        "/users/{uid}",
        "Change a user, suspend or activate",
        "users",
        Admin,
        200,
    );
    a.op::<(), ()>(
        delete(delete_user),
        "DELETE",
        "/users/{uid}",
        "Delete a user",
        "users",
        Admin,
        204,
    );
    a.op::<SetPassword, ()>(
        put(set_user_password),
        "PUT",
        "/users/{uid}/password",
        "Set a user's password; every session of theirs ends",
        "users",
        Admin,
        204,
    );

    a.op::<(), ListResponse<Group>>(
        get(list_groups),
        "GET",
        "/groups",
        "List groups",
        "groups",
        Admin,
        200,
    );
    a.op::<CreateGroup, Group>(
        post(create_group),
        "POST",
        "/groups",
        "Create a group",
        "groups",
        Admin,
        201,
    );
    a.op::<(), Group>(
        get(get_group),
        "GET",
        "/groups/{gid}",
        "Get a group",
        "groups",
        Admin,
        200,
    );
    a.op::<UpdateGroup, Group>(
        patch(update_group),
        "PATCH",
        "/groups/{gid}",
        "Change a group",
        "groups",
        Admin,
        200,
    );
    a.op::<(), ()>(
        delete(delete_group),
        "DELETE",
        "/groups/{gid}",
        "Delete a group",
        "groups",
        Admin,
        204,
    );
    a.op::<(), Vec<UserView>>(
        get(list_members),
        "GET",
        "/groups/{gid}/members",
        "List members",
        "groups",
        Admin,
        200,
    );
    a.op::<AddMember, ()>(
        post(add_member),
        "POST",
        "/groups/{gid}/members",
        "Add a member",
        "groups",
        Admin,
        204,
    );
    a.op::<(), ()>(
        delete(remove_member),
        "DELETE",
        "/groups/{gid}/members/{uid}",
        "Remove a member",
        "groups",
        Admin,
        204,
    );

    a.op::<(), Vec<resources::TokenInfo>>(
        get(list_invites),
        "GET",
        "/invites",
        "List invites",
        "accounts",
        Admin,
        200,
    );
    a.op::<CreateInvite, IssuedToken>(
        post(create_invite),
        "POST",
        "/invites",
        "Invite someone (valid 24 h)",
        "accounts",
        Admin,
        201,
    );
    a.op::<(), ()>(
        delete(delete_invite),
        "DELETE",
        "/invites/{id}",
        "Revoke an invite",
        "accounts",
        Admin,
        204,
    );
    a.op::<CreateReset, IssuedToken>(
        post(create_reset),
        "POST",
        "/password-resets",
        "Issue a password-reset link (valid 1 h)",
        "accounts",
        Admin,
        201,
    );
    a.op::<UseReset, ()>(
        post(use_reset),
        "POST",
        "/password-resets/{token}",
        "Set a new password with a reset token",
        "accounts",
        Public,
        204,
    );

    a.op::<(), Vec<Setting>>(
        get(list_settings),
        "GET",
        "/settings",
        "List settings",
        "settings",
        Admin,
        200,
    );
    a.op::<(), Setting>(
        get(get_setting),
        "GET",
        "/settings/{key}",
        "Get a setting",
        "settings",
        Admin,
        200,
    );
    a.op::<SettingValue, Setting>(
        put(put_setting),
        "PUT",
        "/settings/{key}",
        "Set a setting",
        "settings",
        Admin,
        200,
    );
    a.op::<(), ()>(
        delete(delete_setting),
        "DELETE",
        "/settings/{key}",
        "Remove a setting",
        "settings",
        Admin,
        204,
    );

    a.op::<(), Vec<ApiKey>>(
        get(list_api_keys),
        "GET",
        "/api-keys",
        "List API keys (yours, or all for administrators)",
        "accounts",
        User,
        200,
    );
    a.op::<CreateApiKey, CreatedApiKey>(
        post(create_api_key),
        "POST",
        "/api-keys",
        "Create an API key (shown once)",
        "accounts",
        User,
        201,
    );
    a.op::<(), ()>(
        delete(delete_api_key),
        "DELETE",
        "/api-keys/{id}",
        "Revoke an API key",
        "accounts",
        User,
        204,
    );

    a.op::<(), ListResponse<resources::Job>>(
        get(list_jobs),
        "GET",
        "/jobs",
        "List jobs (yours, or all for administrators)",
        "jobs",
        User,
        200,
    );
    a.op::<(), JobView>(
        get(get_job),
        "GET",
        "/jobs/{id}",
        "Get a job and its progress",
        "jobs",
        User,
        200,
    );
    a.op::<(), ()>(
        get(job_events),
        "GET",
        "/jobs/{id}/events",
        "Follow a job as server-sent events (earlier lines replayed, heartbeat, end event)",
        "jobs",
        User,
        200,
    );
    a.op::<(), ListResponse<resources::AuditEntry>>(
        get(list_audit),
        "GET",
        "/audit",
        "Read the audit log, newest first",
        "audit",
        Admin,
        200,
    );
    a
}

/// The `/api` router: `/api/v1/...`, `/api/openapi.json`, `/api/docs`.
pub fn router() -> Router<AdminState> {
    let api = api();
    let doc = std::sync::Arc::new(api.document());
    let html = std::sync::Arc::new(openapi::reference_page(&doc));
    let v1 = api
        .router
        .fallback(|| async { ApiError::not_found("route") });
    let doc2 = doc.clone();
    Router::new()
        .nest("/api/v1", v1)
        .route(
            "/api/openapi.json",
            get(move || async move { axum::Json((*doc2).clone()) }),
        )
        .route(
            "/api/docs",
            get(move || async move { axum::response::Html((*html).clone()) }),
        )
}

#[allow(dead_code)]
fn _assert_method_router(_: MethodRouter<AdminState>) {}

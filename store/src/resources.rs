//! Create / read / update / delete of the admin API's resources, with the validation that needs
//! the database (subnets, port allocation) and keyset pagination. Every list is ordered by id
//! and continues after the last id of the previous page.

use std::net::Ipv4Addr;

use chrono::{DateTime, Duration, Utc};
use rand::RngCore;
use serde::Serialize;
use sqlx::{Postgres, QueryBuilder};

use serde_json::json;

use crate::audit::{fields, record};
use crate::error::{Result, StoreError};
use crate::models::*;
use crate::queries::{CLOUDFLARE_KEY_CONTEXT, NODE_SECRET_CONTEXT};
use crate::Store;

/// One page of a list.
#[derive(Debug, Clone, Copy)]
pub struct Page {
    /// At most this many items (1-500).
    pub limit: i64,
    /// Continue after this id.
    pub after: Option<i64>,
}

impl Default for Page {
    fn default() -> Self {
        Self {
            limit: 50,
            after: None,
        }
    }
}

/// A page of items and the cursor of the next one.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct Listing<T> {
    /// The items.
    pub items: Vec<T>,
    /// The last id of this page when there may be more.
    #[serde(skip)]
    pub next_after: Option<i64>,
}

pub(crate) fn listing<T>(mut items: Vec<T>, page: Page, id: impl Fn(&T) -> i64) -> Listing<T> {
    let more = items.len() as i64 > page.limit;
    items.truncate(page.limit as usize);
    let next_after = if more { items.last().map(id) } else { None };
    Listing { items, next_after }
}

fn invalid(field: &str, message: impl Into<String>) -> StoreError {
    StoreError::Invalid {
        field: field.into(),
        message: message.into(),
    }
}

fn not_found(entity: &'static str) -> StoreError {
    StoreError::NotFound { entity }
}

/// A change to one column: `None` leaves it, `Some(None)` clears it.
pub type Patch<T> = Option<Option<T>>;

/// Builds `UPDATE <table> SET a = $1, b = $2 WHERE <key> = $n RETURNING <cols>`.
struct Update<'a> {
    qb: QueryBuilder<'a, Postgres>,
    any: bool,
    /// The columns set, for the audit row (names only, never values).
    columns: Vec<String>,
}

impl<'a> Update<'a> {
    fn new(table: &str) -> Self {
        Self {
            qb: QueryBuilder::new(format!("UPDATE {table} SET ")),
            any: false,
            columns: Vec::new(),
        }
    }
    fn set<T>(&mut self, column: &str, value: T)
    where
        T: 'a + sqlx::Encode<'a, Postgres> + sqlx::Type<Postgres> + Send,
    {
        if self.any {
            self.qb.push(", ");
        }
        self.any = true;
        self.columns.push(column.to_owned());
        self.qb.push(column).push(" = ").push_bind(value);
    }
    /// `{"fields": [...]}`: what the update changes.
    fn details(&self) -> serde_json::Value {
        serde_json::json!({ "fields": self.columns })
    }
    fn finish(mut self, key: &str, id: i64, returning: &str) -> QueryBuilder<'a, Postgres> {
        if !self.any {
            // Nothing to change: a no-op update still returns the row (and 404s when missing).
            self.qb.push(format!("{key} = {key}"));
        }
        self.qb
            .push(format!(" WHERE {key} = "))
            .push_bind(id)
            .push(format!(" RETURNING {returning}"));
        self.qb
    }
}

fn ip(a: Option<Ipv4Addr>) -> Option<ipnetwork::IpNetwork> {
    a.map(|a| ipnetwork::IpNetwork::from(std::net::IpAddr::V4(a)))
}

/// Parses `a.b.c.d-e.f.g.h`.
pub fn parse_range(text: &str) -> Option<(Ipv4Addr, Ipv4Addr)> {
    let (a, b) = text.split_once('-')?;
    let (a, b): (Ipv4Addr, Ipv4Addr) = (a.trim().parse().ok()?, b.trim().parse().ok()?);
    (u32::from(a) <= u32::from(b)).then_some((a, b))
}

/// Checks a site's network fields against each other.
pub(crate) fn check_site_network(site: &Site) -> Result<()> {
    if let Some(mask) = site.subnet_mask {
        let bits = u32::from(mask);
        if bits.leading_ones() + bits.trailing_zeros() != 32 {
            return Err(invalid("subnet_mask", "is not a contiguous netmask"));
        }
    }
    if let Some(range) = &site.dhcp_range {
        let (a, b) = parse_range(range)
            .ok_or_else(|| invalid("dhcp_range", "must be first-last with first <= last"))?;
        if let Some(net) = site.subnet() {
            if !net.contains(a) || !net.contains(b) {
                return Err(invalid("dhcp_range", format!("must lie inside {net}")));
            }
        }
    }
    Ok(())
}

/// Checks that a static address lies in the site's subnet and outside its DHCP range.
pub fn check_static_address(site: &Site, addr: Ipv4Addr) -> Result<()> {
    if let Some(net) = site.subnet() {
        if !net.contains(addr) {
            return Err(invalid(
                "ipv4_address",
                format!("must lie inside the site's subnet {net}"),
            ));
        }
        if addr == net.network() || addr == net.broadcast() {
            return Err(invalid(
                "ipv4_address",
                "is the subnet's network or broadcast address",
            ));
        }
        if Some(addr) == site.gateway {
            return Err(invalid("ipv4_address", "is the site's gateway"));
        }
    }
    if let Some((a, b)) = site.dhcp_range.as_deref().and_then(parse_range) {
        if (u32::from(a)..=u32::from(b)).contains(&u32::from(addr)) {
            return Err(invalid("ipv4_address", "lies inside the site's DHCP range"));
        }
    }
    Ok(())
}

/// Fields of a site that can change.
#[derive(Debug, Clone, Default)]
pub struct SitePatch {
    /// Display name.
    pub name: Option<String>,
    /// Zone.
    pub internal_domain: Option<String>,
    /// DHCP range.
    pub dhcp_range: Patch<String>,
    /// Netmask.
    pub subnet_mask: Patch<Ipv4Addr>,
    /// Gateway.
    pub gateway: Patch<Ipv4Addr>,
    /// Forwarders.
    pub dns_forwarders: Patch<String>,
    /// Public address.
    pub external_ip: Patch<std::net::IpAddr>,
}

/// Fields of a node that can change.
#[derive(Debug, Clone, Default)]
pub struct NodePatch {
    /// Proxmox name.
    pub name: Option<String>,
    /// Address.
    pub ipv4_address: Patch<Ipv4Addr>,
    /// API URL.
    pub api_url: Patch<String>,
    /// Token id or user.
    pub api_token_id_or_username: Patch<String>,
    /// Secret (sealed before storing).
    pub api_token_secret_or_password: Patch<String>,
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

/// A container record to register. `hostname` and `node_id` are required; the rest may be left
/// out (status defaults to `pending`).
#[derive(Debug, Clone)]
pub struct NewContainer {
    /// Host name.
    pub hostname: String,
    /// Node.
    pub node_id: NodeId,
    /// Owner.
    pub username: Option<String>,
    /// Status (`pending` when `None`).
    pub status: Option<ContainerStatus>,
    /// Template.
    pub template: Option<String>,
    /// VMID.
    pub container_id: Option<i32>,
    /// MAC.
    pub mac_address: Option<String>,
    /// Static IPv4.
    pub ipv4_address: Option<Ipv4Addr>,
    /// GPU.
    pub nvidia_requested: bool,
}

/// The fields of a container record to change: `None` leaves a field as it is; for a nullable
/// field, `Some(None)` clears it.
#[derive(Debug, Clone, Default)]
pub struct ContainerPatch {
    /// Host name.
    pub hostname: Option<String>,
    /// Node.
    pub node_id: Option<NodeId>,
    /// Owner.
    pub username: Patch<String>,
    /// Status.
    pub status: Option<ContainerStatus>,
    /// Template.
    pub template: Patch<String>,
    /// VMID.
    pub container_id: Patch<i32>,
    /// MAC.
    pub mac_address: Patch<String>,
    /// Static IPv4.
    pub ipv4_address: Patch<Ipv4Addr>,
    /// GPU.
    pub nvidia_requested: Option<bool>,
}

/// A service to add to a container.
#[derive(Debug, Clone)]
pub enum ServiceInput {
    /// Exposed through NGINX over HTTP(S).
    Http {
        /// Port on the container.
        container_port: i32,
        /// Label under the domain.
        external_hostname: String,
        /// Domain.
        external_domain_id: ExternalDomainId,
        /// Backend scheme.
        backend_protocol: BackendProtocol,
        /// auth_request.
        auth_required: bool,
    },
    /// TCP/UDP through NGINX stream.
    Transport {
        /// Port on the container.
        container_port: i32,
        /// Protocol.
        protocol: TransportProtocol,
        /// Edge port; allocated from the range when `None`.
        external_port: Option<i32>,
        /// Terminate TLS.
        use_tls: bool,
    },
    /// SRV record.
    Dns {
        /// Port on the container.
        container_port: i32,
        /// `_name._proto`.
        service_name: String,
    },
}

/// Any service of a container, as the API shows it.
#[derive(Debug, Clone, Serialize, sqlx::FromRow, schemars::JsonSchema)]
pub struct ServiceView {
    /// Id.
    pub id: ServiceId,
    /// Container.
    pub container_id: ContainerId,
    /// Kind.
    #[sqlx(rename = "type")]
    #[serde(rename = "type")]
    pub kind: ServiceKind,
    /// Port on the container.
    pub container_port: i32,
    /// HTTP: label.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub external_hostname: Option<String>,
    /// HTTP: domain.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub external_domain_id: Option<ExternalDomainId>,
    /// HTTP: backend scheme.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backend_protocol: Option<BackendProtocol>,
    /// HTTP: auth_request.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub auth_required: Option<bool>,
    /// Transport: protocol.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub protocol: Option<TransportProtocol>,
    /// Transport: edge port.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub external_port: Option<i32>,
    /// Transport: TLS.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub use_tls: Option<bool>,
    /// DNS: SRV owner prefix.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub service_name: Option<String>,
}

const SERVICE_SELECT: &str = "SELECT s.id, s.container_id, s.type::text AS type, s.container_port,
        h.external_hostname, h.external_domain_id, h.backend_protocol, h.auth_required,
        t.protocol, t.external_port, t.use_tls, d.service_name
    FROM services s
    LEFT JOIN http_services h ON h.service_id = s.id
    LEFT JOIN transport_services t ON t.service_id = s.id
    LEFT JOIN dns_services d ON d.service_id = s.id";

/// An external domain to add. `domain` is required.
#[derive(Debug, Clone, Serialize)]
pub struct NewDomain {
    /// Domain name.
    pub domain: String,
    /// ACME e-mail.
    pub acme_email: Option<String>,
    /// ACME directory.
    pub acme_directory: Option<String>,
    /// Cloudflare e-mail.
    pub cloudflare_api_email: Option<String>,
    /// Cloudflare key or token (sealed before it is stored; the audit row names fields only).
    pub cloudflare_api_key: Option<String>,
    /// Default site.
    pub site_id: Option<SiteId>,
    /// auth_request server.
    pub auth_server: Option<String>,
}

impl NewDomain {
    /// A domain with nothing else set.
    pub fn named(domain: impl Into<String>) -> Self {
        Self {
            domain: domain.into(),
            acme_email: None,
            acme_directory: None,
            cloudflare_api_email: None,
            cloudflare_api_key: None,
            site_id: None,
            auth_server: None,
        }
    }
}

/// The fields of an external domain to change: `None` leaves a field as it is; for a nullable
/// field, `Some(None)` clears it.
#[derive(Debug, Clone, Default)]
pub struct DomainPatch {
    /// Domain name.
    pub domain: Option<String>,
    /// ACME e-mail.
    pub acme_email: Patch<String>,
    /// ACME directory.
    pub acme_directory: Patch<String>,
    /// Cloudflare e-mail.
    pub cloudflare_api_email: Patch<String>,
    /// Cloudflare key or token (sealed).
    pub cloudflare_api_key: Patch<String>,
    /// Default site.
    pub site_id: Patch<SiteId>,
    /// auth_request server.
    pub auth_server: Patch<String>,
}

/// User fields an API caller may change.
#[derive(Debug, Clone, Default)]
pub struct UserPatch {
    /// Common name.
    pub cn: Option<String>,
    /// Surname.
    pub sn: Option<String>,
    /// Given name.
    pub given_name: Patch<String>,
    /// E-mail.
    pub mail: Patch<String>,
    /// SSH keys.
    pub ssh_public_keys: Option<Vec<String>>,
    /// Account state (admins only; enforced by the caller).
    pub status: Option<UserStatus>,
}

/// A job with its progress lines.
#[derive(Debug, Clone, Serialize, sqlx::FromRow, schemars::JsonSchema)]
pub struct Job {
    /// Id.
    pub id: JobId,
    /// What it does.
    pub name: String,
    /// What it acts on.
    pub associated_resource: Option<String>,
    /// State.
    pub status: JobState,
    /// Who started it.
    pub owner_uid: Option<Uid>,
    /// Creation.
    pub created_at: DateTime<Utc>,
    /// Last change.
    pub updated_at: DateTime<Utc>,
}

/// One progress line of a job.
#[derive(Debug, Clone, Serialize, sqlx::FromRow, schemars::JsonSchema)]
pub struct JobStatus {
    /// Id (ascending).
    pub id: i64,
    /// The line.
    pub message: String,
    /// When.
    pub created_at: DateTime<Utc>,
}

pub use crate::audit::{Actor, AuditEntry, Via};

/// A token handed out once (invite or password reset).
#[derive(Debug, Clone, Serialize, sqlx::FromRow, schemars::JsonSchema)]
pub struct TokenInfo {
    /// Id.
    pub id: uuid::Uuid,
    /// Invite: the e-mail it is for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    /// Reset: the user it is for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uid_number: Option<Uid>,
    /// Expiry.
    pub expires_at: DateTime<Utc>,
    /// Already used.
    pub used: bool,
    /// Creation.
    pub created_at: DateTime<Utc>,
}

/// A fresh random token and its SHA-256 (hex), which is what is stored.
pub fn new_token() -> (String, String) {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    let token = hex(&bytes);
    let hash = token_hash(&token);
    (token, hash)
}

/// SHA-256 of a token, hex.
pub fn token_hash(token: &str) -> String {
    use sha2::Digest;
    hex(&sha2::Sha256::digest(token.as_bytes()))
}

/// Lower-case hex.
fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
    out
}

const SITE_COLS: &str = crate::queries::SITE_COLUMNS;
const NODE_COLS: &str = crate::queries::NODE_COLUMNS;
const CONTAINER_COLS: &str = crate::queries::CONTAINER_COLUMNS;
const DOMAIN_COLS: &str = crate::queries::EXTERNAL_DOMAIN_COLUMNS;
const USER_COLS: &str = "uid_number, username, cn, sn, given_name, mail, ssh_public_key, \
     user_password, status, password_changed_at, created_at, updated_at";
const GROUP_COLS: &str = "gid_number, cn, description, is_administrator, created_at, updated_at";

impl Store {
    // ------------------------------------------------------------------ sites

    /// Lists sites.
    pub async fn list_sites(&self, page: Page) -> Result<Listing<Site>> {
        let rows: Vec<SiteRow> = sqlx::query_as(&format!(
            "SELECT {SITE_COLS} FROM sites WHERE ($1::bigint IS NULL OR id > $1) ORDER BY id LIMIT $2"
        ))
        .bind(page.after)
        .bind(page.limit + 1)
        .fetch_all(self.pool())
        .await?;
        Ok(listing(
            rows.into_iter().map(Site::from).collect(),
            page,
            |s| s.id.0,
        ))
    }

    /// One site.
    pub async fn site(&self, id: SiteId) -> Result<Site> {
        let row: Option<SiteRow> =
            sqlx::query_as(&format!("SELECT {SITE_COLS} FROM sites WHERE id = $1"))
                .bind(id)
                .fetch_optional(self.pool())
                .await?;
        row.map(Site::from).ok_or(not_found("site"))
    }

    /// Changes a site.
    pub async fn update_site(&self, id: SiteId, p: SitePatch, by: &Actor) -> Result<Site> {
        let mut tx = self.pool().begin().await?;
        let mut u = Update::new("sites");
        if let Some(v) = p.name {
            u.set("name", v);
        }
        if let Some(v) = p.internal_domain {
            u.set(
                "internal_domain",
                v.trim_end_matches('.').to_ascii_lowercase(),
            );
        }
        if let Some(v) = p.dhcp_range {
            u.set("dhcp_range", v);
        }
        if let Some(v) = p.subnet_mask {
            u.set("subnet_mask", ip(v));
        }
        if let Some(v) = p.gateway {
            u.set("gateway", ip(v));
        }
        if let Some(v) = p.dns_forwarders {
            u.set("dns_forwarders", v);
        }
        if let Some(v) = p.external_ip {
            u.set("external_ip", v.map(ipnetwork::IpNetwork::from));
        }
        let details = u.details();
        let row: Option<SiteRow> = u
            .finish("id", id.0, SITE_COLS)
            .build_query_as()
            .fetch_optional(&mut *tx)
            .await?;
        let site = Site::from(row.ok_or(not_found("site"))?);
        check_site_network(&site)?;
        record(&mut tx, by, "update", "site", id, details).await?;
        tx.commit().await?;
        self.refreshed(&["sites"]).await;
        Ok(site)
    }

    /// Deletes a site (refused while it has nodes).
    pub async fn delete_site(&self, id: SiteId, by: &Actor) -> Result<()> {
        delete_by_id(self, "sites", id.0, "site", "site", by).await
    }

    // ------------------------------------------------------------------ nodes

    /// Lists nodes, optionally of one site.
    pub async fn list_nodes(&self, page: Page, site: Option<SiteId>) -> Result<Listing<Node>> {
        let rows: Vec<NodeRow> = sqlx::query_as(&format!(
            "SELECT {NODE_COLS} FROM nodes WHERE ($1::bigint IS NULL OR id > $1)
               AND ($3::bigint IS NULL OR site_id = $3) ORDER BY id LIMIT $2"
        ))
        .bind(page.after)
        .bind(page.limit + 1)
        .bind(site)
        .fetch_all(self.pool())
        .await?;
        Ok(listing(
            rows.into_iter().map(Node::from).collect(),
            page,
            |n| n.id.0,
        ))
    }

    /// One node.
    pub async fn node(&self, id: NodeId) -> Result<Node> {
        let row: Option<NodeRow> =
            sqlx::query_as(&format!("SELECT {NODE_COLS} FROM nodes WHERE id = $1"))
                .bind(id)
                .fetch_optional(self.pool())
                .await?;
        row.map(Node::from).ok_or(not_found("node"))
    }

    /// Changes a node; a new secret is sealed.
    pub async fn update_node(&self, id: NodeId, p: NodePatch, by: &Actor) -> Result<Node> {
        let mut u = Update::new("nodes");
        if let Some(v) = p.name {
            u.set("name", v.to_ascii_lowercase());
        }
        if let Some(v) = p.ipv4_address {
            u.set("ipv4_address", ip(v));
        }
        if let Some(v) = p.api_url {
            u.set("api_url", v);
        }
        if let Some(v) = p.api_token_id_or_username {
            u.set("api_token_id_or_username", v);
        }
        if let Some(v) = p.api_token_secret_or_password {
            let sealed = v
                .map(|s| self.secrets().seal(NODE_SECRET_CONTEXT, s.as_bytes()))
                .transpose()?;
            u.set("api_token_secret_or_password", sealed);
        }
        if let Some(v) = p.disable_tls_verification {
            u.set("disable_tls_verification", v);
        }
        if let Some(v) = p.image_storage {
            u.set("image_storage", v);
        }
        if let Some(v) = p.volume_storage {
            u.set("volume_storage", v);
        }
        if let Some(v) = p.network_bridge {
            u.set("network_bridge", v);
        }
        if let Some(v) = p.nvidia_available {
            u.set("nvidia_available", v);
        }
        let details = u.details();
        let mut tx = self.pool().begin().await?;
        let row: Option<NodeRow> = u
            .finish("id", id.0, NODE_COLS)
            .build_query_as()
            .fetch_optional(&mut *tx)
            .await?;
        let node = row.map(Node::from).ok_or(not_found("node"))?;
        record(&mut tx, by, "update", "node", id, details).await?;
        tx.commit().await?;
        self.refreshed(&["nodes"]).await;
        Ok(node)
    }

    /// Deletes a node (refused while it hosts containers).
    pub async fn delete_node(&self, id: NodeId, by: &Actor) -> Result<()> {
        delete_by_id(self, "nodes", id.0, "node", "node", by).await
    }

    // ------------------------------------------------------------------ containers

    /// Lists containers; `owner` restricts to one user's.
    pub async fn list_containers(
        &self,
        page: Page,
        owner: Option<&str>,
        site: Option<SiteId>,
    ) -> Result<Listing<Container>> {
        let rows: Vec<ContainerRow> = sqlx::query_as(&format!(
            "SELECT {CONTAINER_COLS} FROM containers WHERE ($1::bigint IS NULL OR id > $1)
               AND ($3::text IS NULL OR username = $3) AND ($4::bigint IS NULL OR site_id = $4)
             ORDER BY id LIMIT $2"
        ))
        .bind(page.after)
        .bind(page.limit + 1)
        .bind(owner)
        .bind(site)
        .fetch_all(self.pool())
        .await?;
        Ok(listing(
            rows.into_iter().map(Container::from).collect(),
            page,
            |c| c.id.0,
        ))
    }

    /// One container; `owner` restricts to one user's (others are "not found").
    pub async fn container(&self, id: ContainerId, owner: Option<&str>) -> Result<Container> {
        let row: Option<ContainerRow> = sqlx::query_as(&format!(
            "SELECT {CONTAINER_COLS} FROM containers WHERE id = $1 AND ($2::text IS NULL OR username = $2)"
        ))
        .bind(id)
        .bind(owner)
        .fetch_optional(self.pool())
        .await?;
        row.map(Container::from).ok_or(not_found("container"))
    }

    async fn check_container_address(&self, node: NodeId, addr: Option<Ipv4Addr>) -> Result<()> {
        let Some(addr) = addr else { return Ok(()) };
        let site_id: Option<i64> = sqlx::query_scalar("SELECT site_id FROM nodes WHERE id = $1")
            .bind(node)
            .fetch_optional(self.pool())
            .await?;
        let site = self
            .site(SiteId(
                site_id.ok_or_else(|| invalid("node_id", "no such node"))?,
            ))
            .await?;
        check_static_address(&site, addr)
    }

    /// Registers a container record.
    pub async fn create_container(&self, c: NewContainer, by: &Actor) -> Result<Container> {
        let hostname = c.hostname;
        let node = c.node_id;
        let addr = c.ipv4_address;
        self.check_container_address(node, addr).await?;
        let mac = parse_mac(c.mac_address)?;
        let mut tx = self.pool().begin().await?;
        let row: ContainerRow = sqlx::query_as(&format!(
            "INSERT INTO containers (hostname, node_id, username, status, template, container_id,
                                     mac_address, ipv4_address, nvidia_requested)
             VALUES (lower($1), $2, $3, COALESCE($4, 'pending'), $5, $6, $7, $8, $9)
             RETURNING {CONTAINER_COLS}"
        ))
        .bind(hostname)
        .bind(node)
        .bind(c.username)
        .bind(c.status)
        .bind(c.template)
        .bind(c.container_id)
        .bind(mac)
        .bind(ip(addr))
        .bind(c.nvidia_requested)
        .fetch_one(&mut *tx)
        .await?;
        let container = Container::from(row);
        let details = json!({ "record_only": true, "node_id": node });
        record(&mut tx, by, "create", "container", container.id, details).await?;
        tx.commit().await?;
        self.refreshed(&["containers"]).await;
        Ok(container)
    }

    /// Changes a container record.
    pub async fn update_container(
        &self,
        id: ContainerId,
        c: ContainerPatch,
        owner: Option<&str>,
        by: &Actor,
    ) -> Result<Container> {
        let current = self.container(id, owner).await?;
        let node = c.node_id.unwrap_or(current.node_id);
        let addr = match c.ipv4_address {
            Some(v) => v,
            None => current.ipv4_address,
        };
        self.check_container_address(node, addr).await?;
        let mut u = Update::new("containers");
        if let Some(v) = c.hostname {
            u.set("hostname", v.to_ascii_lowercase());
        }
        if let Some(v) = c.node_id {
            u.set("node_id", v);
        }
        if let Some(v) = c.username {
            u.set("username", v);
        }
        if let Some(v) = c.status {
            u.set("status", v.as_str());
        }
        if let Some(v) = c.template {
            u.set("template", v);
        }
        if let Some(v) = c.container_id {
            u.set("container_id", v);
        }
        if let Some(v) = c.mac_address {
            u.set("mac_address", parse_mac(v)?);
        }
        if let Some(v) = c.ipv4_address {
            u.set("ipv4_address", ip(v));
        }
        if let Some(v) = c.nvidia_requested {
            u.set("nvidia_requested", v);
        }
        let details = u.details();
        let mut tx = self.pool().begin().await?;
        let row: Option<ContainerRow> = u
            .finish("id", id.0, CONTAINER_COLS)
            .build_query_as()
            .fetch_optional(&mut *tx)
            .await?;
        let container = row.map(Container::from).ok_or(not_found("container"))?;
        record(&mut tx, by, "update", "container", id, details).await?;
        tx.commit().await?;
        self.refreshed(&["containers"]).await;
        Ok(container)
    }

    /// Deletes a container record (its services go with it).
    pub async fn delete_container(
        &self,
        id: ContainerId,
        owner: Option<&str>,
        by: &Actor,
    ) -> Result<()> {
        let mut tx = self.pool().begin().await?;
        let done = sqlx::query(
            "DELETE FROM containers WHERE id = $1 AND ($2::text IS NULL OR username = $2)",
        )
        .bind(id)
        .bind(owner)
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() == 0 {
            return Err(not_found("container"));
        }
        record(&mut tx, by, "delete", "container", id, json!({})).await?;
        tx.commit().await?;
        self.refreshed(&["containers"]).await;
        Ok(())
    }

    // ------------------------------------------------------------------ services

    /// A container's services.
    pub async fn list_services(&self, container: ContainerId) -> Result<Vec<ServiceView>> {
        Ok(sqlx::query_as(&format!(
            "{SERVICE_SELECT} WHERE s.container_id = $1 ORDER BY s.id"
        ))
        .bind(container)
        .fetch_all(self.pool())
        .await?)
    }

    /// One service of a container.
    pub async fn service(&self, container: ContainerId, id: ServiceId) -> Result<ServiceView> {
        let row: Option<ServiceView> = sqlx::query_as(&format!(
            "{SERVICE_SELECT} WHERE s.container_id = $1 AND s.id = $2"
        ))
        .bind(container)
        .bind(id)
        .fetch_optional(self.pool())
        .await?;
        row.ok_or(not_found("service"))
    }

    /// Adds a service with its detail row in one transaction. Transport services without an
    /// external port get the lowest free one in `port_range`, under a transaction-scoped
    /// advisory lock so that concurrent requests never get the same port.
    pub async fn create_service(
        &self,
        container: ContainerId,
        input: ServiceInput,
        port_range: (i32, i32),
        by: &Actor,
    ) -> Result<ServiceView> {
        let mut tx = self.pool().begin().await?;
        let (kind, port) = match &input {
            ServiceInput::Http { container_port, .. } => (ServiceKind::Http, *container_port),
            ServiceInput::Transport { container_port, .. } => {
                (ServiceKind::Transport, *container_port)
            }
            ServiceInput::Dns { container_port, .. } => (ServiceKind::Dns, *container_port),
        };
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO services (container_id, type, container_port)
             VALUES ($1, $2::service_type, $3) RETURNING id",
        )
        .bind(container)
        .bind(kind)
        .bind(port)
        .fetch_one(&mut *tx)
        .await?;
        match input {
            ServiceInput::Http {
                external_hostname,
                external_domain_id,
                backend_protocol,
                auth_required,
                ..
            } => {
                if auth_required {
                    let auth: Option<Option<String>> = sqlx::query_scalar(
                        "SELECT auth_server FROM external_domains WHERE id = $1",
                    )
                    .bind(external_domain_id)
                    .fetch_optional(&mut *tx)
                    .await?;
                    match auth {
                        None => {
                            return Err(invalid("external_domain_id", "no such external domain"))
                        }
                        Some(None) => {
                            return Err(invalid(
                                "auth_required",
                                "the external domain has no auth_server configured",
                            ))
                        }
                        Some(Some(_)) => {}
                    }
                }
                sqlx::query(
                    "INSERT INTO http_services (service_id, external_hostname, external_domain_id,
                                                backend_protocol, auth_required)
                     VALUES ($1, lower($2), $3, $4, $5)",
                )
                .bind(id)
                .bind(external_hostname)
                .bind(external_domain_id)
                .bind(backend_protocol)
                .bind(auth_required)
                .execute(&mut *tx)
                .await?;
            }
            ServiceInput::Transport {
                protocol,
                external_port,
                use_tls,
                ..
            } => {
                let external_port = match external_port {
                    Some(p) => {
                        if p < port_range.0 || p > port_range.1 {
                            return Err(invalid(
                                "external_port",
                                format!("must be within {}-{}", port_range.0, port_range.1),
                            ));
                        }
                        p
                    }
                    None => {
                        sqlx::query(
                            "SELECT pg_advisory_xact_lock(hashtext('siteward.transport_ports'))",
                        )
                        .execute(&mut *tx)
                        .await?;
                        let free: Option<i32> = sqlx::query_scalar(
                            "SELECT p FROM generate_series($1::int, $2::int) p
                             WHERE NOT EXISTS (SELECT 1 FROM transport_services
                                               WHERE protocol = $3 AND external_port = p)
                               AND NOT EXISTS (SELECT 1 FROM edge_reserved_ports WHERE port = p)
                             ORDER BY p LIMIT 1",
                        )
                        .bind(port_range.0)
                        .bind(port_range.1)
                        .bind(protocol)
                        .fetch_optional(&mut *tx)
                        .await?;
                        free.ok_or_else(|| {
                            invalid("external_port", "no free port left in the configured range")
                        })?
                    }
                };
                sqlx::query(
                    "INSERT INTO transport_services (service_id, protocol, external_port, use_tls)
                     VALUES ($1, $2, $3, $4)",
                )
                .bind(id)
                .bind(protocol)
                .bind(external_port)
                .bind(use_tls)
                .execute(&mut *tx)
                .await?;
            }
            ServiceInput::Dns { service_name, .. } => {
                sqlx::query(
                    "INSERT INTO dns_services (service_id, service_name) VALUES ($1, lower($2))",
                )
                .bind(id)
                .bind(service_name)
                .execute(&mut *tx)
                .await?;
            }
        }
        let details = json!({ "container_id": container, "type": kind.as_str() });
        record(&mut tx, by, "create", "service", id, details).await?;
        tx.commit().await?;
        self.refreshed(&["services"]).await;
        self.service(container, ServiceId(id)).await
    }

    /// Reserves host labels (under every external domain) and ports for the edge itself, so no
    /// service can take them (migration 0014 refuses such services in the database). Adds
    /// what is missing and never removes a reservation: several processes may each add their
    /// own. `reason` is kept for operators reading the tables.
    pub async fn reserve_edge(
        &self,
        labels: &[(String, String)],
        ports: &[(u16, String)],
    ) -> Result<()> {
        let mut tx = self.pool().begin().await?;
        for (label, reason) in labels {
            sqlx::query(
                "INSERT INTO edge_reserved_labels (label, reason) VALUES (lower($1), $2)
                 ON CONFLICT (label) DO NOTHING",
            )
            .bind(label)
            .bind(reason)
            .execute(&mut *tx)
            .await?;
        }
        for (port, reason) in ports {
            sqlx::query(
                "INSERT INTO edge_reserved_ports (port, reason) VALUES ($1, $2)
                 ON CONFLICT (port) DO NOTHING",
            )
            .bind(i32::from(*port))
            .bind(reason)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Removes a service of a container.
    pub async fn delete_service(
        &self,
        container: ContainerId,
        id: ServiceId,
        by: &Actor,
    ) -> Result<()> {
        let mut tx = self.pool().begin().await?;
        let done = sqlx::query("DELETE FROM services WHERE id = $1 AND container_id = $2")
            .bind(id)
            .bind(container)
            .execute(&mut *tx)
            .await?;
        if done.rows_affected() == 0 {
            return Err(not_found("service"));
        }
        let details = json!({ "container_id": container });
        record(&mut tx, by, "delete", "service", id, details).await?;
        tx.commit().await?;
        self.refreshed(&["services"]).await;
        Ok(())
    }

    // ------------------------------------------------------------------ external domains

    /// Lists external domains.
    pub async fn list_domains(&self, page: Page) -> Result<Listing<ExternalDomain>> {
        let rows: Vec<ExternalDomain> = sqlx::query_as(&format!(
            "SELECT {DOMAIN_COLS} FROM external_domains WHERE ($1::bigint IS NULL OR id > $1) ORDER BY id LIMIT $2"
        ))
        .bind(page.after)
        .bind(page.limit + 1)
        .fetch_all(self.pool())
        .await?;
        Ok(listing(rows, page, |d| d.id.0))
    }

    /// One external domain.
    pub async fn domain(&self, id: ExternalDomainId) -> Result<ExternalDomain> {
        let row: Option<ExternalDomain> = sqlx::query_as(&format!(
            "SELECT {DOMAIN_COLS} FROM external_domains WHERE id = $1"
        ))
        .bind(id)
        .fetch_optional(self.pool())
        .await?;
        row.ok_or(not_found("external domain"))
    }

    /// Creates an external domain.
    pub async fn create_domain(&self, d: NewDomain, by: &Actor) -> Result<ExternalDomain> {
        let details = fields(&d);
        let domain = d.domain;
        let key = d
            .cloudflare_api_key
            .map(|k| self.secrets().seal(CLOUDFLARE_KEY_CONTEXT, k.as_bytes()))
            .transpose()?;
        let mut tx = self.pool().begin().await?;
        let row: ExternalDomain = sqlx::query_as(&format!(
            "INSERT INTO external_domains (domain, acme_email, acme_directory, cloudflare_api_email,
                                           cloudflare_api_key, site_id, auth_server)
             VALUES (lower($1), $2, $3, $4, $5, $6, $7) RETURNING {DOMAIN_COLS}"
        ))
        .bind(domain.trim_end_matches('.'))
        .bind(d.acme_email)
        .bind(d.acme_directory)
        .bind(d.cloudflare_api_email)
        .bind(key)
        .bind(d.site_id)
        .bind(d.auth_server)
        .fetch_one(&mut *tx)
        .await?;
        record(&mut tx, by, "create", "external_domain", row.id, details).await?;
        tx.commit().await?;
        self.refreshed(&["external_domains"]).await;
        Ok(row)
    }

    /// Changes an external domain.
    pub async fn update_domain(
        &self,
        id: ExternalDomainId,
        d: DomainPatch,
        by: &Actor,
    ) -> Result<ExternalDomain> {
        let mut u = Update::new("external_domains");
        if let Some(v) = d.domain {
            u.set("domain", v.trim_end_matches('.').to_ascii_lowercase());
        }
        if let Some(v) = d.acme_email {
            u.set("acme_email", v);
        }
        if let Some(v) = d.acme_directory {
            u.set("acme_directory", v);
        }
        if let Some(v) = d.cloudflare_api_email {
            u.set("cloudflare_api_email", v);
        }
        if let Some(v) = d.cloudflare_api_key {
            let sealed = v
                .map(|k| self.secrets().seal(CLOUDFLARE_KEY_CONTEXT, k.as_bytes()))
                .transpose()?;
            u.set("cloudflare_api_key", sealed);
        }
        if let Some(v) = d.site_id {
            u.set("site_id", v);
        }
        if let Some(v) = d.auth_server {
            u.set("auth_server", v);
        }
        let details = u.details();
        let mut tx = self.pool().begin().await?;
        let row: Option<ExternalDomain> = u
            .finish("id", id.0, DOMAIN_COLS)
            .build_query_as()
            .fetch_optional(&mut *tx)
            .await?;
        let domain = row.ok_or(not_found("external domain"))?;
        record(&mut tx, by, "update", "external_domain", id, details).await?;
        tx.commit().await?;
        self.refreshed(&["external_domains"]).await;
        Ok(domain)
    }

    /// Deletes an external domain (refused while HTTP services use it).
    pub async fn delete_domain(&self, id: ExternalDomainId, by: &Actor) -> Result<()> {
        delete_by_id(
            self,
            "external_domains",
            id.0,
            "external domain",
            "external_domain",
            by,
        )
        .await
    }

    // ------------------------------------------------------------------ dns records

    /// A site's static records.
    pub async fn list_dns_records(&self, site: SiteId, page: Page) -> Result<Listing<DnsRecord>> {
        let rows: Vec<DnsRecord> = sqlx::query_as(
            "SELECT id, site_id, name, type, value, ttl FROM dns_records
             WHERE site_id = $3 AND ($1::bigint IS NULL OR id > $1) ORDER BY id LIMIT $2",
        )
        .bind(page.after)
        .bind(page.limit + 1)
        .bind(site)
        .fetch_all(self.pool())
        .await?;
        Ok(listing(rows, page, |r| r.id.0))
    }

    /// Adds a static record.
    pub async fn create_dns_record(
        &self,
        site: SiteId,
        name: &str,
        rtype: &str,
        value: &str,
        ttl: i32,
        by: &Actor,
    ) -> Result<DnsRecord> {
        self.site(site).await?;
        let mut tx = self.pool().begin().await?;
        let record_row: DnsRecord = sqlx::query_as(
            "INSERT INTO dns_records (site_id, name, type, value, ttl)
             VALUES ($1, lower($2), upper($3), $4, $5)
             RETURNING id, site_id, name, type, value, ttl",
        )
        .bind(site)
        .bind(name)
        .bind(rtype)
        .bind(value)
        .bind(ttl)
        .fetch_one(&mut *tx)
        .await?;
        let details = json!({ "site_id": site, "name": record_row.name, "type": record_row.rtype });
        record(&mut tx, by, "create", "dns_record", record_row.id, details).await?;
        tx.commit().await?;
        self.refreshed(&["dns_records"]).await;
        Ok(record_row)
    }

    /// Removes a static record.
    pub async fn delete_dns_record(&self, site: SiteId, id: DnsRecordId, by: &Actor) -> Result<()> {
        let mut tx = self.pool().begin().await?;
        let done = sqlx::query("DELETE FROM dns_records WHERE id = $1 AND site_id = $2")
            .bind(id)
            .bind(site)
            .execute(&mut *tx)
            .await?;
        if done.rows_affected() == 0 {
            return Err(not_found("dns record"));
        }
        record(
            &mut tx,
            by,
            "delete",
            "dns_record",
            id,
            json!({ "site_id": site }),
        )
        .await?;
        tx.commit().await?;
        self.refreshed(&["dns_records"]).await;
        Ok(())
    }

    /// Keeps the reserved name-server names (`dns_reserved_names`, migration 0012) equal to
    /// `names`: relative names, each held in every site's zone so that no container, node or
    /// CNAME can take it. A reserved name is claimed again in sites where whatever held it has
    /// gone. Returns the sites (and names) where something else still holds one.
    pub async fn reserve_dns_names(&self, names: &[String]) -> Result<Vec<(SiteId, String)>> {
        let names: Vec<String> = names.iter().map(|n| n.to_ascii_lowercase()).collect();
        let mut tx = self.pool().begin().await?;
        sqlx::query("DELETE FROM dns_reserved_names WHERE NOT (name = ANY($1))")
            .bind(&names)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO dns_reserved_names (name) SELECT unnest($1::text[]) ON CONFLICT DO NOTHING",
        )
        .bind(&names)
        .execute(&mut *tx)
        .await?;
        let missing: Vec<(SiteId, String)> = sqlx::query_as(
            "SELECT site_id, name FROM dns_name_conflicts WHERE kind = 'reserved' ORDER BY site_id, name",
        )
        .fetch_all(&mut *tx)
        .await?;
        let mut taken = Vec::new();
        for (site, name) in missing {
            let mut attempt = sqlx::Acquire::begin(&mut *tx).await?;
            let claimed = sqlx::query(
                "INSERT INTO dns_name_holders (site_id, name, share, reserved_name)
                 VALUES ($1, $2, 'static', $2)",
            )
            .bind(site)
            .bind(&name)
            .execute(&mut *attempt)
            .await;
            match claimed.map_err(StoreError::from) {
                Ok(_) => attempt.commit().await?,
                Err(StoreError::Conflict { .. }) => {
                    attempt.rollback().await?;
                    taken.push((site, name));
                }
                Err(e) => return Err(e),
            }
        }
        tx.commit().await?;
        Ok(taken)
    }

    // ------------------------------------------------------------------ users and groups

    /// Lists users.
    pub async fn list_users(&self, page: Page) -> Result<Listing<User>> {
        let rows: Vec<UserRow> = sqlx::query_as(&format!(
            "SELECT {USER_COLS} FROM users WHERE ($1::int IS NULL OR uid_number > $1) ORDER BY uid_number LIMIT $2"
        ))
        .bind(page.after.map(|v| v as i32))
        .bind(page.limit + 1)
        .fetch_all(self.pool())
        .await?;
        Ok(listing(
            rows.into_iter().map(User::from).collect(),
            page,
            |u| i64::from(u.uid_number.0),
        ))
    }

    /// A user by uid.
    pub async fn user_by_uid(&self, uid: Uid) -> Result<User> {
        let row: Option<UserRow> = sqlx::query_as(&format!(
            "SELECT {USER_COLS} FROM users WHERE uid_number = $1"
        ))
        .bind(uid)
        .fetch_optional(self.pool())
        .await?;
        row.map(User::from).ok_or(not_found("user"))
    }

    /// Changes a user's profile fields.
    pub async fn update_user(&self, uid: Uid, p: UserPatch, by: &Actor) -> Result<User> {
        let mut u = Update::new("users");
        if let Some(v) = p.cn {
            u.set("cn", v);
        }
        if let Some(v) = p.sn {
            u.set("sn", v);
        }
        if let Some(v) = p.given_name {
            u.set("given_name", v);
        }
        if let Some(v) = p.mail {
            u.set("mail", v);
        }
        if let Some(keys) = p.ssh_public_keys {
            let joined = keys.join("\n");
            u.set("ssh_public_key", (!joined.is_empty()).then_some(joined));
        }
        if let Some(v) = p.status {
            u.set("status", v.as_str());
        }
        let details = u.details();
        let mut tx = self.pool().begin().await?;
        let row: Option<UserRow> = u
            .finish("uid_number", i64::from(uid.0), USER_COLS)
            .build_query_as()
            .fetch_optional(&mut *tx)
            .await?;
        let user = row.map(User::from).ok_or(not_found("user"))?;
        record(&mut tx, by, "update", "user", uid, details).await?;
        tx.commit().await?;
        self.refreshed(&["users"]).await;
        Ok(user)
    }

    /// Lists groups.
    pub async fn list_groups(&self, page: Page) -> Result<Listing<Group>> {
        let rows: Vec<Group> = sqlx::query_as(&format!(
            "SELECT {GROUP_COLS} FROM groups WHERE ($1::int IS NULL OR gid_number > $1) ORDER BY gid_number LIMIT $2"
        ))
        .bind(page.after.map(|v| v as i32))
        .bind(page.limit + 1)
        .fetch_all(self.pool())
        .await?;
        Ok(listing(rows, page, |g| i64::from(g.gid_number.0)))
    }

    /// A group by gid.
    pub async fn group(&self, gid: Gid) -> Result<Group> {
        let row: Option<Group> = sqlx::query_as(&format!(
            "SELECT {GROUP_COLS} FROM groups WHERE gid_number = $1"
        ))
        .bind(gid)
        .fetch_optional(self.pool())
        .await?;
        row.ok_or(not_found("group"))
    }

    /// Changes a group.
    pub async fn update_group(
        &self,
        gid: Gid,
        description: Patch<String>,
        is_administrator: Option<bool>,
        by: &Actor,
    ) -> Result<Group> {
        let mut u = Update::new("groups");
        if let Some(v) = description {
            u.set("description", v);
        }
        if let Some(v) = is_administrator {
            u.set("is_administrator", v);
        }
        let details = u.details();
        let mut tx = self.pool().begin().await?;
        let row: Option<Group> = u
            .finish("gid_number", i64::from(gid.0), GROUP_COLS)
            .build_query_as()
            .fetch_optional(&mut *tx)
            .await?;
        let group = row.ok_or(not_found("group"))?;
        record(&mut tx, by, "update", "group", gid, details).await?;
        tx.commit().await?;
        self.refreshed(&["groups"]).await;
        Ok(group)
    }

    /// Deletes a group (the seeded ones stay).
    pub async fn delete_group(&self, gid: Gid, by: &Actor) -> Result<()> {
        if gid == LDAPUSERS_GID || gid == SYSADMINS_GID {
            return Err(invalid(
                "gid_number",
                "the built-in groups cannot be deleted",
            ));
        }
        let mut tx = self.pool().begin().await?;
        let done = sqlx::query("DELETE FROM groups WHERE gid_number = $1")
            .bind(gid)
            .execute(&mut *tx)
            .await?;
        if done.rows_affected() == 0 {
            return Err(not_found("group"));
        }
        record(&mut tx, by, "delete", "group", gid, json!({})).await?;
        tx.commit().await?;
        self.refreshed(&["groups"]).await;
        Ok(())
    }

    /// Members of a group.
    pub async fn group_members(&self, gid: Gid) -> Result<Vec<User>> {
        self.group(gid).await?;
        let rows: Vec<UserRow> = sqlx::query_as(&format!(
            "SELECT {USER_COLS} FROM users WHERE uid_number IN
               (SELECT uid_number FROM user_groups WHERE gid_number = $1) ORDER BY uid_number"
        ))
        .bind(gid)
        .fetch_all(self.pool())
        .await?;
        Ok(rows.into_iter().map(User::from).collect())
    }

    /// Registers a user: the very first becomes an active administrator; later ones are pending
    /// unless `invite` is a valid, unused, unexpired invite token (whose e-mail they get). The
    /// audit row names the new user as the actor, from `remote_addr`.
    pub async fn register(
        &self,
        new: crate::NewUser,
        invite: Option<&str>,
        now: DateTime<Utc>,
        remote_addr: Option<std::net::IpAddr>,
    ) -> Result<User> {
        // Argon2 first: the lock below is held only for the few statements that decide.
        let mut prepared = self.prepare_user(new).await?;
        let mut tx = self.pool().begin().await?;
        // Serialize registrations so "the first user" is decided once: the check, the insert and
        // the invite's use commit together, before the lock is released.
        sqlx::query(crate::queries::REGISTER_LOCK)
            .execute(&mut *tx)
            .await?;
        let any: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM users)")
            .fetch_one(&mut *tx)
            .await?;
        let mut invite_id = None;
        if !any {
            prepared.status = UserStatus::Active;
            prepared.admin = true;
        } else if let Some(token) = invite {
            let row: Option<(uuid::Uuid, String)> = sqlx::query_as(
                "SELECT id, email FROM invite_tokens
                 WHERE token = $1 AND NOT used AND expires_at > $2 FOR UPDATE",
            )
            .bind(token_hash(token))
            .bind(now)
            .fetch_optional(&mut *tx)
            .await?;
            let (id, email) =
                row.ok_or_else(|| invalid("invite", "is invalid, used or expired"))?;
            prepared.mail = Some(email);
            prepared.status = UserStatus::Active;
            prepared.admin = false;
            invite_id = Some(id);
        } else {
            prepared.status = UserStatus::Pending;
            prepared.admin = false;
        }
        let user = crate::queries::insert_user(&mut tx, &prepared).await?;
        if let Some(id) = invite_id {
            sqlx::query("UPDATE invite_tokens SET used = true, uid_number = $2 WHERE id = $1")
                .bind(id)
                .bind(user.uid_number)
                .execute(&mut *tx)
                .await?;
        }
        let by = Actor::user(user.uid_number, &user.username, remote_addr, Via::Public);
        let details = json!({ "status": user.status, "invited": invite_id.is_some() });
        record(&mut tx, &by, "register", "user", user.uid_number, details).await?;
        tx.commit().await?;
        // Read your writes: the sign-in page must know the account (active, or pending with
        // its "awaits approval" answer) on the very next request.
        self.refreshed(&["users"]).await;
        Ok(user)
    }

    // ------------------------------------------------------------------ tokens

    /// Creates an invite for `email`, valid for 24 hours from `now`. Returns it and the token.
    pub async fn create_invite(
        &self,
        email: &str,
        now: DateTime<Utc>,
        by: &Actor,
    ) -> Result<(TokenInfo, String)> {
        let (token, hash) = new_token();
        let mut tx = self.pool().begin().await?;
        let info: TokenInfo = sqlx::query_as(
            "INSERT INTO invite_tokens (id, email, token, expires_at) VALUES ($1, $2, $3, $4)
             RETURNING id, email, NULL::int AS uid_number, expires_at, used, created_at",
        )
        .bind(uuid::Uuid::new_v4())
        .bind(email)
        .bind(hash)
        .bind(now + Duration::hours(24))
        .fetch_one(&mut *tx)
        .await?;
        record(
            &mut tx,
            by,
            "create",
            "invite",
            info.id,
            json!({ "email": email }),
        )
        .await?;
        tx.commit().await?;
        Ok((info, token))
    }

    /// Lists invites.
    pub async fn list_invites(&self) -> Result<Vec<TokenInfo>> {
        Ok(sqlx::query_as(
            "SELECT id, email, uid_number, expires_at, used, created_at FROM invite_tokens ORDER BY created_at DESC",
        )
        .fetch_all(self.pool())
        .await?)
    }

    /// Revokes an invite.
    pub async fn delete_invite(&self, id: uuid::Uuid, by: &Actor) -> Result<()> {
        let mut tx = self.pool().begin().await?;
        let done = sqlx::query("DELETE FROM invite_tokens WHERE id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        if done.rows_affected() == 0 {
            return Err(not_found("invite"));
        }
        record(&mut tx, by, "delete", "invite", id, json!({})).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Creates a password-reset token for a user, valid for one hour from `now`.
    pub async fn create_password_reset(
        &self,
        uid: Uid,
        now: DateTime<Utc>,
        by: &Actor,
    ) -> Result<(TokenInfo, String)> {
        let (token, hash) = new_token();
        let mut tx = self.pool().begin().await?;
        let info: Option<TokenInfo> = sqlx::query_as(
            "INSERT INTO password_reset_tokens (id, uid_number, token, expires_at)
             SELECT $1, uid_number, $3, $4 FROM users WHERE uid_number = $2
             RETURNING id, NULL::text AS email, uid_number, expires_at, used, created_at",
        )
        .bind(uuid::Uuid::new_v4())
        .bind(uid)
        .bind(hash)
        .bind(now + Duration::hours(1))
        .fetch_optional(&mut *tx)
        .await?;
        let info = info.ok_or(not_found("user"))?;
        // Asked for by someone else (an admin) or by the account's own "forgot password".
        let details =
            json!({ "uid_number": uid, "self_service": by.uid != Some(uid) && by.uid.is_none() });
        record(&mut tx, by, "create", "password_reset", info.id, details).await?;
        tx.commit().await?;
        Ok((info, token))
    }

    /// Uses a reset token: sets the password, marks the token used (once), and ends every
    /// session of the user.
    pub async fn consume_password_reset(
        &self,
        token: &str,
        password: String,
        now: DateTime<Utc>,
        remote_addr: Option<std::net::IpAddr>,
    ) -> Result<Uid> {
        let mut tx = self.pool().begin().await?;
        let uid: Option<i32> = sqlx::query_scalar(
            "UPDATE password_reset_tokens SET used = true
             WHERE token = $1 AND NOT used AND expires_at > $2 RETURNING uid_number",
        )
        .bind(token_hash(token))
        .bind(now)
        .fetch_optional(&mut *tx)
        .await?;
        let uid = uid.ok_or_else(|| invalid("token", "is invalid, used or expired"))?;
        let username: String =
            sqlx::query_scalar("SELECT username FROM users WHERE uid_number = $1")
                .bind(uid)
                .fetch_one(&mut *tx)
                .await?;
        // Validate and hash before committing the token's use. Every session of the user ends
        // with it, like on any password change.
        let hash = crate::queries::check_and_hash(password, self.hash_cost()).await?;
        let uid = crate::queries::replace_password(&mut tx, &username, hash, None).await?;
        let by = Actor::user(uid, &username, remote_addr, Via::Public);
        record(&mut tx, &by, "reset_password", "user", uid, json!({})).await?;
        tx.commit().await?;
        self.forget_sessions_of(uid);
        self.refreshed(&["users"]).await;
        Ok(uid)
    }

    /// Deletes expired and used tokens and expired sessions. Returns how many went.
    pub async fn cleanup_tokens(&self, now: DateTime<Utc>) -> Result<u64> {
        let a = sqlx::query("DELETE FROM invite_tokens WHERE expires_at <= $1 AND NOT used")
            .bind(now)
            .execute(self.pool())
            .await?
            .rows_affected();
        let b = sqlx::query("DELETE FROM password_reset_tokens WHERE expires_at <= $1 OR used")
            .bind(now)
            .execute(self.pool())
            .await?
            .rows_affected();
        let c = sqlx::query("DELETE FROM sessions WHERE expires_at <= $1")
            .bind(now)
            .execute(self.pool())
            .await?
            .rows_affected();
        Ok(a + b + c)
    }

    /// Deletes self-registered accounts still pending approval that were created before
    /// `before` and own nothing; returns their names.
    pub async fn expire_pending_accounts(&self, before: DateTime<Utc>) -> Result<Vec<String>> {
        let mut tx = self.pool().begin().await?;
        let gone: Vec<(Uid, String)> = sqlx::query_as(
            "DELETE FROM users u WHERE u.status = 'pending' AND u.created_at < $1
               AND NOT EXISTS (SELECT 1 FROM containers c WHERE c.username = u.username)
             RETURNING u.uid_number, u.username",
        )
        .bind(before)
        .fetch_all(&mut *tx)
        .await?;
        let by = Actor::system();
        for (uid, name) in &gone {
            let details = json!({ "username": name, "reason": "pending too long" });
            record(&mut tx, &by, "delete", "user", uid, details).await?;
        }
        tx.commit().await?;
        if !gone.is_empty() {
            self.refreshed(&["users"]).await;
        }
        Ok(gone.into_iter().map(|(_, name)| name).collect())
    }

    // ------------------------------------------------------------------ api keys, settings, jobs

    /// API keys, of one user or all.
    pub async fn list_api_keys(&self, owner: Option<Uid>) -> Result<Vec<ApiKey>> {
        Ok(sqlx::query_as(
            "SELECT id, prefix, key_hash, uid_number, name, last_used_at, expires_at, created_at
             FROM api_keys WHERE ($1::int IS NULL OR uid_number = $1) ORDER BY id",
        )
        .bind(owner)
        .fetch_all(self.pool())
        .await?)
    }

    /// Deletes an API key (of `owner` when given).
    pub async fn delete_api_key(&self, id: ApiKeyId, owner: Option<Uid>, by: &Actor) -> Result<()> {
        let mut tx = self.pool().begin().await?;
        let done = sqlx::query(
            "DELETE FROM api_keys WHERE id = $1 AND ($2::int IS NULL OR uid_number = $2)",
        )
        .bind(id)
        .bind(owner)
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() == 0 {
            return Err(not_found("api key"));
        }
        record(&mut tx, by, "delete", "api_key", id, json!({})).await?;
        tx.commit().await?;
        self.refreshed(&["api_keys"]).await;
        Ok(())
    }

    /// Records a key's use (at most once a minute per key, to spare writes).
    pub async fn touch_api_key(&self, id: ApiKeyId, now: DateTime<Utc>) -> Result<()> {
        sqlx::query(
            "UPDATE api_keys SET last_used_at = $2
             WHERE id = $1 AND (last_used_at IS NULL OR last_used_at < $2 - interval '1 minute')",
        )
        .bind(id)
        .bind(now)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// All settings.
    pub async fn list_settings(&self) -> Result<Vec<(String, String)>> {
        let rows: Vec<(String, String)> =
            sqlx::query_as("SELECT key, value FROM settings ORDER BY key")
                .fetch_all(self.pool())
                .await?;
        rows.into_iter()
            .map(|(k, v)| {
                let v = self.open_setting(&k, v)?;
                Ok((k, v))
            })
            .collect()
    }

    /// Removes a setting.
    pub async fn delete_setting(&self, key: &str, by: &Actor) -> Result<()> {
        let mut tx = self.pool().begin().await?;
        let done = sqlx::query("DELETE FROM settings WHERE key = $1")
            .bind(key)
            .execute(&mut *tx)
            .await?;
        if done.rows_affected() == 0 {
            return Err(not_found("setting"));
        }
        record(&mut tx, by, "delete", "setting", key, json!({})).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Lists jobs (of one owner when given).
    pub async fn list_jobs(&self, page: Page, owner: Option<Uid>) -> Result<Listing<Job>> {
        let rows: Vec<Job> = sqlx::query_as(
            "SELECT id, name, associated_resource, status, owner_uid, created_at, updated_at FROM jobs
             WHERE ($1::bigint IS NULL OR id > $1) AND ($3::int IS NULL OR owner_uid = $3)
             ORDER BY id LIMIT $2",
        )
        .bind(page.after)
        .bind(page.limit + 1)
        .bind(owner)
        .fetch_all(self.pool())
        .await?;
        Ok(listing(rows, page, |j| j.id.0))
    }

    /// One job and its progress lines.
    pub async fn job(&self, id: JobId, owner: Option<Uid>) -> Result<(Job, Vec<JobStatus>)> {
        let job: Option<Job> = sqlx::query_as(
            "SELECT id, name, associated_resource, status, owner_uid, created_at, updated_at
             FROM jobs WHERE id = $1 AND ($2::int IS NULL OR owner_uid = $2)",
        )
        .bind(id)
        .bind(owner)
        .fetch_optional(self.pool())
        .await?;
        let job = job.ok_or(not_found("job"))?;
        let lines: Vec<JobStatus> = sqlx::query_as(
            "SELECT id, message, created_at FROM job_statuses WHERE job_id = $1 ORDER BY id",
        )
        .bind(id)
        .fetch_all(self.pool())
        .await?;
        Ok((job, lines))
    }
}

/// Deletes one row by id, audited as `delete` of `resource`.
async fn delete_by_id(
    store: &Store,
    table: &str,
    id: i64,
    entity: &'static str,
    resource: &str,
    by: &Actor,
) -> Result<()> {
    let mut tx = store.pool().begin().await?;
    let done = sqlx::query(&format!("DELETE FROM {table} WHERE id = $1"))
        .bind(id)
        .execute(&mut *tx)
        .await?;
    if done.rows_affected() == 0 {
        return Err(not_found(entity));
    }
    record(&mut tx, by, "delete", resource, id, json!({})).await?;
    tx.commit().await?;
    store.refreshed(&[table]).await;
    Ok(())
}

fn parse_mac(mac: Option<String>) -> Result<Option<mac_address::MacAddress>> {
    mac.map(|m| {
        m.parse::<mac_address::MacAddress>()
            .map_err(|_| invalid("mac_address", "must look like 02:00:00:aa:bb:cc"))
    })
    .transpose()
}

impl Store {
    /// Starts a browser session for `uid` (a sign-in, audited as `login`); returns the signed
    /// cookie value and the CSRF token.
    /// Only the id's SHA-256 is stored (see [`crate::auth`]).
    pub async fn create_session(
        &self,
        uid: Uid,
        ttl: Duration,
        remote_addr: Option<std::net::IpAddr>,
        user_agent: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<(String, String)> {
        let (id, hash) = new_token();
        let (csrf, _) = new_token();
        let cookie = self.sign_session(&id).await?;
        let mut tx = self.pool().begin().await?;
        sqlx::query(
            "INSERT INTO sessions (id_hash, uid_number, csrf_token, expires_at, remote_addr, user_agent)
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(hash)
        .bind(uid)
        .bind(&csrf)
        .bind(now + ttl)
        .bind(remote_addr.map(ipnetwork::IpNetwork::from))
        .bind(user_agent.map(|s| s.chars().take(256).collect::<String>()))
        .execute(&mut *tx)
        .await?;
        // The sign-in is audited with the session it opens.
        let name: String = sqlx::query_scalar("SELECT username FROM users WHERE uid_number = $1")
            .bind(uid)
            .fetch_one(&mut *tx)
            .await?;
        let by = Actor::user(uid, &name, remote_addr, Via::Public);
        record(&mut tx, &by, "login", "session", uid, json!({})).await?;
        tx.commit().await?;
        Ok((cookie, csrf))
    }

    /// The user of a live session (see [`Store::session`]).
    pub async fn session_uid(&self, cookie: &str, now: DateTime<Utc>) -> Result<Option<Uid>> {
        Ok(self.session(cookie, now).await?.map(|s| s.uid))
    }

    /// Ends the session a cookie value names, here and (through the change feed) in every other
    /// process.
    pub async fn delete_session(&self, cookie: &str) -> Result<()> {
        let Some(hash) = crate::auth::cookie_hash(cookie) else {
            return Ok(());
        };
        // Forgotten before too, so that a logout the database cannot take now still ends the
        // session in this process during an outage (see `auth`).
        self.forget_session(&hash);
        sqlx::query("DELETE FROM sessions WHERE id_hash = $1")
            .bind(&hash)
            .execute(self.pool())
            .await?;
        self.forget_session(&hash);
        Ok(())
    }

    /// Ends every session of a user (logout everywhere, suspension).
    pub async fn delete_sessions_of(&self, uid: Uid) -> Result<u64> {
        self.forget_sessions_of(uid);
        let n = sqlx::query("DELETE FROM sessions WHERE uid_number = $1")
            .bind(uid)
            .execute(self.pool())
            .await?
            .rows_affected();
        self.forget_sessions_of(uid);
        Ok(n)
    }
}

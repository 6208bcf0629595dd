//! `/admin/sites` and `/admin/nodes`: the sites with their internal domains and networks, a form
//! for a new site (`service::sites::create`) and a page per site to change or delete it
//! (`service::sites::update`, `delete`); every node with its address and whether siteward drives
//! it on Proxmox, a form for a new node (`service::nodes::create`, the secret never sent back)
//! "Import containers" for a managed node (`service::nodes::import`) and "Delete" for a node
//! without containers (`service::nodes::delete`). Lists come from the
//! snapshot.

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use axum::Form;
use serde::Deserialize;
use siteward_store::{NodeId, Site, SiteId};

use super::table::{given, site_named, Cell, Field, NewForm, Reply, TablePage};
use super::{admin, admin_posted};
use crate::api::error::ApiError;
use crate::api::extract::{ClientAddr, Path};
use crate::auth::see_other;
use crate::service::nodes::CreateNode;
use crate::service::sites::{CreateSite, UpdateSite};
use crate::web::containers::TokenForm;
use crate::web::{not_found, render, Signed};
use crate::AdminState;

/// The new-site form as typed.
#[derive(Debug, Default, Deserialize)]
pub(super) struct SiteForm {
    #[serde(default)]
    name: String,
    #[serde(default)]
    internal_domain: String,
    #[serde(default)]
    subnet_mask: String,
    #[serde(default)]
    gateway: String,
    #[serde(default)]
    dhcp_range: String,
    #[serde(default)]
    dns_forwarders: String,
    #[serde(default)]
    external_ip: String,
    csrf: String,
}

/// The form's fields, in order.
const SITE_FIELDS: [&str; 7] = [
    "name",
    "internal_domain",
    "subnet_mask",
    "gateway",
    "dhcp_range",
    "dns_forwarders",
    "external_ip",
];

/// An address field: absent when blank; what the API's JSON would refuse as a wrong type is
/// refused here next to the field.
fn address<T: std::str::FromStr>(
    field: &str,
    text: &str,
    what: &str,
) -> Result<Option<T>, ApiError> {
    given(text)
        .map(|t| {
            t.parse()
                .map_err(|_| ApiError::invalid(field, format!("{t} is not {what}")))
        })
        .transpose()
}

impl SiteForm {
    fn to_create(&self) -> Result<CreateSite, ApiError> {
        Ok(CreateSite {
            name: self.name.trim().to_owned(),
            internal_domain: self.internal_domain.trim().to_owned(),
            subnet_mask: address("subnet_mask", &self.subnet_mask, "an IPv4 netmask")?,
            gateway: address("gateway", &self.gateway, "an IPv4 address")?,
            dhcp_range: given(&self.dhcp_range),
            dns_forwarders: given(&self.dns_forwarders),
            external_ip: address("external_ip", &self.external_ip, "an IP address")?,
        })
    }
}

impl SiteForm {
    /// The form filled with a site as it is.
    fn of(site: &Site) -> Self {
        let text = |v: Option<String>| v.unwrap_or_default();
        Self {
            name: site.name.clone(),
            internal_domain: site.internal_domain.clone(),
            subnet_mask: text(site.subnet_mask.map(|v| v.to_string())),
            gateway: text(site.gateway.map(|v| v.to_string())),
            dhcp_range: text(site.dhcp_range.clone()),
            dns_forwarders: site
                .dns_forwarders
                .iter()
                .map(|a| a.to_string())
                .collect::<Vec<_>>()
                .join(", "),
            external_ip: text(site.external_ip.map(|v| v.to_string())),
            csrf: String::new(),
        }
    }

    /// Every field as typed: a blank optional field clears it.
    fn to_update(&self) -> Result<UpdateSite, ApiError> {
        let c = self.to_create()?;
        Ok(UpdateSite {
            name: Some(c.name),
            internal_domain: Some(c.internal_domain),
            dhcp_range: Some(c.dhcp_range),
            subnet_mask: Some(c.subnet_mask),
            gateway: Some(c.gateway),
            dns_forwarders: Some(c.dns_forwarders),
            external_ip: Some(c.external_ip),
        })
    }

    fn fields(&self) -> Vec<Field> {
        vec![
            Field::text("name", "Name", &self.name),
            Field::text(
                "internal_domain",
                "Internal domain (its DNS zone)",
                &self.internal_domain,
            ),
            Field::optional("subnet_mask", "Subnet mask", &self.subnet_mask),
            Field::optional("gateway", "Gateway", &self.gateway),
            Field::optional("dhcp_range", "DHCP range (first-last)", &self.dhcp_range),
            Field::optional(
                "dns_forwarders",
                "Upstream resolvers (comma-separated)",
                &self.dns_forwarders,
            ),
            Field::optional("external_ip", "Public address", &self.external_ip),
        ]
    }
}

fn opt<T: ToString>(v: Option<T>) -> String {
    v.map(|v| v.to_string()).unwrap_or_else(|| "none".into())
}

/// `GET /admin/sites`.
pub(super) async fn sites(
    State(s): State<AdminState>,
    ClientAddr(peer): ClientAddr,
    headers: HeaderMap,
) -> Response {
    let who = match admin(&s, &headers, peer, "/admin/sites").await {
        Ok(w) => w,
        Err(r) => return r,
    };
    sites_page(&s, &who, &SiteForm::default(), Reply::ok())
}

/// `POST /admin/sites`: a new site.
pub(super) async fn create_site(
    State(s): State<AdminState>,
    ClientAddr(peer): ClientAddr,
    headers: HeaderMap,
    Form(f): Form<SiteForm>,
) -> Response {
    let who = match admin_posted(&s, &headers, peer, "/admin/sites", &f.csrf).await {
        Ok(w) => w,
        Err(r) => return r,
    };
    let created = match f.to_create() {
        Ok(b) => crate::service::sites::create(&s.store, &who.principal.actor(), b).await,
        Err(e) => Err(e),
    };
    let reply = match created {
        Ok(site) => Reply::done(format!(
            "Site {} created; its zone {} is served now.",
            site.name, site.internal_domain
        )),
        Err(e) => Reply::failed(e, &SITE_FIELDS),
    };
    sites_page(&s, &who, &f, reply)
}

/// The sites page; what was typed comes back only when the post failed.
fn sites_page(s: &AdminState, who: &Signed, typed: &SiteForm, reply: Reply) -> Response {
    let empty = SiteForm::default();
    let f = if reply.notice.is_some() {
        &empty
    } else {
        typed
    };
    let snap = s.store.snapshot();
    let rows = snap
        .naming
        .sites
        .values()
        .map(|v| {
            let site = &v.site;
            vec![
                Cell::Link(site.name.clone(), format!("/admin/sites/{}", site.id.0)),
                Cell::Code(site.internal_domain.clone()),
                Cell::Code(format!(
                    "gateway {}, mask {}, DHCP {}",
                    opt(site.gateway),
                    opt(site.subnet_mask),
                    opt(site.dhcp_range.clone())
                )),
                Cell::Text(v.nodes.len().to_string()),
                Cell::Text(v.containers.len().to_string()),
            ]
        })
        .collect();
    let mut page = TablePage::new(
        "Sites",
        who.nav("admin"),
        who.csrf.clone(),
        vec!["Site", "Internal domain", "Network", "Nodes", "Containers"],
        rows,
        "No sites yet.",
    );
    page.forms = vec![NewForm {
        id: "new-site",
        heading: "New site",
        action: "/admin/sites".into(),
        submit: "Create site",
        fields: f.fields(),
    }];
    page.notice = reply.notice;
    page.problems = reply.problems;
    render(reply.status, &page)
}

/// `GET /admin/sites/{id}`: the site's form, filled in, and its deletion.
pub(super) async fn edit_site(
    State(s): State<AdminState>,
    ClientAddr(peer): ClientAddr,
    headers: HeaderMap,
    Path(id): Path<SiteId>,
) -> Response {
    let here = format!("/admin/sites/{}", id.0);
    let who = match admin(&s, &headers, peer, &here).await {
        Ok(w) => w,
        Err(r) => return r,
    };
    site_page(&s, &who, id, None, Reply::ok())
}

/// `POST /admin/sites/{id}`: the site changed as the form says.
pub(super) async fn update_site(
    State(s): State<AdminState>,
    ClientAddr(peer): ClientAddr,
    headers: HeaderMap,
    Path(id): Path<SiteId>,
    Form(f): Form<SiteForm>,
) -> Response {
    let here = format!("/admin/sites/{}", id.0);
    let who = match admin_posted(&s, &headers, peer, &here, &f.csrf).await {
        Ok(w) => w,
        Err(r) => return r,
    };
    let updated = match f.to_update() {
        Ok(b) => crate::service::sites::update(&s.store, &who.principal.actor(), id, b).await,
        Err(e) => Err(e),
    };
    match updated {
        Ok(site) => site_page(
            &s,
            &who,
            id,
            None,
            Reply::done(format!("Site {} saved.", site.name)),
        ),
        Err(e) => site_page(&s, &who, id, Some(&f), Reply::failed(e, &SITE_FIELDS)),
    }
}

/// `POST /admin/sites/{id}/delete`: back to the sites, or the site's page saying why not.
pub(super) async fn delete_site(
    State(s): State<AdminState>,
    ClientAddr(peer): ClientAddr,
    headers: HeaderMap,
    Path(id): Path<SiteId>,
    Form(f): Form<TokenForm>,
) -> Response {
    let here = format!("/admin/sites/{}", id.0);
    let who = match admin_posted(&s, &headers, peer, &here, &f.csrf).await {
        Ok(w) => w,
        Err(r) => return r,
    };
    match crate::service::sites::delete(&s.store, &who.principal.actor(), id).await {
        Ok(()) => see_other("/admin/sites", vec![]),
        Err(e) => site_page(&s, &who, id, None, Reply::failed(e, &[])),
    }
}

/// One site's page: its form (as typed after a failed post, else as the site is) and a delete
/// button; 404 for a site that does not exist.
fn site_page(
    s: &AdminState,
    who: &Signed,
    id: SiteId,
    typed: Option<&SiteForm>,
    reply: Reply,
) -> Response {
    let snap = s.store.snapshot();
    let Some(v) = snap.naming.sites.get(&id) else {
        return not_found(Some(who));
    };
    let current = SiteForm::of(&v.site);
    let f = typed.unwrap_or(&current);
    let mut page = TablePage::new(
        "Site",
        who.nav("admin"),
        who.csrf.clone(),
        Vec::new(),
        Vec::new(),
        "",
    );
    page.intro = Some(format!(
        "{} serves the zone {} with {} nodes and {} containers. Changing the internal domain \
         renames every container's DNS name.",
        v.site.name,
        v.site.internal_domain,
        v.nodes.len(),
        v.containers.len()
    ));
    page.forms = vec![
        NewForm {
            id: "edit-site",
            heading: "Change the site",
            action: format!("/admin/sites/{}", id.0),
            submit: "Save",
            fields: f.fields(),
        },
        NewForm {
            id: "delete-site",
            heading: "Delete the site",
            action: format!("/admin/sites/{}/delete", id.0),
            submit: "Delete site (only once it has no nodes)",
            fields: Vec::new(),
        },
    ];
    page.notice = reply.notice;
    page.problems = reply.problems;
    render(reply.status, &page)
}

/// The new-node form as typed (the secret is never sent back).
#[derive(Debug, Default, Deserialize)]
pub(super) struct NodeForm {
    #[serde(default)]
    name: String,
    #[serde(default)]
    site: String,
    #[serde(default)]
    ipv4_address: String,
    #[serde(default)]
    api_url: String,
    #[serde(default)]
    api_token_id_or_username: String,
    #[serde(default)]
    api_token_secret_or_password: String,
    #[serde(default)]
    disable_tls_verification: Option<String>,
    #[serde(default)]
    nvidia_available: Option<String>,
    csrf: String,
}

const NODE_FIELDS: [&str; 8] = [
    "name",
    "site",
    "ipv4_address",
    "api_url",
    "api_token_id_or_username",
    "api_token_secret_or_password",
    "disable_tls_verification",
    "nvidia_available",
];

impl NodeForm {
    fn to_create(&self, s: &AdminState) -> Result<CreateNode, ApiError> {
        let site_id = site_named(s, "site", &self.site)?
            .ok_or_else(|| ApiError::invalid("site", "name the node's site"))?;
        Ok(CreateNode {
            name: self.name.trim().to_owned(),
            site_id,
            ipv4_address: address("ipv4_address", &self.ipv4_address, "an IPv4 address")?,
            api_url: given(&self.api_url),
            api_token_id_or_username: given(&self.api_token_id_or_username),
            // A secret is taken as typed: spaces may be part of a password.
            api_token_secret_or_password: Some(self.api_token_secret_or_password.clone())
                .filter(|p| !p.is_empty()),
            disable_tls_verification: self.disable_tls_verification.is_some(),
            nvidia_available: self.nvidia_available.is_some(),
        })
    }
}

fn checked(v: &Option<String>) -> &'static str {
    if v.is_some() {
        "on"
    } else {
        ""
    }
}

/// `GET /admin/nodes`.
pub(super) async fn nodes(
    State(s): State<AdminState>,
    ClientAddr(peer): ClientAddr,
    headers: HeaderMap,
) -> Response {
    let who = match admin(&s, &headers, peer, "/admin/nodes").await {
        Ok(w) => w,
        Err(r) => return r,
    };
    nodes_page(&s, &who, &NodeForm::default(), Reply::ok())
}

/// `POST /admin/nodes`: a new node.
pub(super) async fn create_node(
    State(s): State<AdminState>,
    ClientAddr(peer): ClientAddr,
    headers: HeaderMap,
    Form(f): Form<NodeForm>,
) -> Response {
    let who = match admin_posted(&s, &headers, peer, "/admin/nodes", &f.csrf).await {
        Ok(w) => w,
        Err(r) => return r,
    };
    let created = match f.to_create(&s) {
        Ok(b) => crate::service::nodes::create(&s.store, &who.principal.actor(), b).await,
        Err(e) => Err(e),
    };
    let reply = match created {
        Ok(n) if n.api_url.is_some() && n.has_secret => Reply::done(format!(
            "Node {} added. Import containers registers what it already runs.",
            n.name
        )),
        Ok(n) => Reply::done(format!(
            "Node {} added for DNS records only (no Proxmox API URL and secret).",
            n.name
        )),
        Err(e) => Reply::failed(e, &NODE_FIELDS),
    };
    nodes_page(&s, &who, &f, reply)
}

/// `POST /admin/nodes/{id}/import`: registers the node's containers siteward does not know.
pub(super) async fn import_node(
    State(s): State<AdminState>,
    ClientAddr(peer): ClientAddr,
    headers: HeaderMap,
    Path(id): Path<NodeId>,
    Form(f): Form<TokenForm>,
) -> Response {
    let who = match admin_posted(&s, &headers, peer, "/admin/nodes", &f.csrf).await {
        Ok(w) => w,
        Err(r) => return r,
    };
    let reply = match crate::service::nodes::import(&s, &who.principal.actor(), id).await {
        Ok(found) if found.is_empty() => {
            Reply::done("Nothing to import: siteward knows every container of that node.".into())
        }
        Ok(found) => Reply::done(format!(
            "Imported {} container{}: {}.",
            found.len(),
            if found.len() == 1 { "" } else { "s" },
            found
                .iter()
                .map(|c| c.hostname.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )),
        Err(e) => Reply::failed(e, &[]),
    };
    nodes_page(&s, &who, &NodeForm::default(), reply)
}

/// `POST /admin/nodes/{id}/delete`: refused while the node hosts containers.
pub(super) async fn delete_node(
    State(s): State<AdminState>,
    ClientAddr(peer): ClientAddr,
    headers: HeaderMap,
    Path(id): Path<NodeId>,
    Form(f): Form<TokenForm>,
) -> Response {
    let who = match admin_posted(&s, &headers, peer, "/admin/nodes", &f.csrf).await {
        Ok(w) => w,
        Err(r) => return r,
    };
    let reply = match crate::service::nodes::delete(&s.store, &who.principal.actor(), id).await {
        Ok(()) => Reply::done("Node deleted.".into()),
        Err(e) => Reply::failed(e, &[]),
    };
    nodes_page(&s, &who, &NodeForm::default(), reply)
}

/// The nodes page; what was typed (never the secret) comes back only when the post failed.
fn nodes_page(s: &AdminState, who: &Signed, typed: &NodeForm, reply: Reply) -> Response {
    let empty = NodeForm::default();
    let f = if reply.notice.is_some() {
        &empty
    } else {
        typed
    };
    let snap = s.store.snapshot();
    let mut rows = Vec::new();
    for v in snap.naming.sites.values() {
        for n in &v.nodes {
            let count = v.containers.iter().filter(|c| c.node_id == n.id).count();
            let managed = n.api_url.is_some() && n.has_secret;
            rows.push(vec![
                Cell::Text(n.name.clone()),
                Cell::Text(v.site.name.clone()),
                Cell::Code(opt(n.ipv4_address)),
                Cell::Text(if managed {
                    "managed on Proxmox".into()
                } else {
                    "records only".into()
                }),
                Cell::Text(if n.nvidia_available { "yes" } else { "no" }.into()),
                Cell::Text(count.to_string()),
                if managed {
                    Cell::Post(
                        "Import containers".into(),
                        format!("/admin/nodes/{}/import", n.id.0),
                    )
                } else {
                    Cell::Text(String::new())
                },
                if count == 0 {
                    Cell::Post("Delete".into(), format!("/admin/nodes/{}/delete", n.id.0))
                } else {
                    Cell::Text("(has containers)".into())
                },
            ]);
        }
    }
    // With one site there is nothing to choose.
    let site = match (f.site.is_empty(), snap.naming.sites.len()) {
        (true, 1) => snap
            .naming
            .sites
            .values()
            .map(|v| v.site.name.clone())
            .collect(),
        _ => f.site.clone(),
    };
    let mut page = TablePage::new(
        "Nodes",
        who.nav("admin"),
        who.csrf.clone(),
        vec![
            "Node",
            "Site",
            "Address",
            "Proxmox",
            "GPU",
            "Containers",
            "Import",
            "Delete",
        ],
        rows,
        "No nodes yet.",
    );
    page.forms = vec![NewForm {
        id: "new-node",
        heading: "New node",
        action: "/admin/nodes".into(),
        submit: "Add node",
        fields: vec![
            Field::text("name", "Proxmox node name", &f.name),
            Field::text("site", "Site (its name)", &site),
            Field::optional("ipv4_address", "Address", &f.ipv4_address),
            Field::optional(
                "api_url",
                "Proxmox API URL (https://host:8006/api2/json)",
                &f.api_url,
            ),
            Field::optional(
                "api_token_id_or_username",
                "API token id (user@realm!name) or user",
                &f.api_token_id_or_username,
            ),
            Field {
                kind: "password",
                // Never sent back to the browser.
                ..Field::optional(
                    "api_token_secret_or_password",
                    "Token secret or password",
                    "",
                )
            },
            Field {
                kind: "checkbox",
                ..Field::optional(
                    "disable_tls_verification",
                    "Skip TLS verification (self-signed node certificate)",
                    checked(&f.disable_tls_verification),
                )
            },
            Field {
                kind: "checkbox",
                ..Field::optional(
                    "nvidia_available",
                    "NVIDIA GPU for containers",
                    checked(&f.nvidia_available),
                )
            },
        ],
    }];
    page.notice = reply.notice;
    page.problems = reply.problems;
    render(reply.status, &page)
}

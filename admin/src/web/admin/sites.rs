//! `/admin/sites` and `/admin/nodes`: the sites with their internal domains and networks (and a
//! form for a new site, through `service::sites::create`), and every node with its address and
//! whether siteward drives it on Proxmox; read from the snapshot.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::Form;
use serde::Deserialize;

use super::table::{given, Cell, Field, NewForm, Reply, TablePage};
use super::{admin, admin_posted};
use crate::api::error::ApiError;
use crate::api::extract::ClientAddr;
use crate::service::sites::CreateSite;
use crate::web::{render, Signed};
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
                Cell::Text(site.name.clone()),
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
        action: "/admin/sites",
        submit: "Create site",
        fields: vec![
            Field::text("name", "Name", &f.name),
            Field::text(
                "internal_domain",
                "Internal domain (its DNS zone)",
                &f.internal_domain,
            ),
            Field::optional("subnet_mask", "Subnet mask", &f.subnet_mask),
            Field::optional("gateway", "Gateway", &f.gateway),
            Field::optional("dhcp_range", "DHCP range (first-last)", &f.dhcp_range),
            Field::optional(
                "dns_forwarders",
                "Upstream resolvers (comma-separated)",
                &f.dns_forwarders,
            ),
            Field::optional("external_ip", "Public address", &f.external_ip),
        ],
    }];
    page.notice = reply.notice;
    page.problems = reply.problems;
    render(reply.status, &page)
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
    let snap = s.store.snapshot();
    let mut rows = Vec::new();
    for v in snap.naming.sites.values() {
        for n in &v.nodes {
            let count = v.containers.iter().filter(|c| c.node_id == n.id).count();
            rows.push(vec![
                Cell::Text(n.name.clone()),
                Cell::Text(v.site.name.clone()),
                Cell::Code(opt(n.ipv4_address)),
                Cell::Text(if n.api_url.is_some() && n.has_secret {
                    "managed on Proxmox".into()
                } else {
                    "records only".into()
                }),
                Cell::Text(if n.nvidia_available { "yes" } else { "no" }.into()),
                Cell::Text(count.to_string()),
            ]);
        }
    }
    let page = TablePage::new(
        "Nodes",
        who.nav("admin"),
        who.csrf.clone(),
        vec!["Node", "Site", "Address", "Proxmox", "GPU", "Containers"],
        rows,
        "No nodes yet.",
    );
    render(StatusCode::OK, &page)
}

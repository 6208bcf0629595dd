//! `/admin/sites` and `/admin/nodes`: the sites with their internal domains and networks, and
//! every node with its address and whether siteward drives it on Proxmox; read from the
//! snapshot.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;

use super::admin;
use super::table::{Cell, TablePage};
use crate::api::extract::ClientAddr;
use crate::web::render;
use crate::AdminState;

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
    let page = TablePage::new(
        "Sites",
        who.nav("admin"),
        who.csrf.clone(),
        vec!["Site", "Internal domain", "Network", "Nodes", "Containers"],
        rows,
        "No sites yet (siteward site add, or POST /api/v1/sites).",
    );
    render(StatusCode::OK, &page)
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

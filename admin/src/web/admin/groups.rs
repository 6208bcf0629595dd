//! `/admin/groups` (every group with its members, from the snapshot) and `/admin/invites`
//! (open and used invitations).

use std::collections::BTreeMap;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;

use super::admin;
use super::table::{Cell, TablePage};
use crate::api::extract::ClientAddr;
use crate::web::{render, when, Problems};
use crate::AdminState;

/// `GET /admin/groups`.
pub(super) async fn groups(
    State(s): State<AdminState>,
    ClientAddr(peer): ClientAddr,
    headers: HeaderMap,
) -> Response {
    let who = match admin(&s, &headers, peer, "/admin/groups").await {
        Ok(w) => w,
        Err(r) => return r,
    };
    let snap = s.store.snapshot();
    let id = &snap.identity;
    let mut members: BTreeMap<_, Vec<&str>> = BTreeMap::new();
    for (uid, gids) in &id.groups_of {
        if let Some(u) = id.users.get(uid) {
            for g in gids {
                members.entry(*g).or_default().push(u.username.as_str());
            }
        }
    }
    let rows = id
        .groups
        .values()
        .map(|g| {
            let mut m = members.remove(&g.gid_number).unwrap_or_default();
            m.sort_unstable();
            vec![
                Cell::Code(g.cn.clone()),
                Cell::Text(g.gid_number.0.to_string()),
                Cell::Text(g.description.clone().unwrap_or_default()),
                Cell::Text(if g.is_administrator { "yes" } else { "no" }.into()),
                Cell::Text(m.join(", ")),
            ]
        })
        .collect();
    let page = TablePage::new(
        "Groups",
        who.nav("admin"),
        who.csrf.clone(),
        vec!["Group", "gid", "Description", "Administrators", "Members"],
        rows,
        "No groups.",
    );
    render(StatusCode::OK, &page)
}

/// `GET /admin/invites`.
pub(super) async fn invites(
    State(s): State<AdminState>,
    ClientAddr(peer): ClientAddr,
    headers: HeaderMap,
) -> Response {
    let who = match admin(&s, &headers, peer, "/admin/invites").await {
        Ok(w) => w,
        Err(r) => return r,
    };
    let (list, problems) = match s.store.list_invites().await {
        Ok(l) => (l, Problems::default()),
        Err(e) => {
            tracing::error!(error = %e, "listing invites failed");
            (
                Vec::new(),
                Problems::general("The invites could not be read."),
            )
        }
    };
    let rows = list
        .into_iter()
        .map(|i| {
            vec![
                Cell::Text(i.email.unwrap_or_default()),
                Cell::Text(when(&i.created_at)),
                Cell::Text(when(&i.expires_at)),
                Cell::Text(if i.used { "used" } else { "open" }.into()),
            ]
        })
        .collect();
    let mut page = TablePage::new(
        "Invites",
        who.nav("admin"),
        who.csrf.clone(),
        vec!["E-mail", "Created", "Expires", "State"],
        rows,
        "No invites (POST /api/v1/invites sends one).",
    );
    page.problems = problems;
    render(StatusCode::OK, &page)
}

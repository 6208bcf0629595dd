//! `/admin/audit`: the audit log, newest first, filtered by actor and resource (`?actor=`,
//! `?resource=`, both substrings, case-insensitive) in the database, a page at a time
//! (`?cursor=` from the "Older entries" link).

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde::Deserialize;

use super::admin;
use super::table::{given, Cell, Filter, TablePage};
use crate::api::extract::ClientAddr;
use crate::web::{render, when, Problems};
use crate::AdminState;

/// Entries per page.
const PAGE: i64 = 100;

/// `?actor=&resource=&cursor=`.
#[derive(Debug, Deserialize, Default)]
#[serde(default)]
pub(super) struct AuditQuery {
    actor: String,
    resource: String,
    cursor: String,
}

fn encoded(text: &str) -> percent_encoding::PercentEncode<'_> {
    percent_encoding::utf8_percent_encode(text, percent_encoding::NON_ALPHANUMERIC)
}

/// `GET /admin/audit`.
pub(super) async fn list(
    State(s): State<AdminState>,
    ClientAddr(peer): ClientAddr,
    headers: HeaderMap,
    Query(q): Query<AuditQuery>,
) -> Response {
    let who = match admin(&s, &headers, peer, "/admin/audit").await {
        Ok(w) => w,
        Err(r) => return r,
    };
    let page = crate::api::extract::PageQuery {
        limit: Some(PAGE),
        cursor: given(&q.cursor),
    }
    .page()
    .map_err(|_| {
        Problems::general("That link to older entries is not valid; this is the newest page.")
    });
    let filter = crate::service::audit::filter(Some(&q.actor), Some(&q.resource))
        .map_err(|e| Problems::from_api(e, &[]));
    let listing = match (page, filter) {
        (Ok(page), Ok(filter)) => s.store.audit_log(page, &filter).await.map_err(|e| {
            tracing::error!(error = %e, "reading the audit log failed");
            Problems::general("The audit log could not be read.")
        }),
        (Err(p), _) | (_, Err(p)) => Err(p),
    };
    let (entries, next, problems) = match listing {
        Ok(l) => (
            l.items,
            l.next_after.map(crate::api::extract::encode_cursor),
            Problems::default(),
        ),
        Err(p) => (Vec::new(), None, p),
    };
    let rows = entries
        .into_iter()
        .map(|e| {
            vec![
                Cell::Text(when(&e.at)),
                match e.actor_name {
                    Some(n) => Cell::Link(n.clone(), format!("/admin/audit?actor={}", encoded(&n))),
                    None => Cell::Text("system".into()),
                },
                Cell::Text(e.action),
                Cell::Code(format!(
                    "{} {}",
                    e.resource,
                    e.resource_id.unwrap_or_default()
                )),
                Cell::Code(e.remote_addr.unwrap_or_default()),
                Cell::Code(e.details.to_string()),
            ]
        })
        .collect();
    let mut page = TablePage::new(
        "Audit log",
        who.nav("admin"),
        who.csrf.clone(),
        vec!["When", "Actor", "Action", "Resource", "From", "Details"],
        rows,
        "No entries match.",
    );
    page.intro = Some(
        "Newest first; the filters match parts of the actor's name and of resource:id \
         (e.g. user:alice)."
            .into(),
    );
    page.more = next.map(|c| {
        (
            "Older entries",
            format!(
                "/admin/audit?actor={}&resource={}&cursor={}",
                encoded(&q.actor),
                encoded(&q.resource),
                encoded(&c)
            ),
        )
    });
    page.filter = Some(Filter {
        actor: q.actor,
        resource: q.resource,
    });
    page.problems = problems;
    render(StatusCode::OK, &page)
}

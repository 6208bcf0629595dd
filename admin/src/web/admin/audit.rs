//! `/admin/audit`: the audit log, newest first, filtered by actor and resource (`?actor=`,
//! `?resource=`, both substrings, case-insensitive) over the latest entries.

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde::Deserialize;

use super::admin;
use super::table::{Cell, Filter, TablePage};
use crate::api::extract::ClientAddr;
use crate::web::{render, when, Problems};
use crate::AdminState;

/// How many of the latest entries the filter looks at.
const LATEST: i64 = 500;

/// `?actor=&resource=`.
#[derive(Debug, Deserialize, Default)]
#[serde(default)]
pub(super) struct AuditQuery {
    actor: String,
    resource: String,
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
    let page = siteward_store::resources::Page {
        limit: LATEST,
        after: None,
    };
    let (entries, problems) = match s.store.audit_log(page).await {
        Ok(l) => (l.items, Problems::default()),
        Err(e) => {
            tracing::error!(error = %e, "reading the audit log failed");
            (
                Vec::new(),
                Problems::general("The audit log could not be read."),
            )
        }
    };
    let (actor, resource) = (
        q.actor.trim().to_lowercase(),
        q.resource.trim().to_lowercase(),
    );
    let rows = entries
        .into_iter()
        .filter(|e| {
            actor.is_empty()
                || e.actor_name
                    .as_deref()
                    .is_some_and(|n| n.to_lowercase().contains(&actor))
        })
        .filter(|e| {
            let what = format!(
                "{}:{}",
                e.resource,
                e.resource_id.as_deref().unwrap_or_default()
            );
            resource.is_empty() || what.to_lowercase().contains(&resource)
        })
        .map(|e| {
            vec![
                Cell::Text(when(&e.at)),
                match e.actor_name {
                    Some(n) => Cell::Link(
                        n.clone(),
                        format!(
                            "/admin/audit?actor={}",
                            percent_encoding::utf8_percent_encode(
                                &n,
                                percent_encoding::NON_ALPHANUMERIC
                            )
                        ),
                    ),
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
    page.intro = Some(format!(
        "The latest {LATEST} entries, newest first; the filters match parts of names."
    ));
    page.filter = Some(Filter {
        actor: q.actor,
        resource: q.resource,
    });
    page.problems = problems;
    render(StatusCode::OK, &page)
}

//! `/admin/domains`: external domains with their certificate's state, and "Issue now", which
//! starts the API's certificate order (a job; its page shows the steps live).

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::Form;
use siteward_store::ExternalDomainId;

use super::table::{Cell, TablePage};
use super::{admin, admin_posted};
use crate::api::extract::{ClientAddr, Path};
use crate::auth::see_other;
use crate::web::containers::TokenForm;
use crate::web::{render, when, Problems, Signed};
use crate::AdminState;

async fn page(s: &AdminState, who: &Signed, problems: Problems, status: StatusCode) -> Response {
    let snap = s.store.snapshot();
    let mut rows = Vec::new();
    for d in &snap.naming.external_domains {
        let cert = match s.store.certificate(d.id).await {
            Ok(c) => match (c.not_after, c.last_error) {
                (Some(t), None) => format!("valid until {}", when(&t)),
                (Some(t), Some(e)) => format!("valid until {}; last attempt failed: {e}", when(&t)),
                (None, Some(e)) => format!("none; last attempt failed: {e}"),
                (None, None) => "none yet".into(),
            },
            Err(e) => {
                tracing::error!(error = %e, "reading a certificate failed");
                "unknown".into()
            }
        };
        let site = d
            .site_id
            .and_then(|id| snap.naming.sites.get(&id))
            .map(|v| v.site.name.clone())
            .unwrap_or_else(|| "none".into());
        rows.push(vec![
            Cell::Code(d.domain.clone()),
            Cell::Text(site),
            Cell::Text(if d.has_cloudflare_api_key {
                "Cloudflare".into()
            } else {
                "our DNS".into()
            }),
            Cell::Text(cert),
            Cell::Post(
                "Issue now".into(),
                format!("/admin/domains/{}/certificate", d.id.0),
            ),
        ]);
    }
    let mut page = TablePage::new(
        "External domains",
        who.nav("admin"),
        who.csrf.clone(),
        vec!["Domain", "Site", "Challenges", "Certificate", "Order"],
        rows,
        "No external domains yet.",
    );
    page.problems = problems;
    render(status, &page)
}

/// `GET /admin/domains`.
pub(super) async fn list(
    State(s): State<AdminState>,
    ClientAddr(peer): ClientAddr,
    headers: HeaderMap,
) -> Response {
    match admin(&s, &headers, peer, "/admin/domains").await {
        Ok(who) => page(&s, &who, Problems::default(), StatusCode::OK).await,
        Err(r) => r,
    }
}

/// `POST /admin/domains/{id}/certificate`: to the order's job page.
pub(super) async fn issue(
    State(s): State<AdminState>,
    ClientAddr(peer): ClientAddr,
    headers: HeaderMap,
    Path(id): Path<ExternalDomainId>,
    Form(f): Form<TokenForm>,
) -> Response {
    let who = match admin_posted(&s, &headers, peer, "/admin/domains", &f.csrf).await {
        Ok(w) => w,
        Err(r) => return r,
    };
    match crate::service::domains::order_certificate(
        &s,
        &who.principal.actor(),
        who.principal.uid,
        id,
    )
    .await
    {
        Ok(job) => see_other(&format!("/jobs/{}", job.0), vec![]),
        Err(e) => {
            let status = e.status;
            page(&s, &who, Problems::from_api(e, &[]), status).await
        }
    }
}

//! `/admin/domains`: external domains with their certificate's state, "Issue now", which starts
//! the API's certificate order (a job; its page shows the steps live), and a form for a new
//! domain (through `service::domains::create`); a domain is deleted by typing it out
//! (`service::domains::delete`).

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use axum::Form;
use siteward_store::ExternalDomainId;

use serde::Deserialize;

use super::table::{given, nothing_named, site_named, Cell, Field, NewForm, Reply, TablePage};
use super::{admin, admin_posted};
use crate::api::error::ApiError;
use crate::api::extract::{ClientAddr, Path};
use crate::auth::see_other;
use crate::service::domains::DomainBody;
use crate::web::containers::TokenForm;
use crate::web::{render, when, Signed};
use crate::AdminState;

/// The new-domain form as typed (the Cloudflare key is never sent back).
#[derive(Debug, Default, Deserialize)]
pub(super) struct DomainForm {
    #[serde(default)]
    domain: String,
    #[serde(default)]
    site: String,
    #[serde(default)]
    acme_email: String,
    #[serde(default)]
    acme_directory: String,
    #[serde(default)]
    cloudflare_api_email: String,
    #[serde(default)]
    cloudflare_api_key: String,
    /// The delete form's confirmation: the domain typed out.
    #[serde(default)]
    delete_domain: String,
    csrf: String,
}

const DOMAIN_FIELDS: [&str; 6] = [
    "domain",
    "site",
    "acme_email",
    "acme_directory",
    "cloudflare_api_email",
    "cloudflare_api_key",
];

impl DomainForm {
    /// The API's body; the site is named, as on the sites page.
    fn to_body(&self, s: &AdminState) -> Result<DomainBody, ApiError> {
        let site = site_named(s, "site", &self.site)?;
        Ok(DomainBody {
            domain: Some(self.domain.trim().to_owned()),
            acme_email: Some(given(&self.acme_email)),
            acme_directory: Some(given(&self.acme_directory)),
            cloudflare_api_email: Some(given(&self.cloudflare_api_email)),
            cloudflare_api_key: Some(given(&self.cloudflare_api_key)),
            site_id: Some(site),
            auth_server: None,
        })
    }
}

/// `POST /admin/domains`: a new external domain.
pub(super) async fn create(
    State(s): State<AdminState>,
    ClientAddr(peer): ClientAddr,
    headers: HeaderMap,
    Form(f): Form<DomainForm>,
) -> Response {
    let who = match admin_posted(&s, &headers, peer, "/admin/domains", &f.csrf).await {
        Ok(w) => w,
        Err(r) => return r,
    };
    let created = match f.to_body(&s) {
        Ok(b) => crate::service::domains::create(&s.store, &who.principal.actor(), b).await,
        Err(e) => Err(e),
    };
    let reply = match created {
        Ok(d) => Reply::done(format!(
            "Domain {} added. Issue now orders its certificate; the scheduler keeps it renewed.",
            d.domain
        )),
        Err(e) => Reply::failed(e, &DOMAIN_FIELDS),
    };
    page(&s, &who, &f, reply).await
}

/// `POST /admin/domains/delete`: deletes the domain typed out in full (its certificate and
/// renewals go with it).
pub(super) async fn delete(
    State(s): State<AdminState>,
    ClientAddr(peer): ClientAddr,
    headers: HeaderMap,
    Form(f): Form<DomainForm>,
) -> Response {
    let who = match admin_posted(&s, &headers, peer, "/admin/domains", &f.csrf).await {
        Ok(w) => w,
        Err(r) => return r,
    };
    let typed = f.delete_domain.trim().trim_end_matches('.');
    let found = s
        .store
        .snapshot()
        .naming
        .external_domains
        .iter()
        .find(|d| d.domain.eq_ignore_ascii_case(typed))
        .map(|d| (d.id, d.domain.clone()));
    let deleted = match found {
        Some((id, name)) => crate::service::domains::delete(&s.store, &who.principal.actor(), id)
            .await
            .map(|()| name),
        None => Err(nothing_named("delete_domain", typed, "external domain")),
    };
    let reply = match deleted {
        Ok(name) => Reply::done(format!("Domain {name} deleted.")),
        Err(e) => Reply::failed(e, &["delete_domain"]),
    };
    page(&s, &who, &f, reply).await
}

async fn page(s: &AdminState, who: &Signed, typed: &DomainForm, reply: Reply) -> Response {
    let empty = DomainForm::default();
    let f = if reply.notice.is_some() {
        &empty
    } else {
        typed
    };
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
    page.forms = vec![NewForm {
        id: "new-domain",
        heading: "New external domain",
        action: "/admin/domains".into(),
        submit: "Add domain",
        fields: vec![
            Field::text("domain", "Domain", &f.domain),
            Field::optional(
                "site",
                "Site whose DNS answers its challenges (its name)",
                &f.site,
            ),
            Field {
                kind: "email",
                ..Field::optional("acme_email", "ACME account e-mail", &f.acme_email)
            },
            Field::optional(
                "acme_directory",
                "ACME directory (blank: the server's default CA)",
                &f.acme_directory,
            ),
            Field::optional(
                "cloudflare_api_email",
                "Cloudflare account e-mail (with a global key)",
                &f.cloudflare_api_email,
            ),
            Field {
                kind: "password",
                // Never sent back to the browser.
                ..Field::optional(
                    "cloudflare_api_key",
                    "Cloudflare API token or global key",
                    "",
                )
            },
        ],
    }];
    if !snap.naming.external_domains.is_empty() {
        page.forms.push(NewForm {
            id: "delete-domain",
            heading: "Delete a domain",
            action: "/admin/domains/delete".into(),
            submit: "Delete domain",
            fields: vec![Field::text(
                "delete_domain",
                "The domain, typed out (its certificate goes with it)",
                &f.delete_domain,
            )],
        });
    }
    page.notice = reply.notice;
    page.problems = reply.problems;
    render(reply.status, &page)
}

/// `GET /admin/domains`.
pub(super) async fn list(
    State(s): State<AdminState>,
    ClientAddr(peer): ClientAddr,
    headers: HeaderMap,
) -> Response {
    match admin(&s, &headers, peer, "/admin/domains").await {
        Ok(who) => page(&s, &who, &DomainForm::default(), Reply::ok()).await,
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
        Err(e) => page(&s, &who, &DomainForm::default(), Reply::failed(e, &[])).await,
    }
}

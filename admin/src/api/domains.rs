//! External domains and their certificates: `/external-domains`, `/external-domains/{id}`,
//! `/external-domains/{id}/certificate`.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;
use siteward_store::resources::DomainInput;
use siteward_store::*;

use super::common::{
    audit, check_domain, check_mail, check_url, created, no_content, nullable, ApiResult,
    ListResponse,
};
use super::error::ApiError;
use super::extract::{Admin, Json, PageQuery, Path, Q};
use super::jobs::JobAccepted;
use super::openapi::{delete, get, patch, post, Access, Api};
use crate::AdminState;

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
    Path(id): Path<ExternalDomainId>,
) -> ApiResult<axum::Json<ExternalDomain>> {
    Ok(axum::Json(s.store.domain(id).await?))
}

/// Starts a certificate order for the domain as a job (202; follow `/api/v1/jobs/{id}/events`).
async fn order_certificate(
    State(s): State<AdminState>,
    Admin(p): Admin,
    Path(id): Path<ExternalDomainId>,
) -> ApiResult<Response> {
    let job_id = order(&s, &p, id).await?;
    Ok((StatusCode::ACCEPTED, axum::Json(JobAccepted { job_id })).into_response())
}

/// Starts a certificate order for a domain as a job, audited.
pub(crate) async fn order(
    s: &AdminState,
    p: &super::extract::Principal,
    id: ExternalDomainId,
) -> ApiResult<JobId> {
    let domain = s.store.domain(id).await?;
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
        s,
        &p.actor(),
        "order_certificate",
        "external_domain",
        id,
        json!({ "domain": domain.domain }),
    )
    .await;
    orders.start(domain.id, job_id);
    Ok(job_id)
}

/// The domain's certificate: names, issuer, serial, validity, renewal and last error.
async fn get_certificate(
    State(s): State<AdminState>,
    _: Admin,
    Path(id): Path<ExternalDomainId>,
) -> ApiResult<axum::Json<siteward_store::acme::CertificateInfo>> {
    Ok(axum::Json(s.store.certificate(id).await?))
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
    Path(id): Path<ExternalDomainId>,
    Json(b): Json<DomainBody>,
) -> ApiResult<axum::Json<ExternalDomain>> {
    b.check()?;
    let key_changed = b.cloudflare_api_key.is_some();
    let d = s.store.update_domain(id, b.input()).await?;
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
    Path(id): Path<ExternalDomainId>,
) -> ApiResult<Response> {
    s.store.delete_domain(id).await?;
    audit(&s, &p.actor(), "delete", "external_domain", id, json!({})).await;
    Ok(no_content())
}

/// Registers the routes above in the route table (router and OpenAPI document).
pub(super) fn routes(a: &mut Api) {
    use Access::*;
    a.op::<(), ListResponse<ExternalDomain>>(
        get(list_domains),
        "/external-domains",
        "List external domains",
        "domains",
        Admin,
        200,
    );
    a.op::<DomainBody, ExternalDomain>(
        post(create_domain),
        "/external-domains",
        "Add an external domain",
        "domains",
        Admin,
        201,
    );
    a.op::<(), ExternalDomain>(
        get(get_domain),
        "/external-domains/{id}",
        "Get an external domain",
        "domains",
        Admin,
        200,
    );
    a.op::<DomainBody, ExternalDomain>(
        patch(update_domain),
        "/external-domains/{id}",
        "Change an external domain",
        "domains",
        Admin,
        200,
    );
    a.op::<(), ()>(
        delete(delete_domain),
        "/external-domains/{id}",
        "Remove an external domain",
        "domains",
        Admin,
        204,
    );
    a.op::<(), JobAccepted>(
        post(order_certificate),
        "/external-domains/{id}/certificate",
        "Order the domain's certificate now (a job)",
        "domains",
        Admin,
        202,
    );
    a.op::<(), siteward_store::acme::CertificateInfo>(
        get(get_certificate),
        "/external-domains/{id}/certificate",
        "The domain's certificate and its renewal state",
        "domains",
        Admin,
        200,
    );
}

//! External domains: add, change, delete, and ordering a certificate (a job).

use serde::Deserialize;
use siteward_store::resources::{DomainPatch, NewDomain};
use siteward_store::{Actor, ExternalDomain, ExternalDomainId, JobId, SiteId, Store};

use super::rules::{check_domain, check_mail, check_url};
use super::{nullable, ApiError, Result};
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
    pub site_id: Option<Option<SiteId>>,
    /// auth_request server URL.
    #[serde(default, deserialize_with = "nullable")]
    pub auth_server: Option<Option<String>>,
}

impl DomainBody {
    fn check(&self) -> Result<()> {
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
    fn patch(self) -> DomainPatch {
        DomainPatch {
            domain: self.domain,
            acme_email: self.acme_email,
            acme_directory: self.acme_directory,
            cloudflare_api_email: self.cloudflare_api_email,
            cloudflare_api_key: self.cloudflare_api_key,
            site_id: self.site_id,
            auth_server: self.auth_server,
        }
    }
}

/// Adds an external domain; a Cloudflare key is sealed before it reaches the database.
pub async fn create(store: &Store, by: &Actor, b: DomainBody) -> Result<ExternalDomain> {
    b.check()?;
    let Some(domain) = b.domain else {
        return Err(ApiError::invalid("domain", "domain is required"));
    };
    let input = NewDomain {
        domain,
        acme_email: b.acme_email.flatten(),
        acme_directory: b.acme_directory.flatten(),
        cloudflare_api_email: b.cloudflare_api_email.flatten(),
        cloudflare_api_key: b.cloudflare_api_key.flatten(),
        site_id: b.site_id.flatten(),
        auth_server: b.auth_server.flatten(),
    };
    Ok(store.create_domain(input, by).await?)
}

/// Changes an external domain.
pub async fn update(
    store: &Store,
    by: &Actor,
    id: ExternalDomainId,
    b: DomainBody,
) -> Result<ExternalDomain> {
    b.check()?;
    Ok(store.update_domain(id, b.patch(), by).await?)
}

/// Deletes an external domain (refused while HTTP services use it).
pub async fn delete(store: &Store, by: &Actor, id: ExternalDomainId) -> Result<()> {
    Ok(store.delete_domain(id, by).await?)
}

/// Orders a certificate for the domain now, as a job of `owner`.
pub async fn order_certificate(
    s: &AdminState,
    by: &Actor,
    owner: siteward_store::Uid,
    id: ExternalDomainId,
) -> Result<JobId> {
    let domain = s.store.domain(id).await?;
    let Some(orders) = s.certificates.clone() else {
        return Err(ApiError::new(
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            "acme_unavailable",
            "certificate orders are not available in this process",
        ));
    };
    let job_id = s
        .store
        .request_job(
            "certificate",
            &format!("external_domain:{id}"),
            Some(owner),
            by,
            "order_certificate",
            "external_domain",
            id,
            serde_json::json!({ "domain": domain.domain }),
        )
        .await?;
    orders.start(domain.id, job_id);
    Ok(job_id)
}

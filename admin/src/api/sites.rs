//! Sites: `/sites`, `/sites/{id}`.

use axum::extract::State;
use axum::response::Response;
use serde::{Deserialize, Serialize};
use serde_json::json;
use siteward_store::resources::SitePatch;
use siteward_store::*;

use super::common::{
    audit, check_domain, check_len, created, fields, no_content, nullable, ApiResult, ListResponse,
};
use super::error::ApiError;
use super::extract::{Admin, Json, PageQuery, Path, Q};
use super::openapi::{delete, get, patch, post, Access, Api};
use crate::AdminState;

fn check_forwarders(value: &str) -> ApiResult<()> {
    for part in value.split([',', ' ']).filter(|s| !s.is_empty()) {
        if part.parse::<std::net::IpAddr>().is_err() {
            return Err(ApiError::invalid(
                "dns_forwarders",
                "dns_forwarders must be IP addresses separated by commas",
            ));
        }
    }
    Ok(())
}

/// A site to create.
#[derive(Debug, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateSite {
    /// Display name.
    pub name: String,
    /// The site's DNS zone.
    pub internal_domain: String,
    /// `first-last` DHCP range inside the subnet.
    pub dhcp_range: Option<String>,
    /// Netmask, e.g. 255.255.255.0.
    pub subnet_mask: Option<std::net::Ipv4Addr>,
    /// Gateway.
    pub gateway: Option<std::net::Ipv4Addr>,
    /// Upstream resolvers, comma-separated.
    pub dns_forwarders: Option<String>,
    /// Public address.
    pub external_ip: Option<std::net::IpAddr>,
}

/// Changes to a site; `null` clears an optional field.
#[derive(Debug, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateSite {
    /// Display name.
    pub name: Option<String>,
    /// Zone.
    pub internal_domain: Option<String>,
    /// DHCP range.
    #[serde(default, deserialize_with = "nullable")]
    pub dhcp_range: Option<Option<String>>,
    /// Netmask.
    #[serde(default, deserialize_with = "nullable")]
    pub subnet_mask: Option<Option<std::net::Ipv4Addr>>,
    /// Gateway.
    #[serde(default, deserialize_with = "nullable")]
    pub gateway: Option<Option<std::net::Ipv4Addr>>,
    /// Resolvers.
    #[serde(default, deserialize_with = "nullable")]
    pub dns_forwarders: Option<Option<String>>,
    /// Public address.
    #[serde(default, deserialize_with = "nullable")]
    pub external_ip: Option<Option<std::net::IpAddr>>,
}

async fn list_sites(
    State(s): State<AdminState>,
    _: Admin,
    Q(q): Q<PageQuery>,
) -> ApiResult<axum::Json<ListResponse<Site>>> {
    Ok(axum::Json(s.store.list_sites(q.page()?).await?.into()))
}

async fn get_site(
    State(s): State<AdminState>,
    _: Admin,
    Path(id): Path<SiteId>,
) -> ApiResult<axum::Json<Site>> {
    Ok(axum::Json(s.store.site(id).await?))
}

async fn create_site(
    State(s): State<AdminState>,
    Admin(p): Admin,
    Json(b): Json<CreateSite>,
) -> ApiResult<Response> {
    check_len("name", &b.name, 1, 100)?;
    check_domain("internal_domain", &b.internal_domain)?;
    if let Some(f) = &b.dns_forwarders {
        check_forwarders(f)?;
    }
    let site = s
        .store
        .create_site_checked(NewSite {
            name: b.name.clone(),
            internal_domain: b.internal_domain.clone(),
            dhcp_range: b.dhcp_range.clone(),
            subnet_mask: b.subnet_mask,
            gateway: b.gateway,
            dns_forwarders: b.dns_forwarders.clone(),
            external_ip: b.external_ip,
        })
        .await?;
    audit(&s, &p.actor(), "create", "site", site.id, fields(&b)).await;
    Ok(created(site))
}

async fn update_site(
    State(s): State<AdminState>,
    Admin(p): Admin,
    Path(id): Path<SiteId>,
    Json(b): Json<UpdateSite>,
) -> ApiResult<axum::Json<Site>> {
    if let Some(n) = &b.name {
        check_len("name", n, 1, 100)?;
    }
    if let Some(d) = &b.internal_domain {
        check_domain("internal_domain", d)?;
    }
    if let Some(Some(f)) = &b.dns_forwarders {
        check_forwarders(f)?;
    }
    let details = fields(&b);
    let site = s
        .store
        .update_site(
            id,
            SitePatch {
                name: b.name,
                internal_domain: b.internal_domain,
                dhcp_range: b.dhcp_range,
                subnet_mask: b.subnet_mask,
                gateway: b.gateway,
                dns_forwarders: b.dns_forwarders,
                external_ip: b.external_ip,
            },
        )
        .await?;
    audit(&s, &p.actor(), "update", "site", id, details).await;
    Ok(axum::Json(site))
}

async fn delete_site(
    State(s): State<AdminState>,
    Admin(p): Admin,
    Path(id): Path<SiteId>,
) -> ApiResult<Response> {
    s.store.delete_site(id).await?;
    audit(&s, &p.actor(), "delete", "site", id, json!({})).await;
    Ok(no_content())
}

/// Registers the routes above in the route table (router and OpenAPI document).
pub(super) fn routes(a: &mut Api) {
    use Access::*;
    a.op::<(), ListResponse<Site>>(get(list_sites), "/sites", "List sites", "sites", Admin, 200);
    a.op::<CreateSite, Site>(
        post(create_site),
        "/sites",
        "Create a site",
        "sites",
        Admin,
        201,
    );
    a.op::<(), Site>(
        get(get_site),
        "/sites/{id}",
        "Get a site",
        "sites",
        Admin,
        200,
    );
    a.op::<UpdateSite, Site>(
        patch(update_site),
        "/sites/{id}",
        "Change a site",
        "sites",
        Admin,
        200,
    );
    a.op::<(), ()>(
        delete(delete_site),
        "/sites/{id}",
        "Delete a site",
        "sites",
        Admin,
        204,
    );
}

//! Sites: create, change, delete.

use serde::{Deserialize, Serialize};
use siteward_store::resources::SitePatch;
use siteward_store::{Actor, NewSite, Site, SiteId, Store};

use super::rules::{check_domain, check_len};
use super::{nullable, ApiError, Result};

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

fn check_forwarders(value: &str) -> Result<()> {
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

/// Creates a site (the store checks the network fields against each other).
pub async fn create(store: &Store, by: &Actor, b: CreateSite) -> Result<Site> {
    check_len("name", &b.name, 1, 100)?;
    check_domain("internal_domain", &b.internal_domain)?;
    if let Some(f) = &b.dns_forwarders {
        check_forwarders(f)?;
    }
    let new = NewSite {
        name: b.name,
        internal_domain: b.internal_domain,
        dhcp_range: b.dhcp_range,
        subnet_mask: b.subnet_mask,
        gateway: b.gateway,
        dns_forwarders: b.dns_forwarders,
        external_ip: b.external_ip,
    };
    Ok(store.create_site(new, by).await?)
}

/// Changes a site.
pub async fn update(store: &Store, by: &Actor, id: SiteId, b: UpdateSite) -> Result<Site> {
    if let Some(n) = &b.name {
        check_len("name", n, 1, 100)?;
    }
    if let Some(d) = &b.internal_domain {
        check_domain("internal_domain", d)?;
    }
    if let Some(Some(f)) = &b.dns_forwarders {
        check_forwarders(f)?;
    }
    let patch = SitePatch {
        name: b.name,
        internal_domain: b.internal_domain,
        dhcp_range: b.dhcp_range,
        subnet_mask: b.subnet_mask,
        gateway: b.gateway,
        dns_forwarders: b.dns_forwarders,
        external_ip: b.external_ip,
    };
    Ok(store.update_site(id, patch, by).await?)
}

/// Deletes a site (refused while it has nodes).
pub async fn delete(store: &Store, by: &Actor, id: SiteId) -> Result<()> {
    Ok(store.delete_site(id, by).await?)
}

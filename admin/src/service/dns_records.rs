//! A site's static DNS records: add, remove.

use serde::{Deserialize, Serialize};
use siteward_store::{Actor, DnsRecord, DnsRecordId, SiteId, Store};

use super::rules::check_domain;
use super::{ApiError, Result};

/// A static record.
#[derive(Debug, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateRecord {
    /// Owner relative to the zone (`@` for the apex, `*` for a wildcard).
    pub name: String,
    /// A, AAAA, CNAME, TXT, MX, SRV, CAA, NS or PTR.
    #[serde(rename = "type")]
    pub rtype: String,
    /// Presentation-format RDATA.
    pub value: String,
    /// TTL in seconds (default 300).
    pub ttl: Option<i32>,
}

fn check_record(r: &CreateRecord) -> Result<()> {
    let t = r.rtype.to_ascii_uppercase();
    let v = r.value.trim();
    let ok = match t.as_str() {
        "A" => v.parse::<std::net::Ipv4Addr>().is_ok(),
        "AAAA" => v.parse::<std::net::Ipv6Addr>().is_ok(),
        "CNAME" | "NS" | "PTR" => check_domain("value", v).is_ok(),
        "MX" => v.split_once(' ').is_some_and(|(p, h)| {
            p.parse::<u16>().is_ok() && check_domain("value", h.trim()).is_ok()
        }),
        "SRV" => {
            let f: Vec<&str> = v.split_whitespace().collect();
            f.len() == 4
                && f[..3].iter().all(|n| n.parse::<u16>().is_ok())
                && check_domain("value", f[3]).is_ok()
        }
        "TXT" => !v.is_empty() && v.len() <= 4000,
        "CAA" => v.split_whitespace().count() >= 3,
        _ => {
            return Err(ApiError::invalid(
                "type",
                "type must be A, AAAA, CNAME, TXT, MX, SRV, CAA, NS or PTR",
            ))
        }
    };
    if !ok {
        return Err(ApiError::invalid(
            "value",
            format!("value is not valid {t} data"),
        ));
    }
    if let Some(ttl) = r.ttl {
        if !(0..=604_800).contains(&ttl) {
            return Err(ApiError::invalid("ttl", "ttl must be 0 to 604800"));
        }
    }
    Ok(())
}

/// Adds a static record to a site's zone (the database keeps one owner per name).
pub async fn create(store: &Store, by: &Actor, site: SiteId, b: CreateRecord) -> Result<DnsRecord> {
    check_record(&b)?;
    Ok(store
        .create_dns_record(
            site,
            &b.name,
            &b.rtype,
            b.value.trim(),
            b.ttl.unwrap_or(300),
            by,
        )
        .await?)
}

/// Removes a static record.
pub async fn delete(store: &Store, by: &Actor, site: SiteId, id: DnsRecordId) -> Result<()> {
    Ok(store.delete_dns_record(site, id, by).await?)
}

//! A site's static DNS records: `/sites/{id}/dns-records`, `/sites/{id}/dns-records/{record_id}`.

use axum::extract::State;
use axum::response::Response;
use serde::{Deserialize, Serialize};
use serde_json::json;
use siteward_store::*;

use super::common::{audit, check_domain, created, fields, no_content, ApiResult, ListResponse};
use super::error::ApiError;
use super::extract::{Admin, Json, PageQuery, Path, Q};
use super::openapi::{delete, get, post, Access, Api};
use crate::AdminState;

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

fn check_record(r: &CreateRecord) -> ApiResult<()> {
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

async fn list_records(
    State(s): State<AdminState>,
    _: Admin,
    Path(site): Path<i64>,
    Q(q): Q<PageQuery>,
) -> ApiResult<axum::Json<ListResponse<DnsRecord>>> {
    s.store.site(SiteId(site)).await?;
    Ok(axum::Json(
        s.store
            .list_dns_records(SiteId(site), q.page()?)
            .await?
            .into(),
    ))
}

async fn create_record(
    State(s): State<AdminState>,
    Admin(p): Admin,
    Path(site): Path<i64>,
    Json(b): Json<CreateRecord>,
) -> ApiResult<Response> {
    check_record(&b)?;
    let r = s
        .store
        .create_dns_record(
            SiteId(site),
            &b.name,
            &b.rtype,
            b.value.trim(),
            b.ttl.unwrap_or(300),
        )
        .await?;
    audit(&s, &p.actor(), "create", "dns_record", r.id, fields(&b)).await;
    Ok(created(r))
}

async fn delete_record(
    State(s): State<AdminState>,
    Admin(p): Admin,
    Path((site, id)): Path<(i64, i64)>,
) -> ApiResult<Response> {
    s.store
        .delete_dns_record(SiteId(site), DnsRecordId(id))
        .await?;
    audit(
        &s,
        &p.actor(),
        "delete",
        "dns_record",
        id,
        json!({ "site_id": site }),
    )
    .await;
    Ok(no_content())
}

/// Registers the routes above in the route table (router and OpenAPI document).
pub(super) fn routes(a: &mut Api) {
    use Access::*;
    a.op::<(), ListResponse<DnsRecord>>(
        get(list_records),
        "/sites/{id}/dns-records",
        "List a site's static DNS records",
        "dns",
        Admin,
        200,
    );
    a.op::<CreateRecord, DnsRecord>(
        post(create_record),
        "/sites/{id}/dns-records",
        "Add a static DNS record",
        "dns",
        Admin,
        201,
    );
    a.op::<(), ()>(
        delete(delete_record),
        "/sites/{id}/dns-records/{record_id}",
        "Remove a static DNS record",
        "dns",
        Admin,
        204,
    );
}

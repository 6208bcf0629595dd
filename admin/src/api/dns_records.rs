//! A site's static DNS records: `/sites/{id}/dns-records`, `/sites/{id}/dns-records/{record_id}`.

use axum::extract::State;
use axum::response::Response;
use siteward_store::*;

use super::common::{created, no_content, ApiResult, ListResponse};
use super::extract::{Admin, Json, PageQuery, Path, Q};
use super::openapi::{delete, get, post, Access, Api};
use crate::service::dns_records as service;
pub use crate::service::dns_records::CreateRecord;
use crate::AdminState;

async fn list_records(
    State(s): State<AdminState>,
    _: Admin,
    Path(site): Path<SiteId>,
    Q(q): Q<PageQuery>,
) -> ApiResult<axum::Json<ListResponse<DnsRecord>>> {
    s.store.site(site).await?;
    Ok(axum::Json(
        s.store.list_dns_records(site, q.page()?).await?.into(),
    ))
}

async fn create_record(
    State(s): State<AdminState>,
    Admin(p): Admin,
    Path(site): Path<SiteId>,
    Json(b): Json<CreateRecord>,
) -> ApiResult<Response> {
    Ok(created(
        service::create(&s.store, &p.actor(), site, b).await?,
    ))
}

async fn delete_record(
    State(s): State<AdminState>,
    Admin(p): Admin,
    Path((site, id)): Path<(SiteId, DnsRecordId)>,
) -> ApiResult<Response> {
    service::delete(&s.store, &p.actor(), site, id).await?;
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

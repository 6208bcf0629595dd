//! The audit log: `/audit`.

use axum::extract::State;
use siteward_store::resources;

use super::common::{ApiResult, ListResponse};
use super::extract::{Admin, PageQuery, Q};
use super::openapi::{get, Access, Api};
use crate::AdminState;

/// `?limit=&cursor=&actor=&resource=`.
#[derive(Debug, serde::Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
struct AuditQuery {
    /// 1 to 500 (default 50).
    limit: Option<i64>,
    /// From the previous page's `next_cursor`.
    cursor: Option<String>,
    /// Part of the actor's name, case-insensitive.
    actor: Option<String>,
    /// Part of `resource:id` (e.g. `user:alice`), case-insensitive.
    resource: Option<String>,
}

async fn list_audit(
    State(s): State<AdminState>,
    _: Admin,
    Q(q): Q<AuditQuery>,
) -> ApiResult<axum::Json<ListResponse<resources::AuditEntry>>> {
    let page = PageQuery {
        limit: q.limit,
        cursor: q.cursor,
    }
    .page()?;
    let filter = crate::service::audit::filter(q.actor.as_deref(), q.resource.as_deref())?;
    Ok(axum::Json(s.store.audit_log(page, &filter).await?.into()))
}

/// Registers the routes above in the route table (router and OpenAPI document).
pub(super) fn routes(a: &mut Api) {
    use Access::*;
    a.op::<(), ListResponse<resources::AuditEntry>>(
        get(list_audit),
        "/audit",
        "Read the audit log, newest first",
        "audit",
        Admin,
        200,
    );
}

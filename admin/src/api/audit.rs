//! The audit log: `/audit`.

use axum::extract::State;
use siteward_store::resources;

use super::common::{ApiResult, ListResponse};
use super::extract::{Admin, PageQuery, Q};
use super::openapi::{get, Access, Api};
use crate::AdminState;

async fn list_audit(
    State(s): State<AdminState>,
    _: Admin,
    Q(q): Q<PageQuery>,
) -> ApiResult<axum::Json<ListResponse<resources::AuditEntry>>> {
    Ok(axum::Json(s.store.audit_log(q.page()?).await?.into()))
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

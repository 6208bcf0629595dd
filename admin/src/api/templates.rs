//! Templates containers may be made from: `/templates`.

use axum::extract::State;
use serde::Deserialize;
use siteward_store::*;

use super::common::ApiResult;
use super::extract::{Principal, Q};
use super::openapi::{get, Access, Api};
use crate::AdminState;

/// `?site_id=` (required) and `?node_id=`.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TemplateQuery {
    /// The site.
    pub site_id: i64,
    /// Only this node's.
    pub node_id: Option<i64>,
}

async fn list_templates(
    State(s): State<AdminState>,
    _: Principal,
    Q(q): Q<TemplateQuery>,
) -> ApiResult<axum::Json<Vec<crate::templates::AllowedTemplate>>> {
    let list = s
        .jobs
        .allowed_templates(SiteId(q.site_id), q.node_id.map(NodeId))
        .await?;
    Ok(axum::Json(list))
}

/// Registers the routes above in the route table (router and OpenAPI document).
pub(super) fn routes(a: &mut Api) {
    use Access::*;
    a.op::<(), Vec<crate::templates::AllowedTemplate>>(
        get(list_templates),
        "/templates",
        "Templates containers may be made from on a site's nodes (?site_id=, ?node_id=)",
        "containers",
        User,
        200,
    );
}

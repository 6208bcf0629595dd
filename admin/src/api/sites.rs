//! Sites: `/sites`, `/sites/{id}`.

use axum::extract::State;
use axum::response::Response;
use siteward_store::*;

use super::common::{created, no_content, ApiResult, ListResponse};
use super::extract::{Admin, Json, PageQuery, Path, Q};
use super::openapi::{delete, get, patch, post, Access, Api};
use crate::service::sites as service;
pub use crate::service::sites::{CreateSite, UpdateSite};
use crate::AdminState;

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
    Ok(created(service::create(&s.store, &p.actor(), b).await?))
}

async fn update_site(
    State(s): State<AdminState>,
    Admin(p): Admin,
    Path(id): Path<SiteId>,
    Json(b): Json<UpdateSite>,
) -> ApiResult<axum::Json<Site>> {
    Ok(axum::Json(
        service::update(&s.store, &p.actor(), id, b).await?,
    ))
}

async fn delete_site(
    State(s): State<AdminState>,
    Admin(p): Admin,
    Path(id): Path<SiteId>,
) -> ApiResult<Response> {
    service::delete(&s.store, &p.actor(), id).await?;
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

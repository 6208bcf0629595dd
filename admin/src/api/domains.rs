//! External domains and their certificates: `/external-domains`, `/external-domains/{id}`,
//! `/external-domains/{id}/certificate`.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use siteward_store::*;

use super::common::{created, no_content, ApiResult, ListResponse};
use super::extract::{Admin, Json, PageQuery, Path, Q};
use super::jobs::JobAccepted;
use super::openapi::{delete, get, patch, post, Access, Api};
use crate::service::domains as service;
pub use crate::service::domains::DomainBody;
use crate::AdminState;

async fn list_domains(
    State(s): State<AdminState>,
    _: Admin,
    Q(q): Q<PageQuery>,
) -> ApiResult<axum::Json<ListResponse<ExternalDomain>>> {
    Ok(axum::Json(s.store.list_domains(q.page()?).await?.into()))
}

async fn get_domain(
    State(s): State<AdminState>,
    _: Admin,
    Path(id): Path<ExternalDomainId>,
) -> ApiResult<axum::Json<ExternalDomain>> {
    Ok(axum::Json(s.store.domain(id).await?))
}

/// Starts a certificate order for the domain as a job (202; follow `/api/v1/jobs/{id}/events`).
async fn order_certificate(
    State(s): State<AdminState>,
    Admin(p): Admin,
    Path(id): Path<ExternalDomainId>,
) -> ApiResult<Response> {
    let job_id = service::order_certificate(&s, &p.actor(), p.uid, id).await?;
    Ok((StatusCode::ACCEPTED, axum::Json(JobAccepted { job_id })).into_response())
}

/// The domain's certificate: names, issuer, serial, validity, renewal and last error.
async fn get_certificate(
    State(s): State<AdminState>,
    _: Admin,
    Path(id): Path<ExternalDomainId>,
) -> ApiResult<axum::Json<siteward_store::acme::CertificateInfo>> {
    Ok(axum::Json(s.store.certificate(id).await?))
}

async fn create_domain(
    State(s): State<AdminState>,
    Admin(p): Admin,
    Json(b): Json<DomainBody>,
) -> ApiResult<Response> {
    Ok(created(service::create(&s.store, &p.actor(), b).await?))
}

async fn update_domain(
    State(s): State<AdminState>,
    Admin(p): Admin,
    Path(id): Path<ExternalDomainId>,
    Json(b): Json<DomainBody>,
) -> ApiResult<axum::Json<ExternalDomain>> {
    Ok(axum::Json(
        service::update(&s.store, &p.actor(), id, b).await?,
    ))
}

async fn delete_domain(
    State(s): State<AdminState>,
    Admin(p): Admin,
    Path(id): Path<ExternalDomainId>,
) -> ApiResult<Response> {
    service::delete(&s.store, &p.actor(), id).await?;
    Ok(no_content())
}

/// Registers the routes above in the route table (router and OpenAPI document).
pub(super) fn routes(a: &mut Api) {
    use Access::*;
    a.op::<(), ListResponse<ExternalDomain>>(
        get(list_domains),
        "/external-domains",
        "List external domains",
        "domains",
        Admin,
        200,
    );
    a.op::<DomainBody, ExternalDomain>(
        post(create_domain),
        "/external-domains",
        "Add an external domain",
        "domains",
        Admin,
        201,
    );
    a.op::<(), ExternalDomain>(
        get(get_domain),
        "/external-domains/{id}",
        "Get an external domain",
        "domains",
        Admin,
        200,
    );
    a.op::<DomainBody, ExternalDomain>(
        patch(update_domain),
        "/external-domains/{id}",
        "Change an external domain",
        "domains",
        Admin,
        200,
    );
    a.op::<(), ()>(
        delete(delete_domain),
        "/external-domains/{id}",
        "Remove an external domain",
        "domains",
        Admin,
        204,
    );
    a.op::<(), JobAccepted>(
        post(order_certificate),
        "/external-domains/{id}/certificate",
        "Order the domain's certificate now (a job)",
        "domains",
        Admin,
        202,
    );
    a.op::<(), siteward_store::acme::CertificateInfo>(
        get(get_certificate),
        "/external-domains/{id}/certificate",
        "The domain's certificate and its renewal state",
        "domains",
        Admin,
        200,
    );
}

//! The admin API under `/api/v1`. Every route is registered through `openapi::Api::op`, which
//! adds it to the router and to the OpenAPI document at once, so the document cannot miss a route.
//!
//! Access: [`Admin`](extract::Admin) routes answer 404 to non-admins; owner-scoped routes filter by
//! the caller in the query itself, so another user's id is indistinguishable from a missing one.
//!
//! # Layout
//!
//! One file per resource, each with its handlers and a `routes` function that registers them in
//! the table below. Handlers only translate: the request types, validation, the write and its
//! audit row belong to the use case in `crate::service` with the same file name. Files:
//! `sites`, `nodes`, `containers`, `services`, `domains` (external domains and certificates),
//! `dns_records`, `users` (also `/register` and `/me`), `groups`, `invites`, `resets` (password
//! resets), `settings`, `api_keys`, `jobs` (also the event stream), `audit`, `edge` (the NGINX
//! configuration and sign-in groups of HTTP services) and `templates`. A path goes with what it
//! is about, not with its first segment: `/sites/{id}/dns-records` is in `dns_records`,
//! `/containers/{id}/services` in `services`, `/nodes/{id}/import` in `nodes`.
//!
//! What several resources share is in `common`; the route table and the OpenAPI document in
//! `openapi`; extractors, the JSON error format and the same-origin rule in `extract` and
//! `error`; job event stream limits in `streams`.

pub mod error;
pub mod extract;
mod openapi;
pub mod streams;

mod api_keys;
mod audit;
mod common;
mod containers;
mod dns_records;
mod domains;
mod edge;
mod groups;
mod invites;
mod jobs;
mod nodes;
mod resets;
mod services;
mod settings;
mod sites;
mod templates;
mod users;

use axum::routing::get;
use axum::Router;

pub use crate::service::users::{CreateUser, UpdateUser};
use crate::AdminState;
pub use common::ListResponse;
use error::ApiError;
pub use openapi::Access;

/// Every route of the API, registered in the router and the OpenAPI document together.
pub fn api() -> openapi::Api {
    let mut a = openapi::Api::new();
    // Keep this order: schemars numbers the instances of a generic type in the order they are first
    // met (`ListResponse` of sites, `ListResponse2` of DNS records, ...), so reordering these calls
    // renames schemas in the document.
    sites::routes(&mut a);
    edge::routes(&mut a);
    dns_records::routes(&mut a);
    nodes::routes(&mut a);
    containers::routes(&mut a);
    templates::routes(&mut a);
    services::routes(&mut a);
    domains::routes(&mut a);
    users::routes(&mut a);
    groups::routes(&mut a);
    invites::routes(&mut a);
    resets::routes(&mut a);
    settings::routes(&mut a);
    api_keys::routes(&mut a);
    jobs::routes(&mut a);
    audit::routes(&mut a);
    a
}

/// The `/api` router: `/api/v1/...`, `/api/openapi.json`, `/api/docs`.
pub fn router() -> Router<AdminState> {
    let api = api();
    let doc = std::sync::Arc::new(api.document());
    let html = std::sync::Arc::new(openapi::reference_page(&doc));
    let v1 = api
        .router
        .fallback(|| async { ApiError::not_found("route") });
    let doc2 = doc.clone();
    Router::new()
        .nest("/api/v1", v1)
        .route(
            "/api/openapi.json",
            get(move || async move { axum::Json((*doc2).clone()) }),
        )
        .route(
            "/api/docs",
            get(move || async move { axum::response::Html((*html).clone()) }),
        )
}

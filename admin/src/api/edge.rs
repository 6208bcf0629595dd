//! The edge NGINX: rendering a site's configuration (`/sites/{id}/nginx.conf`) and the groups
//! allowed through sign-in to an HTTP service (`/containers/{id}/services/{sid}/allowed-groups`).

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use siteward_store::*;

use super::common::ApiResult;
use super::error::ApiError;
use super::extract::{Admin, Json, Path, Q};
use super::openapi::{get, put, Access, Api};
use crate::AdminState;

async fn site_nginx_conf(
    State(s): State<AdminState>,
    _: Admin,
    Path(id): Path<SiteId>,
    Q(mut o): Q<crate::edge::nginx::RenderOptions>,
    headers: axum::http::HeaderMap,
) -> ApiResult<Response> {
    // With no cert_dir given, the files are where this server's ACME side writes them: on this
    // machine, where their presence can be seen.
    let own_files = o.cert_dir.is_none() && s.cert_dir.is_some();
    if o.cert_dir.is_none() {
        o.cert_dir.clone_from(&s.cert_dir);
    }
    let snap = s.store.snapshot();
    let site = snap
        .naming
        .sites
        .get(&id)
        .ok_or_else(|| ApiError::not_found("site"))?;
    // Domains without usable certificate files yet get no TLS server (nginx -t would refuse
    // the whole configuration). Known for certain when the files are ours; otherwise: domains
    // this server obtains certificates for (ACME on, an ACME contact) and has none of yet.
    let issued: std::collections::BTreeSet<_> = if own_files || !s.acme_enabled {
        Default::default()
    } else {
        s.store
            .certificates()
            .await?
            .into_iter()
            .filter(|c| c.serial.is_some())
            .map(|c| c.external_domain_id)
            .collect()
    };
    let pending = snap
        .naming
        .external_domains
        .iter()
        .filter(|d| {
            if own_files {
                let dir = std::path::Path::new(o.cert_dir()).join(d.domain.to_ascii_lowercase());
                !(dir.join("fullchain.pem").is_file() && dir.join("privkey.pem").is_file())
            } else {
                s.acme_enabled && d.acme_email.is_some() && !issued.contains(&d.id)
            }
        })
        .map(|d| d.id)
        .collect();
    let text = crate::edge::nginx::render(site, &snap.naming, &s.public_url, &o, &pending)
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    let tag = crate::edge::nginx::etag(&text);
    let matches = headers
        .get(axum::http::header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == tag || t.trim() == "*"));
    let status = if matches {
        StatusCode::NOT_MODIFIED
    } else {
        StatusCode::OK
    };
    let body = if matches { String::new() } else { text };
    Ok((
        status,
        [
            (axum::http::header::ETAG, tag),
            (
                axum::http::header::CONTENT_TYPE,
                "text/plain; charset=utf-8".to_owned(),
            ),
            (axum::http::header::CACHE_CONTROL, "no-cache".to_owned()),
        ],
        body,
    )
        .into_response())
}

/// Groups allowed through sign-in for an HTTP service.
#[derive(Debug, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AllowedGroups {
    /// Group names; empty admits every active user.
    pub groups: Vec<String>,
}

async fn put_allowed_groups(
    State(s): State<AdminState>,
    Admin(p): Admin,
    Path((id, sid)): Path<(ContainerId, ServiceId)>,
    Json(b): Json<AllowedGroups>,
) -> ApiResult<axum::Json<AllowedGroups>> {
    crate::service::services::set_allowed_groups(&s, &p, id, sid, &b.groups).await?;
    Ok(axum::Json(b))
}

/// Registers the routes above in the route table (router and OpenAPI document).
pub(super) fn routes(a: &mut Api) {
    use Access::*;
    a.op::<(), String>(
        get(site_nginx_conf),
        "/sites/{id}/nginx.conf",
        "Render the site's edge NGINX configuration (ETag; 304 on If-None-Match)",
        "sites",
        Admin,
        200,
    );
    a.op::<AllowedGroups, AllowedGroups>(
        put(put_allowed_groups),
        "/containers/{id}/services/{sid}/allowed-groups",
        "Set the groups allowed through sign-in to an HTTP service",
        "services",
        Admin,
        200,
    );
}

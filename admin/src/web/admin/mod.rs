//! The administrators' pages under `/admin`: an index, users (approve pending accounts, suspend,
//! re-enable) in [`users`], sites and nodes ([`sites`]), external domains with their
//! certificates ([`domains`]), groups, members and invites, with forms that add and revoke
//! them ([`groups`]), the audit log ([`audit`]) and
//! everyone's jobs; plain lists share one template ([`table`]). Every handler starts with [`admin`], which
//! answers 404 to anyone who is not an administrator, as the API does, so the pages do not
//! reveal what exists.

mod audit;
mod domains;
mod groups;
mod settings;
mod sites;
mod table;
mod users;

use askama::Template;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;

use super::jobs::{all_jobs, job_rows, JobsPage};
use super::{not_found, render, signed, Nav, Signed};
use crate::api::extract::ClientAddr;
use crate::AdminState;

/// The `/admin` routes.
pub(super) fn routes() -> Router<AdminState> {
    Router::new()
        .route("/admin", get(index))
        .route("/admin/users", get(users::list))
        .route("/admin/users/{uid}/status", post(users::set_status))
        .route("/admin/jobs", get(jobs))
        .route("/admin/sites", get(sites::sites).post(sites::create_site))
        .route(
            "/admin/sites/{id}",
            get(sites::edit_site).post(sites::update_site),
        )
        .route("/admin/sites/{id}/delete", post(sites::delete_site))
        .route("/admin/nodes", get(sites::nodes).post(sites::create_node))
        .route("/admin/nodes/{id}/import", post(sites::import_node))
        .route("/admin/nodes/{id}/delete", post(sites::delete_node))
        .route("/admin/domains", get(domains::list).post(domains::create))
        .route("/admin/domains/{id}/certificate", post(domains::issue))
        .route("/admin/domains/delete", post(domains::delete))
        .route(
            "/admin/groups",
            get(groups::groups).post(groups::create_group),
        )
        .route("/admin/groups/members", post(groups::add_member))
        .route("/admin/groups/members/remove", post(groups::remove_member))
        .route("/admin/groups/delete", post(groups::delete_group))
        .route(
            "/admin/invites",
            get(groups::invites).post(groups::create_invite),
        )
        .route("/admin/invites/{id}/revoke", post(groups::revoke_invite))
        .route("/admin/audit", get(audit::list))
        .route(
            "/admin/settings",
            get(settings::page).post(settings::set_mail),
        )
        .route("/admin/settings/smtp/remove", post(settings::remove_smtp))
}

/// The signed-in administrator, or the answer for anyone else: the login page for a visitor,
/// 404 for a user who is not an administrator.
pub(super) async fn admin(
    s: &AdminState,
    headers: &HeaderMap,
    peer: Option<std::net::IpAddr>,
    here: &str,
) -> Result<Signed, Response> {
    let who = signed(s, headers, peer, here).await?;
    if !who.principal.is_admin {
        return Err(not_found(Some(&who)));
    }
    Ok(who)
}

/// The administrator posting a form of `here` with this session's token; else the answer
/// [`admin`] gives, or the refusal of a post without the token.
pub(super) async fn admin_posted(
    s: &AdminState,
    headers: &HeaderMap,
    peer: Option<std::net::IpAddr>,
    here: &str,
    csrf: &str,
) -> Result<Signed, Response> {
    let who = admin(s, headers, peer, here).await?;
    if !who.token_ok(csrf) {
        return Err(super::csrf_refused());
    }
    Ok(who)
}

#[derive(Template)]
#[template(path = "admin/index.html")]
struct IndexPage {
    title: &'static str,
    nav: Option<Nav>,
    script: bool,
    pending: usize,
    users: usize,
    containers: usize,
    sites: usize,
}

/// `GET /admin`.
async fn index(
    State(s): State<AdminState>,
    ClientAddr(peer): ClientAddr,
    headers: HeaderMap,
) -> Response {
    let who = match admin(&s, &headers, peer, "/admin").await {
        Ok(w) => w,
        Err(r) => return r,
    };
    let snap = s.store.snapshot();
    let page = IndexPage {
        title: "Administration",
        nav: who.nav("admin"),
        script: false,
        pending: snap
            .identity
            .users
            .values()
            .filter(|u| u.status == siteward_store::UserStatus::Pending)
            .count(),
        users: snap.identity.users.len(),
        containers: snap.naming.containers.len(),
        sites: snap.naming.sites.len(),
    };
    render(StatusCode::OK, &page)
}

/// `GET /admin/jobs`: everyone's jobs.
async fn jobs(
    State(s): State<AdminState>,
    ClientAddr(peer): ClientAddr,
    headers: HeaderMap,
) -> Response {
    let who = match admin(&s, &headers, peer, "/admin/jobs").await {
        Ok(w) => w,
        Err(r) => return r,
    };
    let jobs = all_jobs(&s, None).await.unwrap_or_else(|e| {
        tracing::error!(error = %e, "listing jobs failed");
        Vec::new()
    });
    let page = JobsPage {
        title: "Everyone's jobs",
        nav: who.nav("admin"),
        script: false,
        rows: job_rows(&s.store.snapshot(), jobs),
        show_owner: true,
    };
    render(StatusCode::OK, &page)
}

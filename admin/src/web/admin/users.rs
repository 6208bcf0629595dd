//! `/admin/users`: every account with its status and groups; pending accounts first, with an
//! "Approve" button; suspend and re-enable. The change goes through the API's use case (which
//! validates, audits and signs a suspended account out).

use askama::Template;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::Form;
use serde::Deserialize;
use siteward_store::{Uid, UserStatus};

use super::{admin, admin_posted};
use crate::api::extract::{ClientAddr, Path};
use crate::api::UpdateUser;
use crate::web::{render, Nav, Problems, Signed};
use crate::AdminState;

/// A row of the table.
struct UserRow {
    uid: i32,
    username: String,
    name: String,
    mail: String,
    status: &'static str,
    groups: String,
}

#[derive(Template)]
#[template(path = "admin/users.html")]
struct UsersPage {
    title: &'static str,
    nav: Option<Nav>,
    script: bool,
    csrf: String,
    notice: Option<String>,
    problems: Problems,
    rows: Vec<UserRow>,
}

fn page(
    s: &AdminState,
    who: &Signed,
    notice: Option<String>,
    problems: Problems,
    status: StatusCode,
) -> Response {
    let snap = s.store.snapshot();
    let id = &snap.identity;
    let mut rows: Vec<UserRow> = id
        .users
        .values()
        .map(|u| {
            let mut groups: Vec<&str> = id
                .groups_of
                .get(&u.uid_number)
                .into_iter()
                .flat_map(|l| l.iter())
                .filter_map(|g| id.groups.get(g).map(|g| g.cn.as_str()))
                .collect();
            groups.sort_unstable();
            UserRow {
                uid: u.uid_number.0,
                username: u.username.clone(),
                name: u.cn.clone(),
                mail: u.mail.clone().unwrap_or_default(),
                status: u.status.as_str(),
                groups: groups.join(", "),
            }
        })
        .collect();
    // Pending first, then by name.
    rows.sort_by(|a, b| {
        (a.status != "pending")
            .cmp(&(b.status != "pending"))
            .then(a.username.cmp(&b.username))
    });
    let page = UsersPage {
        title: "Users",
        nav: who.nav("admin"),
        script: false,
        csrf: who.csrf.clone(),
        notice,
        problems,
        rows,
    };
    render(status, &page)
}

/// `GET /admin/users`.
pub(super) async fn list(
    State(s): State<AdminState>,
    ClientAddr(peer): ClientAddr,
    headers: HeaderMap,
) -> Response {
    match admin(&s, &headers, peer, "/admin/users").await {
        Ok(who) => page(&s, &who, None, Problems::default(), StatusCode::OK),
        Err(r) => r,
    }
}

/// The status buttons' form.
#[derive(Debug, Deserialize, Default)]
#[serde(default)]
pub(super) struct StatusForm {
    status: String,
    csrf: String,
}

/// `POST /admin/users/{uid}/status`: approve (`active`), suspend or re-enable.
pub(super) async fn set_status(
    State(s): State<AdminState>,
    ClientAddr(peer): ClientAddr,
    headers: HeaderMap,
    Path(uid): Path<i32>,
    Form(f): Form<StatusForm>,
) -> Response {
    let who = match admin_posted(&s, &headers, peer, "/admin/users", &f.csrf).await {
        Ok(w) => w,
        Err(r) => return r,
    };
    let status = match f.status.as_str() {
        "active" => Some(UserStatus::Active),
        "suspended" => Some(UserStatus::Suspended),
        _ => None,
    };
    let Some(status) = status else {
        let p = Problems::general("Choose active or suspended.");
        return page(&s, &who, None, p, StatusCode::UNPROCESSABLE_ENTITY);
    };
    let patch = UpdateUser {
        cn: None,
        sn: None,
        given_name: None,
        mail: None,
        ssh_public_keys: None,
        status: Some(status),
    };
    match crate::service::users::update(&s.store, &who.principal.actor(), Uid(uid), patch).await {
        Ok(user) => {
            let what = match status {
                UserStatus::Active => "is active",
                UserStatus::Suspended => "is suspended and signed out everywhere",
                UserStatus::Pending => "waits for approval again",
            };
            let notice = format!("{} {what}.", user.username);
            page(&s, &who, Some(notice), Problems::default(), StatusCode::OK)
        }
        Err(e) => {
            let status = e.status;
            page(&s, &who, None, Problems::from_api(e, &[]), status)
        }
    }
}

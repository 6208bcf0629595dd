//! The web console: server-rendered pages for signed-in users and administrators, on the same
//! session cookie, CSRF token and same-origin rule as the sign-in pages ([`crate::auth`]).
//!
//! Pages by area: the user's containers, their services and the new-container form
//! ([`containers`], [`new_container`]), jobs with their live log ([`jobs`]), and the administrators' pages
//! ([`admin`]: `/admin/...`, 404 to everyone else). Templates live in `admin/templates/` and are
//! compiled with askama, so a page that names a missing field does not build; `layout.html` is
//! the layout of every page, the sign-in pages' included ([`crate::auth::html::page`]).
//!
//! Every form works without JavaScript. `/console.js` (ours, served from the binary) only
//! enhances: the live job log and hostname checks as you type.
//!
//! Here: the route table, the signed-in context of a request ([`Signed`]), rendering with the
//! console's headers, field-error lists. What does not live here: validation and writes (the
//! handlers call one [`crate::service`] function each and show its error next to the field), sessions
//! and cookies ([`crate::auth`]).

mod admin;
pub(crate) mod containers;
mod jobs;
mod new_container;

use std::collections::BTreeMap;
use std::sync::Arc;

use askama::Template;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use siteward_store::User;

use crate::api::error::ApiError;
use crate::api::extract::Principal;
use crate::auth::{client_ip, respond, same_token, see_other, signed_in};
use crate::AdminState;

/// The console's routes (outside `/api`), behind the sign-in pages' same-origin rule for posts.
pub fn routes(state: &AdminState) -> Router<AdminState> {
    Router::new()
        .route("/", get(containers::list))
        .route(
            "/containers/new",
            get(new_container::new_form).post(new_container::create),
        )
        .route(
            "/containers/check-hostname",
            get(new_container::check_hostname),
        )
        .route("/containers/{id}", get(containers::show))
        .route("/containers/{id}/actions", post(containers::action))
        .route("/containers/{id}/delete", post(containers::delete))
        .route("/containers/{id}/services", post(containers::add_service))
        .route(
            "/containers/{id}/services/{service_id}/delete",
            post(containers::remove_service),
        )
        .route("/jobs", get(jobs::list))
        .route("/jobs/{id}", get(jobs::show))
        .route("/console.js", get(script))
        .merge(admin::routes())
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            crate::auth::same_origin_posts,
        ))
        .route_layer(axum::middleware::from_fn(server_timing))
}

/// `Server-Timing: app;dur=<ms>`: how long the page took to build (the pages' bodies are
/// complete strings, so this includes rendering); shown by browsers' developer tools and read
/// by `bench/console`.
async fn server_timing(req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let start = std::time::Instant::now();
    let mut res = next.run(req).await;
    let ms = start.elapsed().as_secs_f64() * 1000.0;
    if let Ok(v) = HeaderValue::from_str(&format!("app;dur={ms:.2}")) {
        res.headers_mut().insert("server-timing", v);
    }
    res
}

/// The console's script, compiled into the binary.
const SCRIPT: &str = include_str!("../../assets/console.js");

async fn script() -> Response {
    let mut res = SCRIPT.into_response();
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/javascript; charset=utf-8"),
    );
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=300"),
    );
    h.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    res
}

/// What the layout shows of the signed-in user.
pub(crate) struct Nav {
    /// Login name.
    pub username: String,
    /// Shows the administration link.
    pub is_admin: bool,
    /// Which top-level area the page belongs to (`containers`, `new`, `jobs`, `admin`).
    pub here: &'static str,
}

/// A signed-in, active user of a console request.
pub(crate) struct Signed {
    /// The session's CSRF token, carried by every form.
    pub csrf: String,
    /// The account.
    pub user: Arc<User>,
    /// The same caller as the API sees it (owner scoping, audit actor).
    pub principal: Principal,
}

impl Signed {
    /// The layout's view of the user, on area `here`.
    pub fn nav(&self, here: &'static str) -> Option<Nav> {
        Some(Nav {
            username: self.user.username.clone(),
            is_admin: self.principal.is_admin,
            here,
        })
    }

    /// Whether a form's token is this session's.
    pub fn token_ok(&self, sent: &str) -> bool {
        same_token(&self.csrf, sent)
    }
}

/// The signed-in user, or the answer for a visitor who is not: to the login page and back to
/// `here` afterwards.
pub(crate) async fn signed(
    s: &AdminState,
    headers: &HeaderMap,
    peer: Option<std::net::IpAddr>,
    here: &str,
) -> Result<Signed, Response> {
    let Some((_, info, user)) = signed_in(s, headers).await else {
        let back: String =
            percent_encoding::utf8_percent_encode(here, percent_encoding::NON_ALPHANUMERIC)
                .collect();
        return Err(see_other(&format!("/login?redirect={back}"), vec![]));
    };
    let is_admin = s.store.snapshot().identity.is_admin(user.uid_number);
    let principal = Principal {
        uid: user.uid_number,
        username: user.username.clone(),
        is_admin,
        remote_addr: client_ip(headers, peer),
        via: siteward_store::Via::Session,
    };
    Ok(Signed {
        csrf: info.csrf_token,
        user,
        principal,
    })
}

/// The signed-in user of a form post that carries this session's token; else the login page or
/// the refusal.
pub(crate) async fn posted(
    s: &AdminState,
    headers: &HeaderMap,
    peer: Option<std::net::IpAddr>,
    here: &str,
    csrf: &str,
) -> Result<Signed, Response> {
    let who = signed(s, headers, peer, here).await?;
    if !who.token_ok(csrf) {
        return Err(csrf_refused());
    }
    Ok(who)
}

/// Renders a page with the console's headers: the sign-in pages' (no caching, no framing) and a
/// policy that lets the page load our own script and open our own event streams.
pub(crate) fn render<T: Template>(status: StatusCode, page: &T) -> Response {
    match page.render() {
        Ok(html) => {
            let mut res = respond(status, vec![], html);
            res.headers_mut().insert(
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static(
                    "default-src 'none'; style-src 'unsafe-inline'; script-src 'self'; connect-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
                ),
            );
            res
        }
        Err(e) => {
            tracing::error!(error = %e, "rendering a page failed");
            respond(
                StatusCode::INTERNAL_SERVER_ERROR,
                vec![],
                crate::auth::html::page(
                    "Server error",
                    "<p role=\"alert\">This page could not be shown. Try again later.</p>",
                ),
            )
        }
    }
}

/// The 404 page: for what does not exist and for what is not the caller's, alike.
#[derive(Template)]
#[template(path = "not_found.html")]
pub(crate) struct NotFound {
    title: &'static str,
    nav: Option<Nav>,
    script: bool,
}

/// 404 with the layout (and the navigation, when signed in).
pub(crate) fn not_found(who: Option<&Signed>) -> Response {
    render(
        StatusCode::NOT_FOUND,
        &NotFound {
            title: "Not found",
            nav: who.and_then(|w| w.nav("")),
            script: false,
        },
    )
}

/// The answer to a form post without this session's token.
pub(crate) fn csrf_refused() -> Response {
    crate::auth::csrf_refused()
}

/// Form errors: those naming a field are shown next to it, the others in a summary.
#[derive(Debug, Default)]
pub(crate) struct Problems {
    /// By field name.
    pub fields: BTreeMap<String, String>,
    /// Not about one field.
    pub general: Vec<String>,
}

impl Problems {
    /// The problem of `field`, if any.
    pub fn of(&self, field: &str) -> Option<&str> {
        self.fields.get(field).map(String::as_str)
    }

    /// The API's error, placed by its field when it names one the form has.
    pub fn from_api(e: ApiError, form_fields: &[&str]) -> Self {
        let mut p = Self::default();
        match e.field {
            Some(f) if form_fields.contains(&f.as_str()) => {
                p.fields.insert(f, e.message);
            }
            _ => p.general.push(e.message),
        }
        p
    }

    /// One problem not about a field.
    pub fn general(text: impl Into<String>) -> Self {
        Self {
            fields: BTreeMap::new(),
            general: vec![text.into()],
        }
    }
}

/// A short human form of a time.
pub(crate) fn when(t: &chrono::DateTime<chrono::Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%S UTC").to_string()
}

//! The sign-in pages, by area: signing in and out ([`login`]), registration ([`register`]),
//! password reset ([`reset`]) and the signed-in user's own account ([`account`]: profile,
//! password, API keys). GET renders a form; POST checks the CSRF token first, then does the work
//! through the same store functions as the JSON API, and answers with a page or a 303.
//!
//! Here: what the areas share (the double-submit token of anonymous forms, the refusal page,
//! `Set-Cookie` headers, form-field and audit-actor helpers). What does not live here: the route
//! table, sessions, cookies and origins ([`super`]), `/auth/verify` and the HTML building blocks.

pub(super) mod account;
pub(super) mod login;
pub(super) mod register;
pub(super) mod reset;

use axum::http::{header, HeaderMap, StatusCode};
use axum::response::Response;
use siteward_store::resources::Actor;

use super::html::page;
use super::{client_ip, respond, same_token, see_other, CSRF_COOKIE};
use crate::api::extract::cookie_in;

// ------------------------------------------------------------------ CSRF for anonymous forms

/// The double-submit token of an anonymous form: the cookie's, or a fresh one to set.
fn anon_token(headers: &HeaderMap) -> (String, Option<String>) {
    match cookie_in(headers, CSRF_COOKIE).filter(|t| t.len() == 64) {
        Some(t) => (t, None),
        None => {
            let (t, _) = siteward_store::resources::new_token();
            let mut c = format!("{CSRF_COOKIE}={t}; Path=/; HttpOnly; SameSite=Strict");
            if super::is_tls(headers) {
                c.push_str("; Secure");
            }
            (t.clone(), Some(c))
        }
    }
}

/// Whether an anonymous form's token matches its cookie.
fn anon_ok(headers: &HeaderMap, sent: &str) -> bool {
    cookie_in(headers, CSRF_COOKIE).is_some_and(|c| same_token(&c, sent))
}

/// The answer to a form post without a valid token (or from another origin).
pub(crate) fn csrf_refused() -> Response {
    respond(
        StatusCode::FORBIDDEN,
        vec![],
        page(
            "Form expired",
            "<p role=\"alert\">This form is missing its security token or the token has expired. Go back, reload the page and try again.</p>",
        ),
    )
}

/// The `Set-Cookie` header of a fresh token, if any.
fn cookies(set: Option<String>) -> Vec<(header::HeaderName, String)> {
    set.into_iter().map(|c| (header::SET_COOKIE, c)).collect()
}

/// An optional text field: trimmed, `None` when empty.
fn opt(v: &str) -> Option<String> {
    let v = v.trim();
    (!v.is_empty()).then(|| v.to_owned())
}

// ------------------------------------------------------------------ signed-in pages

/// Where a signed-out visitor of an account page goes: the login, then back to `/account`.
fn to_login() -> Response {
    see_other("/login?redirect=%2Faccount", vec![])
}

/// The signed-in user as the use cases in `crate::service` take them.
fn principal_of(
    s: &crate::AdminState,
    user: &siteward_store::User,
    headers: &HeaderMap,
) -> crate::api::extract::Principal {
    crate::api::extract::Principal {
        uid: user.uid_number,
        username: user.username.clone(),
        is_admin: s.store.snapshot().identity.is_admin(user.uid_number),
        remote_addr: client_ip(headers, None),
        via: siteward_store::Via::Session,
    }
}

/// The signed-in user as the audit log names them.
fn actor_of(user: &siteward_store::User, headers: &HeaderMap) -> Actor {
    Actor::user(
        user.uid_number,
        &user.username,
        client_ip(headers, None),
        siteward_store::Via::Session,
    )
}

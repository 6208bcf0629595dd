//! Signing in (`/login`) and out (`/logout`, here or on every device).

use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::Response;
use axum::Form;
use serde::Deserialize;
use siteward_store::UserStatus;

use super::{anon_ok, anon_token, cookies, csrf_refused};
use crate::api::extract::ClientAddr;
use crate::auth::html::{errors, esc, hidden, input, note, page};
use crate::auth::{
    client_ip, domains, redirect, respond, same_token, see_other, session_cookie, signed_in,
};
use crate::AdminState;

// ------------------------------------------------------------------ login

/// `?redirect=`.
#[derive(Debug, Deserialize, Default)]
pub(in crate::auth) struct RedirectQuery {
    #[serde(default)]
    redirect: Option<String>,
}

/// The login form's fields.
#[derive(Debug, Deserialize, Default)]
#[serde(default)]
pub(in crate::auth) struct LoginForm {
    username: String,
    password: String,
    redirect: String,
    csrf: String,
}

fn login_page(
    token: &str,
    username: &str,
    redirect: &str,
    problems: &[String],
    notice: Option<&str>,
) -> String {
    let body = format!(
        "{}{}<form method=\"post\" action=\"/login\">{}{}{}{}<button type=\"submit\">Sign in</button></form>\
<p><a href=\"/register\">Create an account</a> · <a href=\"/reset-password\">Reset your password</a></p>",
        notice.map(note).unwrap_or_default(),
        errors(problems),
        hidden("csrf", token),
        hidden("redirect", redirect),
        input("username", "Username", "text", username, "autocomplete=\"username\" required autofocus"),
        input("password", "Password", "password", "", "autocomplete=\"current-password\" required"),
    );
    page("Sign in", &body)
}

pub(in crate::auth) async fn login_form(
    State(s): State<AdminState>,
    headers: HeaderMap,
    Query(q): Query<RedirectQuery>,
) -> Response {
    let snap = s.store.snapshot();
    let target = redirect::or_root(q.redirect.as_deref(), &domains(&snap));
    if signed_in(&s, &headers).await.is_some() {
        return see_other(&target, vec![]);
    }
    let (token, set) = anon_token(&headers);
    respond(
        StatusCode::OK,
        cookies(set),
        login_page(&token, "", &target, &[], None),
    )
}

pub(in crate::auth) async fn login(
    State(s): State<AdminState>,
    ClientAddr(peer): ClientAddr,
    headers: HeaderMap,
    Form(f): Form<LoginForm>,
) -> Response {
    if !anon_ok(&headers, &f.csrf) {
        return csrf_refused();
    }
    let snap = s.store.snapshot();
    let target = redirect::or_root(Some(&f.redirect), &domains(&snap));
    let addr = client_ip(&headers, peer);
    let account = f.username.trim().to_ascii_lowercase();
    let again = |status: StatusCode, problem: &str| {
        respond(
            status,
            vec![],
            login_page(&f.csrf, &f.username, &target, &[problem.to_owned()], None),
        )
    };
    let addr_blocked = addr.is_some_and(|a| s.login_throttle.address.blocked(&a));
    if addr_blocked || s.login_throttle.account.blocked(&account) {
        return again(
            StatusCode::TOO_MANY_REQUESTS,
            "Too many failed sign-ins. Wait a few minutes and try again.",
        );
    }
    let user = snap.identity.user(&account).cloned();
    let hash = user.as_ref().and_then(|u| u.password_hash.clone());
    // Runs argon2 even for unknown users, so timing does not tell which names exist.
    let ok = siteward_store::password::verify_password(f.password.clone(), hash)
        .await
        .unwrap_or(false);
    let user = match user {
        Some(u) if ok => u,
        _ => {
            if let Some(a) = addr {
                s.login_throttle.address.fail(a);
            }
            s.login_throttle.account.fail(account);
            return again(StatusCode::UNAUTHORIZED, "Wrong username or password.");
        }
    };
    if user.status != UserStatus::Active {
        return again(
            StatusCode::FORBIDDEN,
            "This account is not active. An administrator has to approve or re-enable it.",
        );
    }
    s.login_throttle.account.clear(&account);
    let ua = headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok());
    let ttl = s.session_ttl;
    let (id, _csrf) = match s
        .store
        .create_session(user.uid_number, ttl, addr, ua, chrono::Utc::now())
        .await
    {
        Ok(v) => v,
        Err(e) => {
            tracing::error!(error = %e, "creating a session failed");
            return again(
                StatusCode::INTERNAL_SERVER_ERROR,
                "Signing in failed on the server. Try again later.",
            );
        }
    };
    let cookie = session_cookie(&headers, &snap, Some(&id), ttl.num_seconds());
    see_other(&target, vec![cookie])
}

// ------------------------------------------------------------------ logout

/// A form that carries only its token.
#[derive(Debug, Deserialize, Default)]
#[serde(default)]
pub(in crate::auth) struct CsrfForm {
    csrf: String,
    everywhere: String,
}

pub(in crate::auth) async fn logout_form(
    State(s): State<AdminState>,
    headers: HeaderMap,
) -> Response {
    let Some((_, info, user)) = signed_in(&s, &headers).await else {
        return see_other("/login", vec![]);
    };
    let body = format!(
        "<p>Signed in as <strong>{}</strong>.</p><form method=\"post\" action=\"/logout\">{}\
<label><input type=\"checkbox\" name=\"everywhere\" value=\"1\" style=\"width:auto\"> Also sign out on every other device</label>\
<button type=\"submit\">Sign out</button></form>",
        esc(&user.username),
        hidden("csrf", &info.csrf_token),
    );
    respond(StatusCode::OK, vec![], page("Sign out", &body))
}

pub(in crate::auth) async fn logout(
    State(s): State<AdminState>,
    headers: HeaderMap,
    Form(f): Form<CsrfForm>,
) -> Response {
    let Some((id, info, user)) = signed_in(&s, &headers).await else {
        return see_other("/login", vec![]);
    };
    if !same_token(&info.csrf_token, &f.csrf) {
        return csrf_refused();
    }
    let done = if f.everywhere.is_empty() {
        s.store.delete_session(&id).await.map(|_| ())
    } else {
        s.store
            .delete_sessions_of(user.uid_number)
            .await
            .map(|_| ())
    };
    if let Err(e) = done {
        tracing::error!(error = %e, "ending a session failed");
        return respond(
            StatusCode::INTERNAL_SERVER_ERROR,
            vec![],
            page(
                "Sign out",
                &errors(&["Signing out failed on the server.".into()]),
            ),
        );
    }
    let snap = s.store.snapshot();
    let cookie = session_cookie(&headers, &snap, None, 0);
    see_other("/login?signed_out=1", vec![cookie])
}

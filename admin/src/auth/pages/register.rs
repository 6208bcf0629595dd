//! Registration (`/register`), with an invitation or for an administrator to approve.

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::Form;
use serde::Deserialize;
use siteward_store::UserStatus;

use super::{anon_ok, anon_token, cookies, csrf_refused, opt};
use crate::api::extract::ClientAddr;
use crate::api::CreateUser;
use crate::auth::html::{errors, hidden, input, note, page};
use crate::auth::{client_ip, respond};
use crate::AdminState;

/// `?invite=`.
#[derive(Debug, Deserialize, Default)]
#[serde(default)]
pub(in crate::auth) struct InviteQuery {
    invite: String,
}

/// The registration form.
#[derive(Debug, Deserialize, Default)]
#[serde(default)]
pub(in crate::auth) struct RegisterForm {
    username: String,
    password: String,
    given_name: String,
    sn: String,
    mail: String,
    invite: String,
    csrf: String,
}

fn register_page(token: &str, f: &RegisterForm, problems: &[String]) -> String {
    let mail = if f.invite.is_empty() {
        input("mail", "E-mail", "email", &f.mail, "autocomplete=\"email\"")
    } else {
        "<p>Your e-mail address comes from your invitation.</p>".to_owned()
    };
    let intro = if f.invite.is_empty() {
        "<p>Without an invitation, an administrator approves your account before you can sign in.</p>"
    } else {
        ""
    };
    let body = format!(
        "{intro}{}<form method=\"post\" action=\"/register\">{}{}{}{}{}{}{}<button type=\"submit\">Create account</button></form>\
<p><a href=\"/login\">Sign in instead</a></p>",
        errors(problems),
        hidden("csrf", token),
        hidden("invite", &f.invite),
        input("username", "Username (a-z, 0-9, _ . -)", "text", &f.username, "autocomplete=\"username\" required"),
        input("password", "Password (at least 8 characters)", "password", "", "autocomplete=\"new-password\" required minlength=\"8\""),
        input("given_name", "First name", "text", &f.given_name, "autocomplete=\"given-name\""),
        input("sn", "Last name", "text", &f.sn, "autocomplete=\"family-name\""),
        mail,
    );
    page("Create an account", &body)
}

pub(in crate::auth) async fn register_form(
    headers: HeaderMap,
    Query(q): Query<InviteQuery>,
) -> Response {
    let (token, set) = anon_token(&headers);
    let f = RegisterForm {
        invite: q.invite,
        ..Default::default()
    };
    respond(StatusCode::OK, cookies(set), register_page(&token, &f, &[]))
}

pub(in crate::auth) async fn register(
    State(s): State<AdminState>,
    ClientAddr(peer): ClientAddr,
    headers: HeaderMap,
    Form(f): Form<RegisterForm>,
) -> Response {
    if !anon_ok(&headers, &f.csrf) {
        return csrf_refused();
    }
    let addr = client_ip(&headers, peer);
    let fail = |status: StatusCode, problem: String| {
        respond(status, vec![], register_page(&f.csrf, &f, &[problem]))
    };
    let body = CreateUser {
        username: f.username.trim().to_owned(),
        password: f.password.clone(),
        given_name: opt(&f.given_name),
        sn: opt(&f.sn),
        cn: None,
        mail: opt(&f.mail),
        ssh_public_keys: Vec::new(),
        invite: opt(&f.invite),
        admin: false,
    };
    match crate::service::accounts::register(&s, body, addr).await {
        Ok(user) => {
            let text = if user.status == UserStatus::Active {
                "Your account is ready. You can sign in now."
            } else {
                "Your account was created. An administrator has to approve it before you can sign in."
            };
            respond(
                StatusCode::CREATED,
                vec![],
                page(
                    "Account created",
                    &format!("{}<p><a href=\"/login\">Sign in</a></p>", note(text)),
                ),
            )
        }
        Err(e) => fail(e.status, e.message),
    }
}

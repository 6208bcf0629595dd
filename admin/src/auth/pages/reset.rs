//! Password reset (`/reset-password`): with a link or code from an administrator, or a link
//! mailed on request when outgoing mail is configured.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::Form;
use serde::Deserialize;
use siteward_store::UserStatus;
use tracing::Instrument;

use super::{anon_ok, anon_token, cookies, csrf_refused};
use crate::api::extract::{ClientAddr, Path};
use crate::auth::html::{errors, esc, hidden, input, note, page};
use crate::auth::{client_ip, respond};
use crate::AdminState;

/// The reset form.
#[derive(Debug, Deserialize, Default)]
#[serde(default)]
pub(in crate::auth) struct ResetForm {
    token: String,
    password: String,
    csrf: String,
}

fn reset_page(csrf: &str, token: Option<&str>, mail: bool, problems: &[String]) -> String {
    let set_password = |action: &str, token_field: &str| {
        format!(
            "<form method=\"post\" action=\"{action}\">{}{token_field}{}<button type=\"submit\">Set password</button></form>",
            hidden("csrf", csrf),
            input("password", "New password (at least 8 characters)", "password", "", "autocomplete=\"new-password\" required minlength=\"8\""),
        )
    };
    let body = match token {
        Some(t) => format!(
            "{}{}",
            errors(problems),
            set_password(&format!("/reset-password/{}", esc(t)), "")
        ),
        None => {
            let request = if mail {
                format!(
                    "<h2>Get a reset link by e-mail</h2>\
<form method=\"post\" action=\"/reset-password/request\">{}{}<button type=\"submit\">Send me a link</button></form>\
<h2>Have a reset code?</h2>",
                    hidden("csrf", csrf),
                    input("login", "User name or e-mail address", "text", "", "required autocomplete=\"username\""),
                )
            } else {
                "<p>Ask your administrator for a password-reset link or code.</p>".to_owned()
            };
            let code = input(
                "token",
                "Reset code",
                "text",
                "",
                "required autocomplete=\"off\"",
            );
            format!(
                "{}{request}{}",
                errors(problems),
                set_password("/reset-password", &code)
            )
        }
    };
    page("Reset your password", &body)
}

/// Whether outgoing mail is configured (so users can ask for their own reset link).
async fn mail_configured(s: &AdminState) -> bool {
    matches!(s.store.setting("smtp_url").await, Ok(Some(_)))
}

pub(in crate::auth) async fn reset_form(
    State(s): State<AdminState>,
    headers: HeaderMap,
) -> Response {
    let (token, set) = anon_token(&headers);
    let mail = mail_configured(&s).await;
    respond(
        StatusCode::OK,
        cookies(set),
        reset_page(&token, None, mail, &[]),
    )
}

/// The "e-mail me a link" form.
#[derive(Debug, Deserialize, Default)]
#[serde(default)]
pub(in crate::auth) struct ResetRequestForm {
    login: String,
    csrf: String,
}

/// `POST /reset-password/request`: mails a reset link to an active account's address. The answer
/// is the same whether or not the account exists, and the mail goes out after the answer, so
/// neither the text nor the timing tells who has an account.
pub(in crate::auth) async fn reset_request(
    State(s): State<AdminState>,
    ClientAddr(peer): ClientAddr,
    headers: HeaderMap,
    Form(f): Form<ResetRequestForm>,
) -> Response {
    if !anon_ok(&headers, &f.csrf) {
        return csrf_refused();
    }
    let addr = client_ip(&headers, peer);
    let mail = mail_configured(&s).await;
    if !mail {
        return respond(
            StatusCode::CONFLICT,
            vec![],
            reset_page(
                &f.csrf,
                None,
                false,
                &["E-mail is not set up here; ask your administrator for a reset link.".into()],
            ),
        );
    }
    if addr.is_some_and(|a| s.login_throttle.address.blocked(&a)) {
        return respond(
            StatusCode::TOO_MANY_REQUESTS,
            vec![],
            reset_page(
                &f.csrf,
                None,
                true,
                &["Too many attempts. Wait a few minutes.".into()],
            ),
        );
    }
    if let Some(a) = addr {
        // Every request counts, so one address cannot walk the user list or flood mailboxes.
        s.login_throttle.address.fail(a);
    }
    let login = f.login.trim().to_owned();
    let snap = s.store.snapshot();
    let user = snap
        .identity
        .user(&login)
        .or_else(|| {
            snap.identity.users.values().find(|u| {
                u.mail
                    .as_deref()
                    .is_some_and(|m| !login.is_empty() && m.eq_ignore_ascii_case(&login))
            })
        })
        .filter(|u| u.status == UserStatus::Active)
        .cloned();
    if let Some(user) = user {
        let s = s.clone();
        tokio::spawn(
            async move {
                if let Err(e) = crate::service::resets::mail_own(&s, &user, addr).await {
                    tracing::warn!(error = %e, "self-service reset mail not sent");
                }
            }
            .instrument(tracing::info_span!("reset_mail")),
        );
    }
    respond(
        StatusCode::OK,
        vec![],
        page(
            "Check your e-mail",
            &note("If an account with that name or address exists and has an e-mail address, a reset link is on its way. It works once, for one hour."),
        ),
    )
}

pub(in crate::auth) async fn reset_form_token(
    headers: HeaderMap,
    Path(t): Path<String>,
) -> Response {
    let (token, set) = anon_token(&headers);
    respond(
        StatusCode::OK,
        cookies(set),
        reset_page(&token, Some(&t), false, &[]),
    )
}

pub(in crate::auth) async fn reset_with_field(
    State(s): State<AdminState>,
    ClientAddr(peer): ClientAddr,
    headers: HeaderMap,
    Form(f): Form<ResetForm>,
) -> Response {
    let token = f.token.trim().to_owned();
    reset(s, client_ip(&headers, peer), &headers, token, f, false).await
}

pub(in crate::auth) async fn reset_with_path(
    State(s): State<AdminState>,
    ClientAddr(peer): ClientAddr,
    headers: HeaderMap,
    Path(token): Path<String>,
    Form(f): Form<ResetForm>,
) -> Response {
    reset(s, client_ip(&headers, peer), &headers, token, f, true).await
}

async fn reset(
    s: AdminState,
    addr: Option<std::net::IpAddr>,
    headers: &HeaderMap,
    token: String,
    f: ResetForm,
    in_path: bool,
) -> Response {
    if !anon_ok(headers, &f.csrf) {
        return csrf_refused();
    }
    let shown = in_path.then_some(token.as_str());
    let fail = |status: StatusCode, problem: &str| {
        respond(
            status,
            vec![],
            reset_page(&f.csrf, shown, false, &[problem.to_owned()]),
        )
    };
    match crate::service::resets::confirm(&s, &token, f.password.clone(), addr).await {
        Ok(_) => respond(
            StatusCode::OK,
            vec![],
            page(
                "Password changed",
                &format!(
                    "{}<p><a href=\"/login\">Sign in</a></p>",
                    note("Your password was changed and every session of your account ended.")
                ),
            ),
        ),
        Err(e) => {
            let msg = if e.status == StatusCode::TOO_MANY_REQUESTS {
                "Too many attempts. Wait a few minutes."
            } else if e.field.as_deref() == Some("password") {
                "The password must be 8 to 1024 characters."
            } else if e.status == StatusCode::UNPROCESSABLE_ENTITY {
                "This reset link or code is invalid, used or expired, or the password is not acceptable."
            } else {
                "The password could not be changed."
            };
            fail(e.status, msg)
        }
    }
}

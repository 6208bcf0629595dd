//! The sign-in pages. GET renders a form; POST checks the CSRF token first, then does the work
//! through the same store functions as the JSON API, and answers with a page or a 303.

use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::Response;
use axum::Form;
use serde::Deserialize;
use serde_json::json;
use siteward_store::resources::Actor;
use siteward_store::{ApiKeyId, UserStatus};
use tracing::Instrument;

use super::html::{errors, esc, hidden, input, note, page};
use super::{
    client_ip, domains, redirect, respond, same_token, see_other, session_cookie, signed_in,
    CSRF_COOKIE,
};
use crate::api::extract::{cookie_in, ClientAddr, Path};
use crate::api::{audit, CreateUser, UpdateUser};
use crate::AdminState;

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

fn anon_ok(headers: &HeaderMap, sent: &str) -> bool {
    cookie_in(headers, CSRF_COOKIE).is_some_and(|c| same_token(&c, sent))
}

pub(super) fn csrf_refused() -> Response {
    respond(
        StatusCode::FORBIDDEN,
        vec![],
        page(
            "Form expired",
            "<p role=\"alert\">This form is missing its security token or the token has expired. Go back, reload the page and try again.</p>",
        ),
    )
}

fn cookies(set: Option<String>) -> Vec<(header::HeaderName, String)> {
    set.into_iter().map(|c| (header::SET_COOKIE, c)).collect()
}

// ------------------------------------------------------------------ login

/// `?redirect=`.
#[derive(Debug, Deserialize, Default)]
pub(super) struct RedirectQuery {
    #[serde(default)]
    redirect: Option<String>,
}

/// The login form's fields.
#[derive(Debug, Deserialize, Default)]
#[serde(default)]
pub(super) struct LoginForm {
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

pub(super) async fn login_form(
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

pub(super) async fn login(
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
    let actor = Actor {
        uid: Some(user.uid_number),
        name: Some(user.username.clone()),
        remote_addr: addr,
    };
    audit(&s, &actor, "login", "session", user.uid_number, json!({})).await;
    let cookie = session_cookie(&headers, &snap, Some(&id), ttl.num_seconds());
    see_other(&target, vec![cookie])
}

// ------------------------------------------------------------------ logout

/// A form that carries only its token.
#[derive(Debug, Deserialize, Default)]
#[serde(default)]
pub(super) struct CsrfForm {
    csrf: String,
    everywhere: String,
}

pub(super) async fn logout_form(State(s): State<AdminState>, headers: HeaderMap) -> Response {
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

pub(super) async fn logout(
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

// ------------------------------------------------------------------ registration

/// `?invite=`.
#[derive(Debug, Deserialize, Default)]
#[serde(default)]
pub(super) struct InviteQuery {
    invite: String,
}

/// The registration form.
#[derive(Debug, Deserialize, Default)]
#[serde(default)]
pub(super) struct RegisterForm {
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

pub(super) async fn register_form(headers: HeaderMap, Query(q): Query<InviteQuery>) -> Response {
    let (token, set) = anon_token(&headers);
    let f = RegisterForm {
        invite: q.invite,
        ..Default::default()
    };
    respond(StatusCode::OK, cookies(set), register_page(&token, &f, &[]))
}

fn opt(v: &str) -> Option<String> {
    let v = v.trim();
    (!v.is_empty()).then(|| v.to_owned())
}

pub(super) async fn register(
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
    match crate::accounts::register(&s, body, addr).await {
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

// ------------------------------------------------------------------ password reset

/// The reset form.
#[derive(Debug, Deserialize, Default)]
#[serde(default)]
pub(super) struct ResetForm {
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

pub(super) async fn reset_form(State(s): State<AdminState>, headers: HeaderMap) -> Response {
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
pub(super) struct ResetRequestForm {
    login: String,
    csrf: String,
}

/// `POST /reset-password/request`: mails a reset link to an active account's address. The answer
/// is the same whether or not the account exists, and the mail goes out after the answer, so
/// neither the text nor the timing tells who has an account.
pub(super) async fn reset_request(
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
                if let Err(e) = mail_reset(&s, &user, addr).await {
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

async fn mail_reset(
    s: &AdminState,
    user: &siteward_store::User,
    addr: Option<std::net::IpAddr>,
) -> Result<(), String> {
    let Some(to) = user.mail.as_deref() else {
        return Ok(());
    };
    let account = user.username.to_string();
    if s.login_throttle.reset_mail.blocked(&account) {
        return Ok(());
    }
    s.login_throttle.reset_mail.fail(account);
    let now = chrono::Utc::now();
    let (info, token) = s
        .store
        .create_password_reset(user.uid_number, now)
        .await
        .map_err(|e| e.to_string())?;
    let actor = Actor {
        uid: None,
        name: None,
        remote_addr: addr,
    };
    audit(
        s,
        &actor,
        "create",
        "password_reset",
        info.id,
        json!({ "username": user.username, "self_service": true }),
    )
    .await;
    let link = format!("{}/reset-password/{token}", s.public_url);
    let body = format!(
        "Someone (hopefully you) asked to reset the password of {} at {}.\n\n{link}\n\n\
         The link works once and expires at {}. If it was not you, ignore this mail.\n",
        user.username, s.public_url, info.expires_at
    );
    crate::mail::send(&s.store, to, "Reset your siteward password", body)
        .await
        .map(|_| ())
        .map_err(|e| e.to_string())
}

pub(super) async fn reset_form_token(headers: HeaderMap, Path(t): Path<String>) -> Response {
    let (token, set) = anon_token(&headers);
    respond(
        StatusCode::OK,
        cookies(set),
        reset_page(&token, Some(&t), false, &[]),
    )
}

pub(super) async fn reset_with_field(
    State(s): State<AdminState>,
    ClientAddr(peer): ClientAddr,
    headers: HeaderMap,
    Form(f): Form<ResetForm>,
) -> Response {
    let token = f.token.trim().to_owned();
    reset(s, client_ip(&headers, peer), &headers, token, f, false).await
}

pub(super) async fn reset_with_path(
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
    if addr.is_some_and(|a| s.login_throttle.address.blocked(&a)) {
        return fail(
            StatusCode::TOO_MANY_REQUESTS,
            "Too many attempts. Wait a few minutes.",
        );
    }
    let n = f.password.chars().count();
    if !(8..=1024).contains(&n) {
        return fail(
            StatusCode::UNPROCESSABLE_ENTITY,
            "The password must be 8 to 1024 characters.",
        );
    }
    match s
        .store
        .consume_password_reset(&token, f.password.clone(), chrono::Utc::now())
        .await
    {
        Ok(uid) => {
            let actor = Actor {
                uid: Some(uid),
                name: None,
                remote_addr: addr,
            };
            audit(&s, &actor, "reset_password", "user", uid, json!({})).await;
            respond(
                StatusCode::OK,
                vec![],
                page(
                    "Password changed",
                    &format!(
                        "{}<p><a href=\"/login\">Sign in</a></p>",
                        note("Your password was changed and every session of your account ended.")
                    ),
                ),
            )
        }
        Err(e) => {
            if let Some(a) = addr {
                s.login_throttle.address.fail(a);
            }
            let e = crate::api::error::ApiError::from(e);
            let msg = if e.status == StatusCode::UNPROCESSABLE_ENTITY {
                "This reset link or code is invalid, used or expired, or the password is not acceptable."
            } else {
                "The password could not be changed."
            };
            fail(e.status, msg)
        }
    }
}

// ------------------------------------------------------------------ account

/// Profile fields.
#[derive(Debug, Deserialize, Default)]
#[serde(default)]
pub(super) struct ProfileForm {
    cn: String,
    given_name: String,
    sn: String,
    mail: String,
    ssh_public_keys: String,
    csrf: String,
}

/// Password change.
#[derive(Debug, Deserialize, Default)]
#[serde(default)]
pub(super) struct PasswordForm {
    old_password: String,
    password: String,
    csrf: String,
}

/// A new API key.
#[derive(Debug, Deserialize, Default)]
#[serde(default)]
pub(super) struct KeyForm {
    name: String,
    csrf: String,
}

async fn account_page(
    s: &AdminState,
    csrf: &str,
    user: &siteward_store::User,
    problems: &[String],
    notice: Option<&str>,
) -> Response {
    let keys = s
        .store
        .list_api_keys(Some(user.uid_number))
        .await
        .unwrap_or_default();
    let mut rows = String::new();
    for k in &keys {
        rows.push_str(&format!(
            "<tr><td>{}</td><td><code>sw_{}_…</code></td><td>{}</td><td><form class=\"inline\" method=\"post\" action=\"/account/api-keys/{}/revoke\">{}<button type=\"submit\" aria-label=\"Revoke key {}\">Revoke</button></form></td></tr>",
            esc(&k.name),
            esc(&k.prefix),
            k.last_used_at.map(|t| t.format("%Y-%m-%d %H:%M").to_string()).unwrap_or_else(|| "never".into()),
            k.id.0,
            hidden("csrf", csrf),
            esc(&k.name),
        ));
    }
    let keys_table = if keys.is_empty() {
        "<p>No API keys.</p>".to_owned()
    } else {
        format!("<table><thead><tr><th scope=\"col\">Name</th><th scope=\"col\">Key</th><th scope=\"col\">Last used</th><th scope=\"col\"></th></tr></thead><tbody>{rows}</tbody></table>")
    };
    let body = format!(
        "{notice}{problems}<p>Signed in as <strong>{user}</strong> (uid {uid}).</p>\
<h2>Profile</h2><form method=\"post\" action=\"/account/profile\">{csrf_f}{cn}{given}{sn}{mail}\
<label for=\"ssh_public_keys\">SSH public keys (one per line)</label><textarea id=\"ssh_public_keys\" name=\"ssh_public_keys\" rows=\"4\">{keys}</textarea>\
<button type=\"submit\">Save profile</button></form>\
<h2>Password</h2><form method=\"post\" action=\"/account/password\">{csrf_f}{old}{new}<button type=\"submit\">Change password</button></form>\
<h2>API keys</h2>{keys_table}<form method=\"post\" action=\"/account/api-keys\">{csrf_f}{kname}<button type=\"submit\">Create API key</button></form>\
<h2>Sessions</h2><form method=\"post\" action=\"/logout\">{csrf_f}<input type=\"hidden\" name=\"everywhere\" value=\"1\"><button type=\"submit\">Sign out everywhere</button></form>\
<p><a href=\"/logout\">Sign out</a></p>",
        notice = notice.map(note).unwrap_or_default(),
        problems = errors(problems),
        user = esc(&user.username),
        uid = user.uid_number.0,
        csrf_f = hidden("csrf", csrf),
        cn = input("cn", "Display name", "text", &user.cn, "autocomplete=\"name\""),
        given = input("given_name", "First name", "text", user.given_name.as_deref().unwrap_or(""), "autocomplete=\"given-name\""),
        sn = input("sn", "Last name", "text", &user.sn, "autocomplete=\"family-name\""),
        mail = input("mail", "E-mail", "email", user.mail.as_deref().unwrap_or(""), "autocomplete=\"email\""),
        keys = esc(&user.ssh_public_keys.join("\n")),
        old = input("old_password", "Current password", "password", "", "autocomplete=\"current-password\" required"),
        new = input("password", "New password", "password", "", "autocomplete=\"new-password\" required minlength=\"8\""),
        kname = input("name", "Key name", "text", "", "required"),
    );
    let status = if problems.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::UNPROCESSABLE_ENTITY
    };
    respond(status, vec![], page("Your account", &body))
}

fn to_login() -> Response {
    see_other("/login?redirect=%2Faccount", vec![])
}

pub(super) async fn account(State(s): State<AdminState>, headers: HeaderMap) -> Response {
    let Some((_, info, user)) = signed_in(&s, &headers).await else {
        return to_login();
    };
    account_page(&s, &info.csrf_token, &user, &[], None).await
}

fn actor_of(user: &siteward_store::User, headers: &HeaderMap) -> Actor {
    Actor {
        uid: Some(user.uid_number),
        name: Some(user.username.clone()),
        remote_addr: client_ip(headers, None),
    }
}

pub(super) async fn account_profile(
    State(s): State<AdminState>,
    headers: HeaderMap,
    Form(f): Form<ProfileForm>,
) -> Response {
    let Some((_, info, user)) = signed_in(&s, &headers).await else {
        return to_login();
    };
    if !same_token(&info.csrf_token, &f.csrf) {
        return csrf_refused();
    }
    let patch = UpdateUser {
        cn: opt(&f.cn),
        sn: opt(&f.sn),
        given_name: Some(opt(&f.given_name)),
        mail: Some(opt(&f.mail)),
        ssh_public_keys: Some(
            f.ssh_public_keys
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .map(str::to_owned)
                .collect(),
        ),
        status: None,
    };
    if let Err(e) = patch.check() {
        return account_page(&s, &info.csrf_token, &user, &[e.message], None).await;
    }
    match s.store.update_user(user.uid_number, patch.patch()).await {
        Ok(updated) => {
            audit(
                &s,
                &actor_of(&user, &headers),
                "update",
                "user",
                user.uid_number,
                json!({ "fields": ["profile"] }),
            )
            .await;
            account_page(&s, &info.csrf_token, &updated, &[], Some("Profile saved.")).await
        }
        Err(e) => {
            let e = crate::api::error::ApiError::from(e);
            account_page(&s, &info.csrf_token, &user, &[e.message], None).await
        }
    }
}

pub(super) async fn account_password(
    State(s): State<AdminState>,
    headers: HeaderMap,
    Form(f): Form<PasswordForm>,
) -> Response {
    let Some((id, info, user)) = signed_in(&s, &headers).await else {
        return to_login();
    };
    if !same_token(&info.csrf_token, &f.csrf) {
        return csrf_refused();
    }
    let done = crate::accounts::change_own_password(
        &s,
        &user,
        f.old_password.clone(),
        f.password.clone(),
        Some(&id),
        &actor_of(&user, &headers),
    )
    .await;
    match done {
        Ok(()) => {
            account_page(
                &s,
                &info.csrf_token,
                &user,
                &[],
                Some("Password changed. Every other session of your account has ended."),
            )
            .await
        }
        Err(e) => {
            let problem = if e.status == StatusCode::TOO_MANY_REQUESTS {
                "Too many failed attempts. Wait a few minutes.".to_owned()
            } else if e.field.as_deref() == Some("old_password") {
                "The current password is not correct.".to_owned()
            } else {
                e.message
            };
            account_page(&s, &info.csrf_token, &user, &[problem], None).await
        }
    }
}

pub(super) async fn account_create_key(
    State(s): State<AdminState>,
    headers: HeaderMap,
    Form(f): Form<KeyForm>,
) -> Response {
    let Some((_, info, user)) = signed_in(&s, &headers).await else {
        return to_login();
    };
    if !same_token(&info.csrf_token, &f.csrf) {
        return csrf_refused();
    }
    let name = f.name.trim();
    if name.is_empty() || name.chars().count() > 200 {
        return account_page(
            &s,
            &info.csrf_token,
            &user,
            &["The key name must be 1 to 200 characters.".into()],
            None,
        )
        .await;
    }
    match s.store.create_api_key(&user.username, name, None).await {
        Ok((key, secret)) => {
            audit(
                &s,
                &actor_of(&user, &headers),
                "create",
                "api_key",
                key.id,
                json!({ "prefix": key.prefix }),
            )
            .await;
            let text = format!("New API key (shown only now): {secret}");
            account_page(&s, &info.csrf_token, &user, &[], Some(&text)).await
        }
        Err(e) => {
            let e = crate::api::error::ApiError::from(e);
            account_page(&s, &info.csrf_token, &user, &[e.message], None).await
        }
    }
}

pub(super) async fn account_revoke_key(
    State(s): State<AdminState>,
    headers: HeaderMap,
    Path(id): Path<i64>,
    Form(f): Form<KeyForm>,
) -> Response {
    let Some((_, info, user)) = signed_in(&s, &headers).await else {
        return to_login();
    };
    if !same_token(&info.csrf_token, &f.csrf) {
        return csrf_refused();
    }
    match s
        .store
        .delete_api_key(ApiKeyId(id), Some(user.uid_number))
        .await
    {
        Ok(()) => {
            audit(
                &s,
                &actor_of(&user, &headers),
                "delete",
                "api_key",
                id,
                json!({}),
            )
            .await;
            account_page(&s, &info.csrf_token, &user, &[], Some("API key revoked.")).await
        }
        Err(e) => {
            let e = crate::api::error::ApiError::from(e);
            account_page(&s, &info.csrf_token, &user, &[e.message], None).await
        }
    }
}

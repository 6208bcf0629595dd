//! The signed-in user's own account (`/account`): profile, password change, API keys, and a
//! sign-out-everywhere form. Every form carries the session's own CSRF token.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::Form;
use serde::Deserialize;
use siteward_store::ApiKeyId;

use super::{actor_of, csrf_refused, opt, to_login};
use crate::api::extract::Path;
use crate::api::UpdateUser;
use crate::auth::html::{errors, esc, hidden, input, note, page};
use crate::auth::{respond, same_token, signed_in};
use crate::AdminState;

/// Profile fields.
#[derive(Debug, Deserialize, Default)]
#[serde(default)]
pub(in crate::auth) struct ProfileForm {
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
pub(in crate::auth) struct PasswordForm {
    old_password: String,
    password: String,
    csrf: String,
}

/// A new API key.
#[derive(Debug, Deserialize, Default)]
#[serde(default)]
pub(in crate::auth) struct KeyForm {
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

pub(in crate::auth) async fn account(State(s): State<AdminState>, headers: HeaderMap) -> Response {
    let Some((_, info, user)) = signed_in(&s, &headers).await else {
        return to_login();
    };
    account_page(&s, &info.csrf_token, &user, &[], None).await
}

pub(in crate::auth) async fn account_profile(
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
    let by = actor_of(&user, &headers);
    match crate::service::users::update_own(&s.store, &by, user.uid_number, patch).await {
        Ok(updated) => {
            account_page(&s, &info.csrf_token, &updated, &[], Some("Profile saved.")).await
        }
        Err(e) => account_page(&s, &info.csrf_token, &user, &[e.message], None).await,
    }
}

pub(in crate::auth) async fn account_password(
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
    let done = crate::service::accounts::change_own_password(
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

pub(in crate::auth) async fn account_create_key(
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
    let body = crate::service::api_keys::CreateApiKey {
        name: f.name.trim().to_owned(),
        expires_at: None,
        username: None,
    };
    let who = super::principal_of(&s, &user, &headers);
    match crate::service::api_keys::create(&s.store, &who, body).await {
        Ok(created) => {
            let text = format!("New API key (shown only now): {}", created.secret);
            account_page(&s, &info.csrf_token, &user, &[], Some(&text)).await
        }
        Err(e) => account_page(&s, &info.csrf_token, &user, &[e.message], None).await,
    }
}

pub(in crate::auth) async fn account_revoke_key(
    State(s): State<AdminState>,
    headers: HeaderMap,
    Path(id): Path<ApiKeyId>,
    Form(f): Form<KeyForm>,
) -> Response {
    let Some((_, info, user)) = signed_in(&s, &headers).await else {
        return to_login();
    };
    if !same_token(&info.csrf_token, &f.csrf) {
        return csrf_refused();
    }
    // Always the own keys only, administrator or not: this is the account page.
    let mut who = super::principal_of(&s, &user, &headers);
    who.is_admin = false;
    match crate::service::api_keys::delete(&s.store, &who, id).await {
        Ok(()) => account_page(&s, &info.csrf_token, &user, &[], Some("API key revoked.")).await,
        Err(e) => account_page(&s, &info.csrf_token, &user, &[e.message], None).await,
    }
}

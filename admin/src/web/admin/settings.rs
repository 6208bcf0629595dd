//! `/admin/settings`: outgoing mail. The SMTP URL is shown with its password masked (it is
//! sealed at rest); a blank field keeps what is set. Writes go through
//! `service::settings`, which checks each value as the mailer will read it.

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use axum::Form;
use serde::Deserialize;

use super::table::{Cell, Field, NewForm, Reply, TablePage};
use super::{admin, admin_posted};
use crate::api::error::ApiError;
use crate::api::extract::ClientAddr;
use crate::service::settings as service;
use crate::web::{render, Problems, Signed};
use crate::AdminState;

/// The mail settings the page shows and sets.
const KEYS: [(&str, &str); 2] = [
    ("smtp_url", "SMTP server URL"),
    ("smtp_from", "Sender (From)"),
];

/// The mail form as typed.
#[derive(Debug, Default, Deserialize)]
pub(super) struct MailForm {
    #[serde(default)]
    smtp_url: String,
    #[serde(default)]
    smtp_from: String,
    csrf: String,
}

/// `GET /admin/settings`.
pub(super) async fn page(
    State(s): State<AdminState>,
    ClientAddr(peer): ClientAddr,
    headers: HeaderMap,
) -> Response {
    let who = match admin(&s, &headers, peer, "/admin/settings").await {
        Ok(w) => w,
        Err(r) => return r,
    };
    settings_page(&s, &who, &MailForm::default(), Reply::ok()).await
}

/// `POST /admin/settings`: sets the fields that are not blank.
pub(super) async fn set_mail(
    State(s): State<AdminState>,
    ClientAddr(peer): ClientAddr,
    headers: HeaderMap,
    Form(f): Form<MailForm>,
) -> Response {
    let who = match admin_posted(&s, &headers, peer, "/admin/settings", &f.csrf).await {
        Ok(w) => w,
        Err(r) => return r,
    };
    let by = who.principal.actor();
    let mut changed = Vec::new();
    let mut failed = None;
    for (key, typed) in [("smtp_url", &f.smtp_url), ("smtp_from", &f.smtp_from)] {
        let value = typed.trim();
        if value.is_empty() {
            continue;
        }
        match service::set(&s.store, &by, key, value).await {
            Ok(()) => changed.push(key),
            Err(e) => {
                // The service names the value; on this page the field is the key.
                let field = e.field.as_ref().map(|_| key.to_owned());
                failed = Some(ApiError { field, ..e });
                break;
            }
        }
    }
    let reply = match (failed, changed.is_empty()) {
        (Some(e), _) => Reply::failed(e, &["smtp_url", "smtp_from"]),
        (None, true) => Reply {
            problems: Problems::general("Nothing to change: every field was blank."),
            ..Reply::ok()
        },
        (None, false) => Reply::done(format!("Saved: {}.", changed.join(", "))),
    };
    settings_page(&s, &who, &f, reply).await
}

/// `POST /admin/settings/smtp/remove`: no more mail (links are shown instead).
pub(super) async fn remove_smtp(
    State(s): State<AdminState>,
    ClientAddr(peer): ClientAddr,
    headers: HeaderMap,
    Form(f): Form<MailForm>,
) -> Response {
    let who = match admin_posted(&s, &headers, peer, "/admin/settings", &f.csrf).await {
        Ok(w) => w,
        Err(r) => return r,
    };
    let reply = match service::delete(&s.store, &who.principal.actor(), "smtp_url").await {
        Ok(()) => Reply::done(
            "SMTP removed: invitation and reset links are shown instead of e-mailed.".into(),
        ),
        Err(e) => Reply::failed(e, &[]),
    };
    settings_page(&s, &who, &MailForm::default(), reply).await
}

async fn settings_page(s: &AdminState, who: &Signed, typed: &MailForm, reply: Reply) -> Response {
    let empty = MailForm::default();
    let f = if reply.notice.is_some() {
        &empty
    } else {
        typed
    };
    let mut rows = Vec::new();
    let mut problems = reply.problems;
    for (key, label) in KEYS {
        let shown = match s.store.setting(key).await {
            Ok(Some(v)) => service::shown(key, &v),
            Ok(None) => "not set".into(),
            Err(e) => {
                tracing::error!(error = %e, "reading a setting failed");
                problems
                    .general
                    .push("The settings could not be read.".into());
                "?".into()
            }
        };
        rows.push(vec![Cell::Text(label.into()), Cell::Code(shown)]);
    }
    let mut page = TablePage::new(
        "Settings",
        who.nav("admin"),
        who.csrf.clone(),
        vec!["Setting", "Value"],
        rows,
        "",
    );
    page.intro = Some(
        "Outgoing mail for invitations and password resets. Without an SMTP server, their \
         links are shown to the administrator instead. A blank field keeps what is set."
            .into(),
    );
    page.forms = vec![
        NewForm {
            id: "mail",
            heading: "Mail",
            action: "/admin/settings".into(),
            submit: "Save",
            fields: vec![
                Field::optional(
                    "smtp_url",
                    "SMTP server URL (smtp://host:587?tls=required, smtps://user:password@host)",
                    &f.smtp_url,
                ),
                Field::optional(
                    "smtp_from",
                    "Sender (siteward <noreply@example.org>)",
                    &f.smtp_from,
                ),
            ],
        },
        NewForm {
            id: "no-mail",
            heading: "Stop sending mail",
            action: "/admin/settings/smtp/remove".into(),
            submit: "Remove the SMTP server",
            fields: Vec::new(),
        },
    ];
    page.notice = reply.notice;
    page.problems = problems;
    render(reply.status, &page)
}

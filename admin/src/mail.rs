//! Outgoing e-mail for invites and password resets, through the SMTP server named by the
//! `smtp_url` setting (`smtp://host:25`, `smtp://host:587?tls=required`, `smtps://user:pass@host`),
//! from the `smtp_from` setting (default `siteward@<host name>`). Without `smtp_url`, nothing is
//! sent and the API hands the link to the administrator instead.

use lettre::message::header::ContentType;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use siteward_store::Store;

/// Why a mail was not sent.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MailError {
    /// The settings could not be read.
    #[error("reading the SMTP settings failed")]
    Settings,
    /// `smtp_url` or an address is malformed.
    #[error("invalid mail setting: {0}")]
    Invalid(String),
    /// The server refused or could not be reached.
    #[error("sending mail failed: {0}")]
    Send(String),
}

/// Sends `body` to `to` when SMTP is configured. `Ok(false)`: not configured, nothing sent.
pub async fn send(store: &Store, to: &str, subject: &str, body: String) -> Result<bool, MailError> {
    let Some(url) = store
        .setting("smtp_url")
        .await
        .map_err(|_| MailError::Settings)?
    else {
        return Ok(false);
    };
    let from = match store
        .setting("smtp_from")
        .await
        .map_err(|_| MailError::Settings)?
    {
        Some(f) => f,
        None => {
            let host = hostname_or_localhost();
            format!("siteward <siteward@{host}>")
        }
    };
    let message = Message::builder()
        .from(
            from.parse()
                .map_err(|_| MailError::Invalid("smtp_from".into()))?,
        )
        .to(to
            .parse()
            .map_err(|_| MailError::Invalid(format!("recipient {to}")))?)
        .subject(subject)
        .header(ContentType::TEXT_PLAIN)
        .body(body)
        .map_err(|e| MailError::Invalid(e.to_string()))?;
    let transport = AsyncSmtpTransport::<Tokio1Executor>::from_url(&url)
        .map_err(|_| MailError::Invalid("smtp_url".into()))?
        .timeout(Some(std::time::Duration::from_secs(20)))
        .build();
    transport
        .send(message)
        .await
        .map_err(|e| MailError::Send(e.to_string()))?;
    Ok(true)
}

/// Whether the mailer can use `url` as `smtp_url`; else why not.
pub(crate) fn check_url(url: &str) -> Result<(), String> {
    AsyncSmtpTransport::<Tokio1Executor>::from_url(url)
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// Whether `from` is a mailbox the mailer can send from (`name <addr>` or `addr`); else why not.
pub(crate) fn check_from(from: &str) -> Result<(), String> {
    from.parse::<lettre::message::Mailbox>()
        .map(|_| ())
        .map_err(|e| e.to_string())
}

fn hostname_or_localhost() -> String {
    std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

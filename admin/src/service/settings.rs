//! Settings (SMTP and the like): set, delete. Values never enter the audit log.

use siteward_store::{Actor, Store};

use super::rules::check_len;
use super::{ApiError, Result};

/// A setting key: lower-case letters, digits, `_` and `.`, starting with a letter.
pub fn check_key(key: &str) -> Result<()> {
    let ok = key.len() <= 128
        && key.starts_with(|c: char| c.is_ascii_lowercase())
        && key
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '.');
    if !ok {
        return Err(ApiError::invalid(
            "key",
            "key must be lower-case letters, digits, _ and .",
        ));
    }
    Ok(())
}

/// Sets a setting. The mail settings are checked as the mailer reads them, so a typo shows
/// now rather than when the first invitation fails to go out.
pub async fn set(store: &Store, by: &Actor, key: &str, value: &str) -> Result<()> {
    check_key(key)?;
    check_len("value", value, 0, 65536)?;
    match key {
        "smtp_url" => check_smtp_url(value)?,
        "smtp_from" => crate::mail::check_from(value)
            .map_err(|m| ApiError::invalid("value", format!("smtp_from: {m}")))?,
        _ => {}
    }
    Ok(store.set_setting(key, value, by).await?)
}

fn check_smtp_url(value: &str) -> Result<()> {
    let bad = |why: &str| ApiError::invalid("value", format!("smtp_url: {why}"));
    let url = url::Url::parse(value.trim()).map_err(|_| {
        bad("not a URL (smtp://host:25, smtp://host:587?tls=required, smtps://user:password@host)")
    })?;
    if !matches!(url.scheme(), "smtp" | "smtps") {
        return Err(bad("the scheme must be smtp or smtps"));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(bad("it names no host"));
    }
    crate::mail::check_url(value.trim()).map_err(|m| bad(&m))
}

/// What the API and the console show of a setting: a secret one (see
/// `siteward_store::queries::SECRET_SETTINGS`) without its password.
pub fn shown(key: &str, value: &str) -> String {
    if !siteward_store::queries::SECRET_SETTINGS.contains(&key) {
        return value.to_owned();
    }
    match url::Url::parse(value) {
        Ok(mut u) if u.password().is_some() => {
            if u.set_password(Some("********")).is_err() {
                return "(set)".into();
            }
            u.to_string()
        }
        Ok(u) => u.to_string(),
        Err(_) => "(set)".into(),
    }
}

/// Deletes a setting.
pub async fn delete(store: &Store, by: &Actor, key: &str) -> Result<()> {
    Ok(store.delete_setting(key, by).await?)
}

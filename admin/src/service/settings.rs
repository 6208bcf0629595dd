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

/// Sets a setting.
pub async fn set(store: &Store, by: &Actor, key: &str, value: &str) -> Result<()> {
    check_key(key)?;
    check_len("value", value, 0, 65536)?;
    Ok(store.set_setting(key, value, by).await?)
}

/// Deletes a setting.
pub async fn delete(store: &Store, by: &Actor, key: &str) -> Result<()> {
    Ok(store.delete_setting(key, by).await?)
}

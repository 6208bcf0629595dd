//! API keys: create (one's own; administrators also for others, and the CLI for anyone),
//! revoke. The secret is shown once and stored only as an argon2 hash.

use serde::{Deserialize, Serialize};
use siteward_store::{Actor, ApiKey, ApiKeyId, Store};

use super::rules::check_len;
use super::{ApiError, Result};
use crate::api::extract::Principal;

/// An API key to create.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateApiKey {
    /// A label.
    #[serde(default)]
    pub name: String,
    /// Expiry (RFC 3339), if any.
    pub expires_at: Option<chrono::DateTime<chrono::Utc>>,
    /// Administrators only: the owner's login name (default: yourself).
    pub username: Option<String>,
}

/// A created key: the secret appears only in this response.
#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct CreatedApiKey {
    #[serde(flatten)]
    /// The stored key.
    pub key: ApiKey,
    /// The full key: `Authorization: Bearer <key>`.
    pub secret: String,
}

/// Creates a key for the caller, or for `username` when the caller is an administrator.
pub async fn create(store: &Store, who: &Principal, b: CreateApiKey) -> Result<CreatedApiKey> {
    let owner = match b.username {
        Some(u) if who.is_admin => u,
        Some(_) => {
            return Err(ApiError::new(
                axum::http::StatusCode::FORBIDDEN,
                "forbidden",
                "only administrators create keys for others",
            )
            .field("username"))
        }
        None => who.username.clone(),
    };
    create_for(store, &who.actor(), &owner, &b.name, b.expires_at).await
}

/// Creates a key for `owner` (the CLI, and [`create`] once it has decided who the owner is).
pub async fn create_for(
    store: &Store,
    by: &Actor,
    owner: &str,
    name: &str,
    expires_at: Option<chrono::DateTime<chrono::Utc>>,
) -> Result<CreatedApiKey> {
    check_len("name", name, 0, 200)?;
    if expires_at.is_some_and(|t| t <= chrono::Utc::now()) {
        return Err(ApiError::invalid(
            "expires_at",
            "expires_at must be in the future",
        ));
    }
    let (key, secret) = store.create_api_key(owner, name, expires_at, by).await?;
    Ok(CreatedApiKey { key, secret })
}

/// Revokes a key of the caller (any key for administrators).
pub async fn delete(store: &Store, who: &Principal, id: ApiKeyId) -> Result<()> {
    Ok(store
        .delete_api_key(id, who.uid_filter(), &who.actor())
        .await?)
}

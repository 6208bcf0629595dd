//! Helpers every resource uses: the result type, list pages, `201`/`204` responses, the audit
//! log (with the snapshot reload after a write), and field validation shared by several resources.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::json;
use siteward_store::resources::{self, Actor};
use siteward_store::*;

use super::error::ApiError;
use super::extract::encode_cursor;
use crate::AdminState;

pub(crate) type ApiResult<T> = Result<T, ApiError>;

/// `Some(None)` for an explicit `null`, `None` when absent.
pub(super) fn nullable<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
    d: D,
) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

/// A page of items.
#[derive(Serialize, schemars::JsonSchema)]
pub struct ListResponse<T> {
    /// The items.
    pub items: Vec<T>,
    /// Pass as `cursor` for the next page; absent on the last.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

impl<T> From<resources::Listing<T>> for ListResponse<T> {
    fn from(l: resources::Listing<T>) -> Self {
        Self {
            next_cursor: l.next_after.map(encode_cursor),
            items: l.items,
        }
    }
}

pub(super) fn created<T: Serialize>(v: T) -> Response {
    (StatusCode::CREATED, axum::Json(v)).into_response()
}

pub(super) fn no_content() -> Response {
    StatusCode::NO_CONTENT.into_response()
}

pub(crate) async fn audit(
    state: &AdminState,
    actor: &Actor,
    action: &str,
    resource: &str,
    id: impl ToString,
    details: serde_json::Value,
) {
    if let Err(e) = state
        .store
        .audit(actor, action, resource, Some(id.to_string()), details)
        .await
    {
        tracing::error!(error = %e, action, resource, "writing the audit log failed");
    }
    // Read your writes: the next request (LDAP, DNS, this API) sees the change even before the
    // change feed's notification arrives.
    let table = match resource {
        "site" => "sites",
        "node" => "nodes",
        "container" => "containers",
        "service" => "services",
        "external_domain" => "external_domains",
        "dns_record" => "dns_records",
        "user" => "users",
        "group" => "groups",
        "api_key" => "api_keys",
        _ => return,
    };
    let mut dirty = Dirty::default();
    dirty.mark(table);
    if let Err(e) = state.store.reload(dirty).await {
        tracing::warn!(error = %e, "snapshot reload after a write failed; the change feed will retry");
    }
}

/// Keys of a JSON object (what changed), never values: secrets stay out of the audit log.
pub(super) fn fields<T: Serialize>(body: &T) -> serde_json::Value {
    match serde_json::to_value(body) {
        Ok(serde_json::Value::Object(m)) => json!({ "fields": m.keys().collect::<Vec<_>>() }),
        _ => json!({}),
    }
}

pub(super) fn check_len(field: &str, value: &str, min: usize, max: usize) -> ApiResult<()> {
    let n = value.chars().count();
    if n < min || n > max {
        return Err(ApiError::invalid(
            field,
            format!("{field} must be {min} to {max} characters"),
        ));
    }
    Ok(())
}

pub(crate) fn check_label(field: &str, value: &str) -> ApiResult<()> {
    let ok = !value.is_empty()
        && value.len() <= 63
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        && !value.starts_with('-')
        && !value.ends_with('-');
    if !ok {
        return Err(ApiError::invalid(
            field,
            format!(
                "{field} must be a DNS label (RFC 1123): letters, digits, hyphens, 1-63 characters"
            ),
        ));
    }
    Ok(())
}

pub(super) fn check_domain(field: &str, value: &str) -> ApiResult<()> {
    let v = value.trim_end_matches('.');
    if v.is_empty() || v.len() > 253 || v.split('.').any(|l| check_label(field, l).is_err()) {
        return Err(ApiError::invalid(
            field,
            format!("{field} must be a domain name like lab.example.org"),
        ));
    }
    Ok(())
}

pub(super) fn check_url(field: &str, value: &str) -> ApiResult<()> {
    if !(value.starts_with("https://") || value.starts_with("http://"))
        || value.len() > 2048
        || value.contains(char::is_whitespace)
    {
        return Err(ApiError::invalid(
            field,
            format!("{field} must be an http(s) URL"),
        ));
    }
    Ok(())
}

pub(super) fn check_mail(field: &str, value: &str) -> ApiResult<()> {
    let ok = value.len() <= 320
        && value
            .split_once('@')
            .is_some_and(|(l, d)| !l.is_empty() && d.contains('.') && !d.contains('@'))
        && !value.contains(char::is_whitespace);
    if !ok {
        return Err(ApiError::invalid(
            field,
            format!("{field} must be an e-mail address"),
        ));
    }
    Ok(())
}

pub(super) fn check_ssh_keys(keys: &[String]) -> ApiResult<()> {
    for k in keys {
        let mut parts = k.split_whitespace();
        let kind = parts.next().unwrap_or_default();
        let blob = parts.next().unwrap_or_default();
        let known =
            kind.starts_with("ssh-") || kind.starts_with("ecdsa-") || kind.starts_with("sk-");
        if !known || blob.is_empty() || k.contains('\n') || k.len() > 16 * 1024 {
            return Err(ApiError::invalid(
                "ssh_public_keys",
                "each SSH key must be one OpenSSH public key line (ssh-ed25519 AAAA... comment)",
            ));
        }
    }
    Ok(())
}

/// `?site_id=` filter.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SiteFilter {
    /// 1 to 500.
    pub limit: Option<i64>,
    /// Next page.
    pub cursor: Option<String>,
    /// Only this site's.
    pub site_id: Option<i64>,
}

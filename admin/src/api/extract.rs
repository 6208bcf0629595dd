//! Extractors: JSON bodies with our error format, the authenticated [`Principal`] (API key or
//! session cookie), the [`Admin`] marker that only an administrator can obtain, and pagination.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, Query, Request};
use axum::http::request::Parts;
use axum::http::{header, StatusCode};
use base64::Engine;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use siteward_store::resources::{Actor, Page, Via};
use siteward_store::Uid;

use super::error::ApiError;
use crate::AdminState;

/// A JSON body. Malformed JSON, unknown fields and wrong types are 400 naming the field; a body
/// over the limit is 413.
pub struct Json<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for Json<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let is_json = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(is_json_media_type);
        if !is_json {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "send the body as Content-Type: application/json",
            ));
        }
        let bytes = axum::body::Bytes::from_request(req, state)
            .await
            .map_err(|e| {
                if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                    ApiError::new(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        "body_too_large",
                        "the request body is larger than 1 MiB",
                    )
                } else {
                    ApiError::bad_request("the request body could not be read")
                }
            })?;
        let de = &mut serde_json::Deserializer::from_slice(&bytes);
        match serde_path_to_error::deserialize::<_, T>(&mut *de) {
            // One JSON value and nothing after it but whitespace.
            Ok(v) => match de.end() {
                Ok(()) => Ok(Json(v)),
                Err(e) => Err(ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "malformed_json",
                    format!("malformed JSON: {e}"),
                )),
            },
            Err(e) => {
                let path = e.path().to_string();
                let inner = e.into_inner();
                // serde_json calls some type errors syntax errors (a list where an enum's
                // string goes is "expected value"): malformed only if the body is not JSON.
                let well_formed = (inner.is_syntax() || inner.is_eof())
                    && serde_json::from_slice::<serde::de::IgnoredAny>(&bytes).is_ok();
                let mut err = if well_formed {
                    ApiError::new(
                        StatusCode::BAD_REQUEST,
                        "invalid_body",
                        format!("{path}: a value of the wrong type"),
                    )
                } else if inner.is_syntax() || inner.is_eof() {
                    ApiError::new(
                        StatusCode::BAD_REQUEST,
                        "malformed_json",
                        format!("malformed JSON: {inner}"),
                    )
                } else {
                    ApiError::new(StatusCode::BAD_REQUEST, "invalid_body", inner.to_string())
                };
                if path != "." {
                    err = err.field(path);
                }
                Err(err)
            }
        }
    }
}

/// Whether a `Content-Type` names JSON: `application/json` or `application/<subtype>+json`, with
/// any parameters. Anything else (`text/plain;a=+json`, which a cross-site form or a "simple"
/// cross-origin `fetch` may send without a preflight) is refused.
pub fn is_json_media_type(value: &str) -> bool {
    let essence = value.split(';').next().unwrap_or_default().trim();
    let Some((ty, sub)) = essence.split_once('/') else {
        return false;
    };
    let token = |t: &str| {
        !t.is_empty()
            && t.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$&-^_.+".contains(&b))
    };
    if !ty.eq_ignore_ascii_case("application") || !token(sub) {
        return false;
    }
    let sub = sub.to_ascii_lowercase();
    sub == "json" || sub.strip_suffix("+json").is_some_and(|p| !p.is_empty())
}

/// `?limit=&cursor=` on list routes.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PageQuery {
    /// 1 to 500 (default 50).
    pub limit: Option<i64>,
    /// From the previous page's `next_cursor`.
    pub cursor: Option<String>,
}

impl PageQuery {
    /// The store's page.
    pub fn page(&self) -> Result<Page, ApiError> {
        let limit = self.limit.unwrap_or(50);
        if !(1..=500).contains(&limit) {
            return Err(ApiError::invalid("limit", "limit must be 1 to 500"));
        }
        let after = match &self.cursor {
            None => None,
            Some(c) => Some(
                decode_cursor(c)
                    .ok_or_else(|| ApiError::invalid("cursor", "cursor is not valid"))?,
            ),
        };
        Ok(Page { limit, after })
    }
}

/// Opaque cursor for a keyset position.
pub fn encode_cursor(after: i64) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("v1:{after}"))
}

fn decode_cursor(text: &str) -> Option<i64> {
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(text)
        .ok()?;
    String::from_utf8(bytes)
        .ok()?
        .strip_prefix("v1:")?
        .parse()
        .ok()
}

/// Query extractor with our error format.
pub struct Q<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for Q<T> {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        Query::<T>::from_request_parts(parts, state)
            .await
            .map(|Query(v)| Q(v))
            .map_err(|e| ApiError::bad_request(format!("invalid query string: {}", e.body_text())))
    }
}

/// The signed-in user of a request.
#[derive(Debug, Clone)]
pub struct Principal {
    /// uid.
    pub uid: Uid,
    /// Login name.
    pub username: String,
    /// Member of an administrator group.
    pub is_admin: bool,
    /// Client address.
    pub remote_addr: Option<IpAddr>,
    /// Signed in by a session cookie or an API key.
    pub via: Via,
}

impl Principal {
    /// For the audit log.
    pub fn actor(&self) -> Actor {
        Actor::user(self.uid, &self.username, self.remote_addr, self.via)
    }

    /// `None` for admins (see everything), the own name otherwise.
    pub fn owner_filter(&self) -> Option<&str> {
        (!self.is_admin).then_some(self.username.as_str())
    }

    /// `None` for admins, the own uid otherwise.
    pub fn uid_filter(&self) -> Option<Uid> {
        (!self.is_admin).then_some(self.uid)
    }
}

/// Proof that the caller is an administrator. Non-admins get 404, so ids do not leak.
#[derive(Debug, Clone)]
pub struct Admin(pub Principal);

/// Failed-authentication throttle per client address (bad API keys, invite and reset tokens):
/// 20 failures a minute. The same [`Limiter`](crate::auth::Limiter) as the sign-in throttles.
#[derive(Debug, Clone)]
pub struct Throttle(crate::auth::Limiter<IpAddr>);

const WINDOW: Duration = Duration::from_secs(60);
const MAX_FAILURES: u32 = 20;

impl Default for Throttle {
    fn default() -> Self {
        Self(crate::auth::Limiter::new(MAX_FAILURES, WINDOW))
    }
}

impl Throttle {
    /// Whether `addr` is over the limit (a request without an address never is).
    pub fn blocked(&self, addr: Option<IpAddr>) -> bool {
        addr.is_some_and(|a| self.0.blocked(&a))
    }

    /// Counts a failure.
    pub fn fail(&self, addr: Option<IpAddr>) {
        if let Some(a) = addr {
            self.0.fail(a);
        }
    }
}

/// Verified API keys: SHA-256 of the presented key → the stored hash it verified against, so
/// argon2 runs once per key, not once per request. Revocation and suspension still apply at
/// once because the snapshot is consulted on every request.
#[derive(Debug, Default, Clone)]
pub struct KeyCache {
    pub(crate) inner: Arc<Mutex<HashMap<String, String>>>,
}

/// The client's address: the edge's `X-Real-IP` (only a trusted proxy's survives, see
/// [`crate::Shared::trusted_proxies`]), else the peer's.
fn remote(parts: &Parts) -> Option<IpAddr> {
    let peer = parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip());
    crate::auth::client_ip(&parts.headers, peer)
}

/// The session cookie's name.
pub const SESSION_COOKIE: &str = "siteward_session";

/// A cookie's value from request headers (the first, when there are several).
pub fn cookie_in(headers: &axum::http::HeaderMap, name: &str) -> Option<String> {
    cookies_in(headers, name).next().map(str::to_owned)
}

/// Every value a cookie has in a request, at most four: a browser may hold a host-only and a
/// domain copy of one name, and sends both.
pub fn cookies_in<'a>(
    headers: &'a axum::http::HeaderMap,
    name: &'a str,
) -> impl Iterator<Item = &'a str> + 'a {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .filter(move |(k, _)| *k == name)
        .map(|(_, v)| v)
        .take(4)
}

/// The first session cookie of a request that names a live session, with the session.
pub async fn live_session(
    state: &AdminState,
    headers: &axum::http::HeaderMap,
) -> Result<Option<(String, siteward_store::auth::SessionInfo)>, siteward_store::StoreError> {
    let now = chrono::Utc::now();
    for id in cookies_in(headers, SESSION_COOKIE) {
        if let Some(info) = state.store.session(id, now).await? {
            return Ok(Some((id.to_owned(), info)));
        }
    }
    Ok(None)
}

impl FromRequestParts<AdminState> for Principal {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AdminState,
    ) -> Result<Self, Self::Rejection> {
        let addr = remote(parts);
        let bearer = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
            })
            .map(str::trim)
            .map(str::to_owned);
        let (uid, via) = if let Some(key) = bearer {
            match api_key_uid(state, &key, addr).await {
                KeyCheck::Valid(uid) => (uid, Via::ApiKey),
                KeyCheck::Throttled => return Err(ApiError::rate_limited()),
                KeyCheck::Invalid => return Err(ApiError::unauthorized()),
            }
        } else if cookies_in(&parts.headers, SESSION_COOKIE).next().is_some() {
            // A browser sends the cookie with requests any page makes, so a write it carries must
            // come from a page of this origin (a sibling host under the cookie's domain is
            // another origin). API keys are not sent by browsers on their own.
            if !parts.method.is_safe()
                && !crate::auth::sender(&parts.headers, &state.public_url).may_write_with_cookie()
            {
                return Err(ApiError::cross_origin());
            }
            match live_session(state, &parts.headers).await? {
                Some((_, info)) => (info.uid, Via::Session),
                None => return Err(ApiError::unauthorized()),
            }
        } else {
            return Err(ApiError::unauthorized());
        };
        let snap = state.store.snapshot();
        let user = snap
            .identity
            .users
            .get(&uid)
            .filter(|u| u.status == siteward_store::UserStatus::Active)
            .ok_or_else(ApiError::unauthorized)?;
        Ok(Principal {
            uid,
            username: user.username.clone(),
            is_admin: snap.identity.is_admin(uid),
            remote_addr: addr,
            via,
        })
    }
}

/// What an API key turned out to be.
pub(crate) enum KeyCheck {
    /// A live key of this user.
    Valid(Uid),
    /// Not a live key (counted against the address).
    Invalid,
    /// Not checked: the address failed too often. A key this process already verified is
    /// still accepted (no argon2 needed), so a flood of bad keys from one address cannot lock
    /// out the scripts there that hold good ones; a key it has not seen yet waits out the
    /// window like any other guess.
    Throttled,
}

pub(crate) async fn api_key_uid(state: &AdminState, key: &str, addr: Option<IpAddr>) -> KeyCheck {
    let invalid = || {
        if state.throttle.blocked(addr) {
            return KeyCheck::Throttled;
        }
        state.throttle.fail(addr);
        KeyCheck::Invalid
    };
    let mut parts = key.splitn(3, '_');
    let (Some("sw"), Some(prefix), Some(_secret)) = (parts.next(), parts.next(), parts.next())
    else {
        return invalid();
    };
    let snap = state.store.snapshot();
    let Some(stored) = snap.identity.api_keys.get(prefix).cloned() else {
        return invalid();
    };
    if stored.expires_at.is_some_and(|t| t <= chrono::Utc::now()) {
        return invalid();
    }
    let digest = siteward_store::resources::token_hash(key);
    let cached = state
        .key_cache
        .inner
        .lock()
        .ok()
        .and_then(|m| m.get(&digest).cloned());
    if cached.as_deref() != Some(stored.key_hash.as_str()) {
        if state.throttle.blocked(addr) {
            return KeyCheck::Throttled;
        }
        let ok = siteward_store::password::verify_password(
            key.to_owned(),
            Some(stored.key_hash.clone()),
        )
        .await
        .unwrap_or(false);
        if !ok {
            return invalid();
        }
        if let Ok(mut m) = state.key_cache.inner.lock() {
            if m.len() > 10_000 {
                m.clear();
            }
            m.insert(digest, stored.key_hash.clone());
        }
    }
    let store = state.store.clone();
    let id = stored.id;
    tokio::spawn(async move {
        if let Err(e) = store.touch_api_key(id, chrono::Utc::now()).await {
            tracing::debug!(error = %e, "recording API key use failed");
        }
    });
    KeyCheck::Valid(stored.uid_number)
}

impl FromRequestParts<AdminState> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AdminState,
    ) -> Result<Self, Self::Rejection> {
        let p = Principal::from_request_parts(parts, state).await?;
        if !p.is_admin {
            return Err(ApiError::not_found("resource"));
        }
        Ok(Admin(p))
    }
}

/// The client address, for anonymous routes.
pub struct ClientAddr(pub Option<IpAddr>);

impl<S: Send + Sync> FromRequestParts<S> for ClientAddr {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        Ok(ClientAddr(remote(parts)))
    }
}

/// Path parameters with our error format (`/sites/abc` is a 400, not plain text).
pub struct Path<T>(pub T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for Path<T> {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Path(v)| Path(v))
            .map_err(|e| ApiError::bad_request(format!("invalid path: {}", e.body_text())))
    }
}

#[cfg(test)]
mod tests {
    use super::is_json_media_type;

    #[test]
    fn only_json_media_types_are_json() {
        for yes in [
            "application/json",
            "Application/JSON; charset=utf-8",
            "application/merge-patch+json",
            "application/vnd.api+json;v=1",
        ] {
            assert!(is_json_media_type(yes), "{yes}");
        }
        for no in [
            "text/plain;a=+json",
            "text/plain; charset=utf-8; x=application/json",
            "application/x-www-form-urlencoded;+json",
            "multipart/form-data; boundary=+json",
            "application/+json",
            "application/json5",
            "application /json",
            "json",
            "",
        ] {
            assert!(!is_json_media_type(no), "{no}");
        }
    }
}

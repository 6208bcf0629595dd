//! `GET /auth/verify`, called by NGINX `auth_request` for every request to a protected service.
//! Answers only 200 (with identity headers), 401 (with `Location` to the login page) or 403:
//! NGINX turns anything else into a 500. Answers from memory: the live snapshot (users, groups,
//! services) and the store's session table, which drops a session the moment its row is deleted
//! by any process (see `siteward_store::auth`); besides that only which API-key and Basic secrets
//! already verified against the *current* stored hash is remembered, so revocation, suspension
//! and logout apply at once.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, RwLock};

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, State};
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use siteward_store::{HttpService, ServiceId, Snapshot, Uid, User, UserStatus};

use super::{client_ip, redirect};
use crate::api::extract::{api_key_uid, live_session, KeyCheck};
use crate::AdminState;

/// Longest wait for a session lookup or a password check before the answer is 401.
const IDENTIFY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Who the request is, if anyone.
enum Who {
    User(Uid),
    Nobody,
}

/// `GET /auth/verify`, mounted outside the router's layers (see [`crate::app`]): it drops
/// address headers of untrusted peers and counts itself in the HTTP metrics by itself.
pub(crate) async fn verify(State(s): State<AdminState>, req: axum::extract::Request) -> Response {
    let started = std::time::Instant::now();
    let (parts, _) = req.into_parts();
    let peer = parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip());
    let mut headers = parts.headers;
    crate::drop_untrusted_forwarding(&s, peer, &mut headers);
    let res = decide(&s, &headers, peer).await;
    s.http_metrics.verified(res.status(), started);
    res
}

async fn decide(s: &AdminState, headers: &HeaderMap, peer: Option<IpAddr>) -> Response {
    let addr = client_ip(headers, peer);
    // A stalled database must still end in 401, never in the router's 408 (NGINX makes
    // anything but 200/401/403 a 500).
    let who = match tokio::time::timeout(IDENTIFY_TIMEOUT, identify(s, headers, addr)).await {
        Ok(who) => who,
        Err(_) => {
            tracing::error!(
                "identifying the caller took longer than {IDENTIFY_TIMEOUT:?}; answering 401"
            );
            Who::Nobody
        }
    };
    let snap = s.store.snapshot();
    let user = match who {
        Who::User(uid) => snap
            .identity
            .users
            .get(&uid)
            .filter(|u| u.status == UserStatus::Active),
        Who::Nobody => None,
    };
    let Some(user) = user else {
        return unauthorized(s, &snap, headers);
    };
    let answer = s.verify_answers.of(&snap, user);
    if !allowed(&snap, headers, &answer.groups) {
        return StatusCode::FORBIDDEN.into_response();
    }
    let mut res = StatusCode::OK.into_response();
    *res.headers_mut() = answer.headers.clone();
    res
}

/// What `/auth/verify` answers for one user: built once per snapshot generation (any change to
/// users, groups or memberships makes a new generation), then cloned per request, which copies
/// no header text.
#[derive(Debug)]
pub struct Answer {
    generation: u64,
    /// The user's group names.
    groups: Vec<Box<str>>,
    /// The identity headers of a 200.
    headers: HeaderMap,
}

/// [`Answer`]s by user.
#[derive(Debug, Default, Clone)]
pub struct Answers {
    inner: Arc<RwLock<HashMap<Uid, Arc<Answer>>>>,
}

/// Answers kept at most; beyond, the map starts again (it refills at one build per user).
const ANSWERS_LIMIT: usize = 100_000;

impl Answers {
    fn of(&self, snap: &Snapshot, user: &User) -> Arc<Answer> {
        let current = |a: &&Arc<Answer>| a.generation == snap.generation;
        if let Some(a) = self
            .inner
            .read()
            .ok()
            .and_then(|m| m.get(&user.uid_number).filter(current).cloned())
        {
            return a;
        }
        let groups = group_names(snap, user.uid_number);
        let answer = Arc::new(Answer {
            generation: snap.generation,
            headers: identity_headers(user, &groups),
            groups: groups.into_iter().map(Box::from).collect(),
        });
        if let Ok(mut m) = self.inner.write() {
            if m.len() >= ANSWERS_LIMIT {
                m.clear();
            }
            m.insert(user.uid_number, answer.clone());
        }
        answer
    }
}

async fn identify(s: &AdminState, headers: &HeaderMap, addr: Option<IpAddr>) -> Who {
    let auth = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(str::trim);
    if let Some(auth) = auth {
        let (scheme, rest) = auth.split_once(' ').unwrap_or((auth, ""));
        if scheme.eq_ignore_ascii_case("bearer") {
            return match api_key_uid(s, rest.trim(), addr).await {
                KeyCheck::Valid(uid) => Who::User(uid),
                KeyCheck::Invalid | KeyCheck::Throttled => Who::Nobody,
            };
        }
        if scheme.eq_ignore_ascii_case("basic") {
            return basic(s, rest.trim(), addr).await;
        }
    }
    match live_session(s, headers).await {
        Ok(Some((_, info))) => Who::User(info.uid),
        Ok(None) => Who::Nobody,
        // Fail closed, but as a 401 (NGINX would turn a 500 into its own error page).
        Err(e) => {
            tracing::error!(error = %e, "session lookup failed in /auth/verify");
            Who::Nobody
        }
    }
}

/// Basic credentials for scripts. A password that verified against the user's current hash is
/// remembered (by SHA-256 of the pair), so argon2 runs once, not per request; a changed
/// password or a suspension applies at once because the hash and status come from the snapshot.
async fn basic(s: &AdminState, encoded: &str, addr: Option<IpAddr>) -> Who {
    let Some((name, password)) = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .and_then(|t| t.split_once(':').map(|(u, p)| (u.to_owned(), p.to_owned())))
    else {
        return Who::Nobody;
    };
    let account = name.to_ascii_lowercase();
    let snap = s.store.snapshot();
    let user = snap.identity.user(&name).cloned();
    let hash = user.as_ref().and_then(|u| u.password_hash.clone());
    let digest = siteward_store::resources::token_hash(&format!("basic\0{account}\0{password}"));
    let cached = s
        .key_cache
        .inner
        .lock()
        .ok()
        .and_then(|m| m.get(&digest).cloned());
    let ok = match (&hash, cached) {
        // Verified before against the current hash: a throttle others caused does not apply.
        (Some(h), Some(c)) if *h == c => true,
        _ if s.throttle.blocked(addr) || s.login_throttle.account.blocked(&account) => {
            return Who::Nobody;
        }
        _ => {
            let ok = siteward_store::password::verify_password(password, hash.clone())
                .await
                .unwrap_or(false);
            if ok {
                if let (Ok(mut m), Some(h)) = (s.key_cache.inner.lock(), hash) {
                    if m.len() > 10_000 {
                        m.clear();
                    }
                    m.insert(digest, h);
                }
            }
            ok
        }
    };
    match user {
        Some(u) if ok => Who::User(u.uid_number),
        _ => {
            s.throttle.fail(addr);
            s.login_throttle.account.fail(account);
            Who::Nobody
        }
    }
}

fn group_names(snap: &Snapshot, uid: Uid) -> Vec<&str> {
    snap.identity
        .groups_of
        .get(&uid)
        .map(|gids| {
            gids.iter()
                .filter_map(|g| snap.identity.groups.get(g))
                .map(|g| g.cn.as_str())
                .collect()
        })
        .unwrap_or_default()
}

/// The URL the browser originally asked for.
fn original_url(headers: &HeaderMap) -> Option<String> {
    let get = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
            .filter(|v| !v.is_empty())
    };
    if let Some(u) = get("x-original-url") {
        return Some(u.to_owned());
    }
    let proto = get("x-forwarded-proto").unwrap_or("https");
    let host = get("x-forwarded-host")?;
    let uri = get("x-forwarded-uri").unwrap_or("/");
    Some(format!("{proto}://{host}{uri}"))
}

/// The service the protected request was for: the id the generated NGINX configuration sends
/// in `X-Siteward-Service` (a fixed value the client cannot influence), else the host of the
/// original URL (for hand-written configurations).
enum Target<'a> {
    Service(Option<&'a HttpService>),
    /// The request named no target at all (a script asking who it is).
    Unnamed,
    /// A target was named but cannot be read: never let such a request through.
    Unreadable,
}

fn target<'a>(snap: &'a Snapshot, headers: &HeaderMap) -> Target<'a> {
    let naming = &snap.naming;
    if let Some(v) = headers.get("x-siteward-service") {
        let id = v.to_str().ok().and_then(|t| t.trim().parse::<i64>().ok());
        return match id {
            // An id that names no service (deleted since NGINX was configured) admits nobody:
            // what it allowed is no longer known.
            Some(id) => match naming.http_service(ServiceId(id)) {
                Some(svc) => Target::Service(Some(svc)),
                None => Target::Unreadable,
            },
            None => Target::Unreadable,
        };
    }
    let Some(original) = original_url(headers) else {
        return Target::Unnamed;
    };
    let host = url::Url::parse(&original).ok().and_then(|u| {
        u.host_str()
            .map(|h| h.trim_end_matches('.').to_ascii_lowercase())
    });
    match host {
        Some(host) => Target::Service(naming.http_service_at(&host).map(|s| &**s)),
        None => Target::Unreadable,
    }
}

/// Whether the service the request is for lets one of `groups` in. A service that names no
/// groups (or a host that is no service) admits every active user; a target that cannot be
/// read admits nobody, so a mangled `Host` cannot slip past a group restriction.
fn allowed(snap: &Snapshot, headers: &HeaderMap, groups: &[Box<str>]) -> bool {
    match target(snap, headers) {
        Target::Unnamed | Target::Service(None) => true,
        Target::Unreadable => false,
        Target::Service(Some(svc)) => {
            svc.allowed_groups.is_empty()
                || svc
                    .allowed_groups
                    .iter()
                    .any(|a| groups.iter().any(|g| g.eq_ignore_ascii_case(a)))
        }
    }
}

fn unauthorized(s: &AdminState, snap: &Snapshot, headers: &HeaderMap) -> Response {
    let domains = super::domains(snap);
    let target = original_url(headers).and_then(|u| redirect::safe_target(&u, &domains));
    // Sign in on a host of the target's own domain, so the cookie set there reaches it.
    let target_url = target.as_deref().and_then(|t| url::Url::parse(t).ok());
    let domain = target_url
        .as_ref()
        .and_then(|u| u.host_str().and_then(|h| redirect::domain_of(h, &domains)));
    let base = match domain {
        Some(d) => redirect::login_base(
            &s.public_url,
            d,
            &domains,
            // The edge serves that host on the port the browser used for the service.
            target_url.as_ref().and_then(url::Url::port),
        ),
        None => s.public_url.trim_end_matches('/').to_owned(),
    };
    let mut login = format!("{base}/login");
    if let Some(target) = target {
        login.push_str("?redirect=");
        login.extend(url::form_urlencoded::byte_serialize(target.as_bytes()));
    }
    let mut res = StatusCode::UNAUTHORIZED.into_response();
    if let Ok(v) = HeaderValue::from_str(&login) {
        res.headers_mut().insert(header::LOCATION, v);
    }
    res.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Basic realm=\"siteward\", charset=\"UTF-8\""),
    );
    res
}

/// Header values carry UTF-8 as is; control characters are dropped so a value can never end
/// a header early.
fn value(text: &str) -> HeaderValue {
    let clean: std::borrow::Cow<'_, str> = if text.chars().any(char::is_control) {
        text.chars()
            .filter(|c| !c.is_control())
            .collect::<String>()
            .into()
    } else {
        text.into()
    };
    HeaderValue::from_bytes(clean.as_bytes()).unwrap_or_else(|_| HeaderValue::from_static(""))
}

fn identity_headers(user: &User, groups: &[&str]) -> HeaderMap {
    let groups = value(&groups.join(","));
    let username = value(&user.username);
    let mail = value(user.mail.as_deref().unwrap_or_default());
    let pairs: [(&'static str, HeaderValue); 10] = [
        ("x-user-id", HeaderValue::from(user.uid_number.0)),
        ("x-username", username.clone()),
        (
            "x-user-first-name",
            value(user.given_name.as_deref().unwrap_or_default()),
        ),
        ("x-user-last-name", value(&user.sn)),
        ("x-email", mail.clone()),
        ("x-groups", groups.clone()),
        ("remote-user", username),
        ("remote-groups", groups),
        ("remote-name", value(&user.cn)),
        ("remote-email", mail),
    ];
    let mut h = HeaderMap::with_capacity(pairs.len() + 1);
    for (name, v) in pairs {
        h.insert(HeaderName::from_static(name), v);
    }
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn original_url_from_either_header_set() {
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-proto", HeaderValue::from_static("https"));
        h.insert("x-forwarded-host", HeaderValue::from_static("app.lab.test"));
        h.insert("x-forwarded-uri", HeaderValue::from_static("/x?y=1"));
        assert_eq!(
            original_url(&h).as_deref(),
            Some("https://app.lab.test/x?y=1")
        );
        h.insert(
            "x-original-url",
            HeaderValue::from_static("https://b.lab.test/z"),
        );
        assert_eq!(original_url(&h).as_deref(), Some("https://b.lab.test/z"));
    }

    #[test]
    fn header_values_never_carry_newlines() {
        assert_eq!(value("a\r\nX-Evil: 1").as_bytes(), b"aX-Evil: 1");
        assert_eq!(value("Zoë").as_bytes(), "Zoë".as_bytes());
    }
}

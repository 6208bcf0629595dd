//! Sign-in for people and for the edge: the NGINX `auth_request` endpoint (`/auth/verify`) and
//! the server-rendered pages (`/login`, `/logout`, `/register`, `/reset-password`, `/account`).
//!
//! Sessions live in PostgreSQL; the cookie carries only an opaque random id (the table keeps its
//! SHA-256). The cookie is `HttpOnly`, `SameSite=Lax`, `Secure` behind TLS
//! (`X-Forwarded-Proto: https`) and, when the request's host lies under an external domain,
//! scoped to that domain so one sign-in covers all its hosts. Deleting the row ends the session
//! on every host at once; `/auth/verify` reads the row and the live snapshot on every call, so
//! logout and suspension apply to the very next request.
//!
//! CSRF: forms of a signed-in user carry the session's own token (stored with the session);
//! anonymous forms (login, registration, reset) use a double-submit token in a host-only
//! `SameSite=Strict` cookie.
//!
//! What does not live here: the JSON API ([`crate::api`]), the NGINX configuration and what
//! the edge reserves ([`crate::edge`]).

pub(crate) mod html;
mod pages;
pub mod redirect;
pub mod verify;

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use siteward_store::auth::SessionInfo;
use siteward_store::{Snapshot, User, UserStatus};

use crate::api::extract::SESSION_COOKIE;
use crate::AdminState;
pub(crate) use pages::csrf_refused;

/// The anonymous forms' double-submit cookie.
pub const CSRF_COOKIE: &str = "siteward_csrf";

/// The sign-in routes (outside `/api`).
pub fn routes(state: &AdminState) -> Router<AdminState> {
    Router::new()
        .route(
            "/login",
            get(pages::login::login_form).post(pages::login::login),
        )
        .route(
            "/logout",
            get(pages::login::logout_form).post(pages::login::logout),
        )
        .route(
            "/register",
            get(pages::register::register_form).post(pages::register::register),
        )
        .route(
            "/reset-password",
            get(pages::reset::reset_form).post(pages::reset::reset_with_field),
        )
        .route("/reset-password/request", post(pages::reset::reset_request))
        .route(
            "/reset-password/{token}",
            get(pages::reset::reset_form_token).post(pages::reset::reset_with_path),
        )
        .route("/account", get(pages::account::account))
        .route("/account/profile", post(pages::account::account_profile))
        .route("/account/password", post(pages::account::account_password))
        .route(
            "/account/api-keys",
            post(pages::account::account_create_key),
        )
        .route(
            "/account/api-keys/{id}/revoke",
            post(pages::account::account_revoke_key),
        )
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            same_origin_posts,
        ))
}

/// Form posts must come from a page of the origin they are posted to. The double-submit token
/// alone cannot stop a sibling host of the external domain (a service's backend) from planting
/// its own `siteward_csrf` cookie for the whole domain and signing a visitor into an account of
/// its choosing; the browser's `Origin` (or `Sec-Fetch-Site`) names the real sender.
pub(crate) async fn same_origin_posts(
    axum::extract::State(s): axum::extract::State<AdminState>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    if req.method() == axum::http::Method::POST
        && !sender(req.headers(), &s.public_url).may_post_form()
    {
        return pages::csrf_refused();
    }
    next.run(req).await
}

/// A web origin (RFC 6454): scheme, host and port, lower-case, the port filled in from the
/// scheme when it is the default.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    scheme: String,
    host: String,
    port: u16,
}

impl Origin {
    /// The origin of an absolute `http`/`https` URL or of a browser's `Origin` header; `None`
    /// for anything else (`null`, other schemes, garbage).
    pub fn parse(text: &str) -> Option<Self> {
        let u = url::Url::parse(text.trim()).ok()?;
        if !matches!(u.scheme(), "http" | "https") {
            return None;
        }
        Some(Self {
            scheme: u.scheme().to_owned(),
            host: u.host_str()?.to_ascii_lowercase(),
            port: u.port_or_known_default()?,
        })
    }

    /// The origin a request was addressed to: the scheme from `X-Forwarded-Proto` (set by the
    /// edge, and by this server's own TLS listener) else `http`, the host and port from
    /// `X-Forwarded-Host` (the edge passes the browser's `Host` there) else `Host`.
    pub fn of_request(headers: &HeaderMap) -> Option<Self> {
        let scheme = if is_tls(headers) { "https" } else { "http" };
        let authority = forwarded_authority(headers)?;
        let plain = !authority.is_empty()
            && !authority
                .bytes()
                .any(|b| matches!(b, b'/' | b'\\' | b'@' | b'?' | b'#') || b.is_ascii_whitespace());
        if !plain {
            return None;
        }
        Self::parse(&format!("{scheme}://{authority}/"))
    }
}

/// Who a browser says sent a request, from `Origin`, else `Sec-Fetch-Site`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sender {
    /// A page of the origin the request goes to (or of the public URL's origin, for a proxy
    /// that passes neither the browser's `Host` nor `X-Forwarded-Host`).
    SameOrigin,
    /// The user, not a page (`Sec-Fetch-Site: none`: a bookmark, the address bar).
    User,
    /// Another origin: another host, scheme or port, or `Origin: null`.
    CrossOrigin,
    /// Neither header: a script, or a browser too old to say.
    Unknown,
}

impl Sender {
    /// Form posts of the sign-in pages: anything but a page of another origin. Clients that say
    /// nothing (scripts, old browsers) are left to the forms' CSRF tokens.
    pub fn may_post_form(self) -> bool {
        !matches!(self, Sender::CrossOrigin)
    }

    /// State-changing API requests authenticated by the session cookie, which carry no token
    /// of their own: only a page of the same origin.
    pub fn may_write_with_cookie(self) -> bool {
        matches!(self, Sender::SameOrigin)
    }
}

/// Judges a request's sender: an `Origin` header must name the request's own origin (scheme,
/// host and port) or the public URL's; without one, `Sec-Fetch-Site` decides.
pub fn sender(headers: &HeaderMap, public_url: &str) -> Sender {
    if let Some(origin) = headers.get(header::ORIGIN) {
        let Some(from) = origin.to_str().ok().and_then(Origin::parse) else {
            return Sender::CrossOrigin;
        };
        let same = Origin::of_request(headers).is_some_and(|to| to == from)
            || Origin::parse(public_url).is_some_and(|public| public == from);
        return if same {
            Sender::SameOrigin
        } else {
            Sender::CrossOrigin
        };
    }
    match headers.get("sec-fetch-site").and_then(|v| v.to_str().ok()) {
        Some(site) => match site.trim() {
            "same-origin" => Sender::SameOrigin,
            "none" => Sender::User,
            _ => Sender::CrossOrigin,
        },
        None => Sender::Unknown,
    }
}

/// Failure counter with a window, per key (account name, address).
#[derive(Debug)]
pub struct Limiter<K> {
    inner: Arc<Mutex<HashMap<K, (u32, Instant)>>>,
    max: u32,
    window: Duration,
}

impl<K> Clone for Limiter<K> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            max: self.max,
            window: self.window,
        }
    }
}

impl<K: Hash + Eq> Limiter<K> {
    /// `max` failures per `window`.
    pub fn new(max: u32, window: Duration) -> Self {
        Self {
            inner: Arc::default(),
            max,
            window,
        }
    }

    /// Over the limit.
    pub fn blocked(&self, key: &K) -> bool {
        let Ok(map) = self.inner.lock() else {
            return false;
        };
        map.get(key)
            .is_some_and(|(n, since)| *n >= self.max && since.elapsed() < self.window)
    }

    /// Counts a failure.
    pub fn fail(&self, key: K) {
        let Ok(mut map) = self.inner.lock() else {
            return;
        };
        if map.len() > 100_000 {
            let window = self.window;
            map.retain(|_, (_, since)| since.elapsed() < window);
        }
        let entry = map.entry(key).or_insert((0, Instant::now()));
        if entry.1.elapsed() >= self.window {
            *entry = (0, Instant::now());
        }
        entry.0 += 1;
    }

    /// Forgets a key (after a success).
    pub fn clear(&self, key: &K) {
        if let Ok(mut map) = self.inner.lock() {
            map.remove(key);
        }
    }
}

/// Sign-in throttles: per account and per client address.
#[derive(Debug, Clone)]
pub struct LoginThrottle {
    /// Failed sign-ins per lower-case account name: 10 per 5 minutes.
    pub account: Limiter<String>,
    /// Failed sign-ins per client address: 30 per 5 minutes.
    pub address: Limiter<IpAddr>,
    /// Self-service reset mails per account: 1 per 5 minutes.
    pub reset_mail: Limiter<String>,
    /// Registration attempts per client address: `http.registrations_per_hour` (10) per hour.
    pub registration: Limiter<IpAddr>,
}

impl LoginThrottle {
    /// The default limits with `per_hour` registrations per address.
    pub fn with_registrations(per_hour: u32) -> Self {
        Self {
            account: Limiter::new(10, Duration::from_secs(300)),
            address: Limiter::new(30, Duration::from_secs(300)),
            reset_mail: Limiter::new(1, Duration::from_secs(300)),
            registration: Limiter::new(per_hour.max(1), Duration::from_secs(3600)),
        }
    }
}

impl Default for LoginThrottle {
    fn default() -> Self {
        Self::with_registrations(10)
    }
}

/// The client's address: `X-Real-IP` (set by the edge NGINX, which overwrites what the client
/// sent) when present, else the connection's peer.
pub fn client_ip(headers: &HeaderMap, peer: Option<IpAddr>) -> Option<IpAddr> {
    headers
        .get("x-real-ip")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok())
        .or(peer)
}

/// The host and port the browser asked for: `X-Forwarded-Host` (its first entry), else `Host`.
fn forwarded_authority(headers: &HeaderMap) -> Option<&str> {
    let raw = headers
        .get("x-forwarded-host")
        .or_else(|| headers.get(header::HOST))?
        .to_str()
        .ok()?;
    Some(raw.split(',').next()?.trim())
}

/// The host the browser asked for (`X-Forwarded-Host`, else `Host`), lower-case, no port.
pub fn request_host(headers: &HeaderMap) -> Option<String> {
    Some(strip_port(forwarded_authority(headers)?).to_ascii_lowercase())
}

fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        return host.split(']').next().map_or(host, |h| &host[..=h.len()]);
    }
    match host.rsplit_once(':') {
        Some((h, p)) if p.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => host,
    }
}

/// Whether the browser reached us over TLS (through the edge).
pub fn is_tls(headers: &HeaderMap) -> bool {
    headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("https"))
}

/// The external domains' names.
pub fn domains(snap: &Snapshot) -> Vec<&str> {
    snap.naming
        .external_domains
        .iter()
        .map(|d| d.domain.as_str())
        .collect()
}

/// `Set-Cookie` for the session (or its removal when `value` is `None`).
pub fn session_cookie(
    headers: &HeaderMap,
    snap: &Snapshot,
    value: Option<&str>,
    ttl: i64,
) -> String {
    let mut c = match value {
        Some(v) => format!("{SESSION_COOKIE}={v}; Path=/; HttpOnly; SameSite=Lax; Max-Age={ttl}"),
        None => format!("{SESSION_COOKIE}=; Path=/; HttpOnly; SameSite=Lax; Max-Age=0"),
    };
    if is_tls(headers) {
        c.push_str("; Secure");
    }
    if let Some(host) = request_host(headers) {
        if let Some(d) = redirect::domain_of(&host, &domains(snap)) {
            c.push_str("; Domain=");
            c.push_str(d);
        }
    }
    c
}

/// The signed-in, active user of a browser request and the session.
pub async fn signed_in(
    s: &AdminState,
    headers: &HeaderMap,
) -> Option<(String, SessionInfo, Arc<User>)> {
    let (id, info) = match crate::api::extract::live_session(s, headers).await {
        Ok(Some(found)) => found,
        Ok(None) => return None,
        Err(e) => {
            tracing::error!(error = %e, "session lookup failed");
            return None;
        }
    };
    let user = s
        .store
        .snapshot()
        .identity
        .users
        .get(&info.uid)
        .filter(|u| u.status == UserStatus::Active)
        .cloned()?;
    Some((id, info, user))
}

/// Constant-time comparison of two tokens.
pub fn same_token(a: &str, b: &str) -> bool {
    if a.is_empty() || a.len() != b.len() {
        return false;
    }
    a.bytes()
        .zip(b.bytes())
        .fold(0u8, |acc, (x, y)| acc | (x ^ y))
        == 0
}

/// A response with headers.
pub(crate) fn respond(
    status: StatusCode,
    headers: Vec<(header::HeaderName, String)>,
    body: String,
) -> Response {
    let mut res = (status, axum::response::Html(body)).into_response();
    let h = res.headers_mut();
    for (name, value) in headers {
        if let Ok(v) = HeaderValue::from_str(&value) {
            h.append(name, v);
        }
    }
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert("x-frame-options", HeaderValue::from_static("DENY"));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'none'; style-src 'unsafe-inline'; form-action 'self' http: https:; frame-ancestors 'none'"),
    );
    res
}

/// 303 to `location`.
pub(crate) fn see_other(location: &str, cookies: Vec<String>) -> Response {
    let mut headers = vec![(header::LOCATION, location.to_owned())];
    headers.extend(cookies.into_iter().map(|c| (header::SET_COOKIE, c)));
    respond(StatusCode::SEE_OTHER, headers, String::new())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_lose_their_port() {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_static("App.Lab.Test:8443"));
        assert_eq!(request_host(&h).as_deref(), Some("app.lab.test"));
        h.insert(
            "x-forwarded-host",
            HeaderValue::from_static("auth.lab.test, proxy"),
        );
        assert_eq!(request_host(&h).as_deref(), Some("auth.lab.test"));
        assert_eq!(strip_port("[::1]:80"), "[::1]");
    }

    fn sender_of(pairs: &[(&'static str, &'static str)]) -> Sender {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_static("auth.lab.test:8443"));
        h.insert("x-forwarded-proto", HeaderValue::from_static("https"));
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_static(v));
        }
        sender(&h, "https://login.lab.test/")
    }

    #[test]
    fn posts_from_sibling_hosts_are_not_same_origin() {
        let same = |pairs| sender_of(pairs) == Sender::SameOrigin;
        assert!(same(&[("origin", "https://auth.lab.test:8443")]));
        assert!(same(&[("origin", "https://AUTH.lab.test:8443")]));
        assert!(same(&[("origin", "https://login.lab.test")]));
        assert!(same(&[("origin", "https://login.lab.test:443")]));
        assert!(same(&[("sec-fetch-site", "same-origin")]));
        assert_eq!(sender_of(&[]), Sender::Unknown);
        assert_eq!(sender_of(&[("sec-fetch-site", "none")]), Sender::User);
        for cross in [
            &[("origin", "https://evil.lab.test")][..],
            &[("origin", "null")],
            &[("origin", "garbage")],
            &[("sec-fetch-site", "same-site")],
            &[("sec-fetch-site", "cross-site")],
            // Another port or scheme of the same host is another origin.
            &[("origin", "https://auth.lab.test")],
            &[("origin", "https://auth.lab.test:9443")],
            &[("origin", "http://auth.lab.test:8443")],
            &[("origin", "http://login.lab.test")],
            // Origin wins over Sec-Fetch-Site.
            &[
                ("origin", "https://evil.lab.test"),
                ("sec-fetch-site", "same-origin"),
            ],
        ] {
            assert_eq!(sender_of(cross), Sender::CrossOrigin, "{cross:?}");
        }
    }

    #[test]
    fn the_request_origin_comes_from_the_forwarded_host_and_scheme() {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_static("127.0.0.1:8080"));
        assert_eq!(
            Origin::of_request(&h),
            Origin::parse("http://127.0.0.1:8080")
        );
        h.insert(
            "x-forwarded-host",
            HeaderValue::from_static("Auth.Lab.Test"),
        );
        h.insert("x-forwarded-proto", HeaderValue::from_static("https"));
        assert_eq!(
            Origin::of_request(&h),
            Origin::parse("https://auth.lab.test")
        );
        h.insert("x-forwarded-host", HeaderValue::from_static("a@b.test"));
        assert_eq!(Origin::of_request(&h), None);
        assert_eq!(Origin::parse("ftp://auth.lab.test"), None);
    }

    #[test]
    fn form_posts_and_cookie_writes_differ_only_for_silent_clients() {
        assert!(Sender::Unknown.may_post_form());
        assert!(!Sender::Unknown.may_write_with_cookie());
        assert!(!Sender::User.may_write_with_cookie());
        assert!(!Sender::CrossOrigin.may_post_form());
        assert!(Sender::SameOrigin.may_write_with_cookie());
    }

    #[test]
    fn tokens_compare_exactly() {
        assert!(same_token("abc", "abc"));
        assert!(!same_token("abc", "abd"));
        assert!(!same_token("", ""));
        assert!(!same_token("abc", "abcd"));
    }

    #[test]
    fn limiter_blocks_after_max() {
        let l = Limiter::new(2, Duration::from_secs(60));
        l.fail("a".to_owned());
        assert!(!l.blocked(&"a".to_owned()));
        l.fail("a".to_owned());
        assert!(l.blocked(&"a".to_owned()));
        assert!(!l.blocked(&"b".to_owned()));
        l.clear(&"a".to_owned());
        assert!(!l.blocked(&"a".to_owned()));
    }
}

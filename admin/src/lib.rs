//! # siteward-admin
//!
//! The HTTP side of siteward on axum: health (`/healthz`), readiness (`/readyz`), Prometheus
//! metrics (`/metrics`), the admin API ([`api`]), the login pages and the NGINX
//! `auth_request` endpoint ([`auth`]), and the edge NGINX's configuration ([`edge`]).
//!
//! [`app`] builds the router from an [`AdminState`] with no socket, so tests drive it with
//! `tower::ServiceExt::oneshot`; [`serve`] runs it on a listener the binary bound.

pub mod api;
pub mod auth;
pub mod edge;
mod health;
pub mod https;
pub mod jobs;
pub mod mail;
pub mod metrics;
pub mod proxmox;
pub mod service;
pub mod templates;
pub mod web;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use siteward_store::Store;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use metrics::HttpMetrics;

/// Errors of the HTTP server.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AdminError {
    /// The listener failed.
    #[error("HTTP server: {0}")]
    Io(#[from] std::io::Error),
}

/// What every handler can reach: a cheap handle (one reference count) on [`Shared`]. axum clones
/// the state for every extractor of every request, so it must not copy the fields themselves.
#[derive(Clone)]
pub struct AdminState(Arc<Shared>);

impl std::ops::Deref for AdminState {
    type Target = Shared;
    fn deref(&self) -> &Shared {
        &self.0
    }
}

impl From<Shared> for AdminState {
    fn from(shared: Shared) -> Self {
        Self(Arc::new(shared))
    }
}

/// Everything the HTTP side shares between requests; built once at start, then frozen in an
/// [`AdminState`].
pub struct Shared {
    /// The store and its live snapshot.
    pub store: Store,
    /// Every component's metrics, encoded on `/metrics`.
    pub registry: Arc<prometheus_client::registry::Registry>,
    /// This crate's own request metrics.
    pub http_metrics: HttpMetrics,
    /// Extra readiness checks (for example the embedded database); each returns a reason when
    /// not ready.
    pub readiness: Vec<Arc<dyn Fn() -> Option<String> + Send + Sync>>,
    /// Failed-authentication throttle.
    pub throttle: api::extract::Throttle,
    /// Verified API keys.
    pub key_cache: api::extract::KeyCache,
    /// `/auth/verify`'s answer per user, built once per snapshot generation.
    pub verify_answers: auth::verify::Answers,
    /// Range external ports of transport services are allocated from.
    pub port_range: (i32, i32),
    /// Base URL of this server as users reach it (links in invites and resets, the login page
    /// `/auth/verify` sends browsers to).
    pub public_url: String,
    /// Container jobs on Proxmox.
    pub jobs: jobs::Jobs,
    /// How long a browser session lasts.
    pub session_ttl: chrono::Duration,
    /// Failed sign-in throttles (per account, per address).
    pub login_throttle: auth::LoginThrottle,
    /// Starts certificate orders (the ACME side, wired by the binary); `None` answers 503.
    pub certificates: Option<Arc<dyn CertificateOrders>>,
    /// Peers whose address headers (`X-Real-IP`, `X-Forwarded-For`) are believed: the edge
    /// NGINX. Anyone else's are removed before a handler sees them, so a client cannot pick the
    /// address its failures are counted against. Requests on the Unix socket are trusted.
    pub trusted_proxies: Vec<ipnetwork::IpNetwork>,
    /// Where the ACME side writes certificates (absolute), the rendered NGINX configuration's
    /// default `cert_dir`; `None` when ACME is off.
    pub cert_dir: Option<String>,
    /// Whether this server obtains certificates (`acme.enabled`).
    pub acme_enabled: bool,
    /// The bearer token `/metrics` answers on the public listeners; `None`: only on the
    /// metrics listener ([`serve_ops`]).
    pub metrics_token: Option<String>,
    /// Job event streams (`/jobs/{id}/events`) open per user.
    pub streams: api::streams::StreamLimit,
    /// Further ports the edge NGINX listens on for HTTP(S) (`http.edge_ports`; 80, 443 and
    /// the public URL's port always count): no transport service may use them (see
    /// [`edge::reserved`]).
    pub edge_ports: Vec<u16>,
}

/// Starts certificate orders. The binary implements it with the ACME crate (protocol crates do
/// not depend on each other).
pub trait CertificateOrders: Send + Sync {
    /// Runs an order for `domain` in the background as job `job`, on the process's
    /// [`jobs::Runner`]: progress lines go to the job, whose status ends `success` or `failure`
    /// (`cancelled` when a shutdown interrupts it).
    fn start(&self, domain: siteward_store::ExternalDomainId, job: siteward_store::JobId);
}

impl Shared {
    /// State with defaults for everything but the store and metrics.
    pub fn new(
        store: Store,
        registry: Arc<prometheus_client::registry::Registry>,
        http_metrics: HttpMetrics,
    ) -> Self {
        Self {
            jobs: jobs::Jobs::new(store.clone(), 2),
            store,
            registry,
            http_metrics,
            readiness: Vec::new(),
            throttle: Default::default(),
            key_cache: Default::default(),
            verify_answers: Default::default(),
            port_range: (2000, 65535),
            public_url: "http://127.0.0.1:8080".into(),
            session_ttl: chrono::Duration::days(7),
            login_throttle: Default::default(),
            certificates: None,
            trusted_proxies: default_trusted_proxies(),
            cert_dir: None,
            acme_enabled: false,
            metrics_token: None,
            streams: api::streams::StreamLimit::new(8),
            edge_ports: Vec::new(),
        }
    }
}

/// Loopback: an edge NGINX on the same machine.
pub fn default_trusted_proxies() -> Vec<ipnetwork::IpNetwork> {
    [
        std::net::IpAddr::from([127, 0, 0, 0]),
        std::net::IpAddr::from(std::net::Ipv6Addr::LOCALHOST),
    ]
    .into_iter()
    .zip([8, 128])
    .filter_map(|(ip, prefix)| ipnetwork::IpNetwork::new(ip, prefix).ok())
    .collect()
}

/// The headers that name the client's address, which only a trusted proxy may set. (The other
/// forwarding headers, `X-Forwarded-Host/-Proto/-Uri`, `X-Original-URL` and
/// `X-Siteward-Service`, only describe the request the sender itself is making, and
/// `/auth/verify` needs them from every edge: it must never lose the service it judges.)
const ADDRESS_HEADERS: [&str; 2] = ["x-real-ip", "x-forwarded-for"];

/// Removes address headers a peer outside [`Shared::trusted_proxies`] sent.
async fn untrusted_forwarding(
    axum::extract::State(state): axum::extract::State<AdminState>,
    mut req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let peer = req
        .extensions()
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map(|c| c.0.ip());
    drop_untrusted_forwarding(&state, peer, req.headers_mut());
    next.run(req).await
}

/// What [`untrusted_forwarding`] does, for routes outside the layers (`/auth/verify`).
pub(crate) fn drop_untrusted_forwarding(
    state: &Shared,
    peer: Option<std::net::IpAddr>,
    h: &mut axum::http::HeaderMap,
) {
    let Some(ip) = peer else {
        return;
    };
    let ip = match ip {
        std::net::IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, std::net::IpAddr::V4),
        v4 => v4,
    };
    if state.trusted_proxies.iter().any(|n| n.contains(ip)) {
        return;
    }
    if h.contains_key(ADDRESS_HEADERS[0]) {
        // Once per process: an edge left out of the setting shows up in the log.
        static WARNED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
        if !WARNED.swap(true, std::sync::atomic::Ordering::Relaxed) {
            tracing::warn!(%ip, "X-Real-IP from a peer outside http.trusted_proxies ignored; if it is the edge NGINX, add it there");
        }
    }
    for name in ADDRESS_HEADERS {
        h.remove(name);
    }
}

/// The router, without a socket.
pub fn app(state: AdminState) -> Router {
    let metrics = state.http_metrics.clone();
    let forwarding = axum::middleware::from_fn_with_state(state.clone(), untrusted_forwarding);
    // `/auth/verify` runs for every request to a protected service: it does what the layers
    // below do for it by itself (address headers, metrics; it has its own time limit) and skips
    // their per-request futures and allocations (bench/auth-profile).
    let verify = Router::new()
        .route("/auth/verify", axum::routing::get(auth::verify::verify))
        .with_state(state.clone());
    let main = Router::new()
        .merge(health::routes())
        .merge(api::router())
        .merge(auth::routes(&state))
        .merge(web::routes(&state))
        // Per-route metrics (the matched path is known inside the route layer).
        .route_layer(axum::middleware::from_fn_with_state(
            metrics,
            metrics::track,
        ))
        .with_state(state)
        .layer(forwarding)
        // Bodies over 1 MiB: extractors answer 413 in the API's error format.
        .layer(axum::extract::DefaultBodyLimit::max(1024 * 1024))
        .layer(tower_http::timeout::TimeoutLayer::with_status_code(
            axum::http::StatusCode::REQUEST_TIMEOUT,
            Duration::from_secs(30),
        ));
    verify.merge(main)
}

/// The operator's router: `/metrics`, `/readyz` with its reasons and `/healthz`, nothing else.
pub fn ops_app(state: AdminState) -> Router {
    health::ops_routes().with_state(state).layer(
        tower_http::timeout::TimeoutLayer::with_status_code(
            axum::http::StatusCode::REQUEST_TIMEOUT,
            Duration::from_secs(30),
        ),
    )
}

/// Serves [`ops_app`] on the metrics listener until `shutdown` is cancelled.
pub async fn serve_ops(
    listener: TcpListener,
    state: AdminState,
    shutdown: CancellationToken,
) -> Result<(), AdminError> {
    axum::serve(listener, ops_app(state).into_make_service())
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await?;
    Ok(())
}

/// Serves [`app`] on a Unix socket (for an NGINX on the same machine) until `shutdown` is
/// cancelled. Requests carry no peer address; the auth pages read the client's address from
/// `X-Real-IP`, which the edge sets.
pub async fn serve_unix(
    listener: tokio::net::UnixListener,
    state: AdminState,
    shutdown: CancellationToken,
) -> Result<(), AdminError> {
    axum::serve(listener, app(state).into_make_service())
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await?;
    Ok(())
}

/// Serves [`app`] on `listener` until `shutdown` is cancelled, then drains open requests.
pub async fn serve(
    listener: TcpListener,
    state: AdminState,
    shutdown: CancellationToken,
) -> Result<(), AdminError> {
    let router = app(state);
    axum::serve(
        listener,
        router.into_make_service_with_connect_info::<std::net::SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown.cancelled_owned())
    .await?;
    Ok(())
}

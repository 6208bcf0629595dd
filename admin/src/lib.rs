//! # siteward-admin
//!
//! The HTTP side of siteward on axum: health (`/healthz`), readiness (`/readyz`), Prometheus
//! metrics (`/metrics`), and (in later modules) the admin API, the login pages and the NGINX
//! `auth_request` endpoint.
//!
//! [`app`] builds the router from an [`AdminState`] with no socket, so tests drive it with
//! `tower::ServiceExt::oneshot`; [`serve`] runs it on a listener the binary bound.

mod health;
pub mod metrics;

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

/// What every handler can reach.
#[derive(Clone)]
pub struct AdminState {
    /// The store and its live snapshot.
    pub store: Store,
    /// Every component's metrics, encoded on `/metrics`.
    pub registry: Arc<prometheus_client::registry::Registry>,
    /// This crate's own request metrics.
    pub http_metrics: HttpMetrics,
    /// Extra readiness checks (for example the embedded database); each returns a reason when
    /// not ready.
    pub readiness: Vec<Arc<dyn Fn() -> Option<String> + Send + Sync>>,
}

/// The router, without a socket.
pub fn app(state: AdminState) -> Router {
    let metrics = state.http_metrics.clone();
    Router::new()
        .merge(health::routes())
        .with_state(state)
        .layer(axum::middleware::from_fn_with_state(
            metrics,
            metrics::track,
        ))
        .layer(tower_http::limit::RequestBodyLimitLayer::new(1024 * 1024))
        .layer(tower_http::timeout::TimeoutLayer::with_status_code(
            axum::http::StatusCode::REQUEST_TIMEOUT,
            Duration::from_secs(30),
        ))
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

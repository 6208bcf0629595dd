//! The HTTPS listener: the same application as the plain listener, behind rustls, with a
//! certificate that is swapped at run time (`siteward_store::tls`). One task and one `tracing`
//! span per connection; a cap on connections; a deadline on the TLS handshake and on request
//! headers; on shutdown, connections finish the request in flight and close.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::http::{HeaderValue, Request};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use siteward_store::tls::Tls;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;
use tracing::Instrument;

use crate::{app, AdminError, AdminState};

/// At most this many HTTPS connections at once; more wait in the kernel's accept queue.
const MAX_CONNECTIONS: usize = 10_000;
/// The TLS handshake must finish within this.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// A request's headers must arrive within this (also the keep-alive idle limit).
const HEADER_TIMEOUT: Duration = Duration::from_secs(30);

/// Serves [`app`] over TLS on `listener` until `shutdown` is cancelled, then lets open
/// connections finish their current request.
pub async fn serve_https(
    listener: TcpListener,
    tls: Arc<Tls>,
    state: AdminState,
    shutdown: CancellationToken,
) -> Result<(), AdminError> {
    let router = app(state);
    let permits = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let connections = TaskTracker::new();
    loop {
        let permit = tokio::select! {
            _ = shutdown.cancelled() => break,
            p = permits.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
        };
        let (tcp, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of descriptors or similar: do not spin.
                    tracing::warn!(error = %e, "HTTPS accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let span = tracing::info_span!("https", %peer);
        let (acceptor, router, shutdown) =
            (tls.acceptor().clone(), router.clone(), shutdown.clone());
        connections.spawn(
            async move {
                let _permit = permit;
                let stream =
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                        Ok(Ok(s)) => s,
                        Ok(Err(e)) => {
                            tracing::debug!(error = %e, "TLS handshake failed");
                            return;
                        }
                        Err(_) => {
                            tracing::debug!("TLS handshake timed out");
                            return;
                        }
                    };
                let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                    let mut req = req.map(axum::body::Body::new);
                    req.extensions_mut().insert(ConnectInfo::<SocketAddr>(peer));
                    // Whatever the client claims, it reached us over HTTPS (sign-in cookies
                    // get `Secure`). Address headers are judged like on every listener.
                    req.headers_mut()
                        .insert("x-forwarded-proto", HeaderValue::from_static("https"));
                    router.clone().oneshot(req)
                });
                let conn = hyper::server::conn::http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(HEADER_TIMEOUT)
                    .serve_connection(TokioIo::new(stream), service)
                    .with_upgrades();
                let mut conn = std::pin::pin!(conn);
                let result = tokio::select! {
                    r = conn.as_mut() => r,
                    _ = shutdown.cancelled() => {
                        conn.as_mut().graceful_shutdown();
                        conn.await
                    }
                };
                if let Err(e) = result {
                    tracing::debug!(error = %e, "HTTPS connection ended with an error");
                }
            }
            .instrument(span),
        );
    }
    connections.close();
    connections.wait().await;
    Ok(())
}

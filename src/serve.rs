//! `siteward serve`: bind every listener, start the change feed and the protocol servers, and
//! shut everything down in order on SIGTERM or SIGINT.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::{TcpListener, UdpSocket};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::{Config, Listen};
use crate::db::{self, Role};

/// How long in-flight work may take to drain after a shutdown signal.
const DRAIN: Duration = Duration::from_secs(6);

async fn bind_tcp(listen: Listen, name: &str) -> anyhow::Result<Option<TcpListener>> {
    match listen.addr() {
        None => Ok(None),
        Some(addr) => TcpListener::bind(addr)
            .await
            .map(Some)
            .with_context(|| format!("cannot listen for {name} on {addr}")),
    }
}

/// UDP and TCP on the same port (for port 0, the port UDP got).
async fn bind_dns(listen: Listen) -> anyhow::Result<Option<(UdpSocket, TcpListener)>> {
    let Some(addr) = listen.addr() else {
        return Ok(None);
    };
    let mut last = None;
    for _ in 0..20 {
        let udp = UdpSocket::bind(addr)
            .await
            .with_context(|| format!("cannot listen for DNS on udp/{addr}"))?;
        let port = udp.local_addr()?.port();
        match TcpListener::bind(SocketAddr::new(addr.ip(), port)).await {
            Ok(tcp) => return Ok(Some((udp, tcp))),
            // With port 0, the TCP port may be taken: try another pair.
            Err(e) if addr.port() == 0 => last = Some(e),
            Err(e) => {
                return Err(e).with_context(|| format!("cannot listen for DNS on tcp/{addr}"))
            }
        }
    }
    Err(last
        .map(anyhow::Error::from)
        .unwrap_or_else(|| anyhow::anyhow!("no free port")))
    .context("cannot find a free port for DNS on both UDP and TCP")
}

fn show(addr: Option<SocketAddr>) -> String {
    addr.map(|a| a.to_string()).unwrap_or_else(|| "off".into())
}

async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot install the SIGTERM handler");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        _ = term => tracing::info!("SIGTERM received; shutting down"),
        r = tokio::signal::ctrl_c() => match r {
            Ok(()) => tracing::info!("SIGINT received; shutting down"),
            Err(e) => {
                tracing::error!(error = %e, "cannot install the SIGINT handler");
                std::future::pending::<()>().await;
            }
        },
    }
}

/// The LDAP server's state from configuration. TLS material that cannot be loaded or generated
/// disables StartTLS (logged) unless an LDAPS listener needs it.
fn ldap_server(
    config: &Config,
    store: siteward_store::Store,
    metrics: siteward_ldap::Metrics,
) -> anyhow::Result<siteward_ldap::LdapServer> {
    let c = &config.ldap;
    let tls = siteward_ldap::TlsFiles::configured_or_self_signed(
        c.tls_cert.clone(),
        c.tls_key.clone(),
        &config.data_dir,
        &["localhost".into(), "127.0.0.1".into(), "::1".into()],
    )
    .and_then(siteward_ldap::Tls::new);
    let tls = match tls {
        Ok(t) => Some(Arc::new(t)),
        Err(e) => {
            tracing::error!(error = %e, "LDAP TLS is unavailable");
            None
        }
    };
    let settings = siteward_ldap::Settings {
        base_dn: c.base_dn.clone(),
        anonymous: match c.anonymous {
            crate::config::Anonymous::Read => siteward_ldap::AnonymousAccess::Read,
            crate::config::Anonymous::Deny => siteward_ldap::AnonymousAccess::Deny,
        },
        service_group: c.service_group.clone(),
        mail_visible_to_users: c.mail_visible_to_users,
        size_limit: c.size_limit,
        time_limit: Duration::from_secs(c.time_limit_seconds),
        max_message_bytes: c.max_message_bytes,
        max_connections: c.max_connections,
        idle_timeout: Duration::from_secs(c.idle_timeout_seconds),
        request_timeout: Duration::from_secs(c.request_timeout_seconds),
        ..siteward_ldap::Settings::default()
    };
    siteward_ldap::LdapServer::new(store, settings, tls, metrics)
        .context("cannot start the LDAP server")
}

/// Runs the server until a signal arrives.
pub async fn run(config: Config) -> anyhow::Result<()> {
    // Bind first: a port that is taken is a configuration error worth failing on at once.
    let http = bind_tcp(config.http.listen, "HTTP").await?;
    let ldap = bind_tcp(config.ldap.listen, "LDAP").await?;
    let ldaps = bind_tcp(config.ldap.ldaps_listen, "LDAPS").await?;
    let dns = bind_dns(config.dns.listen).await?;

    let database = db::open(&config, Role::Server).await?;
    let store = database.store.clone();

    tracing::info!(
        http = %show(http.as_ref().and_then(|l| l.local_addr().ok())),
        ldap = %show(ldap.as_ref().and_then(|l| l.local_addr().ok())),
        ldaps = %show(ldaps.as_ref().and_then(|l| l.local_addr().ok())),
        dns = %show(dns.as_ref().and_then(|(u, _)| u.local_addr().ok())),
        "listening"
    );

    let shutdown = CancellationToken::new();
    let tracker = TaskTracker::new();

    let jobs = siteward_admin::jobs::Jobs::new(store.clone(), 2);

    // Migrations, then the change feed, then jobs interrupted by a previous stop are reconciled
    // with Proxmox. While the database is unreachable the process stays up and /readyz says why.
    {
        let store = store.clone();
        let jobs = jobs.clone();
        let shutdown = shutdown.clone();
        let feed_tracker = tracker.clone();
        tracker.spawn(async move {
            let mut delay = Duration::from_millis(200);
            loop {
                match store.migrate().await {
                    Ok(()) => break,
                    Err(e) => {
                        tracing::warn!(error = %e, "database migrations could not run yet; retrying");
                    }
                }
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(delay) => {}
                }
                delay = (delay * 2).min(Duration::from_secs(5));
            }
            store.spawn_change_feed(&feed_tracker, shutdown);
            jobs.reconcile().await;
        });
    }

    // Expired invites, reset tokens and sessions go away on their own.
    {
        let store = store.clone();
        let shutdown = shutdown.clone();
        tracker.spawn(async move {
            let mut every = tokio::time::interval(Duration::from_secs(600));
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = every.tick() => {}
                }
                match store.cleanup_tokens(chrono::Utc::now()).await {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(removed = n, "expired tokens and sessions removed"),
                    Err(e) => tracing::warn!(error = %e, "token cleanup failed; retrying later"),
                }
            }
        });
    }

    let mut registry = prometheus_client::registry::Registry::default();
    let http_metrics = siteward_admin::HttpMetrics::register(&mut registry);
    let ldap_metrics = siteward_ldap::Metrics::register(&mut registry);
    let dns_metrics = siteward_dns::Metrics::register(&mut registry);
    let registry = Arc::new(registry);

    if let Some(listener) = http {
        let mut state =
            siteward_admin::AdminState::new(store.clone(), registry.clone(), http_metrics);
        state.port_range = config.http.transport_port_range;
        state.jobs = jobs.clone();
        state.public_url = config.http.public_url.clone().unwrap_or_else(|| {
            format!(
                "http://{}",
                listener
                    .local_addr()
                    .map(|a| a.to_string())
                    .unwrap_or_default()
            )
        });
        let shutdown = shutdown.clone();
        tracker.spawn(async move {
            if let Err(e) = siteward_admin::serve(listener, state, shutdown).await {
                tracing::error!(error = %e, "HTTP server failed");
            }
        });
    }
    if ldap.is_some() || ldaps.is_some() {
        let server = Arc::new(ldap_server(&config, store.clone(), ldap_metrics)?);
        if ldaps.is_some() && !server.tls_available() {
            anyhow::bail!("ldap.ldaps_listen is set but no TLS certificate could be loaded");
        }
        if let Some(tls) = server.tls().cloned() {
            let shutdown = shutdown.clone();
            let every = Duration::from_secs(config.ldap.tls_reload_seconds);
            tracker.spawn(async move {
                loop {
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        _ = tokio::time::sleep(every) => {}
                    }
                    if let Err(e) = tls.reload_if_changed() {
                        tracing::error!(error = %e, "the LDAP certificate could not be reloaded; keeping the current one");
                    }
                }
            });
        }
        if let Some(listener) = ldap {
            let (server, shutdown) = (server.clone(), shutdown.clone());
            tracker.spawn(async move {
                if let Err(e) = siteward_ldap::serve(listener, server, shutdown).await {
                    tracing::error!(error = %e, "LDAP server failed");
                }
            });
        }
        if let Some(listener) = ldaps {
            let (server, shutdown) = (server.clone(), shutdown.clone());
            tracker.spawn(async move {
                if let Err(e) = siteward_ldap::serve_ldaps(listener, server, shutdown).await {
                    tracing::error!(error = %e, "LDAPS server failed");
                }
            });
        }
    }
    if let Some((udp, tcp)) = dns {
        let state = siteward_dns::DnsState {
            store: store.clone(),
            settings: Arc::new(config.dns.settings()),
            metrics: dns_metrics,
        };
        let shutdown = shutdown.clone();
        tracker.spawn(async move {
            if let Err(e) = siteward_dns::serve(udp, tcp, state, shutdown).await {
                tracing::error!(error = %e, "DNS server failed");
            }
        });
    }

    shutdown_signal().await;
    shutdown.cancel();
    tracker.close();
    if tokio::time::timeout(DRAIN, tracker.wait()).await.is_err() {
        tracing::warn!("some connections did not finish within {DRAIN:?}; closing them");
    }
    database.close().await;
    tracing::info!("stopped");
    Ok(())
}

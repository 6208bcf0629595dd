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
/// How long a running job may still take after a shutdown signal: less than [`DRAIN`], so what
/// is left of it is recorded before the pool closes.
const JOB_GRACE: Duration = Duration::from_secs(4);
/// Container jobs at a time.
const CONTAINER_JOBS: usize = 2;
/// Certificate orders at a time (each domain's orders are one at a time anyway).
const CERTIFICATE_JOBS: usize = 4;

async fn bind_tcp(listen: Listen, name: &str) -> anyhow::Result<Option<TcpListener>> {
    match listen.addr() {
        None => Ok(None),
        Some(addr) => TcpListener::bind(addr)
            .await
            .map(Some)
            .with_context(|| format!("cannot listen for {name} on {addr}")),
    }
}

/// UDP and TCP on the same port (for port 0, the port TCP got). TCP is bound first and without
/// `SO_REUSEPORT`: it is what keeps a second server (or a port-0 bind of another one) off the
/// port, since the UDP socket allows the per-worker sockets of `siteward_dns::serve` to join.
async fn bind_dns(listen: Listen) -> anyhow::Result<Option<(UdpSocket, TcpListener)>> {
    let Some(addr) = listen.addr() else {
        return Ok(None);
    };
    let mut last = None;
    for _ in 0..20 {
        let tcp = TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen for DNS on tcp/{addr}"))?;
        let port = tcp.local_addr()?.port();
        let udp = siteward_dns::bind_udp(SocketAddr::new(addr.ip(), port)).and_then(|s| {
            s.set_nonblocking(true)?;
            UdpSocket::from_std(s)
        });
        match udp {
            Ok(udp) => return Ok(Some((udp, tcp))),
            // With port 0, the UDP port may be taken: try another pair.
            Err(e) if addr.port() == 0 => last = Some(e),
            Err(e) => {
                return Err(e).with_context(|| format!("cannot listen for DNS on udp/{addr}"))
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
        "ldap",
        "ldap.tls",
        &["localhost".into(), "127.0.0.1".into(), "::1".into()],
    )
    .and_then(|files| siteward_ldap::Tls::new(files, "LDAP", &[]));
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
        max_filter_terms: c.max_filter_terms,
        search_work_limit: c.search_work_limit,
        search_threads: match c.search_threads {
            0 => siteward_ldap::default_search_threads(),
            n => n,
        },
        bind_limits: siteward_ldap::throttle::Limits {
            per_account: c.bind_failures_per_account,
            per_address: c.bind_failures_per_address,
            window: Duration::from_secs(c.bind_failure_window_seconds),
        },
        ..siteward_ldap::Settings::default()
    };
    siteward_ldap::LdapServer::new(store, settings, tls, metrics)
        .context("cannot start the LDAP server")
}

/// The ACME side's settings from configuration.
pub fn acme_settings(config: &Config) -> siteward_acme::Settings {
    siteward_acme::Settings {
        default_directory: config.acme.directory.clone(),
        ca_root: config.acme.ca_root.clone(),
        cert_dir: config
            .acme
            .cert_dir
            .clone()
            .unwrap_or_else(|| config.data_dir.join("certs")),
        hook: config.acme.hook.clone(),
        order_timeout: Duration::from_secs(config.acme.order_timeout_seconds),
        check_interval: Duration::from_secs(config.acme.check_interval_seconds),
        own_dns: None,
        propagation_timeout: Duration::from_secs(config.acme.propagation_timeout_seconds),
        cloudflare_api: config.acme.cloudflare_api.clone(),
        nameservers: config.acme.nameservers.clone(),
    }
}

/// Certificate orders from the API, run as jobs on the process's job runner.
struct AcmeOrders {
    acme: siteward_acme::Acme,
    runner: siteward_admin::jobs::Runner,
}

impl siteward_admin::CertificateOrders for AcmeOrders {
    fn start(&self, domain: siteward_store::ExternalDomainId, job: siteward_store::JobId) {
        let spec = siteward_admin::jobs::Job::new(job, "certificate");
        self.runner
            .spawn(spec, certificate_job(self.acme.clone(), domain, job));
    }
}

/// One certificate order as a job: its progress lines in order (written while the order runs),
/// then its outcome for the runner. Dropped by a shutdown, the order leaves its challenge
/// records noted, and the domain's next order withdraws them.
async fn certificate_job(
    acme: siteward_acme::Acme,
    domain: siteward_store::ExternalDomainId,
    job: siteward_store::JobId,
) -> Result<(), siteward_admin::jobs::JobError> {
    let store = acme.store().clone();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    let progress = move |line: &str| {
        if tx.send(line.to_owned()).is_err() {
            tracing::error!(
                line,
                "a progress line arrived after the job's writer stopped"
            );
        }
    };
    let order = async move {
        let result = acme.issue(domain, chrono::Utc::now(), &progress).await;
        drop(progress);
        result
    };
    let writer = async {
        while let Some(line) = rx.recv().await {
            if let Err(e) = store.job_log(job, &line).await {
                tracing::error!(error = %e, "recording job progress failed");
            }
        }
    };
    let (result, ()) = tokio::join!(order, writer);
    result.map(drop).map_err(|e| {
        // Failures inside the order are already in its progress lines; these happen before
        // it or after it.
        let reported = !matches!(
            e,
            siteward_acme::Error::Busy(_)
                | siteward_acme::Error::Invalid(_)
                | siteward_acme::Error::Store(_)
        );
        siteward_admin::jobs::JobError::Certificate {
            message: e.to_string(),
            reported,
        }
    })
}

/// The HTTPS listener's certificate: configured, or self-signed in the data directory.
fn https_tls(config: &Config) -> anyhow::Result<siteward_store::tls::Tls> {
    let files = siteward_store::tls::TlsFiles::configured_or_self_signed(
        config.http.tls_cert.clone(),
        config.http.tls_key.clone(),
        &config.data_dir,
        "http",
        "http.tls",
        &["localhost".into(), "127.0.0.1".into(), "::1".into()],
    )?;
    Ok(siteward_store::tls::Tls::new(
        files,
        "HTTPS",
        &[b"http/1.1"],
    )?)
}

/// Binds the HTTP Unix socket: a stale socket file from an earlier run is replaced, anything
/// else at the path is an error. Whoever can connect may set `X-Real-IP`, so the socket gets
/// `http.unix_socket_mode` (0660) and, when set, `http.unix_socket_group` (the edge's group).
fn bind_unix(
    path: &std::path::Path,
    mode: u32,
    group: Option<&str>,
) -> anyhow::Result<tokio::net::UnixListener> {
    use std::os::unix::fs::{FileTypeExt, PermissionsExt};
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if !meta.file_type().is_socket() {
            anyhow::bail!(
                "http.unix_socket: {} exists and is not a socket; remove it or choose another path",
                path.display()
            );
        }
        std::fs::remove_file(path)
            .with_context(|| format!("http.unix_socket: cannot replace {}", path.display()))?;
    }
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("http.unix_socket: cannot create {}", dir.display()))?;
    }
    let gid = match group {
        None => None,
        Some(name) => Some(
            nix::unistd::Group::from_name(name)
                .with_context(|| format!("http.unix_socket_group: cannot look up group {name}"))?
                .with_context(|| format!("http.unix_socket_group: no group named {name}"))?
                .gid,
        ),
    };
    // Created with no permissions for anyone else, so no other user can connect in the moment
    // before the mode is set.
    let listener = {
        let old = nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o177));
        let bound = tokio::net::UnixListener::bind(path);
        nix::sys::stat::umask(old);
        bound.with_context(|| format!("http.unix_socket: cannot listen on {}", path.display()))?
    };
    if let Some(gid) = gid {
        nix::unistd::chown(path, None, Some(gid)).with_context(|| {
            format!(
                "http.unix_socket_group: cannot give {} to group {}",
                path.display(),
                group.unwrap_or_default()
            )
        })?;
    }
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).with_context(|| {
        format!(
            "http.unix_socket_mode: cannot set the mode of {}",
            path.display()
        )
    })?;
    Ok(listener)
}

/// Runs the server until a signal arrives.
pub async fn run(config: Config) -> anyhow::Result<()> {
    // Bind first: a port that is taken is a configuration error worth failing on at once.
    let http = bind_tcp(config.http.listen, "HTTP").await?;
    let https = bind_tcp(config.http.tls_listen, "HTTPS").await?;
    let ldap = bind_tcp(config.ldap.listen, "LDAP").await?;
    let ldaps = bind_tcp(config.ldap.ldaps_listen, "LDAPS").await?;
    let dns = bind_dns(config.dns.listen).await?;
    let metrics = bind_tcp(config.http.metrics_listen, "metrics").await?;
    let http_unix = match &config.http.unix_socket {
        Some(path) => Some(bind_unix(
            path,
            config.http.unix_socket_mode,
            config.http.unix_socket_group.as_deref(),
        )?),
        None => None,
    };

    let database = db::open(&config, Role::Server).await?;
    let store = database.store.clone();

    tracing::info!(
        http = %show(http.as_ref().and_then(|l| l.local_addr().ok())),
        https = %show(https.as_ref().and_then(|l| l.local_addr().ok())),
        ldap = %show(ldap.as_ref().and_then(|l| l.local_addr().ok())),
        ldaps = %show(ldaps.as_ref().and_then(|l| l.local_addr().ok())),
        dns = %show(dns.as_ref().and_then(|(u, _)| u.local_addr().ok())),
        metrics = %show(metrics.as_ref().and_then(|l| l.local_addr().ok())),
        "listening"
    );

    let shutdown = CancellationToken::new();
    let tracker = TaskTracker::new();

    // Every job (containers, certificates) runs on this runner, on the process's tracker:
    // shutdown waits for them (see `siteward_admin::jobs::runner`).
    let runner = siteward_admin::jobs::Runner::new(
        store.clone(),
        CONTAINER_JOBS,
        tracker.clone(),
        shutdown.clone(),
        JOB_GRACE,
    );
    let jobs = siteward_admin::jobs::Jobs::on(runner.clone());
    // Cancelled once the migrations ran: background work on tables waits for it.
    let migrated = CancellationToken::new();

    // Migrations, then the change feed, then jobs interrupted by a previous stop are reconciled
    // with Proxmox. While the database is unreachable the process stays up and /readyz says why.
    {
        let store = store.clone();
        let jobs = jobs.clone();
        let shutdown = shutdown.clone();
        let feed_tracker = tracker.clone();
        let migrated = migrated.clone();
        let reserved_names = config.dns.reserved_names();
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
            // The name servers' own names are reserved in every zone (migration 0012).
            match store.reserve_dns_names(&reserved_names).await {
                Ok(taken) => {
                    for (site, name) in taken {
                        tracing::warn!(site = site.0, %name,
                            "name server name is held by another record in this site's zone; rename it");
                    }
                }
                Err(e) => tracing::warn!(error = %e, "name server names could not be reserved"),
            }
            migrated.cancel();
            store.spawn_change_feed(&feed_tracker, shutdown);
            jobs.reconcile().await;
        });
    }

    // Expired invites, reset tokens, sessions and never-approved accounts go away on their own.
    {
        let pending_days = config.http.pending_account_days.clamp(1, 3650);
        let store = store.clone();
        let shutdown = shutdown.clone();
        let migrated = migrated.clone();
        tracker.spawn(async move {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = migrated.cancelled() => {}
            }
            let mut every = tokio::time::interval(Duration::from_secs(600));
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = every.tick() => {}
                }
                let now = chrono::Utc::now();
                match store.cleanup_tokens(now).await {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(removed = n, "expired tokens and sessions removed"),
                    Err(e) => tracing::warn!(error = %e, "token cleanup failed; retrying later"),
                }
                let before = now - chrono::Duration::days(i64::from(pending_days));
                match store.expire_pending_accounts(before).await {
                    Ok(gone) if gone.is_empty() => {}
                    Ok(gone) => tracing::info!(
                        removed = gone.len(),
                        accounts = %gone.join(","),
                        days = pending_days,
                        "self-registered accounts nobody approved were deleted"
                    ),
                    Err(e) => tracing::warn!(error = %e, "expiring pending accounts failed; retrying later"),
                }
            }
        });
    }

    let mut registry = prometheus_client::registry::Registry::default();
    let http_metrics = siteward_admin::HttpMetrics::register(&mut registry);
    let ldap_metrics = siteward_ldap::Metrics::register(&mut registry);
    let dns_metrics = siteward_dns::Metrics::register(&mut registry);
    let registry = Arc::new(registry);

    let mut settings = acme_settings(&config);
    // Confirm our own zones' challenge records at our own DNS listener (as the CA will ask it).
    settings.own_dns = dns
        .as_ref()
        .and_then(|(u, _)| u.local_addr().ok())
        .map(|mut a| {
            if a.ip().is_unspecified() {
                a.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
            }
            a
        });
    let acme = siteward_acme::Acme::new(store.clone(), settings);
    if config.acme.enabled {
        let (acme, shutdown, migrated) = (acme.clone(), shutdown.clone(), migrated.clone());
        tracker.spawn(async move {
            tokio::select! {
                _ = shutdown.cancelled() => {}
                _ = migrated.cancelled() => acme.run(shutdown).await,
            }
        });
    }
    if http.is_some() || https.is_some() || http_unix.is_some() || metrics.is_some() {
        let mut state = siteward_admin::Shared::new(store.clone(), registry.clone(), http_metrics);
        state.port_range = config.http.transport_port_range;
        state.metrics_token = config.http.metrics_token.clone().filter(|t| !t.is_empty());
        state.login_throttle = siteward_admin::auth::LoginThrottle::with_registrations(
            config.http.registrations_per_hour.clamp(1, 10_000),
        );
        state.trusted_proxies = config.http.trusted_proxies.clone();
        // NGINX on this machine finds the certificates where the ACME side writes them (when
        // it runs, and when the path can be written into an NGINX configuration).
        state.acme_enabled = config.acme.enabled;
        state.cert_dir = std::path::absolute(&acme.settings().cert_dir)
            .ok()
            .map(|p| p.display().to_string())
            .filter(|p| {
                config.acme.enabled && siteward_admin::edge::nginx::safe_path("cert_dir", p).is_ok()
            });
        state.jobs = jobs.clone();
        state.session_ttl =
            chrono::Duration::hours(i64::from(config.http.session_ttl_hours.clamp(1, 8760)));
        // Links in mails and the login page default to the first listener users can reach.
        let first = https
            .as_ref()
            .map(|l| ("https", l))
            .or(http.as_ref().map(|l| ("http", l)));
        state.public_url = config
            .http
            .public_url
            .clone()
            .unwrap_or_else(|| match first {
                Some((scheme, l)) => format!(
                    "{scheme}://{}",
                    l.local_addr().map(|a| a.to_string()).unwrap_or_default()
                ),
                None => "http://localhost".into(),
            });
        state.certificates = Some(Arc::new(AcmeOrders {
            acme: acme.clone(),
            // Their own permits: an order may wait minutes for DNS propagation.
            runner: runner.with_concurrency(CERTIFICATE_JOBS),
        }));
        state.edge_ports = config.http.edge_ports.clone();
        let state: siteward_admin::AdminState = state.into();
        // The sign-in host's label and the edge's ports go into the database, whose triggers
        // then refuse services on them even when written with plain SQL.
        {
            let (state, shutdown, migrated) = (state.clone(), shutdown.clone(), migrated.clone());
            tracker.spawn(async move {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = migrated.cancelled() => {}
                }
                let r = siteward_admin::edge::reserved::reservations(
                    &state.public_url,
                    &state.edge_ports,
                );
                let mut delay = Duration::from_millis(200);
                loop {
                    match state.store.reserve_edge(&r.labels, &r.ports).await {
                        Ok(()) => break,
                        Err(e) => tracing::warn!(error = %e, "reserving the edge's names failed; retrying"),
                    }
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        _ = tokio::time::sleep(delay) => {}
                    }
                    delay = (delay * 2).min(Duration::from_secs(5));
                }
            });
        }
        if let Some(listener) = https {
            let tls = Arc::new(https_tls(&config)?);
            let every = Duration::from_secs(config.http.tls_reload_seconds);
            tracker.spawn(tls.clone().watch(every, shutdown.clone()));
            let (state, shutdown) = (state.clone(), shutdown.clone());
            tracker.spawn(async move {
                if let Err(e) =
                    siteward_admin::https::serve_https(listener, tls, state, shutdown).await
                {
                    tracing::error!(error = %e, "HTTPS server failed");
                }
            });
        }
        if let Some(unix) = http_unix {
            let (state, shutdown) = (state.clone(), shutdown.clone());
            tracker.spawn(async move {
                if let Err(e) = siteward_admin::serve_unix(unix, state, shutdown).await {
                    tracing::error!(error = %e, "HTTP server on the Unix socket failed");
                }
            });
        }
        if let Some(listener) = metrics {
            let (state, shutdown) = (state.clone(), shutdown.clone());
            tracker.spawn(async move {
                if let Err(e) = siteward_admin::serve_ops(listener, state, shutdown).await {
                    tracing::error!(error = %e, "metrics listener failed");
                }
            });
        }
        if let Some(listener) = http {
            let shutdown = shutdown.clone();
            tracker.spawn(async move {
                if let Err(e) = siteward_admin::serve(listener, state, shutdown).await {
                    tracing::error!(error = %e, "HTTP server failed");
                }
            });
        }
    }
    if ldap.is_some() || ldaps.is_some() {
        let server = Arc::new(ldap_server(&config, store.clone(), ldap_metrics)?);
        if ldaps.is_some() && !server.tls_available() {
            anyhow::bail!("ldap.ldaps_listen is set but no TLS certificate could be loaded");
        }
        if let Some(tls) = server.tls().cloned() {
            let every = Duration::from_secs(config.ldap.tls_reload_seconds);
            tracker.spawn(tls.watch(every, shutdown.clone()));
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The UDP side allows the per-worker sockets to join the port; the TCP side keeps a second
    /// server off it, on a fixed port and on port 0 alike.
    #[tokio::test]
    async fn a_second_server_cannot_take_the_dns_port() -> anyhow::Result<()> {
        let any = SocketAddr::from(([127, 0, 0, 1], 0));
        let Some((udp, tcp)) = bind_dns(Listen::On(any)).await? else {
            anyhow::bail!("DNS was not bound");
        };
        let port = udp.local_addr()?.port();
        assert_eq!(tcp.local_addr()?.port(), port);
        let same = SocketAddr::from(([127, 0, 0, 1], port));
        assert!(bind_dns(Listen::On(same)).await.is_err());
        for _ in 0..50 {
            if let Some((u, t)) = bind_dns(Listen::On(any)).await? {
                assert_ne!(u.local_addr()?.port(), port);
                assert_eq!(u.local_addr()?.port(), t.local_addr()?.port());
            }
        }
        // A worker's socket joins the port.
        let worker = siteward_dns::bind_udp(same)?;
        assert_eq!(worker.local_addr()?, same);
        Ok(())
    }
}

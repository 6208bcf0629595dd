//! # siteward-acme
//!
//! Obtains and renews the TLS certificate of every external domain with ACME (RFC 8555) through
//! `instant-acme` on the ring provider. Depends on `siteward-store` only; the binary wires it to
//! the API (orders as jobs) and runs [`Acme::run`].
//!
//! ## Layout
//! - [`Acme::issue`]: one order, end to end: account (created once per directory and kept,
//!   encrypted), challenges through a [`solver`], CSR and key, finalization, storage, files
//!   ([`files`]), hook; every challenge record it published is withdrawn, also on failure.
//! - [`Acme::renew_due`]: one scheduler pass at an explicit `now` (tests control the clock);
//!   [`Acme::run`] calls it periodically.
//! - [`schedule`]: when a certificate is due, backoff after failures (pure functions).
//!
//! Architecture Invariant: at most one order per domain at a time across every siteward process
//! sharing the database: an order runs under a PostgreSQL advisory lock on the domain, and
//! re-reads the renewal state after taking it.

pub mod cloudflare;
pub mod files;
pub mod propagation;
pub mod schedule;
pub mod solver;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use instant_acme::{
    Account, AccountCredentials, AuthorizationStatus, CertificateIdentifier, Identifier,
    NewAccount, NewOrder, OrderStatus, RetryPolicy,
};
use propagation::NameServer;
use siteward_store::acme::{CertificateInfo, IssuedCertificate, OrderLock};
use siteward_store::{ExternalDomain, ExternalDomainId, Store};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

/// Let's Encrypt's production directory, the default.
pub const LETS_ENCRYPT: &str = "https://acme-v02.api.letsencrypt.org/directory";

/// Errors, in the operator's terms.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The database failed.
    #[error("database: {0}")]
    Store(#[from] siteward_store::StoreError),
    /// Another order for this domain runs (here or in another siteward process).
    #[error("another order for {0} is in progress")]
    Busy(String),
    /// The CA refused or failed something.
    #[error("{0}")]
    Ca(String),
    /// A challenge could not be set up or was not visible.
    #[error("{0}")]
    Challenge(String),
    /// Files or the hook.
    #[error("{0}")]
    Install(String),
    /// Nothing to do (not managed, unknown domain).
    #[error("{0}")]
    Invalid(String),
    /// The CA or Cloudflare refuses more requests for now.
    #[error("{message}")]
    RateLimited {
        /// What happened, with the time when it is known.
        message: String,
        /// No attempt before this, when the other side said.
        until: Option<DateTime<Utc>>,
    },
}

impl From<cloudflare::CloudflareError> for Error {
    fn from(e: cloudflare::CloudflareError) -> Self {
        match e {
            cloudflare::CloudflareError::RateLimited { until } => Error::RateLimited {
                message: e.to_string(),
                until: Some(until),
            },
            other => Error::Challenge(other.to_string()),
        }
    }
}

/// The time in a rate-limit message such as Let's Encrypt's `... retry after 2026-11-23
/// 10:00:00 UTC: see https://...`.
fn retry_after_in(detail: &str) -> Option<DateTime<Utc>> {
    let lower = detail.to_ascii_lowercase();
    let at = lower.find("retry after ")? + "retry after ".len();
    let text = detail.get(at..)?;
    let stamp = text.get(..19)?;
    let rest = text.get(19..).unwrap_or("");
    if !rest.trim_start().to_ascii_uppercase().starts_with("UTC") {
        return None;
    }
    chrono::NaiveDateTime::parse_from_str(stamp, "%Y-%m-%d %H:%M:%S")
        .ok()
        .map(|t| t.and_utc())
}

/// Describes an instant-acme error the way an operator needs it.
fn ca_error(context: &str, e: instant_acme::Error) -> Error {
    let text = match &e {
        instant_acme::Error::Api(p) => {
            let kind = p
                .r#type
                .as_deref()
                .map(|t| t.trim_start_matches("urn:ietf:params:acme:error:"))
                .unwrap_or("error");
            let detail = p.detail.as_deref().unwrap_or("");
            let subs: Vec<String> = p
                .subproblems
                .iter()
                .map(|s| {
                    format!(
                        "{}: {}",
                        s.identifier
                            .as_ref()
                            .map(|i| format!("{i:?}"))
                            .unwrap_or_default(),
                        s.detail.as_deref().unwrap_or("")
                    )
                })
                .collect();
            if kind == "rateLimited" {
                let until = retry_after_in(detail);
                let message = match until {
                    Some(t) => format!("{context}: rate limited by the CA until {t}: {detail}"),
                    None => format!("{context}: rate limited by the CA: {detail}"),
                };
                return Error::RateLimited { message, until };
            } else if subs.is_empty() {
                format!("the CA answered {kind}: {detail}")
            } else {
                format!("the CA answered {kind}: {detail} ({})", subs.join("; "))
            }
        }
        instant_acme::Error::Timeout(_) => "the CA did not finish in time".to_owned(),
        other => other.to_string(),
    };
    Error::Ca(format!("{context}: {text}"))
}

/// How the ACME side runs.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Directory used when a domain names none.
    pub default_directory: String,
    /// Extra trusted root (PEM) for the CA's HTTPS (private CAs such as Pebble).
    pub ca_root: Option<PathBuf>,
    /// Where certificates are written: `<cert_dir>/<domain>/fullchain.pem` and `privkey.pem`.
    pub cert_dir: PathBuf,
    /// Command run (`sh -c`) after new files are written, e.g. `systemctl reload nginx`.
    pub hook: Option<String>,
    /// How long an order may take from placing to the certificate.
    pub order_timeout: Duration,
    /// How often the scheduler looks for due certificates.
    pub check_interval: Duration,
    /// Our own DNS listener: a TXT record put into one of our zones is confirmed there before
    /// the CA is told (the zone index is rebuilt asynchronously).
    pub own_dns: Option<std::net::SocketAddr>,
    /// How long a challenge record may take to become visible.
    pub propagation_timeout: Duration,
    /// Cloudflare's API root.
    pub cloudflare_api: String,
    /// Name servers to confirm Cloudflare challenge records at, instead of the zone's own
    /// (split DNS, tests).
    pub nameservers: Vec<std::net::SocketAddr>,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            default_directory: LETS_ENCRYPT.into(),
            ca_root: None,
            cert_dir: PathBuf::from("/etc/siteward/certs"),
            hook: None,
            order_timeout: Duration::from_secs(120),
            check_interval: Duration::from_secs(3600),
            own_dns: None,
            propagation_timeout: Duration::from_secs(120),
            cloudflare_api: cloudflare::API.into(),
            nameservers: Vec::new(),
        }
    }
}

/// The ACME side.
#[derive(Clone, Debug)]
pub struct Acme {
    store: Store,
    settings: Arc<Settings>,
}

/// What happened to one domain in a scheduler pass.
#[derive(Debug)]
pub enum Outcome {
    /// A certificate was issued.
    Issued(String),
    /// The order failed (recorded with backoff).
    Failed(String),
    /// Another process was ordering it.
    Busy,
}

impl Acme {
    /// The ACME side on `store`.
    pub fn new(store: Store, settings: Settings) -> Self {
        Self {
            store,
            settings: Arc::new(settings),
        }
    }

    /// The store it works on.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The settings in use.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    fn domain(&self, id: ExternalDomainId) -> Result<ExternalDomain, Error> {
        self.store
            .snapshot()
            .naming
            .external_domains
            .iter()
            .find(|d| d.id == id)
            .map(|d| ExternalDomain::clone(d))
            .ok_or_else(|| Error::Invalid(format!("external domain {} not found", id.0)))
    }

    /// The external domain named `name`.
    pub fn domain_by_name(&self, name: &str) -> Result<ExternalDomain, Error> {
        let name = name.trim_end_matches('.');
        self.store
            .snapshot()
            .naming
            .external_domains
            .iter()
            .find(|d| d.domain.eq_ignore_ascii_case(name))
            .map(|d| ExternalDomain::clone(d))
            .ok_or_else(|| Error::Invalid(format!("no external domain named {name}")))
    }

    /// Orders a certificate for the domain now (whatever its renewal state), reporting each step
    /// to `progress`. Fails with [`Error::Busy`] when another order for it runs.
    pub async fn issue(
        &self,
        id: ExternalDomainId,
        now: DateTime<Utc>,
        progress: &(dyn Fn(&str) + Send + Sync),
    ) -> Result<IssuedCertificate, Error> {
        let domain = self.domain(id)?;
        let span = tracing::info_span!("acme_order", domain = %domain.domain);
        async {
            let lock = self.lock(&domain).await?;
            let result = self.order_recorded(&domain, now, progress).await;
            lock.release().await;
            result
        }
        .instrument(span)
        .await
    }

    /// One scheduler pass at `now`: orders every managed domain whose certificate is due and
    /// whose backoff has passed. Domains another process is ordering are skipped.
    pub async fn renew_due(&self, now: DateTime<Utc>) -> Result<Vec<(String, Outcome)>, Error> {
        self.withdraw_for_deleted_domains().await;
        let mut out = Vec::new();
        for mut info in self.store.certificates().await? {
            let Ok(domain) = self.domain(info.external_domain_id) else {
                continue;
            };
            if domain.acme_email.is_none() {
                continue;
            }
            if let Some(serial) = info.serial.clone() {
                if info.ari_next_check_at.is_none_or(|t| t <= now) {
                    let span = tracing::info_span!("acme_renewal_info", domain = %domain.domain);
                    self.refresh_renewal_info(&domain, &serial, now)
                        .instrument(span)
                        .await;
                    info = self.store.certificate(domain.id).await?;
                }
            }
            self.install_stored(&domain, &info).await;
            if !schedule::due(&info, now) {
                continue;
            }
            let span = tracing::info_span!("acme_renewal", domain = %domain.domain);
            let outcome = async {
                let Ok(lock) = self.lock(&domain).await else {
                    return Outcome::Busy;
                };
                // Someone may have renewed it while we waited for the lock.
                let fresh = self.store.certificate(domain.id).await;
                let outcome = match fresh {
                    Ok(fresh) if !schedule::due(&fresh, now) => Outcome::Busy,
                    _ => {
                        let log = |line: &str| tracing::info!("{line}");
                        match self.order_recorded(&domain, now, &log).await {
                            Ok(c) => Outcome::Issued(c.serial),
                            Err(e) => Outcome::Failed(e.to_string()),
                        }
                    }
                };
                lock.release().await;
                outcome
            }
            .instrument(span)
            .await;
            out.push((domain.domain.clone(), outcome));
        }
        Ok(out)
    }

    /// Asks the CA for its renewal information (RFC 9773) on the domain's certificate with
    /// `serial`, and moves the renewal time into the window it suggests. A CA without the
    /// extension is asked again a day later; a failure is logged and retried in an hour.
    async fn refresh_renewal_info(
        &self,
        domain: &ExternalDomain,
        serial: &str,
        now: DateTime<Utc>,
    ) {
        let asked = async {
            let (chain, _) = self
                .store
                .certificate_material(domain.id)
                .await?
                .ok_or_else(|| Error::Invalid("no certificate stored".into()))?;
            let id = files::certificate_identifier(&chain).map_err(Error::Invalid)?;
            let account = self.account(domain).await?;
            match account.renewal_info(&id).await {
                Ok(found) => Ok(Some(found)),
                Err(instant_acme::Error::Unsupported(_)) => Ok(None),
                Err(e) => Err(ca_error("asking for renewal information", e)),
            }
        }
        .await;
        // Either a window to record, or how long until the CA is asked again.
        let later = match asked {
            Ok(Some((info, retry_after))) => {
                let w = &info.suggested_window;
                let start =
                    DateTime::<Utc>::from_timestamp(w.start.unix_timestamp(), w.start.nanosecond());
                let end =
                    DateTime::<Utc>::from_timestamp(w.end.unix_timestamp(), w.end.nanosecond());
                match (start, end) {
                    (Some(start), Some(end)) if start <= end => {
                        let at = schedule::ari_renew_at(start, end, now, rand::random());
                        tracing::info!(%start, %end, renew_at = %at, "the CA suggested a renewal window");
                        let recorded = self
                            .store
                            .certificate_renewal_window(
                                domain.id,
                                serial,
                                (start, end),
                                info.explanation_url.as_deref(),
                                at,
                                schedule::ari_next_check(now, retry_after),
                            )
                            .await;
                        if let Err(e) = recorded {
                            tracing::warn!(error = %e, "recording renewal information failed");
                        }
                        return;
                    }
                    _ => {
                        tracing::warn!(?w, "the CA's renewal window is unusable");
                        chrono::Duration::hours(1)
                    }
                }
            }
            Ok(None) => {
                tracing::debug!("the CA offers no renewal information");
                chrono::Duration::days(1)
            }
            Err(e) => {
                tracing::warn!(error = %e, "renewal information unavailable; renewing on our own schedule");
                chrono::Duration::hours(1)
            }
        };
        let recorded = self
            .store
            .certificate_renewal_check_later(domain.id, serial, now + later)
            .await;
        if let Err(e) = recorded {
            tracing::warn!(error = %e, "recording renewal information failed");
        }
    }

    /// Runs [`Acme::renew_due`] every `check_interval` (and once at start) until `shutdown`.
    pub async fn run(self, shutdown: CancellationToken) {
        loop {
            match self.renew_due(Utc::now()).await {
                Ok(done) => {
                    for (domain, outcome) in done {
                        match outcome {
                            Outcome::Issued(serial) => {
                                tracing::info!(%domain, %serial, "certificate renewed")
                            }
                            Outcome::Failed(e) => {
                                tracing::warn!(%domain, error = %e, "certificate renewal failed")
                            }
                            Outcome::Busy => {}
                        }
                    }
                }
                Err(e) => tracing::error!(error = %e, "the certificate scheduler could not run"),
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(self.settings.check_interval) => {}
            }
        }
    }

    /// Takes the domain's order lock (held until [`OrderLock::release`]); `Busy` when another
    /// process or task holds it.
    async fn lock(&self, domain: &ExternalDomain) -> Result<OrderLock, Error> {
        self.store
            .try_order_lock(domain.id)
            .await?
            .ok_or_else(|| Error::Busy(domain.domain.clone()))
    }

    /// Places the order and records the outcome (success, or failure with backoff).
    async fn order_recorded(
        &self,
        domain: &ExternalDomain,
        now: DateTime<Utc>,
        progress: &(dyn Fn(&str) + Send + Sync),
    ) -> Result<IssuedCertificate, Error> {
        self.store.certificate_order_placed(domain.id, now).await?;
        match self.order(domain, progress).await {
            Ok(cert) => {
                self.store.save_certificate(domain.id, &cert).await?;
                progress(&format!(
                    "stored; serial {}, valid until {}, renewal from {}",
                    cert.serial, cert.not_after, cert.renew_at
                ));
                // Not installed: the certificate is kept, and every scheduler pass tries the
                // installation again (see `install_stored`) without ordering anew.
                if let Err(e) = self.install(domain, &cert, progress).await {
                    let message = format!("issued and stored, but {e}; installation is retried");
                    self.install_failed(domain, &message).await;
                    progress(&message);
                    return Err(Error::Install(message));
                }
                Ok(cert)
            }
            Err(e) => {
                let failures = self
                    .store
                    .certificate(domain.id)
                    .await
                    .map(|c| c.failures)
                    .unwrap_or(0);
                let mut next = now + schedule::backoff(failures, rand::random::<f64>());
                if let Error::RateLimited { until: Some(t), .. } = &e {
                    next = next.max(*t);
                }
                let message = e.to_string();
                self.store
                    .certificate_failed(domain.id, &message, next)
                    .await?;
                progress(&format!("failed: {message}; next attempt from {next}"));
                Err(e)
            }
        }
    }

    fn cert_dir(&self, domain: &ExternalDomain) -> std::path::PathBuf {
        self.settings
            .cert_dir
            .join(domain.domain.to_ascii_lowercase())
    }

    /// Writes the files and runs the hook, then notes the serial as installed on this machine.
    async fn install(
        &self,
        domain: &ExternalDomain,
        cert: &IssuedCertificate,
        progress: &(dyn Fn(&str) + Send + Sync),
    ) -> Result<(), Error> {
        let dir = self.cert_dir(domain);
        files::install(&dir, &cert.chain_pem, &cert.key_pem)
            .map_err(|e| Error::Install(format!("writing {} failed: {e}", dir.display())))?;
        progress(&format!(
            "wrote {}/fullchain.pem and privkey.pem",
            dir.display()
        ));
        if let Some(hook) = &self.settings.hook {
            files::run_hook(hook, &domain.domain, &dir)
                .await
                .map_err(Error::Install)?;
            progress("ran the hook");
        }
        files::mark_installed(&dir, &cert.serial)
            .map_err(|e| Error::Install(format!("writing {} failed: {e}", dir.display())))?;
        Ok(())
    }

    /// Installs the stored certificate when this machine's files do not hold it yet: after an
    /// installation or hook that failed, on a machine sharing the database with the one that
    /// ordered it, or after the files were lost.
    async fn install_stored(&self, domain: &ExternalDomain, info: &CertificateInfo) {
        let Some(serial) = &info.serial else { return };
        let dir = self.cert_dir(domain);
        if files::installed(&dir, serial) {
            return;
        }
        let span = tracing::info_span!("acme_install", domain = %domain.domain, %serial);
        async {
            // Under the domain's order lock: an order installing its new certificate, or
            // another process or task installing this one, must not interleave its files with
            // ours (a key from one and a chain from the other). Busy means someone else is at
            // it; the next pass looks again.
            let Ok(lock) = self.lock(domain).await else {
                return;
            };
            self.install_stored_locked(domain, &dir).await;
            lock.release().await;
        }
        .instrument(span)
        .await;
    }

    async fn install_stored_locked(&self, domain: &ExternalDomain, dir: &std::path::Path) {
        let material = match self.store.certificate_material(domain.id).await {
            Ok(Some(m)) => m,
            Ok(None) => return,
            Err(e) => {
                tracing::warn!(error = %e, "reading the stored certificate failed");
                return;
            }
        };
        // The stored certificate may be newer than `info` (another process renewed it
        // meanwhile): its own serial is what gets recorded.
        let serial = match files::describe(&material.0) {
            Ok(c) => c.serial,
            Err(e) => {
                tracing::warn!(error = %e, "the stored certificate is unreadable");
                return;
            }
        };
        if files::installed(dir, &serial) {
            return;
        }
        let cert = IssuedCertificate {
            serial,
            chain_pem: material.0,
            key_pem: material.1,
            ..IssuedCertificate::default()
        };
        let log = |line: &str| tracing::info!("{line}");
        match self.install(domain, &cert, &log).await {
            Ok(()) => {
                tracing::info!("installed the stored certificate");
                if let Err(e) = self.store.certificate_installed(domain.id).await {
                    tracing::warn!(error = %e, "recording the installation failed");
                }
            }
            Err(e) => {
                let message = format!("installing the certificate failed: {e}");
                tracing::warn!("{message}");
                self.install_failed(domain, &message).await;
            }
        }
    }

    /// Records why an issued certificate is not installed (its `last_error`).
    async fn install_failed(&self, domain: &ExternalDomain, message: &str) {
        if let Err(e) = self
            .store
            .certificate_install_failed(domain.id, message)
            .await
        {
            tracing::warn!(error = %e, "recording the installation failure failed");
        }
    }

    /// Where a published TXT record must be visible before the CA is told: our own DNS for our
    /// zones; for Cloudflare the configured name servers, else the zone's own.
    async fn check_at(&self, solver: &solver::Solver) -> Result<Vec<NameServer>, Error> {
        let by_addr = |addr: std::net::SocketAddr| NameServer {
            name: addr.to_string(),
            addr,
            recursive: true,
        };
        match solver {
            solver::Solver::OwnDns { .. } => Ok(self
                .settings
                .own_dns
                .into_iter()
                .map(|addr| NameServer {
                    name: "our DNS listener".into(),
                    addr,
                    recursive: false,
                })
                .collect()),
            solver::Solver::Cloudflare { zone, .. } => {
                if !self.settings.nameservers.is_empty() {
                    return Ok(self
                        .settings
                        .nameservers
                        .iter()
                        .copied()
                        .map(by_addr)
                        .collect());
                }
                let mut out = Vec::new();
                for ns in &zone.name_servers {
                    let found: Vec<_> = tokio::net::lookup_host((ns.as_str(), 53))
                        .await
                        .map_err(|e| {
                            Error::Challenge(format!("cannot resolve the name server {ns}: {e}"))
                        })?
                        .collect();
                    // One address per name server, IPv4 when it has one.
                    if let Some(addr) = found.iter().find(|a| a.is_ipv4()).or_else(|| found.first())
                    {
                        out.push(NameServer {
                            name: ns.clone(),
                            addr: *addr,
                            recursive: false,
                        });
                    }
                }
                if out.is_empty() {
                    return Err(Error::Challenge(format!(
                        "Cloudflare names no usable name servers for the zone {}",
                        zone.name
                    )));
                }
                Ok(out)
            }
            solver::Solver::Http01 => Ok(Vec::new()),
        }
    }

    async fn account(&self, domain: &ExternalDomain) -> Result<Account, Error> {
        let directory = domain
            .acme_directory
            .clone()
            .unwrap_or_else(|| self.settings.default_directory.clone());
        let builder = || match &self.settings.ca_root {
            Some(root) => Account::builder_with_root(root)
                .map_err(|e| ca_error(&format!("loading the CA root {}", root.display()), e)),
            None => Account::builder().map_err(|e| ca_error("preparing the HTTP client", e)),
        };
        if let Some((_, json)) = self
            .store
            .acme_account(&directory, domain.acme_email.as_deref())
            .await?
        {
            let creds: AccountCredentials = serde_json::from_str(&json)
                .map_err(|e| Error::Invalid(format!("stored ACME account is unreadable: {e}")))?;
            return builder()?
                .from_credentials(creds)
                .await
                .map_err(|e| ca_error(&format!("restoring the account at {directory}"), e));
        }
        let contact = domain.acme_email.as_ref().map(|m| format!("mailto:{m}"));
        let contacts: Vec<&str> = contact.iter().map(String::as_str).collect();
        let (_, creds) = builder()?
            .create(
                &NewAccount {
                    contact: &contacts,
                    terms_of_service_agreed: true,
                    only_return_existing: false,
                },
                directory.clone(),
                None,
            )
            .await
            .map_err(|e| ca_error(&format!("creating an account at {directory}"), e))?;
        let json = serde_json::to_string(&creds)
            .map_err(|e| Error::Invalid(format!("cannot serialize the account: {e}")))?;
        self.store
            .save_acme_account(&directory, domain.acme_email.as_deref(), &json)
            .await?;
        // Another process may have created one at the same time: use the stored one.
        let (_, json) = self
            .store
            .acme_account(&directory, domain.acme_email.as_deref())
            .await?
            .ok_or_else(|| Error::Invalid("the ACME account was not stored".into()))?;
        let creds: AccountCredentials = serde_json::from_str(&json)
            .map_err(|e| Error::Invalid(format!("stored ACME account is unreadable: {e}")))?;
        builder()?
            .from_credentials(creds)
            .await
            .map_err(|e| ca_error(&format!("restoring the account at {directory}"), e))
    }

    /// The order itself; every published challenge is withdrawn before this returns.
    async fn order(
        &self,
        domain: &ExternalDomain,
        progress: &(dyn Fn(&str) + Send + Sync),
    ) -> Result<IssuedCertificate, Error> {
        let solver = solver::Solver::for_domain(&self.store, domain, &self.settings).await?;
        let names = solver.names(&domain.domain);
        progress(&format!(
            "ordering a certificate for {} ({})",
            names.join(", "),
            solver.describe()
        ));
        let account = self.account(domain).await?;
        // A CA that gave renewal information is told which certificate this order replaces
        // (RFC 9773 §5); it may then treat the order kindly under its rate limits.
        let replaces = match self.store.certificate(domain.id).await {
            Ok(info) if info.ari_window_start.is_some() => self
                .store
                .certificate_material(domain.id)
                .await
                .ok()
                .flatten()
                .and_then(|(chain, _)| files::certificate_identifier(&chain).ok()),
            _ => None,
        };
        self.withdraw_leftovers(domain, &solver, progress).await;
        let mut published = Vec::new();
        let result = self
            .order_with(
                domain,
                &account,
                &solver,
                replaces,
                &mut published,
                progress,
            )
            .await;
        for (p, note) in published {
            self.withdraw(&solver, p, note, progress).await;
        }
        if result.is_ok() {
            progress("challenge records withdrawn");
        }
        result
    }

    /// Withdraws one published answer and forgets its note; a failure is reported and the note
    /// kept, so the domain's next order tries again.
    async fn withdraw(
        &self,
        solver: &solver::Solver,
        p: solver::Published,
        note: Option<i64>,
        progress: &(dyn Fn(&str) + Send + Sync),
    ) {
        match solver.withdraw(&self.store, p).await {
            Ok(()) => {
                if let Some(n) = note {
                    if let Err(e) = self.store.challenge_withdrawn(n).await {
                        tracing::warn!(error = %e, "forgetting a withdrawn challenge failed");
                    }
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "withdrawing a challenge failed");
                progress(&format!("could not withdraw a challenge record: {e}"));
            }
        }
    }

    /// Withdraws what unfinished orders of domains deleted since left in our zones and on the
    /// HTTP-01 listener. A Cloudflare record cannot be reached any more (the credentials went
    /// with the domain): it is logged for the operator and forgotten.
    async fn withdraw_for_deleted_domains(&self) {
        let left = match self.store.challenges_of_deleted_domains().await {
            Ok(left) => left,
            Err(e) => {
                tracing::warn!(error = %e, "reading challenge answers of deleted domains failed");
                return;
            }
        };
        let log = |line: &str| tracing::warn!("{line}");
        for (note, kind, reference, zone) in left {
            match solver::Published::from_note(&kind, &reference) {
                // Our zone's records and HTTP-01 tokens need no solver of the domain's.
                Some(p @ (solver::Published::Txt(_) | solver::Published::Http(_))) => {
                    self.withdraw(&solver::Solver::Http01, p, Some(note), &log)
                        .await;
                }
                _ => {
                    tracing::warn!(%kind, %reference, ?zone, "a challenge record of a deleted domain cannot be withdrawn; delete it by hand");
                    if let Err(e) = self.store.challenge_withdrawn(note).await {
                        tracing::warn!(error = %e, "forgetting a challenge note failed");
                    }
                }
            }
        }
    }

    /// Withdraws what an earlier order for the domain published and never withdrew (its process
    /// crashed or was killed half way). Runs under the domain's lock, so that order is over.
    async fn withdraw_leftovers(
        &self,
        domain: &ExternalDomain,
        solver: &solver::Solver,
        progress: &(dyn Fn(&str) + Send + Sync),
    ) {
        let left = match self.store.challenges_left(domain.id).await {
            Ok(left) => left,
            Err(e) => {
                tracing::warn!(error = %e, "reading earlier challenge answers failed");
                return;
            }
        };
        for (note, kind, reference, zone) in left {
            let Some(p) = solver::Published::from_note(&kind, &reference) else {
                continue;
            };
            // A Cloudflare record of another zone (the credentials or the zone changed) cannot
            // be reached with this solver: kept for an order that can.
            if kind.starts_with("cloudflare") && zone.as_deref() != solver.zone_id() {
                tracing::warn!(%reference, ?zone, "an earlier Cloudflare record is outside this order's zone; left");
                continue;
            }
            progress(&format!(
                "withdrawing a {kind} challenge answer an unfinished order left"
            ));
            self.withdraw(solver, p, Some(note), progress).await;
        }
    }

    async fn order_with(
        &self,
        domain: &ExternalDomain,
        account: &Account,
        solver: &solver::Solver,
        replaces: Option<CertificateIdentifier<'static>>,
        published: &mut Vec<(solver::Published, Option<i64>)>,
        progress: &(dyn Fn(&str) + Send + Sync),
    ) -> Result<IssuedCertificate, Error> {
        let names = solver.names(&domain.domain);
        let identifiers: Vec<Identifier> = names.iter().cloned().map(Identifier::Dns).collect();
        let placed = match replaces {
            Some(id) => match account
                .new_order(&NewOrder::new(&identifiers).replaces(id))
                .await
            {
                // The CA would not take it as a replacement (`alreadyReplaced`, a certificate
                // it does not know after a directory change, ...): a plain order must not
                // wedge on that.
                Err(instant_acme::Error::Api(p))
                    if p.r#type.as_deref() != Some("urn:ietf:params:acme:error:rateLimited") =>
                {
                    progress(&format!(
                        "the CA refused the order as a replacement ({}); ordering without it",
                        p.detail.as_deref().unwrap_or("no detail")
                    ));
                    account.new_order(&NewOrder::new(&identifiers)).await
                }
                other => other,
            },
            None => account.new_order(&NewOrder::new(&identifiers)).await,
        };
        let mut order = placed.map_err(|e| ca_error("placing the order", e))?;
        progress(&format!("order placed: {}", order.url()));
        let mut authorizations = order.authorizations();
        while let Some(authz) = authorizations.next().await {
            let mut authz = authz.map_err(|e| ca_error("reading an authorization", e))?;
            if authz.status == AuthorizationStatus::Valid {
                continue;
            }
            let kind = solver.challenge_type();
            let mut challenge = authz.challenge(kind.clone()).ok_or_else(|| {
                Error::Ca(format!("the CA offers no {kind:?} challenge for this name"))
            })?;
            let identifier = challenge.identifier().to_string();
            let key_auth = challenge.key_authorization();
            // Noted as it is published (in one transaction where the answer is ours to write):
            // should this process die before withdrawing it, the domain's next order does.
            let (p, note) = solver
                .publish(
                    &self.store,
                    domain.id,
                    &identifier,
                    &challenge.token,
                    &key_auth,
                )
                .await?;
            published.push((p, note));
            let name = format!("_acme-challenge.{}", identifier.trim_start_matches("*."));
            // Every authoritative server must have it: the CA may ask any of them.
            let value = key_auth.dns_value();
            let servers = self.check_at(solver).await?;
            let checks = servers.iter().map(|ns| {
                propagation::wait_visible(ns, &name, &value, self.settings.propagation_timeout)
            });
            for r in futures::future::join_all(checks).await {
                r?;
            }
            progress(&format!(
                "published the {kind:?} challenge for {identifier}"
            ));
            challenge
                .set_ready()
                .await
                .map_err(|e| ca_error(&format!("telling the CA {identifier} is ready"), e))?;
        }
        let retry = RetryPolicy::new()
            .initial_delay(Duration::from_millis(250))
            .backoff(1.5)
            .timeout(self.settings.order_timeout);
        let status = order
            .poll_ready(&retry)
            .await
            .map_err(|e| ca_error("validating the challenges", e))?;
        if status != OrderStatus::Ready {
            return Err(Error::Ca(format!(
                "the CA did not validate the challenges (order {status:?})"
            )));
        }
        progress("challenges validated");
        let key = rcgen::KeyPair::generate()
            .map_err(|e| Error::Invalid(format!("cannot generate a key: {e}")))?;
        let mut params = rcgen::CertificateParams::new(names.clone())
            .map_err(|e| Error::Invalid(format!("cannot build the CSR: {e}")))?;
        params.distinguished_name = rcgen::DistinguishedName::new();
        let csr = params
            .serialize_request(&key)
            .map_err(|e| Error::Invalid(format!("cannot sign the CSR: {e}")))?;
        order
            .finalize_csr(csr.der())
            .await
            .map_err(|e| ca_error("the CA rejected the CSR", e))?;
        let chain = order
            .poll_certificate(&retry)
            .await
            .map_err(|e| ca_error("downloading the certificate", e))?;
        let mut issued = files::describe(&chain)
            .map_err(|e| Error::Ca(format!("the CA returned an unusable certificate: {e}")))?;
        issued.names = names;
        issued.key_pem = key.serialize_pem();
        issued.renew_at = schedule::renew_at(issued.not_before, issued.not_after, rand::random());
        progress(&format!("certificate issued by {}", issued.issuer));
        Ok(issued)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_limit_messages_give_their_time() {
        let le = "too many certificates (5) already issued for this exact set of identifiers in \
                  the last 168h0m0s, retry after 2026-11-23 10:00:00 UTC: see https://letsencrypt.org/docs/rate-limits/";
        assert_eq!(
            retry_after_in(le).map(|t| t.to_rfc3339()),
            Some("2026-11-23T10:00:00+00:00".into())
        );
        assert_eq!(
            retry_after_in("Retry after 2026-11-23 10:00:00 UTC"),
            retry_after_in(le)
        );
        assert_eq!(retry_after_in("too many new orders recently"), None);
        assert_eq!(retry_after_in("retry after 2026-11-23 10:00:00 CET"), None);
        assert_eq!(retry_after_in("retry after 2026-13-40 10:00:00 UTC"), None);
        assert_eq!(retry_after_in("retry after 2026-11-2"), None);
        assert_eq!(retry_after_in("retry after ü"), None);
    }
}

//! # siteward-ldap
//!
//! LDAPv3 server for siteward's users and groups, read from the store's live snapshot (no
//! database query per search), on `ldap3_proto` and tokio. Plain LDAP with StartTLS, and LDAPS.
//!
//! ## Layout
//! - [`schema`]: attribute types and object classes (names, OIDs, syntaxes, `cn=Subschema`).
//! - [`dn`]: DN parsing and normalization.
//! - [`dit`]: the tree, entries' values from the snapshot, and the access rules.
//! - [`filter`]: filter compilation, three-valued evaluation and candidate narrowing, the term
//!   count and the work allowance that bound a search.
//! - [`session`]: the per-connection state machine (`handle(msg) -> responses`), no socket.
//! - [`search`]: a search from request to entries, on the runtime while cheap and on the
//!   bounded search pool otherwise.
//! - [`throttle`]: failed-bind limits per account and per client address, shared by all
//!   connections.
//! - [`net`]: accept loop, framing and limits, timeouts, StartTLS/LDAPS.
//! - TLS material (loading, self-signed generation, reload without restart) is
//!   `siteward_store::tls`, shared with the HTTPS listener.
//! - [`metrics`]: Prometheus counters and histograms.
//!
//! Not here: binding sockets (the binary binds and passes listeners to [`serve`] and
//! [`serve_ldaps`]), writes other than Password Modify (the admin API owns them).

pub mod dit;
pub mod dn;
pub mod filter;
pub mod metrics;
pub mod net;
pub mod schema;
pub mod search;
pub mod session;
pub mod throttle;

#[cfg(test)]
mod tests;

use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use siteward_store::Store;
use tokio::sync::Semaphore;

pub use dit::AnonymousAccess;
pub use metrics::Metrics;
pub use net::{serve, serve_ldaps};
pub use session::Session;
pub use siteward_store::tls::{Tls, TlsFiles};

/// Errors of the LDAP server.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Socket or file failure.
    #[error("ldap: {0}")]
    Io(#[from] std::io::Error),
    /// The configured base DN is not a DN.
    #[error("ldap: invalid base DN: {0}")]
    BaseDn(#[from] dn::DnError),
    /// TLS material could not be generated or loaded.
    #[error("ldap TLS: {0}")]
    Tls(String),
}

/// Settings of the LDAP server (the binary maps its configuration onto this).
#[derive(Debug, Clone)]
pub struct Settings {
    /// Suffix of the directory.
    pub base_dn: String,
    /// Anonymous access.
    pub anonymous: AnonymousAccess,
    /// Members of this group read everything but passwords (like administrators).
    pub service_group: Option<String>,
    /// Whether ordinary users read other users' `mail`.
    pub mail_visible_to_users: bool,
    /// Most entries a non-paged search returns (0 = no limit).
    pub size_limit: usize,
    /// Longest a search may evaluate.
    pub time_limit: Duration,
    /// Largest message accepted, in bytes.
    pub max_message_bytes: usize,
    /// Deepest BER nesting accepted.
    pub max_ber_depth: usize,
    /// Most connections served at once (per listener set); more are refused.
    pub max_connections: usize,
    /// A connection without a request for this long is closed.
    pub idle_timeout: Duration,
    /// A request not answered within this long closes its connection.
    pub request_timeout: Duration,
    /// Writing one reply may take this long.
    pub write_timeout: Duration,
    /// TLS handshake limit.
    pub handshake_timeout: Duration,
    /// Most elements a search filter may have (see [`filter::terms`]); more is refused with
    /// adminLimitExceeded.
    pub max_filter_terms: usize,
    /// Units of work a search may spend narrowing and evaluating (see [`filter::Work`]); a
    /// search that needs more ends with adminLimitExceeded.
    pub search_work_limit: u64,
    /// Searches too large for the runtime that run at once (the rest wait their turn).
    pub search_threads: usize,
    /// Failed binds of one account, and from one address, within the window after which it is
    /// refused without verifying, and the window.
    pub bind_limits: throttle::Limits,
}

/// Searches the pool runs at once by default: one less than the cores (at least one), so that
/// searches can never occupy every core.
pub fn default_search_threads() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2)
        .saturating_sub(1)
        .max(1)
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            base_dn: "dc=siteward,dc=internal".into(),
            anonymous: AnonymousAccess::Read,
            service_group: None,
            mail_visible_to_users: false,
            size_limit: 0,
            time_limit: Duration::from_secs(30),
            max_message_bytes: 256 * 1024,
            max_ber_depth: 32,
            max_connections: 4096,
            idle_timeout: Duration::from_secs(900),
            request_timeout: Duration::from_secs(60),
            write_timeout: Duration::from_secs(30),
            handshake_timeout: Duration::from_secs(10),
            max_filter_terms: 1000,
            search_work_limit: 1_000_000,
            search_threads: default_search_threads(),
            bind_limits: throttle::Limits {
                per_account: 10,
                per_address: 100,
                window: Duration::from_secs(15 * 60),
            },
        }
    }
}

/// Shared state of the LDAP server: the store, the tree's shape and policy, limits, TLS.
#[derive(Debug)]
pub struct LdapServer {
    pub(crate) store: Store,
    pub(crate) dir: dit::Directory,
    pub(crate) settings: Settings,
    pub(crate) throttle: throttle::Throttle,
    pub(crate) metrics: Metrics,
    pub(crate) tls: Option<Arc<Tls>>,
    pub(crate) connections: Arc<siteward_store::slots::Slots>,
    /// Permits of the search pool.
    pub(crate) searches: Arc<Semaphore>,
    pub(crate) sessions: AtomicU64,
}

impl LdapServer {
    /// Builds the server state. `tls` enables StartTLS (and is needed for [`serve_ldaps`]).
    pub fn new(
        store: Store,
        settings: Settings,
        tls: Option<Arc<Tls>>,
        metrics: Metrics,
    ) -> Result<Self, Error> {
        let mut dir = dit::Directory::new(&settings.base_dn)?;
        dir.anonymous = settings.anonymous;
        dir.service_group = settings.service_group.clone();
        dir.mail_visible_to_users = settings.mail_visible_to_users;
        Ok(Self {
            store,
            dir,
            throttle: throttle::Throttle::new(settings.bind_limits),
            metrics,
            tls,
            connections: siteward_store::slots::Slots::new(settings.max_connections),
            searches: Arc::new(Semaphore::new(settings.search_threads.max(1))),
            sessions: AtomicU64::new(0),
            settings,
        })
    }

    /// Whether StartTLS and LDAPS can be offered.
    pub fn tls_available(&self) -> bool {
        self.tls.is_some()
    }

    /// The TLS material, if any (for periodic reloads).
    pub fn tls(&self) -> Option<&Arc<Tls>> {
        self.tls.as_ref()
    }
}

//! # siteward-ldap
//!
//! LDAPv3 server for siteward's users and groups, read from the store's live snapshot (no
//! database query per search), on `ldap3_proto` and tokio. Plain LDAP with StartTLS, and LDAPS.
//!
//! ## Layout
//! - [`schema`]: attribute types and object classes (names, OIDs, syntaxes, `cn=Subschema`).
//! - [`dn`]: DN parsing and normalization.
//! - [`dit`]: the tree, entries' values from the snapshot, and the access rules.
//! - [`filter`]: filter compilation, three-valued evaluation and candidate narrowing.
//! - [`session`]: the per-connection state machine (`handle(msg) -> responses`), no socket.
//! - [`throttle`]: delays after failed binds, per user name and per client address.
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
    /// Delay after the first failed bind (doubling per failure).
    pub bind_delay: Duration,
    /// Largest delay after failed binds.
    pub bind_delay_max: Duration,
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
            bind_delay: Duration::from_millis(100),
            bind_delay_max: Duration::from_secs(10),
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
    pub(crate) connections: Arc<Semaphore>,
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
            throttle: throttle::Throttle::new(
                settings.bind_delay,
                settings.bind_delay_max,
                Duration::from_secs(15 * 60),
            ),
            metrics,
            tls,
            connections: Arc::new(Semaphore::new(settings.max_connections)),
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

//! # siteward-dns
//!
//! The authoritative DNS server of every site: the site's `internal_domain` and the reverse zone
//! of its subnet, served from the store's live snapshot (no query touches PostgreSQL).
//!
//! ## Layout
//! - [`name`]: wire-format names (lower-case keys, reading compressed names safely).
//! - [`rdata`]: presentation-format RDATA of static records to wire format.
//! - [`zone`]: the [`zone::ZoneIndex`] built per site from the snapshot (forward and reverse
//!   zones, pre-encoded RRsets, empty non-terminals, wildcards, cuts).
//! - [`patch`]: [`patch::Zones`], the zones kept current name by name from the snapshot's deltas.
//! - [`engine`]: query bytes in, response bytes out ([`engine::answer`]); no sockets.
//! - [`journal`]: each zone's recent deltas, for IXFR.
//! - [`transfer`]: AXFR and IXFR streams, NOTIFY to secondaries, zone-file export.
//! - [`forward`]: names outside our zones, forwarded to the site's resolvers with a TTL cache.
//! - [`server`]: [`serve`], the UDP workers and the TCP connections; the index updater.
//! - [`metrics`]: Prometheus counters and latency histogram.
//!
//! Nothing here binds a socket: the binary passes bound sockets to [`serve`].

pub mod engine;
pub mod forward;
pub mod journal;
pub mod metrics;
pub mod name;
pub mod patch;
pub mod rdata;
pub mod server;
pub mod transfer;
pub mod zone;

#[cfg(any(test, feature = "fuzzing"))]
pub mod fixture;
#[cfg(test)]
mod patch_tests;
#[cfg(test)]
mod tests;

pub use metrics::Metrics;
pub use server::{bind_udp, serve, DnsState, Settings};
pub use zone::{ZoneIndex, ZoneSettings};

/// Errors of the dns server.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Socket failure.
    #[error("dns: {0}")]
    Io(#[from] std::io::Error),
    /// A record (or name) that cannot be served as stored.
    #[error("dns: bad record: {0}")]
    BadRecord(String),
    /// A worker thread or task failed.
    #[error("dns: worker failed: {0}")]
    Worker(String),
}

//! # siteward-dns
//!
//! Placeholder crate: the dns server is built by its own issue. It depends on `siteward-store`
//! only, and exposes `serve(...)` taking an already-bound socket and a shutdown token.

/// Errors of the dns server.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Socket failure.
    #[error("dns: {0}")]
    Io(#[from] std::io::Error),
}

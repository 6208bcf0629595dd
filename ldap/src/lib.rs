//! # siteward-ldap
//!
//! Placeholder crate: the ldap server is built by its own issue. It depends on `siteward-store`
//! only, and exposes `serve(...)` taking an already-bound socket and a shutdown token.

/// Errors of the ldap server.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Socket failure.
    #[error("ldap: {0}")]
    Io(#[from] std::io::Error),
}

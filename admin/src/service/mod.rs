//! The admin side's use cases, one function each: create a site, register, issue an invite,
//! add a service, ... Each validates its input (with [`rules`]), checks what only the caller's
//! rights decide, and makes its change through one write of the store, which appends the audit
//! row naming the [`Actor`](siteward_store::Actor) in the same transaction and refreshes the
//! snapshot after the commit. The JSON API (`api/`), the pages (`auth/pages/`) and the command
//! line (`src/commands.rs`) only translate requests and answers; none validates or audits by
//! itself. LDAP Password Modify goes straight to the store's password write, which holds the
//! password rule.
//!
//! Functions that need only the database take a `&Store` (the CLI has no HTTP state); those
//! that need throttles, jobs, mail or Proxmox take the [`AdminState`](crate::AdminState).

pub mod accounts;
pub mod api_keys;
pub mod audit;
pub mod containers;
pub mod dns_records;
pub mod domains;
pub mod groups;
pub mod invites;
pub mod nodes;
pub mod resets;
pub mod rules;
pub mod services;
pub mod settings;
pub mod sites;
pub mod users;

pub use crate::api::error::ApiError;

/// What a use case answers.
pub type Result<T> = std::result::Result<T, ApiError>;

/// `Some(None)` for an explicit `null`, `None` when absent (patch bodies).
pub(crate) fn nullable<'de, D: serde::Deserializer<'de>, T: serde::Deserialize<'de>>(
    d: D,
) -> std::result::Result<Option<Option<T>>, D::Error> {
    <Option<T> as serde::Deserialize>::deserialize(d).map(Some)
}

//! The bodies of siteward's fuzz targets (`fuzz_targets/*.rs` call one function each), kept in a
//! library so that `fuzz/run` and a campaign run the same code. Each function panics when an
//! invariant breaks; anything else is a pass. What each target checks is documented on it.
//!
//! The fixtures are the ones the crates' own tests use (`siteward_dns::fixture`), or built here
//! by hand, with no database: the protocol code reads only the store's snapshot, and
//! `siteward_store::testing::store_with_snapshot` gives a store whose pool never connects.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

pub mod api;
pub mod dns;
pub mod ldap;
pub mod nginx;

/// A current-thread runtime per process, for the targets that drive async code.
pub(crate) fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: std::sync::LazyLock<tokio::runtime::Runtime> = std::sync::LazyLock::new(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a tokio runtime")
    });
    &RT
}

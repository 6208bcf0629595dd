//! Fixtures the end-to-end tests share: a real NGINX ([`nginx`]), headless Chromium over the
//! DevTools protocol ([`chromium`]), `wrk` load runs ([`wrk`]) and a relay to PostgreSQL that
//! can be cut to simulate an outage ([`relay`]).

pub(crate) mod chromium;
pub(crate) mod nginx;
pub(crate) mod relay;
pub(crate) mod wrk;

pub(crate) use chromium::Chromium;
pub(crate) use nginx::Nginx;
pub(crate) use relay::Relay;

//! Fixtures the end-to-end tests share: a real NGINX ([`nginx`]), headless Chromium over the
//! DevTools protocol ([`chromium`]) and `wrk` load runs ([`wrk`]).

pub(crate) mod chromium;
pub(crate) mod nginx;
pub(crate) mod wrk;

pub(crate) use chromium::Chromium;
pub(crate) use nginx::Nginx;

//! End-to-end tests: the real `siteward` binary, a real PostgreSQL, real clients.
//! One test binary (faster to link); one module per concern.

mod acme;
mod api;
mod audit;
mod auth;
mod cf_sim;
mod cross;
mod dns;
mod edge;
mod faults;
mod foundation;
mod harness;
mod ldap;
mod ldap_abuse;
mod proxmox;
mod pve_sim;
mod security;
mod support;
mod web;

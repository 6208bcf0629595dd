#![no_main]
//! See `siteward_fuzz::ldap::filter`.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| siteward_fuzz::ldap::filter(data));

#![no_main]
//! See `siteward_fuzz::ldap::message`.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| siteward_fuzz::ldap::message(data));

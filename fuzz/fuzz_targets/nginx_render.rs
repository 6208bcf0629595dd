#![no_main]
//! See `siteward_fuzz::nginx::render`.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| siteward_fuzz::nginx::render(data));

#![no_main]
//! See `siteward_fuzz::api::json`.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| siteward_fuzz::api::json(data));

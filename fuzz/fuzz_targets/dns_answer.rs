#![no_main]
//! See `siteward_fuzz::dns::answer`.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| siteward_fuzz::dns::answer(data));

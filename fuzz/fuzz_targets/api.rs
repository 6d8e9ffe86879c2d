//! The `api` target: its checks are `latchkey_fuzz_harness::api` (see that module).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| latchkey_fuzz_harness::api::check(data));

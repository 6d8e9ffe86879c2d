//! The `rules` target: its checks are `latchkey_fuzz_harness::rules` (see that module).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| latchkey_fuzz_harness::rules::check(data));

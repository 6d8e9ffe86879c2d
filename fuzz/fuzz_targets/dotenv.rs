//! The `dotenv` target: its checks are `latchkey_fuzz_harness::dotenv` (see that module).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| latchkey_fuzz_harness::dotenv::check(data));

#![no_main]
//! libFuzzer entry for `shardgate_fuzz::session_key` (its invariants are documented there).

libfuzzer_sys::fuzz_target!(|data: &[u8]| shardgate_fuzz::session_key::run(data));

#![no_main]
//! libFuzzer entry for `shardgate_fuzz::journal` (its invariants are documented there).

libfuzzer_sys::fuzz_target!(|data: &[u8]| shardgate_fuzz::journal::run(data));

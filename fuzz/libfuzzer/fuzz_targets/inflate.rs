#![no_main]
//! libFuzzer entry for `shardgate_fuzz::inflate` (its invariants are documented there).

libfuzzer_sys::fuzz_target!(|data: &[u8]| shardgate_fuzz::inflate::run(data));

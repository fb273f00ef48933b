#![no_main]
//! libFuzzer entry for `shardgate_fuzz::http_head` (its invariants are documented there).

libfuzzer_sys::fuzz_target!(|data: &[u8]| shardgate_fuzz::http_head::run(data));

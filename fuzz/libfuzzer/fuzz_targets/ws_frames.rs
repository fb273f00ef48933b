#![no_main]
//! libFuzzer entry for `shardgate_fuzz::ws_frames` (its invariants are documented there).

libfuzzer_sys::fuzz_target!(|data: &[u8]| shardgate_fuzz::ws_frames::run(data));

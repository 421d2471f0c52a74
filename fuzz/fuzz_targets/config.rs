#![no_main]
//! `stevedore::fuzzing::bytes::config` under libFuzzer; seeds in `fuzz/seeds/config/`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| stevedore::fuzzing::bytes::config(data));

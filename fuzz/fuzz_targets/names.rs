#![no_main]
//! `stevedore::fuzzing::bytes::names` under libFuzzer; seeds in `fuzz/seeds/names/`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| stevedore::fuzzing::bytes::names(data));

#![no_main]
//! `stevedore::fuzzing::bytes::manifest` under libFuzzer; seeds in `fuzz/seeds/manifest/`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| stevedore::fuzzing::bytes::manifest(data));

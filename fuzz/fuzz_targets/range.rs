#![no_main]
//! `stevedore::fuzzing::bytes::range` under libFuzzer; seeds in `fuzz/seeds/range/`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| stevedore::fuzzing::bytes::range(data));

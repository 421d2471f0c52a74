#![no_main]
//! `stevedore::fuzzing::bytes::route` under libFuzzer; seeds in `fuzz/seeds/route/`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| stevedore::fuzzing::bytes::route(data));

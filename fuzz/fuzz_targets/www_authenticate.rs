#![no_main]
//! `stevedore::fuzzing::bytes::www_authenticate` under libFuzzer; seeds in `fuzz/seeds/www_authenticate/`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| stevedore::fuzzing::bytes::www_authenticate(data));

//! The redactor on arbitrary bytes, with a secret planted in them: bodies of
//! every content type, query strings, header values and paths. See
//! `tower_usage::fuzzing::redact`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tower_usage::fuzzing::redact(data));

//! The disk spool's segment reader on arbitrary bytes (what a crash or a bad
//! disk may leave): no panic, and what it reads round-trips. See
//! `tower_usage::fuzzing::spool_segment`. Seeds: `fuzz/regressions/spool_segment`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tower_usage::fuzzing::spool_segment(data));

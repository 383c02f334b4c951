//! The gRPC frame parsers on arbitrary bytes, in arbitrary chunks. See
//! `tower_usage::fuzzing::grpc_frames`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tower_usage::fuzzing::grpc_frames(data));

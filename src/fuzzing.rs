//! Entry points for the fuzz targets in `fuzz/`: built only with
//! `--cfg fuzzing`, which `cargo fuzz` sets, and for this crate's own tests;
//! not part of the public API.
//!
//! Each function takes the fuzzer's bytes, runs one parser of the crate on
//! them, and panics when an invariant breaks: a panic inside the parser is a
//! finding too. Every input a fuzzer found is kept in
//! `fuzz/regressions/<target>/`, and the unit tests below replay them all.

use bytes::Bytes;
use http::{HeaderMap, HeaderValue};

use crate::hooks::Protocol;
use crate::record::{grpc_messages, MessageCounter, Redaction};
#[cfg(feature = "spool")]
use crate::{record::binary, sink::spool::segment};

/// The secret the redaction target plants; it must never come out.
const PLANTED: &[u8] = b"FUZZ-S3CR3T-0123";

/// The content types the redaction target chooses from with its first byte.
const CONTENT_TYPES: &[&str] = &[
    "application/json",
    "application/x-www-form-urlencoded",
    "multipart/form-data; boundary=XyZ",
    "text/plain",
    "application/xml",
    "",
];

/// The shapes a planted secret takes, chosen with the second byte.
const PLANTS: &[(&[u8], &[u8])] = &[
    (b"\"password\":\"", b"\""),
    (b"password=", b"&"),
    (b"Authorization: Bearer ", b"\n"),
    (b"https://u:", b"@db.test/"),
    (b"<token>", b"</token>"),
    (
        b"\r\n--XyZ\r\nContent-Disposition: form-data; name=\"password\"\r\n\r\n",
        b"\r\n--XyZ--",
    ),
];

/// Redacts `data` as a request body, a query string, a header value and a
/// path, each with a secret planted in the middle of the fuzzer's bytes: no
/// panic, and the planted secret never comes out.
pub fn redact(data: &[u8]) {
    let (Some(&kind), Some(&plant)) = (data.first(), data.get(1)) else {
        return;
    };
    let rest = &data[2..];
    let split = rest.len() / 2;
    let (open, close) = PLANTS[usize::from(plant) % PLANTS.len()];
    let mut body = rest[..split].to_vec();
    body.extend_from_slice(open);
    body.extend_from_slice(PLANTED);
    body.extend_from_slice(close);
    body.extend_from_slice(&rest[split..]);

    let redaction = Redaction::default();
    let mut headers = HeaderMap::new();
    let content_type = CONTENT_TYPES[usize::from(kind) % CONTENT_TYPES.len()];
    if !content_type.is_empty() {
        headers.insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static(content_type),
        );
    }
    let out = redaction.body(Bytes::from(body.clone()), &headers, Protocol::Http);
    assert_absent(&out, "body");

    // The same bytes as a query string, a header value and a path, where
    // they can be one: whatever they hold, nothing panics.
    if let Ok(text) = std::str::from_utf8(&body) {
        let _ = redaction.query(text);
        let _ = redaction.path(text, Some("/reset/{token}"));
    }
    if let Ok(value) = HeaderValue::from_bytes(&body) {
        let mut headers = HeaderMap::new();
        headers.insert("x-fuzz", value);
        let _ = redaction.headers(headers);
    }
}

fn assert_absent(out: &[u8], what: &str) {
    assert!(
        memchr::memmem::find(out, PLANTED).is_none(),
        "{what}: planted secret stored: {:?}",
        String::from_utf8_lossy(out)
    );
}

/// Parses `data` as a gRPC body (5-byte frame prefixes): the whole-body
/// parser, and the streaming counter fed in chunks of a size the first byte
/// chooses. No panic; the counter's count and gRPC-Web trailers do not depend
/// on the chunking.
pub fn grpc_frames(data: &[u8]) {
    let Some((&chunk, body)) = data.split_first() else {
        return;
    };
    let _ = grpc_messages(body);
    let mut whole = MessageCounter::default();
    whole.observe(&body);
    let mut chunked = MessageCounter::default();
    for piece in body.chunks(usize::from(chunk).max(1)) {
        chunked.observe(&piece);
    }
    assert_eq!(whole.messages(), chunked.messages());
    assert_eq!(whole.web_trailers(), chunked.web_trailers());
}

/// Reads `data` as a spool segment (as the spool reads what a crash left),
/// and as one record's payload (what a frame whose checksum matches by chance
/// holds): no panic, whatever the bytes. A record read either way is written
/// again and read back equal.
#[cfg(feature = "spool")]
pub fn spool_segment(data: &[u8]) {
    for version in 1..=binary::VERSION {
        if let Some(record) = binary::decode_whole(data, version) {
            let mut again = Vec::new();
            binary::encode_whole(&mut again, &record);
            assert_eq!(binary::decode_whole(&again, binary::VERSION), Some(record));
        }
    }
    let read = segment::read_all(data);
    let mut again = segment::header().to_vec();
    for record in &read.records {
        segment::put_record(&mut again, record);
    }
    let back = segment::read_all(&again);
    assert!(!back.damaged && back.undecodable == 0);
    assert_eq!(back.records, read.records);
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    /// Every file in `fuzz/regressions/<target>`.
    fn regressions(target: &str) -> Vec<(String, Vec<u8>)> {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("fuzz/regressions")
            .join(target);
        let mut inputs: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|entry| {
                let path = entry.unwrap().path();
                (path.display().to_string(), std::fs::read(&path).unwrap())
            })
            .collect();
        inputs.sort();
        inputs
    }

    #[test]
    fn redact_regressions_hold() {
        let inputs = regressions("redact");
        assert!(!inputs.is_empty());
        for (name, data) in inputs {
            eprintln!("{name}");
            super::redact(&data);
        }
    }

    #[cfg(feature = "spool")]
    #[test]
    fn spool_segment_regressions_hold() {
        let inputs = regressions("spool_segment");
        assert!(!inputs.is_empty());
        for (name, data) in inputs {
            eprintln!("{name}");
            super::spool_segment(&data);
        }
    }

    #[test]
    fn grpc_frames_regressions_hold() {
        for (name, data) in regressions("grpc_frames") {
            eprintln!("{name}");
            super::grpc_frames(&data);
        }
    }
}

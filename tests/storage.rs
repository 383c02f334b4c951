//! The storage form (`UsageRecord::to_storage_bytes` / `from_storage_bytes`):
//! lossless for every record the layer can produce, as a property over
//! generated records, and frozen: the golden bytes of version 1 below must
//! read back as the same record in every later release.

#[path = "support/records.rs"]
mod records;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue};
use proptest::prelude::*;
use tower_usage::sink::StorageError;
use tower_usage::{CaptureNotes, CapturedBody, GrpcCall, Outcome, SinkError, UsageRecord};

/// Header values in order, each with whether it is sensitive: `HeaderMap`'s
/// equality does not compare sensitivity.
fn flags(map: &HeaderMap) -> Vec<(String, Vec<u8>, bool)> {
    map.iter()
        .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec(), v.is_sensitive()))
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1024))]

    #[test]
    fn every_record_comes_back_from_its_storage_form(record in records::usage_record()) {
        let bytes = record.to_storage_bytes();
        prop_assert_eq!(bytes[1], UsageRecord::STORAGE_VERSION);
        let back = UsageRecord::from_storage_bytes(&bytes)
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(&back, &record);
        prop_assert_eq!(flags(&back.request.headers), flags(&record.request.headers));
        prop_assert_eq!(flags(&back.response_headers), flags(&record.response_headers));
        // Appending to a buffer writes the same bytes.
        let mut buf = b"prefix".to_vec();
        record.write_storage_bytes(&mut buf);
        prop_assert_eq!(&buf[6..], &bytes[..]);
    }

    #[test]
    fn damaged_bytes_are_refused_never_misread(
        record in records::usage_record(),
        cut in any::<prop::sample::Index>(),
    ) {
        let bytes = record.to_storage_bytes();
        let cut = cut.index(bytes.len());
        prop_assert!(UsageRecord::from_storage_bytes(&bytes[..cut]).is_err());
        let mut longer = bytes.clone();
        longer.push(0);
        prop_assert!(UsageRecord::from_storage_bytes(&longer).is_err());
    }
}

/// A record with every field set, some to what only a storage form keeps.
fn golden_record() -> UsageRecord {
    let mut headers = HeaderMap::new();
    headers.append("host", HeaderValue::from_static("api.example.com"));
    headers.append("accept", HeaderValue::from_static("text/html"));
    headers.append("accept", HeaderValue::from_static("application/json"));
    headers.append(
        "x-name",
        HeaderValue::from_bytes(b"caf\xc3\xa9 \xe9").unwrap(),
    );
    let mut auth = HeaderValue::from_static("[REDACTED]");
    auth.set_sensitive(true);
    headers.append("authorization", auth);
    let mut response_headers = HeaderMap::new();
    response_headers.append("set-cookie", HeaderValue::from_static("a=1"));
    response_headers.append("set-cookie", HeaderValue::from_static("b=2"));
    let mut capture = CaptureNotes::default();
    capture.request_headers_cut = 350_114;
    capture.response_body_decoded = Some("gzip".into());
    let mut record = UsageRecord {
        id: "01GPGRA4GZ0000000000000000".into(),
        consumer: Some("key:3f9a".into()),
        method: "POST".into(),
        path: "/rest/v1/airdrop/I4WT".into(),
        route: Some("/rest/v1/airdrop/{batchId}".into()),
        response: CapturedBody {
            size: 31,
            ..CapturedBody::complete(&b"{\"ok\":true}"[..])
        },
        response_headers,
        status: 201,
        created_at: time::macros::datetime!(2023-01-11 08:07:39.839 UTC),
        duration_us: 1_840,
        outcome: Outcome::ClientGone,
        grpc: Some(GrpcCall {
            status: Some(5),
            message: Some("not found".into()),
            request_messages: 1,
            response_messages: 0,
        }),
        capture,
        ..UsageRecord::default()
    };
    record.request.body = CapturedBody::truncated(Bytes::from_static(b"\xff\x00abc"), 1_048_576);
    record.request.query = "a=1&b=2&b=3".into();
    record.request.params = vec![("batchId".into(), "I4WT".into())];
    record.request.headers = headers;
    record
}

/// `golden_record()` as version 1 wrote it. Never change these bytes: a
/// release that cannot read them breaks every store written before it.
const GOLDEN_V1: &str = "\
    f501c04d2717ae3239170000000000000000c9001a3031475047524134475a30\
    303030303030303030303030303030bf04504f5354152f726573742f76312f61\
    697264726f702f49345754086b65793a33663961013007000000000000000010\
    00000000001f000000000000001a2f726573742f76312f61697264726f702f7b\
    626174636849647d05ff006162630b613d3126623d3226623d33010762617463\
    684964044934575405000000000400686f73740f0000006170692e6578616d70\
    6c652e636f6d00060061636365707409000000746578742f68746d6c00060061\
    6363657074100000006170706c69636174696f6e2f6a736f6e000600782d6e61\
    6d6507000000636166c3a920e9010d00617574686f72697a6174696f6e0a0000\
    005b52454441435445445d0b7b226f6b223a747275657d02000000000a007365\
    742d636f6f6b696503000000613d31000a007365742d636f6f6b696503000000\
    623d320500096e6f7420666f756e640100000000000000000000000000000039\
    7b227265717565737448656164657273437574223a3335303131342c22726573\
    706f6e7365426f64794465636f646564223a22677a6970227d";

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Vec<u8> {
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap())
        .collect()
}

#[test]
fn version_1_bytes_read_back_in_every_release() {
    let golden = unhex(GOLDEN_V1);
    let record = golden_record();
    let back = UsageRecord::from_storage_bytes(&golden).expect("version 1 bytes read back");
    assert_eq!(back, record);
    assert_eq!(flags(&back.request.headers), flags(&record.request.headers));
    // While version 1 is the one written, it is written byte for byte.
    if UsageRecord::STORAGE_VERSION == 1 {
        assert_eq!(hex(&record.to_storage_bytes()), GOLDEN_V1);
    }
}

/// `golden_record()` with a trace, as version 2 wrote it. Never change
/// these bytes.
const GOLDEN_V2: &str = "\
    f502c04d2717ae3239170000000000000000c9001a3031475047524134475a30\
    303030303030303030303030303030bf04504f5354152f726573742f76312f61\
    697264726f702f49345754086b65793a33663961013007000000000000000010\
    00000000001f000000000000001a2f726573742f76312f61697264726f702f7b\
    626174636849647d014bf92f3577b34da6a3ce929d0e0e473600f067aa0ba902\
    b705ff006162630b613d3126623d3226623d3301076261746368496404493457\
    5405000000000400686f73740f0000006170692e6578616d706c652e636f6d00\
    060061636365707409000000746578742f68746d6c0006006163636570741000\
    00006170706c69636174696f6e2f6a736f6e000600782d6e616d650700000063\
    6166c3a920e9010d00617574686f72697a6174696f6e0a0000005b5245444143\
    5445445d0b7b226f6b223a747275657d02000000000a007365742d636f6f6b69\
    6503000000613d31000a007365742d636f6f6b696503000000623d320500096e\
    6f7420666f756e6401000000000000000000000000000000397b227265717565\
    737448656164657273437574223a3335303131342c22726573706f6e7365426f\
    64794465636f646564223a22677a6970227d";

fn golden_record_v2() -> UsageRecord {
    let mut record = golden_record();
    record.trace = Some(tower_usage::TraceContext {
        trace_id: "4bf92f3577b34da6a3ce929d0e0e4736".into(),
        span_id: "00f067aa0ba902b7".into(),
    });
    record
}

#[test]
fn version_2_bytes_read_back_in_every_release() {
    let record = golden_record_v2();
    let golden = unhex(GOLDEN_V2);
    assert_eq!(golden[1], 2);
    let back = UsageRecord::from_storage_bytes(&golden).expect("version 2 bytes read back");
    assert_eq!(back, record);
    // While version 2 is the one written, it is written byte for byte.
    if UsageRecord::STORAGE_VERSION == 2 {
        assert_eq!(hex(&record.to_storage_bytes()), GOLDEN_V2);
    }
    // A record without a trace is written in version 2 too, and reads back.
    let plain = golden_record();
    let bytes = plain.to_storage_bytes();
    assert_eq!(bytes[1], UsageRecord::STORAGE_VERSION);
    assert_eq!(UsageRecord::from_storage_bytes(&bytes).unwrap(), plain);
}

#[test]
fn bytes_that_are_not_a_storage_form_are_refused_with_a_reason() {
    let json = serde_json::to_vec(&golden_record()).unwrap();
    let err = UsageRecord::from_storage_bytes(&json).unwrap_err();
    assert!(err.to_string().contains("not a stored record"), "{err}");
    assert_eq!(err.newer_version(), None);

    let mut newer = unhex(GOLDEN_V1);
    newer[1] = UsageRecord::STORAGE_VERSION + 1;
    let err: StorageError = UsageRecord::from_storage_bytes(&newer).unwrap_err();
    assert_eq!(err.newer_version(), Some(UsageRecord::STORAGE_VERSION + 1));
    assert!(err.to_string().contains("upgrade tower-usage"), "{err}");
    // In a sink, `?` makes it a permanent `Corrupt` error.
    let sink_err = SinkError::from(err);
    assert_eq!(sink_err.kind(), tower_usage::SinkErrorKind::Corrupt);
    assert!(!sink_err.is_temporary());
}

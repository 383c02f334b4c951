//! Assembling a record: a [`Captured`] exchange becomes a [`UsageRecord`] (the
//! redaction, query and route-param parsing, the gRPC result, the token hash and
//! the id). Runs on the writer, off the request path. It lives in the writer,
//! not in `record`, so that `record` stays a leaf that knows nothing of the
//! capture buffer.

use http::HeaderMap;
use time::OffsetDateTime;

use crate::captured::{Captured, Part};
use crate::record::encoding::{self, EncodedBody};
use crate::record::{
    params_for, truncate_to_millis, CaptureNotes, CapturedBody, GrpcCall, HeaderVerdicts, Outcome,
    RecordedRequest, UsageRecord, GRPC_CANCELLED,
};

/// Header maps kept for reuse, at most: two per record of a batch of 32 (the
/// writer's batches under a steady load are smaller; a larger one allocates
/// the rest). With [`KEEP_MAP_CAPACITY`], the kept maps take under 0.5 MiB,
/// outside `queue_bytes`.
const KEEP_MAPS: usize = 64;
/// A map that grew past this many entries, or held more values (repeated
/// names keep their extra values in a list of their own, which `clear`
/// keeps allocated), is not kept: a hostile record's map should not stay
/// allocated.
const KEEP_MAP_CAPACITY: usize = 32;

/// Builds records: [`assemble`](Self::assemble), with what one record leaves
/// for the next kept (the header rules' verdicts on names, and the header
/// maps of written records, handed back with [`recycle`](Self::recycle)).
/// Owned by the writer task.
#[derive(Debug, Default)]
pub(crate) struct Assembler {
    verdicts: HeaderVerdicts,
    maps: Vec<HeaderMap>,
}

impl Assembler {
    /// Builds the record of a captured exchange.
    pub(crate) fn assemble(&mut self, captured: Captured) -> UsageRecord {
        assemble(captured, self)
    }

    /// Takes back the header maps of a record that is written (their
    /// allocations serve the next records), and drops the rest of it.
    pub(crate) fn recycle(&mut self, mut record: UsageRecord) {
        for map in [
            std::mem::take(&mut record.request.headers),
            std::mem::take(&mut record.response_headers),
        ] {
            if self.maps.len() < KEEP_MAPS
                && map.len() <= KEEP_MAP_CAPACITY
                && (1..=KEEP_MAP_CAPACITY).contains(&map.capacity())
            {
                let mut map = map;
                map.clear();
                self.maps.push(map);
            }
        }
    }

    fn map(&mut self) -> HeaderMap {
        self.maps.pop().unwrap_or_default()
    }
}

/// Builds the record of a captured exchange. Runs on the writer task.
fn assemble(captured: Captured, reuse: &mut Assembler) -> UsageRecord {
    let Captured {
        id,
        created,
        method,
        consumer,
        identify_later,
        protocol,
        status,
        redaction,
        headers_cut,
        body_unread,
        body_limits,
        packed,
        outcome,
        duration_us,
    } = captured;
    let created_at = truncate_to_millis(OffsetDateTime::from(created));
    let route = packed.str(Part::Route).map(str::to_owned);
    let mut path = packed.str(Part::Path).unwrap_or_default().to_owned();
    if !protocol.is_grpc() {
        if let Some(masked) = redaction.path(&path, route.as_deref()) {
            path = masked;
        }
    }
    let query = packed
        .str(Part::Query)
        .map(|q| redaction.query(q).into_owned())
        .unwrap_or_default();
    let request_headers = packed.headers_into(Part::RequestHeaders, reuse.map());
    let mut response_headers = packed.headers_into(Part::ResponseHeaders, reuse.map());
    for (name, value) in &packed.headers(Part::ResponseTrailers) {
        response_headers.insert(name.clone(), value.clone());
    }

    let (mut request_body, mut response_body) = packed.bodies();
    let mut capture = CaptureNotes {
        request_headers_cut: headers_cut,
        request_body_unread: body_unread,
        ..CaptureNotes::default()
    };
    // A body in a `Content-Encoding` is redacted in its decoded form (gRPC
    // messages carry their own compression, out of scope like their payloads).
    if !protocol.is_grpc() {
        let (decoded, withheld) = decode_body(&mut request_body, &request_headers, body_limits.0);
        (capture.request_body_decoded, capture.request_body_withheld) = (decoded, withheld);
        let (decoded, withheld) = decode_body(&mut response_body, &response_headers, body_limits.1);
        (
            capture.response_body_decoded,
            capture.response_body_withheld,
        ) = (decoded, withheld);
    }
    request_body.bytes = redaction.body(request_body.bytes, &request_headers, protocol);
    response_body.bytes = redaction.body(response_body.bytes, &response_headers, protocol);

    let grpc = protocol.is_grpc();
    let params = params_for(route.as_deref(), &path, grpc);
    let grpc = grpc.then(|| {
        let mut status = packed
            .header_value(Part::GrpcStatus)
            .as_ref()
            .and_then(|v| v.to_str().ok())
            .and_then(|s| s.trim().parse().ok());
        if status.is_none() && outcome == Outcome::Cancelled {
            // The call was cancelled before the server sent a status: what
            // the client sees too.
            status = Some(GRPC_CANCELLED);
        }
        GrpcCall {
            status,
            message: packed
                .header_value(Part::GrpcMessage)
                .as_ref()
                .and_then(|v| v.to_str().ok())
                .map(|m| {
                    percent_encoding::percent_decode_str(m)
                        .decode_utf8_lossy()
                        .into_owned()
                }),
            request_messages: packed.request.messages,
            response_messages: packed.response.messages,
        }
    });

    let consumer = match identify_later {
        Some(identify) => identify.of_headers(&request_headers),
        None => consumer,
    };
    UsageRecord {
        id: id.unwrap_or_else(|| UsageRecord::new_id(created_at)),
        consumer,
        method: method.as_str().to_owned(),
        path,
        route,
        request: RecordedRequest {
            body: request_body,
            query,
            params,
            headers: redaction.headers_cached(request_headers, &mut reuse.verdicts),
        },
        response: response_body,
        response_headers: redaction.headers_cached(response_headers, &mut reuse.verdicts),
        status,
        created_at,
        duration_us,
        outcome,
        grpc,
        capture,
    }
}

/// Replaces a body in a `Content-Encoding` by its decoded form, or by nothing
/// when it cannot be decoded; returns the encoding (decoded, withheld).
fn decode_body(
    body: &mut CapturedBody,
    headers: &http::HeaderMap,
    limit: usize,
) -> (Option<String>, Option<String>) {
    match encoding::decode(std::mem::take(&mut body.bytes), headers, limit) {
        EncodedBody::Plain(bytes) => {
            body.bytes = bytes;
            (None, None)
        }
        EncodedBody::Decoded {
            bytes,
            encoding,
            cut,
        } => {
            body.bytes = bytes;
            body.truncated |= cut;
            (Some(encoding), None)
        }
        EncodedBody::Withheld { encoding } => {
            body.truncated = body.size > 0;
            (None, Some(encoding))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::header::{HeaderName, HeaderValue, ACCEPT, HOST};

    fn record_with(request: HeaderMap) -> UsageRecord {
        let mut record = UsageRecord::default();
        record.request.headers = request;
        record
    }

    #[test]
    fn kept_maps_are_empty_and_bounded_in_number_and_size() {
        let mut assembler = Assembler::default();
        let mut small = HeaderMap::new();
        small.insert(HOST, HeaderValue::from_static("h"));
        small.insert(ACCEPT, HeaderValue::from_static("*/*"));
        assembler.recycle(record_with(small));
        assert_eq!(assembler.maps.len(), 1, "the request's map is kept");
        assert!(assembler.maps[0].is_empty());

        // A name repeated past the limit: its extra values' list would stay
        // allocated in a kept map.
        let mut repeated = HeaderMap::new();
        let name = HeaderName::from_static("x-many");
        for _ in 0..=KEEP_MAP_CAPACITY {
            repeated.append(name.clone(), HeaderValue::from_static("v"));
        }
        assembler.recycle(record_with(repeated));
        // Many names: the map grew past the limit.
        let mut wide = HeaderMap::new();
        for i in 0..=KEEP_MAP_CAPACITY {
            let name = HeaderName::try_from(format!("x-h{i}")).unwrap();
            wide.insert(name, HeaderValue::from_static("v"));
        }
        assembler.recycle(record_with(wide));
        assert_eq!(assembler.maps.len(), 1, "neither large map is kept");

        for _ in 0..KEEP_MAPS * 2 {
            let mut map = HeaderMap::new();
            map.insert(HOST, HeaderValue::from_static("h"));
            assembler.recycle(record_with(map));
        }
        assert_eq!(assembler.maps.len(), KEEP_MAPS);
        assert!(assembler.maps.iter().all(HeaderMap::is_empty));
    }
}

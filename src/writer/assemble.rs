//! Assembling a record: a [`Captured`] exchange becomes a [`UsageRecord`] (the
//! redaction, query and route-param parsing, the gRPC result, the token hash and
//! the id). Runs on the writer, off the request path. It lives in the writer,
//! not in `record`, so that `record` stays a leaf that knows nothing of the
//! capture buffer.

use bytes::Bytes;
use http::HeaderMap;
use time::OffsetDateTime;

use super::recycle::{refill, Recycler};
use crate::captured::{Captured, Part};
use crate::record::charset::{self, TextBody};
use crate::record::encoding::{self, EncodedBody};
use crate::record::{
    params_into, truncate_to_millis, CaptureNotes, CapturedBody, GrpcCall, HeaderVerdicts, Outcome,
    RecordedRequest, TraceContext, UsageRecord, GRPC_CANCELLED,
};

/// Builds records: [`assemble`](Self::assemble), with what one record leaves
/// for the next kept: the header rules' verdicts on names, and (in a
/// [`Recycler`]) the allocations of written records, handed back with
/// [`recycle`](Self::recycle). Owned by the writer task.
#[derive(Debug, Default)]
pub(crate) struct Assembler {
    verdicts: HeaderVerdicts,
    recycler: Recycler,
}

impl Assembler {
    /// Builds the record of a captured exchange.
    pub(crate) fn assemble(&mut self, captured: Captured) -> UsageRecord {
        assemble(captured, self)
    }

    /// Takes back the allocations of a record that is written (its strings and
    /// header maps serve the next records), and drops the rest of it.
    pub(crate) fn recycle(&mut self, record: UsageRecord) {
        self.recycler.recycle(record);
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
        oldest_in_flight: _,
        outcome,
        duration_us,
        policy_withheld,
    } = captured;
    // Every string below is written over one of a written record's, cleared
    // first: nothing of that record is read.
    let mut spare = reuse.recycler.spare();
    let created_at = truncate_to_millis(OffsetDateTime::from(created));
    let route = packed.str(Part::Route).map(|r| refill(spare.route, r));
    let mut path = refill(spare.path, packed.str(Part::Path).unwrap_or_default());
    if !protocol.is_grpc() {
        if let Some(masked) = redaction.path(&path, route.as_deref()) {
            path = masked;
        }
    }
    let query = match packed.str(Part::Query) {
        Some(q) => refill(spare.query, &redaction.query(q)),
        None => String::new(),
    };
    let request_headers = packed.headers_into(Part::RequestHeaders, reuse.recycler.map());
    let trace = TraceContext::from_headers(&request_headers);
    let mut response_headers = packed.headers_into(Part::ResponseHeaders, reuse.recycler.map());
    let trailers = packed.headers(Part::ResponseTrailers);
    if trailers
        .keys()
        .any(|name| response_headers.get_all(name).iter().nth(1).is_some())
    {
        // A trailer replaces a name the headers hold more than once:
        // `insert` would keep the list of the replaced values allocated, in a
        // map the writer reuses. The rest in a new map instead.
        let mut rest = HeaderMap::with_capacity(response_headers.keys_len());
        for (name, value) in &response_headers {
            if !trailers.contains_key(name) {
                rest.append(name.clone(), value.clone());
            }
        }
        response_headers = rest;
    }
    for (name, value) in &trailers {
        response_headers.insert(name.clone(), value.clone());
    }

    let (mut request_body, mut response_body) = packed.bodies();
    let mut capture = CaptureNotes {
        request_headers_cut: headers_cut,
        request_body_unread: body_unread,
        ..CaptureNotes::default()
    };
    // The headers that say how each body is encoded: kept apart when the
    // request headers were cut, or the kept response headers leave them out.
    let request_heads = packed.headers_if_packed(Part::RequestBodyHeads);
    let request_heads = request_heads.as_ref().unwrap_or(&request_headers);
    let response_heads = packed.headers_if_packed(Part::ResponseBodyHeads);
    let response_heads = response_heads.as_ref().unwrap_or(&response_headers);
    // A body in a `Content-Encoding`, or in a charset other than UTF-8, is
    // redacted in its decoded form (gRPC messages carry their own
    // compression, out of scope like their payloads).
    // A body the capture policy withheld has no bytes to read: the record
    // says why, when there was a body.
    let policy_note = |reason: Option<&str>, body: &CapturedBody| {
        reason.filter(|_| body.size > 0).map(str::to_owned)
    };
    capture.request_body_policy = policy_note(policy_withheld.0, &request_body);
    capture.response_body_policy = policy_note(policy_withheld.1, &response_body);
    if !protocol.is_grpc() {
        if policy_withheld.0.is_none() {
            let notes = read_body(&mut request_body, request_heads, body_limits.0);
            (
                capture.request_body_decoded,
                capture.request_body_charset,
                capture.request_body_withheld,
            ) = notes;
        }
        if policy_withheld.1.is_none() {
            let notes = read_body(&mut response_body, response_heads, body_limits.1);
            (
                capture.response_body_decoded,
                capture.response_body_charset,
                capture.response_body_withheld,
            ) = notes;
        }
    }
    request_body.bytes = redaction.body(request_body.bytes, request_heads, protocol);
    response_body.bytes = redaction.body(response_body.bytes, response_heads, protocol);

    let grpc = protocol.is_grpc();
    let mut params = std::mem::take(&mut spare.params);
    params_into(route.as_deref(), &path, grpc, &mut params);
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
        Some(identify) => identify.of_headers_into(&request_headers, spare.consumer),
        None => consumer,
    };
    let id = id.unwrap_or_else(|| {
        let mut id = spare.id;
        UsageRecord::write_id(created_at, &mut id);
        id
    });
    UsageRecord {
        id,
        consumer,
        method: refill(spare.method, method.as_str()),
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
        trace,
    }
}

/// Replaces a body in a `Content-Encoding` by its decoded form, and text in
/// a charset other than UTF-8 by its UTF-8 form; or by nothing when it cannot
/// be read. Returns what the record notes: the encoding decoded, the charset
/// converted, and why the body was withheld.
fn read_body(
    body: &mut CapturedBody,
    headers: &http::HeaderMap,
    limit: usize,
) -> (Option<String>, Option<String>, Option<String>) {
    let withhold = |body: &mut CapturedBody| {
        body.bytes = Bytes::new();
        body.truncated = body.size > 0;
    };
    let decoded = match encoding::decode(std::mem::take(&mut body.bytes), headers, limit) {
        EncodedBody::Plain(bytes) => {
            body.bytes = bytes;
            None
        }
        EncodedBody::Decoded {
            bytes,
            encoding,
            cut,
        } => {
            body.bytes = bytes;
            body.truncated |= cut;
            Some(encoding)
        }
        EncodedBody::Withheld { encoding } => {
            withhold(body);
            return (None, None, Some(encoding));
        }
    };
    match charset::to_utf8(std::mem::take(&mut body.bytes), headers, limit) {
        TextBody::Unchanged(bytes) => {
            body.bytes = bytes;
            (decoded, None, None)
        }
        TextBody::Converted {
            bytes,
            charset,
            cut,
        } => {
            body.bytes = bytes;
            body.truncated |= cut;
            (decoded, Some(charset), None)
        }
        TextBody::Withheld { reason } => {
            withhold(body);
            (decoded, None, Some(reason))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::header::HeaderValue;
    use std::sync::Arc;
    use std::time::SystemTime;

    use crate::captured::Packed;
    use crate::hooks::{IdentifyConsumer, Protocol};
    use crate::record::Redaction;

    /// A GET capture of `path` and `query` under `route`, with these request
    /// headers.
    fn captured(
        path: &str,
        query: Option<&str>,
        route: Option<&str>,
        headers: &HeaderMap,
    ) -> Captured {
        let none = HeaderMap::new();
        captured_with_response(path, query, route, headers, (&none, &none))
    }

    /// [`captured`], with these response headers and trailers.
    fn captured_with_response(
        path: &str,
        query: Option<&str>,
        route: Option<&str>,
        headers: &HeaderMap,
        (response, trailers): (&HeaderMap, &HeaderMap),
    ) -> Captured {
        let mut texts = vec![(Part::Path, path)];
        texts.extend(query.map(|q| (Part::Query, q)));
        texts.extend(route.map(|r| (Part::Route, r)));
        let maps = [
            (Part::RequestHeaders, headers),
            (Part::ResponseHeaders, response),
            (Part::ResponseTrailers, trailers),
        ];
        let packed = Packed::of_parts(&texts, &maps);
        Captured {
            id: None,
            created: SystemTime::now(),
            method: http::Method::GET,
            consumer: None,
            identify_later: Some(IdentifyConsumer::bearer()),
            protocol: Protocol::of(headers),
            status: 200,
            redaction: Arc::new(Redaction::default()),
            headers_cut: 0,
            body_unread: false,
            body_limits: (1024, 1024),
            packed,
            oldest_in_flight: SystemTime::now(),
            outcome: Outcome::Complete,
            duration_us: 1,
            policy_withheld: (None, None),
        }
    }

    #[test]
    fn a_record_built_on_a_recycled_one_keeps_nothing_of_it() {
        let mut assembler = Assembler::default();
        let mut full = HeaderMap::new();
        full.insert(
            "authorization",
            HeaderValue::from_static("Bearer t0ken-of-alice"),
        );
        full.insert("x-a", HeaderValue::from_static("1"));
        let first = assembler.assemble(captured(
            "/v1/a/1/b/2/c/3",
            Some("page=2&sort=name"),
            Some("/v1/a/{a}/b/{b}/c/{c}"),
            &full,
        ));
        assert!(first.consumer.is_some() && first.route.is_some());
        assert_eq!(first.request.params.len(), 3);
        assert_eq!(first.request.query, "page=2&sort=name");
        let first_id = first.id.clone();
        assembler.recycle(first);

        // Nothing of the first: no query, route, params, consumer or headers.
        let second = assembler.assemble(captured("/x", None, None, &HeaderMap::new()));
        assert_eq!(second.path, "/x");
        assert_eq!(second.method, "GET");
        assert_eq!(second.request.query, "");
        assert_eq!(second.route, None);
        assert!(second.request.params.is_empty());
        assert_eq!(second.consumer, None);
        assert!(second.request.headers.is_empty());
        assert_ne!(second.id, first_id);
        assert_eq!(second.id.len(), 26);
        assert_eq!(
            assembler.recycler.spares(),
            0,
            "the first's strings were reused"
        );
        assembler.recycle(second);

        // Fewer params than the record before, and another consumer.
        let mut bob = HeaderMap::new();
        bob.insert(
            "authorization",
            HeaderValue::from_static("Bearer t0ken-of-bob"),
        );
        let third = assembler.assemble(captured("/v1/a/9", Some("x"), Some("/v1/a/{a}"), &bob));
        assert_eq!(third.request.params, [("a".to_owned(), "9".to_owned())]);
        assert_eq!(third.request.query, "x");
        assert_eq!(
            third.consumer,
            IdentifyConsumer::bearer().of_headers(&bob),
            "bob's id, not alice's"
        );
        assert_eq!(third.request.headers.len(), 1);
    }

    #[test]
    fn trailers_win_over_headers_of_the_same_name_however_many() {
        let mut response = HeaderMap::new();
        response.insert("content-type", HeaderValue::from_static("application/grpc"));
        for _ in 0..100 {
            response.append("x-a", HeaderValue::from_static("header"));
        }
        response.insert("x-b", HeaderValue::from_static("kept"));
        let mut trailers = HeaderMap::new();
        trailers.insert("x-a", HeaderValue::from_static("trailer"));
        trailers.insert("grpc-status", HeaderValue::from_static("0"));
        let mut assembler = Assembler::default();
        let none = HeaderMap::new();
        for repeats in [100, 1, 0] {
            response.remove("x-a");
            for _ in 0..repeats {
                response.append("x-a", HeaderValue::from_static("header"));
            }
            let record = assembler.assemble(captured_with_response(
                "/p",
                None,
                None,
                &none,
                (&response, &trailers),
            ));
            let headers = &record.response_headers;
            let a: Vec<_> = headers.get_all("x-a").iter().collect();
            assert_eq!(a, ["trailer"], "{repeats}");
            assert_eq!(headers["x-b"], "kept");
            assert_eq!(headers["content-type"], "application/grpc");
            assert_eq!(headers["grpc-status"], "0");
            assert_eq!(headers.len(), 4, "{repeats}");
            assembler.recycle(record);
        }
    }
}

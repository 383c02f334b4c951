//! [`Pending`]: an exchange in flight, from the request's arrival to the record's
//! emission, and what the response side adds ([`ResponseCapture`]). Finishing it
//! packs the rest and hands a [`Captured`] to the writer's queue.

use std::sync::Arc;
use std::time::{Instant, SystemTime};

use http::{HeaderMap, HeaderName, HeaderValue, Method};

use super::layer::CaptureConfig;
use super::pack::Packer;
use super::tap::{lock_tap, SharedTap, Tap};
use crate::captured::{Captured, Part};
use crate::hooks::{BodyPlan, Ending, IdentifyConsumer, Protocol, Side};
use crate::record::Outcome;
use crate::writer::InFlight;

/// A request in flight: what was captured before the response.
pub(crate) struct Pending {
    pub(crate) started: Instant,
    pub(crate) created: SystemTime,
    pub(crate) method: Method,
    /// The path, query, route and request headers, already packed, with room
    /// for the rest (see [`Packer::for_request`]).
    pub(crate) packer: Packer,
    /// The consumer; `None` also when it is still to be derived from the
    /// bearer token (`identify_later`).
    pub(crate) consumer: Option<String>,
    pub(crate) identify_later: Option<IdentifyConsumer>,
    /// Decided once, from the request's `content-type`.
    pub(crate) protocol: Protocol,
    /// Request header bytes not kept (past `max_header_bytes`).
    pub(crate) headers_cut: u64,
    /// The request body's length as announced (`Content-Length`), if known.
    pub(crate) announced_body: Option<u64>,
    pub(crate) request_tap: Option<SharedTap>,
    pub(crate) config: Arc<CaptureConfig>,
    /// The exchange, counted in flight (holding the writer's
    /// `complete_until` back) until its capture is queued, or it is dropped.
    /// Taken when the capture is handed over, so a queued capture never keeps
    /// the queue alive.
    pub(crate) queue: Option<InFlight>,
    /// The record's id when it was made on the request path (for the
    /// [record id header](crate::UsageLayer::record_id_header)); else the
    /// writer makes it.
    pub(crate) id: Option<String>,
    /// What the capture policy keeps of the bodies (both, always, without one).
    pub(crate) plan: BodyPlan,
}

impl std::fmt::Debug for Pending {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pending")
            .field("method", &self.method)
            .finish_non_exhaustive()
    }
}

/// What the response side adds (besides the kept headers, which go straight
/// into the [`Pending::packer`]).
#[derive(Debug, Default)]
pub(crate) struct ResponseCapture {
    pub(crate) status: u16,
    pub(crate) body: Option<Tap>,
    /// gRPC calls: `grpc-status` and `grpc-message`, from the trailers, else the
    /// headers.
    pub(crate) grpc_status: Option<HeaderValue>,
    pub(crate) grpc_message: Option<HeaderValue>,
}

impl ResponseCapture {
    /// Notes `grpc-status` / `grpc-message` from response headers or trailers;
    /// later calls (trailers) win.
    pub(crate) fn note_grpc(&mut self, map: &HeaderMap) {
        const GRPC_STATUS: HeaderName = HeaderName::from_static("grpc-status");
        const GRPC_MESSAGE: HeaderName = HeaderName::from_static("grpc-message");
        if let Some(v) = map.get(GRPC_STATUS) {
            self.grpc_status = Some(v.clone());
        }
        if let Some(v) = map.get(GRPC_MESSAGE) {
            self.grpc_message = Some(v.clone());
        }
    }
}

impl Pending {
    /// Ends the exchange: packs what the response added, drops
    /// the rest here, and hands the capture to the writer.
    pub(crate) fn finish(mut self, mut response: ResponseCapture, outcome: Outcome) {
        let duration = self.started.elapsed();
        let duration_us = u64::try_from(duration.as_micros()).unwrap_or(u64::MAX);
        let Some(queue) = self.queue.take() else {
            return;
        };
        let request_tap = self.request_tap.take();
        let request_tap = request_tap.as_ref().map(lock_tap);
        let response_tap = response.body.take();
        // What the capture policy withholds, now that the exchange ended.
        let withheld = if self.plan.keeps_all() {
            (None, None)
        } else {
            let ending = Ending {
                error: is_error(&response, outcome),
                duration_us,
            };
            (
                self.plan.withheld(Side::Request, ending),
                self.plan.withheld(Side::Response, ending),
            )
        };
        let mut packer = self.packer;
        let kept = |tap: Option<&Tap>, withheld: Option<&str>| match withheld {
            None => tap.map_or(0, Tap::kept),
            Some(_) => 0,
        };
        // One exact growth, if the room made at the start is too small.
        packer.reserve(
            kept(request_tap.as_deref(), withheld.0)
                + kept(response_tap.as_ref(), withheld.1)
                + response.grpc_status.as_ref().map_or(0, HeaderValue::len)
                + response.grpc_message.as_ref().map_or(0, HeaderValue::len),
        );
        if let Some(v) = &response.grpc_status {
            packer.bytes(Part::GrpcStatus, v.as_bytes());
        }
        if let Some(v) = &response.grpc_message {
            packer.bytes(Part::GrpcMessage, v.as_bytes());
        }
        packer.body(
            Part::RequestBody,
            request_tap.as_deref(),
            withheld.0.is_none(),
        );
        // A body the handler did not read to its end: what was read is no
        // measure of it; the client's announced length is.
        let body_unread = request_tap.as_deref().is_some_and(|tap| !tap.ended());
        if body_unread {
            packer.request_size_at_least(self.announced_body.unwrap_or(0));
        }
        packer.body(
            Part::ResponseBody,
            response_tap.as_ref(),
            withheld.1.is_none(),
        );
        let packed = packer.finish();
        let oldest_in_flight = queue.oldest();
        queue.submit(Captured {
            id: self.id,
            created: self.created,
            method: self.method,
            consumer: self.consumer,
            identify_later: self.identify_later,
            protocol: self.protocol,
            status: response.status,
            redaction: self.config.redaction.clone(),
            headers_cut: self.headers_cut,
            body_unread,
            body_limits: (self.config.request_limit, self.config.response_limit),
            packed,
            oldest_in_flight,
            outcome,
            duration_us,
            policy_withheld: withheld,
        });
    }

    /// Ends an exchange that never got a response.
    pub(crate) fn finish_without_response(self, status: u16, outcome: Outcome) {
        self.finish(
            ResponseCapture {
                status,
                ..ResponseCapture::default()
            },
            outcome,
        );
    }

    /// Packs the response headers the record keeps.
    ///
    /// `content_length`: the length the server will announce when the
    /// response has none yet (see `wrap_response`), kept if `content-length`
    /// is a kept header.
    pub(crate) fn keep_headers(&mut self, headers: &HeaderMap, content_length: Option<u64>) {
        let keep = &self.config.keep_response_headers;
        // The digits on the stack, from the end: a `HeaderValue` would allocate
        // per response, and `format!` machinery costs more than the digits.
        let mut digits = [0u8; 20];
        let added = content_length
            .filter(|_| keep.contains(&http::header::CONTENT_LENGTH))
            .map(|mut len| {
                let mut start = digits.len();
                loop {
                    start -= 1;
                    digits[start] = b'0' + (len % 10) as u8;
                    len /= 10;
                    if len == 0 {
                        break start;
                    }
                }
            });
        // A response has a few headers: comparing names is cheaper than a
        // hash lookup per kept name.
        let few = headers.keys_len() <= 8;
        let kept = keep
            .iter()
            .filter(move |name| !few || headers.keys().any(|k| k == *name))
            .flat_map(|name| {
                headers
                    .get_all(name)
                    .iter()
                    .map(move |v| (name.as_str(), v.as_bytes(), v.is_sensitive()))
            });
        let added = added.map(|start| ("content-length", &digits[start..], false));
        self.packer
            .raw_entries_of(Part::ResponseHeaders, kept.chain(added));
        // Decoding and redaction read the body's type and coding whatever
        // the user keeps.
        if !(keep.contains(&http::header::CONTENT_TYPE)
            && keep.contains(&http::header::CONTENT_ENCODING))
        {
            self.packer.body_heads(Part::ResponseBodyHeads, headers);
        }
    }

    /// Packs the kept response headers that trailers carry (the first value of
    /// each); they replace the same headers from the head.
    pub(crate) fn keep_trailers(&mut self, trailers: &HeaderMap) {
        let keep = &self.config.keep_response_headers;
        self.packer.entries_of(
            Part::ResponseTrailers,
            keep.iter()
                .filter_map(|name| Some((name, trailers.get(name)?))),
        );
    }
}

/// Whether an exchange is an error for the capture policy: a status of 400
/// or more, an exchange that did not complete, or a gRPC status other than
/// `0` (`OK`).
fn is_error(response: &ResponseCapture, outcome: Outcome) -> bool {
    response.status >= 400
        || outcome != Outcome::Complete
        || response
            .grpc_status
            .as_ref()
            .is_some_and(|status| status.as_bytes().trim_ascii() != b"0")
}

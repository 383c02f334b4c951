//! A finished exchange, packed into one buffer of the layer's own.
//!
//! When an exchange ends, everything the record needs from the request and the
//! response (path and query, route, both header maps, both captured bodies, the
//! gRPC status) is copied into one allocation, and the capture's header maps,
//! URI, taps and frames are dropped right there, on the request path. So a
//! queued capture holds a single buffer: no frame or header value of the app's or
//! the transport's is kept alive while it waits, and what the request path
//! allocated is freed where it was allocated, in the allocator's per-thread
//! caches, instead of in bursts on the writer.
//!
//! The writer turns the buffer back into a [`UsageRecord`](crate::UsageRecord):
//! header values and bodies become slices of it, without another copy.

use std::ops::Range;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue};

use super::Tap;
use crate::record::CapturedBody;

/// The parts of a [`Packed`] buffer.
#[derive(Debug, Clone, Copy)]
pub(super) enum Part {
    Path,
    Query,
    Route,
    GrpcStatus,
    GrpcMessage,
    RequestHeaders,
    /// The kept response headers.
    ResponseHeaders,
    /// The kept response headers that the trailers carry (they win).
    ResponseTrailers,
    RequestBody,
    ResponseBody,
}

const PARTS: usize = 10;

/// What a tap saw, without its bytes (which are in the buffer).
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct TapSummary {
    kept: usize,
    size: u64,
    pub(super) messages: u64,
}

/// See the [module docs](self).
#[derive(Debug, Default)]
pub(super) struct Packed {
    bytes: Bytes,
    /// Where each part is in `bytes`, by [`Part`]; `None` when absent.
    parts: [Option<(u32, u32)>; PARTS],
    pub(super) request: TapSummary,
    pub(super) response: TapSummary,
}

/// Bytes one header map takes in the buffer (see [`Packer::headers`]).
pub(super) fn headers_len(map: &HeaderMap) -> usize {
    4 + map
        .iter()
        .map(|(n, v)| 7 + n.as_str().len() + v.len())
        .sum::<usize>()
}

/// Fills a [`Packed`] buffer, part by part.
pub(crate) struct Packer {
    out: Vec<u8>,
    parts: [Option<(u32, u32)>; PARTS],
    request: TapSummary,
    response: TapSummary,
}

impl Packer {
    /// `capacity`: the bytes the parts will take, so the buffer is allocated once.
    pub(super) fn with_capacity(capacity: usize) -> Self {
        Self {
            out: Vec::with_capacity(capacity),
            parts: [None; PARTS],
            request: TapSummary::default(),
            response: TapSummary::default(),
        }
    }

    /// Makes room for `additional` more bytes, exactly, if there is not enough.
    pub(super) fn reserve(&mut self, additional: usize) {
        self.out.reserve_exact(additional);
    }

    fn part(&mut self, part: Part, write: impl FnOnce(&mut Vec<u8>)) {
        let start = self.out.len();
        write(&mut self.out);
        // A capture is at most two body limits and two header maps; a part
        // past 4 GiB is left out rather than misplaced.
        if let (Ok(start), Ok(end)) = (u32::try_from(start), u32::try_from(self.out.len())) {
            self.parts[part as usize] = Some((start, end));
        }
    }

    pub(super) fn bytes(&mut self, part: Part, bytes: &[u8]) {
        self.part(part, |out| out.extend_from_slice(bytes));
    }

    /// A header map: its entry count (`u32`), then per value a flags byte
    /// (1: sensitive), the name's length (`u16`) and name, and the value's
    /// length (`u32`) and value; lengths little-endian.
    pub(super) fn headers(&mut self, part: Part, map: &HeaderMap) {
        self.entries_of(part, map.iter());
    }

    /// The values of `map` named in `keep`, as a header map.
    pub(super) fn kept_headers(&mut self, part: Part, map: &HeaderMap, keep: &[HeaderName]) {
        self.entries_of(
            part,
            keep.iter()
                .flat_map(|name| map.get_all(name).iter().map(move |v| (name, v))),
        );
    }

    pub(super) fn entries_of<'a>(
        &mut self,
        part: Part,
        entries: impl Iterator<Item = (&'a HeaderName, &'a HeaderValue)>,
    ) {
        self.part(part, |out| {
            let count_at = out.len();
            out.extend_from_slice(&0u32.to_le_bytes());
            let mut count = 0u32;
            for (name, value) in entries {
                out.push(u8::from(value.is_sensitive()));
                out.extend_from_slice(&(name.as_str().len() as u16).to_le_bytes());
                out.extend_from_slice(name.as_str().as_bytes());
                out.extend_from_slice(&(value.len() as u32).to_le_bytes());
                out.extend_from_slice(value.as_bytes());
                count += 1;
            }
            out[count_at..count_at + 4].copy_from_slice(&count.to_le_bytes());
        });
    }

    /// A body's kept bytes, and what its tap saw.
    pub(super) fn body(&mut self, part: Part, tap: Option<&Tap>) {
        let Some(tap) = tap else {
            return;
        };
        let summary = TapSummary {
            kept: tap.kept,
            size: tap.size,
            messages: tap.messages(),
        };
        match part {
            Part::RequestBody => self.request = summary,
            _ => self.response = summary,
        }
        self.part(part, |out| tap.chunks.copy_into(out));
    }

    pub(super) fn finish(self) -> Packed {
        Packed {
            bytes: self.out.into(),
            parts: self.parts,
            request: self.request,
            response: self.response,
        }
    }
}

impl Packed {
    fn range(&self, part: Part) -> Option<Range<usize>> {
        let (start, end) = self.parts[part as usize]?;
        Some(start as usize..end as usize)
    }

    /// A part as text; `None` when absent (or, which cannot happen for what the
    /// packer wrote, not UTF-8).
    pub(super) fn str(&self, part: Part) -> Option<&str> {
        std::str::from_utf8(&self.bytes[self.range(part)?]).ok()
    }

    /// A part that was a header value.
    pub(super) fn header_value(&self, part: Part) -> Option<HeaderValue> {
        HeaderValue::from_maybe_shared(self.bytes.slice(self.range(part)?)).ok()
    }

    /// A header map, its values slices of the buffer.
    pub(super) fn headers(&self, part: Part) -> HeaderMap {
        let Some(range) = self.range(part) else {
            return HeaderMap::new();
        };
        let mut reader = Reader {
            bytes: &self.bytes,
            at: range.start,
            end: range.end,
        };
        let count = reader.u32().unwrap_or(0) as usize;
        // `count` is of values; a map sized for that many names may be over
        // `HeaderMap`'s limit (a name repeated 30,000 times is a valid map).
        let mut map =
            HeaderMap::try_with_capacity(count.min(range.len() / 8).min(64)).unwrap_or_default();
        for _ in 0..count {
            let Some((flags, name, value)) = reader.entry() else {
                break;
            };
            let name = HeaderName::from_bytes(&self.bytes[name]);
            let value = HeaderValue::from_maybe_shared(self.bytes.slice(value));
            if let (Ok(name), Ok(mut value)) = (name, value) {
                value.set_sensitive(flags & 1 != 0);
                // Cannot fail for a map that held these values before.
                let _ = map.try_append(name, value);
            }
        }
        map
    }

    /// The two bodies, slices of the buffer.
    pub(super) fn bodies(&self) -> (CapturedBody, CapturedBody) {
        let body = |part: Part, tap: &TapSummary| CapturedBody {
            bytes: self
                .range(part)
                .map(|r| self.bytes.slice(r))
                .unwrap_or_default(),
            size: tap.size,
            truncated: tap.size > tap.kept as u64,
        };
        (
            body(Part::RequestBody, &self.request),
            body(Part::ResponseBody, &self.response),
        )
    }
}

/// Reads a header map back; `None` past its end.
struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
    end: usize,
}

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Option<Range<usize>> {
        let end = self.at.checked_add(n).filter(|&e| e <= self.end)?;
        let range = self.at..end;
        self.at = end;
        Some(range)
    }

    fn u32(&mut self) -> Option<u32> {
        let r = self.take(4)?;
        Some(u32::from_le_bytes(self.bytes[r].try_into().ok()?))
    }

    fn entry(&mut self) -> Option<(u8, Range<usize>, Range<usize>)> {
        let flags = self.bytes[self.take(1)?.start];
        let r = self.take(2)?;
        let name_len = u16::from_le_bytes(self.bytes[r].try_into().ok()?);
        let name = self.take(usize::from(name_len))?;
        let value_len = self.u32()?;
        let value = self.take(value_len as usize)?;
        Some((flags, name, value))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_name_repeated_thirty_thousand_times_comes_back() {
        let mut headers = HeaderMap::new();
        for i in 0..30_000 {
            headers.append("x-a", HeaderValue::from(i));
        }
        let mut packer = Packer::with_capacity(headers_len(&headers));
        packer.headers(Part::RequestHeaders, &headers);
        assert_eq!(packer.finish().headers(Part::RequestHeaders), headers);
    }

    #[test]
    fn every_part_comes_back() {
        let mut headers = HeaderMap::new();
        headers.append("x-a", HeaderValue::from_static("1"));
        headers.append("x-a", HeaderValue::from_static("2"));
        let mut secret = HeaderValue::from_static("s3cret");
        secret.set_sensitive(true);
        headers.insert(http::header::AUTHORIZATION, secret);
        headers.insert("content-type", HeaderValue::from_static("text/plain"));
        let mut tap = Tap::new(4);
        tap.observe(&Bytes::from_static(b"abc"));
        tap.observe(&Bytes::from_static(b"def"));

        let len = headers_len(&headers) + 2 + 4 + 4;
        let mut packer = Packer::with_capacity(len);
        packer.bytes(Part::Path, b"/p");
        packer.headers(Part::RequestHeaders, &headers);
        packer.headers(Part::ResponseHeaders, &HeaderMap::new());
        packer.body(Part::RequestBody, Some(&tap));
        let packed = packer.finish();
        assert_eq!(packed.bytes.len(), len, "the capacity is exact");

        assert_eq!(packed.str(Part::Path), Some("/p"));
        assert_eq!(packed.str(Part::Query), None);
        assert_eq!(packed.headers(Part::RequestHeaders), headers);
        let back = packed.headers(Part::RequestHeaders);
        assert!(back[http::header::AUTHORIZATION].is_sensitive());
        assert!(!back["content-type"].is_sensitive());
        assert!(packed.headers(Part::ResponseHeaders).is_empty());
        let (request, response) = packed.bodies();
        assert_eq!(
            (&request.bytes[..], request.size, request.truncated),
            (&b"abcd"[..], 6, true)
        );
        assert_eq!(
            (response.bytes.len(), response.size, response.truncated),
            (0, 0, false)
        );
    }
}

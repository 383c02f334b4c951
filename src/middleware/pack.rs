//! Packing a capture on the request path: [`Packer`] fills one buffer in the
//! layout that [`captured`](crate::captured) defines and reads back.

use http::{HeaderMap, HeaderName, HeaderValue, Uri};

use super::tap::Tap;
use crate::captured::{Packed, Part, TapSummary, PARTS};
use crate::codec::headers::{encode_entries, encode_raw_entries, encoded_len};

/// What a capped header value ends with.
const CUT_MARK: &[u8] = b"[cut]";

/// The headers that say how a body is encoded, kept apart (see
/// [`Packer::body_heads`]).
const BODY_HEADS: [HeaderName; 3] = [
    http::header::CONTENT_TYPE,
    http::header::CONTENT_ENCODING,
    http::header::TRANSFER_ENCODING,
];

/// The most bytes of names and values of [`BODY_HEADS`] kept apart: 1 KiB.
pub(crate) const BODY_HEADS_BYTES: usize = 1024;

/// What the body heads hold when they exceed [`BODY_HEADS_BYTES`]: a coding
/// that no decoder knows, so the body is withheld, for this reason.
pub(crate) const BODY_HEADS_TOO_LONG: &str = "body-headers-too-long";

/// The bytes of names and values of a header map.
fn header_bytes(headers: &HeaderMap) -> usize {
    headers
        .iter()
        .map(|(n, v)| n.as_str().len() + v.len())
        .sum()
}

/// The headers that fit in `budget` bytes of names and values, in order, and
/// how many bytes were not kept. The header that crosses the budget keeps its
/// name and the start of its value, marked `[cut]`; the ones after it are
/// left out. Only for maps over the budget: it allocates.
fn capped_headers(headers: &HeaderMap, budget: usize) -> (Vec<(&HeaderName, HeaderValue)>, u64) {
    let mut kept = Vec::new();
    let (mut used, mut cut) = (0usize, 0u64);
    for (name, value) in headers {
        let size = name.as_str().len() + value.len();
        if used + size <= budget {
            kept.push((name, value.clone()));
            used += size;
            continue;
        }
        let room = budget.saturating_sub(used + name.as_str().len() + CUT_MARK.len());
        if used < budget && room > 0 {
            let mut bytes = value.as_bytes()[..room.min(value.len())].to_vec();
            bytes.extend_from_slice(CUT_MARK);
            // A prefix of a valid value is valid, and so is the mark.
            if let Ok(mut short) = HeaderValue::from_bytes(&bytes) {
                short.set_sensitive(value.is_sensitive());
                cut += (value.len() - room.min(value.len())) as u64;
                used = budget;
                kept.push((name, short));
                continue;
            }
        }
        cut += size as u64;
    }
    (kept, cut)
}

/// Fills a [`Packed`] buffer, part by part.
pub(crate) struct Packer {
    out: Vec<u8>,
    parts: [Option<(u32, u32)>; PARTS],
    request: TapSummary,
    response: TapSummary,
}

impl Packer {
    /// The packer for a request: its path, query, route and headers, in a
    /// buffer with room for what the exchange adds up to the end (a body of
    /// `body_hint` bytes, and some room for the response), so that it is
    /// usually allocated once, here, at the start of the request.
    ///
    /// The request headers keep at most `max_header_bytes` of names and values
    /// (see [`capped_headers`]); the second value is how many were not kept.
    pub(crate) fn for_request(
        uri: &Uri,
        route: Option<&str>,
        headers: &HeaderMap,
        max_header_bytes: usize,
        body_hint: usize,
    ) -> (Packer, u64) {
        /// Room for the kept response headers and a small response body.
        const RESPONSE_ROOM: usize = 512;
        let (path, query) = (uri.path(), uri.query());
        let header_room = encoded_len(headers).min(max_header_bytes + 4 + 7 * headers.len());
        let mut packer = Packer::with_capacity(
            path.len()
                + query.map_or(0, str::len)
                + route.map_or(0, str::len)
                + header_room
                + body_hint
                + RESPONSE_ROOM,
        );
        packer.bytes(Part::Path, path.as_bytes());
        if let Some(query) = query {
            packer.bytes(Part::Query, query.as_bytes());
        }
        if let Some(route) = route {
            packer.bytes(Part::Route, route.as_bytes());
        }
        let cut = if header_bytes(headers) <= max_header_bytes {
            packer.headers(Part::RequestHeaders, headers);
            0
        } else {
            let (kept, cut) = capped_headers(headers, max_header_bytes);
            packer.entries_of(Part::RequestHeaders, kept.iter().map(|(n, v)| (*n, v)));
            packer.body_heads(Part::RequestBodyHeads, headers);
            cut
        };
        (packer, cut)
    }

    /// `capacity`: the bytes the parts will take, so the buffer is allocated once.
    pub(crate) fn with_capacity(capacity: usize) -> Self {
        Self {
            out: Vec::with_capacity(capacity),
            parts: [None; PARTS],
            request: TapSummary::default(),
            response: TapSummary::default(),
        }
    }

    /// The request body had at least `size` bytes (what the client announced
    /// for a body the handler did not read to its end).
    pub(crate) fn request_size_at_least(&mut self, size: u64) {
        self.request.size = self.request.size.max(size);
    }

    /// Makes room for `additional` more bytes, exactly, if there is not enough.
    pub(crate) fn reserve(&mut self, additional: usize) {
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

    pub(crate) fn bytes(&mut self, part: Part, bytes: &[u8]) {
        self.part(part, |out| out.extend_from_slice(bytes));
    }

    /// A header map, in the layout of [`captured`](crate::captured).
    pub(crate) fn headers(&mut self, part: Part, map: &HeaderMap) {
        self.entries_of(part, map.iter());
    }

    pub(crate) fn entries_of<'a>(
        &mut self,
        part: Part,
        entries: impl Iterator<Item = (&'a HeaderName, &'a HeaderValue)>,
    ) {
        self.part(part, |out| encode_entries(out, entries));
    }

    /// A header map from the parts of its entries, `(name, value, sensitive)`.
    pub(crate) fn raw_entries_of<'a>(
        &mut self,
        part: Part,
        entries: impl Iterator<Item = (&'a str, &'a [u8], bool)>,
    ) {
        self.part(part, |out| encode_raw_entries(out, entries));
    }

    /// The headers that say how a body is encoded (`Content-Type`,
    /// `Content-Encoding`, `Transfer-Encoding`), every value, apart from the
    /// kept header list: the writer decodes and redacts the body by them,
    /// whatever was cut or left out of that list. Over [`BODY_HEADS_BYTES`],
    /// a `content-encoding` of [`BODY_HEADS_TOO_LONG`] instead, which the
    /// writer cannot decode: the body is withheld.
    pub(crate) fn body_heads(&mut self, part: Part, headers: &HeaderMap) {
        let heads = || {
            BODY_HEADS
                .iter()
                .flat_map(|name| headers.get_all(name).iter().map(move |v| (name, v)))
        };
        let bytes: usize = heads().map(|(n, v)| n.as_str().len() + v.len()).sum();
        if bytes <= BODY_HEADS_BYTES {
            self.entries_of(part, heads());
        } else {
            let unknown = HeaderValue::from_static(BODY_HEADS_TOO_LONG);
            self.entries_of(
                part,
                std::iter::once((&http::header::CONTENT_ENCODING, &unknown)),
            );
        }
    }

    /// A body's kept bytes (unless the capture policy withholds them:
    /// `bytes` false), and what its tap saw.
    pub(crate) fn body(&mut self, part: Part, tap: Option<&Tap>, bytes: bool) {
        let Some(tap) = tap else {
            return;
        };
        let mut summary = tap.summary();
        if !bytes {
            summary.kept = 0;
        }
        match part {
            Part::RequestBody => self.request = summary,
            _ => self.response = summary,
        }
        if bytes {
            self.part(part, |out| tap.copy_into(out));
        }
    }

    pub(crate) fn finish(self) -> Packed {
        Packed::new(self.out, self.parts, self.request, self.response)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    #[test]
    fn a_name_repeated_thirty_thousand_times_comes_back() {
        let mut headers = HeaderMap::new();
        for i in 0..30_000 {
            headers.append("x-a", HeaderValue::from(i));
        }
        let mut packer = Packer::with_capacity(encoded_len(&headers));
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

        let len = encoded_len(&headers) + 2 + 4 + 4;
        let mut packer = Packer::with_capacity(len);
        packer.bytes(Part::Path, b"/p");
        packer.headers(Part::RequestHeaders, &headers);
        packer.headers(Part::ResponseHeaders, &HeaderMap::new());
        packer.body(Part::RequestBody, Some(&tap), true);
        let packed = packer.finish();
        assert_eq!(packed.size(), len, "the capacity is exact");

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

    #[test]
    fn headers_past_the_budget_are_cut_and_counted() {
        let mut headers = HeaderMap::new();
        headers.insert("authorization", HeaderValue::from_static("Bearer t"));
        headers.insert("x-big", HeaderValue::from_bytes(&[b'a'; 1000]).unwrap());
        headers.insert("x-after", HeaderValue::from_static("v"));
        let uri: Uri = "/p".parse().unwrap();
        let (packer, cut) = Packer::for_request(&uri, None, &headers, 100, 0);
        let back = packer.finish().headers(Part::RequestHeaders);
        assert_eq!(back["authorization"], "Bearer t");
        let big = back["x-big"].as_bytes();
        assert!(big.ends_with(b"[cut]") && big.len() < 100, "{}", big.len());
        assert!(back.get("x-after").is_none());
        let kept: usize = back.iter().map(|(n, v)| n.as_str().len() + v.len()).sum();
        assert!(kept <= 100, "{kept}");
        // Every byte is either kept or counted as cut (the mark aside).
        assert_eq!(cut as usize + kept - b"[cut]".len(), header_bytes(&headers));
        let (_, none) = Packer::for_request(&uri, None, &headers, 10_000, 0);
        assert_eq!(none, 0);
    }
}

//! gRPC framing: the length-prefixed messages of gRPC and gRPC-Web bodies,
//! followed as they pass ([`MessageCounter`], on the request path) and split
//! when a record is rendered ([`messages`]). The user-facing guide is the
//! crate docs' gRPC section (`src/docs/grpc.md`).

use std::sync::Arc;

use base64::Engine as _;
use bytes::{Buf, Bytes, BytesMut};
use serde::ser::{SerializeMap, SerializeSeq, Serializer};
use serde::Serialize;
use serde_json::Value;

/// gRPC's `CANCELLED` status code.
pub(crate) const GRPC_CANCELLED: u16 = 1;

/// Which way a gRPC message travelled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GrpcDirection {
    /// From the client (the request body).
    Request,
    /// From the server (the response body).
    Response,
}

/// The hook of [`UsageService::grpc_message_json`](crate::UsageService::grpc_message_json):
/// the method path (`/pkg.Service/Method`), the direction, and the bytes of one
/// whole, uncompressed message; `None` leaves the message as base64 only.
pub(crate) type GrpcMessageJson = dyn Fn(&str, GrpcDirection, &[u8]) -> Option<Value> + Send + Sync;

pub(crate) type GrpcMessageJsonFn = Arc<GrpcMessageJson>;

/// One message of a gRPC body, as
/// [`CapturedBody::grpc_messages`](crate::CapturedBody::grpc_messages) finds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GrpcMessage<'a> {
    /// The frame's compressed flag.
    pub compressed: bool,
    /// The message bytes that were captured.
    pub data: &'a [u8],
    /// The length the frame's prefix announced.
    pub size: u32,
}

impl GrpcMessage<'_> {
    /// Whether `data` is only the first part of the message.
    pub fn is_truncated(&self) -> bool {
        (self.data.len() as u64) < u64::from(self.size)
    }
}

/// Splits captured gRPC body bytes into messages; `None` when they are not gRPC
/// frames (a flag byte other than 0 or 1). The last message may be cut short
/// ([`GrpcMessage::is_truncated`]); an incomplete 5-byte prefix at the very end
/// is dropped. Public as [`CapturedBody::grpc_messages`](crate::CapturedBody::grpc_messages).
pub(crate) fn messages(bytes: &[u8]) -> Option<Vec<GrpcMessage<'_>>> {
    let mut out = Vec::new();
    let mut rest = bytes;
    while rest.len() >= 5 {
        let compressed = match rest[0] {
            0 => false,
            1 => true,
            _ => return None,
        };
        let size = u32::from_be_bytes([rest[1], rest[2], rest[3], rest[4]]);
        let body = &rest[5..];
        let take = body.len().min(size as usize);
        out.push(GrpcMessage {
            compressed,
            data: &body[..take],
            size,
        });
        rest = &body[take..];
    }
    if rest.first().is_some_and(|&flag| flag > 1) {
        return None;
    }
    Some(out)
}

/// Counts gRPC messages as a body goes by: follows the 5-byte prefixes, skips
/// the message bytes. Constant state, no buffering.
#[derive(Debug, Default, Clone)]
pub(crate) struct MessageCounter {
    /// Prefix bytes seen of the current frame (0..5); 0 while in a message.
    prefix_seen: u8,
    flag: u8,
    len: u32,
    /// Message bytes still to skip.
    remaining: u64,
    messages: u64,
    /// The data could not be followed (a `Buf` of more than 64 chunks).
    lost: bool,
    /// gRPC-Web: the bytes of the trailers frame (flag `0x80`), up to
    /// [`MAX_WEB_TRAILERS`]; `None` until one starts.
    web_trailers: Option<Vec<u8>>,
}

/// The most bytes of a gRPC-Web trailers frame kept: enough for `grpc-status`
/// and a `grpc-message` of a few KiB.
const MAX_WEB_TRAILERS: usize = 4096;

impl MessageCounter {
    pub(crate) fn messages(&self) -> u64 {
        self.messages
    }

    /// The `grpc-status` and `grpc-message` of a gRPC-Web trailers frame (flag
    /// `0x80`, `name:value` lines, as in HTTP/1), when the body carried one.
    pub(crate) fn web_trailers(&self) -> Option<http::HeaderMap> {
        let bytes = self.web_trailers.as_deref()?;
        let mut map = http::HeaderMap::new();
        for line in bytes.split(|&b| b == b'\n') {
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            let Some(colon) = line.iter().position(|&b| b == b':') else {
                continue;
            };
            let name = http::HeaderName::from_bytes(line[..colon].trim_ascii());
            let value = http::HeaderValue::from_bytes(line[colon + 1..].trim_ascii());
            if let (Ok(name), Ok(value)) = (name, value) {
                map.append(name, value);
            }
        }
        Some(map)
    }

    /// Notes a data frame.
    pub(crate) fn observe<D: Buf>(&mut self, data: &D) {
        if self.lost {
            return;
        }
        let first = data.chunk();
        if first.len() == data.remaining() {
            self.feed(first);
            return;
        }
        let mut slices = [std::io::IoSlice::new(&[]); 64];
        let n = data.chunks_vectored(&mut slices);
        let mut seen = 0;
        for s in &slices[..n] {
            self.feed(s);
            seen += s.len();
        }
        self.lost = seen < data.remaining();
    }

    fn feed(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            if self.remaining > 0 {
                let skip = (self.remaining.min(bytes.len() as u64)) as usize;
                if self.flag & 0x80 != 0 {
                    if let Some(kept) = &mut self.web_trailers {
                        let room = MAX_WEB_TRAILERS.saturating_sub(kept.len());
                        kept.extend_from_slice(&bytes[..skip.min(room)]);
                    }
                }
                self.remaining -= skip as u64;
                bytes = &bytes[skip..];
                if self.remaining == 0 {
                    self.message_done();
                }
                continue;
            }
            let b = bytes[0];
            bytes = &bytes[1..];
            if self.prefix_seen == 0 {
                self.flag = b;
            } else {
                self.len = (self.len << 8) | u32::from(b);
            }
            self.prefix_seen += 1;
            if self.prefix_seen == 5 {
                self.prefix_seen = 0;
                if self.flag & 0x80 != 0 {
                    // The last trailers frame wins.
                    self.web_trailers = Some(Vec::new());
                }
                self.remaining = u64::from(self.len);
                self.len = 0;
                if self.remaining == 0 {
                    self.message_done();
                }
            }
        }
    }

    fn message_done(&mut self) {
        // gRPC-Web puts its trailers in the body, in a frame flagged 0x80.
        if self.flag & 0x80 == 0 {
            self.messages += 1;
        }
    }
}

/// Renders a gRPC body as its list of messages (see the module docs).
pub(crate) struct RenderMessages<'a> {
    pub(crate) messages: Vec<GrpcMessage<'a>>,
    pub(crate) path: &'a str,
    pub(crate) direction: GrpcDirection,
    pub(crate) to_json: Option<&'a GrpcMessageJson>,
}

impl Serialize for RenderMessages<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut seq = serializer.serialize_seq(Some(self.messages.len()))?;
        for m in &self.messages {
            seq.serialize_element(&RenderMessage {
                message: m,
                json: match self.to_json {
                    Some(f) if !m.compressed && !m.is_truncated() => {
                        f(self.path, self.direction, m.data)
                    }
                    _ => None,
                },
            })?;
        }
        seq.end()
    }
}

struct RenderMessage<'a> {
    message: &'a GrpcMessage<'a>,
    json: Option<Value>,
}

impl Serialize for RenderMessage<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let m = self.message;
        let mut map = serializer.serialize_map(None)?;
        map.serialize_entry("compressed", &m.compressed)?;
        map.serialize_entry(
            "data",
            &base64::engine::general_purpose::STANDARD.encode(m.data),
        )?;
        if m.is_truncated() {
            map.serialize_entry("size", &m.size)?;
            map.serialize_entry("truncated", &true)?;
        }
        if let Some(json) = &self.json {
            map.serialize_entry("json", json)?;
        }
        map.end()
    }
}

/// Turns a rendered message list back into frames; `None` when `items` is not
/// one (then the body was rendered like any other body).
pub(crate) fn frames_from_wire(items: &[Value]) -> Option<Result<Bytes, String>> {
    let is_message = |v: &Value| {
        v.as_object().is_some_and(|o| {
            o.get("data").is_some_and(Value::is_string)
                && o.get("compressed").is_some_and(Value::is_boolean)
        })
    };
    if !items.iter().all(is_message) {
        return None;
    }
    let mut out = BytesMut::new();
    for item in items {
        let data = item.get("data").and_then(Value::as_str).unwrap_or_default();
        let data = match base64::engine::general_purpose::STANDARD.decode(data) {
            Ok(d) => d,
            Err(e) => return Some(Err(format!("invalid base64 gRPC message: {e}"))),
        };
        let compressed = item.get("compressed").and_then(Value::as_bool) == Some(true);
        let size = match item.get("size").and_then(Value::as_u64) {
            Some(size) => size,
            None => data.len() as u64,
        };
        let Ok(size) = u32::try_from(size) else {
            return Some(Err(format!("gRPC message size {size} out of range")));
        };
        out.extend_from_slice(&[u8::from(compressed)]);
        out.extend_from_slice(&size.to_be_bytes());
        out.extend_from_slice(&data);
    }
    Some(Ok(out.freeze()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn frame(compressed: bool, msg: &[u8]) -> Vec<u8> {
        let mut v = vec![u8::from(compressed)];
        v.extend_from_slice(&(msg.len() as u32).to_be_bytes());
        v.extend_from_slice(msg);
        v
    }

    #[test]
    fn counts_whole_messages_only() {
        let mut c = MessageCounter::default();
        let mut body = frame(false, b"hello");
        body.extend(frame(false, b""));
        body.extend(&frame(false, b"world")[..7]);
        c.observe(&Bytes::from(body));
        assert_eq!(c.messages(), 2, "the third message is not whole yet");
        c.observe(&Bytes::from_static(b"rld"));
        assert_eq!(c.messages(), 3);
    }

    #[test]
    fn grpc_web_trailer_frames_are_not_messages() {
        let mut c = MessageCounter::default();
        let mut body = frame(false, b"a");
        let mut trailers = frame(false, b"grpc-status:0\r\n");
        trailers[0] = 0x80;
        body.extend(trailers);
        c.observe(&Bytes::from(body));
        assert_eq!(c.messages(), 1);
    }

    #[test]
    fn grpc_web_trailer_frames_give_status_and_message_in_any_chunking() {
        let mut body = frame(false, b"a");
        let mut trailers = frame(false, b"grpc-status: 7\r\ngrpc-message:denied%20here\r\n");
        trailers[0] = 0x80;
        body.extend(trailers);
        for cut in 0..body.len() {
            let mut c = MessageCounter::default();
            c.observe(&Bytes::copy_from_slice(&body[..cut]));
            c.observe(&Bytes::copy_from_slice(&body[cut..]));
            let t = c.web_trailers().expect("a trailers frame");
            assert_eq!(t["grpc-status"], "7", "cut at {cut}");
            assert_eq!(t["grpc-message"], "denied%20here");
            assert_eq!(c.messages(), 1);
        }
        let mut c = MessageCounter::default();
        c.observe(&Bytes::from(frame(false, b"only a message")));
        assert!(c.web_trailers().is_none());
    }

    #[test]
    fn follows_chained_buffers() {
        let body = [frame(false, b"abc"), frame(true, b"defg")].concat();
        let (a, b) = body.split_at(6);
        let mut c = MessageCounter::default();
        c.observe(&a.chain(b));
        assert_eq!(c.messages(), 2);
    }

    proptest! {
        #[test]
        fn counting_and_splitting_do_not_depend_on_framing(
            msgs in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..40), 0..8),
            cuts in proptest::collection::vec(0usize..400, 0..12),
        ) {
            let body: Vec<u8> = msgs.iter().flat_map(|m| frame(false, m)).collect();
            let mut cuts: Vec<usize> = cuts.into_iter().filter(|&c| c <= body.len()).collect();
            cuts.sort_unstable();
            let mut c = MessageCounter::default();
            let mut start = 0;
            for cut in cuts.into_iter().chain([body.len()]) {
                c.observe(&Bytes::copy_from_slice(&body[start..cut]));
                start = cut;
            }
            prop_assert_eq!(c.messages(), msgs.len() as u64);
            let found = messages(&body).unwrap();
            let found: Vec<&[u8]> = found.iter().map(|m| m.data).collect();
            let want: Vec<&[u8]> = msgs.iter().map(Vec::as_slice).collect();
            prop_assert_eq!(found, want);
        }
    }

    #[test]
    fn cut_messages_render_with_their_size() {
        let body = [frame(false, b"whole"), frame(false, b"cut here")].concat();
        let kept = &body[..body.len() - 4];
        let found = messages(kept).unwrap();
        let json = serde_json::to_value(RenderMessages {
            messages: found,
            path: "/p.S/M",
            direction: GrpcDirection::Request,
            to_json: None,
        })
        .unwrap();
        assert_eq!(
            json,
            serde_json::json!([
                {"compressed": false, "data": "d2hvbGU="},
                {"compressed": false, "data": "Y3V0IA==", "size": 8, "truncated": true},
            ])
        );
        let back = frames_from_wire(json.as_array().unwrap()).unwrap().unwrap();
        assert_eq!(&back[..], kept);
    }

    #[test]
    fn the_hook_sees_whole_uncompressed_messages() {
        let body = [frame(false, b"a"), frame(true, b"b")].concat();
        let hook = |path: &str, dir: GrpcDirection, m: &[u8]| {
            Some(serde_json::json!({"path": path, "dir": format!("{dir:?}"), "len": m.len()}))
        };
        let json = serde_json::to_value(RenderMessages {
            messages: messages(&body).unwrap(),
            path: "/p.S/M",
            direction: GrpcDirection::Response,
            to_json: Some(&hook),
        })
        .unwrap();
        assert_eq!(
            json[0]["json"],
            serde_json::json!({"path": "/p.S/M", "dir": "Response", "len": 1})
        );
        assert!(json[1].get("json").is_none(), "compressed: not decoded");
    }
}

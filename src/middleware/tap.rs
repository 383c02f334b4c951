//! [`Tap`]: a bounded copy of a body as its frames pass (a reference-count bump
//! per `Bytes` frame, no copy), and the total size seen; for gRPC bodies, the
//! message count too.

use std::any::Any;
use std::sync::{Arc, Mutex};

use bytes::{Buf, Bytes, BytesMut};

use crate::captured::TapSummary;
use crate::record::MessageCounter;

/// Frames kept as they came: one `Bytes` needs no allocation.
#[derive(Debug, Default)]
enum Chunks {
    #[default]
    Empty,
    One(Bytes),
    Many(Vec<Bytes>),
}

impl Chunks {
    fn push(&mut self, b: Bytes) {
        *self = match std::mem::take(self) {
            Chunks::Empty => Chunks::One(b),
            Chunks::One(a) => Chunks::Many(vec![a, b]),
            Chunks::Many(mut v) => {
                v.push(b);
                Chunks::Many(v)
            }
        };
    }

    /// Appends every frame to `out`.
    fn copy_into(&self, out: &mut Vec<u8>) {
        match self {
            Chunks::Empty => {}
            Chunks::One(b) => out.extend_from_slice(b),
            Chunks::Many(v) => v.iter().for_each(|b| out.extend_from_slice(b)),
        }
    }
}

/// A bounded copy of a body: the first `limit` bytes, and the total size seen.
#[derive(Debug)]
pub(crate) struct Tap {
    limit: usize,
    kept: usize,
    size: u64,
    /// The body's end was seen (`None` from `poll_frame`, or the end of stream
    /// after a frame).
    ended: bool,
    chunks: Chunks,
    /// For gRPC bodies: counts the messages, also past the limit.
    messages: Option<MessageCounter>,
}

impl Tap {
    pub(crate) fn new(limit: usize) -> Self {
        Self {
            limit,
            kept: 0,
            size: 0,
            ended: false,
            chunks: Chunks::Empty,
            messages: None,
        }
    }

    /// Also counts gRPC messages when `grpc` (see the crate docs on gRPC).
    pub(crate) fn counting_messages(mut self, grpc: bool) -> Self {
        if grpc {
            self.messages = Some(MessageCounter::default());
        }
        self
    }

    /// gRPC-Web: the trailers frame the body carried, when counting.
    pub(crate) fn web_trailers(&self) -> Option<http::HeaderMap> {
        self.messages.as_ref()?.web_trailers()
    }

    /// The gRPC messages seen, when counting.
    pub(crate) fn messages(&self) -> u64 {
        self.messages.as_ref().map_or(0, MessageCounter::messages)
    }

    pub(crate) fn size(&self) -> u64 {
        self.size
    }

    /// Notes a data frame: keeps its prefix while under the limit. For `Bytes`
    /// frames this is a reference-count bump, not a copy.
    pub(crate) fn observe<D: Buf + 'static>(&mut self, data: &D) {
        let len = data.remaining();
        self.size += len as u64;
        if let Some(counter) = &mut self.messages {
            counter.observe(data);
        }
        let room = self.limit - self.kept;
        let take = room.min(len);
        if take == 0 {
            return;
        }
        let bytes = match (data as &dyn Any).downcast_ref::<Bytes>() {
            Some(b) => b.slice(..take),
            None => copy_prefix(data, take),
        };
        // `copy_prefix` may see fewer bytes than `take` (a `Buf` of more than
        // 64 chunks): count what was kept.
        self.kept += bytes.len();
        self.chunks.push(bytes);
    }

    /// What the tap saw, for the packed buffer (its bytes go separately, by
    /// [`copy_into`](Self::copy_into)).
    pub(crate) fn summary(&self) -> TapSummary {
        TapSummary {
            kept: self.kept,
            size: self.size,
            messages: self.messages(),
        }
    }

    /// Notes that the body ended.
    pub(crate) fn end(&mut self) {
        self.ended = true;
    }

    /// Whether the body's end was seen.
    pub(crate) fn ended(&self) -> bool {
        self.ended
    }

    /// How many bytes the tap kept.
    pub(crate) fn kept(&self) -> usize {
        self.kept
    }

    /// Appends the kept bytes to `out`.
    pub(crate) fn copy_into(&self, out: &mut Vec<u8>) {
        self.chunks.copy_into(out);
    }

    /// The body captured so far, copied into one buffer.
    #[cfg(test)]
    pub(crate) fn to_body(&self) -> crate::record::CapturedBody {
        let mut out = Vec::with_capacity(self.kept);
        self.chunks.copy_into(&mut out);
        crate::record::CapturedBody {
            bytes: out.into(),
            size: self.size,
            truncated: self.size > self.kept as u64,
        }
    }
}

fn copy_prefix<D: Buf>(data: &D, take: usize) -> Bytes {
    let first = data.chunk();
    if first.len() >= take {
        return Bytes::copy_from_slice(&first[..take]);
    }
    let mut slices = [std::io::IoSlice::new(&[]); 64];
    let n = data.chunks_vectored(&mut slices);
    let mut out = BytesMut::with_capacity(take);
    for s in &slices[..n] {
        let want = take - out.len();
        out.extend_from_slice(&s[..want.min(s.len())]);
        if out.len() == take {
            break;
        }
    }
    out.freeze()
}

/// The request body's tap, shared with the request body wrapper.
pub(crate) type SharedTap = Arc<Mutex<Tap>>;

pub(crate) fn lock_tap(tap: &SharedTap) -> std::sync::MutexGuard<'_, Tap> {
    tap.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tap_keeps_prefix_and_counts_all() {
        let mut tap = Tap::new(5);
        tap.observe(&Bytes::from_static(b"abc"));
        tap.observe(&Bytes::from_static(b"defgh"));
        tap.observe(&Bytes::from_static(b"ij"));
        let body = tap.to_body();
        assert_eq!(&body.bytes[..], b"abcde");
        assert_eq!(body.size, 10);
        assert!(body.truncated);
    }

    #[test]
    fn tap_copies_non_bytes_buffers() {
        let mut tap = Tap::new(4);
        let chained = (&b"ab"[..]).chain(&b"cdef"[..]);
        tap.observe(&chained);
        let body = tap.to_body();
        assert_eq!(&body.bytes[..], b"abcd");
        assert_eq!(body.size, 6);
    }

    #[test]
    fn tap_with_zero_limit_only_counts() {
        let mut tap = Tap::new(0);
        tap.observe(&Bytes::from_static(b"data: x\n\n"));
        let body = tap.to_body();
        assert!(body.bytes.is_empty());
        assert_eq!(body.size, 9);
        assert!(body.truncated);
    }
}

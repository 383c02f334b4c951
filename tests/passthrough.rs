//! Property tests: bodies pass through the layer byte-identical, frame by frame,
//! with size hints and trailers preserved, and the captured copy is the prefix
//! up to the limit.

mod common;

use std::collections::VecDeque;
use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use common::CollectSink;
use http::{HeaderMap, Request, Response};
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use proptest::prelude::*;
use tower::{Service, ServiceExt};
use tower_usage::{Outcome, UsageLayer};

/// A body that yields the given frames, with an exact size hint, and reports
/// `is_end_stream()` as soon as its last frame is out.
struct Frames {
    frames: VecDeque<Frame<Bytes>>,
    remaining: u64,
}

impl Frames {
    fn new(chunks: &[Vec<u8>], trailers: Option<HeaderMap>) -> Self {
        let mut frames: VecDeque<_> = chunks
            .iter()
            .map(|c| Frame::data(Bytes::copy_from_slice(c)))
            .collect();
        if let Some(t) = trailers {
            frames.push_back(Frame::trailers(t));
        }
        Self {
            remaining: chunks.iter().map(|c| c.len() as u64).sum(),
            frames,
        }
    }
}

impl Body for Frames {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let frame = self.frames.pop_front();
        if let Some(d) = frame.as_ref().and_then(|f| f.data_ref()) {
            self.remaining -= d.len() as u64;
        }
        Poll::Ready(frame.map(Ok))
    }

    fn is_end_stream(&self) -> bool {
        self.frames.is_empty()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.remaining)
    }
}

fn chunks_strategy() -> impl Strategy<Value = Vec<Vec<u8>>> {
    prop::collection::vec(prop::collection::vec(any::<u8>(), 0..300), 0..12)
}

async fn collect_frames<B>(mut body: B) -> (Vec<u8>, Vec<usize>, Option<HeaderMap>)
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: std::fmt::Debug,
{
    let mut data = Vec::new();
    let mut sizes = Vec::new();
    let mut trailers = None;
    while let Some(frame) = body.frame().await {
        let frame = frame.unwrap();
        match frame.into_data() {
            Ok(d) => {
                sizes.push(d.len());
                data.extend_from_slice(&d);
            }
            Err(frame) => trailers = frame.into_trailers().ok(),
        }
    }
    (data, sizes, trailers)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn bodies_pass_through_identically(
        req_chunks in chunks_strategy(),
        res_chunks in chunks_strategy(),
        limit in 0usize..2048,
        with_trailers in any::<bool>(),
    ) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let sink = CollectSink::default();
            let layer = UsageLayer::new(sink.clone()).max_body_bytes(limit);
            let handle = layer.handle();
            let req_all: Vec<u8> = req_chunks.concat();
            let res_all: Vec<u8> = res_chunks.concat();
            let trailers = with_trailers.then(|| {
                let mut t = HeaderMap::new();
                t.insert("grpc-status", "0".parse().unwrap());
                t.insert("x-checksum", "abc".parse().unwrap());
                t
            });
            let res_chunks2 = res_chunks.clone();
            let trailers2 = trailers.clone();
            let req_sizes: Vec<usize> = req_chunks.iter().map(Vec::len).collect();
            let inner = tower::service_fn(move |req: Request<tower_usage::middleware::RequestBody<Frames>>| {
                let res_chunks = res_chunks2.clone();
                let trailers = trailers2.clone();
                let req_sizes = req_sizes.clone();
                async move {
                    let body = req.into_body();
                    // The request body's hints are forwarded.
                    let total: usize = req_sizes.iter().sum();
                    assert_eq!(body.size_hint().exact(), Some(total as u64));
                    let (data, sizes, _) = collect_frames(body).await;
                    assert_eq!(sizes, req_sizes, "request frames re-chunked");
                    assert_eq!(data.len(), total);
                    Ok::<_, Infallible>(Response::new(Frames::new(&res_chunks, trailers)))
                }
            });
            let mut svc = tower::ServiceBuilder::new().layer(layer).service(inner);
            let req = Request::post("/p").body(Frames::new(&req_chunks, None)).unwrap();
            let res = svc.ready().await.unwrap().call(req).await.unwrap();
            let body = res.into_body();
            assert_eq!(body.size_hint().exact(), Some(res_all.len() as u64));
            let (data, sizes, got_trailers) = collect_frames(body).await;
            assert_eq!(&data, &res_all, "response bytes changed");
            assert_eq!(sizes, res_chunks.iter().map(Vec::len).collect::<Vec<_>>());
            assert_eq!(got_trailers, trailers, "trailers not forwarded");

            handle.flush().await;
            let records = sink.all();
            assert_eq!(records.len(), 1, "exactly one record");
            let r = &records[0];
            assert_eq!(r.outcome, Outcome::Complete);
            let req_keep = req_all.len().min(limit);
            assert_eq!(&r.request.body.bytes[..], &req_all[..req_keep]);
            assert_eq!(r.request.body.size, req_all.len() as u64);
            assert_eq!(r.request.body.truncated, req_all.len() > limit);
            let res_keep = res_all.len().min(limit);
            assert_eq!(&r.response.bytes[..], &res_all[..res_keep]);
            assert_eq!(r.response.size, res_all.len() as u64);
            assert_eq!(r.response.truncated, res_all.len() > limit);
        });
    }
}

#[tokio::test]
async fn end_of_stream_is_recorded_once_even_if_polled_again() {
    let sink = CollectSink::default();
    let layer = UsageLayer::new(sink.clone());
    let handle = layer.handle();
    let inner = tower::service_fn(
        |_req: Request<tower_usage::middleware::RequestBody<Frames>>| async {
            Ok::<_, Infallible>(Response::new(Frames::new(
                &[b"a".to_vec(), b"b".to_vec()],
                None,
            )))
        },
    );
    let mut svc = tower::ServiceBuilder::new().layer(layer).service(inner);
    let res = svc
        .ready()
        .await
        .unwrap()
        .call(Request::new(Frames::new(&[], None)))
        .await
        .unwrap();
    let mut body = res.into_body();
    // `is_end_stream()` turns true after the last data frame: the record is
    // emitted then, and polling on to `None` and dropping must not emit again.
    while let Some(f) = body.frame().await {
        f.unwrap();
    }
    assert!(body.frame().await.is_none());
    drop(body);
    handle.flush().await;
    assert_eq!(sink.all().len(), 1);
    assert_eq!(&sink.all()[0].response.bytes[..], b"ab");
}

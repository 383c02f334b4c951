//! gRPC through the same `UsageLayer`: a tonic server on 127.0.0.1:0 with the
//! layer on `Server::builder().layer(...)`, a real tonic client, and `/usage`
//! served beside the gRPC service; and a plain hyper 1 service speaking gRPC.

mod common;
#[path = "../examples/tonic/echo.rs"]
mod echo;

use std::net::SocketAddr;
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use common::*;
use echo::{EchoClient, EchoReply, EchoRequest, EchoServer};
use futures_util::StreamExt;
use http::{Request, StatusCode};
use prost::Message as _;
use serde_json::{json, Value};
use tonic::service::Routes;
use tonic::transport::Server;
use tower_usage::{
    CapturePolicy, CaptureRequest, Outcome, UsageHandle, UsageLayer, UsageRecord, UsageService,
};

const TOKEN: &str = "grpc-test-token";

/// Serves `demo.Echo` and `/usage` (with the JSON hook) behind `layer`.
async fn serve_grpc(sink: CollectSink, layer: UsageLayer<CollectSink>) -> SocketAddr {
    let usage = UsageService::new(sink).grpc_message_json(echo::message_json);
    let routes = Routes::new(EchoServer)
        .into_axum_router()
        .route_service("/usage", usage);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = Server::builder()
        .accept_http1(true)
        .layer(layer)
        .add_routes(Routes::from(routes))
        .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener));
    tokio::spawn(async move { server.await.unwrap() });
    addr
}

struct Setup {
    sink: CollectSink,
    handle: UsageHandle,
    addr: SocketAddr,
    client: EchoClient,
}

async fn setup_with(
    configure: impl FnOnce(UsageLayer<CollectSink>) -> UsageLayer<CollectSink>,
) -> Setup {
    let sink = CollectSink::default();
    let layer = configure(UsageLayer::new(sink.clone()));
    let handle = layer.handle();
    let addr = serve_grpc(sink.clone(), layer).await;
    let client = EchoClient::connect(addr).await.unwrap().with_token(TOKEN);
    Setup {
        sink,
        handle,
        addr,
        client,
    }
}

async fn setup() -> Setup {
    setup_with(|layer| layer).await
}

impl Setup {
    /// The one record of `path`, once it is in the sink.
    async fn record(&self, path: &str) -> UsageRecord {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while std::time::Instant::now() < deadline {
            self.handle.flush().await;
            let mut found: Vec<_> = self
                .sink
                .all()
                .into_iter()
                .filter(|r| r.path == path)
                .collect();
            if !found.is_empty() {
                assert_eq!(found.len(), 1, "one record per call to {path}");
                return found.remove(0);
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("no record of {path}");
    }
}

/// The messages of a rendered gRPC body, decoded from their base64.
fn data(body: &Value) -> Vec<Vec<u8>> {
    body.as_array()
        .unwrap_or_else(|| panic!("a gRPC body renders as a list: {body}"))
        .iter()
        .map(|m| {
            base64::engine::general_purpose::STANDARD
                .decode(m["data"].as_str().unwrap())
                .unwrap()
        })
        .collect()
}

#[tokio::test]
async fn a_unary_call_is_recorded_with_route_params_status_and_messages() {
    let mut s = setup().await;
    let reply = s.client.say(echo::request("hello")).await.unwrap();
    assert_eq!(reply.into_inner().message, "hello");

    let r = s.record("/demo.Echo/Say").await;
    assert_eq!(r.method, "POST");
    assert_eq!(r.status, 200);
    assert_eq!(r.outcome, Outcome::Complete);
    assert_eq!(r.route.as_deref(), Some("/demo.Echo/Say"));
    assert_eq!(
        r.consumer.as_deref(),
        Some(tower_usage::hash_token(TOKEN).as_str())
    );
    let grpc = r.grpc.clone().unwrap();
    assert_eq!(grpc.status, Some(0));
    assert_eq!((grpc.request_messages, grpc.response_messages), (1, 1));

    let wire = serde_json::to_value(&r).unwrap();
    assert_eq!(
        wire["request"]["params"],
        json!({"service": "demo.Echo", "method": "Say"})
    );
    assert_eq!(wire["grpcStatus"], json!({"code": 0, "name": "OK"}));
    assert_eq!(wire["grpcMessages"], json!({"request": 1, "response": 1}));
    assert_eq!(wire["request"]["body"][0]["compressed"], false);
    let sent = data(&wire["request"]["body"]);
    assert_eq!(sent.len(), 1);
    assert_eq!(
        EchoRequest::decode(&sent[0][..]).unwrap(),
        echo::request("hello")
    );
    let got = data(&wire["response"]);
    assert_eq!(EchoReply::decode(&got[0][..]).unwrap().message, "hello");
    assert_eq!(wire["request"]["headers"]["authorization"], "[REDACTED]");

    // The wire form reads back to the same raw frames.
    let back: UsageRecord = serde_json::from_value(wire).unwrap();
    assert_eq!(back.request.body.bytes, r.request.body.bytes);
    assert_eq!(back.response.bytes, r.response.bytes);
}

#[tokio::test]
async fn an_error_status_in_trailers_reaches_the_client_unchanged_and_is_recorded() {
    let mut s = setup().await;
    let mut stream = s
        .client
        .count(echo::request("fail-after-one"))
        .await
        .unwrap()
        .into_inner();
    let first = stream.next().await.unwrap().unwrap();
    assert_eq!(first.index, 0);
    let status = stream.next().await.unwrap().unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert_eq!(
        status.message(),
        echo::FAIL_MESSAGE,
        "the client sees the server's message"
    );

    let r = s.record("/demo.Echo/Count").await;
    assert_eq!(r.status, 200, "the HTTP status is beside the gRPC one");
    assert_eq!(r.outcome, Outcome::Complete);
    let wire = serde_json::to_value(&r).unwrap();
    assert_eq!(
        wire["grpcStatus"],
        json!({"code": 3, "name": "INVALID_ARGUMENT"})
    );
    assert_eq!(wire["grpcMessage"], echo::FAIL_MESSAGE, "percent-decoded");
    assert_eq!(wire["grpcMessages"], json!({"request": 1, "response": 1}));
    // Kept response headers that arrive in the trailers are kept too.
    assert_eq!(r.response_headers["grpc-status"], "3");
    assert_eq!(r.response_headers["content-type"], "application/grpc");
}

#[tokio::test]
async fn a_trailers_only_error_is_recorded_from_the_headers() {
    let mut s = setup().await;
    let status = s.client.say(echo::request("not-found")).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::NotFound);
    assert_eq!(status.message(), echo::NOT_FOUND_MESSAGE);

    let r = s.record("/demo.Echo/Say").await;
    let wire = serde_json::to_value(&r).unwrap();
    assert_eq!(wire["grpcStatus"], json!({"code": 5, "name": "NOT_FOUND"}));
    assert_eq!(wire["grpcMessage"], echo::NOT_FOUND_MESSAGE);
    assert_eq!(wire["grpcMessages"], json!({"request": 1, "response": 0}));
    assert_eq!(wire["response"], json!([]));
    assert_eq!(r.outcome, Outcome::Complete);
}

/// `bodies_on_error` on gRPC: the HTTP status of a failed call is 200, so
/// the error is its gRPC status, in the trailers or (trailers-only) in the
/// headers. The failed calls keep their messages; the call that succeeded
/// keeps its counts and sizes, not its bytes.
#[tokio::test]
async fn a_capture_policy_keeps_the_messages_of_failed_calls_only() {
    let mut s = setup_with(|layer| {
        layer.capture_policy(|req: &CaptureRequest<'_>| {
            assert_eq!(
                req.route(),
                Some(req.uri().path()),
                "the method is the route"
            );
            CapturePolicy::new().bodies_on_error()
        })
    })
    .await;
    s.client.say(echo::request("fine")).await.unwrap();
    let ok = s.record("/demo.Echo/Say").await;
    assert_eq!(ok.grpc.as_ref().unwrap().status, Some(0));
    assert!(ok.request.body.bytes.is_empty() && ok.response.bytes.is_empty());
    assert!(ok.request.body.size > 0 && ok.response.size > 0);
    assert_eq!(ok.capture.request_body_policy.as_deref(), Some("error"));
    assert_eq!(ok.capture.response_body_policy.as_deref(), Some("error"));
    assert_eq!(
        (
            ok.grpc.as_ref().unwrap().request_messages,
            ok.grpc.as_ref().unwrap().response_messages
        ),
        (1, 1),
        "messages are counted though withheld"
    );

    // An error in the trailers, after one message.
    let call = s.client.count(echo::request("fail-after-one")).await;
    let got: Vec<_> = call.unwrap().into_inner().collect().await;
    assert!(matches!(&got[..], [Ok(_), Err(_)]), "{got:?}");
    let failed = s.record("/demo.Echo/Count").await;
    assert_eq!(failed.status, 200);
    assert_eq!(failed.grpc.as_ref().unwrap().status, Some(3));
    assert!(failed.capture.is_empty(), "{:?}", failed.capture);
    let wire = serde_json::to_value(&failed).unwrap();
    assert_eq!(
        EchoRequest::decode(&data(&wire["request"]["body"])[0][..]).unwrap(),
        echo::request("fail-after-one")
    );
    assert_eq!(data(&wire["response"]).len(), 1);

    // A trailers-only error: its request message is kept.
    s.handle.flush().await;
    let before = s.sink.all().len();
    s.client.say(echo::request("not-found")).await.unwrap_err();
    let not_found = loop {
        s.handle.flush().await;
        let all = s.sink.all();
        if all.len() > before {
            break all[before].clone();
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert_eq!(not_found.grpc.as_ref().unwrap().status, Some(5));
    assert!(not_found.capture.is_empty(), "{:?}", not_found.capture);
    assert_eq!(
        EchoRequest::decode(
            &data(&serde_json::to_value(&not_found).unwrap()["request"]["body"])[0][..]
        )
        .unwrap(),
        echo::request("not-found")
    );
}

#[tokio::test]
async fn streaming_calls_yield_one_record_each_with_counts_per_direction() {
    let mut s = setup().await;

    let mut req = echo::request("tick");
    req.count = 5;
    let replies: Vec<_> = s
        .client
        .count(req)
        .await
        .unwrap()
        .into_inner()
        .collect()
        .await;
    assert_eq!(replies.len(), 5);

    let words = ["a", "b", "c"].map(echo::request);
    let reply = s
        .client
        .collect(futures_util::stream::iter(words))
        .await
        .unwrap();
    assert_eq!(reply.into_inner().message, "a b c");

    let words = ["w", "x", "y", "z"].map(echo::request);
    let replies: Vec<_> = s
        .client
        .chat(futures_util::stream::iter(words))
        .await
        .unwrap()
        .into_inner()
        .collect()
        .await;
    assert_eq!(replies.len(), 4);

    let counts = |r: &UsageRecord| {
        let g = r.grpc.as_ref().unwrap();
        (g.status, g.request_messages, g.response_messages)
    };
    assert_eq!(counts(&s.record("/demo.Echo/Count").await), (Some(0), 1, 5));
    assert_eq!(
        counts(&s.record("/demo.Echo/Collect").await),
        (Some(0), 3, 1)
    );
    let chat = s.record("/demo.Echo/Chat").await;
    assert_eq!(counts(&chat), (Some(0), 4, 4));
    let wire = serde_json::to_value(&chat).unwrap();
    let sent: Vec<String> = data(&wire["request"]["body"])
        .iter()
        .map(|m| EchoRequest::decode(&m[..]).unwrap().message)
        .collect();
    assert_eq!(sent, ["w", "x", "y", "z"]);
    assert_eq!(s.sink.all().len(), 3, "one record per call");
}

#[tokio::test]
async fn a_stream_dropped_early_is_recorded_as_cancelled() {
    let mut s = setup().await;
    let mut stream = s
        .client
        .count(echo::request("forever"))
        .await
        .unwrap()
        .into_inner();
    // The stream never ends: these replies arrive only if the layer does not
    // hold the stream back.
    for i in 0..3 {
        assert_eq!(stream.next().await.unwrap().unwrap().index, i);
    }
    drop(stream);

    let r = s.record("/demo.Echo/Count").await;
    assert_eq!(r.outcome, Outcome::Cancelled);
    let grpc = r.grpc.unwrap();
    assert_eq!(grpc.status, Some(1), "CANCELLED");
    assert!(grpc.response_messages >= 3, "{grpc:?}");
    assert_eq!(grpc.request_messages, 1);
}

#[tokio::test]
async fn messages_split_over_frames_or_sharing_one_are_rendered_one_by_one() {
    let mut s = setup_with(|layer| layer.max_body_bytes(1024 * 1024)).await;

    // 100 kB in one message: HTTP/2 carries it in DATA frames of at most 16 KiB.
    let mut big = echo::request("big");
    big.payload = vec![7; 100_000];
    let reply = s.client.say(big.clone()).await.unwrap();
    assert_eq!(reply.into_inner().message, "big");
    let r = s.record("/demo.Echo/Say").await;
    let wire = serde_json::to_value(&r).unwrap();
    let sent = data(&wire["request"]["body"]);
    assert_eq!(sent.len(), 1, "one message, whole again");
    assert_eq!(EchoRequest::decode(&sent[0][..]).unwrap(), big);
    assert!(wire["request"]["body"][0].get("truncated").is_none());
    assert_eq!(r.grpc.unwrap().request_messages, 1);

    // Many small messages sent at once: tonic packs several in one frame.
    let words: Vec<_> = (0..50).map(|i| echo::request(&format!("m{i}"))).collect();
    s.client
        .collect(futures_util::stream::iter(words))
        .await
        .unwrap();
    let r = s.record("/demo.Echo/Collect").await;
    let wire = serde_json::to_value(&r).unwrap();
    let sent: Vec<String> = data(&wire["request"]["body"])
        .iter()
        .map(|m| EchoRequest::decode(&m[..]).unwrap().message)
        .collect();
    assert_eq!(sent, (0..50).map(|i| format!("m{i}")).collect::<Vec<_>>());
    assert_eq!(r.grpc.unwrap().request_messages, 50);
}

#[tokio::test]
async fn a_message_past_the_capture_limit_is_cut_and_marked() {
    let limit = 16 * 1024;
    let mut s = setup_with(|layer| layer.max_body_bytes(limit)).await;
    let mut big = echo::request("big");
    big.payload = vec![1; 40_000];
    let encoded_len = big.encoded_len();
    let mut small = echo::request("after");
    small.count = 1;
    let reply = s
        .client
        .collect(futures_util::stream::iter([big, small]))
        .await
        .unwrap();
    assert_eq!(reply.into_inner().message, "big after");

    let r = s.record("/demo.Echo/Collect").await;
    assert!(r.request.body.truncated);
    assert_eq!(r.request.body.bytes.len(), limit);
    assert_eq!(r.request.body.size, (5 + encoded_len + 5 + 9) as u64);
    assert_eq!(
        r.grpc.as_ref().unwrap().request_messages,
        2,
        "counted past the limit"
    );
    let wire = serde_json::to_value(&r).unwrap();
    assert_eq!(wire["request"]["bodyTruncated"], true);
    let body = wire["request"]["body"].as_array().unwrap();
    assert_eq!(body.len(), 1, "the message after the limit is not shown");
    assert_eq!(body[0]["truncated"], true);
    assert_eq!(body[0]["size"], encoded_len);
    assert_eq!(data(&wire["request"]["body"])[0].len(), limit - 5);
}

#[tokio::test]
async fn usage_is_served_next_to_grpc_with_the_json_hook() {
    let mut s = setup().await;
    s.client.say(echo::request("hello")).await.unwrap();
    s.record("/demo.Echo/Say").await;

    let req = Request::get(format!("http://{}/usage", s.addr))
        .header("authorization", format!("Bearer {TOKEN}"))
        .body(full(""))
        .unwrap();
    let (status, headers, body) = send(req).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers["content-type"], "application/json");
    let page: Value = serde_json::from_slice(&body).unwrap();
    let records = page["requests"].as_array().unwrap();
    assert_eq!(records.len(), 1, "the /usage call itself is not recorded");
    let r = &records[0];
    assert_eq!(r["path"], "/demo.Echo/Say");
    assert_eq!(
        r["request"]["body"][0]["json"],
        json!({"message": "hello", "count": 0, "payloadLen": 0})
    );
    assert_eq!(
        r["response"][0]["json"],
        json!({"message": "hello", "index": 0})
    );
    assert!(
        r["response"][0]["data"].is_string(),
        "the bytes stay beside"
    );

    // Another consumer sees nothing of it.
    let req = Request::get(format!("http://{}/usage", s.addr))
        .header("authorization", "Bearer someone-else")
        .body(full(""))
        .unwrap();
    let (status, _, body) = send(req).await;
    assert_eq!(status, StatusCode::OK);
    let page: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(page["requests"], json!([]));
}

/// A gRPC service written with hyper alone: echoes the request's frames back,
/// then `grpc-status: 0` in the trailers.
#[tokio::test]
async fn a_plain_hyper_service_speaking_grpc_is_recorded() {
    use http_body_util::{BodyExt, StreamBody};
    use hyper::body::{Frame, Incoming};
    use hyper_util::rt::{TokioExecutor, TokioIo};
    use hyper_util::service::TowerToHyperService;

    type EchoBody = StreamBody<
        futures_util::stream::Iter<std::vec::IntoIter<Result<Frame<Bytes>, hyper::Error>>>,
    >;

    let sink = CollectSink::default();
    let layer = UsageLayer::new(sink.clone());
    let handle = layer.handle();
    let echo_frames = tower::service_fn(
        |req: Request<tower_usage::middleware::RequestBody<Incoming>>| async move {
            let frames = req.into_body().collect().await?.to_bytes();
            let mut trailers = http::HeaderMap::new();
            trailers.insert("grpc-status", http::HeaderValue::from_static("0"));
            let body: EchoBody = StreamBody::new(futures_util::stream::iter(vec![
                Ok(Frame::data(frames)),
                Ok(Frame::trailers(trailers)),
            ]));
            let res = http::Response::builder()
                .header("content-type", "application/grpc")
                .body(body)
                .unwrap();
            Ok::<_, hyper::Error>(res)
        },
    );
    let svc = tower::ServiceBuilder::new()
        .layer(layer)
        .service(echo_frames);

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (io, _) = listener.accept().await.unwrap();
            let svc = TowerToHyperService::new(svc.clone());
            tokio::spawn(async move {
                let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(io), svc)
                    .await;
            });
        }
    });

    let mut client = EchoClient::connect(addr).await.unwrap().with_token(TOKEN);
    let reply = client.say(echo::request("plain")).await.unwrap();
    assert_eq!(reply.into_inner().message, "plain");

    let mut record = None;
    for _ in 0..1000 {
        handle.flush().await;
        if let Some(r) = sink.all().pop() {
            record = Some(r);
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let r = record.expect("a record");
    assert_eq!(r.route.as_deref(), Some("/demo.Echo/Say"));
    assert_eq!(r.outcome, Outcome::Complete);
    let grpc = r.grpc.unwrap();
    assert_eq!(grpc.status, Some(0));
    assert_eq!((grpc.request_messages, grpc.response_messages), (1, 1));
    assert_eq!(r.request.body.bytes, r.response.bytes);
}

/// A gRPC-Web frame: flag byte, big-endian length, payload.
fn web_frame(flag: u8, payload: &[u8]) -> Vec<u8> {
    let mut v = vec![flag];
    v.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    v.extend_from_slice(payload);
    v
}

#[tokio::test]
async fn a_grpc_web_call_gets_its_status_from_the_trailers_frame() {
    // A gRPC-Web server (as tonic-web or Envoy make it): the status travels in a
    // body frame flagged 0x80, not in HTTP trailers.
    let app = axum::Router::new().route(
        "/demo.Echo/Say",
        axum::routing::post(|_request: Bytes| async {
            let mut body = web_frame(0, b"partial");
            body.extend(web_frame(
                0x80,
                b"grpc-status:7\r\ngrpc-message:caller%20is%20denied\r\n",
            ));
            (
                [(http::header::CONTENT_TYPE, "application/grpc-web+proto")],
                body,
            )
        }),
    );
    let sink = CollectSink::default();
    let layer = UsageLayer::new(sink.clone());
    let handle = layer.handle();
    let addr = serve(app.layer(layer)).await;
    let (status, _, body) = send(
        Request::post(format!("http://{addr}/demo.Echo/Say"))
            .header("content-type", "application/grpc-web+proto")
            .body(full(web_frame(0, b"hi")))
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        body.ends_with(b"caller%20is%20denied\r\n"),
        "passes through"
    );
    handle.flush().await;
    let records = sink.all();
    assert_eq!(records.len(), 1);
    let grpc = records[0].grpc.clone().expect("a gRPC-Web call is gRPC");
    assert_eq!(grpc.status, Some(7));
    assert_eq!(grpc.message.as_deref(), Some("caller is denied"));
    assert_eq!((grpc.request_messages, grpc.response_messages), (1, 1));
    let wire = serde_json::to_value(&records[0]).unwrap();
    assert_eq!(
        wire["grpcStatus"],
        json!({"code": 7, "name": "PERMISSION_DENIED"})
    );
}

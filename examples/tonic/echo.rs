//! `demo.Echo`: a small gRPC service with unary and streaming methods, written
//! by hand with tonic's server and client building blocks and prost messages
//! (what `tonic-prost-build` would generate, without a proto compiler). Shared
//! by the `tonic` example, the gRPC tests and the overhead benchmark.
//!
//! ```text
//! service Echo {
//!   rpc Say(EchoRequest) returns (EchoReply);                     // unary
//!   rpc Count(EchoRequest) returns (stream EchoReply);            // server streaming
//!   rpc Collect(stream EchoRequest) returns (EchoReply);          // client streaming
//!   rpc Chat(stream EchoRequest) returns (stream EchoReply);      // bidi
//! }
//! ```
//!
//! Special requests: `Say` with message `not-found` answers a trailers-only
//! `NOT_FOUND`; `Count` with message `fail-after-one` sends one reply, then
//! `INVALID_ARGUMENT` in the trailers; `Count` with message `forever` never ends
//! (a reply every 10 ms).
#![allow(dead_code, unreachable_pub, missing_docs)]

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::{Stream, StreamExt};
use http::uri::PathAndQuery;
use prost::Message as _;
use tonic::codegen::BoxFuture;
use tonic::server::NamedService;
use tonic::transport::Channel;
use tonic::{Request, Response, Status, Streaming};
use tonic_prost::ProstCodec;
use tower_usage::GrpcDirection;

/// The service name, as in the method paths.
pub const SERVICE: &str = "demo.Echo";
/// The `grpc-message` of `Count("fail-after-one")`, not ASCII on purpose: it
/// travels percent-encoded.
pub const FAIL_MESSAGE: &str = "bad count: «one» is 100% enough";
/// The `grpc-message` of `Say("not-found")`.
pub const NOT_FOUND_MESSAGE: &str = "no echo for «not-found»";

#[derive(Clone, PartialEq, prost::Message, serde::Serialize)]
pub struct EchoRequest {
    #[prost(string, tag = "1")]
    pub message: String,
    /// `Count`: how many replies.
    #[prost(uint32, tag = "2")]
    pub count: u32,
    /// Ballast, to make big messages; shown by its length only.
    #[prost(bytes = "vec", tag = "3")]
    #[serde(rename = "payloadLen", serialize_with = "byte_len")]
    pub payload: Vec<u8>,
}

#[derive(Clone, PartialEq, prost::Message, serde::Serialize)]
pub struct EchoReply {
    #[prost(string, tag = "1")]
    pub message: String,
    #[prost(uint32, tag = "2")]
    pub index: u32,
}

fn byte_len<S: serde::Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u64(bytes.len() as u64)
}

pub fn request(message: &str) -> EchoRequest {
    EchoRequest {
        message: message.to_owned(),
        ..EchoRequest::default()
    }
}

/// The JSON hook for `UsageService::grpc_message_json`: decodes `demo.Echo`'s
/// messages with their prost types.
pub fn message_json(
    path: &str,
    direction: GrpcDirection,
    bytes: &[u8],
) -> Option<serde_json::Value> {
    path.strip_prefix("/demo.Echo/")?;
    match direction {
        GrpcDirection::Request => serde_json::to_value(EchoRequest::decode(bytes).ok()?).ok(),
        GrpcDirection::Response => serde_json::to_value(EchoReply::decode(bytes).ok()?).ok(),
    }
}

type ReplyStream = Pin<Box<dyn Stream<Item = Result<EchoReply, Status>> + Send>>;

/// The server: mount it with `Server::builder().add_service(EchoServer)`.
#[derive(Debug, Clone, Default)]
pub struct EchoServer;

impl NamedService for EchoServer {
    const NAME: &'static str = SERVICE;
}

impl<B> tower::Service<http::Request<B>> for EchoServer
where
    B: http_body::Body + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Infallible>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        Box::pin(async move {
            let mut grpc =
                tonic::server::Grpc::new(ProstCodec::<EchoReply, EchoRequest>::default());
            let res = match req.uri().path() {
                "/demo.Echo/Say" => grpc.unary(tower::service_fn(say), req).await,
                "/demo.Echo/Count" => grpc.server_streaming(tower::service_fn(count), req).await,
                "/demo.Echo/Collect" => {
                    grpc.client_streaming(tower::service_fn(collect), req).await
                }
                "/demo.Echo/Chat" => grpc.streaming(tower::service_fn(chat), req).await,
                _ => Status::unimplemented("no such method").into_http(),
            };
            Ok(res)
        })
    }
}

async fn say(req: Request<EchoRequest>) -> Result<Response<EchoReply>, Status> {
    let req = req.into_inner();
    if req.message == "not-found" {
        return Err(Status::not_found(NOT_FOUND_MESSAGE));
    }
    Ok(Response::new(EchoReply {
        message: req.message,
        index: 0,
    }))
}

async fn count(req: Request<EchoRequest>) -> Result<Response<ReplyStream>, Status> {
    let req = req.into_inner();
    let stream: ReplyStream = match req.message.as_str() {
        "fail-after-one" => Box::pin(futures_util::stream::iter([
            Ok(EchoReply {
                message: req.message.clone(),
                index: 0,
            }),
            Err(Status::invalid_argument(FAIL_MESSAGE)),
        ])),
        "forever" => Box::pin(futures_util::stream::unfold(0u32, |i| async move {
            tokio::time::sleep(Duration::from_millis(10)).await;
            let reply = EchoReply {
                message: "again".into(),
                index: i,
            };
            Some((Ok(reply), i + 1))
        })),
        _ => {
            let message = req.message;
            Box::pin(futures_util::stream::iter((0..req.count).map(
                move |index| {
                    Ok(EchoReply {
                        message: message.clone(),
                        index,
                    })
                },
            )))
        }
    };
    Ok(Response::new(stream))
}

async fn collect(req: Request<Streaming<EchoRequest>>) -> Result<Response<EchoReply>, Status> {
    let mut stream = req.into_inner();
    let mut parts = Vec::new();
    while let Some(msg) = stream.next().await {
        parts.push(msg?.message);
    }
    Ok(Response::new(EchoReply {
        message: parts.join(" "),
        index: parts.len() as u32,
    }))
}

async fn chat(req: Request<Streaming<EchoRequest>>) -> Result<Response<ReplyStream>, Status> {
    let stream = req.into_inner().map(|msg| {
        msg.map(|m| EchoReply {
            message: m.message,
            index: m.count,
        })
    });
    Ok(Response::new(Box::pin(stream) as ReplyStream))
}

/// A client: tonic's generic gRPC client, with a bearer token on every call.
#[derive(Debug, Clone)]
pub struct EchoClient {
    inner: tonic::client::Grpc<Channel>,
    token: Option<String>,
}

impl EchoClient {
    pub async fn connect(addr: std::net::SocketAddr) -> Result<Self, tonic::transport::Error> {
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))?
            .connect()
            .await?;
        Ok(Self {
            inner: tonic::client::Grpc::new(channel),
            token: None,
        })
    }

    pub fn with_token(mut self, token: &str) -> Self {
        self.token = Some(token.to_owned());
        self
    }

    fn request<T>(&self, msg: T) -> Request<T> {
        let mut req = Request::new(msg);
        if let Some(token) = &self.token {
            if let Ok(v) = format!("Bearer {token}").parse() {
                req.metadata_mut().insert("authorization", v);
            }
        }
        req
    }

    async fn ready(&mut self) -> Result<(), Status> {
        self.inner
            .ready()
            .await
            .map_err(|e| Status::unavailable(e.to_string()))
    }

    pub async fn say(&mut self, msg: EchoRequest) -> Result<Response<EchoReply>, Status> {
        self.ready().await?;
        let req = self.request(msg);
        self.inner
            .unary(
                req,
                PathAndQuery::from_static("/demo.Echo/Say"),
                ProstCodec::default(),
            )
            .await
    }

    pub async fn count(
        &mut self,
        msg: EchoRequest,
    ) -> Result<Response<Streaming<EchoReply>>, Status> {
        self.ready().await?;
        let req = self.request(msg);
        self.inner
            .server_streaming(
                req,
                PathAndQuery::from_static("/demo.Echo/Count"),
                ProstCodec::default(),
            )
            .await
    }

    pub async fn collect<S>(&mut self, msgs: S) -> Result<Response<EchoReply>, Status>
    where
        S: Stream<Item = EchoRequest> + Send + 'static,
    {
        self.ready().await?;
        let req = self.request(msgs);
        self.inner
            .client_streaming(
                req,
                PathAndQuery::from_static("/demo.Echo/Collect"),
                ProstCodec::default(),
            )
            .await
    }

    pub async fn chat<S>(&mut self, msgs: S) -> Result<Response<Streaming<EchoReply>>, Status>
    where
        S: Stream<Item = EchoRequest> + Send + 'static,
    {
        self.ready().await?;
        let req = self.request(msgs);
        self.inner
            .streaming(
                req,
                PathAndQuery::from_static("/demo.Echo/Chat"),
                ProstCodec::default(),
            )
            .await
    }
}

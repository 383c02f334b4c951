//! gRPC with tonic: the same `UsageLayer` on `Server::builder().layer(...)`, and
//! `GET /usage` served next to the gRPC service on the same port (tonic's routes
//! are an axum router: the usage endpoint is one more route in it).
//!
//! ```text
//! cargo run --example tonic                # serve on 127.0.0.1:50051
//! cargo run --example tonic -- --port 8080 # another port
//! cargo run --example tonic -- --demo      # make unary and streaming calls, print /usage, exit
//! ```
//!
//! While it serves, `curl -H 'Authorization: Bearer demo-token' localhost:50051/usage`
//! lists the calls made with that token (the server accepts HTTP/1 next to HTTP/2
//! for that), with each gRPC message shown as JSON by the `demo.Echo` hook.

mod echo;

use std::net::SocketAddr;

use echo::{EchoClient, EchoServer};
use futures_util::StreamExt;
use http_body_util::BodyExt;
use tonic::service::Routes;
use tonic::transport::Server;
use tower_usage::{MemorySink, UsageHandle, UsageLayer, UsageService};

const DEMO_TOKEN: &str = "demo-token";

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let demo = args.iter().any(|a| a == "--demo");
    let port: u16 = match args.iter().position(|a| a == "--port") {
        Some(i) => args.get(i + 1).ok_or("--port needs a value")?.parse()?,
        None if demo => 0,
        None => 50051,
    };

    let sink = MemorySink::new();
    let layer = UsageLayer::new(sink.clone());
    let handle = layer.handle();

    // tonic's routes, with the usage endpoint beside the gRPC service.
    let usage = UsageService::new(sink).grpc_message_json(echo::message_json);
    let routes = Routes::new(EchoServer)
        .into_axum_router()
        .nest_service("/usage", usage);

    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    let addr = listener.local_addr()?;
    let server = Server::builder()
        // `/usage` over HTTP/1 too (curl, browsers); gRPC stays HTTP/2.
        .accept_http1(true)
        .layer(layer)
        .add_routes(Routes::from(routes))
        .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener));

    if !demo {
        eprintln!("demo.Echo on {addr}; usage: curl -H 'Authorization: Bearer {DEMO_TOKEN}' http://{addr}/usage");
        server.await?;
        return Ok(());
    }
    tokio::spawn(server);
    let usage = run_demo(addr, &handle).await?;
    println!("{}", serde_json::to_string_pretty(&usage)?);
    Ok(())
}

/// Makes one call of each kind, then reads `/usage` as the demo consumer.
async fn run_demo(
    addr: SocketAddr,
    handle: &UsageHandle,
) -> Result<serde_json::Value, Box<dyn std::error::Error>> {
    let mut client = EchoClient::connect(addr).await?.with_token(DEMO_TOKEN);

    let reply = client.say(echo::request("hello")).await?.into_inner();
    assert_eq!(reply.message, "hello");

    let mut req = echo::request("tick");
    req.count = 3;
    let mut replies = client.count(req).await?.into_inner();
    while let Some(reply) = replies.next().await {
        reply?;
    }

    let words = ["streams", "of", "words"].map(echo::request);
    let reply = client.collect(futures_util::stream::iter(words)).await?;
    assert_eq!(reply.into_inner().index, 3);

    let status = client.say(echo::request("not-found")).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::NotFound);

    handle.flush().await;
    let http = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<http_body_util::Empty<bytes::Bytes>>();
    let req = http::Request::get(format!("http://{addr}/usage"))
        .header("authorization", format!("Bearer {DEMO_TOKEN}"))
        .body(http_body_util::Empty::new())?;
    let res = http.request(req).await?;
    let body = res.into_body().collect().await?.to_bytes();
    Ok(serde_json::from_slice(&body)?)
}

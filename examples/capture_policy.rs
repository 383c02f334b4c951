//! A capture policy per route: the health check is not recorded, an upload
//! keeps only its response, and a search keeps its bodies only when it fails
//! or is slow; every other route keeps both bodies (the default). Each
//! recorded exchange keeps its status, timing and body sizes, so the summary
//! stays exact; each record says which bodies a policy withheld.
//!
//! ```text
//! cargo run --example capture_policy
//! curl -H 'Authorization: Bearer my-token' 'localhost:3000/search?q=ok'
//! curl -H 'Authorization: Bearer my-token' 'localhost:3000/search?q=fail'
//! curl -H 'Authorization: Bearer my-token' localhost:3000/v1/usage
//!
//! cargo run --example capture_policy -- --demo   # the requests below, what was kept, exit
//! ```

use std::future::IntoFuture as _;
use std::time::Duration;

use axum::{
    extract::Query,
    http::StatusCode,
    routing::{get, put},
    Router,
};
use serde_json::Value;
use tower_usage::{Bodies, CapturePolicy, CaptureRequest, MemorySink, UsageLayer, UsageService};

/// The policy: decided once per request, when it arrives, from its method,
/// route, consumer and headers.
fn policy(req: &CaptureRequest<'_>) -> CapturePolicy {
    match (req.method().as_str(), req.route()) {
        (_, Some("/health")) => CapturePolicy::skip(),
        ("PUT", Some("/files/{name}")) => CapturePolicy::new().bodies(Bodies::ResponseOnly),
        (_, Some("/search")) => CapturePolicy::new()
            .bodies_on_error()
            .bodies_when_slower_than(Duration::from_secs(1)),
        _ => CapturePolicy::new(),
    }
}

async fn search(Query(q): Query<Vec<(String, String)>>) -> (StatusCode, axum::Json<Value>) {
    let term = q.first().map(|(_, v)| v.as_str()).unwrap_or_default();
    if term == "fail" {
        let error = serde_json::json!({"error": "index offline"});
        (StatusCode::SERVICE_UNAVAILABLE, axum::Json(error))
    } else {
        let hits = serde_json::json!({"hits": [format!("{term} 1"), format!("{term} 2")]});
        (StatusCode::OK, axum::Json(hits))
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let sink = MemorySink::new();
    let layer = UsageLayer::new(sink.clone()).capture_policy(policy);
    let handle = layer.handle();
    let app = Router::new()
        .route("/health", get(|| async { "ok" }))
        .route("/files/{name}", put(|| async { r#"{"stored":true}"# }))
        .route("/search", get(search))
        .route("/echo", put(|body: String| async move { body }))
        .nest_service("/v1/usage", UsageService::new(sink))
        .layer(layer);

    if !std::env::args().any(|arg| arg == "--demo") {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
        println!("listening on http://{}", listener.local_addr()?);
        axum::serve(listener, app).await?;
        return Ok(());
    }
    // The demo: a port of its own, the requests, what each record kept.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(axum::serve(listener, app).into_future());
    send(addr, "GET", "/health", "").await?;
    send(addr, "PUT", "/files/report.txt", "quarterly numbers").await?;
    send(addr, "GET", "/search?q=rust", "").await?;
    send(addr, "GET", "/search?q=fail", "").await?;
    send(addr, "PUT", "/echo", "kept as sent").await?;
    handle.flush().await;

    let list: Value = serde_json::from_str(&send(addr, "GET", "/v1/usage?order=asc", "").await?)?;
    // A withheld body shows as `{}`, as an empty one does; its policy note
    // (`capture.requestBodyPolicy`, `responseBodyPolicy`) tells them apart,
    // and its size is kept.
    let records = list["requests"].as_array().cloned().unwrap_or_default();
    let mut seen = Vec::new();
    for r in &records {
        let line = format!(
            "{} {} {}  request body {} ({} bytes, policy {})  response {} ({} bytes, policy {})",
            r["method"].as_str().unwrap_or(""),
            r["path"].as_str().unwrap_or(""),
            r["status"],
            r["request"]["body"],
            r["request"]["bodySize"],
            r["capture"]["requestBodyPolicy"],
            r["response"],
            r["responseSize"],
            r["capture"]["responseBodyPolicy"],
        );
        println!("{line}");
        seen.push(line);
    }
    let expect = [
        "PUT /files/report.txt 200  request body {} (17 bytes, policy \"off\")  response {\"stored\":true} (15 bytes, policy null)",
        "GET /search 200  request body {} (0 bytes, policy null)  response {} (28 bytes, policy \"error|slow\")",
        "GET /search 503  request body {} (0 bytes, policy null)  response {\"error\":\"index offline\"} (25 bytes, policy null)",
        "PUT /echo 200  request body \"kept as sent\" (12 bytes, policy null)  response \"kept as sent\" (12 bytes, policy null)",
    ];
    if seen != expect {
        return Err(format!("the records are not what the policy says:\n{seen:#?}").into());
    }
    handle.shutdown().await;
    Ok(())
}

/// One HTTP/1.0 request on loopback (the answer ends with the connection),
/// the response body as text.
async fn send(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    body: &str,
) -> std::io::Result<String> {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    let request = format!(
        "{method} {path} HTTP/1.0\r\nhost: {addr}\r\nauthorization: Bearer demo-token\r\n\
         content-type: text/plain\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await?;
    Ok(response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_owned())
        .unwrap_or_default())
}

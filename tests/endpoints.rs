//! What grows next to `GET /usage`, through a real axum app on 127.0.0.1 and a
//! real HTTP client: the dispatch below the mount point, `GET M/{id}` on every
//! shipped sink, the record id header, and `M/openapi.json`.

mod common;

use axum::routing::get;
use axum::Router;
use bytes::Bytes;
use http::{HeaderName, Method, Request, StatusCode};
use serde_json::Value;
use tower_usage::{MemorySink, UsageHandle, UsageLayer, UsageService, UsageSink};

use common::{full, send, serve};

const TOKEN_A: &str = "token-of-consumer-a";
const TOKEN_B: &str = "token-of-consumer-b";
const ID_HEADER: &str = "usage-record-id";

struct Reply {
    status: StatusCode,
    headers: http::HeaderMap,
    body: Bytes,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", String::from_utf8_lossy(&self.body)))
    }

    /// A JSON error with `status`; its message.
    fn error(&self, status: StatusCode) -> String {
        assert_eq!(
            self.status,
            status,
            "{}",
            String::from_utf8_lossy(&self.body)
        );
        assert_eq!(self.headers["content-type"], "application/json");
        self.json()["error"]
            .as_str()
            .expect("an error message")
            .to_owned()
    }
}

async fn call(addr: std::net::SocketAddr, method: Method, uri: &str, token: Option<&str>) -> Reply {
    let mut req = Request::builder()
        .method(method)
        .uri(format!("http://{addr}{uri}"));
    if let Some(token) = token {
        req = req.header("authorization", format!("Bearer {token}"));
    }
    let (status, headers, body) = send(req.body(full("")).unwrap()).await;
    Reply {
        status,
        headers,
        body,
    }
}

/// An app recording into `sink`, the usage endpoint nested at `/v1/usage`,
/// with the record id header on.
fn app<S: UsageSink + Clone>(sink: S) -> (Router, UsageHandle) {
    let layer = UsageLayer::new(sink.clone()).record_id_header(HeaderName::from_static(ID_HEADER));
    let handle = layer.handle();
    let router = Router::new()
        .route("/hello/{name}", get(|| async { "hello" }))
        .route(
            "/teapot",
            get(|| async { (StatusCode::IM_A_TEAPOT, "short and stout") }),
        )
        .nest_service("/v1/usage", UsageService::new(sink))
        .layer(layer);
    (router, handle)
}

/// `GET M/{id}` on `sink`: the header's id fetches that record, for its
/// consumer only, and every neighbour of a good request gets its error.
async fn record_by_id<S: UsageSink + Clone>(sink: S) {
    let (router, handle) = app(sink);
    let addr = serve(router).await;

    let hello = call(addr, Method::GET, "/hello/world?x=1", Some(TOKEN_A)).await;
    assert_eq!(hello.status, StatusCode::OK);
    let id = hello.headers[ID_HEADER].to_str().unwrap().to_owned();
    assert_eq!(id.len(), 26, "{id}");
    let teapot = call(addr, Method::GET, "/teapot", Some(TOKEN_B)).await;
    let other_id = teapot.headers[ID_HEADER].to_str().unwrap().to_owned();
    assert_ne!(id, other_id);
    let anonymous = call(addr, Method::GET, "/hello/nobody", None).await;
    assert!(anonymous.headers.contains_key(ID_HEADER));
    handle.flush().await;

    let got = call(addr, Method::GET, &format!("/v1/usage/{id}"), Some(TOKEN_A)).await;
    assert_eq!(got.status, StatusCode::OK, "{:?}", got.body);
    assert_eq!(got.headers["content-type"], "application/json");
    assert_eq!(got.headers["cache-control"], "no-store");
    assert!(
        !got.headers.contains_key(ID_HEADER),
        "the endpoint is not recorded"
    );
    let record = got.json();
    assert_eq!(record["id"], id.as_str());
    assert_eq!(record["path"], "/hello/world");
    assert_eq!(record["route"], "/hello/{name}");
    assert_eq!(record["request"]["query"]["x"], "1");
    assert_eq!(record["response"], "hello");
    assert_eq!(record["status"], 200);

    // The same record in the list, in the same form.
    let list = call(addr, Method::GET, "/v1/usage", Some(TOKEN_A)).await;
    assert_eq!(list.status, StatusCode::OK);
    assert_eq!(list.json()["requests"].as_array().unwrap().len(), 1);
    assert_eq!(list.json()["requests"][0], record);
    let slash = call(addr, Method::GET, "/v1/usage/", Some(TOKEN_A)).await;
    assert_eq!(slash.json(), list.json());

    let theirs = call(
        addr,
        Method::GET,
        &format!("/v1/usage/{other_id}"),
        Some(TOKEN_B),
    )
    .await;
    assert_eq!(theirs.json()["status"], 418);

    // Another consumer's id and a made-up one: the same 404, byte for byte.
    let foreign = call(
        addr,
        Method::GET,
        &format!("/v1/usage/{other_id}"),
        Some(TOKEN_A),
    )
    .await;
    foreign.error(StatusCode::NOT_FOUND);
    let made_up = format!("{}ZZZZZZ", &id[..20]);
    let missing = call(
        addr,
        Method::GET,
        &format!("/v1/usage/{made_up}"),
        Some(TOKEN_A),
    )
    .await;
    missing.error(StatusCode::NOT_FOUND);
    assert_eq!(foreign.body, missing.body);
    // A malformed id is just another id that does not exist.
    for bad in [
        "not-an-id",
        &id.to_ascii_lowercase(),
        "%FF",
        &"0".repeat(300),
    ] {
        let reply = call(
            addr,
            Method::GET,
            &format!("/v1/usage/{bad}"),
            Some(TOKEN_A),
        )
        .await;
        assert_eq!(reply.body, missing.body, "{bad}");
    }
    // Deeper paths are nothing.
    let deeper = call(
        addr,
        Method::GET,
        &format!("/v1/usage/{id}/x"),
        Some(TOKEN_A),
    )
    .await;
    assert!(deeper
        .error(StatusCode::NOT_FOUND)
        .contains("nothing is served"));

    // Who asks, how, and with what.
    call(addr, Method::GET, &format!("/v1/usage/{id}"), None)
        .await
        .error(StatusCode::UNAUTHORIZED);
    let post = call(
        addr,
        Method::POST,
        &format!("/v1/usage/{id}"),
        Some(TOKEN_A),
    )
    .await;
    post.error(StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(post.headers["allow"], "GET, HEAD");
    let with_param = call(
        addr,
        Method::GET,
        &format!("/v1/usage/{id}?limit=1"),
        Some(TOKEN_A),
    )
    .await;
    with_param.error(StatusCode::BAD_REQUEST);
    assert_eq!(with_param.json()["parameter"], "limit");
    let head = call(
        addr,
        Method::HEAD,
        &format!("/v1/usage/{id}"),
        Some(TOKEN_A),
    )
    .await;
    assert_eq!(head.status, StatusCode::OK);
    assert!(head.body.is_empty());
    assert_eq!(
        head.headers["content-length"],
        got.body.len().to_string().as_str()
    );
}

#[tokio::test]
async fn record_by_id_on_memory_sink() {
    record_by_id(MemorySink::new()).await;
}

#[cfg(feature = "sqlite")]
#[tokio::test]
async fn record_by_id_on_sqlite_sink() {
    let dir = tempfile::tempdir().unwrap();
    let sink = tower_usage::SqliteSink::open(dir.path().join("usage.db")).unwrap();
    record_by_id(sink).await;
    record_by_id(tower_usage::SqliteSink::in_memory().unwrap()).await;
}

#[cfg(feature = "postgres")]
#[tokio::test]
async fn record_by_id_on_postgres_sink() {
    let url = std::env::var("TOWER_USAGE_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned());
    let schema = format!("tu_{:016x}", fastrand::u64(..));
    let sink = tower_usage::PostgresSink::builder()
        .schema(&schema)
        .pool_size(2)
        .connect(&url)
        .await
        .unwrap_or_else(|e| panic!("PostgreSQL at {url} (TOWER_USAGE_POSTGRES_URL): {e}"));
    record_by_id(sink.clone()).await;
    let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    client
        .batch_execute(&format!("DROP SCHEMA \"{schema}\" CASCADE"))
        .await
        .unwrap();
}

/// A sink with only `record` and `query`: `GET M/{id}` works through the
/// default `get`.
#[tokio::test]
async fn record_by_id_on_a_sink_without_get() {
    record_by_id(common::CollectSink::default()).await;
}

#[tokio::test]
async fn the_record_id_header_is_off_by_default() {
    let sink = MemorySink::new();
    let layer = UsageLayer::new(sink.clone());
    let handle = layer.handle();
    let router = Router::new()
        .route("/hello", get(|| async { "hello" }))
        .layer(layer);
    let addr = serve(router).await;
    let reply = call(addr, Method::GET, "/hello", Some(TOKEN_A)).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert!(!reply.headers.contains_key(ID_HEADER));
    handle.flush().await;
    assert_eq!(sink.len(), 1);
}

#[tokio::test]
async fn paths_below_the_mount_point() {
    let sink = MemorySink::new();
    let addr = serve(app(sink).0).await;
    // The summary, not a record lookup of the id `summary`.
    let summary = call(addr, Method::GET, "/v1/usage/summary", Some(TOKEN_A)).await;
    assert_eq!(summary.status, StatusCode::OK);
    assert_eq!(summary.json()["total"]["requests"], 0);
    for path in [
        "/v1/usage/summary/",
        "/v1/usage//x",
        "/v1/usage/openapi.json/x",
    ] {
        call(addr, Method::GET, path, Some(TOKEN_A))
            .await
            .error(StatusCode::NOT_FOUND);
    }
    // 405 before 404, as for the list.
    let reply = call(addr, Method::DELETE, "/v1/usage/a/b", Some(TOKEN_A)).await;
    reply.error(StatusCode::METHOD_NOT_ALLOWED);
}

#[tokio::test]
async fn route_service_serves_the_list_at_exactly_its_path() {
    let sink = MemorySink::new();
    let layer = UsageLayer::new(sink.clone());
    let handle = layer.handle();
    let inner = Router::new().route_service("/history", UsageService::new(sink.clone()));
    let router = Router::new()
        .route("/hello", get(|| async { "hello" }))
        .route_service("/usage", UsageService::new(sink.clone()))
        .nest("/api", inner)
        .layer(layer);
    let addr = serve(router).await;
    call(addr, Method::GET, "/hello", Some(TOKEN_A)).await;
    handle.flush().await;
    for path in ["/usage", "/api/history"] {
        let reply = call(addr, Method::GET, path, Some(TOKEN_A)).await;
        assert_eq!(reply.status, StatusCode::OK, "{path}");
        assert_eq!(reply.json()["requests"][0]["path"], "/hello", "{path}");
    }
    let reply = call(addr, Method::GET, "/usage/summary", Some(TOKEN_A)).await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND, "not routed by axum");
}

#[tokio::test]
async fn the_openapi_document_is_served_under_the_mount_point() {
    let addr = serve(app(MemorySink::new()).0).await;
    // No token: the document holds nobody's records.
    let reply = call(addr, Method::GET, "/v1/usage/openapi.json", None).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.headers["content-type"], "application/json");
    let doc = reply.json();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.1."));
    let paths: Vec<&String> = doc["paths"].as_object().unwrap().keys().collect();
    assert_eq!(
        paths,
        [
            "/v1/usage",
            "/v1/usage/openapi.json",
            "/v1/usage/summary",
            "/v1/usage/{id}"
        ]
    );
    let reply = call(addr, Method::GET, "/v1/usage/openapi.json?x=1", None).await;
    reply.error(StatusCode::BAD_REQUEST);
}

/// A router that hands over the whole path (here `route_service` with a
/// wildcard; tonic's and hyper's do the same): `mount_point` strips it.
#[tokio::test]
async fn a_mount_point_serves_below_it_without_nest_service() {
    let sink = MemorySink::new();
    let layer = UsageLayer::new(sink.clone()).record_id_header(HeaderName::from_static(ID_HEADER));
    let handle = layer.handle();
    let usage = UsageService::new(sink.clone()).mount_point("/v1/usage/");
    let router = Router::new()
        .route("/hello", get(|| async { "hello" }))
        .route_service("/v1/usage", usage.clone())
        .route_service("/v1/usage/{*rest}", usage)
        .layer(layer);
    let addr = serve(router).await;
    let hello = call(addr, Method::GET, "/hello", Some(TOKEN_A)).await;
    let id = hello.headers[ID_HEADER].to_str().unwrap().to_owned();
    handle.flush().await;
    let list = call(addr, Method::GET, "/v1/usage", Some(TOKEN_A)).await;
    assert_eq!(list.json()["requests"][0]["id"], id.as_str());
    let one = call(addr, Method::GET, &format!("/v1/usage/{id}"), Some(TOKEN_A)).await;
    assert_eq!(one.json()["id"], id.as_str());
    let doc = call(addr, Method::GET, "/v1/usage/openapi.json", None).await;
    assert!(doc.json()["paths"]["/v1/usage/{id}"].is_object());
    call(addr, Method::GET, "/v1/usage/a/b", Some(TOKEN_A))
        .await
        .error(StatusCode::NOT_FOUND);
}

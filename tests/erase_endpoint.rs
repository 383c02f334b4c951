//! `DELETE M?consumer=<id>` over real HTTP: off by default (`405`), admins
//! only (`403`), one `consumer` parameter (`400`), `200` with the count, and
//! the consumer's records gone from the list afterwards.
#![cfg(feature = "sqlite")]

mod common;

use http::{Method, Request, StatusCode};
use time::OffsetDateTime;
use tower_usage::sink::ConsumerScope;
use tower_usage::{
    RequestInfo, SinkError, SqliteSink, UsagePage, UsageQuery, UsageRecord, UsageService, UsageSink,
};

use common::{full, send, serve};

const ADMIN_KEY: &str = "s3cret";

fn records() -> Vec<UsageRecord> {
    let now = OffsetDateTime::now_utc();
    (0..9)
        .map(|i| {
            let created_at = now - time::Duration::seconds(100 - i);
            UsageRecord {
                id: UsageRecord::new_id(created_at),
                consumer: Some(["alice", "bob", "alice "][i as usize % 3].into()),
                method: "GET".into(),
                path: "/x".into(),
                status: 200,
                created_at,
                ..UsageRecord::default()
            }
        })
        .collect()
}

fn is_admin(req: RequestInfo<'_>) -> bool {
    req.headers()
        .get("x-admin-key")
        .is_some_and(|k| k == ADMIN_KEY)
}

async fn app<S: UsageSink + Clone>(usage: UsageService<S>) -> std::net::SocketAddr {
    serve(axum::Router::new().nest_service("/usage", usage)).await
}

async fn call(
    addr: std::net::SocketAddr,
    method: Method,
    uri: &str,
    headers: &[(&str, &str)],
) -> (StatusCode, http::HeaderMap, serde_json::Value) {
    let mut req = Request::builder()
        .method(method)
        .uri(format!("http://{addr}{uri}"));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let (status, headers, body) = send(req.body(full("")).unwrap()).await;
    let json = serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null);
    (status, headers, json)
}

async fn count(sink: &impl UsageSink, consumer: &str) -> usize {
    sink.query(&UsageQuery {
        consumer: ConsumerScope::Consumer(consumer.into()),
        ..UsageQuery::default()
    })
    .await
    .unwrap()
    .records
    .len()
}

#[tokio::test]
async fn delete_is_405_unless_allowed() {
    let dir = tempfile::tempdir().unwrap();
    let sink = SqliteSink::open(dir.path().join("u.db")).unwrap();
    sink.record(&records()).await.unwrap();
    let addr = app(UsageService::new(sink.clone()).admin(is_admin)).await;
    let (status, headers, body) = call(
        addr,
        Method::DELETE,
        "/usage?consumer=alice",
        &[("x-admin-key", ADMIN_KEY)],
    )
    .await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED, "{body}");
    assert_eq!(headers["allow"], "GET, HEAD");
    assert_eq!(count(&sink, "alice").await, 3);
}

#[tokio::test]
async fn an_admin_erases_one_consumer() {
    let dir = tempfile::tempdir().unwrap();
    let sink = SqliteSink::open(dir.path().join("u.db")).unwrap();
    sink.record(&records()).await.unwrap();
    let addr = app(UsageService::new(sink.clone())
        .admin(is_admin)
        .allow_erasure(true))
    .await;
    let admin = [("x-admin-key", ADMIN_KEY)];

    // Not an admin: 403 with a consumer, 401 without one.
    let (status, _, body) = call(
        addr,
        Method::DELETE,
        "/usage?consumer=alice",
        &[("authorization", "Bearer alices-token")],
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert!(body["error"].as_str().unwrap().contains("admin"), "{body}");
    let (status, _, _) = call(addr, Method::DELETE, "/usage?consumer=alice", &[]).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    // Bad parameters: 400 naming them.
    for (uri, parameter) in [
        ("/usage", "consumer"),
        ("/usage?consumer=", "consumer"),
        ("/usage?consumer=a&consumer=b", "consumer"),
        ("/usage?consumer=alice&limit=5", "limit"),
    ] {
        let (status, _, body) = call(addr, Method::DELETE, uri, &admin).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{uri}: {body}");
        assert_eq!(body["parameter"], parameter, "{uri}: {body}");
    }
    // Only the list takes DELETE.
    let (status, headers, _) = call(addr, Method::DELETE, "/usage/summary", &admin).await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(headers["allow"], "GET, HEAD");
    let (status, headers, _) = call(addr, Method::PUT, "/usage", &admin).await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(headers["allow"], "GET, HEAD, DELETE");
    assert_eq!(
        count(&sink, "alice").await,
        3,
        "nothing erased by a refused request"
    );

    let (status, headers, body) = call(addr, Method::DELETE, "/usage?consumer=alice", &admin).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(headers["content-type"], "application/json");
    assert_eq!(body, serde_json::json!({"consumer": "alice", "erased": 3}));
    assert_eq!(count(&sink, "alice").await, 0);
    assert_eq!(count(&sink, "bob").await, 3);
    assert_eq!(
        count(&sink, "alice ").await,
        3,
        "a look-alike name is another consumer"
    );
    // The list over HTTP agrees.
    let (status, _, body) = call(addr, Method::GET, "/usage?consumer=alice", &admin).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["requests"], serde_json::json!([]));
    // Again: nothing left. A name with a space, percent-encoded.
    let (_, _, body) = call(addr, Method::DELETE, "/usage?consumer=alice", &admin).await;
    assert_eq!(body["erased"], 0);
    let (_, _, body) = call(addr, Method::DELETE, "/usage?consumer=alice%20", &admin).await;
    assert_eq!(body, serde_json::json!({"consumer": "alice ", "erased": 3}));
}

/// A sink that cannot erase: `501`.
#[derive(Clone)]
struct NoErase;

#[async_trait::async_trait]
impl UsageSink for NoErase {
    async fn record(&self, _: &[UsageRecord]) -> Result<(), SinkError> {
        Ok(())
    }
    async fn query(&self, q: &UsageQuery) -> Result<UsagePage, SinkError> {
        Ok(UsagePage::from_sorted(q, Vec::new()))
    }
}

#[tokio::test]
async fn a_sink_that_cannot_erase_is_501() {
    let addr = app(UsageService::new(NoErase)
        .admin(is_admin)
        .allow_erasure(true))
    .await;
    let (status, _, body) = call(
        addr,
        Method::DELETE,
        "/usage?consumer=alice",
        &[("x-admin-key", ADMIN_KEY)],
    )
    .await;
    assert_eq!(status, StatusCode::NOT_IMPLEMENTED, "{body}");
    assert!(body["error"].is_string());
}

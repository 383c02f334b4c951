//! The whole stack: layer + MemorySink + UsageService on one axum Router, read
//! back over HTTP in the wire format of the reference usage page.

mod common;

use axum::routing::{get, post};
use axum::{Json, Router};
use common::{full, send, serve};
use http::{Request, StatusCode};
use serde_json::{json, Value};
use tower_usage::{MemorySink, UsageLayer, UsageService};

const TOKEN_A: &str = "IncYP3edd3blm2ypLGFFOYwQsC5vff3n";
const TOKEN_B: &str = "another-consumer-token";

#[tokio::test]
async fn usage_endpoint_serves_the_reference_shape_and_is_not_recorded() {
    let sink = MemorySink::new();
    let layer = UsageLayer::new(sink.clone());
    let handle = layer.handle();
    let app = Router::new()
        .route(
            "/rest/v1/airdrop/{batchId}",
            get(|| async { Json(json!({"id": "I4WT", "count": 2})) }),
        )
        .route(
            "/rest/v1/airdrop/",
            post(|Json(v): Json<Value>| async move { Json(v) }),
        )
        .route_service("/v1/usage", UsageService::new(sink.clone()))
        .layer(layer);
    let addr = serve(app).await;

    let get_with = |token: &str, path: &str| {
        Request::get(format!("http://{addr}{path}"))
            .header("authorization", format!("Bearer {token}"))
            .body(full(""))
            .unwrap()
    };
    send(get_with(TOKEN_A, "/rest/v1/airdrop/I4WT?x=1&x=2")).await;
    send(get_with(TOKEN_B, "/rest/v1/airdrop/other")).await;
    let post = Request::post(format!("http://{addr}/rest/v1/airdrop/"))
        .header("authorization", format!("Bearer {TOKEN_A}"))
        .header("content-type", "application/json")
        .body(full(r#"{"sequential":false,"token":"t-secret"}"#))
        .unwrap();
    send(post).await;
    handle.flush().await;

    // Reading the log twice: the first read must not show up in the second.
    for _ in 0..2 {
        let (status, headers, body) = send(get_with(TOKEN_A, "/v1/usage")).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(headers["content-type"], "application/json");
        handle.flush().await;
        let page: Value = serde_json::from_slice(&body).unwrap();
        let requests = page["requests"].as_array().unwrap();
        assert_eq!(
            requests.len(),
            2,
            "A sees its own two requests only: {page:#}"
        );
        assert_eq!(page["nextCursor"], Value::Null);
        let first = &requests[0];
        for key in [
            "id",
            "path",
            "method",
            "route",
            "request",
            "response",
            "status",
            "createdAt",
        ] {
            assert!(first.get(key).is_some(), "missing {key}: {first:#}");
        }
        assert_eq!(first["path"], "/rest/v1/airdrop/I4WT");
        assert_eq!(first["route"], "/rest/v1/airdrop/{batchId}");
        assert_eq!(first["request"]["params"], json!({"batchId": "I4WT"}));
        assert_eq!(first["request"]["query"], json!({"x": ["1", "2"]}));
        assert_eq!(first["request"]["body"], json!({}));
        assert_eq!(first["request"]["headers"]["authorization"], "[REDACTED]");
        assert_eq!(first["response"], json!({"id": "I4WT", "count": 2}));
        assert_eq!(first["status"], 200);
        let created = first["createdAt"].as_str().unwrap();
        assert!(
            created.len() == 24 && created.ends_with('Z') && created.as_bytes()[19] == b'.',
            "createdAt {created}"
        );
        let second = &requests[1];
        assert_eq!(second["method"], "POST");
        assert_eq!(
            second["request"]["body"],
            json!({"sequential": false, "token": "[REDACTED]"})
        );
        // Response bodies are redacted by field too (a login's access token, say).
        assert_eq!(
            second["response"],
            json!({"sequential": false, "token": "[REDACTED]"})
        );
    }
    assert!(
        !body_text(&sink).await.contains(TOKEN_A),
        "the bearer token is stored somewhere"
    );
    assert!(!body_text(&sink).await.contains("t-secret"));
    assert_eq!(sink.len(), 3, "calls to /v1/usage are not recorded");
}

async fn body_text(sink: &MemorySink) -> String {
    use tower_usage::UsageSink;
    let page = sink
        .query(&tower_usage::UsageQuery::default())
        .await
        .unwrap();
    serde_json::to_string(&page.records).unwrap()
}

#[test]
fn public_types_are_send_and_sync() {
    fn assert_send_sync<T: Send + Sync>() {}
    fn assert_send<T: Send>() {}
    assert_send_sync::<UsageLayer<MemorySink>>();
    assert_send_sync::<UsageService<MemorySink>>();
    assert_send_sync::<tower_usage::UsageHandle>();
    assert_send_sync::<MemorySink>();
    assert_send_sync::<tower_usage::UsageRecord>();
    assert_send_sync::<tower_usage::middleware::Usage<Router>>();
    assert_send::<tower_usage::middleware::ResponseBody<axum::body::Body>>();
    assert_send::<tower_usage::middleware::RequestBody<axum::body::Body>>();
    assert_send::<tower_usage::middleware::ResponseFuture<std::future::Ready<()>>>();
}

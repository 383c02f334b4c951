//! Redaction defaults through a real axum Router on 127.0.0.1: secrets under the
//! names real APIs use are caught by pattern, adding a rule keeps the defaults,
//! and URLs in header values lose their secret query parameters.

mod common;

use axum::routing::post;
use axum::Router;
use common::*;
use http::{HeaderName, Request};
use serde_json::Value;
use tower_usage::{UsageLayer, UsageRecord};

const SECRET: &str = "s3cr3t-VALUE";

async fn one_record(
    layer: UsageLayer<CollectSink>,
    sink: &CollectSink,
    req: Request<TestBody>,
) -> (UsageRecord, Value) {
    let handle = layer.handle();
    let app = Router::new()
        .route("/login", post(|_body: bytes::Bytes| async { "ok" }))
        .layer(layer);
    let addr = serve(app).await;
    let (parts, body) = req.into_parts();
    let mut uri = format!("http://{addr}/login");
    if let Some(q) = parts.uri.query() {
        uri = format!("{uri}?{q}");
    }
    let mut req = Request::from_parts(parts, body);
    *req.uri_mut() = uri.parse().unwrap();
    send(req).await;
    handle.flush().await;
    let records = sink.all();
    assert_eq!(records.len(), 1);
    let wire = serde_json::to_value(&records[0]).unwrap();
    (records[0].clone(), wire)
}

/// The secret appears nowhere in the record's wire form, decoded or not.
fn assert_no_secret(wire: &Value) {
    let text = wire.to_string();
    assert!(!text.contains(SECRET), "secret stored: {text}");
}

const SECRET_NAMES: &[&str] = &[
    "password",
    "new_password",
    "passwd",
    "pwd",
    "client_secret",
    "token",
    "id_token",
    "access_token",
    "refresh_token",
    "apiKey",
    "api_key",
    "private_key",
    "Authorization",
];

#[tokio::test]
async fn default_patterns_catch_secret_names_in_query_json_and_form() {
    for name in SECRET_NAMES {
        // Query string.
        let sink = CollectSink::default();
        let req = Request::post(format!("/login?{name}={SECRET}&user=u1"))
            .body(full(""))
            .unwrap();
        let (_, wire) = one_record(UsageLayer::new(sink.clone()), &sink, req).await;
        assert_no_secret(&wire);
        assert_eq!(wire["request"]["query"][*name], "[REDACTED]", "{name}");
        assert_eq!(wire["request"]["query"]["user"], "u1");

        // JSON body, nested.
        let sink = CollectSink::default();
        let body = format!(r#"{{"user":{{"name":"u1","{name}":"{SECRET}"}}}}"#);
        let req = Request::post("/login")
            .header("content-type", "application/json")
            .body(full(body))
            .unwrap();
        let (_, wire) = one_record(UsageLayer::new(sink.clone()), &sink, req).await;
        assert_no_secret(&wire);
        assert_eq!(
            wire["request"]["body"]["user"][*name], "[REDACTED]",
            "{name}"
        );
        assert_eq!(wire["request"]["body"]["user"]["name"], "u1");

        // Form body.
        let sink = CollectSink::default();
        let req = Request::post("/login")
            .header("content-type", "application/x-www-form-urlencoded")
            .body(full(format!("user=u1&{name}={SECRET}")))
            .unwrap();
        let (_, wire) = one_record(UsageLayer::new(sink.clone()), &sink, req).await;
        assert_no_secret(&wire);
    }
}

#[tokio::test]
async fn default_patterns_catch_secret_headers() {
    for name in [
        "authorization",
        "proxy-authorization",
        "cookie",
        "x-api-key",
        "x-auth-token",
        "x-forwarded-authorization",
        "x-session-id",
        "x-client-secret",
    ] {
        let sink = CollectSink::default();
        let req = Request::post("/login")
            .header(name, format!("Bearer {SECRET}"))
            .body(full(""))
            .unwrap();
        let (_, wire) = one_record(UsageLayer::new(sink.clone()), &sink, req).await;
        assert_no_secret(&wire);
        assert_eq!(wire["request"]["headers"][name], "[REDACTED]", "{name}");
    }
}

#[tokio::test]
async fn adding_a_rule_keeps_the_defaults() {
    let sink = CollectSink::default();
    let layer = UsageLayer::new(sink.clone())
        .redact_headers([HeaderName::from_static("x-tenant-signature")])
        .redact_fields(["pin"]);
    let req = Request::post(format!("/login?pin=1234&token={SECRET}"))
        .header("authorization", format!("Bearer {SECRET}"))
        .header("cookie", format!("session={SECRET}"))
        .header("x-tenant-signature", "sig-1")
        .header("x-request-id", "r-1")
        .body(full(""))
        .unwrap();
    let (_, wire) = one_record(layer, &sink, req).await;
    assert_no_secret(&wire);
    let headers = &wire["request"]["headers"];
    assert_eq!(headers["authorization"], "[REDACTED]");
    assert_eq!(headers["cookie"], "[REDACTED]");
    assert_eq!(headers["x-tenant-signature"], "[REDACTED]");
    assert_eq!(headers["x-request-id"], "r-1");
    assert_eq!(wire["request"]["query"]["pin"], "[REDACTED]");
    assert_eq!(wire["request"]["query"]["token"], "[REDACTED]");
}

#[tokio::test]
async fn replacing_the_rules_is_explicit() {
    let sink = CollectSink::default();
    let layer = UsageLayer::new(sink.clone())
        .replace_redacted_headers([HeaderName::from_static("x-only")])
        .replace_redacted_fields(["only"]);
    let req = Request::post("/login?token=visible&only=hidden")
        .header("authorization", "Bearer visible")
        .header("x-only", "hidden")
        .body(full(""))
        .unwrap();
    let (_, wire) = one_record(layer, &sink, req).await;
    let headers = &wire["request"]["headers"];
    assert_eq!(headers["authorization"], "Bearer visible");
    assert_eq!(headers["x-only"], "[REDACTED]");
    assert_eq!(wire["request"]["query"]["token"], "visible");
    assert_eq!(wire["request"]["query"]["only"], "[REDACTED]");
}

#[tokio::test]
async fn secret_query_parameters_in_header_urls_are_masked() {
    let sink = CollectSink::default();
    let req = Request::post("/login")
        .header(
            "referer",
            format!("https://app.example/cb?code=abc&access_token={SECRET}#frag"),
        )
        .header("x-return-to", format!("/next?api_key={SECRET}"))
        .header("x-plain", "a?b")
        .body(full(""))
        .unwrap();
    let (_, wire) = one_record(UsageLayer::new(sink.clone()), &sink, req).await;
    assert_no_secret(&wire);
    let headers = &wire["request"]["headers"];
    assert_eq!(
        headers["referer"],
        "https://app.example/cb?code=abc&access_token=%5BREDACTED%5D#frag"
    );
    assert_eq!(headers["x-return-to"], "/next?api_key=%5BREDACTED%5D");
    assert_eq!(headers["x-plain"], "a?b");
}

//! Shared helpers for the integration tests: a real server on 127.0.0.1:0, a real
//! HTTP client, and test sinks.
#![allow(dead_code, unreachable_pub, missing_docs)]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{combinators::BoxBody, BodyExt, Full};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use tower_usage::{SinkError, UsagePage, UsageQuery, UsageRecord, UsageSink};

pub type TestBody = BoxBody<Bytes, Box<dyn std::error::Error + Send + Sync>>;

/// Serves an axum router on 127.0.0.1:0; returns its address.
pub async fn serve(app: axum::Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    addr
}

pub fn client() -> Client<HttpConnector, TestBody> {
    Client::builder(TokioExecutor::new()).build_http()
}

pub fn full(body: impl Into<Bytes>) -> TestBody {
    Full::new(body.into()).map_err(|e| match e {}).boxed()
}

/// Sends a request and reads the whole response.
pub async fn send(req: http::Request<TestBody>) -> (http::StatusCode, http::HeaderMap, Bytes) {
    let res = client().request(req).await.unwrap();
    let (parts, body) = res.into_parts();
    let bytes = body.collect().await.unwrap().to_bytes();
    (parts.status, parts.headers, bytes)
}

/// Keeps every record it is given, for inspection.
#[derive(Clone, Default)]
pub struct CollectSink {
    pub records: Arc<Mutex<Vec<UsageRecord>>>,
}

impl CollectSink {
    pub fn all(&self) -> Vec<UsageRecord> {
        self.records.lock().unwrap().clone()
    }
}

#[async_trait::async_trait]
impl UsageSink for CollectSink {
    async fn record(&self, batch: &[UsageRecord]) -> Result<(), SinkError> {
        self.records.lock().unwrap().extend_from_slice(batch);
        Ok(())
    }

    async fn query(&self, query: &UsageQuery) -> Result<UsagePage, SinkError> {
        let after = query.position()?;
        let mut hits: Vec<UsageRecord> = self
            .all()
            .into_iter()
            .filter(|r| {
                query.matches(r) && after.as_ref().is_none_or(|p| p.is_before(r, query.order))
            })
            .collect();
        hits.sort_by(|a, b| query.order.compare(a, b));
        Ok(UsagePage::from_sorted(query, hits))
    }
}

/// Always fails, temporarily; counts the calls.
#[derive(Clone, Default)]
pub struct FailingSink {
    pub calls: Arc<AtomicUsize>,
}

#[async_trait::async_trait]
impl UsageSink for FailingSink {
    async fn record(&self, _batch: &[UsageRecord]) -> Result<(), SinkError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        Err(SinkError::unavailable(std::io::Error::other(
            "disk on fire",
        )))
    }

    async fn query(&self, _query: &UsageQuery) -> Result<UsagePage, SinkError> {
        Err(SinkError::unavailable(std::io::Error::other(
            "disk on fire",
        )))
    }
}

/// Never answers.
#[derive(Clone, Default)]
pub struct StalledSink;

#[async_trait::async_trait]
impl UsageSink for StalledSink {
    async fn record(&self, _batch: &[UsageRecord]) -> Result<(), SinkError> {
        std::future::pending().await
    }

    async fn query(&self, _query: &UsageQuery) -> Result<UsagePage, SinkError> {
        std::future::pending().await
    }
}

pub async fn eventually<F: Fn() -> bool>(what: &str, f: F) {
    // Generous: a loaded CI machine runs many test binaries at once, and
    // a condition that holds returns at once.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while std::time::Instant::now() < deadline {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(f(), "timed out waiting for: {what}");
}

/// Field names real APIs use for secrets, all caught by the default patterns.
pub const SECRET_NAMES: &[&str] = &[
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

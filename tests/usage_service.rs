//! `UsageService` through a real axum `Router` served on a real socket, and a real
//! HTTP client.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt as _, Full};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use serde_json::Value;
use time::macros::datetime;
use time::OffsetDateTime;
use tower_usage::hash_token;
use tower_usage::{
    CapturedBody, RequestInfo, SinkError, SinkErrorKind, UsagePage, UsageQuery, UsageRecord,
    UsageService, UsageSink,
};

const TOKEN_A: &str = "IncYP3edd3blm2ypLGFFOYwQsC5vff3n";
const TOKEN_B: &str = "b0b-token.with-dots_and-dashes";
const TOKEN_C: &str = "token-without-any-records";
const ADMIN_KEY: &str = "let-the-admin-in";
const BASE: OffsetDateTime = datetime!(2023-01-11 08:00:00 UTC);

// ---------------------------------------------------------------------------
// Sinks

/// The sink from the `UsageSink` docs: a `Vec` behind a lock.
#[derive(Clone, Default)]
struct VecSink(Arc<Mutex<Vec<UsageRecord>>>);

impl VecSink {
    fn with(records: Vec<UsageRecord>) -> Self {
        Self(Arc::new(Mutex::new(records)))
    }
}

#[async_trait::async_trait]
impl UsageSink for VecSink {
    async fn record(&self, batch: &[UsageRecord]) -> Result<(), SinkError> {
        self.0.lock().unwrap().extend_from_slice(batch);
        Ok(())
    }

    async fn query(&self, query: &UsageQuery) -> Result<UsagePage, SinkError> {
        let after = query.position()?;
        let mut hits: Vec<UsageRecord> = self
            .0
            .lock()
            .unwrap()
            .iter()
            .filter(|r| {
                query.matches(r) && after.as_ref().is_none_or(|p| p.is_before(r, query.order))
            })
            .cloned()
            .collect();
        hits.sort_by(|a, b| query.order.compare(a, b));
        Ok(UsagePage::from_sorted(query, hits))
    }
}

/// Always fails, with an error whose message must not reach the client.
#[derive(Clone)]
struct FailingSink(SinkErrorKind);

const SECRET: &str = "postgres://usage:hunter2@10.0.0.7/usage";

#[async_trait::async_trait]
impl UsageSink for FailingSink {
    async fn record(&self, _: &[UsageRecord]) -> Result<(), SinkError> {
        Ok(())
    }

    async fn query(&self, _: &UsageQuery) -> Result<UsagePage, SinkError> {
        let io = std::io::Error::other(format!("connection to {SECRET} refused"));
        Err(SinkError::with_kind(self.0, io))
    }
}

/// Never answers.
#[derive(Clone)]
struct StalledSink;

#[async_trait::async_trait]
impl UsageSink for StalledSink {
    async fn record(&self, _: &[UsageRecord]) -> Result<(), SinkError> {
        Ok(())
    }

    async fn query(&self, _: &UsageQuery) -> Result<UsagePage, SinkError> {
        std::future::pending().await
    }
}

// ---------------------------------------------------------------------------
// Server and client

struct TestServer {
    base: String,
    client: Client<HttpConnector, Full<Bytes>>,
}

struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "body is not JSON ({e}): {:?}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    fn ids(&self) -> Vec<String> {
        assert_eq!(self.status, StatusCode::OK, "{:?}", self.json());
        self.json()["requests"]
            .as_array()
            .expect("requests is an array")
            .iter()
            .map(|r| r["id"].as_str().expect("id is a string").to_owned())
            .collect()
    }

    fn next_cursor(&self) -> Option<String> {
        self.json()["nextCursor"].as_str().map(str::to_owned)
    }

    /// Asserts a JSON error with this status, and returns its `parameter`.
    fn error(&self, status: StatusCode) -> Option<String> {
        assert_eq!(
            self.status,
            status,
            "{}",
            String::from_utf8_lossy(&self.body)
        );
        assert_eq!(self.headers["content-type"], "application/json");
        assert_eq!(self.headers["cache-control"], "no-store");
        let json = self.json();
        let message = json["error"].as_str().expect("error is a string");
        assert!(!message.is_empty());
        json.get("parameter")
            .map(|p| p.as_str().expect("parameter is a string").to_owned())
    }
}

async fn serve(app: Router) -> TestServer {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    TestServer {
        base: format!("http://{addr}"),
        client: Client::builder(TokioExecutor::new()).build_http(),
    }
}

async fn serve_usage<S: UsageSink + Clone>(service: UsageService<S>) -> TestServer {
    serve(Router::new().route_service("/v1/usage", service)).await
}

impl TestServer {
    async fn send(&self, method: Method, uri: &str, headers: &[(&str, &str)]) -> Reply {
        let mut req = Request::builder()
            .method(method)
            .uri(format!("{}{uri}", self.base));
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let req = req.body(Full::default()).unwrap();
        let res = tokio::time::timeout(Duration::from_secs(10), self.client.request(req))
            .await
            .expect("the server answers within 10 s")
            .unwrap();
        let (parts, body) = res.into_parts();
        Reply {
            status: parts.status,
            headers: parts.headers,
            body: body.collect().await.unwrap().to_bytes(),
        }
    }

    async fn get(&self, uri: &str, token: &str) -> Reply {
        let auth = format!("Bearer {token}");
        self.send(Method::GET, uri, &[("authorization", &auth)])
            .await
    }

    /// Follows `nextCursor` from `uri` to the end; returns every page's ids.
    async fn all_pages(&self, uri: &str, token: &str) -> Vec<Vec<String>> {
        let mut pages = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let page_uri = match &cursor {
                None => uri.to_owned(),
                Some(c) => format!("{uri}&cursor={c}"),
            };
            let reply = self.get(&page_uri, token).await;
            pages.push(reply.ids());
            cursor = reply.next_cursor();
            if cursor.is_none() {
                return pages;
            }
            assert!(pages.len() < 100, "paging does not end");
        }
    }
}

// ---------------------------------------------------------------------------
// Records

fn record(
    token: Option<&str>,
    at: OffsetDateTime,
    method: &str,
    path: &str,
    status: u16,
) -> UsageRecord {
    UsageRecord {
        id: UsageRecord::new_id(at),
        consumer: token.map(hash_token),
        method: method.into(),
        path: path.into(),
        status,
        created_at: at,
        duration_us: 1840,
        ..UsageRecord::default()
    }
}

/// The same eight requests for A, for B and anonymously, one second apart.
fn fixture() -> Vec<UsageRecord> {
    const REQUESTS: [(&str, &str, u16); 8] = [
        ("GET", "/rest/v1/airdrop/1", 200),
        ("POST", "/rest/v1/airdrop/", 201),
        ("GET", "/rest/v1/airdrop/2", 404),
        ("DELETE", "/rest/v1/airdrop/2", 500),
        ("GET", "/rest/v1/collection/x/owners", 200),
        ("GET", "/rest/v1/airdrop/1", 429),
        ("PUT", "/rest/v1/collection/x", 503),
        ("GET", "/health", 200),
    ];
    let mut out = Vec::new();
    for token in [Some(TOKEN_A), Some(TOKEN_B), None] {
        for (k, (method, path, status)) in REQUESTS.iter().enumerate() {
            let at = BASE + time::Duration::seconds(k as i64);
            out.push(record(token, at, method, path, *status));
        }
    }
    out
}

/// The ids of A's fixture records passing `keep`, oldest first.
fn expected_a(records: &[UsageRecord], keep: impl Fn(&UsageRecord) -> bool) -> Vec<String> {
    let a = hash_token(TOKEN_A);
    let mut hits: Vec<&UsageRecord> = records
        .iter()
        .filter(|r| r.consumer.as_deref() == Some(a.as_str()) && keep(r))
        .collect();
    hits.sort_by(|x, y| (x.created_at, &x.id).cmp(&(y.created_at, &y.id)));
    hits.into_iter().map(|r| r.id.clone()).collect()
}

fn ts(seconds: i64) -> String {
    (BASE + time::Duration::seconds(seconds))
        .format(&time::format_description::well_known::Rfc3339)
        .expect("an RFC 3339 timestamp")
}

fn admin_service(sink: VecSink) -> UsageService<VecSink> {
    UsageService::new(sink).admin(|req: RequestInfo<'_>| {
        req.headers()
            .get("x-admin-key")
            .is_some_and(|v| v == ADMIN_KEY)
    })
}

// ---------------------------------------------------------------------------
// Tests

#[tokio::test]
async fn without_a_bearer_token_the_answer_is_401() {
    let server = serve_usage(UsageService::new(VecSink::with(fixture()))).await;
    let cases: &[&[(&str, &str)]] = &[
        &[],
        &[("authorization", "Basic dXNlcjpwYXNz")],
        &[("authorization", "Bearer")],
        &[("authorization", "Bearer ")],
        &[("authorization", "Bearer two tokens")],
        &[("authorization", TOKEN_A)],
    ];
    for headers in cases {
        let reply = server.send(Method::GET, "/v1/usage", headers).await;
        assert_eq!(reply.error(StatusCode::UNAUTHORIZED), None, "{headers:?}");
        assert_eq!(reply.headers["www-authenticate"], "Bearer");
        let message = reply.json()["error"].as_str().unwrap().to_owned();
        assert!(message.contains("bearer token"), "{message}");
    }
    // Parameters are not looked at before the caller is known.
    let reply = server.send(Method::GET, "/v1/usage?limit=0", &[]).await;
    reply.error(StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn a_caller_sees_only_its_own_records() {
    let records = fixture();
    let server = serve_usage(UsageService::new(VecSink::with(records.clone()))).await;

    let reply = server.get("/v1/usage", TOKEN_A).await;
    assert_eq!(reply.ids(), expected_a(&records, |_| true));
    for r in reply.json()["requests"].as_array().unwrap() {
        assert_eq!(r["consumer"], hash_token(TOKEN_A));
    }

    let b = hash_token(TOKEN_B);
    let reply = server.get("/v1/usage", TOKEN_B).await;
    let ids = reply.ids();
    assert_eq!(ids.len(), 8);
    for id in &ids {
        let r = records.iter().find(|r| &r.id == id).unwrap();
        assert_eq!(r.consumer.as_deref(), Some(b.as_str()));
    }

    // A consumer with no records gets an empty page, not anyone else's.
    let reply = server.get("/v1/usage", TOKEN_C).await;
    assert_eq!(reply.ids(), Vec::<String>::new());
    assert_eq!(reply.json()["nextCursor"], Value::Null);

    // Prefix filters and the widest limit do not widen the scope.
    let reply = server.get("/v1/usage?path=/*&limit=1000", TOKEN_A).await;
    assert_eq!(reply.ids(), expected_a(&records, |_| true));
}

#[tokio::test]
async fn paging_walks_every_record_once() {
    let mut records = Vec::new();
    // Three records per millisecond, so ties are broken by id.
    for i in 0..250 {
        let at = BASE + time::Duration::milliseconds(i / 3);
        records.push(record(Some(TOKEN_A), at, "GET", "/a", 200));
        if i % 2 == 0 {
            records.push(record(Some(TOKEN_B), at, "GET", "/a", 200));
            records.push(record(None, at, "GET", "/a", 200));
        }
    }
    // Stored out of order.
    records.reverse();
    let server = serve_usage(UsageService::new(VecSink::with(records.clone()))).await;
    let expected = expected_a(&records, |_| true);
    assert_eq!(expected.len(), 250);

    let pages = server.all_pages("/v1/usage?limit=100", TOKEN_A).await;
    assert_eq!(
        pages.iter().map(Vec::len).collect::<Vec<_>>(),
        [100, 100, 50]
    );
    assert_eq!(pages.concat(), expected);

    let pages = server
        .all_pages("/v1/usage?limit=100&order=desc", TOKEN_A)
        .await;
    assert_eq!(
        pages.iter().map(Vec::len).collect::<Vec<_>>(),
        [100, 100, 50]
    );
    let mut newest_first = expected.clone();
    newest_first.reverse();
    assert_eq!(pages.concat(), newest_first);

    // The default page is 100, and exactly 250 with limit=250 leaves no cursor.
    let reply = server.get("/v1/usage", TOKEN_A).await;
    assert_eq!(reply.ids().len(), 100);
    assert!(reply.next_cursor().is_some());
    let reply = server.get("/v1/usage?limit=250", TOKEN_A).await;
    assert_eq!(reply.ids().len(), 250);
    assert_eq!(reply.next_cursor(), None);
    let pages = server.all_pages("/v1/usage?limit=125", TOKEN_A).await;
    assert_eq!(pages.len(), 2);
    assert_eq!(pages.concat(), expected);
}

#[tokio::test]
async fn order_desc_is_newest_first() {
    let records = fixture();
    let server = serve_usage(UsageService::new(VecSink::with(records.clone()))).await;
    let reply = server.get("/v1/usage?order=desc", TOKEN_A).await;
    let mut expected = expected_a(&records, |_| true);
    expected.reverse();
    assert_eq!(reply.ids(), expected);
    let created: Vec<String> = reply.json()["requests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["createdAt"].as_str().unwrap().to_owned())
        .collect();
    assert!(created.windows(2).all(|w| w[0] >= w[1]), "{created:?}");

    let reply = server.get("/v1/usage?order=asc", TOKEN_A).await;
    assert_eq!(reply.ids(), expected_a(&records, |_| true));
}

#[tokio::test]
async fn every_filter_applies() {
    let records = fixture();
    let server = serve_usage(UsageService::new(VecSink::with(records.clone()))).await;
    let at = |k: i64| BASE + time::Duration::seconds(k);
    type Keep = Box<dyn Fn(&UsageRecord) -> bool>;
    let cases: Vec<(String, Keep)> = vec![
        ("method=GET".into(), Box::new(|r| r.method == "GET")),
        ("method=get".into(), Box::new(|r| r.method == "GET")),
        ("method=DELETE".into(), Box::new(|r| r.method == "DELETE")),
        ("method=PATCH".into(), Box::new(|_| false)),
        (
            "path=/rest/v1/airdrop/2".into(),
            Box::new(|r| r.path == "/rest/v1/airdrop/2"),
        ),
        ("path=/rest/v1/airdrop".into(), Box::new(|_| false)),
        (
            "path=/rest/v1/airdrop/*".into(),
            Box::new(|r| r.path.starts_with("/rest/v1/airdrop/")),
        ),
        (
            "path=%2Frest%2Fv1%2Fcollection%2F*".into(),
            Box::new(|r| r.path.starts_with("/rest/v1/collection/")),
        ),
        ("status=404".into(), Box::new(|r| r.status == 404)),
        (
            "status=5xx".into(),
            Box::new(|r| (500..600).contains(&r.status)),
        ),
        (
            "status=2XX".into(),
            Box::new(|r| (200..300).contains(&r.status)),
        ),
        ("status=302".into(), Box::new(|_| false)),
        (
            format!("since={}", ts(3)),
            Box::new(move |r| r.created_at >= at(3)),
        ),
        (
            format!("until={}", ts(3)),
            Box::new(move |r| r.created_at < at(3)),
        ),
        (
            format!("since={}&until={}", ts(2), ts(5)),
            Box::new(move |r| r.created_at >= at(2) && r.created_at < at(5)),
        ),
        (
            format!("since={}&until={}", ts(2), ts(2)),
            Box::new(|_| false),
        ),
        (
            // 10:00:02+02:00 is 08:00:02Z.
            "since=2023-01-11T10:00:02%2B02:00".into(),
            Box::new(move |r| r.created_at >= at(2)),
        ),
        (
            "method=GET&status=2xx&path=/rest/*".into(),
            Box::new(|r| r.method == "GET" && r.status < 300 && r.path.starts_with("/rest/")),
        ),
    ];
    for (query, keep) in cases {
        let reply = server.get(&format!("/v1/usage?{query}"), TOKEN_A).await;
        assert_eq!(reply.ids(), expected_a(&records, &keep), "{query}");
        assert_eq!(reply.next_cursor(), None, "{query}");
    }

    // Filters hold across pages.
    let pages = server
        .all_pages("/v1/usage?method=GET&limit=2", TOKEN_A)
        .await;
    assert_eq!(pages.len(), 3);
    assert_eq!(pages.concat(), expected_a(&records, |r| r.method == "GET"));
}

#[tokio::test]
async fn bad_parameters_are_refused_by_name() {
    let server = serve_usage(UsageService::new(VecSink::with(fixture()))).await;
    let cases = [
        ("limit=0", "limit"),
        ("limit=1001", "limit"),
        ("limit=ten", "limit"),
        ("limit=-5", "limit"),
        ("limit=", "limit"),
        ("cursor=", "cursor"),
        ("cursor=not-a-cursor", "cursor"),
        ("since=yesterday", "since"),
        ("since=2023-01-11", "since"),
        ("until=2023-01-11T08:00:00", "until"),
        ("until=", "until"),
        (
            "since=2023-01-12T00:00:00Z&until=2023-01-11T00:00:00Z",
            "since",
        ),
        ("method=G%20T", "method"),
        ("method=", "method"),
        ("path=rest/v1", "path"),
        ("path=*", "path"),
        ("path=", "path"),
        ("path=/%FF", "path"),
        ("status=600", "status"),
        ("status=6xx", "status"),
        ("status=ok", "status"),
        ("order=sideways", "order"),
        ("order=", "order"),
        // Unknown parameters, named as sent.
        ("foo=bar", "foo"),
        ("offset=100", "offset"),
        ("Limit=5", "Limit"),
        ("page%5Bsize%5D=5", "page[size]"),
        // Repeated parameters.
        ("limit=5&limit=5", "limit"),
        ("order=asc&order=desc", "order"),
        ("path=/a&method=GET&path=/b", "path"),
        // The first bad parameter decides.
        ("limit=0&order=sideways", "limit"),
        ("order=sideways&limit=0", "order"),
    ];
    for (query, name) in cases {
        let reply = server.get(&format!("/v1/usage?{query}"), TOKEN_A).await;
        let parameter = reply.error(StatusCode::BAD_REQUEST);
        assert_eq!(parameter.as_deref(), Some(name), "{query}");
        let message = reply.json()["error"].as_str().unwrap().to_owned();
        assert!(message.contains(name), "{query}: {message}");
    }
}

#[tokio::test]
async fn a_cursor_only_works_for_its_own_consumer_and_order() {
    let mut records = fixture();
    records.extend(fixture());
    let server = serve_usage(admin_service(VecSink::with(records))).await;
    let reply = server.get("/v1/usage?limit=2", TOKEN_A).await;
    let cursor = reply.next_cursor().expect("a second page");

    // Works for A, in the same order.
    let reply = server
        .get(&format!("/v1/usage?limit=2&cursor={cursor}"), TOKEN_A)
        .await;
    assert_eq!(reply.ids().len(), 2);

    // Not for B.
    let reply = server
        .get(&format!("/v1/usage?cursor={cursor}"), TOKEN_B)
        .await;
    assert_eq!(
        reply.error(StatusCode::BAD_REQUEST).as_deref(),
        Some("cursor")
    );

    // Not for the other order.
    let reply = server
        .get(&format!("/v1/usage?cursor={cursor}&order=desc"), TOKEN_A)
        .await;
    assert_eq!(
        reply.error(StatusCode::BAD_REQUEST).as_deref(),
        Some("cursor")
    );

    // Not for an admin looking at everyone.
    let reply = server
        .send(
            Method::GET,
            &format!("/v1/usage?cursor={cursor}"),
            &[("x-admin-key", ADMIN_KEY)],
        )
        .await;
    assert_eq!(
        reply.error(StatusCode::BAD_REQUEST).as_deref(),
        Some("cursor")
    );

    // Nor a forged one.
    let reply = server
        .get("/v1/usage?cursor=MS5hLjEwMDAuZm9vLjAxWA", TOKEN_A)
        .await;
    assert_eq!(
        reply.error(StatusCode::BAD_REQUEST).as_deref(),
        Some("cursor")
    );
}

#[tokio::test]
async fn other_methods_get_405() {
    let server = serve_usage(UsageService::new(VecSink::with(fixture()))).await;
    let auth = format!("Bearer {TOKEN_A}");
    for method in [
        Method::POST,
        Method::PUT,
        Method::DELETE,
        Method::PATCH,
        Method::OPTIONS,
    ] {
        let reply = server
            .send(method.clone(), "/v1/usage", &[("authorization", &auth)])
            .await;
        assert_eq!(
            reply.error(StatusCode::METHOD_NOT_ALLOWED),
            None,
            "{method}"
        );
        assert_eq!(reply.headers["allow"], "GET, HEAD");
    }
}

#[tokio::test]
async fn head_answers_like_get_without_a_body() {
    let server = serve_usage(UsageService::new(VecSink::with(fixture()))).await;
    let auth = format!("Bearer {TOKEN_A}");
    let get = server.get("/v1/usage", TOKEN_A).await;
    let head = server
        .send(Method::HEAD, "/v1/usage", &[("authorization", &auth)])
        .await;
    assert_eq!(head.status, StatusCode::OK);
    assert!(head.body.is_empty());
    assert_eq!(head.headers["content-type"], "application/json");
    assert_eq!(head.headers["cache-control"], "no-store");
    assert_eq!(
        head.headers["content-length"],
        get.body.len().to_string().as_str()
    );
    assert_eq!(
        get.headers["content-length"],
        get.body.len().to_string().as_str()
    );

    let head = server.send(Method::HEAD, "/v1/usage", &[]).await;
    assert_eq!(head.status, StatusCode::UNAUTHORIZED);
    assert_eq!(head.headers["www-authenticate"], "Bearer");
    assert!(head.body.is_empty());

    let head = server
        .send(
            Method::HEAD,
            "/v1/usage?limit=0",
            &[("authorization", &auth)],
        )
        .await;
    assert_eq!(head.status, StatusCode::BAD_REQUEST);
    assert!(head.body.is_empty());
}

#[tokio::test]
async fn a_failing_sink_gives_503_without_its_message() {
    for kind in [
        SinkErrorKind::Unavailable,
        SinkErrorKind::Other,
        SinkErrorKind::Corrupt,
    ] {
        let server = serve_usage(UsageService::new(FailingSink(kind))).await;
        let reply = server.get("/v1/usage", TOKEN_A).await;
        assert_eq!(reply.error(StatusCode::SERVICE_UNAVAILABLE), None);
        assert_eq!(
            reply.json(),
            serde_json::json!({"error": "usage storage is unavailable"})
        );
        let text = String::from_utf8_lossy(&reply.body);
        assert!(
            !text.contains("hunter2") && !text.contains("10.0.0.7"),
            "{text}"
        );
    }

    // The client's-fault kinds are 400s.
    let server = serve_usage(UsageService::new(FailingSink(SinkErrorKind::InvalidQuery))).await;
    let reply = server.get("/v1/usage", TOKEN_A).await;
    assert_eq!(reply.error(StatusCode::BAD_REQUEST), None);
    let server = serve_usage(UsageService::new(FailingSink(SinkErrorKind::InvalidCursor))).await;
    let reply = server.get("/v1/usage?cursor=abc", TOKEN_A).await;
    assert_eq!(
        reply.error(StatusCode::BAD_REQUEST).as_deref(),
        Some("cursor")
    );
}

#[tokio::test]
async fn a_stalled_sink_gives_503_in_bounded_time() {
    let timeout = Duration::from_millis(200);
    let server = serve_usage(UsageService::new(StalledSink).query_timeout(timeout)).await;
    let started = std::time::Instant::now();
    let reply = server.get("/v1/usage", TOKEN_A).await;
    let took = started.elapsed();
    assert_eq!(reply.error(StatusCode::SERVICE_UNAVAILABLE), None);
    assert_eq!(reply.json()["error"], "usage storage is unavailable");
    assert!(took >= timeout, "answered before the timeout: {took:?}");
    assert!(took < Duration::from_secs(5), "took {took:?}");

    // The server is still fine afterwards.
    let reply = server.get("/v1/usage?limit=0", TOKEN_A).await;
    reply.error(StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn admin_access_is_opt_in() {
    let records = fixture();
    let a = hash_token(TOKEN_A);

    // Without a policy, nobody may pass `consumer`, not even for itself.
    let server = serve_usage(UsageService::new(VecSink::with(records.clone()))).await;
    for query in [format!("consumer={a}"), "consumer=".into()] {
        let reply = server.get(&format!("/v1/usage?{query}"), TOKEN_A).await;
        assert_eq!(
            reply.error(StatusCode::FORBIDDEN).as_deref(),
            Some("consumer")
        );
        assert_eq!(
            reply.json()["error"],
            "the consumer parameter needs admin access"
        );
    }
    let reply = server
        .send(Method::GET, "/v1/usage", &[("x-admin-key", ADMIN_KEY)])
        .await;
    reply.error(StatusCode::UNAUTHORIZED);

    let server = serve_usage(admin_service(VecSink::with(records.clone()))).await;
    let admin = |uri: String| {
        let server = &server;
        async move {
            server
                .send(Method::GET, &uri, &[("x-admin-key", ADMIN_KEY)])
                .await
        }
    };

    // An admin needs no token and sees everyone, anonymous requests included.
    let reply = admin("/v1/usage?limit=1000".into()).await;
    let ids: HashSet<String> = reply.ids().into_iter().collect();
    assert_eq!(ids, records.iter().map(|r| r.id.clone()).collect());
    let consumers: HashSet<Value> = reply.json()["requests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["consumer"].clone())
        .collect();
    assert_eq!(consumers.len(), 3, "{consumers:?}");
    assert!(consumers.contains(&Value::Null));

    // ...page by page too.
    let mut seen = Vec::new();
    let mut uri = "/v1/usage?limit=5".to_owned();
    loop {
        let reply = admin(uri.clone()).await;
        seen.extend(reply.ids());
        match reply.next_cursor() {
            Some(c) => uri = format!("/v1/usage?limit=5&cursor={c}"),
            None => break,
        }
    }
    assert_eq!(seen.len(), records.len());
    assert_eq!(seen.iter().collect::<HashSet<_>>().len(), records.len());

    // `consumer=<id>` selects one consumer, with filters.
    let reply = admin(format!("/v1/usage?consumer={a}")).await;
    assert_eq!(reply.ids(), expected_a(&records, |_| true));
    let reply = admin(format!("/v1/usage?consumer={a}&status=4xx")).await;
    assert_eq!(reply.ids(), expected_a(&records, |r| r.status / 100 == 4));
    let reply = admin("/v1/usage?consumer=nobody".into()).await;
    assert_eq!(reply.ids(), Vec::<String>::new());
    let reply = admin("/v1/usage?consumer=".into()).await;
    assert_eq!(
        reply.error(StatusCode::BAD_REQUEST).as_deref(),
        Some("consumer")
    );

    // The policy says who is admin; a plain caller is still scoped and refused.
    let reply = server.get("/v1/usage", TOKEN_B).await;
    assert_eq!(reply.ids().len(), 8);
    let reply = server
        .get(&format!("/v1/usage?consumer={a}"), TOKEN_B)
        .await;
    assert_eq!(
        reply.error(StatusCode::FORBIDDEN).as_deref(),
        Some("consumer")
    );
    let reply = server
        .send(Method::GET, "/v1/usage", &[("x-admin-key", "wrong")])
        .await;
    reply.error(StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn the_json_shape_matches_the_reference() {
    let mut r = record(
        Some(TOKEN_A),
        datetime!(2023-01-11 08:07:39.839 UTC),
        "GET",
        "/rest/v1/airdrop/I4WTgq6ZHb2ncugUWBz1oSPDld5eJi5U",
        200,
    );
    r.route = Some("/rest/v1/airdrop/{batchId}".into());
    r.request.params = vec![("batchId".into(), "I4WTgq6ZHb2ncugUWBz1oSPDld5eJi5U".into())];
    r.request
        .headers
        .insert("host", "localhost:9000".parse().unwrap());
    r.request
        .headers
        .insert("authorization", "[REDACTED]".parse().unwrap());
    r.request.query = "a=1&b=2&b=3".into();
    r.response = CapturedBody::complete(r#"{"id":"I4WTgq6ZHb2ncugUWBz1oSPDld5eJi5U","count":2}"#);
    let server = serve_usage(UsageService::new(VecSink::with(vec![r.clone()]))).await;

    let reply = server.get("/v1/usage", TOKEN_A).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.headers["content-type"], "application/json");
    assert_eq!(reply.headers["cache-control"], "no-store");
    let json = reply.json();
    let top: Vec<&String> = json.as_object().unwrap().keys().collect();
    assert_eq!(top, ["nextCursor", "requests"]);
    assert_eq!(json["nextCursor"], Value::Null);
    let got = &json["requests"][0];
    assert_eq!(got["id"], r.id);
    assert_eq!(
        got["path"],
        "/rest/v1/airdrop/I4WTgq6ZHb2ncugUWBz1oSPDld5eJi5U"
    );
    assert_eq!(got["method"], "GET");
    assert_eq!(got["route"], "/rest/v1/airdrop/{batchId}");
    assert_eq!(got["request"]["body"], serde_json::json!({}));
    assert_eq!(
        got["request"]["query"],
        serde_json::json!({"a": "1", "b": ["2", "3"]})
    );
    assert_eq!(
        got["request"]["params"],
        serde_json::json!({"batchId": "I4WTgq6ZHb2ncugUWBz1oSPDld5eJi5U"})
    );
    assert_eq!(
        got["request"]["headers"],
        serde_json::json!({"host": "localhost:9000", "authorization": "[REDACTED]"})
    );
    assert_eq!(
        got["response"],
        serde_json::json!({"id": "I4WTgq6ZHb2ncugUWBz1oSPDld5eJi5U", "count": 2})
    );
    assert_eq!(got["status"], 200);
    assert_eq!(got["createdAt"], "2023-01-11T08:07:39.839Z");
    assert_eq!(got["durationUs"], 1840);
    assert_eq!(got["outcome"], "complete");
    for key in got.as_object().unwrap().keys() {
        assert!(!key.contains('_'), "{key} is not camelCase");
    }
    // What the service sends is exactly the record's own serde form.
    assert_eq!(got, &serde_json::to_value(&r).unwrap());
}

#[tokio::test]
async fn it_answers_on_any_path_it_is_mounted_on() {
    let sink = VecSink::with(fixture());
    let app = Router::new()
        .route_service("/usage", UsageService::new(sink.clone()))
        .nest_service("/api/v2/history", UsageService::new(sink.clone()))
        .route("/other", axum::routing::get(|| async { "other" }));
    let server = serve(app).await;
    for uri in ["/usage", "/api/v2/history", "/api/v2/history/?limit=3"] {
        let reply = server.get(uri, TOKEN_A).await;
        assert_eq!(reply.status, StatusCode::OK, "{uri}");
        assert!(!reply.ids().is_empty());
    }
    // Below a nest, a path is a record id (see tests/endpoints.rs).
    let reply = server.get("/api/v2/history/anything", TOKEN_A).await;
    reply.error(StatusCode::NOT_FOUND);
    let reply = server.get("/other", TOKEN_A).await;
    assert_eq!(&reply.body[..], b"other");
}

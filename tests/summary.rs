//! `GET .../summary` through a real axum `Router` on 127.0.0.1, against each
//! shipped sink: every parameter, the wire format, the scope rules and every
//! error. PostgreSQL is `TOWER_USAGE_POSTGRES_URL` (default
//! `postgres://postgres@127.0.0.1:5432/test`); these tests fail, never skip,
//! when it is down.

mod common;

use axum::routing::get;
use axum::Router;
use http::{Method, Request, StatusCode};
use serde_json::{json, Value};
use time::macros::datetime;
use time::{Duration, OffsetDateTime};
use tower_usage::{
    hash_token, CapturedBody, MemorySink, Outcome, RequestInfo, UsageLayer, UsageRecord,
    UsageService, UsageSink,
};

use common::{full, send, serve};

const TOKEN_A: &str = "IncYP3edd3blm2ypLGFFOYwQsC5vff3n";
const TOKEN_B: &str = "b0b-token.with-dots_and-dashes";
const TOKEN_C: &str = "the-token-with-many-records";
const ADMIN_KEY: &str = "let-the-admin-in";

#[allow(clippy::too_many_arguments)] // one record per line in the population
fn rec(
    consumer: Option<&str>,
    at: OffsetDateTime,
    method: &str,
    path: &str,
    route: Option<&str>,
    status: u16,
    duration_us: u64,
    (req_bytes, resp_bytes): (u64, u64),
    outcome: Outcome,
) -> UsageRecord {
    UsageRecord {
        id: UsageRecord::new_id(at),
        consumer: consumer.map(hash_token),
        method: method.into(),
        path: path.into(),
        route: route.map(str::to_owned),
        status,
        created_at: at,
        duration_us,
        outcome,
        request: tower_usage::RecordedRequest {
            body: CapturedBody {
                size: req_bytes,
                ..CapturedBody::default()
            },
            ..Default::default()
        },
        response: CapturedBody {
            size: resp_bytes,
            ..CapturedBody::default()
        },
        ..UsageRecord::default()
    }
}

/// Durations up to 128 µs are exact in every sink, so the whole JSON can be
/// compared.
fn population() -> Vec<UsageRecord> {
    let d = |h, m| datetime!(2026-11-28 00:00 UTC) + Duration::hours(h) + Duration::minutes(m);
    let items = Some("/items/{id}");
    let orders = Some("/orders");
    let ok = Outcome::Complete;
    let a = Some(TOKEN_A);
    let b = Some(TOKEN_B);
    vec![
        rec(a, d(8, 10), "GET", "/items/1", items, 200, 10, (0, 100), ok),
        rec(a, d(8, 20), "GET", "/items/2", items, 200, 20, (0, 200), ok),
        rec(
            a,
            d(8, 30),
            "POST",
            "/orders",
            orders,
            201,
            30,
            (50, 10),
            ok,
        ),
        rec(a, d(9, 5), "GET", "/items/3", items, 404, 5, (0, 20), ok),
        rec(a, d(9, 40), "GET", "/nowhere", None, 404, 1, (0, 0), ok),
        rec(
            a,
            d(10, 0),
            "GET",
            "/items/4",
            items,
            500,
            90,
            (0, 0),
            Outcome::Error,
        ),
        rec(
            a,
            d(10, 1),
            "GET",
            "/items/5",
            items,
            200,
            7,
            (0, 0),
            Outcome::ClientGone,
        ),
        rec(
            a,
            d(0, 0) - Duration::milliseconds(1),
            "GET",
            "/items/6",
            items,
            200,
            3,
            (0, 1),
            ok,
        ),
        rec(
            a,
            datetime!(2026-11-01 00:00 UTC),
            "GET",
            "/orders",
            orders,
            200,
            4,
            (0, 2),
            ok,
        ),
        rec(b, d(8, 15), "GET", "/items/9", items, 200, 50, (0, 5), ok),
        rec(b, d(9, 0), "GET", "/orders", orders, 503, 60, (0, 0), ok),
        rec(
            None,
            d(8, 0),
            "GET",
            "/health",
            Some("/health"),
            200,
            2,
            (0, 0),
            ok,
        ),
    ]
}

/// The usage endpoint nested at `/v1/usage`, with an admin key.
fn app<S: UsageSink + Clone>(sink: S) -> Router {
    Router::new().nest_service(
        "/v1/usage",
        UsageService::new(sink).admin(|req: RequestInfo<'_>| {
            req.headers()
                .get("x-admin-key")
                .is_some_and(|v| v == ADMIN_KEY)
        }),
    )
}

struct Client {
    base: String,
}

impl Client {
    async fn call(&self, method: Method, uri: &str, auth: Auth) -> (StatusCode, Value, usize) {
        let mut req = Request::builder()
            .method(method)
            .uri(format!("{}{uri}", self.base));
        match auth {
            Auth::None => {}
            Auth::Token(t) => req = req.header("authorization", format!("Bearer {t}")),
            Auth::Admin => req = req.header("x-admin-key", ADMIN_KEY),
        }
        let (status, headers, body) = send(req.body(full("")).unwrap()).await;
        if status.is_success() || status.is_client_error() {
            assert_eq!(headers["content-type"], "application/json");
        }
        let len: usize = headers["content-length"].to_str().unwrap().parse().unwrap();
        let json = if body.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&body).unwrap()
        };
        (status, json, len)
    }

    async fn get(&self, uri: &str, auth: Auth) -> Value {
        let (status, body, _) = self.call(Method::GET, uri, auth).await;
        assert_eq!(status, StatusCode::OK, "{uri}: {body}");
        body
    }

    /// The status and the `parameter` of an error.
    async fn error(&self, uri: &str, auth: Auth) -> (u16, Option<String>) {
        let (status, body, _) = self.call(Method::GET, uri, auth).await;
        assert!(body["error"].is_string(), "{uri}: {body}");
        (
            status.as_u16(),
            body["parameter"].as_str().map(str::to_owned),
        )
    }
}

#[derive(Clone, Copy)]
enum Auth {
    None,
    Token(&'static str),
    Admin,
}

const DAY_28: &str = "since=2026-11-28T00:00:00Z&until=2026-11-29T00:00:00Z";

fn stats(requests: u64, c: u64, s: u64, req: u64, resp: u64, d: [u64; 4]) -> Value {
    json!({
        "requests": requests, "clientErrors": c, "serverErrors": s,
        "requestBytes": req, "responseBytes": resp,
        "durationUs": {"p50": d[0], "p95": d[1], "p99": d[2], "max": d[3]}
    })
}

fn bucket(start: &str, keys: Value, stats: Value) -> Value {
    let mut b = json!({ "start": start });
    for (k, v) in keys
        .as_object()
        .unwrap()
        .iter()
        .chain(stats.as_object().unwrap())
    {
        b[k] = v.clone();
    }
    b
}

/// Every parameter and error of the summary, against `sink`.
async fn exercise<S: UsageSink + Clone>(sink: S) {
    sink.record(&population()).await.unwrap();
    let addr = serve(app(sink.clone())).await;
    let c = Client {
        base: format!("http://{addr}"),
    };
    let a = Auth::Token(TOKEN_A);

    // The contract's example: by hour, grouped by route and status class.
    let before = OffsetDateTime::now_utc() - Duration::seconds(1);
    let s = c
        .get(
            &format!("/v1/usage/summary?{DAY_28}&interval=hour&groupBy=status,route"),
            a,
        )
        .await;
    let complete_until = s["completeUntil"].as_str().unwrap();
    let complete_until = OffsetDateTime::parse(
        complete_until,
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap();
    // A consumer's `completeUntil` is rounded down to the minute.
    assert!(
        complete_until >= floor_minute(before) && complete_until <= OffsetDateTime::now_utc(),
        "{s}"
    );
    assert_eq!(complete_until, floor_minute(complete_until), "{s}");
    let mut s = s;
    s["completeUntil"] = Value::Null;
    let expected = json!({
        "since": "2026-11-28T00:00:00.000Z",
        "until": "2026-11-29T00:00:00.000Z",
        "interval": "hour",
        "groupBy": ["route", "status"],
        "completeUntil": null,
        "buckets": [
            bucket("2026-11-28T08:00:00.000Z", json!({"route": "/items/{id}", "status": "2xx"}), stats(2, 0, 0, 0, 300, [10, 20, 20, 20])),
            bucket("2026-11-28T08:00:00.000Z", json!({"route": "/orders", "status": "2xx"}), stats(1, 0, 0, 50, 10, [30, 30, 30, 30])),
            bucket("2026-11-28T09:00:00.000Z", json!({"route": null, "status": "4xx"}), stats(1, 1, 0, 0, 0, [1, 1, 1, 1])),
            bucket("2026-11-28T09:00:00.000Z", json!({"route": "/items/{id}", "status": "4xx"}), stats(1, 1, 0, 0, 20, [5, 5, 5, 5])),
            bucket("2026-11-28T10:00:00.000Z", json!({"route": "/items/{id}", "status": "2xx"}), stats(1, 0, 0, 0, 0, [7, 7, 7, 7])),
            bucket("2026-11-28T10:00:00.000Z", json!({"route": "/items/{id}", "status": "5xx"}), stats(1, 0, 1, 0, 0, [90, 90, 90, 90])),
        ],
        "total": stats(7, 2, 1, 50, 330, [10, 90, 90, 90]),
    });
    assert_eq!(s, expected);

    // Each filter, and the list agrees with the total.
    let filters = [
        ("route=%2Fitems%2F%7Bid%7D", 5),
        ("outcome=client_gone", 1),
        ("outcome=error", 1),
        ("outcome=cancelled", 0),
        ("method=post", 1),
        ("path=%2Fitems%2F*", 5),
        ("path=%2Fnowhere", 1),
        ("status=4xx", 2),
        ("status=500", 1),
        ("route=%2Fitems%2F%7Bid%7D&status=2xx&outcome=complete", 2),
    ];
    for (filter, n) in filters {
        let s = c
            .get(&format!("/v1/usage/summary?{DAY_28}&{filter}"), a)
            .await;
        assert_eq!(s["total"]["requests"], n, "{filter}: {s}");
        let list = c
            .get(&format!("/v1/usage?{DAY_28}&{filter}&limit=1000"), a)
            .await;
        assert_eq!(
            list["requests"].as_array().unwrap().len(),
            n,
            "{filter}: {list}"
        );
    }

    // Intervals: day (the default), minute, month; UTC boundaries.
    let s = c
        .get(
            "/v1/usage/summary?since=2026-11-27T00:00:00Z&until=2026-11-29T00:00:00Z",
            a,
        )
        .await;
    assert_eq!(s["interval"], "day");
    let starts: Vec<(&str, u64)> = s["buckets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| {
            (
                b["start"].as_str().unwrap(),
                b["requests"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        starts,
        [
            ("2026-11-27T00:00:00.000Z", 1),
            ("2026-11-28T00:00:00.000Z", 7)
        ]
    );
    let s = c.get("/v1/usage/summary?since=2026-11-28T08:00:00Z&until=2026-11-28T09:00:00Z&interval=minute", a).await;
    let starts: Vec<&str> = s["buckets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["start"].as_str().unwrap())
        .collect();
    assert_eq!(
        starts,
        [
            "2026-11-28T08:10:00.000Z",
            "2026-11-28T08:20:00.000Z",
            "2026-11-28T08:30:00.000Z"
        ]
    );
    let s = c.get("/v1/usage/summary?since=2026-10-15T00:00:00Z&until=2026-12-01T00:00:00Z&interval=month", a).await;
    assert_eq!(
        s["buckets"],
        json!([bucket(
            "2026-11-01T00:00:00.000Z",
            json!({}),
            stats(9, 2, 1, 50, 333, [7, 90, 90, 90])
        )])
    );

    // Group by method and outcome.
    let s = c
        .get(
            &format!("/v1/usage/summary?{DAY_28}&groupBy=method,outcome"),
            a,
        )
        .await;
    let keys: Vec<(&str, &str, u64)> = s["buckets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| {
            (
                b["method"].as_str().unwrap(),
                b["outcome"].as_str().unwrap(),
                b["requests"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        keys,
        [
            ("GET", "complete", 4),
            ("GET", "client_gone", 1),
            ("GET", "error", 1),
            ("POST", "complete", 1)
        ]
    );

    // The caller sees its own records only; an admin sees all, or one consumer,
    // and may group by consumer.
    let s = c
        .get(&format!("/v1/usage/summary?{DAY_28}"), Auth::Token(TOKEN_B))
        .await;
    assert_eq!(s["total"]["requests"], 2);
    let s = c
        .get(&format!("/v1/usage/summary?{DAY_28}"), Auth::Admin)
        .await;
    assert_eq!(s["total"]["requests"], 10);
    let b = hash_token(TOKEN_B);
    let s = c
        .get(
            &format!("/v1/usage/summary?{DAY_28}&consumer={b}"),
            Auth::Admin,
        )
        .await;
    assert_eq!(s["total"]["requests"], 2);
    let s = c
        .get(
            &format!("/v1/usage/summary?{DAY_28}&groupBy=consumer"),
            Auth::Admin,
        )
        .await;
    let per: Vec<(Value, u64)> = s["buckets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| (b["consumer"].clone(), b["requests"].as_u64().unwrap()))
        .collect();
    let mut want = vec![
        (Value::Null, 1),
        (json!(hash_token(TOKEN_A)), 7),
        (json!(b), 2),
    ];
    want[1..].sort_by(|x, y| x.0.as_str().cmp(&y.0.as_str()));
    assert_eq!(per, want);

    // An empty range: no bucket, a zero total.
    let s = c
        .get(
            "/v1/usage/summary?since=2020-01-01T00:00:00Z&until=2020-01-02T00:00:00Z&interval=hour",
            a,
        )
        .await;
    assert_eq!(s["buckets"], json!([]));
    assert_eq!(s["total"], stats(0, 0, 0, 0, 0, [0, 0, 0, 0]));

    // Errors: each names its parameter.
    let cases: &[(&str, Auth, u16, Option<&str>)] = &[
        ("interval=week", a, 400, Some("interval")),
        ("groupBy=colour", a, 400, Some("groupBy")),
        ("groupBy=route,route", a, 400, Some("groupBy")),
        ("groupBy=consumer", a, 403, Some("groupBy")),
        ("consumer=x", a, 403, Some("consumer")),
        ("outcome=fine", a, 400, Some("outcome")),
        ("status=6xx", a, 400, Some("status")),
        ("method=G(ET", a, 400, Some("method")),
        ("path=items", a, 400, Some("path")),
        ("since=yesterday", a, 400, Some("since")),
        ("until=2026-13-01T00:00:00Z", a, 400, Some("until")),
        (
            "since=2026-11-29T00:00:00Z&until=2026-11-28T00:00:00Z",
            a,
            400,
            Some("since"),
        ),
        (
            "since=2026-01-01T00:00:00Z&until=2026-11-28T00:00:00Z&interval=minute",
            a,
            400,
            Some("interval"),
        ),
        ("limit=10", a, 400, Some("limit")),
        ("order=desc", a, 400, Some("order")),
        ("route=", a, 400, Some("route")),
        ("interval=day&interval=hour", a, 400, Some("interval")),
        ("", Auth::None, 401, None),
    ];
    for (q, auth, status, parameter) in cases {
        let got = c.error(&format!("/v1/usage/summary?{q}"), *auth).await;
        assert_eq!(got, (*status, parameter.map(str::to_owned)), "{q}");
    }
    // Too many buckets once grouped (time buckets times groups): 400. 5,001
    // minutes with two routes each are 10,002 buckets.
    let start = datetime!(2025-01-01 00:00 UTC);
    let many: Vec<UsageRecord> = (0..10_002)
        .map(|i| {
            let route = if i % 2 == 0 { "/even" } else { "/odd" };
            let at = start + Duration::minutes(i / 2);
            rec(
                Some(TOKEN_C),
                at,
                "GET",
                route,
                Some(route),
                200,
                1,
                (0, 0),
                Outcome::Complete,
            )
        })
        .collect();
    sink.record(&many).await.unwrap();
    let range = "since=2025-01-01T00:00:00Z&until=2025-01-05T00:00:00Z&interval=minute";
    let s = c
        .get(&format!("/v1/usage/summary?{range}"), Auth::Token(TOKEN_C))
        .await;
    assert_eq!(s["buckets"].as_array().unwrap().len(), 5_001);
    let (status, body, _) = c
        .call(
            Method::GET,
            &format!("/v1/usage/summary?{range}&groupBy=route"),
            Auth::Token(TOKEN_C),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("more than 10000 buckets"),
        "{body}"
    );
    // Method and HEAD.
    let (status, body, _) = c.call(Method::POST, "/v1/usage/summary", a).await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED, "{body}");
    let (status, body, len) = c
        .call(Method::HEAD, &format!("/v1/usage/summary?{DAY_28}"), a)
        .await;
    assert_eq!((status, body), (StatusCode::OK, Value::Null));
    assert!(len > 100, "{len}");
    // The list still answers at the mount point.
    let list = c.get(&format!("/v1/usage?{DAY_28}"), a).await;
    assert_eq!(list["requests"].as_array().unwrap().len(), 7);
}

#[tokio::test]
async fn summary_from_memory() {
    // Room for the 10,002 records of the bucket-limit case (the default keeps 10,000).
    exercise(MemorySink::with_capacity(20_000)).await;
}

#[tokio::test]
async fn summary_from_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let sink = tower_usage::SqliteSink::open(dir.path().join("usage.db")).unwrap();
    exercise(sink).await;
}

#[tokio::test]
async fn summary_from_postgres() {
    let url = std::env::var("TOWER_USAGE_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned());
    let schema = format!("tu_sum_{:016x}", fastrand::u64(..));
    let sink = tower_usage::PostgresSink::builder()
        .schema(&schema)
        .pool_size(2)
        .connect(&url)
        .await
        .unwrap_or_else(|e| {
            panic!("PostgreSQL at {url}: {e}; start it or set TOWER_USAGE_POSTGRES_URL")
        });
    let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    let result = tokio::spawn(exercise(sink)).await;
    client
        .batch_execute(&format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"))
        .await
        .unwrap();
    if let Err(e) = result {
        std::panic::resume_unwind(e.into_panic());
    }
}

/// The default range is the last 24 hours.
#[tokio::test]
async fn the_default_range_is_the_last_day() {
    let sink = MemorySink::new();
    let now = OffsetDateTime::now_utc();
    let ok = Outcome::Complete;
    sink.record(&[
        rec(
            Some(TOKEN_A),
            now - Duration::hours(1),
            "GET",
            "/a",
            None,
            200,
            1,
            (0, 0),
            ok,
        ),
        rec(
            Some(TOKEN_A),
            now - Duration::hours(25),
            "GET",
            "/a",
            None,
            200,
            1,
            (0, 0),
            ok,
        ),
    ])
    .await
    .unwrap();
    let addr = serve(app(sink)).await;
    let c = Client {
        base: format!("http://{addr}"),
    };
    let s = c.get("/v1/usage/summary", Auth::Token(TOKEN_A)).await;
    assert_eq!(s["total"]["requests"], 1, "{s}");
    assert_eq!(s["interval"], "day");
    assert_eq!(s["groupBy"], json!([]));
}

/// Requests recorded by the layer show in the summary once written; with the
/// layer's handle, `completeUntil` is the time of the read when nothing is
/// pending. Also: the service mounted with `route_service` on `.../summary`.
#[tokio::test]
async fn recorded_requests_are_summarized() {
    let sink = MemorySink::new();
    let layer = UsageLayer::new(sink.clone());
    let handle = layer.handle();
    let usage = UsageService::new(sink).recorder(handle.clone());
    let app = Router::new()
        .route("/items/{id}", get(|| async { "an item" }))
        .route_service("/v1/usage", usage.clone())
        .route_service("/v1/usage/summary", usage)
        .layer(layer);
    let addr = serve(app).await;
    let c = Client {
        base: format!("http://{addr}"),
    };
    for i in 0..5 {
        let req = Request::get(format!("http://{addr}/items/{i}"))
            .header("authorization", format!("Bearer {TOKEN_A}"))
            .body(full(""))
            .unwrap();
        assert_eq!(send(req).await.0, StatusCode::OK);
    }
    handle.flush().await;
    assert_eq!(handle.complete_until(), None);
    let before = OffsetDateTime::now_utc() - Duration::milliseconds(1);
    let s = c
        .get(
            "/v1/usage/summary?groupBy=route,method",
            Auth::Token(TOKEN_A),
        )
        .await;
    assert_eq!(s["total"]["requests"], 5, "{s}");
    assert_eq!(s["total"]["responseBytes"], 5 * "an item".len());
    assert_eq!(s["buckets"][0]["route"], "/items/{id}");
    assert_eq!(s["buckets"][0]["method"], "GET");
    let cu = OffsetDateTime::parse(
        s["completeUntil"].as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap();
    assert!(cu >= floor_minute(before), "{s}");
    // The summary itself is not recorded.
    handle.flush().await;
    let s = c.get("/v1/usage/summary", Auth::Token(TOKEN_A)).await;
    assert_eq!(s["total"]["requests"], 5, "{s}");
}

/// With captures waiting in the writer's queue, `completeUntil` is the arrival
/// of the oldest: the summary does not claim the records it cannot count yet.
#[tokio::test]
async fn complete_until_waits_for_the_oldest_queued_capture() {
    let sink = MemorySink::new();
    // The writer is not running: captures stay in its queue.
    let (layer, worker) = UsageLayer::new(sink.clone()).pair();
    let handle = layer.handle();
    let usage = UsageService::new(sink).recorder(handle.clone());
    let app = Router::new()
        .route("/items/{id}", get(|| async { "an item" }))
        .nest_service("/v1/usage", usage)
        .layer(layer);
    let addr = serve(app).await;
    assert_eq!(handle.complete_until(), None);
    let before = OffsetDateTime::now_utc();
    for i in 0..3 {
        let req = Request::get(format!("http://{addr}/items/{i}"))
            .header("authorization", format!("Bearer {TOKEN_A}"))
            .body(full(""))
            .unwrap();
        assert_eq!(send(req).await.0, StatusCode::OK);
    }
    let after_first = OffsetDateTime::now_utc();
    let oldest = handle.complete_until().expect("three captures are queued");
    assert!(
        oldest >= before - Duration::milliseconds(1) && oldest <= after_first,
        "{oldest}"
    );

    let c = Client {
        base: format!("http://{addr}"),
    };
    let s = c.get("/v1/usage/summary", Auth::Token(TOKEN_A)).await;
    assert_eq!(s["total"]["requests"], 0, "{s}");
    let shown = OffsetDateTime::parse(
        s["completeUntil"].as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap();
    // Rounded down to the minute for a consumer: the oldest queued capture
    // could be another consumer's.
    assert_eq!(shown, floor_minute(oldest), "{s}");

    tokio::spawn(worker);
    handle.flush().await;
    assert_eq!(handle.complete_until(), None);
    let s = c.get("/v1/usage/summary", Auth::Token(TOKEN_A)).await;
    assert_eq!(s["total"]["requests"], 3, "{s}");
}

/// `t` rounded down to its minute: a consumer's `completeUntil`.
fn floor_minute(t: OffsetDateTime) -> OffsetDateTime {
    let s = t.unix_timestamp();
    OffsetDateTime::from_unix_timestamp(s - s.rem_euclid(60)).unwrap()
}

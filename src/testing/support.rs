//! Records and assertions the checks share: realistic records, sink calls that
//! turn errors into messages, paging, and comparisons that say what differs.

use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue};
use time::OffsetDateTime;

use crate::record::{format_timestamp, from_unix_millis, unix_millis};
use crate::sink::{ConsumerScope, Order};
use crate::{
    CapturedBody, Outcome, RecordedRequest, UsagePage, UsageQuery, UsageRecord, UsageSink,
};

/// 2024-05-01T09:50:00.000Z: every check's records are dated from here.
const BASE_MS: i64 = 1_714_557_000_000;

/// Pages read before a paging loop is declared endless.
const MAX_PAGES: usize = 20_000;

/// The instant `offset_ms` milliseconds after the kit's base time.
pub(super) fn at(offset_ms: i64) -> OffsetDateTime {
    from_unix_millis(BASE_MS + offset_ms).unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

/// A seeded source of ids and content, so a failure reproduces with the same
/// records.
pub(super) struct Gen {
    rng: fastrand::Rng,
    serial: u64,
}

impl Gen {
    pub(super) fn new(seed: u64) -> Self {
        Self {
            rng: fastrand::Rng::with_seed(seed),
            serial: 0,
        }
    }

    /// A ULID for `created_at`, in the format of [`UsageRecord::new_id`].
    pub(super) fn id(&mut self, created_at: OffsetDateTime) -> String {
        let ms = u64::try_from(unix_millis(created_at)).unwrap_or(0);
        let random = self.rng.u128(..) & ((1u128 << 80) - 1);
        ulid::Ulid::from_parts(ms, random).to_string()
    }

    pub(super) fn shuffle<T>(&mut self, items: &mut [T]) {
        self.rng.shuffle(items);
    }

    /// A realistic JSON API exchange: headers a client sends, a JSON body for
    /// writes, a JSON answer, a route template with its params.
    pub(super) fn request(
        &mut self,
        offset_ms: i64,
        consumer: Option<&str>,
        method: &str,
        path: &str,
        status: u16,
    ) -> UsageRecord {
        self.serial += 1;
        let n = self.serial;
        let created_at = at(offset_ms);

        let mut headers = HeaderMap::new();
        headers.insert("host", HeaderValue::from_static("api.example.com"));
        let agent = ["curl/8.5.0", "python-requests/2.31.0", "okhttp/4.12.0"];
        headers.insert(
            "user-agent",
            HeaderValue::from_static(agent[self.rng.usize(..agent.len())]),
        );
        headers.insert("accept", HeaderValue::from_static("application/json"));
        if consumer.is_some() {
            headers.insert("authorization", HeaderValue::from_static("[REDACTED]"));
        }
        if let Ok(v) = HeaderValue::from_str(&format!("req-{:016x}", self.rng.u64(..))) {
            headers.insert("x-request-id", v);
        }

        let writes = matches!(method, "POST" | "PUT" | "PATCH");
        let body = if writes {
            headers.insert("content-type", HeaderValue::from_static("application/json"));
            CapturedBody::complete(format!(r#"{{"name":"widget-{n}","quantity":{}}}"#, n % 17))
        } else {
            CapturedBody::default()
        };
        let response = match status {
            204 | 301 => CapturedBody::default(),
            200..=299 => CapturedBody::complete(format!(r#"{{"id":"w{n}","ok":true}}"#)),
            _ => CapturedBody::complete(format!(r#"{{"error":"status {status}"}}"#)),
        };
        let mut response_headers = HeaderMap::new();
        if !response.is_empty() {
            response_headers.insert("content-type", HeaderValue::from_static("application/json"));
        }

        let (route, params) = route_of(path);
        UsageRecord {
            id: self.id(created_at),
            consumer: consumer.map(str::to_owned),
            method: method.to_owned(),
            path: path.to_owned(),
            route,
            request: RecordedRequest {
                body,
                query: if method == "GET" {
                    format!("page={}&per_page=25", n % 5 + 1)
                } else {
                    String::new()
                },
                params,
                headers,
            },
            response,
            response_headers,
            status,
            created_at,
            duration_us: 150 + self.rng.u64(..90_000),
            outcome: Outcome::Complete,
            grpc: None,
            capture: Default::default(),
            // One record in three came with a `traceparent`; four of them
            // in a row share a trace.
            trace: n.is_multiple_of(3).then(|| crate::TraceContext {
                trace_id: format!("4bf92f3577b34da6{:016x}", n / 12 + 1),
                span_id: format!("{:016x}", n | 1 << 60),
            }),
        }
    }
}

/// `/items/42` has the route `/items/{id}`; other paths are their own route.
fn route_of(path: &str) -> (Option<String>, Vec<(String, String)>) {
    match path.rsplit_once('/') {
        Some((head, last)) if !last.is_empty() && last.bytes().all(|b| b.is_ascii_digit()) => (
            Some(format!("{head}/{{id}}")),
            vec![("id".to_owned(), last.to_owned())],
        ),
        _ => (Some(path.to_owned()), Vec::new()),
    }
}

pub(super) fn header(name: &'static str, value: &[u8]) -> (HeaderName, HeaderValue) {
    (
        HeaderName::from_static(name),
        HeaderValue::from_bytes(value).unwrap_or(HeaderValue::from_static("invalid")),
    )
}

pub(super) fn headers(pairs: &[(HeaderName, HeaderValue)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (name, value) in pairs {
        map.append(name.clone(), value.clone());
    }
    map
}

pub(super) fn body(bytes: &'static [u8]) -> CapturedBody {
    CapturedBody::complete(Bytes::from_static(bytes))
}

// ---------------------------------------------------------------------------
// Describing things in messages

/// `id 01HX… (consumer "a", GET /items, status 200, created_at 2024-…Z)`.
pub(super) fn describe(r: &UsageRecord) -> String {
    format!(
        "id {} (consumer {}, {} {}, status {}, created_at {})",
        r.id,
        consumer_name(r.consumer.as_deref()),
        r.method,
        r.path,
        r.status,
        format_timestamp(r.created_at)
    )
}

pub(super) fn consumer_name(consumer: Option<&str>) -> String {
    match consumer {
        Some(c) => format!("{c:?}"),
        None => "None (anonymous)".to_owned(),
    }
}

pub(super) fn scope_name(scope: &ConsumerScope) -> String {
    match scope {
        ConsumerScope::All => "all consumers".to_owned(),
        ConsumerScope::Consumer(c) => format!("consumer {c:?}"),
        ConsumerScope::Anonymous => "anonymous records".to_owned(),
    }
}

pub(super) fn order_name(order: Order) -> &'static str {
    match order {
        Order::Asc => "oldest first",
        Order::Desc => "newest first",
    }
}

// ---------------------------------------------------------------------------
// Calling the sink

/// `record(batch)`, with a failure turned into a message.
pub(super) async fn record<S: UsageSink + ?Sized>(
    sink: &S,
    batch: &[UsageRecord],
    what: &str,
) -> Result<(), String> {
    sink.record(batch).await.map_err(|e| {
        format!(
            "record() of {what} ({} records) failed: {e} (kind {:?})",
            batch.len(),
            e.kind()
        )
    })
}

/// `query(q)`, with a failure or a malformed page turned into a message.
pub(super) async fn query<S: UsageSink + ?Sized>(
    sink: &S,
    q: &UsageQuery,
    what: &str,
) -> Result<UsagePage, String> {
    // A check that pages must be stoppable by the kit's time limit even over
    // a sink whose calls never wait: yield between calls.
    tokio::task::yield_now().await;
    let page = sink
        .query(q)
        .await
        .map_err(|e| format!("{what}: query() failed: {e} (kind {:?})", e.kind()))?;
    let limit = q.limit.max(1);
    if page.records.len() > limit {
        return Err(format!(
            "{what}: the page holds {} records, more than the limit of {limit}",
            page.records.len()
        ));
    }
    if page.records.is_empty() && page.next_cursor.is_some() {
        return Err(format!(
            "{what}: an empty page came with a next_cursor; next_cursor points after \
             the page's last record, so an empty page has none (see UsagePage::from_sorted)"
        ));
    }
    Ok(page)
}

/// Every page of `q` from the first, following `next_cursor`.
pub(super) async fn read_all<S: UsageSink + ?Sized>(
    sink: &S,
    q: &UsageQuery,
    what: &str,
) -> Result<Vec<UsageRecord>, String> {
    let mut q = q.clone();
    q.cursor = None;
    let mut out = Vec::new();
    let mut first_seen: HashMap<String, usize> = HashMap::new();
    for page_no in 1..=MAX_PAGES {
        let page = query(sink, &q, &format!("{what}, page {page_no}")).await?;
        for r in page.records {
            if let Some(earlier) = first_seen.insert(r.id.clone(), page_no) {
                return Err(if earlier == page_no {
                    format!("{what}: page {page_no} holds {} twice", describe(&r))
                } else {
                    format!(
                        "{what}: page {page_no} repeats {} from page {earlier}: \
                         the next page must start after the cursor's position \
                         (UsageQuery::position)",
                        describe(&r)
                    )
                });
            }
            out.push(r);
        }
        match page.next_cursor {
            Some(cursor) => q.cursor = Some(cursor),
            None => return Ok(out),
        }
    }
    Err(format!(
        "{what}: still returned a next_cursor after {MAX_PAGES} pages"
    ))
}

/// `records` sorted as a page in `order` is.
pub(super) fn sorted(records: &[UsageRecord], order: Order) -> Vec<UsageRecord> {
    let mut out = records.to_vec();
    out.sort_by(|a, b| order.compare(a, b));
    out
}

/// `got` holds exactly `expected`, in the same order, each once.
pub(super) fn expect_records(
    what: &str,
    expected: &[UsageRecord],
    got: &[UsageRecord],
) -> Result<(), String> {
    let mut seen = HashSet::new();
    for r in got {
        if !seen.insert(r.id.as_str()) {
            return Err(format!("{what}: returned {} more than once", describe(r)));
        }
    }
    let wanted: HashSet<&str> = expected.iter().map(|r| r.id.as_str()).collect();
    let missing: Vec<&UsageRecord> = expected
        .iter()
        .filter(|r| !seen.contains(r.id.as_str()))
        .collect();
    let unexpected: Vec<&UsageRecord> = got
        .iter()
        .filter(|r| !wanted.contains(r.id.as_str()))
        .collect();
    if !missing.is_empty() || !unexpected.is_empty() {
        let mut msg = format!(
            "{what}: expected {} records, got {}",
            expected.len(),
            got.len()
        );
        if !missing.is_empty() {
            let _ = write!(
                msg,
                "; {} missing, e.g. {}",
                missing.len(),
                describe(missing[0])
            );
        }
        if !unexpected.is_empty() {
            let _ = write!(
                msg,
                "; {} that should not be there, e.g. {}",
                unexpected.len(),
                describe(unexpected[0])
            );
        }
        return Err(msg);
    }
    for (i, (e, g)) in expected.iter().zip(got).enumerate() {
        if e.id != g.id {
            return Err(format!(
                "{what}: wrong order at position {i}: expected {}, got {}; records sort \
                 by (created_at, id), ties on created_at broken by id",
                describe(e),
                describe(g)
            ));
        }
    }
    Ok(())
}

/// Every field of a record that did not come back as stored, one line each.
pub(super) fn field_differences(stored: &UsageRecord, read: &UsageRecord) -> Vec<String> {
    let mut diffs = Vec::new();
    let mut field = |name: &str, same: bool, a: &dyn std::fmt::Debug, b: &dyn std::fmt::Debug| {
        if !same {
            diffs.push(format!("{name}: stored {a:?}, read back {b:?}"));
        }
    };
    field(
        "consumer",
        stored.consumer == read.consumer,
        &stored.consumer,
        &read.consumer,
    );
    field(
        "method",
        stored.method == read.method,
        &stored.method,
        &read.method,
    );
    field("path", stored.path == read.path, &stored.path, &read.path);
    field(
        "route",
        stored.route == read.route,
        &stored.route,
        &read.route,
    );
    let (a, b) = (&stored.request, &read.request);
    body_differences("request.body", &a.body, &b.body, &mut field);
    field("request.query", a.query == b.query, &a.query, &b.query);
    field("request.params", a.params == b.params, &a.params, &b.params);
    field(
        "request.headers",
        a.headers == b.headers,
        &header_list(&a.headers),
        &header_list(&b.headers),
    );
    body_differences("response", &stored.response, &read.response, &mut field);
    field(
        "response_headers",
        stored.response_headers == read.response_headers,
        &header_list(&stored.response_headers),
        &header_list(&read.response_headers),
    );
    field(
        "status",
        stored.status == read.status,
        &stored.status,
        &read.status,
    );
    let (ms_a, ms_b) = (unix_millis(stored.created_at), unix_millis(read.created_at));
    field(
        "created_at (unix ms)",
        ms_a == ms_b,
        &format!("{ms_a} ({})", format_timestamp(stored.created_at)),
        &format!("{ms_b} ({})", format_timestamp(read.created_at)),
    );
    field(
        "duration_us",
        stored.duration_us == read.duration_us,
        &stored.duration_us,
        &read.duration_us,
    );
    field(
        "outcome",
        stored.outcome == read.outcome,
        &stored.outcome,
        &read.outcome,
    );
    field("grpc", stored.grpc == read.grpc, &stored.grpc, &read.grpc);
    field(
        "trace",
        stored.trace == read.trace,
        &stored.trace,
        &read.trace,
    );
    field(
        "capture",
        stored.capture == read.capture,
        &stored.capture,
        &read.capture,
    );
    diffs
}

fn body_differences(
    name: &str,
    a: &CapturedBody,
    b: &CapturedBody,
    field: &mut impl FnMut(&str, bool, &dyn std::fmt::Debug, &dyn std::fmt::Debug),
) {
    field(
        &format!("{name}.bytes"),
        a.bytes == b.bytes,
        &a.bytes,
        &b.bytes,
    );
    field(&format!("{name}.size"), a.size == b.size, &a.size, &b.size);
    field(
        &format!("{name}.truncated"),
        a.truncated == b.truncated,
        &a.truncated,
        &b.truncated,
    );
}

/// Headers in order, repeats kept, values as bytes where they are not UTF-8.
fn header_list(map: &HeaderMap) -> Vec<(String, String)> {
    map.iter()
        .map(|(k, v)| {
            let value = match v.to_str() {
                Ok(s) => s.to_owned(),
                Err(_) => format!("{:?}", Bytes::copy_from_slice(v.as_bytes())),
            };
            (k.as_str().to_owned(), value)
        })
        .collect()
}

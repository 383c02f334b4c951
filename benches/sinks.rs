//! Sink throughput and `/usage` page latency, for `MemorySink`, `SqliteSink`,
//! `PostgresSink` and (with feature `clickhouse`) `ClickHouseSink`.
//!
//! * `sink_write/<sink>/<batch>`: one `record` call of a batch of 1, 64, 512 or
//!   4096 records, each new (fresh ids), with ~1 KiB JSON request and response
//!   bodies, 8 request headers, a route param, and a consumer drawn from 1,000.
//!   Each sink and batch size writes into a fresh store: a `MemorySink` of
//!   100,000 records, a SQLite file in a temporary directory, a PostgreSQL schema
//!   dropped afterwards.
//!   `postgres_partitioned` is the same on a table partitioned by day.
//! * page latency: 500 `query` calls, each for one random consumer (of 1,000)
//!   and a random page of 100 records (a keyset cursor at a random instant,
//!   either order), on a store of 1,000,000 records. The stores are filled once
//!   and reused by later runs: the SQLite file is
//!   `target/bench-data/sinks-1m.db`, the PostgreSQL table `tu_bench.usage_records`,
//!   each refilled when it does not hold the expected records; the same on a
//!   table partitioned by day, `tu_bench_part.usage_records`
//!   (`postgres_partitioned`). The `MemorySink`
//!   (capacity 1,000,000) is filled on every run. The SQL stores are measured
//!   twice: as found (the OS may have dropped them from its page cache since they
//!   were filled: "cold"), then after reading them through once, as a server
//!   that has been answering queries would have them. The `MemorySink` keeps
//!   all 1,000,000 records (`with_limits(STORED, usize::MAX)`: about 3 GB; its
//!   default 64 MiB byte budget would keep some 20,000).
//!
//! * summary latency: 200 `summarize` calls, each for one random consumer, one
//!   UTC day of the filled span, `interval=hour`, `groupBy=route,status` (the
//!   common query), on the same stores; and the admin summary of all 30 days,
//!   `interval=day`, over every consumer (5 calls, the median reported).
//!
//! * `sink_export/<sink>`: `GET /usage?format=ndjson` of one consumer's 100,000
//!   records (the records above, 1 ms apart) through `UsageService` (called as a
//!   tower service, no network), the body read frame by frame and dropped: what
//!   an export costs the server. Reported as records/s (criterion's median) and
//!   the peak memory the export added to the process (its peak resident set,
//!   reset before the export through `/proc/self/clear_refs`, less the resident
//!   set before it; Linux only). Each sink is filled afresh: a `MemorySink` of
//!   100,000 records, a SQLite file in a temporary directory, the PostgreSQL
//!   schema `tu_bench_export` (dropped afterwards).
//!
//! With feature `clickhouse`, `ClickHouseSink` is measured too: writes at
//! batch 512 and 4096 only (a part per insert: ClickHouse is not meant for
//! single-record inserts), each in a fresh database; pages and summaries on
//! `tu_bench.usage_records`, filled like the others and then merged
//! (`OPTIMIZE TABLE ... FINAL`, as the server's background merges leave a
//! table that has been running a while). The server is
//! `TOWER_USAGE_CLICKHOUSE_URL`, by default `http://127.0.0.1:8123`.
//!
//! PostgreSQL is `TOWER_USAGE_POSTGRES_URL`, by default
//! `postgres://postgres@127.0.0.1:5432/test`. At the end the bench prints records/s
//! per sink and batch size (from criterion's median time per batch) and the page
//! latencies, as markdown tables:
//!
//! ```text
//! cargo bench --bench sinks --features sqlite,postgres
//! cargo bench --bench sinks --features sqlite,postgres -- sink_export   # exports only
//! cargo bench --bench sinks --features sqlite,postgres,clickhouse -- 'sink_write/(postgres|clickhouse)/(512|4096)'
//! cargo bench --bench sinks --features sqlite,postgres,clickhouse -- 'sink_(page|summary)/clickhouse'
//! cargo bench --bench sinks --features sqlite,postgres -- 'sink_(page|summary)/postgres'
//! ```

use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{criterion_group, BenchmarkId, Criterion, SamplingMode, Throughput};
use http::{HeaderMap, HeaderValue};
use serde_json::{json, Value};
use time::OffsetDateTime;
use tower_usage::sink::postgres::PartitionBy;
use tower_usage::sink::{
    ConsumerScope, GroupBy, GroupKey, Interval, Order, SummaryQuery, UsageQuery,
};
use tower_usage::{
    CapturedBody, MemorySink, Outcome, PostgresSink, RecordedRequest, SqliteSink, UsageRecord,
    UsageSink,
};

const DEFAULT_URL: &str = "postgres://postgres@127.0.0.1:5432/test";
const BATCHES: [usize; 4] = [1, 64, 512, 4096];
const CONSUMERS: usize = 1_000;
const STORED: usize = 1_000_000;
const QUERIES: usize = 500;
const PAGE: usize = 100;
/// The filled stores' records are spread over 30 days from this instant.
const FILL_START_MS: i64 = 1_700_000_000_000;
const FILL_SPAN_MS: i64 = 30 * 24 * 3600 * 1000;
const BENCH_SCHEMA: &str = "tu_bench";
/// Says what a filled store holds; a store tagged otherwise is filled again.
const FILL_TAG: &str = "1000000 records over 1000 consumers, 30 days, fill v3";

fn pg_url() -> String {
    std::env::var("TOWER_USAGE_POSTGRES_URL").unwrap_or_else(|_| DEFAULT_URL.to_owned())
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target"))
}

// ---------------------------------------------------------------------------
// Records

/// Makes realistic records: a pool of varied templates, each new record a
/// template with a fresh id, timestamp and consumer.
struct Gen {
    rng: fastrand::Rng,
    consumers: Vec<String>,
    templates: Vec<UsageRecord>,
    next: usize,
}

fn random_text(rng: &mut fastrand::Rng, alphabet: &[u8], len: usize) -> String {
    (0..len)
        .map(|_| alphabet[rng.usize(..alphabet.len())] as char)
        .collect()
}

const B58: &[u8] = b"123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz";
const HEX: &[u8] = b"0123456789abcdef";

impl Gen {
    /// The same 1,000 consumers whatever the seed; templates and draws by `seed`.
    fn new(seed: u64) -> Self {
        let mut rng = fastrand::Rng::with_seed(1);
        let consumers = (0..CONSUMERS)
            .map(|_| random_text(&mut rng, HEX, 32))
            .collect();
        let mut rng = fastrand::Rng::with_seed(seed);
        let templates = (0..1024).map(|_| template(&mut rng)).collect();
        Self {
            rng,
            consumers,
            templates,
            next: 0,
        }
    }

    fn record(&mut self, created_at_ms: i64) -> UsageRecord {
        let mut r = self.templates[self.next % self.templates.len()].clone();
        self.next += 1;
        let created_at = from_ms(created_at_ms);
        r.id = UsageRecord::new_id(created_at);
        r.created_at = created_at;
        r.consumer = Some(self.consumers[self.rng.usize(..CONSUMERS)].clone());
        r.duration_us = self.rng.u64(200..20_000);
        r
    }

    /// `n` records created now.
    fn batch(&mut self, n: usize) -> Vec<UsageRecord> {
        let now = OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000;
        (0..n).map(|_| self.record(now as i64)).collect()
    }
}

fn from_ms(ms: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000).unwrap()
}

/// One request/response pair: `POST /rest/v1/collection/{collectionId}/airdrop`
/// with ~1 KiB of JSON each way, 8 request headers, 3 response headers.
fn template(rng: &mut fastrand::Rng) -> UsageRecord {
    let collection = random_text(rng, HEX, 12);
    let airdrops: Vec<Value> = (0..9)
        .map(|_| {
            json!({
                "address": random_text(rng, B58, 44),
                "userId": random_text(rng, HEX, 12),
                "collectionId": collection,
                "amount": rng.u32(1..1000),
            })
        })
        .collect();
    let req_body = serde_json::to_vec(&json!({"airdrops": airdrops, "sequential": false})).unwrap();
    let succeeded: Vec<Value> = (0..8)
        .map(|_| {
            json!({
                "taskId": random_text(rng, HEX, 32),
                "address": random_text(rng, B58, 44),
                "state": "SUCCEEDED",
            })
        })
        .collect();
    let resp_body = serde_json::to_vec(&json!({
        "id": random_text(rng, B58, 32),
        "count": 9,
        "statuses": {"SUCCEEDED": succeeded},
    }))
    .unwrap();
    let mut headers = HeaderMap::new();
    let h = |s: String| HeaderValue::from_str(&s).unwrap();
    headers.insert("host", HeaderValue::from_static("api.example.com"));
    headers.insert(
        "user-agent",
        HeaderValue::from_static("PostmanRuntime/7.29.2"),
    );
    headers.insert("accept", HeaderValue::from_static("*/*"));
    headers.insert(
        "accept-encoding",
        HeaderValue::from_static("gzip, deflate, br"),
    );
    headers.insert("content-type", HeaderValue::from_static("application/json"));
    headers.insert("content-length", h(req_body.len().to_string()));
    headers.insert("authorization", HeaderValue::from_static("[REDACTED]"));
    headers.insert("x-request-id", h(format!("{:032x}", rng.u128(..))));
    let mut response_headers = HeaderMap::new();
    response_headers.insert("content-type", HeaderValue::from_static("application/json"));
    response_headers.insert("content-length", h(resp_body.len().to_string()));
    response_headers.insert("x-request-id", h(format!("{:032x}", rng.u128(..))));
    UsageRecord {
        id: String::new(),
        consumer: None,
        method: "POST".into(),
        path: format!("/rest/v1/collection/{collection}/airdrop"),
        // Four routes, mostly 2xx, some 4xx and 5xx: groups for the summary.
        route: Some(
            [
                "/rest/v1/collection/{collectionId}/airdrop",
                "/rest/v1/collection/{collectionId}/owners",
                "/rest/v1/airdrop/{batchId}",
                "/rest/v1/airdrop/",
            ][rng.usize(..4)]
            .into(),
        ),
        request: RecordedRequest {
            body: CapturedBody::complete(Bytes::from(req_body)),
            query: String::new(),
            params: vec![("collectionId".into(), collection)],
            headers,
        },
        response: CapturedBody::complete(Bytes::from(resp_body)),
        response_headers,
        status: [200, 200, 200, 200, 200, 201, 404, 429, 500][rng.usize(..9)],
        created_at: OffsetDateTime::UNIX_EPOCH,
        duration_us: 0,
        outcome: Outcome::Complete,
        grpc: None,
        capture: Default::default(),
        trace: None,
    }
}

// ---------------------------------------------------------------------------
// Stores

/// A PostgreSQL sink on `schema`, which is created if missing.
async fn pg_sink(schema: &str) -> PostgresSink {
    pg_sink_with(schema, None).await
}

/// [`pg_sink`], its table partitioned `by` when given.
async fn pg_sink_with(schema: &str, by: Option<PartitionBy>) -> PostgresSink {
    let url = pg_url();
    let mut builder = PostgresSink::builder().schema(schema).pool_size(4);
    if let Some(by) = by {
        builder = builder.partition(by);
    }
    builder.connect(&url).await.unwrap_or_else(|e| {
        panic!(
            "PostgreSQL at {url}: {e}. Start it with `pg_ctlcluster --skip-systemctl-redirect \
             $(ls /etc/postgresql) main start`, or set TOWER_USAGE_POSTGRES_URL."
        )
    })
}

async fn pg_exec(sink: &PostgresSink, sql: &str) {
    let client = sink.pool().get().await.expect("a connection");
    client.batch_execute(sql).await.expect(sql);
}

async fn pg_count(sink: &PostgresSink) -> i64 {
    let client = sink.pool().get().await.expect("a connection");
    let sql = format!(
        "SELECT count(*) FROM \"{}\".\"{}\"",
        sink.schema(),
        sink.table()
    );
    client.query_one(&sql, &[]).await.expect(&sql).get(0)
}

/// Fills `sink` with [`STORED`] records spread over [`FILL_SPAN_MS`], consumers
/// drawn uniformly from [`CONSUMERS`], in batches of 4096.
///
/// `writers` tasks write at once, each its own half (or whole) of the span:
/// two for the SQL sinks; one for `MemorySink`, whose index inserts a record
/// out of time order by moving every newer one (two writers interleaving
/// halves of the span made its fill quadratic: over 20 minutes).
async fn fill<S: UsageSink + Clone>(name: &str, sink: &S, writers: usize) {
    let started = Instant::now();
    let chunk = 4096;
    let step = FILL_SPAN_MS / STORED as i64;
    let per_writer = STORED / writers;
    let mut tasks = Vec::new();
    for w in 0..writers {
        let sink = sink.clone();
        tasks.push(tokio::spawn(async move {
            let mut gen = Gen::new(42 + w as u64);
            let mut done = 0;
            while done < per_writer {
                let n = chunk.min(per_writer - done);
                let batch: Vec<UsageRecord> = (0..n)
                    .map(|i| {
                        let k = (w * per_writer + done + i) as i64;
                        gen.record(FILL_START_MS + k * step)
                    })
                    .collect();
                sink.record(&batch).await.expect("filling the store");
                done += n;
            }
        }));
    }
    for t in tasks {
        t.await.expect("a fill task");
    }
    eprintln!(
        "{name}: filled {STORED} records in {:.1} s",
        started.elapsed().as_secs_f64()
    );
}

/// The SQLite file of [`STORED`] records, filled on first use. A marker file
/// written after the last batch committed says the fill is complete.
async fn sqlite_filled() -> SqliteSink {
    let dir = target_dir().join("bench-data");
    std::fs::create_dir_all(&dir).unwrap();
    let db = dir.join("sinks-1m.db");
    let marker = dir.join("sinks-1m.db.complete");
    let expected = FILL_TAG;
    if std::fs::read_to_string(&marker).ok().as_deref() == Some(expected) {
        eprintln!("sqlite: reusing {}", db.display());
        return SqliteSink::open(&db).unwrap();
    }
    for ext in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{ext}", db.display()));
    }
    let _ = std::fs::remove_file(&marker);
    let sink = SqliteSink::open(&db).unwrap();
    fill("sqlite", &sink, 2).await;
    std::fs::write(&marker, expected).unwrap();
    sink
}

/// The schema of the partitioned store (issue 20).
const BENCH_SCHEMA_PARTITIONED: &str = "tu_bench_part";

/// `tu_bench.usage_records` with [`STORED`] records, filled on first use.
async fn postgres_filled() -> PostgresSink {
    postgres_store("postgres", BENCH_SCHEMA, None).await
}

/// `tu_bench_part.usage_records`, partitioned by day, with the same records.
async fn postgres_partitioned_filled() -> PostgresSink {
    postgres_store(
        "postgres_partitioned",
        BENCH_SCHEMA_PARTITIONED,
        Some(PartitionBy::Day),
    )
    .await
}

/// `<schema>.usage_records` with [`STORED`] records, partitioned `by` when
/// given, filled on first use and reused while it holds them all.
async fn postgres_store(name: &str, schema: &str, by: Option<PartitionBy>) -> PostgresSink {
    let sink = pg_sink_with(schema, by).await;
    let n = pg_count(&sink).await;
    if n == STORED as i64 {
        eprintln!("{name}: reusing {schema}.usage_records");
        return sink;
    }
    eprintln!("{name}: {schema}.usage_records holds {n} records; refilling");
    pg_exec(&sink, &format!("DROP SCHEMA \"{schema}\" CASCADE")).await;
    sink.migrate().await.unwrap();
    fill(name, &sink, 2).await;
    if by.is_some() {
        // The records landed in `DEFAULT` (partitions are made ahead of
        // today, not behind): one maintenance round moves them into their
        // own, as it would a migrated table's past.
        let t = Instant::now();
        let round = sink.maintain().await.expect("maintenance");
        eprintln!(
            "{name}: {} records moved from DEFAULT into {} partitions in {:.1} s",
            round.moved_from_default,
            round.created,
            t.elapsed().as_secs_f64()
        );
    }
    pg_exec(&sink, &format!("VACUUM ANALYZE \"{schema}\".usage_records")).await;
    sink
}

/// ClickHouse: the sink, its stores, and the statements the bench runs.
#[cfg(feature = "clickhouse")]
mod ch {
    use tower_usage::ClickHouseSink;

    pub(crate) fn url() -> String {
        std::env::var("TOWER_USAGE_CLICKHOUSE_URL")
            .unwrap_or_else(|_| "http://127.0.0.1:8123".to_owned())
    }

    /// A sink on `database`, which is created if missing.
    pub(crate) async fn sink(database: &str) -> ClickHouseSink {
        let url = url();
        ClickHouseSink::builder()
            .database(database)
            .connect(&url)
            .await
            .unwrap_or_else(|e| {
                panic!("ClickHouse at {url}: {e}. Start it with `scripts/test --setup-only`.")
            })
    }

    pub(crate) async fn exec(sink: &ClickHouseSink, sql: &str) {
        sink.client().query(sql).execute().await.expect(sql);
    }

    /// Rows as reads see them (`FINAL`).
    pub(crate) async fn count(sink: &ClickHouseSink) -> u64 {
        let sql = format!("SELECT count() FROM `{}` FINAL", sink.table());
        sink.client().query(&sql).fetch_one().await.expect(&sql)
    }

    /// `tu_bench.usage_records` with [`STORED`](super::STORED) records,
    /// filled and merged on first use.
    pub(crate) async fn filled() -> ClickHouseSink {
        let sink = sink(super::BENCH_SCHEMA).await;
        let n = count(&sink).await;
        if n == super::STORED as u64 {
            eprintln!("clickhouse: reusing {}.usage_records", super::BENCH_SCHEMA);
            return sink;
        }
        eprintln!("clickhouse: the table holds {n} records; refilling");
        exec(&sink, &format!("DROP DATABASE `{}`", super::BENCH_SCHEMA)).await;
        let sink = self::sink(super::BENCH_SCHEMA).await;
        super::fill("clickhouse", &sink, 2).await;
        let t = std::time::Instant::now();
        exec(&sink, "OPTIMIZE TABLE usage_records FINAL").await;
        eprintln!("clickhouse: merged in {:.1} s", t.elapsed().as_secs_f64());
        sink
    }
}

// ---------------------------------------------------------------------------
// Write throughput (criterion)

fn bench_writes<S, F>(
    c: &mut Criterion,
    rt: &tokio::runtime::Runtime,
    name: &str,
    batches: &[usize],
    mut make: F,
) where
    S: UsageSink + Clone,
    F: FnMut(usize) -> S,
{
    let mut group = c.benchmark_group(format!("sink_write/{name}"));
    group
        .sampling_mode(SamplingMode::Flat)
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4));
    for &batch in batches {
        let sink = make(batch);
        let mut gen = Gen::new(batch as u64);
        group.throughput(Throughput::Elements(batch as u64));
        group.bench_with_input(BenchmarkId::from_parameter(batch), &batch, |b, &batch| {
            b.to_async(rt).iter_custom(|iters| {
                let sink = sink.clone();
                // Made before timing: only `record` is measured.
                let batches: Vec<Vec<UsageRecord>> = (0..iters).map(|_| gen.batch(batch)).collect();
                async move {
                    let mut total = Duration::ZERO;
                    for records in batches {
                        let t = Instant::now();
                        sink.record(&records).await.expect("record");
                        total += t.elapsed();
                    }
                    total
                }
            })
        });
    }
    group.finish();
}

fn writes(c: &mut Criterion) {
    let rt = runtime();
    bench_writes(c, &rt, "memory", &BATCHES, |_| {
        MemorySink::with_capacity(100_000)
    });

    let dir = tempfile::tempdir().unwrap();
    bench_writes(c, &rt, "sqlite", &BATCHES, |batch| {
        SqliteSink::open(dir.path().join(format!("write-{batch}.db"))).unwrap()
    });
    drop(dir);

    let mut schemas = Vec::new();
    bench_writes(c, &rt, "postgres", &BATCHES, |batch| {
        let schema = format!("tu_bench_write_{batch}_{:08x}", fastrand::u32(..));
        schemas.push(schema.clone());
        rt.block_on(pg_sink(&schema))
    });
    // The same on a table partitioned by day (issue 20): records land in
    // today's partition.
    bench_writes(c, &rt, "postgres_partitioned", &BATCHES, |batch| {
        let schema = format!("tu_bench_part_{batch}_{:08x}", fastrand::u32(..));
        schemas.push(schema.clone());
        rt.block_on(pg_sink_with(&schema, Some(PartitionBy::Day)))
    });
    rt.block_on(async {
        let sink = pg_sink(BENCH_SCHEMA).await;
        for schema in schemas {
            pg_exec(&sink, &format!("DROP SCHEMA \"{schema}\" CASCADE")).await;
        }
    });

    #[cfg(feature = "clickhouse")]
    {
        let mut databases = Vec::new();
        bench_writes(c, &rt, "clickhouse", &[512, 4096], |batch| {
            let database = format!("tu_bench_write_{batch}_{:08x}", fastrand::u32(..));
            databases.push(database.clone());
            rt.block_on(ch::sink(&database))
        });
        rt.block_on(async {
            for database in databases {
                let sink = ch::sink(&database).await;
                ch::exec(&sink, &format!("DROP DATABASE `{database}`")).await;
            }
        });
    }
}

// ---------------------------------------------------------------------------
// Page latency (own loop: percentiles)

/// One latency row: `(sink, p50 ms, p99 ms, mean records a page)`.
type Latency = (String, f64, f64, f64);

/// Brings a filled store into the OS page cache, as a server that has been
/// answering queries for a while has it.
type Prewarm<S> = fn(&S, &tokio::runtime::Runtime);

fn prewarm_sqlite(_: &SqliteSink, _: &tokio::runtime::Runtime) {
    use std::io::Read as _;
    let path = target_dir().join("bench-data").join("sinks-1m.db");
    let mut file = std::fs::File::open(path).unwrap();
    let mut buf = vec![0u8; 1 << 20];
    while file.read(&mut buf).unwrap() > 0 {}
}

fn prewarm_postgres(sink: &PostgresSink, rt: &tokio::runtime::Runtime) {
    let table = format!("\"{}\".usage_records", sink.schema());
    rt.block_on(async {
        // The heap, then the consumer index (an index-only scan after VACUUM).
        pg_exec(sink, &format!("SELECT sum(length(req_body)) FROM {table}")).await;
        pg_exec(
            sink,
            &format!(
                "SELECT count(*) FROM (SELECT consumer, created_at, id FROM {table} \
                 ORDER BY consumer, created_at, id) s"
            ),
        )
        .await;
    });
}

/// Calls `call` `warm` times unmeasured (to warm the caches the way a running
/// service has them), then `n` times measured. Returns the p50 and p99 in ms
/// and the sum of `size` over the measured answers.
async fn latencies<T, Fut>(
    warm: usize,
    n: usize,
    mut call: impl FnMut() -> Fut,
    size: impl Fn(&T) -> usize,
) -> (f64, f64, usize)
where
    Fut: std::future::Future<Output = T>,
{
    for _ in 0..warm {
        call().await;
    }
    let mut times = Vec::with_capacity(n);
    let mut total = 0usize;
    for _ in 0..n {
        let t = Instant::now();
        let answer = call().await;
        times.push(t.elapsed());
        total += size(&answer);
    }
    times.sort_unstable();
    let pct = |p: f64| times[((times.len() - 1) as f64 * p).round() as usize].as_secs_f64() * 1e3;
    (pct(0.50), pct(0.99), total)
}

async fn page_latency<S: UsageSink>(name: &str, sink: &S) -> Latency {
    let consumers = Gen::new(42).consumers;
    let mut rng = fastrand::Rng::with_seed(7);
    let (p50, p99, records) = latencies(
        50,
        QUERIES,
        || {
            let q = random_page(&mut rng, &consumers);
            async move { sink.query(&q).await.expect("query") }
        },
        |page| page.records.len(),
    )
    .await;
    let row = (name.to_owned(), p50, p99, records as f64 / QUERIES as f64);
    eprintln!(
        "{name}: page of {PAGE} for one consumer of {CONSUMERS}, {STORED} stored: p50 {:.2} ms, p99 {:.2} ms ({:.0} records a page)",
        row.1, row.2, row.3
    );
    row
}

/// A page of [`PAGE`] records of a random consumer, from a random instant of the
/// filled span, in a random order: what a client paging with cursors asks.
fn random_page(rng: &mut fastrand::Rng, consumers: &[String]) -> UsageQuery {
    let consumer = consumers[rng.usize(..consumers.len())].clone();
    let order = if rng.bool() { Order::Asc } else { Order::Desc };
    let q = UsageQuery {
        consumer: ConsumerScope::Consumer(consumer),
        order,
        limit: PAGE,
        ..UsageQuery::default()
    };
    // Keep clear of the ends, so that every page is full.
    let at = from_ms(FILL_START_MS + rng.i64(FILL_SPAN_MS / 10..FILL_SPAN_MS * 9 / 10));
    let position = UsageRecord {
        id: UsageRecord::new_id(at),
        created_at: at,
        ..UsageRecord::default()
    };
    UsageQuery {
        cursor: Some(q.cursor_after(&position)),
        ..q
    }
}

/// The latency rows measured so far, for the report.
static LATENCY: Mutex<Vec<Latency>> = Mutex::new(Vec::new());

/// Criterion's view of a page query (`sink_page/<sink>`), after the percentiles
/// of [`page_latency`], measured once per sink on its filled store.
fn bench_pages<S, Fut>(
    c: &mut Criterion,
    rt: &tokio::runtime::Runtime,
    name: &str,
    open: impl FnOnce() -> Fut,
    prewarm: Option<Prewarm<S>>,
) where
    S: UsageSink + Clone,
    Fut: std::future::Future<Output = S>,
{
    let mut open = Some(open);
    let mut sink = None;
    let mut group = c.benchmark_group("sink_page");
    group
        .sample_size(50)
        .measurement_time(Duration::from_secs(3));
    group.bench_function(name, |b| {
        // Only when the benchmark is selected: filling takes a while.
        let sink = sink.get_or_insert_with(|| {
            let sink = rt.block_on(open.take().expect("opened once")());
            if let Some(prewarm) = prewarm {
                // First as found: the OS may have dropped the store from its
                // page cache since it was filled.
                let cold = rt.block_on(page_latency(&format!("{name}, cold"), &sink));
                LATENCY.lock().unwrap().push(cold);
                let t = Instant::now();
                prewarm(&sink, rt);
                eprintln!(
                    "{name}: read the store into the page cache in {:.1} s",
                    t.elapsed().as_secs_f64()
                );
            }
            let row = rt.block_on(page_latency(name, &sink));
            LATENCY.lock().unwrap().push(row);
            sink
        });
        let consumers = Gen::new(42).consumers;
        let mut rng = fastrand::Rng::with_seed(11);
        b.to_async(rt).iter(|| {
            let q = random_page(&mut rng, &consumers);
            let sink = sink.clone();
            async move { sink.query(&q).await.expect("query") }
        });
    });
    group.finish();
}

fn pages(c: &mut Criterion) {
    let rt = runtime();
    bench_pages(c, &rt, "sqlite", sqlite_filled, Some(prewarm_sqlite));
    bench_pages(c, &rt, "postgres", postgres_filled, Some(prewarm_postgres));
    bench_pages(
        c,
        &rt,
        "postgres_partitioned",
        postgres_partitioned_filled,
        Some(prewarm_postgres),
    );
    #[cfg(feature = "clickhouse")]
    bench_pages(c, &rt, "clickhouse", ch::filled, None);
    let fill_memory = || async {
        let memory = MemorySink::with_limits(STORED, usize::MAX);
        fill("memory", &memory, 1).await;
        memory
    };
    bench_pages(c, &rt, "memory", fill_memory, None);
}

// ---------------------------------------------------------------------------
// Summary latency

const SUMMARIES: usize = 200;

/// The common summary: one consumer, one UTC day of the filled span, by hour,
/// grouped by route and status class.
fn random_summary(rng: &mut fastrand::Rng, consumers: &[String]) -> SummaryQuery {
    const DAY_MS: i64 = 86_400_000;
    let first_day = FILL_START_MS - FILL_START_MS.rem_euclid(DAY_MS) + DAY_MS;
    let since = first_day + rng.i64(0..FILL_SPAN_MS / DAY_MS - 1) * DAY_MS;
    SummaryQuery {
        consumer: ConsumerScope::Consumer(consumers[rng.usize(..consumers.len())].clone()),
        since: from_ms(since),
        until: from_ms(since + DAY_MS),
        interval: Interval::Hour,
        group_by: GroupBy::NONE.with(GroupKey::Route).with(GroupKey::Status),
        ..SummaryQuery::default()
    }
}

/// The admin summary: every consumer, the whole filled span, by day.
fn month_summary() -> SummaryQuery {
    SummaryQuery {
        consumer: ConsumerScope::All,
        since: from_ms(FILL_START_MS),
        until: from_ms(FILL_START_MS + FILL_SPAN_MS),
        interval: Interval::Day,
        ..SummaryQuery::default()
    }
}

/// (sink, p50 ms, p99 ms, buckets a summary, 30-day admin summary median ms)
type SummaryLatency = (String, f64, f64, f64, f64);

static SUMMARY_LATENCY: Mutex<Vec<SummaryLatency>> = Mutex::new(Vec::new());

async fn summary_latency<S: UsageSink>(name: &str, sink: &S) -> SummaryLatency {
    let consumers = Gen::new(42).consumers;
    let mut rng = fastrand::Rng::with_seed(17);
    let (p50, p99, buckets) = latencies(
        20,
        SUMMARIES,
        || {
            let q = random_summary(&mut rng, &consumers);
            async move { sink.summarize(&q).await.expect("summarize") }
        },
        |s| s.buckets.len(),
    )
    .await;
    let mut month = Vec::new();
    for _ in 0..5 {
        let t = Instant::now();
        let s = sink.summarize(&month_summary()).await.expect("summarize");
        month.push(t.elapsed().as_secs_f64() * 1e3);
        assert_eq!(
            s.total.requests, STORED as u64,
            "the admin summary counts every record"
        );
    }
    month.sort_by(f64::total_cmp);
    let row = (
        name.to_owned(),
        p50,
        p99,
        buckets as f64 / SUMMARIES as f64,
        month[2],
    );
    eprintln!(
        "{name}: summary of one consumer, one day, by hour and route,status: p50 {:.2} ms, \
         p99 {:.2} ms ({:.1} buckets); 30-day admin summary by day: {:.0} ms",
        row.1, row.2, row.3, row.4
    );
    row
}

/// Criterion's view of the common summary (`sink_summary/<sink>`), after the
/// percentiles of [`summary_latency`].
fn bench_summaries<S, Fut>(
    c: &mut Criterion,
    rt: &tokio::runtime::Runtime,
    name: &str,
    open: impl FnOnce() -> Fut,
) where
    S: UsageSink + Clone,
    Fut: std::future::Future<Output = S>,
{
    let mut open = Some(open);
    let mut sink = None;
    let mut group = c.benchmark_group("sink_summary");
    group
        .sample_size(50)
        .measurement_time(Duration::from_secs(3));
    group.bench_function(name, |b| {
        let sink = sink.get_or_insert_with(|| {
            let sink = rt.block_on(open.take().expect("opened once")());
            let row = rt.block_on(summary_latency(name, &sink));
            SUMMARY_LATENCY.lock().unwrap().push(row);
            sink
        });
        let consumers = Gen::new(42).consumers;
        let mut rng = fastrand::Rng::with_seed(23);
        b.to_async(rt).iter(|| {
            let q = random_summary(&mut rng, &consumers);
            let sink = sink.clone();
            async move { sink.summarize(&q).await.expect("summarize") }
        });
    });
    group.finish();
}

fn summaries(c: &mut Criterion) {
    let rt = runtime();
    bench_summaries(c, &rt, "sqlite", sqlite_filled);
    bench_summaries(c, &rt, "postgres", postgres_filled);
    bench_summaries(c, &rt, "postgres_partitioned", postgres_partitioned_filled);
    #[cfg(feature = "clickhouse")]
    bench_summaries(c, &rt, "clickhouse", ch::filled);
    let fill_memory = || async {
        let memory = MemorySink::with_limits(STORED, usize::MAX);
        fill("memory", &memory, 1).await;
        memory
    };
    bench_summaries(c, &rt, "memory", fill_memory);
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

// ---------------------------------------------------------------------------
// Exports

const EXPORTED: usize = 100_000;
const EXPORT_TOKEN: &str = "bench-export-token";

/// Peak memory an export added, per sink, for the report: (sink, MiB, bytes sent).
static EXPORT_PEAK: Mutex<Vec<(String, f64, u64)>> = Mutex::new(Vec::new());

/// `VmRSS` or `VmHWM` of this process, in KiB (0 where `/proc` is missing).
fn proc_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|l| l.starts_with(field))?
                .split_whitespace()
                .nth(1)?
                .parse()
                .ok()
        })
        .unwrap_or(0)
}

/// One consumer's [`EXPORTED`] records, 1 ms apart, into `sink`.
async fn fill_export<S: UsageSink>(sink: &S) {
    let consumer = tower_usage::hash_token(EXPORT_TOKEN);
    let mut gen = Gen::new(5);
    let start = FILL_START_MS;
    for chunk in (0..EXPORTED).collect::<Vec<_>>().chunks(4096) {
        let batch: Vec<UsageRecord> = chunk
            .iter()
            .map(|&i| {
                let mut r = gen.record(start + i as i64);
                r.consumer = Some(consumer.clone());
                r
            })
            .collect();
        sink.record(&batch).await.expect("filling the export store");
    }
}

/// The export of every record of the bench's consumer as NDJSON, read to the
/// end: (records, bytes).
async fn export_all<S: UsageSink + Clone>(sink: &S) -> (usize, u64) {
    use http_body_util::BodyExt as _;
    use tower::ServiceExt as _;
    let req = http::Request::get("/?format=ndjson")
        .header("authorization", format!("Bearer {EXPORT_TOKEN}"))
        .body(())
        .unwrap();
    let res = tower_usage::UsageService::new(sink.clone())
        .oneshot(req)
        .await
        .unwrap();
    assert_eq!(res.status(), http::StatusCode::OK);
    let mut body = res.into_body();
    let (mut records, mut bytes) = (0, 0);
    while let Some(frame) = body.frame().await {
        let data = frame.expect("export frame").into_data().unwrap_or_default();
        records += data.iter().filter(|b| **b == b'\n').count();
        bytes += data.len() as u64;
    }
    (records, bytes)
}

fn bench_export<S, Fut>(
    c: &mut Criterion,
    rt: &tokio::runtime::Runtime,
    name: &str,
    open: impl FnOnce() -> Fut,
) -> Option<S>
where
    S: UsageSink + Clone,
    Fut: std::future::Future<Output = S>,
{
    let mut open = Some(open);
    let mut sink = None;
    let mut group = c.benchmark_group("sink_export");
    group
        .sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .throughput(Throughput::Elements(EXPORTED as u64))
        .measurement_time(Duration::from_secs(10));
    group.bench_function(name, |b| {
        let sink = sink.get_or_insert_with(|| {
            let sink = rt.block_on(open.take().expect("opened once")());
            // Once before measuring: the peak memory the export adds.
            let before = proc_kib("VmRSS:");
            let reset = std::fs::write("/proc/self/clear_refs", "5").is_ok();
            let (records, bytes) = rt.block_on(export_all(&sink));
            assert_eq!(records, EXPORTED, "{name}: exported records");
            let peak = proc_kib("VmHWM:");
            let added = if reset { peak.saturating_sub(before) as f64 / 1024.0 } else { f64::NAN };
            eprintln!(
                "{name}: export of {records} records ({:.1} MiB of NDJSON) added {added:.1} MiB at its peak",
                bytes as f64 / 1048576.0
            );
            EXPORT_PEAK.lock().unwrap().push((name.to_owned(), added, bytes));
            sink
        });
        b.to_async(rt).iter(|| {
            let sink = sink.clone();
            async move { export_all(&sink).await }
        });
    });
    group.finish();
    sink
}

fn exports(c: &mut Criterion) {
    let rt = runtime();
    bench_export(c, &rt, "memory", || async {
        let sink = MemorySink::with_limits(EXPORTED, 1 << 30);
        fill_export(&sink).await;
        sink
    });
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("export.db");
    bench_export(c, &rt, "sqlite", || async {
        let sink = SqliteSink::open(&path).unwrap();
        fill_export(&sink).await;
        sink
    });
    let schema = "tu_bench_export";
    let pg = bench_export(c, &rt, "postgres", || async {
        let sink = pg_sink(schema).await;
        pg_exec(
            &sink,
            &format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"),
        )
        .await;
        sink.migrate().await.unwrap();
        fill_export(&sink).await;
        pg_exec(&sink, &format!("VACUUM ANALYZE \"{schema}\".usage_records")).await;
        sink
    });
    if let Some(sink) = pg {
        rt.block_on(pg_exec(&sink, &format!("DROP SCHEMA \"{schema}\" CASCADE")));
    }
}

criterion_group!(benches, writes, pages, exports, summaries);

fn main() {
    let started = std::time::SystemTime::now();
    benches();
    Criterion::default().configure_from_args().final_summary();
    report(started, &LATENCY.lock().unwrap());
    report_exports(started);
    report_summaries(&SUMMARY_LATENCY.lock().unwrap());
}

/// Records/s of the exports this run measured, and the peak memory each added.
fn report_exports(started: std::time::SystemTime) {
    let peaks = EXPORT_PEAK.lock().unwrap();
    if peaks.is_empty() {
        return;
    }
    let dir = target_dir().join("criterion").join("sink_export");
    println!("\n`GET /usage?format=ndjson` of one consumer's {EXPORTED} records (criterion median; peak memory added by one export)\n");
    println!("| sink | records/s | time | NDJSON | peak memory added |");
    println!("|---|---:|---:|---:|---:|");
    for (name, peak, bytes) in peaks.iter() {
        let path = dir.join(name).join("new").join("estimates.json");
        let fresh = std::fs::metadata(&path)
            .and_then(|m| m.modified())
            .is_ok_and(|t| t >= started);
        let median = fresh
            .then(|| std::fs::read_to_string(&path).ok())
            .flatten()
            .and_then(|text| serde_json::from_str::<Value>(&text).ok())
            .and_then(|v| v["median"]["point_estimate"].as_f64())
            .map(|ns| ns / 1e9);
        let (rate, time) = match median {
            Some(s) => (thousands(EXPORTED as f64 / s), format!("{:.2} s", s)),
            None => ("-".to_owned(), "-".to_owned()),
        };
        println!(
            "| {name} | {rate} | {time} | {:.1} MiB | {peak:.1} MiB |",
            *bytes as f64 / 1048576.0
        );
    }
}

fn report_summaries(rows: &[SummaryLatency]) {
    if rows.is_empty() {
        return;
    }
    println!(
        "\n`/usage/summary`, {STORED} records over {CONSUMERS} consumers and 30 days stored: \
         one consumer, one day, interval=hour, groupBy=route,status ({SUMMARIES} queries); \
         and every consumer, 30 days, interval=day\n"
    );
    println!("| sink | p50 | p99 | buckets | 30-day admin summary |");
    println!("|---|---:|---:|---:|---:|");
    for (name, p50, p99, buckets, month) in rows {
        println!("| {name} | {p50:.2} ms | {p99:.2} ms | {buckets:.1} | {month:.0} ms |");
    }
}

/// Prints records/s per sink and batch size, from criterion's median time per
/// batch measured by this run (`-` for one it did not run), and the page
/// latencies.
fn report(started: std::time::SystemTime, latency: &[Latency]) {
    let dir = target_dir().join("criterion");
    let median_s = |group: &str, batch: usize| -> Option<f64> {
        let path = dir
            .join(group.replace('/', "_"))
            .join(batch.to_string())
            .join("new")
            .join("estimates.json");
        // Only what this run measured, not an earlier run's estimates.
        if std::fs::metadata(&path).ok()?.modified().ok()? < started {
            return None;
        }
        let text = std::fs::read_to_string(path).ok()?;
        let v: Value = serde_json::from_str(&text).ok()?;
        Some(v["median"]["point_estimate"].as_f64()? / 1e9)
    };
    println!("\nrecords/s (criterion median time per `record` call of one batch)\n");
    println!("| sink | batch 1 | batch 64 | batch 512 | batch 4096 |");
    println!("|---|---:|---:|---:|---:|");
    for (name, group) in [
        ("MemorySink", "sink_write/memory"),
        ("SqliteSink", "sink_write/sqlite"),
        ("PostgresSink", "sink_write/postgres"),
        ("ClickHouseSink", "sink_write/clickhouse"),
    ] {
        let cells: Vec<String> = BATCHES
            .iter()
            .map(|&b| match median_s(group, b) {
                Some(s) => format!("{} ({:.2} ms)", thousands(b as f64 / s), s * 1e3),
                None => "-".to_owned(),
            })
            .collect();
        println!("| {name} | {} |", cells.join(" | "));
    }
    println!(
        "\n`/usage` page of {PAGE} records for one consumer, {STORED} records over {CONSUMERS} consumers stored, {QUERIES} queries\n"
    );
    println!("| sink | p50 | p99 | p50, cold cache | p99, cold cache |");
    println!("|---|---:|---:|---:|---:|");
    let find = |name: &str| latency.iter().find(|row| row.0 == name);
    for (key, name) in [
        ("sqlite", "SqliteSink"),
        ("postgres", "PostgresSink"),
        ("clickhouse", "ClickHouseSink"),
        ("memory", "MemorySink"),
    ] {
        let ms = |row: Option<&Latency>| match row {
            Some((_, p50, p99, _)) => (format!("{p50:.2} ms"), format!("{p99:.2} ms")),
            None => ("-".to_owned(), "-".to_owned()),
        };
        let (warm, cold) = (ms(find(key)), ms(find(&format!("{key}, cold"))));
        if find(key).is_some() {
            println!(
                "| {name} | {} | {} | {} | {} |",
                warm.0, warm.1, cold.0, cold.1
            );
        }
    }
}

fn thousands(n: f64) -> String {
    let n = n.round() as u64;
    let s = n.to_string();
    let mut out = String::new();
    for (i, ch) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(ch);
    }
    out
}

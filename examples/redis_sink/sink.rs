//! [`RedisSink`]: a `UsageSink` over Redis, written as the guide to writing a
//! sink (`tower_usage::sink`) says, and held to the whole conformance kit.
//!
//! Each record is stored in its storage form (`UsageRecord::to_storage_bytes`):
//! the sink has no encoding of its own. Under a key prefix `P`:
//!
//! | key            | type       | holds |
//! |----------------|------------|-------|
//! | `P:rec`        | hash       | id -> the record's storage form |
//! | `P:head`       | hash       | id -> the storage form of what a summary reads (`Projection::Summary`) |
//! | `P:z:all`      | sorted set | one member per record: `<created_at ms, 16 hex digits>:<id>` |
//! | `P:z:c:<who>`  | sorted set | the same, for the records of consumer `<who>` |
//! | `P:z:anon`     | sorted set | the same, for the records without a consumer |
//!
//! Every member has the score 0, so a set sorts by member, which is the page
//! order `(created_at, id)`: a page is one `ZRANGEBYLEX` from the cursor on,
//! and `since`/`until` are bounds on the member. The other filters (method,
//! path, status, route, outcome) are applied to the small `P:head` values,
//! so only the records of the page are read whole.

#![allow(dead_code)] // the conformance test uses only part of it

use std::sync::Arc;
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::AsyncCommands as _;
use tower_usage::sink::{ConsumerScope, Order, Position, Projection};
use tower_usage::{SinkError, UsagePage, UsageQuery, UsageRecord, UsageSink};

/// Where the sink connects when `TOWER_USAGE_REDIS_URL` is not set.
pub(crate) const DEFAULT_REDIS_URL: &str = "redis://127.0.0.1:6379";

/// The Redis URL from `TOWER_USAGE_REDIS_URL`, else [`DEFAULT_REDIS_URL`].
pub(crate) fn redis_url() -> String {
    std::env::var("TOWER_USAGE_REDIS_URL").unwrap_or_else(|_| DEFAULT_REDIS_URL.to_owned())
}

/// Members read from a sorted set at a time while looking for a page.
const SCAN_BATCH: usize = 512;

/// A usage sink over Redis. Cheap to clone: one multiplexed connection.
#[derive(Clone)]
pub(crate) struct RedisSink {
    conn: MultiplexedConnection,
    prefix: Arc<str>,
}

impl std::fmt::Debug for RedisSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisSink")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

impl RedisSink {
    /// Connects to the Redis at `url`, keeping every key under `prefix:`.
    pub(crate) async fn connect(url: &str, prefix: &str) -> Result<Self, SinkError> {
        let unreachable = |e: redis::RedisError| {
            SinkError::unavailable(e).with_context(format!(
                "cannot reach Redis at {url}: start it (`redis-server --daemonize yes`, or \
                 `docker run -d -p 6379:6379 redis`) or set TOWER_USAGE_REDIS_URL"
            ))
        };
        let client = redis::Client::open(url).map_err(unreachable)?;
        // redis-rs waits 500 ms for an answer by default: too little for a
        // transaction of 10,000 records on a busy machine.
        let config = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(5)))
            .set_response_timeout(Some(Duration::from_secs(30)));
        let conn = client
            .get_multiplexed_async_connection_with_config(&config)
            .await
            .map_err(unreachable)?;
        Ok(Self {
            conn,
            prefix: Arc::from(prefix),
        })
    }

    /// Deletes every key of this sink (its prefix): the conformance kit's
    /// clean-up hook, so a run leaves nothing in the store.
    pub(crate) async fn delete_all(&self) -> Result<(), SinkError> {
        let mut conn = self.conn.clone();
        let pattern = format!("{}:*", self.prefix);
        let mut cursor = 0u64;
        loop {
            let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(1000)
                .query_async(&mut conn)
                .await
                .map_err(redis_error)?;
            if !keys.is_empty() {
                let _: usize = conn.unlink(keys).await.map_err(redis_error)?;
            }
            if next == 0 {
                return Ok(());
            }
            cursor = next;
        }
    }

    fn key(&self, part: &str) -> String {
        format!("{}:{part}", self.prefix)
    }

    /// The sorted set of the records in `scope`.
    fn index(&self, scope: &ConsumerScope) -> String {
        match scope {
            ConsumerScope::All => self.key("z:all"),
            ConsumerScope::Anonymous => self.key("z:anon"),
            ConsumerScope::Consumer(c) => self.key(&format!("z:c:{c}")),
        }
    }

    /// Reads the values of `ids` from the hash `hash`, decoded.
    async fn read(&self, hash: &str, ids: &[&str]) -> Result<Vec<UsageRecord>, SinkError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut conn = self.conn.clone();
        let values: Vec<Option<Vec<u8>>> = conn.hmget(hash, ids).await.map_err(redis_error)?;
        let mut out = Vec::with_capacity(values.len());
        for (id, value) in ids.iter().zip(values) {
            let Some(bytes) = value else {
                // Indexed but not stored: a record must never vanish silently.
                return Err(SinkError::message(
                    tower_usage::SinkErrorKind::Corrupt,
                    format!("record {id} is indexed but not stored in {hash}"),
                ));
            };
            out.push(UsageRecord::from_storage_bytes(&bytes)?);
        }
        Ok(out)
    }
}

/// The sorted-set member of a record: its `created_at` in milliseconds as 16
/// hex digits (the sign bit flipped, so that byte order is time order, before
/// 1970 too), a colon, its id.
fn member(ms: i64, id: &str) -> String {
    format!("{}{id}", time_prefix(ms))
}

/// Every member of the millisecond `ms` starts with this, and sorts after it.
fn time_prefix(ms: i64) -> String {
    format!("{:016x}:", (ms as u64) ^ (1 << 63))
}

/// The id in a member.
fn id_of(member: &str) -> &str {
    member.get(17..).unwrap_or_default()
}

fn redis_error(e: redis::RedisError) -> SinkError {
    if e.is_io_error() || e.is_timeout() || e.is_connection_dropped() || e.is_connection_refusal() {
        SinkError::unavailable(e)
    } else {
        SinkError::new(e)
    }
}

#[async_trait::async_trait]
impl UsageSink for RedisSink {
    async fn record(&self, batch: &[UsageRecord]) -> Result<(), SinkError> {
        // One transaction: the batch is stored whole or not at all. Storing
        // an id again writes the same values: retries are harmless.
        let (records, heads, all) = (
            self.key("rec"),
            self.key("head"),
            self.index(&ConsumerScope::All),
        );
        let mut pipe = redis::pipe();
        pipe.atomic();
        for r in batch {
            let mut head = r.clone();
            Projection::Summary.apply(&mut head);
            let member = member(r.created_at_ms(), &r.id);
            let scope = match &r.consumer {
                Some(c) => ConsumerScope::Consumer(c.clone()),
                None => ConsumerScope::Anonymous,
            };
            pipe.hset(&records, &r.id, r.to_storage_bytes())
                .ignore()
                .hset(&heads, &r.id, head.to_storage_bytes())
                .ignore()
                .zadd(&all, &member, 0)
                .ignore()
                .zadd(self.index(&scope), &member, 0)
                .ignore();
        }
        let mut conn = self.conn.clone();
        pipe.query_async::<()>(&mut conn).await.map_err(redis_error)
    }

    async fn query(&self, query: &UsageQuery) -> Result<UsagePage, SinkError> {
        // Rejects a forged cursor, or one issued for another consumer or order.
        let after = query.position()?;
        let index = self.index(&query.consumer);
        let heads = self.key("head");
        // Bounds on members: `[x` inclusive, `(x` exclusive, `-`/`+` open.
        let since = query.since_ms().map(|ms| format!("[{}", time_prefix(ms)));
        let until = query.until_ms().map(|ms| format!("({}", time_prefix(ms)));
        let from_cursor = after
            .as_ref()
            .map(|p: &Position| format!("({}", member(p.created_at_ms, &p.id)));
        let (mut start, end) = match query.order {
            Order::Asc => (
                from_cursor.or(since).unwrap_or_else(|| "-".into()),
                until.unwrap_or_else(|| "+".into()),
            ),
            Order::Desc => (
                from_cursor.or(until).unwrap_or_else(|| "+".into()),
                since.unwrap_or_else(|| "-".into()),
            ),
        };

        // Walk the index, filtering on the small head values, until
        // `limit + 1` records match or the index ends.
        let want = query.fetch_limit();
        let mut hits: Vec<UsageRecord> = Vec::with_capacity(want);
        let mut conn = self.conn.clone();
        while hits.len() < want {
            let members: Vec<String> = match query.order {
                Order::Asc => conn.zrangebylex_limit(&index, &start, &end, 0, SCAN_BATCH as isize),
                Order::Desc => {
                    conn.zrevrangebylex_limit(&index, &start, &end, 0, SCAN_BATCH as isize)
                }
            }
            .await
            .map_err(redis_error)?;
            let ids: Vec<&str> = members.iter().map(|m| id_of(m)).collect();
            for head in self.read(&heads, &ids).await? {
                // The scope, the range and every filter (a crafted cursor
                // may point outside the range).
                if query.matches(&head) && hits.len() < want {
                    hits.push(head);
                }
            }
            match members.last() {
                Some(last) if members.len() == SCAN_BATCH => start = format!("({last}"),
                _ => break,
            }
        }

        // The page's records whole, unless a summary's fields are enough.
        if query.fields != Projection::Summary {
            let page = hits.len().min(query.limit.max(1));
            let ids: Vec<&str> = hits[..page].iter().map(|r| r.id.as_str()).collect();
            let whole = self.read(&self.key("rec"), &ids).await?;
            hits.splice(..page, whole);
        }
        Ok(UsagePage::from_sorted(query, hits))
    }

    async fn get(&self, id: &str, scope: &ConsumerScope) -> Result<Option<UsageRecord>, SinkError> {
        let mut conn = self.conn.clone();
        let bytes: Option<Vec<u8>> = conn.hget(self.key("rec"), id).await.map_err(redis_error)?;
        let Some(bytes) = bytes else {
            return Ok(None);
        };
        let record = UsageRecord::from_storage_bytes(&bytes)?;
        Ok(scope.contains(record.consumer.as_deref()).then_some(record))
    }

    // `summarize`: the default, which pages through `query` asking for
    // `Projection::Summary`, so it reads only the `P:head` values.
}

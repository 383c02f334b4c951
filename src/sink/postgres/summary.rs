//! Summaries in SQL: the shared summary statement, with exact percentiles
//! (`percentile_disc`) and the total as a second grouping set; only its
//! aggregate rows come back.

use time::OffsetDateTime;
use tokio_postgres::Row;

use super::{error, PostgresSink};
use crate::sink::sql::{self, Dialect, ReadKeys};
use crate::sink::summary::too_many_buckets;
use crate::sink::{
    DurationStats, GroupKeys, SummaryBucket, SummaryQuery, SummaryStats, UsageSummary, MAX_BUCKETS,
};
use crate::SinkError;

impl PostgresSink {
    pub(super) async fn summarize_sql(
        &self,
        query: &SummaryQuery,
    ) -> Result<UsageSummary, SinkError> {
        query.check()?;
        let list = query.list_query();
        let statement = sql::summary(Dialect::Postgres, &self.inner.names.qualified, query, &list);
        let rows = self.rows(&statement).await?;
        // One row per bucket and the total's: check before reading them all.
        if rows.len() > MAX_BUCKETS + 1 {
            return Err(too_many_buckets());
        }
        let mut buckets = Vec::with_capacity(rows.len());
        let mut total = SummaryStats::default();
        for row in &rows {
            let (start, keys, stats) = read_row(row, query)?;
            match start {
                Some(start) => buckets.push(SummaryBucket { start, keys, stats }),
                None => total = stats,
            }
        }
        UsageSummary::new(query, buckets, total)
    }
}

fn read_row(
    row: &Row,
    query: &SummaryQuery,
) -> Result<(Option<OffsetDateTime>, GroupKeys, SummaryStats), SinkError> {
    let get_err = |e: tokio_postgres::Error| error::column(e).with_context("summary row");
    let n = query.group_by.keys().count();
    let grouping: i32 = row.try_get(n + 8).map_err(get_err)?;
    let count = |i: usize| -> Result<u64, SinkError> {
        let v: Option<i64> = row.try_get(i).map_err(get_err)?;
        Ok(u64::try_from(v.unwrap_or(0)).unwrap_or(0))
    };
    let stats = {
        let i = n + 1;
        let percentiles: Option<Vec<Option<i64>>> = row.try_get(i + 6).map_err(get_err)?;
        let p = |k: usize| {
            percentiles
                .as_ref()
                .and_then(|ps| ps.get(k).copied().flatten())
                .map_or(0, |v| u64::try_from(v).unwrap_or(0))
        };
        SummaryStats {
            requests: count(i)?,
            client_errors: count(i + 1)?,
            server_errors: count(i + 2)?,
            request_bytes: count(i + 3)?,
            response_bytes: count(i + 4)?,
            duration_us: DurationStats {
                p50: p(0),
                p95: p(1),
                p99: p(2),
                max: count(i + 5)?,
            },
        }
    };
    if grouping != 0 {
        return Ok((None, GroupKeys::default(), stats));
    }
    let start: OffsetDateTime = row.try_get(0).map_err(get_err)?;
    let keys = sql::read_keys(row, query.group_by, 1)?;
    Ok((Some(start), keys, stats))
}

impl ReadKeys for Row {
    fn key_text(&self, i: usize) -> Result<Option<String>, SinkError> {
        self.try_get(i).map_err(error::column)
    }

    /// The status class: `status / 100` of an `INTEGER`.
    fn key_int(&self, i: usize) -> Result<i64, SinkError> {
        self.try_get::<_, i32>(i)
            .map(i64::from)
            .map_err(error::column)
    }
}

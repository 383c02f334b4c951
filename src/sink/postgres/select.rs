//! Reading a page: the shared page query in PostgreSQL's dialect, its rows read
//! back through [`ReadColumns`](crate::sink::sql::ReadColumns).

use tokio_postgres::types::ToSql;
use tokio_postgres::Row;

use super::{error, PostgresSink};
use crate::sink::sql::{self, Dialect, Statement};
use crate::sink::{record_bytes, ConsumerScope, UsagePage, UsageQuery};
use crate::{SinkError, UsageRecord};

impl PostgresSink {
    /// Runs a statement (prepared and cached per connection) on a pooled
    /// connection, and reads its rows with `read` (which says, after each
    /// row, whether it has read enough: the rest is not read). A connection
    /// that failed with the server gone is dropped.
    ///
    /// When the returned future is dropped before the statement is done
    /// (the endpoint's query timeout fired), the statement is cancelled on
    /// the server (a cancel request with the connection's cancel token) and
    /// the connection is closed, not given back to the pool, so that neither
    /// the server's work nor the pooled connection outlives the request.
    pub(super) async fn read_rows(
        &self,
        statement: &Statement<'_>,
        mut read: impl FnMut(Row) -> Result<bool, SinkError> + Send,
    ) -> Result<(), SinkError> {
        let client = self.inner.client().await?;
        let mut guard = CancelOnDrop {
            token: Some(client.cancel_token()),
            client: Some(client),
        };
        let result = match guard.client.as_ref() {
            Some(client) => {
                async {
                    let stmt = client
                        .prepare_cached(&statement.sql)
                        .await
                        .map_err(error::pg)?;
                    let params = statement.values.iter().map(|v| v as &(dyn ToSql + Sync));
                    let rows = client.query_raw(&stmt, params).await.map_err(error::pg)?;
                    let mut rows = std::pin::pin!(rows);
                    while let Some(row) = futures_util::StreamExt::next(&mut rows).await {
                        if read(row.map_err(error::pg)?)? {
                            break;
                        }
                    }
                    Ok(())
                }
                .await
            }
            None => Ok(()),
        };
        guard.token = None;
        let client = guard.client.take();
        match result {
            Ok(()) => Ok(()),
            Err(e) => Err(self.inner.failed(e, client)),
        }
    }

    /// Every row of a statement.
    pub(super) async fn rows(&self, statement: &Statement<'_>) -> Result<Vec<Row>, SinkError> {
        let mut out = Vec::new();
        self.read_rows(statement, |row| {
            out.push(row);
            Ok(false)
        })
        .await?;
        Ok(out)
    }

    /// One page: a keyset query whose every value is a bind parameter; its
    /// rows are read only until they [are enough](UsageQuery::read_enough),
    /// in records or in bytes.
    pub(super) async fn select_page(&self, query: &UsageQuery) -> Result<UsagePage, SinkError> {
        // Checks the cursor before taking a connection; a bad cursor is the
        // caller's fault and its message is meant for them, so it gets no context.
        let after = query.position()?;
        let statement = sql::page(
            Dialect::Postgres,
            &self.inner.names.qualified,
            query,
            after.as_ref(),
        );
        let mut hits = Vec::new();
        let mut bytes = 0usize;
        self.read_rows(&statement, |row| {
            let record = sql::record(&row)?;
            bytes = bytes.saturating_add(record_bytes(&record));
            hits.push(record);
            Ok(query.read_enough(hits.len(), bytes))
        })
        .await?;
        Ok(UsagePage::from_sorted(query, hits))
    }

    /// One record by its primary key, if its consumer is in `scope`.
    pub(super) async fn select_by_id(
        &self,
        id: &str,
        scope: &ConsumerScope,
    ) -> Result<Option<UsageRecord>, SinkError> {
        let statement = sql::by_id(Dialect::Postgres, &self.inner.names.qualified, id, scope);
        // The primary key: at most one row.
        let rows = self.rows(&statement).await?;
        rows.first().map(sql::record).transpose()
    }
}

/// Cancels a statement still running when its future is dropped, and closes
/// its connection (see [`PostgresSink::read_rows`]).
struct CancelOnDrop {
    /// `None` once the statement is done.
    token: Option<tokio_postgres::CancelToken>,
    client: Option<deadpool_postgres::Client>,
}

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        let (Some(token), Some(client)) = (self.token.take(), self.client.take()) else {
            return;
        };
        // Out of the pool: the next user must not get a connection whose
        // statement is being cancelled (a late cancel would hit theirs).
        let client = deadpool_postgres::Object::take(client);
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        runtime.spawn(async move {
            if let Err(err) = token.cancel_query(tokio_postgres::NoTls).await {
                tracing::debug!(error = %err, "PostgreSQL: cancelling an abandoned /usage query failed; closing its connection");
            }
            drop(client);
        });
    }
}

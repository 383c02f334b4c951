//! Reading a page: the shared page query in PostgreSQL's dialect, its rows read
//! back through [`ReadColumns`](crate::sink::sql::ReadColumns).

use tokio_postgres::types::ToSql;
use tokio_postgres::Row;

use super::{error, PostgresSink};
use crate::sink::sql::{self, Dialect, Statement};
use crate::sink::{ConsumerScope, UsagePage, UsageQuery};
use crate::{SinkError, UsageRecord};

impl PostgresSink {
    /// Runs a statement (prepared and cached per connection) on a pooled
    /// connection; a connection that failed with the server gone is dropped.
    pub(super) async fn rows(&self, statement: &Statement<'_>) -> Result<Vec<Row>, SinkError> {
        let client = self.inner.client().await?;
        let rows = async {
            let stmt = client
                .prepare_cached(&statement.sql)
                .await
                .map_err(error::pg)?;
            let params: Vec<&(dyn ToSql + Sync)> = statement
                .values
                .iter()
                .map(|v| v as &(dyn ToSql + Sync))
                .collect();
            client.query(&stmt, &params).await.map_err(error::pg)
        }
        .await;
        match rows {
            Ok(rows) => Ok(rows),
            Err(e) => Err(self.inner.failed(e, Some(client))),
        }
    }

    /// One page: a keyset query whose every value is a bind parameter.
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
        let rows = self.rows(&statement).await?;
        let hits = rows
            .iter()
            .map(sql::record)
            .collect::<Result<Vec<_>, _>>()?;
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

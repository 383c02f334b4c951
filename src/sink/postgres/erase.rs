//! Erasure: every record of one consumer, in one statement.

use super::{error, PostgresSink};
use crate::SinkError;

impl PostgresSink {
    /// `DELETE ... WHERE consumer = $1`, by the consumer index; other
    /// consumers' rows are not locked, so writes go on meanwhile.
    pub(super) async fn erase(&self, consumer: &str) -> Result<u64, SinkError> {
        let n = &self.inner.names;
        let client = self.inner.client().await?;
        let sql = format!("DELETE FROM {} WHERE consumer = $1", n.qualified);
        match client.execute(&sql, &[&consumer]).await {
            Ok(erased) => {
                tracing::info!(
                    schema = %n.schema,
                    table = %n.table,
                    erased,
                    "postgres usage sink: erased a consumer's records"
                );
                Ok(erased)
            }
            Err(e) => Err(self.inner.failed(error::pg(e), Some(client))),
        }
    }
}

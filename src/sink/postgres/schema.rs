//! Creating and upgrading the schema: one transaction under an advisory lock, the
//! version kept in `<table>_meta`.

use deadpool_postgres::Client;

use super::error;
use super::names::Names;
use super::partition::PartitionBy;
use crate::{SinkError, SinkErrorKind};

/// The schema version this crate writes and reads.
pub(super) const SCHEMA_VERSION: i32 = 4;

/// The key of the version row in `<table>_meta`.
const VERSION_KEY: &str = "schema_version";

/// The DDL that brings a table from version `i` to `i + 1`. Only ever appended to.
fn steps(n: &Names) -> [String; SCHEMA_VERSION as usize] {
    let t = &n.qualified;
    [
        format!(
            r#"CREATE TABLE IF NOT EXISTS {t} (
    id                  TEXT COLLATE "C" PRIMARY KEY,
    consumer            TEXT,
    created_at          TIMESTAMPTZ(3) NOT NULL,
    method              TEXT NOT NULL,
    path                TEXT NOT NULL,
    route               TEXT,
    status              INTEGER NOT NULL,
    duration_us         BIGINT NOT NULL,
    outcome             TEXT NOT NULL,
    query               TEXT NOT NULL,
    params              JSONB NOT NULL,
    req_headers         JSONB NOT NULL,
    resp_headers        JSONB NOT NULL,
    req_body            BYTEA NOT NULL,
    req_body_size       BIGINT NOT NULL,
    req_body_truncated  BOOLEAN NOT NULL,
    resp_body           BYTEA NOT NULL,
    resp_body_size      BIGINT NOT NULL,
    resp_body_truncated BOOLEAN NOT NULL,
    grpc                JSONB
);
CREATE INDEX IF NOT EXISTS {ci} ON {t} (consumer, created_at, id);
CREATE INDEX IF NOT EXISTS {cr} ON {t} (created_at, id);"#,
            ci = n.consumer_index,
            cr = n.created_index,
        ),
        // Rows up to a page (8 KiB) are stored as they are. With the default
        // target (2 KiB) a record with ~1 KiB bodies each way is over it, and
        // PostgreSQL compresses its bodies and headers with pglz on every insert:
        // a third of the server's time in the write bench. Later rows only; no
        // rewrite.
        format!("ALTER TABLE {t} SET (toast_tuple_target = 8160);"),
        // What the capture could not keep (`CaptureNotes`; NULL when nothing).
        format!("ALTER TABLE {t} ADD COLUMN IF NOT EXISTS capture JSONB;"),
        // The request's W3C trace context (NULL without one), and an index for
        // the `traceId` filter over the rows that have one.
        format!(
            "ALTER TABLE {t} ADD COLUMN IF NOT EXISTS trace_id TEXT COLLATE \"C\";
ALTER TABLE {t} ADD COLUMN IF NOT EXISTS span_id TEXT COLLATE \"C\";
CREATE INDEX IF NOT EXISTS {ti} ON {t} (trace_id) WHERE trace_id IS NOT NULL;",
            ti = n.trace_index,
        ),
    ]
}

/// Runs the migration; see [`PostgresSink::migrate`](super::PostgresSink::migrate).
pub(super) async fn migrate(
    client: &mut Client,
    n: &Names,
    partition: Option<PartitionBy>,
) -> Result<(), SinkError> {
    let tx = client.transaction().await.map_err(error::pg)?;
    // Two processes starting at once must not both run the DDL: `CREATE ... IF NOT
    // EXISTS` is not safe against a concurrent create.
    tx.execute("SELECT pg_advisory_xact_lock(hashtext($1))", &[&n.lock_key])
        .await
        .map_err(error::pg)?;

    // `CREATE SCHEMA IF NOT EXISTS` needs the CREATE privilege on the database even
    // when the schema exists, so only ask for it when the schema is missing.
    let exists = tx
        .query_opt(
            "SELECT 1 FROM pg_namespace WHERE nspname = $1",
            &[&n.schema],
        )
        .await
        .map_err(error::pg)?
        .is_some();
    if !exists {
        tx.batch_execute(&format!("CREATE SCHEMA IF NOT EXISTS \"{}\"", n.schema))
            .await
            .map_err(error::pg)?;
    }

    tx.batch_execute(&format!(
        "CREATE TABLE IF NOT EXISTS {} (name TEXT PRIMARY KEY, value TEXT NOT NULL)",
        n.meta
    ))
    .await
    .map_err(error::pg)?;
    let row = tx
        .query_opt(
            &format!("SELECT value FROM {} WHERE name = $1", n.meta),
            &[&VERSION_KEY],
        )
        .await
        .map_err(error::pg)?;
    let current: i32 = match row {
        None => 0,
        Some(row) => {
            let value: String = row.try_get(0).map_err(error::column)?;
            value.trim().parse().map_err(|_| {
                SinkError::message(
                    SinkErrorKind::Corrupt,
                    format!(
                        "{}: schema_version is {value:?}, not a number",
                        n.meta.replace('"', "")
                    ),
                )
            })?
        }
    };
    if current > SCHEMA_VERSION {
        return Err(SinkError::message(
            SinkErrorKind::Corrupt,
            format!(
                "table {schema}.{table} has schema version {current}, newer than version \
                 {SCHEMA_VERSION} which this version of tower-usage understands; \
                 upgrade tower-usage, or use another table",
                schema = n.schema,
                table = n.table,
            ),
        ));
    }
    if current < SCHEMA_VERSION {
        let skip = usize::try_from(current.max(0)).unwrap_or(0);
        for ddl in steps(n).iter().skip(skip) {
            tx.batch_execute(ddl).await.map_err(error::pg)?;
        }
        set_meta(&tx, n, VERSION_KEY, &SCHEMA_VERSION.to_string()).await?;
    }
    super::partition::convert(&tx, n, partition).await?;
    tx.commit().await.map_err(error::pg)
}

/// Sets `name` to `value` in `<table>_meta`.
pub(super) async fn set_meta(
    tx: &deadpool_postgres::Transaction<'_>,
    n: &Names,
    name: &str,
    value: &str,
) -> Result<(), SinkError> {
    tx.execute(
        &format!(
            "INSERT INTO {} (name, value) VALUES ($1, $2) \
             ON CONFLICT (name) DO UPDATE SET value = EXCLUDED.value",
            n.meta
        ),
        &[&name, &value],
    )
    .await
    .map_err(error::pg)?;
    Ok(())
}

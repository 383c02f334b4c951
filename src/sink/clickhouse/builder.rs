//! Connecting: the builder, the client's settings, and what `connect` checks
//! and creates before the first write.

use std::sync::Arc;
use std::time::Duration;

use clickhouse::{Client, Compression, Row};
use serde::Deserialize;

use super::schema::{self, Version};
use super::{error, ClickHouseSink, Inner};
use crate::SinkError;

/// The default database.
pub const DEFAULT_DATABASE: &str = "default";

/// The default table.
pub const DEFAULT_TABLE: &str = "usage_records";

/// Configures a [`ClickHouseSink`]; from [`ClickHouseSink::builder`].
///
/// Names are checked when the sink connects: a database or table name must
/// match `^[A-Za-z_][A-Za-z0-9_]{0,62}$`, or connecting fails with
/// [`Config`](crate::SinkErrorKind::Config).
#[derive(Clone)]
pub struct ClickHouseSinkBuilder {
    database: String,
    table: String,
    max_age: Option<Duration>,
    user: Option<String>,
    password: Option<String>,
}

impl Default for ClickHouseSinkBuilder {
    fn default() -> Self {
        Self {
            database: DEFAULT_DATABASE.to_owned(),
            table: DEFAULT_TABLE.to_owned(),
            max_age: None,
            user: None,
            password: None,
        }
    }
}

impl std::fmt::Debug for ClickHouseSinkBuilder {
    /// Never shows the password.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClickHouseSinkBuilder")
            .field("database", &self.database)
            .field("table", &self.table)
            .field("max_age", &self.max_age)
            .field("user", &self.user)
            .finish_non_exhaustive()
    }
}

#[derive(Row, Deserialize)]
struct Column {
    name: String,
    r#type: String,
}

impl ClickHouseSinkBuilder {
    /// The database, created if missing. Default: `default`.
    ///
    /// ```
    /// let b = tower_usage::ClickHouseSink::builder().database("telemetry");
    /// # let _ = b;
    /// ```
    pub fn database(mut self, database: impl Into<String>) -> Self {
        self.database = database.into();
        self
    }

    /// The records table, created if missing (and `<table>_erased` next to
    /// it). Default: `usage_records`.
    ///
    /// ```
    /// let b = tower_usage::ClickHouseSink::builder().table("api_usage");
    /// # let _ = b;
    /// ```
    pub fn table(mut self, table: impl Into<String>) -> Self {
        self.table = table.into();
        self
    }

    /// Keeps records for this long after their `created_at`: older ones are
    /// hidden from reads at once and removed by partition (month) in the
    /// background, and by the table's `TTL` on a server that has one (see
    /// [retention](super#retention-and-erasure)). Default: kept forever.
    ///
    /// ```
    /// use std::time::Duration;
    /// let b = tower_usage::ClickHouseSink::builder().max_age(Duration::from_secs(90 * 86_400));
    /// # let _ = b;
    /// ```
    pub fn max_age(mut self, max_age: Duration) -> Self {
        self.max_age = Some(max_age);
        self
    }

    /// The user; overrides one in the URL. Default: the URL's, else the
    /// server's `default` user.
    ///
    /// ```
    /// let b = tower_usage::ClickHouseSink::builder().user("ingest").password("secret");
    /// # let _ = b;
    /// ```
    pub fn user(mut self, user: impl Into<String>) -> Self {
        self.user = Some(user.into());
        self
    }

    /// The password; overrides one in the URL. Default: the URL's, else none.
    ///
    /// ```
    /// let b = tower_usage::ClickHouseSink::builder().password("secret");
    /// # let _ = b;
    /// ```
    pub fn password(mut self, password: impl Into<String>) -> Self {
        self.password = Some(password.into());
        self
    }

    /// Connects to `url` (the HTTP interface, `http://[user[:password]@]host:8123`),
    /// reads the server's version, creates the database and tables if
    /// missing, and checks the table's columns against `system.columns`.
    ///
    /// Fails with a temporary [`Unavailable`](crate::SinkErrorKind::Unavailable)
    /// error when the server cannot be reached, and with a permanent
    /// [`Config`](crate::SinkErrorKind::Config) error for a bad name or a
    /// table whose columns are not the sink's.
    ///
    /// ```no_run
    /// # async fn run() -> Result<(), tower_usage::SinkError> {
    /// let sink = tower_usage::ClickHouseSink::builder()
    ///     .database("telemetry")
    ///     .table("api_usage")
    ///     .connect("http://127.0.0.1:8123")
    ///     .await?;
    /// # let _ = sink;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn connect(self, url: &str) -> Result<ClickHouseSink, SinkError> {
        schema::check_name("database", &self.database)?;
        schema::check_name("table", &self.table)?;
        let (endpoint, url_user, url_password) = split_credentials(url);
        let mut client = Client::default()
            .with_url(endpoint.clone())
            .with_validation(false)
            .with_compression(Compression::Lz4);
        if let Some(user) = self.user.clone().or(url_user) {
            client = client.with_user(user);
        }
        if let Some(password) = self.password.clone().or(url_password) {
            client = client.with_password(password);
        }
        let context = |what: &str| format!("ClickHouse at {endpoint}: {what}");
        let version_text: String = client
            .query("SELECT version()")
            .fetch_one()
            .await
            .map_err(|e| error::ch(e).with_context(context("reading the server's version")))?;
        let version = Version::parse(&version_text).ok_or_else(|| {
            SinkError::config(context(&format!(
                "cannot read the server version {version_text:?}"
            )))
        })?;

        let db = &self.database;
        let qualified = format!("`{db}`.`{}`", self.table);
        let erased = format!("`{db}`.`{}_erased`", self.table);
        let ddl = [
            format!("CREATE DATABASE IF NOT EXISTS `{db}`"),
            schema::create_table(&qualified, version, self.max_age),
            schema::create_erased(&erased),
        ];
        let creating = context(&format!("creating {qualified}"));
        for sql in &ddl {
            client
                .query(sql)
                .execute()
                .await
                .map_err(|e| error::ch(e).with_context(&creating))?;
        }
        let columns = client
            .query("SELECT name, type FROM system.columns WHERE database = ? AND table = ?")
            .bind(db.as_str())
            .bind(self.table.as_str())
            .fetch_all::<Column>()
            .await
            .map_err(|e| error::ch(e).with_context(&creating))?;
        let found: Vec<(String, String)> =
            columns.into_iter().map(|c| (c.name, c.r#type)).collect();
        if let Some(problem) = schema::mismatch(&format!("{db}.{}", self.table), &found) {
            return Err(SinkError::config(context(&problem)));
        }
        if let (true, Some(max_age)) = (version.is_modern(), self.max_age) {
            // A table made earlier, or with another max_age.
            let sql = format!(
                "ALTER TABLE {qualified} MODIFY TTL {}",
                schema::ttl(max_age)
            );
            client
                .query(&sql)
                .execute()
                .await
                .map_err(|e| error::ch(e).with_context(&creating))?;
        }
        if version >= Version::ASYNC_INSERT {
            // Asynchronous inserts skip de-duplication, and since 26.3 are
            // on by default: the writer batches already.
            client = client.with_setting("async_insert", "0");
        }
        let client = client.with_database(db.clone());
        let sink = ClickHouseSink {
            inner: Arc::new(Inner {
                client,
                endpoint,
                database: self.database,
                table: self.table,
                qualified,
                erased,
                version,
                max_age: self.max_age,
            }),
        };
        if sink.inner.max_age.is_some() {
            super::lifecycle::spawn_retention(Arc::downgrade(&sink.inner));
        }
        Ok(sink)
    }
}

/// `http://user:password@host:port/` into the URL without its credentials,
/// and the (percent-decoded) user and password.
fn split_credentials(url: &str) -> (String, Option<String>, Option<String>) {
    let decode = |s: &str| {
        percent_encoding::percent_decode_str(s)
            .decode_utf8_lossy()
            .into_owned()
    };
    let Some((scheme, rest)) = url.split_once("://") else {
        return (url.to_owned(), None, None);
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let Some(at) = rest[..authority_end].rfind('@') else {
        return (url.to_owned(), None, None);
    };
    let (userinfo, host) = (&rest[..at], &rest[at + 1..]);
    let (user, password) = match userinfo.split_once(':') {
        Some((u, p)) => (decode(u), Some(decode(p))),
        None => (decode(userinfo), None),
    };
    (format!("{scheme}://{host}"), Some(user), password)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_come_out_of_the_url() {
        assert_eq!(
            split_credentials("http://app:p%40ss@ch.internal:8123/"),
            (
                "http://ch.internal:8123/".into(),
                Some("app".into()),
                Some("p@ss".into())
            )
        );
        assert_eq!(
            split_credentials("http://127.0.0.1:8123"),
            ("http://127.0.0.1:8123".into(), None, None)
        );
        assert_eq!(
            split_credentials("https://ro@h/x@y"),
            ("https://h/x@y".into(), Some("ro".into()), None)
        );
    }

    #[test]
    fn the_password_is_never_shown() {
        let b = ClickHouseSinkBuilder::default().password("hunter2");
        assert!(!format!("{b:?}").contains("hunter2"));
    }
}

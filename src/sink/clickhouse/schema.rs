//! The table: its DDL for the server's version, and the startup check of its
//! columns against `system.columns`.
//!
//! The portable core (ClickHouse 18.16 and every later version accept it) is
//! a `ReplacingMergeTree` partitioned by `month` and ordered by `(consumer,
//! created_at_ms, id)`. On a server that has them ([`Version::is_modern`]),
//! the table also gets column codecs, data-skipping indexes on `id` and
//! `trace_id`, and a `TTL` when the sink has a `max_age`.

use std::fmt::Write as _;
use std::time::Duration;

use crate::SinkError;

/// A server version, `major.minor` (from `SELECT version()`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Version {
    /// The major version: `18` for 18.16.1, `24` for 24.8.2.3.
    pub major: u32,
    /// The minor version.
    pub minor: u32,
}

impl Version {
    /// The first version with everything the modern table uses: column
    /// codecs (19.1), `TTL` (19.6), data-skipping indexes without the
    /// experimental flag and the `bloom_filter` type (20.1), `MODIFY TTL`.
    pub const MODERN: Version = Version {
        major: 20,
        minor: 3,
    };

    /// The first version with the `async_insert` setting (21.11); the sink
    /// sets it to `0` there (see [writes](super#writes)).
    pub const ASYNC_INSERT: Version = Version {
        major: 21,
        minor: 11,
    };

    /// Parses `version()`: `18.16.1`, `24.8.2.3`, `25.3.1.2703-lts`.
    ///
    /// ```
    /// use tower_usage::sink::clickhouse::Version;
    /// assert_eq!(Version::parse("18.16.1"), Some(Version { major: 18, minor: 16 }));
    /// assert!(!Version::parse("18.16.1").unwrap().is_modern());
    /// assert!(Version::parse("24.8.2.3").unwrap().is_modern());
    /// assert_eq!(Version::parse("nonsense"), None);
    /// ```
    pub fn parse(text: &str) -> Option<Self> {
        let mut parts = text.trim().split(['.', '-']);
        let major = parts.next()?.parse().ok()?;
        let minor = parts.next()?.parse().ok()?;
        Some(Self { major, minor })
    }

    /// Whether the server has codecs, skipping indexes and `TTL`.
    pub fn is_modern(self) -> bool {
        self >= Self::MODERN
    }
}

impl std::fmt::Display for Version {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

/// Every column the sink writes and reads: name, type, and the codec a modern
/// server gets.
pub(super) const COLUMNS: [(&str, &str, &str); 17] = [
    ("id", "String", ""),
    ("consumer", "String", ""),
    ("anonymous", "UInt8", ""),
    ("created_at_ms", "Int64", "CODEC(Delta, LZ4)"),
    ("month", "UInt32", ""),
    ("method", "String", ""),
    ("path", "String", ""),
    ("route", "Nullable(String)", ""),
    ("status", "UInt16", ""),
    ("outcome", "String", ""),
    ("duration_us", "UInt64", "CODEC(T64, LZ4)"),
    ("req_bytes", "UInt64", "CODEC(T64, LZ4)"),
    ("resp_bytes", "UInt64", "CODEC(T64, LZ4)"),
    ("trace_id", "String", ""),
    ("span_id", "String", ""),
    ("written_ms", "Int64", "CODEC(Delta, LZ4)"),
    ("record", "String", "CODEC(ZSTD(1))"),
];

/// Checks a database or table name: `^[A-Za-z_][A-Za-z0-9_]{0,62}$`, so
/// that it is safe between backquotes.
pub(super) fn check_name(what: &str, name: &str) -> Result<(), SinkError> {
    let mut chars = name.chars();
    let ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && name.len() <= 63;
    if ok {
        Ok(())
    } else {
        Err(SinkError::config(format!(
            "ClickHouse {what} name {name:?} must match ^[A-Za-z_][A-Za-z0-9_]{{0,62}}$"
        )))
    }
}

/// The `TTL` clause for `max_age`: whole seconds, at least one.
pub(super) fn ttl(max_age: Duration) -> String {
    format!(
        "toDateTime(intDiv(created_at_ms, 1000)) + toIntervalSecond({})",
        max_age.as_secs().max(1)
    )
}

/// `CREATE TABLE IF NOT EXISTS` for the records table `qualified` on a server
/// of `version`, with a `TTL` of `max_age` where the server has `TTL`.
pub(super) fn create_table(qualified: &str, version: Version, max_age: Option<Duration>) -> String {
    let modern = version.is_modern();
    let mut sql = format!("CREATE TABLE IF NOT EXISTS {qualified} (");
    for (i, (name, ty, codec)) in COLUMNS.iter().enumerate() {
        let sep = if i == 0 { "" } else { "," };
        let _ = write!(sql, "{sep}\n    {name} {ty}");
        if modern && !codec.is_empty() {
            let _ = write!(sql, " {codec}");
        }
    }
    if modern {
        sql.push_str(",\n    INDEX id_bloom id TYPE bloom_filter(0.01) GRANULARITY 4");
        sql.push_str(",\n    INDEX trace_bloom trace_id TYPE bloom_filter(0.01) GRANULARITY 4");
    }
    sql.push_str(
        "\n) ENGINE = ReplacingMergeTree\nPARTITION BY month\nORDER BY (consumer, created_at_ms, id)",
    );
    if let (true, Some(max_age)) = (modern, max_age) {
        let _ = write!(sql, "\nTTL {}", ttl(max_age));
    }
    // Rows are wide (the whole record): a granule of 256 rather than 8192
    // rows keeps what a page decompresses small (a consumer's page read
    // ~700 MB at 8192 on 1,000,000 records, 1.3 s; at 256, 0.2 s).
    sql.push_str("\nSETTINGS index_granularity = 256");
    sql
}

/// The table of erasures: one row per [`erase_consumer`](crate::UsageSink::erase_consumer)
/// call, read by every query to hide what the asynchronous `DELETE` has not
/// removed yet.
pub(super) fn create_erased(qualified: &str) -> String {
    format!(
        "CREATE TABLE IF NOT EXISTS {qualified} (consumer String, erased_ms Int64) \
         ENGINE = ReplacingMergeTree ORDER BY (consumer, erased_ms)"
    )
}

/// What is wrong with a table whose columns are `found` (`(name, type)` from
/// `system.columns`): `None` when every column the sink needs is there with
/// its type. Extra columns are allowed.
pub(super) fn mismatch(table: &str, found: &[(String, String)]) -> Option<String> {
    if found.is_empty() {
        return Some(format!("table {table} has no columns (does it exist?)"));
    }
    let mut problems = Vec::new();
    for (name, ty, _) in COLUMNS {
        match found.iter().find(|(n, _)| n == name) {
            None => problems.push(format!("column {name} {ty} is missing")),
            Some((_, t)) if t != ty => problems.push(format!("column {name} is {t}, not {ty}")),
            Some(_) => {}
        }
    }
    (!problems.is_empty()).then(|| {
        format!(
            "table {table} is not a tower-usage records table: {}; use another table, or \
             drop this one to let the sink create it",
            problems.join(", ")
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const OLD: Version = Version {
        major: 18,
        minor: 16,
    };
    const NEW: Version = Version {
        major: 24,
        minor: 8,
    };

    #[test]
    fn the_portable_table_has_no_codec_index_or_ttl() {
        let sql = create_table("`db`.`t`", OLD, Some(Duration::from_secs(86_400)));
        assert!(sql.starts_with("CREATE TABLE IF NOT EXISTS `db`.`t` (\n    id String,"));
        assert!(sql.contains("\n    route Nullable(String),"));
        assert!(sql.ends_with(
            ") ENGINE = ReplacingMergeTree\nPARTITION BY month\nORDER BY (consumer, created_at_ms, id)\n\
             SETTINGS index_granularity = 256"
        ));
        for modern_only in ["CODEC", "INDEX", "TTL"] {
            assert!(!sql.contains(modern_only), "{modern_only} in {sql}");
        }
    }

    #[test]
    fn a_modern_server_gets_codecs_skipping_indexes_and_ttl() {
        let sql = create_table("`db`.`t`", NEW, Some(Duration::from_secs(30 * 86_400)));
        assert!(sql.contains("\n    record String CODEC(ZSTD(1)),"), "{sql}");
        assert!(
            sql.contains("\n    created_at_ms Int64 CODEC(Delta, LZ4),"),
            "{sql}"
        );
        assert!(sql.contains("INDEX id_bloom id TYPE bloom_filter(0.01) GRANULARITY 4"));
        assert!(sql.contains("INDEX trace_bloom trace_id TYPE bloom_filter(0.01) GRANULARITY 4"));
        assert!(sql.ends_with(
            "ORDER BY (consumer, created_at_ms, id)\n\
             TTL toDateTime(intDiv(created_at_ms, 1000)) + toIntervalSecond(2592000)\n\
             SETTINGS index_granularity = 256"
        ));
        let no_ttl = create_table("`db`.`t`", NEW, None);
        assert!(!no_ttl.contains("TTL"));
    }

    #[test]
    fn versions_compare_by_major_then_minor() {
        assert!(Version::parse("20.3.1").unwrap().is_modern());
        assert!(!Version::parse("19.17.4").unwrap().is_modern());
        assert!(Version::parse("21.11.2").unwrap() >= Version::ASYNC_INSERT);
        assert!(Version::parse("21.9.1").unwrap() < Version::ASYNC_INSERT);
        assert_eq!(
            Version::parse("25.3.1.2703-lts").unwrap().to_string(),
            "25.3"
        );
    }

    #[test]
    fn names_are_checked() {
        assert!(check_name("table", "usage_records").is_ok());
        assert!(check_name("table", "1x").is_err());
        assert!(check_name("table", "a`b").is_err());
        assert!(check_name("table", "").is_err());
    }

    #[test]
    fn a_mismatch_names_every_wrong_column() {
        let mut found: Vec<(String, String)> = COLUMNS
            .iter()
            .map(|(n, t, _)| (n.to_string(), t.to_string()))
            .collect();
        assert_eq!(mismatch("t", &found), None);
        found.retain(|(n, _)| n != "trace_id");
        found[0].1 = "UInt64".into();
        found.push(("extra".into(), "String".into()));
        let msg = mismatch("t", &found).unwrap();
        assert!(msg.contains("column id is UInt64, not String"), "{msg}");
        assert!(msg.contains("column trace_id String is missing"), "{msg}");
        assert!(!msg.contains("extra"), "{msg}");
        assert!(mismatch("t", &[]).unwrap().contains("no columns"));
    }
}

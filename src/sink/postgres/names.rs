//! SQL identifiers: validation, quoting, and every statement text that embeds them.
//!
//! Identifiers are the only things spliced into SQL; they are validated against
//! `^[A-Za-z_][A-Za-z0-9_]{0,62}$` and always double-quoted. Every value is a bind
//! parameter.

use crate::SinkError;

/// PostgreSQL truncates identifiers to 63 bytes (`NAMEDATALEN - 1`).
const MAX_IDENT: usize = 63;

/// Checks that `name` is a plain SQL identifier we are willing to splice into SQL.
pub(super) fn validate_ident(what: &str, name: &str) -> Result<(), SinkError> {
    let bytes = name.as_bytes();
    let ok = matches!(bytes.first(), Some(b) if b.is_ascii_alphabetic() || *b == b'_')
        && bytes.len() <= MAX_IDENT
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || *b == b'_');
    if ok {
        Ok(())
    } else {
        Err(SinkError::config(format!(
            "invalid PostgreSQL {what} name {name:?}: expected 1 to 63 ASCII letters, \
             digits or underscores, not starting with a digit"
        )))
    }
}

/// `"name"`. Only called on validated identifiers, which contain no `"`.
pub(super) fn quote(name: &str) -> String {
    format!("\"{name}\"")
}

/// A name derived from the table name (`<table>_meta`, index names), cut so that
/// it stays within PostgreSQL's 63 bytes instead of being truncated by the server.
pub(super) fn derived(table: &str, suffix: &str) -> String {
    let keep = MAX_IDENT.saturating_sub(suffix.len() + 1).min(table.len());
    // The table name is validated ASCII, so any byte offset is a char boundary.
    format!("{}_{suffix}", &table[..keep])
}

/// The schema, table, and the statements built from them, computed once.
#[derive(Debug)]
pub(super) struct Names {
    pub(super) schema: String,
    pub(super) table: String,
    /// `"schema"."table"`.
    pub(super) qualified: String,
    /// `"schema"."table_meta"`.
    pub(super) meta: String,
    /// Unqualified, quoted index names.
    pub(super) consumer_index: String,
    pub(super) created_index: String,
    pub(super) trace_index: String,
    /// The key of the advisory lock `migrate` holds (hashed by the server).
    pub(super) lock_key: String,
    /// `INSERT ... SELECT * FROM UNNEST(...) ON CONFLICT DO NOTHING`.
    pub(super) insert_unnest: String,
}

impl Names {
    /// Validates both names and builds the statements.
    pub(super) fn new(schema: &str, table: &str) -> Result<Self, SinkError> {
        validate_ident("schema", schema)?;
        validate_ident("table", table)?;
        Ok(Self::build(schema, table))
    }

    /// `public.usage_records`.
    pub(super) fn default_names() -> Self {
        Self::build(super::DEFAULT_SCHEMA, super::DEFAULT_TABLE)
    }

    /// Only for validated names.
    fn build(schema: &str, table: &str) -> Self {
        let qualified = format!("{}.{}", quote(schema), quote(table));
        Self {
            meta: format!("{}.{}", quote(schema), quote(&derived(table, "meta"))),
            consumer_index: quote(&derived(table, "consumer_created_idx")),
            created_index: quote(&derived(table, "created_idx")),
            trace_index: quote(&derived(table, "trace_idx")),
            lock_key: format!("tower-usage migrate {schema}.{table}"),
            schema: schema.to_owned(),
            table: table.to_owned(),
            insert_unnest: super::insert::statement(&qualified),
            qualified,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_are_validated() {
        for ok in ["a", "_", "usage_records", "T1", &"x".repeat(63)] {
            assert!(validate_ident("table", ok).is_ok(), "{ok:?}");
        }
        for bad in [
            "",
            "1a",
            "a-b",
            "a b",
            "a\"b",
            "a;drop",
            "é",
            &"x".repeat(64),
        ] {
            let err = validate_ident("table", bad).unwrap_err();
            assert_eq!(err.kind(), crate::SinkErrorKind::Config, "{bad:?}");
        }
    }

    #[test]
    fn derived_names_fit_in_63_bytes() {
        let long = "t".repeat(63);
        let n = Names::new("public", &long).unwrap();
        assert_eq!(n.meta, format!("\"public\".\"{}_meta\"", "t".repeat(58)));
        assert!(n.consumer_index.len() <= 63 + 2);
        assert_ne!(n.consumer_index, n.created_index);
        let n = Names::new("public", "usage_records").unwrap();
        assert_eq!(n.meta, "\"public\".\"usage_records_meta\"");
        assert_eq!(n.qualified, "\"public\".\"usage_records\"");
    }
}

//! What the SQL sinks share: the one column list, the one page query (rendered
//! in either dialect), and the one way back from a row to a record.
//!
//! A backend binds [`Value`]s in its own types, renders [`page`] for its
//! [`Dialect`], and implements [`ReadColumns`] for its row type; the rest is
//! here.

mod columns;
mod decode;
pub(crate) mod params;
mod select;
mod summary;

#[cfg(feature = "postgres")]
pub(crate) use columns::Kind;
pub(crate) use columns::{row, Col, Value, LIST};
#[cfg(feature = "sqlite")]
pub(crate) use decode::bad;
pub(crate) use decode::{record, ReadColumns};
#[cfg(feature = "postgres")]
pub(crate) use select::Statement;
pub(crate) use select::{by_id, page, Dialect};
#[cfg(feature = "sqlite")]
pub(crate) use summary::DURATION_BIN_FUNCTION;
pub(crate) use summary::{read_keys, summary, ReadKeys};

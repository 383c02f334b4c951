//! What the SQL sinks share.

pub(crate) mod params;

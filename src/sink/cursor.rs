//! The cursor: where the next page starts, bound to the consumer scope and the
//! order it was issued for, so that one issued for another consumer or the
//! other order is refused. It is not signed: a well-formed cursor for one's own
//! scope can be crafted, which only moves where one's own page starts
//! (isolation rests on the query's scope, not on the cursor).
//!
//! A cursor is `1.<order>.<created_at ms>.<scope tag>.<id>` in URL-safe base64
//! without padding; the scope tag is the first 6 bytes of a SHA-256 of the scope.

use base64::Engine as _;
use sha2::Digest as _;
use time::OffsetDateTime;

use super::{ConsumerScope, Order, UsageQuery};
use crate::record::{from_unix_millis, unix_millis};
use crate::{SinkError, UsageRecord};

/// Where a page starts: the `(created_at, id)` of the last record of the previous page.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Position {
    /// `created_at` of that record, in milliseconds since the Unix epoch.
    pub created_at_ms: i64,
    /// `id` of that record.
    pub id: String,
}

impl Position {
    /// The position of a record.
    pub fn of(record: &UsageRecord) -> Self {
        Self {
            created_at_ms: unix_millis(record.created_at),
            id: record.id.clone(),
        }
    }

    /// `created_at` as a timestamp.
    pub fn created_at(&self) -> OffsetDateTime {
        from_unix_millis(self.created_at_ms).unwrap_or(OffsetDateTime::UNIX_EPOCH)
    }

    /// Whether this position comes before `record` in `order`: the record
    /// belongs on the page that starts here.
    pub fn is_before(&self, record: &UsageRecord, order: Order) -> bool {
        let key = (unix_millis(record.created_at), record.id.as_str());
        let me = (self.created_at_ms, self.id.as_str());
        match order {
            Order::Asc => key > me,
            Order::Desc => key < me,
        }
    }

    /// The old name of [`is_before`](Self::is_before).
    #[deprecated(note = "renamed `is_before`: whether this position comes before the record")]
    pub fn precedes(&self, record: &UsageRecord, order: Order) -> bool {
        self.is_before(record, order)
    }
}

const CURSOR_VERSION: &str = "1";

impl UsageQuery {
    /// Decodes [`cursor`](Self::cursor): `None` for the first page.
    ///
    /// Fails with [`SinkErrorKind::InvalidCursor`](crate::SinkErrorKind::InvalidCursor)
    /// when the cursor is not one this crate issued, or was issued for another
    /// consumer scope or order.
    pub fn position(&self) -> Result<Option<Position>, SinkError> {
        let Some(cursor) = self.cursor.as_deref() else {
            return Ok(None);
        };
        let invalid = || SinkError::invalid_cursor("cursor is not one this endpoint issued");
        let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(cursor)
            .map_err(|_| invalid())?;
        let text = std::str::from_utf8(&raw).map_err(|_| invalid())?;
        let mut parts = text.splitn(5, '.');
        let (Some(version), Some(order), Some(ms), Some(scope), Some(id)) = (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) else {
            return Err(invalid());
        };
        if version != CURSOR_VERSION {
            return Err(invalid());
        }
        let created_at_ms: i64 = ms.parse().map_err(|_| invalid())?;
        if from_unix_millis(created_at_ms).is_none() || id.is_empty() || id.len() > 128 {
            return Err(invalid());
        }
        if scope != scope_tag(&self.consumer) {
            return Err(SinkError::invalid_cursor(
                "cursor was issued for another consumer",
            ));
        }
        if order != self.order.tag() {
            return Err(SinkError::invalid_cursor(
                "cursor was issued for the other order",
            ));
        }
        Ok(Some(Position {
            created_at_ms,
            id: id.to_owned(),
        }))
    }

    /// The cursor for the page after `last`, bound to this query's scope and order.
    pub fn cursor_after(&self, last: &UsageRecord) -> String {
        let text = format!(
            "{CURSOR_VERSION}.{}.{}.{}.{}",
            self.order.tag(),
            unix_millis(last.created_at),
            scope_tag(&self.consumer),
            last.id
        );
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(text)
    }
}

/// A short, non-reversible tag of a scope, so a cursor cannot be replayed by
/// another consumer.
fn scope_tag(scope: &ConsumerScope) -> String {
    let mut h = sha2::Sha256::new();
    match scope {
        ConsumerScope::All => h.update(b"all"),
        ConsumerScope::Anonymous => h.update(b"anon"),
        ConsumerScope::Consumer(c) => {
            h.update(b"c:");
            h.update(c.as_bytes());
        }
    }
    let digest = h.finalize();
    digest[..6].iter().map(|b| format!("{b:02x}")).collect()
}

impl Order {
    fn tag(self) -> &'static str {
        match self {
            Self::Asc => "a",
            Self::Desc => "d",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(ms: i64, id: &str) -> UsageRecord {
        UsageRecord {
            id: id.into(),
            created_at: from_unix_millis(ms).unwrap(),
            ..UsageRecord::default()
        }
    }

    #[test]
    fn cursor_round_trips_and_is_bound_to_scope_and_order() {
        let q = UsageQuery {
            consumer: ConsumerScope::Consumer("a".into()),
            ..UsageQuery::default()
        };
        let c = q.cursor_after(&rec(1000, "01X"));
        let q2 = UsageQuery {
            cursor: Some(c.clone()),
            ..q.clone()
        };
        let pos = q2.position().unwrap().unwrap();
        assert_eq!(pos.created_at_ms, 1000);
        assert_eq!(pos.id, "01X");

        let other = UsageQuery {
            consumer: ConsumerScope::Consumer("b".into()),
            cursor: Some(c.clone()),
            ..UsageQuery::default()
        };
        assert_eq!(
            other.position().unwrap_err().kind(),
            crate::SinkErrorKind::InvalidCursor
        );
        let desc = UsageQuery {
            order: Order::Desc,
            ..q2.clone()
        };
        assert!(desc.position().is_err());
        for forged in ["", "!!!", "bm90LWEtY3Vyc29y", "MS5hLjEwMDAuZm9vLjAxWA"] {
            let f = UsageQuery {
                cursor: Some(forged.into()),
                ..q.clone()
            };
            assert!(f.position().is_err(), "{forged:?} accepted");
        }
    }

    #[test]
    fn positions_order_ties_by_id() {
        let p = Position::of(&rec(5, "B"));
        assert!(p.is_before(&rec(5, "C"), Order::Asc));
        assert!(!p.is_before(&rec(5, "A"), Order::Asc));
        assert!(p.is_before(&rec(5, "A"), Order::Desc));
        assert!(p.is_before(&rec(4, "Z"), Order::Desc));
    }
}

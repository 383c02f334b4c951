//! [`get_by_query`]: one record by id on top of [`UsageSink::query`], the
//! default of [`UsageSink::get`].

use super::{ConsumerScope, UsageQuery, UsageSink, MAX_LIMIT};
use crate::record::from_unix_millis;
use crate::{SinkError, UsageRecord};

/// Finds the record `id` in `scope` with [`UsageSink::query`] alone: the
/// default of [`UsageSink::get`], for sinks without a lookup by id.
///
/// A record id is a ULID whose first 48 bits are its `created_at` in
/// milliseconds ([`UsageRecord::new_id`]), so this asks for the records of
/// that one millisecond in `scope` (a page or, rarely, a few) and picks the
/// one with the id. `Ok(None)` when there is none, when it is out of `scope`,
/// or when `id` is not a ULID (26 characters of Crockford base32); the
/// comparison is exact, so ids are case-sensitive. A record whose id is not
/// such a ULID of its own `created_at` is not found this way.
///
/// ```
/// use tower_usage::sink::{get_by_query, ConsumerScope};
/// use tower_usage::{MemorySink, UsageRecord, UsageSink};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let sink = MemorySink::new();
/// let created_at = time::macros::datetime!(2023-01-11 08:07:39.839 UTC);
/// let record = UsageRecord {
///     id: UsageRecord::new_id(created_at),
///     consumer: Some("c1".into()),
///     created_at,
///     ..UsageRecord::default()
/// };
/// sink.record(&[record.clone()]).await.unwrap();
///
/// let mine = ConsumerScope::Consumer("c1".into());
/// let theirs = ConsumerScope::Consumer("c2".into());
/// assert_eq!(get_by_query(&sink, &record.id, &mine).await.unwrap(), Some(record.clone()));
/// assert_eq!(get_by_query(&sink, &record.id, &theirs).await.unwrap(), None);
/// assert_eq!(get_by_query(&sink, "not-an-id", &mine).await.unwrap(), None);
/// # }
/// ```
pub async fn get_by_query<S: UsageSink + ?Sized>(
    sink: &S,
    id: &str,
    scope: &ConsumerScope,
) -> Result<Option<UsageRecord>, SinkError> {
    let Some(ms) = ulid_millis(id) else {
        return Ok(None);
    };
    let (Some(since), Some(until)) = (from_unix_millis(ms), from_unix_millis(ms + 1)) else {
        return Ok(None);
    };
    let mut query = UsageQuery {
        consumer: scope.clone(),
        since: Some(since),
        until: Some(until),
        limit: MAX_LIMIT,
        ..UsageQuery::default()
    };
    loop {
        let page = sink.query(&query).await?;
        if let Some(found) = page.records.into_iter().find(|r| r.id == id) {
            return Ok(Some(found));
        }
        match page.next_cursor {
            Some(cursor) => query.cursor = Some(cursor),
            None => return Ok(None),
        }
    }
}

/// The milliseconds of a ULID: `None` for anything but 26 characters of
/// upper-case Crockford base32 that fit in 128 bits.
pub(crate) fn ulid_millis(id: &str) -> Option<i64> {
    // 26 characters of 5 bits are 130 bits: the first character holds 3.
    if id.len() != ulid::ULID_LEN
        || id.as_bytes()[0] > b'7'
        || !id
            .bytes()
            .all(|b| b.is_ascii_digit() || b.is_ascii_uppercase())
    {
        return None;
    }
    let ulid = ulid::Ulid::from_string(id).ok()?;
    i64::try_from(ulid.timestamp_ms()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_upper_case_ulids_have_millis() {
        let t = time::macros::datetime!(2023-01-11 08:07:39.839 UTC);
        let id = UsageRecord::new_id(t);
        assert_eq!(ulid_millis(&id), Some(1_673_424_459_839));
        assert_eq!(ulid_millis(&id.to_ascii_lowercase()), None);
        assert_eq!(ulid_millis("01GPE5J0X7"), None);
        assert_eq!(ulid_millis("8ZZZZZZZZZZZZZZZZZZZZZZZZZ"), None); // past 128 bits
        assert_eq!(ulid_millis("01GPE5J0X7UUUUUUUUUUUUUUUU"), None); // U is not base32
        assert_eq!(ulid_millis("01GPE5J0X7-AAAAAAAAAAAAAAA"), None);
    }
}

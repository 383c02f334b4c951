//! Retention by age at read time: a sink with `max_age` never lists or
//! counts a record older than that, even before its background sweep has
//! removed it.

use std::borrow::Cow;
use std::time::Duration;

use time::OffsetDateTime;

use crate::sink::{SummaryQuery, UsageQuery, UsageSummary};

/// The instant before which records are expired: now minus `max_age`
/// (the earliest representable instant when `max_age` reaches past it).
pub(crate) fn cut(max_age: Duration) -> OffsetDateTime {
    let age = time::Duration::try_from(max_age).unwrap_or(time::Duration::MAX);
    OffsetDateTime::now_utc()
        .checked_sub(age)
        .unwrap_or(time::PrimitiveDateTime::MIN.assume_utc())
}

/// `query` with its `since` moved up to the cut, when it is earlier.
pub(crate) fn list(query: &UsageQuery, max_age: Option<Duration>) -> Cow<'_, UsageQuery> {
    let Some(cut) = max_age.map(cut) else {
        return Cow::Borrowed(query);
    };
    if query.since.is_some_and(|since| since >= cut) {
        return Cow::Borrowed(query);
    }
    let mut query = query.clone();
    query.since = Some(match query.until {
        Some(until) => cut.min(until),
        None => cut,
    });
    Cow::Owned(query)
}

/// `query` with its `since` moved up to the cut (never past `until`), when
/// it is earlier; give the answer to [`summary_answer`].
pub(crate) fn summary(query: &SummaryQuery, max_age: Option<Duration>) -> Cow<'_, SummaryQuery> {
    let Some(cut) = max_age.map(cut) else {
        return Cow::Borrowed(query);
    };
    if query.since >= cut {
        return Cow::Borrowed(query);
    }
    let mut query = query.clone();
    query.since = cut.min(query.until);
    Cow::Owned(query)
}

/// The summary of a [`summary`]-clamped query, with the range as asked.
pub(crate) fn summary_answer(asked: &SummaryQuery, mut answer: UsageSummary) -> UsageSummary {
    answer.since = asked.since;
    answer.until = asked.until;
    answer
}

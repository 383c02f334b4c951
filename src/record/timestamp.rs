//! Timestamps as records keep them: UTC, to the millisecond, and their wire form
//! (RFC 3339 with milliseconds and a `Z`). The one home of millisecond
//! arithmetic; sinks compare bounds with [`ceil_millis`].

use time::OffsetDateTime;

const RFC3339_MILLIS: &[time::format_description::BorrowedFormatItem<'static>] = time::macros::format_description!(
    "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
);

/// Formats a timestamp as the wire does: RFC 3339, UTC, milliseconds, `Z`.
pub(crate) fn format_timestamp(t: OffsetDateTime) -> String {
    t.to_offset(time::UtcOffset::UTC)
        .format(RFC3339_MILLIS)
        .unwrap_or_else(|_| String::from("invalid-timestamp"))
}

/// Parses any RFC 3339 timestamp into UTC.
pub(crate) fn parse_timestamp(s: &str) -> Result<OffsetDateTime, time::error::Parse> {
    OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
        .map(|t| t.to_offset(time::UtcOffset::UTC))
}

/// Cuts a timestamp to whole milliseconds, in UTC.
pub(crate) fn truncate_to_millis(t: OffsetDateTime) -> OffsetDateTime {
    let t = t.to_offset(time::UtcOffset::UTC);
    t.replace_millisecond(t.millisecond()).unwrap_or(t)
}

/// Milliseconds since the Unix epoch, rounded down (also before 1970).
pub(crate) fn unix_millis(t: OffsetDateTime) -> i64 {
    let ms = t.unix_timestamp_nanos().div_euclid(1_000_000);
    i64::try_from(ms).unwrap_or(if ms < 0 { i64::MIN } else { i64::MAX })
}

/// The timestamp `ms` milliseconds after the Unix epoch, if representable.
pub(crate) fn from_unix_millis(ms: i64) -> Option<OffsetDateTime> {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000).ok()
}

/// `t` rounded up to a whole millisecond: for timestamps kept to the
/// millisecond, `created_at >= t` holds exactly when `created_at >=
/// ceil_millis(t)`, and `created_at < t` when `created_at < ceil_millis(t)`.
/// So a sink can compare bounds in milliseconds.
pub(crate) fn ceil_millis(t: OffsetDateTime) -> i64 {
    let nanos = t.unix_timestamp_nanos();
    let ms = -((-nanos).div_euclid(1_000_000));
    i64::try_from(ms).unwrap_or(if ms < 0 { i64::MIN } else { i64::MAX })
}

/// `t` rounded up to a whole millisecond, as a time (see [`ceil_millis`]).
#[cfg_attr(not(feature = "postgres"), allow(dead_code))]
pub(crate) fn ceil_to_millis(t: OffsetDateTime) -> OffsetDateTime {
    from_unix_millis(ceil_millis(t)).unwrap_or(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_millis_utc() {
        let t = time::macros::datetime!(2023-01-11 10:07:39.839_999 +02:00);
        assert_eq!(format_timestamp(t), "2023-01-11T08:07:39.839Z");
        let cut = truncate_to_millis(t);
        assert_eq!(cut.nanosecond(), 839_000_000);
        assert_eq!(from_unix_millis(unix_millis(cut)), Some(cut));
    }

    #[test]
    fn each_helper_does_what_it_says() {
        let t = time::macros::datetime!(2023-01-11 08:07:39.839 UTC);
        assert_eq!(format_timestamp(t), "2023-01-11T08:07:39.839Z");
        assert_eq!(parse_timestamp("2023-01-11T09:07:39.839+01:00").unwrap(), t);
        assert!(parse_timestamp("yesterday").is_err());
        assert_eq!(
            truncate_to_millis(time::macros::datetime!(2023-01-11 08:07:39.839_999 UTC)),
            t
        );
        assert_eq!(unix_millis(t), 1_673_424_459_839);
        assert_eq!(from_unix_millis(unix_millis(t)), Some(t));
        assert_eq!(
            unix_millis(time::macros::datetime!(1969-12-31 23:59:59.9995 UTC)),
            -1
        );
        assert_eq!(from_unix_millis(0), Some(OffsetDateTime::UNIX_EPOCH));
        assert_eq!(from_unix_millis(i64::MAX), None);
        let inside = time::macros::datetime!(2023-01-11 08:07:39.838_001 UTC);
        assert_eq!(ceil_millis(inside), unix_millis(t));
        assert_eq!(ceil_to_millis(inside), t);
        assert_eq!(ceil_to_millis(t), t);
    }
}

//! The values of the query parameters: each checked and turned into what the
//! query holds, or into what it must be ("must be `asc` or `desc`").

use std::borrow::Cow;

use time::OffsetDateTime;

use super::{Format, Must, MAX_ECHOED_NAME};
use crate::record::parse_timestamp;
use crate::sink::{GroupBy, Interval, Order, PathFilter, StatusFilter, MAX_LIMIT};
use crate::Outcome;

/// Sets `slot` to a good value, or passes on what a bad one must be.
pub(super) fn put<T>(slot: &mut T, value: Result<T, Must>) -> Result<(), Must> {
    *slot = value?;
    Ok(())
}

pub(super) fn page_size(value: &str) -> Result<usize, Must> {
    let must = || Cow::Owned(format!("must be an integer from 1 to {MAX_LIMIT}"));
    if !value.bytes().all(|b| b.is_ascii_digit()) {
        return Err(must());
    }
    match value.parse() {
        Ok(n) if (1..=MAX_LIMIT).contains(&n) => Ok(n),
        _ => Err(must()),
    }
}

pub(super) fn timestamp(value: &str) -> Result<OffsetDateTime, Must> {
    parse_timestamp(value).map_err(|_| {
        // `?since=2023-01-11T10:00:00+02:00` typed as is: a query string's
        // `+` is a space, so the offset arrives as ` 02:00`.
        if value.contains(' ') && parse_timestamp(&value.replace(' ', "+")).is_ok() {
            Cow::Borrowed(
                "must be an RFC 3339 timestamp; its `+` arrived as a space, since a `+` \
                 in a query string means a space: write the offset's `+` as `%2B` \
                 (2023-01-11T10:00:00%2B02:00), or give the time in UTC with `Z`",
            )
        } else {
            Cow::Borrowed("must be an RFC 3339 timestamp, such as 2023-01-11T08:07:39.839Z")
        }
    })
}

pub(super) fn http_method(value: &str) -> Result<String, Must> {
    match http::Method::from_bytes(value.as_bytes()) {
        Ok(_) => Ok(value.to_ascii_uppercase()),
        Err(_) => Err(Cow::Borrowed("must be an HTTP method, such as GET or POST")),
    }
}

pub(super) fn path_filter(value: &str) -> Result<PathFilter, Must> {
    if value.starts_with('/') {
        Ok(PathFilter::parse(value))
    } else {
        Err(Cow::Borrowed(
            "must start with `/`; a trailing `*` makes it a prefix, as in /rest/*",
        ))
    }
}

pub(super) fn status_filter(value: &str) -> Result<StatusFilter, Must> {
    StatusFilter::parse(value).ok_or(Cow::Borrowed(
        "must be a status code (100..=599, such as 404) or a class (1xx..5xx)",
    ))
}

pub(super) fn outcome(value: &str) -> Result<Outcome, Must> {
    Outcome::from_name(value).ok_or(Cow::Borrowed(
        "must be `complete`, `client_gone`, `cancelled` or `error`",
    ))
}

/// A trace id, as `traceparent` carries it: 32 hex digits, not all zero
/// (upper case is taken, and stored ids are lower case).
pub(super) fn trace_id(value: &str) -> Result<String, Must> {
    let id = value.to_ascii_lowercase();
    if crate::TraceContext::is_trace_id(&id) {
        Ok(id)
    } else {
        Err(Cow::Borrowed(
            "must be a W3C trace id: 32 hex digits, not all zero",
        ))
    }
}

pub(super) fn interval(value: &str) -> Result<Interval, Must> {
    Interval::from_name(value).ok_or(Cow::Borrowed("must be `minute`, `hour`, `day` or `month`"))
}

pub(super) fn group_by(value: &str) -> Result<GroupBy, Must> {
    GroupBy::parse(value).map_err(|bad| {
        let shown: String = bad.chars().take(MAX_ECHOED_NAME).collect();
        Cow::Owned(format!(
            "must be a comma-separated list of route, method, status, outcome and consumer, \
             each at most once (`{shown}` is not)"
        ))
    })
}

pub(super) fn export_format(value: &str) -> Result<Format, Must> {
    match value {
        "ndjson" => Ok(Format::Ndjson),
        "csv" => Ok(Format::Csv),
        _ => Err(Cow::Borrowed("must be `ndjson` or `csv`")),
    }
}

pub(super) fn boolean(value: &str) -> Result<bool, Must> {
    match value {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err(Cow::Borrowed("must be `true` or `false`")),
    }
}

pub(super) fn sort_order(value: &str) -> Result<Order, Must> {
    match value {
        "asc" => Ok(Order::Asc),
        "desc" => Ok(Order::Desc),
        _ => Err(Cow::Borrowed("must be `asc` or `desc`")),
    }
}

/// Decodes one `application/x-www-form-urlencoded` name or value: `+` is a
/// space, `%XX` a byte. `None` when the bytes are not UTF-8 (rather than the
/// lossy replacement `form_urlencoded` would make).
pub(super) fn decode(raw: &str) -> Option<Cow<'_, str>> {
    if !raw.contains('+') {
        return percent_encoding::percent_decode_str(raw).decode_utf8().ok();
    }
    let spaced = raw.replace('+', " ");
    let decoded = percent_encoding::percent_decode_str(&spaced)
        .decode_utf8()
        .ok()?;
    Some(Cow::Owned(decoded.into_owned()))
}

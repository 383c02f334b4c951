//! The query strings of `GET /usage` and `GET /usage/summary`, straight into a
//! [`UsageQuery`] or a [`SummaryQuery`]: parsing and validation, before the
//! sink is touched.
//!
//! Every parameter is one entry of [`PARAMS`]: its name, which endpoints take
//! it, whether only an admin may give it, and how its value is checked and
//! set. The name lookup, the duplicate check and the "the parameters are ..."
//! message all come from there. Each value is checked in `values.rs`.

use std::borrow::Cow;

use http::StatusCode;
use time::OffsetDateTime;

use crate::sink::summary::{default_until, DEFAULT_RANGE};
use crate::sink::{
    ConsumerScope, GroupBy, GroupKey, Interval, SummaryQuery, UsageQuery, MAX_BUCKETS,
};
use values::{
    boolean, decode, export_format, group_by, http_method, interval, outcome, page_size,
    path_filter, put, sort_order, status_filter, timestamp, trace_id,
};

mod values;

/// The longest parameter name echoed back in an "unknown parameter" error.
const MAX_ECHOED_NAME: usize = 64;

/// Who is asking: decides whose records the query starts from, and whether
/// the admin-only parameters are allowed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Caller {
    /// Sees every consumer, and may pick one with `consumer=`.
    Admin,
    /// Sees only this consumer's records.
    Consumer(String),
}

/// Why a query string was refused: `400` (or `403` for an admin-only parameter
/// without admin access), with the offending parameter's name when there is one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct ParamError {
    pub(super) status: StatusCode,
    pub(super) parameter: Option<Cow<'static, str>>,
    pub(super) message: Cow<'static, str>,
}

impl ParamError {
    /// `400` for `parameter`; the message is "`parameter` " then `what`.
    fn bad(parameter: &'static str, what: &str) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            parameter: Some(Cow::Borrowed(parameter)),
            message: Cow::Owned(format!("`{parameter}` {what}")),
        }
    }
}

/// What a bad value is told it must be, after the parameter's name:
/// "must be `asc` or `desc`".
type Must = Cow<'static, str>;

/// Which endpoint a query string is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Endpoint {
    /// `GET /usage`: a page of records.
    List,
    /// `GET /usage/summary`.
    Summary,
}

/// An export's format: `format=ndjson` or `format=csv`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Format {
    /// One JSON record (the wire form) per line.
    Ndjson,
    /// CSV with a header row; see `export.rs` for the columns.
    Csv,
}

/// How a list request is answered, beyond the sink query.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Answer {
    /// `None`: one page of JSON; `Some`: every matching record, streamed.
    pub(super) format: Option<Format>,
    /// `bodies=true`: CSV rows carry the request and response bodies.
    pub(super) bodies: bool,
}

/// A valid list request: the sink query and the form of the answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct ListRequest {
    pub(super) query: UsageQuery,
    pub(super) answer: Answer,
}

/// What a query string sets: the list's query (scope, range, filters, paging),
/// how a list is answered (an export), and the summary's own parameters.
#[derive(Debug, Default)]
struct Parsed {
    list: UsageQuery,
    answer: Answer,
    interval: Option<Interval>,
    group_by: Option<GroupBy>,
}

/// One query parameter.
struct Param {
    name: &'static str,
    /// The endpoints that take it.
    on: &'static [Endpoint],
    /// Only an admin may give it; anyone else is answered `403`.
    admin_only: bool,
    /// Checks a decoded, non-empty value and sets it.
    set: Setter,
}

type Setter = fn(&mut Parsed, Cow<'_, str>) -> Result<(), Must>;

const LIST: &[Endpoint] = &[Endpoint::List];
const SUMMARY: &[Endpoint] = &[Endpoint::Summary];
const BOTH: &[Endpoint] = &[Endpoint::List, Endpoint::Summary];

impl Param {
    /// A parameter anyone may give to the endpoints `on`.
    const fn anyone(name: &'static str, on: &'static [Endpoint], set: Setter) -> Self {
        Self {
            name,
            on,
            admin_only: false,
            set,
        }
    }

    /// A parameter only an admin may give.
    const fn admin_only(name: &'static str, on: &'static [Endpoint], set: Setter) -> Self {
        Self {
            name,
            on,
            admin_only: true,
            set,
        }
    }

    fn takes(&self, endpoint: Endpoint) -> bool {
        self.on.contains(&endpoint)
    }
}

/// The parameters, in the order the docs list them: the one place their names
/// are written.
const PARAMS: &[Param] = &[
    Param::anyone("limit", LIST, |p, v| put(&mut p.list.limit, page_size(&v))),
    Param::anyone("cursor", LIST, |p, v| {
        put(&mut p.list.cursor, Ok(Some(v.into_owned())))
    }),
    Param::anyone("since", BOTH, |p, v| {
        put(&mut p.list.since, timestamp(&v).map(Some))
    }),
    Param::anyone("until", BOTH, |p, v| {
        put(&mut p.list.until, timestamp(&v).map(Some))
    }),
    Param::anyone("method", BOTH, |p, v| {
        put(&mut p.list.method, http_method(&v).map(Some))
    }),
    Param::anyone("path", BOTH, |p, v| {
        put(&mut p.list.path, path_filter(&v).map(Some))
    }),
    Param::anyone("status", BOTH, |p, v| {
        put(&mut p.list.status, status_filter(&v).map(Some))
    }),
    Param::anyone("route", BOTH, |p, v| {
        put(&mut p.list.route, Ok(Some(v.into_owned())))
    }),
    Param::anyone("outcome", BOTH, |p, v| {
        put(&mut p.list.outcome, outcome(&v).map(Some))
    }),
    Param::anyone("traceId", BOTH, |p, v| {
        put(&mut p.list.trace_id, trace_id(&v).map(Some))
    }),
    Param::anyone("order", LIST, |p, v| put(&mut p.list.order, sort_order(&v))),
    Param::anyone("interval", SUMMARY, |p, v| {
        put(&mut p.interval, interval(&v).map(Some))
    }),
    Param::anyone("groupBy", SUMMARY, |p, v| {
        put(&mut p.group_by, group_by(&v).map(Some))
    }),
    Param::admin_only("consumer", BOTH, |p, v| {
        put(
            &mut p.list.consumer,
            Ok(ConsumerScope::Consumer(v.into_owned())),
        )
    }),
    Param::anyone("format", LIST, |p, v| {
        put(&mut p.answer.format, export_format(&v).map(Some))
    }),
    Param::anyone("bodies", LIST, |p, v| {
        put(&mut p.answer.bodies, boolean(&v))
    }),
];

/// The page size an export reads the sink with: the records of one page are
/// the most an export holds in memory at once.
pub(super) const EXPORT_PAGE: usize = 500;

/// The parameter names of `endpoint`, in the order of the table in
/// [`UsageService`](super::UsageService)'s docs (the OpenAPI document's test
/// compares them).
#[cfg(test)]
pub(super) fn names(endpoint: Endpoint) -> impl Iterator<Item = &'static str> {
    PARAMS
        .iter()
        .filter(move |p| p.takes(endpoint))
        .map(|p| p.name)
}

// `parse` keeps one bit per parameter to find repeats.
const _: () = assert!(PARAMS.len() <= u32::BITS as usize);

/// Parses and validates a raw (percent-encoded) `GET /usage` query string into
/// the list request of `caller`.
///
/// Pairs are checked in the order they appear; the first bad one decides the
/// error. A `since` later than `until`, then the export's rules (no `limit` or
/// `cursor` with `format`, `bodies` only with `format=csv`), are checked last.
pub(super) fn parse(raw: Option<&str>, caller: Caller) -> Result<ListRequest, ParamError> {
    let (parsed, seen) = parse_for(Endpoint::List, raw, caller)?;
    let (mut query, answer) = (parsed.list, parsed.answer);
    if let (Some(since), Some(until)) = (query.since, query.until) {
        if since > until {
            return Err(ParamError::bad("since", "is later than `until`"));
        }
    }
    let given = |name: &str| {
        PARAMS
            .iter()
            .position(|p| p.name == name)
            .is_some_and(|i| seen & (1 << i) != 0)
    };
    match answer.format {
        Some(_) => {
            for paging in ["limit", "cursor"] {
                if given(paging) {
                    return Err(ParamError::bad(
                        paging,
                        "does not apply to an export: `format` sends every matching record",
                    ));
                }
            }
            query.limit = EXPORT_PAGE;
        }
        None if given("bodies") => {
            return Err(ParamError::bad("bodies", "applies only to `format=csv`"));
        }
        None => {}
    }
    if answer.format == Some(Format::Ndjson) && given("bodies") {
        return Err(ParamError::bad(
            "bodies",
            "applies only to `format=csv` (NDJSON records always hold their bodies)",
        ));
    }
    Ok(ListRequest { query, answer })
}

/// Parses and validates a `GET /usage/summary` query string for `caller`.
///
/// Without `until`, the range ends just after `now` (see
/// [`SummaryQuery::until`]); without `since`, it starts
/// [`DEFAULT_RANGE`] (24 hours) before its end. Beyond the checks of
/// [`parse`]: `groupBy=consumer` needs admin access (`403`), and a range
/// touching more than [`MAX_BUCKETS`] buckets of the interval is refused,
/// naming `interval`.
pub(super) fn parse_summary(
    raw: Option<&str>,
    caller: Caller,
    now: OffsetDateTime,
) -> Result<SummaryQuery, ParamError> {
    let admin = caller == Caller::Admin;
    let (parsed, _) = parse_for(Endpoint::Summary, raw, caller)?;
    let group_by = parsed.group_by.unwrap_or_default();
    if group_by.contains(GroupKey::Consumer) && !admin {
        return Err(ParamError {
            status: StatusCode::FORBIDDEN,
            parameter: Some(Cow::Borrowed("groupBy")),
            message: Cow::Borrowed("grouping by consumer needs admin access"),
        });
    }
    let l = parsed.list;
    let until = l.until.unwrap_or_else(|| default_until(now));
    let since = l.since.unwrap_or(until - DEFAULT_RANGE);
    if since > until {
        // Only a given `since` can be later: the default is before `until`.
        let what = if l.until.is_some() {
            "is later than `until`"
        } else {
            "is later than the default `until` (the millisecond after now)"
        };
        return Err(ParamError::bad("since", what));
    }
    let query = SummaryQuery {
        consumer: l.consumer,
        since,
        until,
        method: l.method,
        path: l.path,
        status: l.status,
        route: l.route,
        outcome: l.outcome,
        trace_id: l.trace_id,
        interval: parsed.interval.unwrap_or_default(),
        group_by,
    };
    let buckets = query.bucket_count();
    if buckets > MAX_BUCKETS as u64 {
        return Err(ParamError::bad(
            "interval",
            &format!(
                "`{}` makes {buckets} buckets from `since` to `until`, more than {MAX_BUCKETS}: \
                 choose a longer interval or a shorter range",
                query.interval
            ),
        ));
    }
    Ok(query)
}

/// The parameters `endpoint` takes from `raw`, and which were given (one bit
/// per entry of [`PARAMS`]).
fn parse_for(
    endpoint: Endpoint,
    raw: Option<&str>,
    caller: Caller,
) -> Result<(Parsed, u32), ParamError> {
    let admin = caller == Caller::Admin;
    let mut query = Parsed {
        list: UsageQuery {
            consumer: match caller {
                Caller::Admin => ConsumerScope::All,
                Caller::Consumer(own) => ConsumerScope::Consumer(own),
            },
            ..UsageQuery::default()
        },
        ..Parsed::default()
    };
    let mut seen: u32 = 0;
    for pair in raw.unwrap_or("").split('&').filter(|pair| !pair.is_empty()) {
        let (raw_name, raw_value) = pair.split_once('=').unwrap_or((pair, ""));
        let Some(name) = decode(raw_name) else {
            return Err(ParamError {
                status: StatusCode::BAD_REQUEST,
                parameter: None,
                message: Cow::Borrowed(
                    "a query parameter name is not valid UTF-8 after percent-decoding",
                ),
            });
        };
        let Some((index, param)) = PARAMS
            .iter()
            .enumerate()
            .find(|(_, p)| p.name == name && p.takes(endpoint))
        else {
            return Err(unknown(&name, admin, endpoint));
        };
        if param.admin_only && !admin {
            return Err(ParamError {
                status: StatusCode::FORBIDDEN,
                parameter: Some(Cow::Borrowed(param.name)),
                message: Cow::Owned(format!("the {} parameter needs admin access", param.name)),
            });
        }
        let bit = 1 << index;
        if seen & bit != 0 {
            return Err(ParamError::bad(param.name, "is given more than once"));
        }
        seen |= bit;
        let Some(value) = decode(raw_value) else {
            return Err(ParamError::bad(
                param.name,
                "is not valid UTF-8 after percent-decoding",
            ));
        };
        if value.is_empty() {
            return Err(ParamError::bad(
                param.name,
                "is empty; leave it out instead",
            ));
        }
        (param.set)(&mut query, value).map_err(|must| ParamError::bad(param.name, &must))?;
    }
    Ok((query, seen))
}

/// Checks the query string of an endpoint that takes no parameters
/// (`GET /usage/{id}`, `GET /usage/openapi.json`): any parameter is `400`.
pub(super) fn none(raw: Option<&str>) -> Result<(), ParamError> {
    let Some(pair) = raw.unwrap_or("").split('&').find(|pair| !pair.is_empty()) else {
        return Ok(());
    };
    let raw_name = pair.split_once('=').map_or(pair, |(name, _)| name);
    let shown: String = decode(raw_name)
        .unwrap_or(Cow::Borrowed(raw_name))
        .chars()
        .take(MAX_ECHOED_NAME)
        .collect();
    Err(ParamError {
        status: StatusCode::BAD_REQUEST,
        message: Cow::Owned(format!(
            "unknown parameter `{shown}`; this endpoint takes no parameters"
        )),
        parameter: Some(Cow::Owned(shown)),
    })
}

/// `400` for a name not in [`PARAMS`] for `endpoint`, listing the ones
/// `admin` may give.
fn unknown(name: &str, admin: bool, endpoint: Endpoint) -> ParamError {
    let shown: String = name.chars().take(MAX_ECHOED_NAME).collect();
    let allowed: Vec<&str> = PARAMS
        .iter()
        .filter(|p| p.takes(endpoint) && (admin || !p.admin_only))
        .map(|p| p.name)
        .collect();
    ParamError {
        status: StatusCode::BAD_REQUEST,
        message: Cow::Owned(format!(
            "unknown parameter `{shown}`; the parameters are {}",
            allowed.join(", ")
        )),
        parameter: Some(Cow::Owned(shown)),
    }
}

#[cfg(test)]
mod tests;

//! The query strings of `GET /usage` and `GET /usage/summary`, straight into a
//! [`UsageQuery`] or a [`SummaryQuery`]: parsing and validation, before the
//! sink is touched.
//!
//! Every parameter is one entry of [`PARAMS`]: its name, which endpoints take
//! it, whether only an admin may give it, and how its value is checked and
//! set. The name lookup, the duplicate check and the "the parameters are ..."
//! message all come from there.

use std::borrow::Cow;

use http::StatusCode;
use time::OffsetDateTime;

use crate::record::parse_timestamp;
use crate::sink::summary::{default_until, DEFAULT_RANGE};
use crate::sink::{
    ConsumerScope, GroupBy, GroupKey, Interval, Order, PathFilter, StatusFilter, SummaryQuery,
    UsageQuery, MAX_BUCKETS, MAX_LIMIT,
};
use crate::Outcome;

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

/// Sets `slot` to a good value, or passes on what a bad one must be.
fn put<T>(slot: &mut T, value: Result<T, Must>) -> Result<(), Must> {
    *slot = value?;
    Ok(())
}

fn page_size(value: &str) -> Result<usize, Must> {
    let must = || Cow::Owned(format!("must be an integer from 1 to {MAX_LIMIT}"));
    if !value.bytes().all(|b| b.is_ascii_digit()) {
        return Err(must());
    }
    match value.parse() {
        Ok(n) if (1..=MAX_LIMIT).contains(&n) => Ok(n),
        _ => Err(must()),
    }
}

fn timestamp(value: &str) -> Result<OffsetDateTime, Must> {
    parse_timestamp(value).map_err(|_| {
        Cow::Borrowed("must be an RFC 3339 timestamp, such as 2023-01-11T08:07:39.839Z")
    })
}

fn http_method(value: &str) -> Result<String, Must> {
    match http::Method::from_bytes(value.as_bytes()) {
        Ok(_) => Ok(value.to_ascii_uppercase()),
        Err(_) => Err(Cow::Borrowed("must be an HTTP method, such as GET or POST")),
    }
}

fn path_filter(value: &str) -> Result<PathFilter, Must> {
    if value.starts_with('/') {
        Ok(PathFilter::parse(value))
    } else {
        Err(Cow::Borrowed(
            "must start with `/`; a trailing `*` makes it a prefix, as in /rest/*",
        ))
    }
}

fn status_filter(value: &str) -> Result<StatusFilter, Must> {
    StatusFilter::parse(value).ok_or(Cow::Borrowed(
        "must be a status code (100..=599, such as 404) or a class (1xx..5xx)",
    ))
}

fn outcome(value: &str) -> Result<Outcome, Must> {
    Outcome::from_name(value).ok_or(Cow::Borrowed(
        "must be `complete`, `client_gone`, `cancelled` or `error`",
    ))
}

fn interval(value: &str) -> Result<Interval, Must> {
    Interval::from_name(value).ok_or(Cow::Borrowed("must be `minute`, `hour`, `day` or `month`"))
}

fn group_by(value: &str) -> Result<GroupBy, Must> {
    GroupBy::parse(value).map_err(|bad| {
        let shown: String = bad.chars().take(MAX_ECHOED_NAME).collect();
        Cow::Owned(format!(
            "must be a comma-separated list of route, method, status, outcome and consumer, \
             each at most once (`{shown}` is not)"
        ))
    })
}

fn export_format(value: &str) -> Result<Format, Must> {
    match value {
        "ndjson" => Ok(Format::Ndjson),
        "csv" => Ok(Format::Csv),
        _ => Err(Cow::Borrowed("must be `ndjson` or `csv`")),
    }
}

fn boolean(value: &str) -> Result<bool, Must> {
    match value {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err(Cow::Borrowed("must be `true` or `false`")),
    }
}

fn sort_order(value: &str) -> Result<Order, Must> {
    match value {
        "asc" => Ok(Order::Asc),
        "desc" => Ok(Order::Desc),
        _ => Err(Cow::Borrowed("must be `asc` or `desc`")),
    }
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

/// Decodes one `application/x-www-form-urlencoded` name or value: `+` is a
/// space, `%XX` a byte. `None` when the bytes are not UTF-8 (rather than the
/// lossy replacement `form_urlencoded` would make).
fn decode(raw: &str) -> Option<Cow<'_, str>> {
    if !raw.contains('+') {
        return percent_encoding::percent_decode_str(raw).decode_utf8().ok();
    }
    let spaced = raw.replace('+', " ");
    let decoded = percent_encoding::percent_decode_str(&spaced)
        .decode_utf8()
        .ok()?;
    Some(Cow::Owned(decoded.into_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sink::DEFAULT_LIMIT;

    /// The caller of the non-admin tests.
    fn me() -> Caller {
        Caller::Consumer("me".into())
    }

    /// What a non-admin caller gets without parameters.
    fn defaults() -> UsageQuery {
        UsageQuery {
            consumer: ConsumerScope::Consumer("me".into()),
            ..UsageQuery::default()
        }
    }

    fn ok(q: &str) -> UsageQuery {
        parse(Some(q), me())
            .map(|r| r.query)
            .unwrap_or_else(|e| panic!("{q:?} refused: {e:?}"))
    }

    fn err(q: &str, admin: bool) -> ParamError {
        let caller = if admin { Caller::Admin } else { me() };
        match parse(Some(q), caller) {
            Ok(p) => panic!("{q:?} accepted: {p:?}"),
            Err(e) => e,
        }
    }

    /// The status and parameter name of the error for a non-admin query.
    fn refused(q: &str) -> (u16, Option<String>) {
        let e = err(q, false);
        (e.status.as_u16(), e.parameter.map(Cow::into_owned))
    }

    #[test]
    fn no_query_gives_the_defaults() {
        assert_eq!(parse(None, me()).unwrap().query, defaults());
        assert_eq!(ok(""), defaults());
        assert_eq!(ok("&&"), defaults());
        assert_eq!(defaults().limit, DEFAULT_LIMIT);
        assert_eq!(defaults().order, Order::Asc);
        let admin = parse(None, Caller::Admin).unwrap().query;
        assert_eq!(admin.consumer, ConsumerScope::All);
    }

    #[test]
    fn every_parameter_parses() {
        let p = ok("limit=1000&cursor=abc_-&since=2023-01-11T08:00:00Z\
                    &until=2023-01-11T10:00:00%2B02:00&method=post&path=/rest/*\
                    &status=4XX&order=desc");
        assert_eq!(p.limit, 1000);
        assert_eq!(p.cursor.as_deref(), Some("abc_-"));
        assert_eq!(
            p.since,
            Some(time::macros::datetime!(2023-01-11 08:00:00 UTC))
        );
        // 10:00+02:00 is 08:00 UTC: since == until is allowed.
        assert_eq!(p.until, p.since);
        assert_eq!(p.method.as_deref(), Some("POST"));
        assert_eq!(p.path, Some(PathFilter::Prefix("/rest/".into())));
        assert_eq!(p.status, Some(StatusFilter::Class(4)));
        assert_eq!(p.order, Order::Desc);
        assert_eq!(p.consumer, ConsumerScope::Consumer("me".into()));

        assert_eq!(ok("limit=1").limit, 1);
        assert_eq!(ok("order=asc").order, Order::Asc);
        assert_eq!(ok("status=404").status, Some(StatusFilter::Exact(404)));
        assert_eq!(
            ok("path=%2Fa%20b+c").path,
            Some(PathFilter::Exact("/a b c".into()))
        );
        assert_eq!(ok("path=/").path, Some(PathFilter::Exact("/".into())));
        assert_eq!(ok("method=PATCH").method.as_deref(), Some("PATCH"));
    }

    #[test]
    fn bad_values_name_their_parameter() {
        let cases: &[(&str, &str)] = &[
            ("limit=0", "limit"),
            ("limit=1001", "limit"),
            ("limit=-1", "limit"),
            ("limit=+5", "limit"),
            ("limit=ten", "limit"),
            ("limit=1.5", "limit"),
            ("limit=99999999999999999999999", "limit"),
            ("since=yesterday", "since"),
            ("since=2023-01-11", "since"),
            ("since=2023-01-11T08:00:00", "since"),
            ("until=2023-13-01T00:00:00Z", "until"),
            (
                "since=2023-01-12T00:00:00Z&until=2023-01-11T00:00:00Z",
                "since",
            ),
            ("method=GE%20T", "method"),
            ("method=G(ET", "method"),
            ("path=rest", "path"),
            ("path=*", "path"),
            ("status=600", "status"),
            ("status=99", "status"),
            ("status=6xx", "status"),
            ("status=4x", "status"),
            ("status=ok", "status"),
            ("order=up", "order"),
            ("order=DESC", "order"),
        ];
        for (q, name) in cases {
            assert_eq!(refused(q), (400, Some((*name).to_owned())), "{q}");
        }
    }

    #[test]
    fn empty_values_are_refused() {
        for name in [
            "limit", "cursor", "since", "until", "method", "path", "status", "order",
        ] {
            assert_eq!(refused(&format!("{name}=")), (400, Some(name.into())));
            assert_eq!(refused(name), (400, Some(name.into())), "bare {name}");
        }
        let e = err("consumer=", true);
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
        assert_eq!(e.parameter.as_deref(), Some("consumer"));
    }

    #[test]
    fn repeated_parameters_are_refused() {
        assert_eq!(refused("limit=5&limit=5"), (400, Some("limit".into())));
        assert_eq!(
            refused("order=asc&path=/a&order=desc"),
            (400, Some("order".into()))
        );
        let e = err("limit=5&limit=6", false);
        assert!(e.message.contains("more than once"), "{}", e.message);
    }

    #[test]
    fn unknown_parameters_are_named() {
        assert_eq!(refused("foo=1"), (400, Some("foo".into())));
        assert_eq!(refused("limit=5&Limit=5"), (400, Some("Limit".into())));
        assert_eq!(refused("=5"), (400, Some("".into())));
        assert_eq!(refused("pa%74h2=/"), (400, Some("path2".into())));
        let long = "x".repeat(500);
        let e = err(&format!("{long}=1"), false);
        assert_eq!(e.parameter.as_deref().map(str::len), Some(MAX_ECHOED_NAME));
        assert!(e.message.contains("limit, cursor"), "{}", e.message);
        assert!(!e.message.contains("consumer"));
        assert!(err("x=1", true).message.contains("consumer"));
    }

    #[test]
    fn consumer_needs_admin() {
        let e = err("consumer=abc", false);
        assert_eq!(e.status, StatusCode::FORBIDDEN);
        assert_eq!(e.parameter.as_deref(), Some("consumer"));
        assert_eq!(e.message, "the consumer parameter needs admin access");
        assert_eq!(err("consumer=", false).status, StatusCode::FORBIDDEN);

        let p = parse(Some("consumer=ab%20c"), Caller::Admin).unwrap().query;
        assert_eq!(p.consumer, ConsumerScope::Consumer("ab c".into()));
        assert_eq!(
            err("consumer=a&consumer=b", true).parameter.as_deref(),
            Some("consumer")
        );
    }

    #[test]
    fn invalid_utf8_is_refused_not_replaced() {
        assert_eq!(refused("path=/%FF"), (400, Some("path".into())));
        assert_eq!(refused("cursor=%C3%28"), (400, Some("cursor".into())));
        assert_eq!(refused("%FF=1"), (400, None));
        // A real U+FFFD, sent percent-encoded, is kept.
        assert_eq!(
            ok("path=/%EF%BF%BD").path,
            Some(PathFilter::Exact("/\u{FFFD}".into()))
        );
    }

    #[test]
    fn route_and_outcome_filter_the_list() {
        let p = ok("route=/items/%7Bid%7D&outcome=client_gone");
        assert_eq!(p.route.as_deref(), Some("/items/{id}"));
        assert_eq!(p.outcome, Some(Outcome::ClientGone));
        for name in ["complete", "cancelled", "error"] {
            assert!(ok(&format!("outcome={name}")).outcome.is_some());
        }
        assert_eq!(refused("outcome=done"), (400, Some("outcome".into())));
        assert_eq!(refused("outcome=Complete"), (400, Some("outcome".into())));
        assert_eq!(refused("route="), (400, Some("route".into())));
        // The summary's own parameters are unknown to the list.
        assert_eq!(refused("interval=day"), (400, Some("interval".into())));
        assert_eq!(refused("groupBy=route"), (400, Some("groupBy".into())));
    }

    const NOW: OffsetDateTime = time::macros::datetime!(2026-11-29 12:34:56.789 UTC);

    fn summary(q: &str, caller: Caller) -> Result<SummaryQuery, ParamError> {
        parse_summary(Some(q), caller, NOW)
    }

    fn summary_refused(q: &str) -> (u16, Option<String>) {
        match summary(q, me()) {
            Ok(s) => panic!("{q:?} accepted: {s:?}"),
            Err(e) => (e.status.as_u16(), e.parameter.map(Cow::into_owned)),
        }
    }

    #[test]
    fn the_summary_defaults_to_the_last_day_by_day() {
        let s = parse_summary(None, me(), NOW).unwrap();
        // The end is exclusive: the millisecond after now, so that a record
        // made in the current millisecond is in the range.
        let end = NOW + time::Duration::milliseconds(1);
        assert_eq!(s.until, end);
        assert_eq!(s.since, end - time::Duration::hours(24));
        let later = NOW + time::Duration::microseconds(400);
        let s = parse_summary(None, me(), later).unwrap();
        assert_eq!(s.until, end, "now is truncated to its millisecond first");
        assert_eq!(s.interval, Interval::Day);
        assert!(s.group_by.is_empty());
        assert_eq!(s.consumer, ConsumerScope::Consumer("me".into()));
        let until = time::macros::datetime!(2026-11-01 00:00 UTC);
        let s = summary("until=2026-11-01T00:00:00Z", me()).unwrap();
        assert_eq!(
            (s.since, s.until),
            (until - time::Duration::hours(24), until)
        );
    }

    #[test]
    fn every_summary_parameter_parses() {
        let s = summary(
            "since=2026-11-28T00:00:00Z&until=2026-11-29T00:00:00Z&interval=hour\
             &groupBy=status,route&method=get&path=/a*&status=2xx&route=/a/{id}&outcome=error",
            me(),
        )
        .unwrap();
        assert_eq!(s.interval, Interval::Hour);
        assert_eq!(
            s.group_by.keys().collect::<Vec<_>>(),
            [GroupKey::Route, GroupKey::Status]
        );
        assert_eq!(s.method.as_deref(), Some("GET"));
        assert_eq!(s.path, Some(PathFilter::Prefix("/a".into())));
        assert_eq!(s.status, Some(StatusFilter::Class(2)));
        assert_eq!(s.route.as_deref(), Some("/a/{id}"));
        assert_eq!(s.outcome, Some(Outcome::Error));
        for i in ["minute", "hour", "day", "month"] {
            assert_eq!(
                summary(&format!("interval={i}"), me())
                    .unwrap()
                    .interval
                    .as_str(),
                i
            );
        }
        let admin = summary("groupBy=consumer&consumer=x", Caller::Admin).unwrap();
        assert!(admin.group_by.contains(GroupKey::Consumer));
        assert_eq!(admin.consumer, ConsumerScope::Consumer("x".into()));
    }

    #[test]
    fn bad_summary_parameters_name_themselves() {
        let cases: &[(&str, u16, &str)] = &[
            ("interval=week", 400, "interval"),
            ("interval=Hour", 400, "interval"),
            ("interval=", 400, "interval"),
            ("groupBy=colour", 400, "groupBy"),
            ("groupBy=route,route", 400, "groupBy"),
            ("groupBy=route,", 400, "groupBy"),
            ("groupBy=consumer", 403, "groupBy"),
            ("consumer=x", 403, "consumer"),
            ("limit=5", 400, "limit"),
            ("cursor=abc", 400, "cursor"),
            ("order=desc", 400, "order"),
            ("since=yesterday", 400, "since"),
            ("since=2026-11-30T00:00:00Z", 400, "since"),
            (
                "since=2026-11-29T00:00:00Z&until=2026-11-28T00:00:00Z",
                400,
                "since",
            ),
            ("outcome=ok", 400, "outcome"),
            ("status=6xx", 400, "status"),
            // A week by minute is 10,080 buckets.
            (
                "since=2026-11-20T00:00:00Z&until=2026-11-27T00:00:00Z&interval=minute",
                400,
                "interval",
            ),
            // The default range by minute is fine, 24 hours by minute too.
            (
                "interval=minute&since=2026-11-20T00:00:00Z&interval=hour",
                400,
                "interval",
            ),
        ];
        for (q, status, name) in cases {
            assert_eq!(
                summary_refused(q),
                (*status, Some((*name).to_owned())),
                "{q}"
            );
        }
        assert!(summary("interval=minute", me()).is_ok());
        let e = summary("since=2020-01-01T00:00:00Z&interval=minute", me()).unwrap_err();
        assert!(e.message.contains("10000"), "{}", e.message);
    }

    #[test]
    fn endpoints_without_parameters_refuse_any() {
        assert_eq!(none(None), Ok(()));
        assert_eq!(none(Some("")), Ok(()));
        assert_eq!(none(Some("&&")), Ok(()));
        for (q, name) in [("limit=5", "limit"), ("x", "x"), ("&a%20b=1", "a b")] {
            let e = none(Some(q)).unwrap_err();
            assert_eq!(e.status, StatusCode::BAD_REQUEST);
            assert_eq!(e.parameter.as_deref(), Some(name), "{q}");
            assert!(e.message.contains("takes no parameters"), "{}", e.message);
        }
    }

    #[test]
    fn export_parameters() {
        let list = |q: &str| parse(Some(q), me()).unwrap_or_else(|e| panic!("{q:?}: {e:?}"));
        let r = list("format=ndjson&status=4xx");
        assert_eq!(r.answer.format, Some(Format::Ndjson));
        assert_eq!(r.query.limit, EXPORT_PAGE);
        assert_eq!(r.query.status, Some(StatusFilter::Class(4)));
        let r = list("format=csv&bodies=true&order=desc");
        assert_eq!(
            r.answer,
            Answer {
                format: Some(Format::Csv),
                bodies: true
            }
        );
        assert_eq!(r.query.order, Order::Desc);
        assert!(!list("format=csv&bodies=false").answer.bodies);
        assert_eq!(list("").answer, Answer::default());
        assert_eq!(list("").query.limit, DEFAULT_LIMIT);

        for (q, name) in [
            ("format=json", "format"),
            ("format=CSV", "format"),
            ("format=csv&bodies=yes", "bodies"),
            ("bodies=true", "bodies"),
            ("format=ndjson&bodies=true", "bodies"),
            ("format=ndjson&limit=10", "limit"),
            ("cursor=abc&format=csv", "cursor"),
            ("format=csv&format=csv", "format"),
        ] {
            assert_eq!(refused(q), (400, Some(name.to_owned())), "{q}");
        }
        assert!(err("format=csv&limit=5", false)
            .message
            .contains("does not apply to an export"));
    }

    #[test]
    fn decode_borrows_when_it_can() {
        assert!(matches!(decode("plain"), Some(Cow::Borrowed("plain"))));
        assert_eq!(decode("a+b%2Bc").as_deref(), Some("a b+c"));
        assert_eq!(decode("%zz").as_deref(), Some("%zz"));
        assert_eq!(decode("%E2%82%AC").as_deref(), Some("€"));
    }
}

//! The `GET /usage` query string, straight into a [`UsageQuery`]: parsing and
//! validation, before the sink is touched.
//!
//! Every parameter is one entry of [`PARAMS`]: its name, whether only an admin
//! may give it, and how its value is checked and set. The name lookup, the
//! duplicate check and the "the parameters are ..." message all come from there.

use std::borrow::Cow;

use http::StatusCode;
use time::OffsetDateTime;

use crate::record::parse_timestamp;
use crate::sink::{ConsumerScope, Order, PathFilter, StatusFilter, UsageQuery, MAX_LIMIT};

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

/// One query parameter of `GET /usage`.
struct Param {
    name: &'static str,
    /// Only an admin may give it; anyone else is answered `403`.
    admin_only: bool,
    /// Checks a decoded, non-empty value and sets it.
    set: Set,
}

/// Where a parameter's value goes.
#[derive(Clone, Copy)]
enum Set {
    /// A filter or paging field of the sink query.
    Query(Setter),
    /// How the list is answered (an export), not asked of the sink.
    Answer(AnswerSetter),
}

type Setter = fn(&mut UsageQuery, Cow<'_, str>) -> Result<(), Must>;
type AnswerSetter = fn(&mut Answer, Cow<'_, str>) -> Result<(), Must>;

impl Param {
    /// A parameter anyone may give.
    const fn anyone(name: &'static str, set: Setter) -> Self {
        Self {
            name,
            admin_only: false,
            set: Set::Query(set),
        }
    }

    /// A parameter only an admin may give.
    const fn admin_only(name: &'static str, set: Setter) -> Self {
        Self {
            name,
            admin_only: true,
            set: Set::Query(set),
        }
    }

    /// A parameter about the answer's form, which anyone may give.
    const fn answer(name: &'static str, set: AnswerSetter) -> Self {
        Self {
            name,
            admin_only: false,
            set: Set::Answer(set),
        }
    }
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

/// The parameters, in the order the docs list them: the one place their names
/// are written.
const PARAMS: &[Param] = &[
    Param::anyone("limit", |q, v| put(&mut q.limit, page_size(&v))),
    Param::anyone("cursor", |q, v| {
        put(&mut q.cursor, Ok(Some(v.into_owned())))
    }),
    Param::anyone("since", |q, v| put(&mut q.since, timestamp(&v).map(Some))),
    Param::anyone("until", |q, v| put(&mut q.until, timestamp(&v).map(Some))),
    Param::anyone("method", |q, v| {
        put(&mut q.method, http_method(&v).map(Some))
    }),
    Param::anyone("path", |q, v| put(&mut q.path, path_filter(&v).map(Some))),
    Param::anyone("status", |q, v| {
        put(&mut q.status, status_filter(&v).map(Some))
    }),
    Param::anyone("order", |q, v| put(&mut q.order, sort_order(&v))),
    Param::admin_only("consumer", |q, v| {
        put(&mut q.consumer, Ok(ConsumerScope::Consumer(v.into_owned())))
    }),
    Param::answer("format", |a, v| {
        put(&mut a.format, export_format(&v).map(Some))
    }),
    Param::answer("bodies", |a, v| put(&mut a.bodies, boolean(&v))),
];

/// The page size an export reads the sink with: the records of one page are
/// the most an export holds in memory at once.
pub(super) const EXPORT_PAGE: usize = 500;

/// The parameter names of the list, in the order of the table in
/// [`UsageService`](super::UsageService)'s docs (the OpenAPI document's test
/// compares them).
#[cfg(test)]
pub(super) fn names() -> impl Iterator<Item = &'static str> {
    PARAMS.iter().map(|p| p.name)
}

// `parse` keeps one bit per parameter to find repeats.
const _: () = assert!(PARAMS.len() <= u32::BITS as usize);

/// Parses and validates a raw (percent-encoded) query string into the list
/// request of `caller`.
///
/// Pairs are checked in the order they appear; the first bad one decides the
/// error. A `since` later than `until`, then the export's rules (no `limit` or
/// `cursor` with `format`, `bodies` only with `format=csv`), are checked last.
pub(super) fn parse(raw: Option<&str>, caller: Caller) -> Result<ListRequest, ParamError> {
    let admin = caller == Caller::Admin;
    let mut query = UsageQuery {
        consumer: match caller {
            Caller::Admin => ConsumerScope::All,
            Caller::Consumer(own) => ConsumerScope::Consumer(own),
        },
        ..UsageQuery::default()
    };
    let mut answer = Answer::default();
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
        let Some((index, param)) = PARAMS.iter().enumerate().find(|(_, p)| p.name == name) else {
            return Err(unknown(&name, admin));
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
        let set = match param.set {
            Set::Query(set) => set(&mut query, value),
            Set::Answer(set) => set(&mut answer, value),
        };
        set.map_err(|must| ParamError::bad(param.name, &must))?;
    }
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

/// `400` for a name not in [`PARAMS`], listing the ones `admin` may give.
fn unknown(name: &str, admin: bool) -> ParamError {
    let shown: String = name.chars().take(MAX_ECHOED_NAME).collect();
    let allowed: Vec<&str> = PARAMS
        .iter()
        .filter(|p| admin || !p.admin_only)
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
            .unwrap_or_else(|e| panic!("{q:?} refused: {e:?}"))
            .query
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
            "limit", "cursor", "since", "until", "method", "path", "status", "order", "format",
            "bodies",
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
    fn decode_borrows_when_it_can() {
        assert!(matches!(decode("plain"), Some(Cow::Borrowed("plain"))));
        assert_eq!(decode("a+b%2Bc").as_deref(), Some("a b+c"));
        assert_eq!(decode("%zz").as_deref(), Some("%zz"));
        assert_eq!(decode("%E2%82%AC").as_deref(), Some("€"));
    }
}

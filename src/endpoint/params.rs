//! The `GET /usage` query string: parsing and validation, before the sink is touched.

use std::borrow::Cow;

use http::StatusCode;
use time::OffsetDateTime;

use crate::record::parse_timestamp;
use crate::sink::{Order, PathFilter, StatusFilter, DEFAULT_LIMIT, MAX_LIMIT};

/// The longest parameter name echoed back in an "unknown parameter" error.
const MAX_ECHOED_NAME: usize = 64;

/// The validated query parameters of one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Params {
    pub(super) limit: usize,
    pub(super) cursor: Option<String>,
    pub(super) since: Option<OffsetDateTime>,
    pub(super) until: Option<OffsetDateTime>,
    pub(super) method: Option<String>,
    pub(super) path: Option<PathFilter>,
    pub(super) status: Option<StatusFilter>,
    pub(super) order: Order,
    /// `consumer=<id>`, only ever set for admin requests.
    pub(super) consumer: Option<String>,
}

impl Default for Params {
    fn default() -> Self {
        Self {
            limit: DEFAULT_LIMIT,
            cursor: None,
            since: None,
            until: None,
            method: None,
            path: None,
            status: None,
            order: Order::Asc,
            consumer: None,
        }
    }
}

/// Why a query string was refused: `400` (or `403` for `consumer` without admin
/// access), with the offending parameter's name when there is one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct ParamError {
    pub(super) status: StatusCode,
    pub(super) parameter: Option<Cow<'static, str>>,
    pub(super) message: Cow<'static, str>,
}

impl ParamError {
    fn bad(parameter: &'static str, message: impl Into<Cow<'static, str>>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            parameter: Some(Cow::Borrowed(parameter)),
            message: message.into(),
        }
    }
}

/// The parameters `GET /usage` knows, in the order the docs list them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Key {
    Limit,
    Cursor,
    Since,
    Until,
    Method,
    Path,
    Status,
    Order,
    Consumer,
}

impl Key {
    fn from_name(name: &str) -> Option<Self> {
        Some(match name {
            "limit" => Self::Limit,
            "cursor" => Self::Cursor,
            "since" => Self::Since,
            "until" => Self::Until,
            "method" => Self::Method,
            "path" => Self::Path,
            "status" => Self::Status,
            "order" => Self::Order,
            "consumer" => Self::Consumer,
            _ => return None,
        })
    }

    fn name(self) -> &'static str {
        match self {
            Self::Limit => "limit",
            Self::Cursor => "cursor",
            Self::Since => "since",
            Self::Until => "until",
            Self::Method => "method",
            Self::Path => "path",
            Self::Status => "status",
            Self::Order => "order",
            Self::Consumer => "consumer",
        }
    }

    fn bit(self) -> u16 {
        1 << (self as u16)
    }
}

/// Parses and validates a raw (percent-encoded) query string.
///
/// Pairs are checked in the order they appear; the first bad one decides the
/// error. `admin` says whether `consumer` is allowed.
pub(super) fn parse(raw: Option<&str>, admin: bool) -> Result<Params, ParamError> {
    let mut params = Params::default();
    let mut seen: u16 = 0;
    for pair in raw.unwrap_or("").split('&') {
        if pair.is_empty() {
            continue;
        }
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
        let Some(key) = Key::from_name(&name) else {
            return Err(unknown(&name, admin));
        };
        if key == Key::Consumer && !admin {
            return Err(ParamError {
                status: StatusCode::FORBIDDEN,
                parameter: Some(Cow::Borrowed("consumer")),
                message: Cow::Borrowed("the consumer parameter needs admin access"),
            });
        }
        if seen & key.bit() != 0 {
            return Err(ParamError::bad(
                key.name(),
                format!("`{}` is given more than once", key.name()),
            ));
        }
        seen |= key.bit();
        let Some(value) = decode(raw_value) else {
            return Err(ParamError::bad(
                key.name(),
                format!("`{}` is not valid UTF-8 after percent-decoding", key.name()),
            ));
        };
        if value.is_empty() {
            return Err(ParamError::bad(
                key.name(),
                format!("`{}` is empty; leave it out instead", key.name()),
            ));
        }
        apply(&mut params, key, value)?;
    }
    if let (Some(since), Some(until)) = (params.since, params.until) {
        if since > until {
            return Err(ParamError::bad("since", "`since` is later than `until`"));
        }
    }
    Ok(params)
}

fn apply(params: &mut Params, key: Key, value: Cow<'_, str>) -> Result<(), ParamError> {
    match key {
        Key::Limit => params.limit = parse_limit(&value)?,
        Key::Cursor => params.cursor = Some(value.into_owned()),
        Key::Since => params.since = Some(parse_time("since", &value)?),
        Key::Until => params.until = Some(parse_time("until", &value)?),
        Key::Method => {
            if http::Method::from_bytes(value.as_bytes()).is_err() {
                return Err(ParamError::bad(
                    "method",
                    "`method` must be an HTTP method, such as GET or POST",
                ));
            }
            params.method = Some(value.to_ascii_uppercase());
        }
        Key::Path => {
            if !value.starts_with('/') {
                return Err(ParamError::bad(
                    "path",
                    "`path` must start with `/`; a trailing `*` makes it a prefix, as in /rest/*",
                ));
            }
            params.path = Some(PathFilter::parse(&value));
        }
        Key::Status => {
            params.status = Some(StatusFilter::parse(&value).ok_or_else(|| {
                ParamError::bad(
                    "status",
                    "`status` must be a status code (100..=599, such as 404) or a class (1xx..5xx)",
                )
            })?);
        }
        Key::Order => {
            params.order = match &*value {
                "asc" => Order::Asc,
                "desc" => Order::Desc,
                _ => return Err(ParamError::bad("order", "`order` must be `asc` or `desc`")),
            };
        }
        Key::Consumer => params.consumer = Some(value.into_owned()),
    }
    Ok(())
}

fn parse_limit(value: &str) -> Result<usize, ParamError> {
    let err = || {
        ParamError::bad(
            "limit",
            format!("`limit` must be an integer from 1 to {MAX_LIMIT}"),
        )
    };
    if !value.bytes().all(|b| b.is_ascii_digit()) {
        return Err(err());
    }
    let n: usize = value.parse().map_err(|_| err())?;
    if (1..=MAX_LIMIT).contains(&n) {
        Ok(n)
    } else {
        Err(err())
    }
}

fn parse_time(name: &'static str, value: &str) -> Result<OffsetDateTime, ParamError> {
    parse_timestamp(value).map_err(|_| {
        ParamError::bad(
            name,
            format!("`{name}` must be an RFC 3339 timestamp, such as 2023-01-11T08:07:39.839Z"),
        )
    })
}

fn unknown(name: &str, admin: bool) -> ParamError {
    let shown: String = name.chars().take(MAX_ECHOED_NAME).collect();
    let allowed = if admin {
        "limit, cursor, since, until, method, path, status, order, consumer"
    } else {
        "limit, cursor, since, until, method, path, status, order"
    };
    ParamError {
        status: StatusCode::BAD_REQUEST,
        message: Cow::Owned(format!(
            "unknown parameter `{shown}`; the parameters are {allowed}"
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

    fn ok(q: &str) -> Params {
        parse(Some(q), false).unwrap_or_else(|e| panic!("{q:?} refused: {e:?}"))
    }

    fn err(q: &str, admin: bool) -> ParamError {
        match parse(Some(q), admin) {
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
        assert_eq!(parse(None, false).unwrap(), Params::default());
        assert_eq!(ok(""), Params::default());
        assert_eq!(ok("&&"), Params::default());
        assert_eq!(Params::default().limit, DEFAULT_LIMIT);
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
        assert_eq!(p.consumer, None);

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

        let p = parse(Some("consumer=ab%20c"), true).unwrap();
        assert_eq!(p.consumer.as_deref(), Some("ab c"));
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
    fn decode_borrows_when_it_can() {
        assert!(matches!(decode("plain"), Some(Cow::Borrowed("plain"))));
        assert_eq!(decode("a+b%2Bc").as_deref(), Some("a b+c"));
        assert_eq!(decode("%zz").as_deref(), Some("%zz"));
        assert_eq!(decode("%E2%82%AC").as_deref(), Some("€"));
    }
}

//! The query-string tests: every parameter, every refusal.

use super::values::decode;
use super::*;
use crate::sink::DEFAULT_LIMIT;
use crate::sink::{Order, PathFilter, StatusFilter};
use crate::Outcome;

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

#[test]
fn an_offset_whose_plus_became_a_space_is_named_with_the_fix() {
    // `since=2023-01-11T10:00:00+02:00` typed as is: the `+` is a space.
    for q in [
        "since=2023-01-11T10:00:00+02:00",
        "until=2023-01-11T10:00:00.5+05:30",
    ] {
        let e = err(q, false);
        assert_eq!(e.status.as_u16(), 400, "{q}");
        assert!(e.message.contains("%2B"), "{q}: {}", e.message);
    }
    // The same time with the `+` written as `%2B`, or in UTC, is taken.
    assert_eq!(
        ok("since=2023-01-11T10:00:00%2B02:00").since,
        ok("since=2023-01-11T08:00:00Z").since
    );
    // A space that no `+` explains keeps the plain message.
    let e = err("since=2023-01-11 oops", false);
    assert!(!e.message.contains("%2B"), "{}", e.message);
}

//! The usage page: `GET M` from a browser answers an HTML page that shows the
//! caller's usage (summary, chart, per-route table, history, one record),
//! read from the same endpoint with the caller's bearer token.
//!
//! Everything is embedded in the crate (`page.html`, `page.js`, `page.css`,
//! hand-written, no framework, nothing fetched at build or run time) and
//! served by [`UsageService`](super::UsageService) itself, behind the cargo
//! feature `page` (on by default):
//!
//! | request | answer |
//! |---|---|
//! | `GET M` (or `M/`) whose `Accept` prefers `text/html` over `application/json` | the page (`text/html`, `Cache-Control: no-cache`) |
//! | `GET M/page.js`, `GET M/page.css` | the page's script and style, with an `ETag` (`304` on `If-None-Match`) and `Cache-Control: public, max-age=300, must-revalidate` |
//!
//! `GET M` with no `Accept`, `*/*`, `application/json`, or any `Accept`
//! that does not name `text/html` with a higher quality than JSON answers
//! JSON exactly as without the page. Everything is gzipped for a client that
//! accepts it. The page and its files need no token (they hold no data);
//! every response carries a strict `Content-Security-Policy` (only the
//! page's own script and style, requests to its own origin only, no framing),
//! `X-Content-Type-Options: nosniff` and `Referrer-Policy: no-referrer`.
//!
//! The page needs to know its files' paths below `M`, so it is served only
//! where the service knows its mount point: nested with axum's
//! `Router::nest_service(M, ..)`, or given
//! [`mount_point`](super::UsageService::mount_point). Mounted any other way,
//! `GET M` stays JSON. The page refers to its files relative to its own URL,
//! so it also works behind a proxy that strips a prefix.
//!
//! # Who is reading
//!
//! The page reads `M` in one of two ways:
//!
//! - **A bearer token**, the default. The page asks for it, keeps it in the
//!   tab's `sessionStorage` (gone when the tab closes; never in
//!   `localStorage`, never in a URL) and sends it only in the
//!   `Authorization` header of its requests to `M`.
//! - **The app's own session cookie**, when the service's
//!   [`IdentifyConsumer`](crate::IdentifyConsumer) reads one (give
//!   [`identify_consumer`](super::UsageService::identify_consumer) a
//!   derivation that maps the session cookie to the consumer id). On load,
//!   with no token in the tab, the page tries its first view without
//!   `Authorization`; when that answers `200` it shows the data and never
//!   asks for a token nor sends one. A `401` shows the token form.
//!
//! Either way the page shows what `GET M` shows the caller: a consumer its
//! own records, an [admin](super::UsageService::admin) everyone's, with a
//! consumer picker (the page asks for the summary by consumer once per
//! token, after the first view; `200` means an admin, `403` not).
//!
//! Every request the page makes is a `GET` (the page, its files, the list,
//! the summary, one record, an export): there is no state-changing request,
//! so in cookie mode there is nothing for a cross-site request forgery to
//! exploit, and `M` needs no CSRF token. `M` sends no CORS headers, so a
//! script on another origin that makes the browser send the cookie cannot
//! read the answer; keep it so (do not wrap `M` in a permissive CORS layer
//! when its consumers are identified by cookie). The page's
//! `Content-Security-Policy` holds in both modes: `connect-src 'self'` (the
//! script talks to its own origin only, so neither the token nor the data can
//! be sent elsewhere) and `frame-ancestors 'none'` (no other site can frame
//! the page to overlay or click it).
//!
//! The first view makes three reads: the summary of this period and the
//! previous one by time and status class (the requests chart, the latency
//! chart and the comparison), the summary by route (the table and the
//! headline numbers), and the first page of the list. The page runs at most
//! two reads at once, the default
//! [`max_reads_per_consumer`](super::UsageService::max_reads_per_consumer),
//! and tries a `429` again after its `Retry-After`.

mod assets;
mod headers;
mod negotiate;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Method, Request, Response};

use super::target::Target;
use super::UsageBody;

/// The page's answer to `req`, or `None` when the request is for the JSON
/// endpoint (anything but a `GET`/`HEAD` of `M` from a browser or of one of
/// the page's files, or a service that does not know its mount point).
pub(super) fn answer<B>(
    req: &Request<B>,
    mount_point: Option<&str>,
) -> Option<Response<UsageBody>> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return None;
    }
    let (target, mount) = Target::of(req, mount_point);
    mount?;
    match target {
        Target::List if negotiate::prefers_html(req.headers()) => Some(html(req)),
        Target::Record(name) => assets::find(name).map(|asset| asset.response(req.headers())),
        _ => None,
    }
}

/// The page, its files referred to relative to the URL the browser asked for.
fn html<B>(req: &Request<B>) -> Response<UsageBody> {
    let page = assets::HTML.replace("{{base}}", &escape(&base(req)));
    let gzipped = negotiate::accepts_gzip(req.headers());
    let body = if gzipped {
        Bytes::from(assets::gzip(page.as_bytes()))
    } else {
        Bytes::from(page)
    };
    let mut res = Response::new(UsageBody::new(body));
    let headers = res.headers_mut();
    headers::secure(headers);
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    if gzipped {
        headers.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
    }
    res
}

/// The prefix that makes `page.js` relative to the page's URL point at
/// `M/page.js`: nothing when the URL ends in `/` (`M/`), else its last
/// segment and a `/` (`usage/` for `/v1/usage`).
fn base<B>(req: &Request<B>) -> String {
    #[cfg(feature = "axum")]
    let path = req
        .extensions()
        .get::<axum::extract::OriginalUri>()
        .map_or(req.uri().path(), |original| original.path());
    #[cfg(not(feature = "axum"))]
    let path = req.uri().path();
    if path.ends_with('/') {
        return String::new();
    }
    let last = path.rsplit('/').next().unwrap_or("");
    format!("{last}/")
}

/// `s` safe inside a double-quoted HTML attribute.
fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(path: &str) -> Request<()> {
        Request::get(path).body(()).unwrap()
    }

    #[test]
    fn assets_are_relative_to_the_url_the_browser_sees() {
        assert_eq!(base(&get("/v1/usage")), "usage/");
        assert_eq!(base(&get("/v1/usage/")), "");
        assert_eq!(base(&get("/usage")), "usage/");
        assert_eq!(escape("a\"<b>&'"), "a&quot;&lt;b&gt;&amp;&#39;");
    }

    #[test]
    fn nothing_without_a_mount_point_or_for_other_methods() {
        let mut req = get("/v1/usage");
        req.headers_mut()
            .insert(header::ACCEPT, HeaderValue::from_static("text/html"));
        assert!(answer(&req, None).is_none());
        assert!(answer(&req, Some("/v1/usage")).is_some());
        *req.method_mut() = Method::POST;
        assert!(answer(&req, Some("/v1/usage")).is_none());
        assert!(answer(&get("/v1/usage/page.js"), Some("/v1/usage")).is_some());
        assert!(answer(&get("/v1/usage/page.jsx"), Some("/v1/usage")).is_none());
        assert!(answer(&get("/v1/usage/01ABC"), Some("/v1/usage")).is_none());
    }
}

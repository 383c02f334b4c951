//! The usage page over plain HTTP (no browser): `GET M` answers HTML to a
//! browser and JSON to everyone else, the page's files come with an `ETag`
//! (`304` when the client has them) and gzipped when accepted, and every page
//! response carries the security headers. Against the quickstart app on
//! 127.0.0.1 (the page under `nest_service("/v1/usage", ..)`) and the
//! service on other mount points.
#![cfg(feature = "page")]

mod common;

#[allow(dead_code)] // the example's command line and demo are not used here
#[path = "../examples/common/app.rs"]
mod app;

use std::io::Read as _;
use std::net::SocketAddr;

use axum::Router;
use common::*;
use http::{header, HeaderMap, Method, Request, StatusCode};
use serde_json::Value;
use tower_usage::{MemorySink, UsageService};

const TOKEN: &str = "IncYP3edd3blm2ypLGFFOYwQsC5vff3n";
/// What Chromium sends when it navigates to a page.
const BROWSER_ACCEPT: &str = "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,image/apng,*/*;q=0.8,application/signed-exchange;v=b3;q=0.7";
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'; form-action 'none'";

const PAGE_JS: &[u8] = include_bytes!("../src/endpoint/page/page.js");
const PAGE_CSS: &[u8] = include_bytes!("../src/endpoint/page/page.css");
const PAGE_HTML: &str = include_str!("../src/endpoint/page/page.html");

async fn quickstart() -> SocketAddr {
    let (router, _handle) = app::app(MemorySink::new());
    serve(router).await
}

async fn get(
    addr: SocketAddr,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
) -> (StatusCode, HeaderMap, bytes::Bytes) {
    let mut req = Request::builder()
        .method(method)
        .uri(format!("http://{addr}{path}"));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    send(req.body(full("")).unwrap()).await
}

fn gunzip(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(bytes)
        .read_to_end(&mut out)
        .unwrap();
    out
}

fn assert_secure(headers: &HeaderMap, what: &str) {
    assert_eq!(headers[header::CONTENT_SECURITY_POLICY], CSP, "{what}");
    assert_eq!(headers[header::X_CONTENT_TYPE_OPTIONS], "nosniff", "{what}");
    assert_eq!(headers[header::REFERRER_POLICY], "no-referrer", "{what}");
    assert_eq!(headers[header::X_FRAME_OPTIONS], "DENY", "{what}");
}

#[tokio::test]
async fn a_browser_gets_the_page_api_clients_keep_json() {
    let addr = quickstart().await;
    let auth = format!("Bearer {TOKEN}");

    // A browser navigating to M, with or without a trailing slash: the page,
    // no token needed, its files referred to relative to the URL.
    for (path, base) in [("/v1/usage", "usage/"), ("/v1/usage/", "")] {
        let (status, headers, body) =
            get(addr, Method::GET, path, &[("accept", BROWSER_ACCEPT)]).await;
        assert_eq!(status, StatusCode::OK, "{path}");
        assert_eq!(headers[header::CONTENT_TYPE], "text/html; charset=utf-8");
        assert_eq!(headers[header::CACHE_CONTROL], "no-cache");
        assert_eq!(headers[header::VARY], "Accept, Accept-Encoding");
        assert_secure(&headers, path);
        let html = std::str::from_utf8(&body).unwrap();
        assert!(html.starts_with("<!doctype html>"), "{html}");
        assert!(
            html.contains(&format!(r#"<script src="{base}page.js" defer></script>"#)),
            "{path}: {html}"
        );
        assert!(
            html.contains(&format!(r#"href="{base}page.css""#)),
            "{html}"
        );
        assert!(!html.contains("{{base}}"));
        // No inline script or style for the policy to refuse.
        assert_eq!(html.matches("<script").count(), 1);
        assert!(!html.contains("<style") && !html.contains("style="));
        let handlers = html.split(" on").skip(1).filter(|rest| {
            let name: String = rest.chars().take_while(char::is_ascii_alphabetic).collect();
            !name.is_empty() && rest[name.len()..].starts_with('=')
        });
        assert_eq!(handlers.count(), 0, "no inline event handler");
    }

    // API clients: JSON exactly as before, for every Accept that does not
    // prefer HTML, with and without a token.
    for accept in [
        None,
        Some("*/*"),
        Some("application/json"),
        Some("application/json, text/html"),
        Some("text/*"),
    ] {
        let mut headers = vec![];
        if let Some(accept) = accept {
            headers.push(("accept", accept));
        }
        let (status, res, body) = get(addr, Method::GET, "/v1/usage", &headers).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{accept:?}");
        assert_eq!(res[header::CONTENT_TYPE], "application/json", "{accept:?}");
        assert!(res.get(header::CONTENT_SECURITY_POLICY).is_none());
        let json: Value = serde_json::from_slice(&body).unwrap();
        assert!(json["error"].is_string());

        headers.push(("authorization", &auth));
        let (status, res, body) = get(addr, Method::GET, "/v1/usage", &headers).await;
        assert_eq!(status, StatusCode::OK, "{accept:?}");
        assert_eq!(res[header::CONTENT_TYPE], "application/json");
        assert_eq!(&body[..], br#"{"requests":[],"nextCursor":null}"#);
    }

    // The page takes over `GET M` only: the summary, a record, an export and
    // other methods answer as before, whatever the Accept.
    let browser = [("accept", BROWSER_ACCEPT)];
    let (status, res, _) = get(addr, Method::GET, "/v1/usage/summary", &browser).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(res[header::CONTENT_TYPE], "application/json");
    let (status, res, _) = get(addr, Method::POST, "/v1/usage", &browser).await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(res[header::CONTENT_TYPE], "application/json");
    let (status, _, _) = get(addr, Method::GET, "/v1/usage/01ABC", &browser).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    // HEAD: the page's headers, no body.
    let (status, res, body) = get(addr, Method::HEAD, "/v1/usage", &browser).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(res[header::CONTENT_TYPE], "text/html; charset=utf-8");
    assert!(body.is_empty());

    // Serving the page is not usage: nothing was recorded for it.
    let (_, _, body) = get(addr, Method::GET, "/v1/usage", &[("authorization", &auth)]).await;
    assert_eq!(&body[..], br#"{"requests":[],"nextCursor":null}"#);
}

#[tokio::test]
async fn assets_have_an_etag_a_304_and_gzip() {
    let addr = quickstart().await;
    for (name, bytes, content_type) in [
        ("page.js", PAGE_JS, "text/javascript; charset=utf-8"),
        ("page.css", PAGE_CSS, "text/css; charset=utf-8"),
    ] {
        let path = format!("/v1/usage/{name}");
        // Plain: the file as it is in the crate, no token needed.
        let (status, headers, body) = get(addr, Method::GET, &path, &[]).await;
        assert_eq!(status, StatusCode::OK, "{name}");
        assert_eq!(&body[..], bytes, "{name}");
        assert_eq!(headers[header::CONTENT_TYPE], content_type);
        assert_eq!(
            headers[header::CACHE_CONTROL],
            "public, max-age=300, must-revalidate"
        );
        assert!(headers.get(header::CONTENT_ENCODING).is_none());
        assert_secure(&headers, name);
        let etag = headers[header::ETAG].to_str().unwrap().to_owned();
        assert!(
            etag.starts_with('"') && etag.ends_with('"') && etag.len() > 10,
            "{etag}"
        );

        // The same tag each time; the client that has it gets a 304.
        let (_, again, _) = get(addr, Method::GET, &path, &[]).await;
        assert_eq!(again[header::ETAG], etag.as_str());
        let (status, headers, body) =
            get(addr, Method::GET, &path, &[("if-none-match", &etag)]).await;
        assert_eq!(status, StatusCode::NOT_MODIFIED, "{name}");
        assert!(body.is_empty());
        assert!(headers.get(header::CONTENT_LENGTH).is_none());
        assert_eq!(headers[header::ETAG], etag.as_str());
        let (status, _, _) = get(addr, Method::GET, &path, &[("if-none-match", "\"other\"")]).await;
        assert_eq!(status, StatusCode::OK);

        // Gzipped for a client that takes it, with a tag of its own.
        let gzip = [("accept-encoding", "gzip, deflate, br")];
        let (status, headers, body) = get(addr, Method::GET, &path, &gzip).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(headers[header::CONTENT_ENCODING], "gzip");
        assert_eq!(headers[header::VARY], "Accept, Accept-Encoding");
        assert!(body.len() < bytes.len(), "{name}");
        assert_eq!(gunzip(&body), bytes, "{name}");
        let gz_etag = headers[header::ETAG].to_str().unwrap().to_owned();
        assert_ne!(gz_etag, etag);
        let (status, _, body) = get(
            addr,
            Method::GET,
            &path,
            &[("accept-encoding", "gzip"), ("if-none-match", &gz_etag)],
        )
        .await;
        assert_eq!(status, StatusCode::NOT_MODIFIED);
        assert!(body.is_empty());
        let (_, headers, _) =
            get(addr, Method::GET, &path, &[("accept-encoding", "gzip;q=0")]).await;
        assert!(headers.get(header::CONTENT_ENCODING).is_none());
    }

    // The page itself, gzipped too.
    let (status, headers, body) = get(
        addr,
        Method::GET,
        "/v1/usage",
        &[("accept", BROWSER_ACCEPT), ("accept-encoding", "gzip")],
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers[header::CONTENT_ENCODING], "gzip");
    let html = String::from_utf8(gunzip(&body)).unwrap();
    assert!(html.contains(r#"src="usage/page.js""#));

    // Anything else below M is what it was: a record id (401 without a token).
    let (status, headers, _) = get(addr, Method::GET, "/v1/usage/page.jsx", &[]).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(headers[header::CONTENT_TYPE], "application/json");
}

#[tokio::test]
async fn any_mount_point_and_none_without_one() {
    // Nested deeper, in a nested router.
    let app = Router::new().nest(
        "/api",
        Router::new().nest_service("/team/usage-log", UsageService::new(MemorySink::new())),
    );
    let addr = serve(app).await;
    let (status, _, body) = get(
        addr,
        Method::GET,
        "/api/team/usage-log",
        &[("accept", BROWSER_ACCEPT)],
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert!(std::str::from_utf8(&body)
        .unwrap()
        .contains(r#"src="usage-log/page.js""#));
    let (status, _, body) = get(addr, Method::GET, "/api/team/usage-log/page.js", &[]).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(&body[..], PAGE_JS);

    // A router that hands over the whole path, told the mount point.
    let usage = UsageService::new(MemorySink::new()).mount_point("/v2/usage");
    let app = Router::new()
        .route_service("/v2/usage", usage.clone())
        .route_service("/v2/usage/{*rest}", usage);
    let addr = serve(app).await;
    let (status, _, body) = get(
        addr,
        Method::GET,
        "/v2/usage",
        &[("accept", BROWSER_ACCEPT)],
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert!(std::str::from_utf8(&body)
        .unwrap()
        .contains(r#"src="usage/page.js""#));
    let (status, _, body) = get(addr, Method::GET, "/v2/usage/page.css", &[]).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(&body[..], PAGE_CSS);

    // `route_service` without a mount point: the service cannot serve the
    // page's files, so `GET M` stays JSON.
    let app = Router::new().route_service("/v3/usage", UsageService::new(MemorySink::new()));
    let addr = serve(app).await;
    let (status, headers, _) = get(
        addr,
        Method::GET,
        "/v3/usage",
        &[("accept", BROWSER_ACCEPT)],
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(headers[header::CONTENT_TYPE], "application/json");
}

/// The page's weight, gzipped as it is served: well under the 100 KiB budget.
#[test]
fn the_page_is_small() {
    let gz = |bytes: &[u8]| {
        use std::io::Write as _;
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        e.write_all(bytes).unwrap();
        e.finish().unwrap().len()
    };
    let raw = PAGE_HTML.len() + PAGE_JS.len() + PAGE_CSS.len();
    let packed = gz(PAGE_HTML.as_bytes()) + gz(PAGE_JS) + gz(PAGE_CSS);
    eprintln!("page: {raw} bytes, {packed} bytes gzipped (html + js + css)");
    assert!(packed < 100 * 1024, "{packed}");
}

/// The page's script never turns a string into markup or code: records are
/// set as text (`textContent`), and the policy would refuse `eval` anyway.
#[test]
fn the_script_never_parses_strings_as_html() {
    let js = std::str::from_utf8(PAGE_JS).unwrap();
    for sink in [
        "innerHTML",
        "outerHTML",
        "insertAdjacentHTML",
        "document.write",
        "eval(",
        "new Function",
        "DOMParser",
    ] {
        assert!(!js.contains(sink), "page.js uses {sink}");
    }
    // The token is sent in the Authorization header, and nowhere else.
    assert!(!js.contains("localStorage"));
    assert!(js.contains(r#""Authorization": "Bearer " + currentToken()"#));
}

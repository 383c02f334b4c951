//! Redaction defaults through a real axum Router on 127.0.0.1: secrets under the
//! names real APIs use are caught by pattern, adding a rule keeps the defaults,
//! and URLs in header values lose their secret query parameters.

mod common;

use axum::routing::post;
use axum::Router;
use common::*;
use http::{HeaderName, Request};
use serde_json::Value;
use tower_usage::{UsageLayer, UsageRecord};

const SECRET: &str = "s3cr3t-VALUE";

async fn one_record(
    layer: UsageLayer<CollectSink>,
    sink: &CollectSink,
    req: Request<TestBody>,
) -> (UsageRecord, Value) {
    let handle = layer.handle();
    let app = Router::new()
        .route("/login", post(|_body: bytes::Bytes| async { "ok" }))
        .layer(layer);
    let addr = serve(app).await;
    let (parts, body) = req.into_parts();
    let mut uri = format!("http://{addr}/login");
    if let Some(q) = parts.uri.query() {
        uri = format!("{uri}?{q}");
    }
    let mut req = Request::from_parts(parts, body);
    *req.uri_mut() = uri.parse().unwrap();
    send(req).await;
    handle.flush().await;
    let records = sink.all();
    assert_eq!(records.len(), 1);
    let wire = serde_json::to_value(&records[0]).unwrap();
    (records[0].clone(), wire)
}

/// The secret appears nowhere in the record's wire form, decoded or not.
fn assert_no_secret(wire: &Value) {
    let text = wire.to_string();
    assert!(!text.contains(SECRET), "secret stored: {text}");
}

#[tokio::test]
async fn default_patterns_catch_secret_names_in_query_json_and_form() {
    for name in SECRET_NAMES {
        // Query string.
        let sink = CollectSink::default();
        let req = Request::post(format!("/login?{name}={SECRET}&user=u1"))
            .body(full(""))
            .unwrap();
        let (_, wire) = one_record(UsageLayer::new(sink.clone()), &sink, req).await;
        assert_no_secret(&wire);
        assert_eq!(wire["request"]["query"][*name], "[REDACTED]", "{name}");
        assert_eq!(wire["request"]["query"]["user"], "u1");

        // JSON body, nested.
        let sink = CollectSink::default();
        let body = format!(r#"{{"user":{{"name":"u1","{name}":"{SECRET}"}}}}"#);
        let req = Request::post("/login")
            .header("content-type", "application/json")
            .body(full(body))
            .unwrap();
        let (_, wire) = one_record(UsageLayer::new(sink.clone()), &sink, req).await;
        assert_no_secret(&wire);
        assert_eq!(
            wire["request"]["body"]["user"][*name], "[REDACTED]",
            "{name}"
        );
        assert_eq!(wire["request"]["body"]["user"]["name"], "u1");

        // Form body.
        let sink = CollectSink::default();
        let req = Request::post("/login")
            .header("content-type", "application/x-www-form-urlencoded")
            .body(full(format!("user=u1&{name}={SECRET}")))
            .unwrap();
        let (_, wire) = one_record(UsageLayer::new(sink.clone()), &sink, req).await;
        assert_no_secret(&wire);
    }
}

#[tokio::test]
async fn default_patterns_catch_secret_headers() {
    for name in [
        "authorization",
        "proxy-authorization",
        "cookie",
        "x-api-key",
        "x-auth-token",
        "x-forwarded-authorization",
        "x-session-id",
        "x-client-secret",
    ] {
        let sink = CollectSink::default();
        let req = Request::post("/login")
            .header(name, format!("Bearer {SECRET}"))
            .body(full(""))
            .unwrap();
        let (_, wire) = one_record(UsageLayer::new(sink.clone()), &sink, req).await;
        assert_no_secret(&wire);
        assert_eq!(wire["request"]["headers"][name], "[REDACTED]", "{name}");
    }
}

#[tokio::test]
async fn adding_a_rule_keeps_the_defaults() {
    let sink = CollectSink::default();
    let layer = UsageLayer::new(sink.clone())
        .redact_headers([HeaderName::from_static("x-tenant-signature")])
        .redact_fields(["pin"]);
    let req = Request::post(format!("/login?pin=1234&token={SECRET}"))
        .header("authorization", format!("Bearer {SECRET}"))
        .header("cookie", format!("session={SECRET}"))
        .header("x-tenant-signature", "sig-1")
        .header("x-request-id", "r-1")
        .body(full(""))
        .unwrap();
    let (_, wire) = one_record(layer, &sink, req).await;
    assert_no_secret(&wire);
    let headers = &wire["request"]["headers"];
    assert_eq!(headers["authorization"], "[REDACTED]");
    assert_eq!(headers["cookie"], "[REDACTED]");
    assert_eq!(headers["x-tenant-signature"], "[REDACTED]");
    assert_eq!(headers["x-request-id"], "r-1");
    assert_eq!(wire["request"]["query"]["pin"], "[REDACTED]");
    assert_eq!(wire["request"]["query"]["token"], "[REDACTED]");
}

#[tokio::test]
async fn replacing_the_rules_is_explicit() {
    let sink = CollectSink::default();
    let layer = UsageLayer::new(sink.clone())
        .replace_redacted_headers([HeaderName::from_static("x-only")])
        .replace_redacted_fields(["only"]);
    let req = Request::post("/login?token=visible&only=hidden")
        .header("authorization", "Bearer visible")
        .header("x-only", "hidden")
        .body(full(""))
        .unwrap();
    let (_, wire) = one_record(layer, &sink, req).await;
    let headers = &wire["request"]["headers"];
    assert_eq!(headers["authorization"], "Bearer visible");
    assert_eq!(headers["x-only"], "[REDACTED]");
    assert_eq!(wire["request"]["query"]["token"], "visible");
    assert_eq!(wire["request"]["query"]["only"], "[REDACTED]");
}

#[tokio::test]
async fn secret_query_parameters_in_header_urls_are_masked() {
    let sink = CollectSink::default();
    let req = Request::post("/login")
        .header(
            "referer",
            format!("https://app.example/cb?code=abc&access_token={SECRET}#frag"),
        )
        .header("x-return-to", format!("/next?api_key={SECRET}"))
        .header("x-plain", "a?b")
        .header(
            "location",
            format!("https://app.example/cb#access_token={SECRET}&state=s1"),
        )
        .header(
            "link",
            format!("<https://a.example/?x=1>, <https://b.example/?token={SECRET}>"),
        )
        .header("x-next", format!("/login?next=/cb?token={SECRET}"))
        .body(full(""))
        .unwrap();
    let (_, wire) = one_record(UsageLayer::new(sink.clone()), &sink, req).await;
    assert_no_secret(&wire);
    let headers = &wire["request"]["headers"];
    assert_eq!(
        headers["referer"],
        "https://app.example/cb?code=abc&access_token=%5BREDACTED%5D#frag"
    );
    assert_eq!(headers["x-return-to"], "/next?api_key=%5BREDACTED%5D");
    assert_eq!(headers["x-plain"], "a?b");
    assert_eq!(
        headers["location"],
        "https://app.example/cb#access_token=%5BREDACTED%5D&state=s1"
    );
    assert_eq!(
        headers["link"],
        "<https://a.example/?x=1>, <https://b.example/?token=%5BREDACTED%5D>"
    );
    assert_eq!(headers["x-next"], "/login?next=/cb?token=%5BREDACTED%5D");
}

#[tokio::test]
async fn forms_with_bytes_that_are_not_utf8_are_still_masked() {
    for body in [
        b"user=\xff&password=s3cr3t-VALUE".to_vec(),
        b"city=M\xfcnchen&password=s3cr3t-VALUE".to_vec(),
        b"user[password]=s3cr3t-VALUE&x=1".to_vec(),
        b"password[]=s3cr3t-VALUE".to_vec(),
    ] {
        let sink = CollectSink::default();
        let req = Request::post("/login")
            .header(
                "content-type",
                "application/x-www-form-urlencoded; charset=ISO-8859-1",
            )
            .body(full(body.clone()))
            .unwrap();
        let (record, wire) = one_record(UsageLayer::new(sink.clone()), &sink, req).await;
        assert_no_secret(&wire);
        let stored = &record.request.body.bytes;
        assert!(memchr::memmem::find(stored, SECRET.as_bytes()).is_none());
        assert!(
            memchr::memmem::find(stored, b"%5BREDACTED%5D").is_some(),
            "{:?}",
            String::from_utf8_lossy(stored)
        );
    }
}

#[tokio::test]
async fn a_form_cut_inside_a_character_is_masked_and_rendered_as_text() {
    let mut body = format!("user=u1&password={SECRET}&bio=").into_bytes();
    if body.len() % 2 == 0 {
        body.push(b'x');
    }
    while body.len() < 64 * 1024 + 10 {
        body.extend_from_slice("é".as_bytes());
    }
    // The 64 KiB cut falls inside a two-byte character.
    assert!(std::str::from_utf8(&body[..64 * 1024]).is_err());
    let sink = CollectSink::default();
    let req = Request::post("/login")
        .header("content-type", "application/x-www-form-urlencoded")
        .body(full(body))
        .unwrap();
    let (record, wire) = one_record(UsageLayer::new(sink.clone()), &sink, req).await;
    assert_no_secret(&wire);
    assert!(record.request.body.truncated);
    let rendered = wire["request"]["body"]
        .as_str()
        .expect("rendered as text, not base64");
    assert!(
        rendered.starts_with("user=u1&password=%5BREDACTED%5D&bio="),
        "{rendered}"
    );
    assert!(rendered.ends_with("éé"), "the partial character is dropped");
}

#[tokio::test]
async fn a_json_body_cut_inside_a_character_renders_as_text() {
    let mut body = br#"{"note":""#.to_vec();
    while body.len() < 64 * 1024 + 10 {
        body.extend_from_slice("é".as_bytes());
    }
    let sink = CollectSink::default();
    let req = Request::post("/login")
        .header("content-type", "application/json")
        .body(full(body))
        .unwrap();
    let (_, wire) = one_record(UsageLayer::new(sink.clone()), &sink, req).await;
    let rendered = wire["request"]["body"].as_str().expect("text, not base64");
    // The 64 KiB cut falls inside a two-byte character (9 + 2n bytes).
    assert!(rendered.starts_with(r#"{"note":"éé"#), "{rendered}");
}

#[tokio::test]
async fn a_multipart_password_part_is_masked() {
    let body = format!(
        "--XyZ\r\nContent-Disposition: form-data; name=\"user\"\r\n\r\nu1\r\n\
         --XyZ\r\nContent-Disposition: form-data; name=\"password\"\r\n\r\n{SECRET}\r\n--XyZ--\r\n"
    );
    let sink = CollectSink::default();
    let req = Request::post("/login")
        .header("content-type", "multipart/form-data; boundary=XyZ")
        .body(full(body))
        .unwrap();
    let (_, wire) = one_record(UsageLayer::new(sink.clone()), &sink, req).await;
    assert_no_secret(&wire);
    let rendered = wire["request"]["body"].as_str().unwrap();
    assert!(
        rendered.contains("name=\"user\"\r\n\r\nu1\r\n"),
        "{rendered}"
    );
    assert!(
        rendered.contains("name=\"password\"\r\n\r\n[REDACTED]\r\n"),
        "{rendered}"
    );
}

#[tokio::test]
async fn values_after_secret_keys_are_masked_in_any_other_body() {
    for (content_type, body, kept) in [
        (
            "text/plain",
            format!("password: {SECRET}"),
            "password: [REDACTED]".to_owned(),
        ),
        (
            "application/xml",
            format!("<login><password>{SECRET}</password></login>"),
            "<login><password>[REDACTED]</password></login>".to_owned(),
        ),
        // JSON behind an XSSI guard is not a JSON container.
        (
            "application/json",
            format!(")]}}',\n{{\"password\":\"{SECRET}\"}}"),
            ")]}',\n{\"password\":\"[REDACTED]\"}".to_owned(),
        ),
        // Starts like JSON, is not: TOML, a log line, JavaScript object syntax.
        (
            "text/plain",
            format!("[db]\npassword = \"{SECRET}\"\n"),
            "[db]\npassword = \"[REDACTED]\"\n".to_owned(),
        ),
        (
            "text/plain",
            format!("[INFO] login password={SECRET} ok"),
            "[INFO] login password=[REDACTED] ok".to_owned(),
        ),
        (
            "application/javascript",
            format!("{{password: '{SECRET}'}}"),
            "{password: '[REDACTED]'}".to_owned(),
        ),
        // A JSON key that is not valid UTF-8 or has a bad escape.
        (
            "application/json",
            format!("{{\"pass\\word\":\"{SECRET}\"}}"),
            "{\"pass\\word\":\"[REDACTED]\"}".to_owned(),
        ),
    ] {
        let sink = CollectSink::default();
        let req = Request::post("/login")
            .header("content-type", content_type)
            .body(full(body))
            .unwrap();
        let (record, wire) = one_record(UsageLayer::new(sink.clone()), &sink, req).await;
        assert_no_secret(&wire);
        assert_eq!(
            String::from_utf8_lossy(&record.request.body.bytes),
            kept,
            "{content_type}"
        );
    }
    // Text that names a secret but holds none is kept.
    for text in [
        "hello there",
        "I forgot my password",
        "OAuth 2.0 guide by the author",
    ] {
        let sink = CollectSink::default();
        let req = Request::post("/login")
            .header("content-type", "text/plain")
            .body(full(text))
            .unwrap();
        let (_, wire) = one_record(UsageLayer::new(sink.clone()), &sink, req).await;
        assert_eq!(wire["request"]["body"], text);
    }
}

#[tokio::test]
async fn a_hostile_multipart_header_neither_panics_nor_stops_the_writer() {
    let sink = CollectSink::default();
    let layer = UsageLayer::new(sink.clone());
    let handle = layer.handle();
    let app = Router::new()
        .route("/login", post(|_body: bytes::Bytes| async { "ok" }))
        .layer(layer);
    let addr = serve(app).await;
    let mut hostile =
        b"--XyZ\r\nContent-Dispositio\xff\xff: form-data; name=\"password\"\r\n\r\n".to_vec();
    hostile.extend_from_slice(SECRET.as_bytes());
    hostile.extend_from_slice(b"\r\n--XyZ--\r\n");
    for body in [
        hostile,
        "--XyZ\r\nContent-Dispositionéé: x\r\n\r\nv\r\n--XyZ--".into(),
    ] {
        let req = Request::post(format!("http://{addr}/login"))
            .header("content-type", "multipart/form-data; boundary=XyZ")
            .body(full(body))
            .unwrap();
        send(req).await;
    }
    handle.flush().await;
    assert_eq!(handle.stats().written, 2, "{:?}", handle.stats());
    for record in sink.all() {
        assert_no_secret(&serde_json::to_value(&record).unwrap());
    }
}

#[tokio::test]
async fn json_nested_deeper_than_the_limit_renders_as_text() {
    let deep = format!("{}1{}", "[".repeat(200), "]".repeat(200));
    let ok = format!("{}1{}", "[".repeat(64), "]".repeat(64));
    for (body, as_json) in [(deep, false), (ok, true)] {
        let sink = CollectSink::default();
        let req = Request::post("/login")
            .header("content-type", "application/json")
            .body(full(body.clone()))
            .unwrap();
        let (_, wire) = one_record(UsageLayer::new(sink.clone()), &sink, req).await;
        // The page parses with serde_json's default recursion limit.
        let text = wire.to_string();
        let back: Value = serde_json::from_str(&text).expect("parseable");
        assert_eq!(
            back["request"]["body"].is_string(),
            !as_json,
            "{}",
            body.len()
        );
    }
}

/// Found by trying the quick start as a hostile client would.
#[tokio::test]
async fn what_a_hostile_client_tried_is_masked_too() {
    let cases: Vec<(&str, Vec<u8>)> = vec![
        // JSON sent with a form's label.
        (
            "application/x-www-form-urlencoded; charset=UTF-8",
            format!(r#"{{"user":{{"password":"{SECRET}"}}}}"#).into_bytes(),
        ),
        // A credential written as text, scheme first.
        ("text/plain", format!("Authorization: Bearer {SECRET}").into_bytes()),
        // JSON escaped inside a log line, XML namespaces and CDATA, Ruby, YAML.
        ("text/plain", format!(r#"log {{\"password\":\"{SECRET}\"}}"#).into_bytes()),
        ("application/xml", format!("<x:password>{SECRET}</x:password>").into_bytes()),
        (
            "application/xml",
            format!("<password><![CDATA[{SECRET}]]></password>").into_bytes(),
        ),
        ("text/plain", format!(":password => \"{SECRET}\"").into_bytes()),
        ("text/plain", format!("password:\n{SECRET}").into_bytes()),
        // Multipart: a boundary that does not match, an RFC 5987 name, two
        // Content-Disposition lines.
        (
            "multipart/form-data; boundary=WRONG",
            format!("--XyZ\r\nContent-Disposition: form-data; name=\"password\"\r\n\r\n{SECRET}\r\n--XyZ--\r\n").into_bytes(),
        ),
        (
            "multipart/form-data; boundary=XyZ",
            format!("--XyZ\r\nContent-Disposition: form-data; name*=UTF-8''password\r\n\r\n{SECRET}\r\n--XyZ--\r\n").into_bytes(),
        ),
        (
            "multipart/form-data; boundary=XyZ",
            format!("--XyZ\r\nContent-Disposition: form-data; name=\"a\"\r\nContent-Disposition: form-data; name=\"password\"\r\n\r\n{SECRET}\r\n--XyZ--\r\n").into_bytes(),
        ),
    ];
    for (content_type, body) in cases {
        let sink = CollectSink::default();
        let req = Request::post("/login")
            .header("content-type", content_type)
            .body(full(body.clone()))
            .unwrap();
        let (record, wire) = one_record(UsageLayer::new(sink.clone()), &sink, req).await;
        assert!(
            memchr::memmem::find(&record.request.body.bytes, SECRET.as_bytes()).is_none(),
            "{content_type}: {}",
            String::from_utf8_lossy(&record.request.body.bytes)
        );
        assert_no_secret(&wire);
    }
    // Percent-encoded secret names in URLs inside header values.
    let sink = CollectSink::default();
    let req = Request::post("/login")
        .header(
            "referer",
            format!("https://a.example/cb?user%5Bpassword%5D={SECRET}"),
        )
        .header(
            "x-back",
            format!("https://a.example/#%70assword={SECRET}&pass%77ord={SECRET}"),
        )
        .header("x-original", format!("Authorization: Bearer {SECRET}"))
        .body(full(""))
        .unwrap();
    let (_, wire) = one_record(UsageLayer::new(sink.clone()), &sink, req).await;
    assert_no_secret(&wire);
    assert_eq!(
        wire["request"]["headers"]["referer"],
        "https://a.example/cb?user[password]=[REDACTED]"
    );
}

fn gzip(data: &[u8]) -> Vec<u8> {
    use std::io::Write as _;
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

#[tokio::test]
async fn compressed_bodies_are_decoded_before_redaction_or_not_kept() {
    // gzip: decoded, redacted, and the record says so.
    let sink = CollectSink::default();
    let compressed = gzip(format!(r#"{{"user":"u1","password":"{SECRET}"}}"#).as_bytes());
    let req = Request::post("/login")
        .header("content-type", "application/json")
        .header("content-encoding", "gzip")
        .body(full(compressed.clone()))
        .unwrap();
    let (record, wire) = one_record(UsageLayer::new(sink.clone()), &sink, req).await;
    assert_no_secret(&wire);
    assert_eq!(wire["request"]["body"]["password"], "[REDACTED]");
    assert_eq!(wire["request"]["body"]["user"], "u1");
    assert_eq!(wire["capture"]["requestBodyDecoded"], "gzip");
    assert_eq!(
        record.request.body.size,
        compressed.len() as u64,
        "the size sent"
    );

    // An encoding the writer cannot decode: not kept, and said so.
    let sink = CollectSink::default();
    let req = Request::post("/login")
        .header("content-encoding", "br")
        .body(full(b"\x1b\x03password=s3cr3t-VALUE".to_vec()))
        .unwrap();
    let (record, wire) = one_record(UsageLayer::new(sink.clone()), &sink, req).await;
    assert!(record.request.body.bytes.is_empty());
    assert_eq!(wire["capture"]["requestBodyWithheld"], "br");

    // A bomb costs no more than the capture limit.
    let sink = CollectSink::default();
    let bomb = gzip(&vec![b'a'; 20_000_000]);
    let req = Request::post("/login")
        .header("content-encoding", "gzip")
        .body(full(bomb))
        .unwrap();
    let (record, _) = one_record(
        UsageLayer::new(sink.clone()).max_request_body_bytes(64 * 1024),
        &sink,
        req,
    )
    .await;
    assert_eq!(record.request.body.bytes.len(), 64 * 1024);
    assert!(record.request.body.truncated);
}

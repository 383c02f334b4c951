//! Secrets a hostile client hides where no structured redactor looks: query
//! strings split on `;`, names percent-encoded into keys, bytes that are not
//! UTF-8 in names, URLs with a password in their user-info, `name=value` text
//! inside JSON strings and query values, matrix parameters in the path, and
//! route parameters named like secrets. Each goes through a real axum Router
//! on 127.0.0.1, and the secret must appear nowhere in the stored record.

mod common;

use axum::routing::{any, post};
use axum::Router;
use common::SECRET_NAMES;
use common::*;
use http::Request;
use serde_json::{json, Value};
use tower_usage::UsageLayer;

const SECRET: &str = "s3cr3t-VALUE";

async fn stored(uri: &str, headers: &[(&str, &str)], body: &str) -> Value {
    let sink = CollectSink::default();
    let layer = UsageLayer::new(sink.clone());
    let handle = layer.handle();
    let app = Router::new()
        .route("/login", post(|_b: bytes::Bytes| async { "ok" }))
        .route("/reset/{token}", any(|| async { "ok" }))
        .route("/keys/{api_key}/rotate", any(|| async { "ok" }))
        .route("/files/{*secret_path}", any(|| async { "ok" }))
        .fallback(|| async { "fallback" })
        .layer(layer);
    let addr = serve(app).await;
    let mut req = Request::post(format!("http://{addr}{uri}"));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    send(req.body(full(body.to_owned())).unwrap()).await;
    handle.flush().await;
    let records = sink.all();
    assert_eq!(records.len(), 1, "{uri}");
    serde_json::to_value(&records[0]).unwrap()
}

fn assert_no_secret(what: &str, wire: &Value) {
    let text = wire.to_string();
    assert!(
        !text.contains(SECRET) && !text.contains("s3cr3t"),
        "{what}: secret stored: {text}"
    );
}

/// Query strings: each case is the request target, then the stored `path`,
/// `request.params` and `request.query`.
#[tokio::test]
async fn secrets_hidden_in_query_strings_and_paths_are_masked() {
    let s = SECRET;
    let cases: Vec<(String, &str, Value, Value)> = vec![
        // `;` as a pair separator (old CGI, some frameworks).
        (
            format!("/login?user=u1;password={s}"),
            "/login",
            json!({}),
            json!({"user": "u1;password=[REDACTED]"}),
        ),
        // The name and its `=` percent-encoded into one key.
        (
            format!("/login?x=1&password%3D{s}"),
            "/login",
            json!({}),
            json!({"x": "1", "password=[REDACTED]": ""}),
        ),
        // Bytes that are not UTF-8, or NUL, in a secret name.
        (
            format!("/login?password%00={s}"),
            "/login",
            json!({}),
            json!({"password\u{0}": "[REDACTED]"}),
        ),
        (
            format!("/login?password%FF={s}"),
            "/login",
            json!({}),
            json!({"password\u{FFFD}": "[REDACTED]"}),
        ),
        (
            format!("/login?%70assword={s}"),
            "/login",
            json!({}),
            json!({"password": "[REDACTED]"}),
        ),
        // A URL inside a parameter: raw, encoded once, encoded twice.
        (
            format!("/login?next=https://x.test/cb?token={s}"),
            "/login",
            json!({}),
            json!({"next": "https://x.test/cb?token=[REDACTED]"}),
        ),
        (
            format!("/login?next=https%3A%2F%2Fx.test%2Fcb%3Ftoken%3D{s}"),
            "/login",
            json!({}),
            json!({"next": "https://x.test/cb?token=[REDACTED]"}),
        ),
        (
            format!("/login?next=%2Fcb%253Ftoken%253D{s}"),
            "/login",
            json!({}),
            json!({"next": "/cb?token=[REDACTED]"}),
        ),
        // User-info in a URL: raw and encoded.
        (
            format!("/login?next=https://u:{s}@x.test/"),
            "/login",
            json!({}),
            json!({"next": "https://[REDACTED]@x.test/"}),
        ),
        (
            format!("/login?next=https%3A%2F%2Fu%3A{s}%40x.test%2F"),
            "/login",
            json!({}),
            json!({"next": "https://[REDACTED]@x.test/"}),
        ),
        (
            format!("/login?next=token%3Da1%26u%3Dhttps%253A%252F%252Fu%253A{s}%2540h"),
            "/login",
            json!({}),
            json!({"next": "token=[REDACTED]&u=https://[REDACTED]@h"}),
        ),
        (
            format!("/login?q=Authorization:%20Bearer%20{s}"),
            "/login",
            json!({}),
            // Masked as it came: the encoded blank is part of the value.
            json!({"q": "Authorization:[REDACTED]"}),
        ),
        // Matrix parameters in the path, raw and encoded.
        (
            format!("/login;password={s}"),
            "/login;password=[REDACTED]",
            json!({}),
            json!({}),
        ),
        (
            format!("/login/x;token={s}"),
            "/login/x;token=[REDACTED]",
            json!({}),
            json!({}),
        ),
        (
            format!("/login%3Btoken%3D{s}"),
            "/login;token=[REDACTED]",
            json!({}),
            json!({}),
        ),
        // A secret as it came and another encoded, in either order: each
        // layer's secret is masked, not only the first layer that held one.
        (
            format!("/x/a%3Fpassword%3D{s};api_key={s}"),
            "/x/a%3Fpassword=[REDACTED];api_key=[REDACTED]",
            json!({}),
            json!({}),
        ),
        (
            format!("/x;token={s}/b%3Fpassword%3D{s}"),
            "/x;token=[REDACTED]",
            json!({}),
            json!({}),
        ),
        (
            format!("/x;token={s}/b%253Fpassword%253D{s}"),
            "/x;token=[REDACTED]",
            json!({}),
            json!({}),
        ),
        // Route parameters named like secrets: the param and its segment.
        (
            format!("/reset/{s}"),
            "/reset/[REDACTED]",
            json!({"token": "[REDACTED]"}),
            json!({}),
        ),
        (
            format!("/keys/{s}/rotate?x=1"),
            "/keys/[REDACTED]/rotate",
            json!({"api_key": "[REDACTED]"}),
            json!({"x": "1"}),
        ),
        (
            format!("/files/a/{s}"),
            "/files/[REDACTED]",
            json!({"secret_path": "[REDACTED]"}),
            json!({}),
        ),
    ];
    for (target, path, params, query) in cases {
        let wire = stored(&target, &[], "").await;
        assert_no_secret(&target, &wire);
        assert_eq!(wire["path"], path, "{target}");
        assert_eq!(wire["request"]["params"], params, "{target}");
        assert_eq!(wire["request"]["query"], query, "{target}");
    }
}

/// Text that mentions a secret name without a value, and paths and queries
/// without secrets, are stored as they came.
#[tokio::test]
async fn harmless_neighbours_are_kept() {
    for (target, path, query) in [
        (
            "/login?q=forgot+my+password",
            "/login",
            json!({"q": "forgot my password"}),
        ),
        (
            "/login?next=https://x.test/cb?page=2",
            "/login",
            json!({"next": "https://x.test/cb?page=2"}),
        ),
        (
            "/login?next=mailto:a@x.test",
            "/login",
            json!({"next": "mailto:a@x.test"}),
        ),
        ("/reset/abc?x=%25", "/reset/[REDACTED]", json!({"x": "%"})),
        ("/keys/a%2Fb/rotate", "/keys/[REDACTED]/rotate", json!({})),
        ("/other;v=1/a%20b", "/other;v=1/a%20b", json!({})),
    ] {
        let wire = stored(target, &[], "").await;
        assert_eq!(wire["path"], path, "{target}");
        assert_eq!(wire["request"]["query"], query, "{target}");
    }
}

#[tokio::test]
async fn secrets_hidden_in_header_values_are_masked() {
    let s = SECRET;
    for (name, value, want) in [
        (
            "referer",
            format!("https://user:{s}@x.test/p"),
            "https://%5BREDACTED%5D@x.test/p",
        ),
        (
            "referer",
            format!("https://x.test/?next=https%3A%2F%2Fu%3A{s}%40h.test%2F"),
            "https://x.test/?next=https://[REDACTED]@h.test/",
        ),
        // One secret in the text as it came, another one encoding deeper.
        (
            "x-next",
            format!("password=a1&next=https%3A%2F%2Fu%3A{s}%40h.test%2F"),
            "password=[REDACTED]&next=https://[REDACTED]@h.test/",
        ),
        (
            "x-callback",
            format!("https://x.test/p#access_token={s}"),
            "https://x.test/p#access_token=%5BREDACTED%5D",
        ),
        ("x-note", format!("password={s}"), "password=%5BREDACTED%5D"),
        (
            "x-forwarded-for",
            format!("1.2.3.4; secret={s}"),
            "1.2.3.4; secret=%5BREDACTED%5D",
        ),
        (
            "link",
            format!("<https://{s}@git.test/r.git>; rel=origin"),
            "<https://%5BREDACTED%5D@git.test/r.git>; rel=origin",
        ),
    ] {
        let wire = stored("/login", &[(name, &value)], "").await;
        assert_no_secret(&value, &wire);
        assert_eq!(wire["request"]["headers"][name], want, "{value}");
    }
    // An e-mail address is not user-info.
    let wire = stored("/login", &[("from", "a@x.test")], "").await;
    assert_eq!(wire["request"]["headers"]["from"], "a@x.test");
}

#[tokio::test]
async fn secrets_written_as_text_inside_bodies_are_masked() {
    let s = SECRET;
    for (content_type, body, want) in [
        (
            "application/json",
            format!(r#"{{"note":"password={s}","n":1}}"#),
            json!({"note": "password=[REDACTED]", "n": 1}),
        ),
        (
            "application/json",
            format!(r#"{{"url":"https://u:{s}@x.test/"}}"#),
            json!({"url": "https://[REDACTED]@x.test/"}),
        ),
        (
            "application/json",
            format!(r#"{{"h":["Authorization: Bearer {s}"]}}"#),
            json!({"h": ["Authorization: [REDACTED]"]}),
        ),
        (
            "application/json",
            format!(r#"{{"cfg":"{{\"password\":\"{s}\"}}"}}"#),
            json!({"cfg": r#"{"password":"[REDACTED]"}"#}),
        ),
        (
            "application/json",
            format!(r#"{{"cfg":"{{\"pass\u0077ord\":\"{s}\"}}"}}"#),
            json!({"cfg": r#"{"password":"[REDACTED]"}"#}),
        ),
        (
            "text/plain",
            format!("clone https://u:{s}@x.test/r.git now"),
            json!("clone https://[REDACTED]@x.test/r.git now"),
        ),
        (
            "application/x-www-form-urlencoded",
            format!("user=u1;password={s}"),
            json!("user=u1;password=%5BREDACTED%5D"),
        ),
        (
            "application/x-www-form-urlencoded",
            format!("note=password%3D{s}&x=1"),
            json!("note=password%3D%5BREDACTED%5D&x=1"),
        ),
        (
            "application/x-www-form-urlencoded",
            format!("next=https%3A%2F%2Fu%3A{s}%40x.test%2F"),
            json!("next=https%3A%2F%2F%5BREDACTED%5D%40x.test%2F"),
        ),
    ] {
        let wire = stored("/login", &[("content-type", content_type)], &body).await;
        assert_no_secret(&body, &wire);
        assert_eq!(wire["request"]["body"], want, "{body}");
    }
}

/// Where a secret hides as text inside a value that no structured rule names.
#[derive(Debug, Clone, Copy)]
enum Wrapper {
    KeyValue,
    KeyColon,
    UrlQuery,
    UserInfo,
    Bearer,
}

fn wrap(wrapper: Wrapper, name: &str, secret: &str) -> String {
    match wrapper {
        Wrapper::KeyValue => format!("x=1;{name}={secret}"),
        Wrapper::KeyColon => format!("{name}: {secret}"),
        Wrapper::UrlQuery => format!("https://cb.test/done?state=1&{name}={secret}"),
        Wrapper::UserInfo => format!("https://u:{secret}@db.test/x"),
        Wrapper::Bearer => format!("Authorization: Bearer {secret}"),
    }
}

/// Percent-encodes `text` `depth` times (every byte but letters and digits).
fn encode(text: &str, depth: usize) -> String {
    let mut out = text.to_owned();
    for _ in 0..depth {
        out = percent_encoding::utf8_percent_encode(&out, percent_encoding::NON_ALPHANUMERIC)
            .to_string();
    }
    out
}

proptest::proptest! {
    #![proptest_config(proptest::test_runner::Config {
        cases: 40,
        failure_persistence: None,
        ..proptest::test_runner::Config::default()
    })]

    /// A secret wrapped as text (`name=`, `name:`, a URL's query or
    /// user-info, a bearer credential), encoded 0 to 2 times, in a query
    /// value, a header value, a JSON string value or a form value: never
    /// stored readable.
    #[test]
    fn secrets_written_as_text_are_never_stored(
        wrapper in proptest::sample::select(vec![
            Wrapper::KeyValue, Wrapper::KeyColon, Wrapper::UrlQuery, Wrapper::UserInfo, Wrapper::Bearer,
        ]),
        name_index in 0..SECRET_NAMES.len(),
        upper in proptest::bool::ANY,
        depth in 0usize..3,
        secret in "sk[A-Za-z0-9]{10,20}",
    ) {
        let name = if upper {
            SECRET_NAMES[name_index].to_ascii_uppercase()
        } else {
            SECRET_NAMES[name_index].to_owned()
        };
        let text = wrap(wrapper, &name, &secret);
        // One encoding level more in the query: one is the URL's own.
        let query = format!("/login?next={}&n=1", encode(&text, depth + 1));
        let header = encode(&text, depth);
        let json = serde_json::json!({ "note": encode(&text, depth), "n": 1 }).to_string();
        let form = format!("next={}&n=1", encode(&text, depth + 1));
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let stored = runtime.block_on(async {
            [
                stored(&query, &[], "").await,
                stored("/login", &[("x-next", &header)], "").await,
                stored("/login", &[("content-type", "application/json")], &json).await,
                stored("/login", &[("content-type", "application/x-www-form-urlencoded")], &form).await,
            ]
        });
        for wire in &stored {
            let text = wire.to_string();
            proptest::prop_assert!(!text.contains(&secret), "{text}");
        }
    }
}

/// One secret as it came and another percent-encoded (once or twice), in
/// either order, in every place a text net runs: each layer's secret is
/// masked, not only the first layer found to hold one.
#[tokio::test]
async fn secrets_in_two_layers_of_one_text_are_both_masked() {
    let s = SECRET;
    let texts = [
        format!("a%3Fpassword%3D{s};api_key={s}"),
        format!("token={s}/b%3Fpassword%3D{s}"),
        format!("token={s}/b%253Fpassword%253D{s}"),
        format!("x%3Fclient_secret%3D{s}%26y%3D1 Bearer {s}"),
        format!("https://u:{s}@h/p?q=%3Ftoken%3D{s}"),
    ];
    for text in &texts {
        let query = text.replace(' ', "%20");
        let cases = [
            (format!("/x/{query}"), vec![], String::new()),
            (format!("/login?note={query}"), vec![], String::new()),
            (
                "/login".to_owned(),
                vec![("referer", query.clone())],
                String::new(),
            ),
            (
                "/login".to_owned(),
                vec![],
                json!({ "note": text }).to_string(),
            ),
            ("/login".to_owned(), vec![], format!("note: {text}")),
        ];
        for (uri, headers, body) in cases {
            let headers: Vec<(&str, &str)> =
                headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
            let wire = stored(&uri, &headers, &body).await;
            assert_no_secret(&format!("{uri} {headers:?} {body}"), &wire);
        }
    }
}

//! Secret names by word, not by substring, through a real axum Router on
//! 127.0.0.1: the log must be true and safe at once. Harmless names from real
//! public APIs (LLM token counts, OAuth's `token_type`, GitHub's `author`,
//! page cursors) stay as sent; secret ones are masked, in every place a name
//! stands: query, JSON at any depth, form, multipart, headers, route params,
//! free text, and `Sec-WebSocket-Protocol` items.

mod common;

use axum::routing::{any, post};
use axum::Router;
use common::*;
use http::{HeaderName, Request};
use serde_json::{json, Value};
use tower_usage::middleware::is_secret_name;
use tower_usage::UsageLayer;

const SECRET: &str = "s3cr3t-VALUE";
const CLEAR: &str = "kept-value-42";

/// At least 40 names that must be masked (headers, OAuth, cloud SDKs, web
/// frameworks' session and CSRF names).
const SECRET_NAMES: &[&str] = &[
    "authorization",
    "Proxy-Authorization",
    "cookie",
    "set-cookie",
    "x-api-key",
    "api_key",
    "apiKey",
    "APIKey",
    "apikey",
    "x-goog-api-key",
    "x-auth-token",
    "x-csrf-token",
    "x-xsrf-token",
    "x-amz-security-token",
    "X-Vault-Token",
    "x-registry-auth",
    "x-session-id",
    "access_token",
    "accessToken",
    "refresh_token",
    "id_token",
    "token",
    "auth_token",
    "oauth_token",
    "oauth_token_secret",
    "authenticity_token",
    "csrfmiddlewaretoken",
    "csrftoken",
    "client_secret",
    "clientSecret",
    "secret",
    "webhook_secret",
    "password",
    "new_password",
    "password_confirmation",
    "passwordHash",
    "passwd",
    "pwd",
    "passphrase",
    "private_key",
    "privateKey",
    "aws_secret_access_key",
    "signing_key",
    "license_key",
    "session",
    "session_id",
    "sessionId",
    "JSESSIONID",
    "PHPSESSID",
    "sid",
    "connect.sid",
    "credential",
    "credentials",
    "basic_auth",
    "auth",
    "x-rapidapi-key",
    "Ocp-Apim-Subscription-Key",
    "x-functions-key",
    "AccountKey",
    "x-admin-key",
    "authKey",
    "writeKey",
    "server_key",
    "sdk-key",
    "hmac_key",
    "x-mashape-key",
    "passcode",
    "passCode",
    "jwt",
    "client_assertion",
    "Cf-Access-Jwt-Assertion",
    "x-goog-iap-jwt-assertion",
    "id_token_hint",
    "X-Insert-Key",
    "readKey",
    "x-amz-server-side-encryption-customer-key",
    "service_role_key",
    "preauthkey",
    "userpwd",
    "mnemonic",
];

/// At least 40 names from real public APIs that must stay as sent.
const HARMLESS_NAMES: &[&str] = &[
    "tokenDefinitionId",
    "max_tokens",
    "max_completion_tokens",
    "max_output_tokens",
    "prompt_tokens",
    "completion_tokens",
    "total_tokens",
    "reasoning_tokens",
    "cached_tokens",
    "input_tokens",
    "output_tokens",
    "tokens",
    "token_type",
    "tokenType",
    "token_count",
    "tokenizer",
    "expires_in",
    "scope",
    "author",
    "authors",
    "author_association",
    "authority",
    "authored_at",
    "www-authenticate",
    "keyboard",
    "key",
    "keys",
    "primary_key",
    "public_key",
    "access_key_id",
    "sort_key",
    "idempotency_key",
    "cookies_enabled",
    "sessions",
    "session_count",
    "pageToken",
    "nextPageToken",
    "next_page_token",
    "NextToken",
    "continuationToken",
    "syncToken",
    "postman-token",
    "secrets",
    "client_id",
    "user_id",
    "sec-websocket-key",
    "x-request-id",
    "consider",
    "inside",
    "model",
    "temperature",
    "stream",
    "issueKey",
    "flag_key",
    "project_key",
    "publishable_key",
    "partition_key",
    "monkey",
    "hotkey",
    "jwks_uri",
    "verify_jwt",
    "passcodeRequired",
    "passcodeMinimumLength",
    "resumptionToken",
    "$deltatoken",
    "paging_token",
    "previous_token",
    "ChangeToken",
    "Lock-Token",
    "X-Atlassian-Token",
    "eos_token",
];

async fn record_of(req: Request<TestBody>) -> Value {
    record_with(req, |layer| layer).await
}

/// [`record_of`] through a layer `configure` set up.
async fn record_with(
    req: Request<TestBody>,
    configure: impl FnOnce(UsageLayer<CollectSink>) -> UsageLayer<CollectSink>,
) -> Value {
    let sink = CollectSink::default();
    let layer = configure(UsageLayer::new(sink.clone()));
    let handle = layer.handle();
    let app = Router::new()
        .route("/echo", post(|b: bytes::Bytes| async move { b }))
        .route("/reset/{token}", any(|| async { "ok" }))
        .route(
            "/collection/{tokenDefinitionId}/owners",
            any(|| async { "ok" }),
        )
        .route("/users/{author}/keys/{api_key}", any(|| async { "ok" }))
        .route("/ws", any(|| async { "ok" }))
        .layer(layer);
    let addr = serve(app).await;
    let (mut parts, body) = req.into_parts();
    parts.uri = format!("http://{addr}{}", parts.uri).parse().unwrap();
    let (status, _, answer) = send(Request::from_parts(parts, body)).await;
    handle.flush().await;
    let records = sink.all();
    assert_eq!(records.len(), 1, "{status}: {answer:?}");
    serde_json::to_value(&records[0]).unwrap()
}

#[test]
fn the_tables_hold_at_least_forty_names_each_and_agree_with_the_rule() {
    assert!(SECRET_NAMES.len() >= 40 && HARMLESS_NAMES.len() >= 40);
    for name in SECRET_NAMES {
        assert!(is_secret_name(name), "{name} should be secret");
    }
    for name in HARMLESS_NAMES {
        assert!(!is_secret_name(name), "{name} should stay as sent");
    }
}

/// Every name of both tables as a query parameter, a JSON key (nested) and a
/// form field, in one request each: the secret ones masked, the others kept.
#[tokio::test]
async fn both_tables_in_query_json_and_form() {
    let all = || {
        SECRET_NAMES
            .iter()
            .map(|n| (*n, SECRET))
            .chain(HARMLESS_NAMES.iter().map(|n| (*n, CLEAR)))
    };
    let query: String = form_urlencoded::Serializer::new(String::new())
        .extend_pairs(all())
        .finish();
    let wire = record_of(
        Request::post(format!("/echo?{query}"))
            .body(full(""))
            .unwrap(),
    )
    .await;
    check_fields(&wire["request"]["query"], "query");

    let object: serde_json::Map<String, Value> = all()
        .map(|(k, v)| (k.to_owned(), Value::String(v.to_owned())))
        .collect();
    let body = json!({"outer": {"list": [Value::Object(object)]}}).to_string();
    let wire = record_of(
        Request::post("/echo")
            .header("content-type", "application/json")
            .body(full(body))
            .unwrap(),
    )
    .await;
    check_fields(&wire["request"]["body"]["outer"]["list"][0], "JSON request");
    check_fields(&wire["response"]["outer"]["list"][0], "JSON response");

    let form: String = form_urlencoded::Serializer::new(String::new())
        .extend_pairs(all())
        .finish();
    let wire = record_of(
        Request::post("/echo")
            .header("content-type", "application/x-www-form-urlencoded")
            .body(full(form))
            .unwrap(),
    )
    .await;
    let stored = wire["request"]["body"].as_str().unwrap().to_owned();
    let parsed: serde_json::Map<String, Value> = form_urlencoded::parse(stored.as_bytes())
        .map(|(k, v)| (k.into_owned(), Value::String(v.into_owned())))
        .collect();
    check_fields(&Value::Object(parsed), "form");
}

fn check_fields(stored: &Value, place: &str) {
    for name in SECRET_NAMES {
        assert_eq!(stored[*name], "[REDACTED]", "{place}: {name} in {stored}");
    }
    for name in HARMLESS_NAMES {
        assert_eq!(stored[*name], CLEAR, "{place}: {name} in {stored}");
    }
}

/// Headers: every name of both tables that is a valid header name (one
/// request per table: a server takes 100 headers at most).
#[tokio::test]
async fn both_tables_in_headers() {
    fn valid(n: &&&str) -> bool {
        !n.starts_with(':') && HeaderName::try_from(n.to_ascii_lowercase()).is_ok()
    }
    for (names, value, shown) in [
        (SECRET_NAMES, SECRET, "[REDACTED]"),
        (HARMLESS_NAMES, CLEAR, CLEAR),
    ] {
        let mut req = Request::post("/echo");
        for name in names.iter().filter(valid) {
            req = req.header(*name, value);
        }
        let wire = record_of(req.body(full("")).unwrap()).await;
        let headers = &wire["request"]["headers"];
        for name in names.iter().filter(valid) {
            let lower = name.to_ascii_lowercase();
            assert_eq!(headers[&lower], shown, "{lower} in {headers}");
        }
    }
}

/// An OpenAI-style chat completion keeps `max_tokens` and the whole `usage`
/// object: the numbers a consumer is billed by.
#[tokio::test]
async fn an_llm_completion_keeps_its_token_counts() {
    let usage = json!({
        "prompt_tokens": 19,
        "completion_tokens": 10,
        "total_tokens": 29,
        "prompt_tokens_details": {"cached_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 0}
    });
    let body = json!({
        "model": "gpt-4o",
        "max_tokens": 100,
        "messages": [{"role": "user", "content": "How many tokens is this?"}],
        "usage": usage,
    });
    let wire = record_of(
        Request::post("/echo?tokens=5")
            .header("content-type", "application/json")
            .header("authorization", format!("Bearer {SECRET}"))
            .body(full(body.to_string()))
            .unwrap(),
    )
    .await;
    assert_eq!(wire["request"]["body"], body, "kept as sent");
    assert_eq!(wire["response"]["usage"], usage);
    assert_eq!(wire["request"]["query"], json!({"tokens": "5"}));
    assert_eq!(wire["request"]["headers"]["authorization"], "[REDACTED]");
    assert!(!wire.to_string().contains(SECRET));
}

/// An OAuth token response masks the three tokens and keeps their type, expiry
/// and scope; the refresh request's form masks the refresh token and secret.
#[tokio::test]
async fn an_oauth_token_exchange_masks_tokens_and_keeps_their_metadata() {
    let form = format!(
        "grant_type=refresh_token&refresh_token={SECRET}&client_id=app-1&client_secret={SECRET}"
    );
    let sink = CollectSink::default();
    let layer = UsageLayer::new(sink.clone());
    let handle = layer.handle();
    let response = json!({
        "access_token": SECRET,
        "refresh_token": SECRET,
        "id_token": SECRET,
        "token_type": "Bearer",
        "expires_in": 3600,
        "scope": "openid profile"
    });
    let reply = response.to_string();
    let app = Router::new()
        .route(
            "/oauth/token",
            post(move |_form: bytes::Bytes| async move {
                ([("content-type", "application/json")], reply)
            }),
        )
        .layer(layer);
    let addr = serve(app).await;
    send(
        Request::post(format!("http://{addr}/oauth/token"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(full(form))
            .unwrap(),
    )
    .await;
    handle.flush().await;
    let wire = serde_json::to_value(&sink.all()[0]).unwrap();
    assert_eq!(
        wire["request"]["body"],
        "grant_type=refresh_token&refresh_token=%5BREDACTED%5D&client_id=app-1&client_secret=%5BREDACTED%5D"
    );
    assert_eq!(
        wire["response"],
        json!({
            "access_token": "[REDACTED]",
            "refresh_token": "[REDACTED]",
            "id_token": "[REDACTED]",
            "token_type": "Bearer",
            "expires_in": 3600,
            "scope": "openid profile"
        })
    );
}

/// Route params, and the path segment under them: masked when the param's
/// name is secret, kept when it only holds a secret word.
#[tokio::test]
async fn route_params_follow_the_same_rule() {
    let wire = record_of(
        Request::get(format!("/reset/{SECRET}"))
            .body(full(""))
            .unwrap(),
    )
    .await;
    assert_eq!(wire["path"], "/reset/[REDACTED]");
    assert_eq!(wire["request"]["params"], json!({"token": "[REDACTED]"}));

    let wire = record_of(
        Request::get("/collection/098f868479eb/owners")
            .body(full(""))
            .unwrap(),
    )
    .await;
    assert_eq!(wire["path"], "/collection/098f868479eb/owners");
    assert_eq!(
        wire["request"]["params"],
        json!({"tokenDefinitionId": "098f868479eb"})
    );

    let wire = record_of(
        Request::get(format!("/users/octocat/keys/{SECRET}"))
            .body(full(""))
            .unwrap(),
    )
    .await;
    assert_eq!(wire["path"], "/users/octocat/keys/[REDACTED]");
    assert_eq!(
        wire["request"]["params"],
        json!({"author": "octocat", "api_key": "[REDACTED]"})
    );
}

/// Free text (logs, XML, YAML) and multipart part names: the key's whole name
/// decides, not a needle inside it.
#[tokio::test]
async fn text_bodies_and_multipart_parts_follow_the_same_rule() {
    let text = format!(
        "max_tokens=100 total_tokens: 29 password={SECRET} author=octocat\n\
         <session>{SECRET}</session><token_type>Bearer</token_type>\n\
         api-key: {SECRET}\n"
    );
    let wire = record_of(
        Request::post("/echo")
            .header("content-type", "text/plain")
            .body(full(text))
            .unwrap(),
    )
    .await;
    assert_eq!(
        wire["request"]["body"],
        "max_tokens=100 total_tokens: 29 password=[REDACTED] author=octocat\n\
         <session>[REDACTED]</session><token_type>Bearer</token_type>\n\
         api-key: [REDACTED]\n"
    );

    let boundary = "XyZ";
    let part = |name: &str, value: &str| {
        format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n"
        )
    };
    let body = format!(
        "{}{}{}{}--{boundary}--\r\n",
        part("max_tokens", "100"),
        part("api_key", SECRET),
        part("author", "octocat"),
        part("session", SECRET)
    );
    let wire = record_of(
        Request::post("/echo")
            .header(
                "content-type",
                format!("multipart/form-data; boundary={boundary}"),
            )
            .body(full(body))
            .unwrap(),
    )
    .await;
    let stored = wire["request"]["body"].as_str().unwrap();
    assert!(!stored.contains(SECRET), "{stored}");
    assert!(
        stored.contains("name=\"max_tokens\"\r\n\r\n100\r\n"),
        "{stored}"
    );
    assert!(
        stored.contains("name=\"author\"\r\n\r\noctocat\r\n"),
        "{stored}"
    );
}

/// A WebSocket handshake whose `Sec-WebSocket-Protocol` carries bearer tokens
/// (browsers cannot set `Authorization` on a WebSocket): the items that carry
/// them are masked, the real subprotocol stays.
#[tokio::test]
async fn websocket_subprotocols_that_carry_tokens_are_masked() {
    let cases = [
        (
            format!("v1.chat, base64url.bearer.authorization.k8s.io.{SECRET}, bearer.{SECRET}"),
            "v1.chat, [REDACTED], [REDACTED]".to_owned(),
        ),
        (
            format!("graphql-ws, access_token, {SECRET}"),
            "graphql-ws, [REDACTED], [REDACTED]".to_owned(),
        ),
        (
            "v1.chat, eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJl".to_owned(),
            "v1.chat, [REDACTED]".to_owned(),
        ),
        (
            "graphql-transport-ws".to_owned(),
            "graphql-transport-ws".to_owned(),
        ),
        (
            "mqtt, wamp.2.json".to_owned(),
            "mqtt, wamp.2.json".to_owned(),
        ),
    ];
    for (sent, shown) in cases {
        let wire = record_of(
            Request::get("/ws")
                .header("connection", "Upgrade")
                .header("upgrade", "websocket")
                .header("sec-websocket-version", "13")
                .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
                .header("sec-websocket-protocol", sent.as_str())
                .body(full(""))
                .unwrap(),
        )
        .await;
        let headers = &wire["request"]["headers"];
        assert_eq!(headers["sec-websocket-protocol"], shown.as_str(), "{sent}");
        assert_eq!(headers["sec-websocket-key"], "dGhlIHNhbXBsZSBub25jZQ==");
        assert!(!wire.to_string().contains(SECRET), "{wire}");
    }
}

/// The substring rule of earlier versions, asked for by pattern as the docs
/// say: `max_tokens` and `author` are masked then (the patterns `token` and
/// `auth` are in them), and the word rule still masks what it masks.
#[tokio::test]
async fn the_old_substring_rule_is_one_call_away() {
    let body = json!({"max_tokens": 100, "author": "ann", "model": "m", "password": "p"});
    let req = || {
        Request::post("/echo?tokens=5&page=2")
            .header("content-type", "application/json")
            .header("x-author", "ann")
            .body(full(body.to_string()))
            .unwrap()
    };
    let substrings = [
        "auth",
        "api-key",
        "apikey",
        "api_key",
        "secret",
        "token",
        "password",
        "passwd",
        "pwd",
        "private_key",
        "credential",
    ];
    let wire = record_with(req(), |layer| {
        layer
            .redact_field_patterns(substrings)
            .redact_header_patterns(substrings)
    })
    .await;
    let stored = &wire["request"]["body"];
    assert_eq!(stored["max_tokens"], "[REDACTED]", "{stored}");
    assert_eq!(stored["author"], "[REDACTED]", "{stored}");
    assert_eq!(stored["password"], "[REDACTED]", "{stored}");
    assert_eq!(stored["model"], "m", "{stored}");
    assert_eq!(wire["request"]["query"]["tokens"], "[REDACTED]");
    assert_eq!(wire["request"]["query"]["page"], "2");
    assert_eq!(wire["request"]["headers"]["x-author"], "[REDACTED]");
    // The default keeps them all as sent.
    let wire = record_of(req()).await;
    let stored = &wire["request"]["body"];
    assert_eq!(stored["max_tokens"], 100, "{stored}");
    assert_eq!(stored["author"], "ann", "{stored}");
    assert_eq!(stored["password"], "[REDACTED]", "{stored}");
    assert_eq!(wire["request"]["query"]["tokens"], "5");
    assert_eq!(wire["request"]["headers"]["x-author"], "ann");
}

//! The example app shared by the `quickstart`, `sqlite` and `postgres` examples:
//! the three endpoints of the reference usage page, recorded by `UsageLayer` into
//! whichever sink the example hands over, and `GET /v1/usage` serving the log.
//!
//! Each example includes this file with `#[path = "common/app.rs"] mod app;`,
//! makes its sink, and calls [`run`], which serves or, with `--demo`, sends the
//! reference requests, prints `/v1/usage` and returns.

use std::collections::HashMap;
use std::error::Error;
use std::sync::{Arc, Mutex};

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};
use tower_usage::{UsageHandle, UsageLayer, UsageService, UsageSink};

/// The bearer token of the reference page's requests.
const DEMO_TOKEN: &str = "IncYP3edd3blm2ypLGFFOYwQsC5vff3n";

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Airdrop {
    address: Option<String>,
    user_id: Option<String>,
    collection_id: String,
}

#[derive(Debug, Deserialize)]
struct AirdropRequest {
    airdrops: Vec<Airdrop>,
    #[serde(default)]
    sequential: bool,
}

#[derive(Debug, Clone)]
struct Batch {
    airdrops: Vec<(Option<String>, Option<String>)>,
}

type Batches = Arc<Mutex<HashMap<String, Batch>>>;

fn random_id(len: usize) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    (0..len)
        .map(|_| ALPHABET[fastrand::usize(..ALPHABET.len())] as char)
        .collect()
}

async fn create_airdrop(
    State(batches): State<Batches>,
    Json(req): Json<AirdropRequest>,
) -> Result<Json<Value>, (StatusCode, Json<Value>)> {
    if req.airdrops.is_empty() {
        return Err((
            StatusCode::BAD_REQUEST,
            Json(json!({"error": "airdrops must not be empty"})),
        ));
    }
    if let Some(bad) = req
        .airdrops
        .iter()
        .find(|a| a.address.is_none() && a.user_id.is_none())
    {
        return Err((
            StatusCode::BAD_REQUEST,
            Json(
                json!({"error": format!("airdrop for collection {} needs an address or a userId", bad.collection_id)}),
            ),
        ));
    }
    let _ = req.sequential;
    let id = random_id(32);
    let count = req.airdrops.len();
    let batch = Batch {
        airdrops: req
            .airdrops
            .into_iter()
            .map(|a| (a.address, a.user_id))
            .collect(),
    };
    batches
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(id.clone(), batch);
    Ok(Json(json!({"id": id, "count": count})))
}

async fn get_airdrop(
    State(batches): State<Batches>,
    Path(batch_id): Path<String>,
) -> Result<Json<Value>, (StatusCode, Json<Value>)> {
    let batch = batches
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get(&batch_id)
        .cloned();
    let Some(batch) = batch else {
        return Err((
            StatusCode::NOT_FOUND,
            Json(json!({"error": format!("no airdrop batch {batch_id}")})),
        ));
    };
    let succeeded: Vec<Value> = batch
        .airdrops
        .iter()
        .map(|(address, user)| {
            json!({
                "taskId": format!("{:032x}", fastrand::u128(..)),
                "address": address.clone().unwrap_or_else(|| random_id(44)),
                "CometUserId": user,
            })
        })
        .collect();
    Ok(Json(json!({
        "id": batch_id,
        "count": batch.airdrops.len(),
        "statuses": {"SUCCEEDED": succeeded},
    })))
}

async fn collection_owners(Path(_token_definition_id): Path<String>) -> Json<Value> {
    Json(json!({"results": {"owners": []}}))
}

/// The app: the reference endpoints, recorded, and the usage endpoint.
pub(crate) fn app<S: UsageSink + Clone>(sink: S) -> (Router, UsageHandle) {
    // Each recorded response says which record it is (`usage-record-id`), so a
    // client can read it back at `GET /v1/usage/{id}`.
    let layer = UsageLayer::new(sink.clone())
        .record_id_header(http::HeaderName::from_static("usage-record-id"));
    let handle = layer.handle();
    let router = Router::new()
        .route("/rest/v1/airdrop/", post(create_airdrop))
        .route("/rest/v1/airdrop/{batchId}", get(get_airdrop))
        .route(
            "/rest/v1/collection/{tokenDefinitionId}/owners",
            get(collection_owners),
        )
        .with_state(Batches::default())
        // `/v1/usage` and everything below it: `/{id}`, `/summary`,
        // `/openapi.json`, exports with `?format=ndjson|csv`; the handle
        // tells the summary how far the writer has got.
        .nest_service(
            "/v1/usage",
            // `DELETE /v1/usage?consumer=` is served, but with no admin
            // policy nobody may erase: every caller gets 403 (401 without a
            // token). Add `.admin(..)` to let an operator erase.
            UsageService::new(sink)
                .recorder(handle.clone())
                .allow_erasure(true),
        )
        .layer(layer);
    (router, handle)
}

/// The command line: `--demo`, `--port N`, and the options an example adds.
#[derive(Debug, Default)]
pub(crate) struct Args {
    pub(crate) demo: bool,
    pub(crate) port: Option<u16>,
    options: HashMap<String, String>,
}

impl Args {
    /// Parses the process's arguments. `options` are the example's own
    /// `--name value` options (without the dashes); `usage` is shown on an error.
    pub(crate) fn parse(options: &[&str], usage: &str) -> Result<Self, String> {
        let mut args = Self::default();
        let mut it = std::env::args().skip(1);
        while let Some(arg) = it.next() {
            let name = arg.strip_prefix("--").unwrap_or("");
            if name == "help" || arg == "-h" {
                println!("usage: {usage}");
                println!(
                    "  --demo    send the reference requests to itself, print /v1/usage, exit"
                );
                println!(
                    "  --port N  listen on 127.0.0.1:N (default: $PORT, else 9000; 0: any free port)"
                );
                std::process::exit(0);
            }
            if name == "demo" {
                args.demo = true;
                continue;
            }
            if name != "port" && !options.contains(&name) {
                return Err(format!("unknown argument {arg:?}; usage: {usage}"));
            }
            let value = it.next().ok_or(format!("{arg} needs a value"))?;
            if name == "port" {
                args.port = Some(value.parse().map_err(|e| format!("--port: {e}"))?);
            } else {
                args.options.insert(name.to_owned(), value);
            }
        }
        Ok(args)
    }

    /// The value of the example's option `--name`, if given.
    #[allow(dead_code)] // the quickstart has no option of its own
    pub(crate) fn option(&self, name: &str) -> Option<&str> {
        self.options.get(name).map(String::as_str)
    }
}

/// Serves the app on `sink` until the process is stopped or, with `--demo`,
/// sends the reference requests, prints `/v1/usage` and returns. `name` names
/// the example in what it prints.
pub(crate) async fn run<S: UsageSink + Clone>(
    name: &str,
    sink: S,
    args: &Args,
) -> Result<(), Box<dyn Error>> {
    let port = match args.port {
        Some(port) => port,
        None if args.demo => 0,
        None => std::env::var("PORT")
            .ok()
            .map(|p| p.parse())
            .transpose()
            .map_err(|e| format!("PORT: {e}"))?
            .unwrap_or(9000),
    };
    let (router, handle) = app(sink);
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .map_err(|e| {
            format!(
                "cannot listen on 127.0.0.1:{port}: {e}; \
                 is another server there? choose a port with --port N (or PORT=N)"
            )
        })?;
    let addr = listener.local_addr()?;
    let server = tokio::spawn(async move { axum::serve(listener, router).await });

    if !args.demo {
        println!("tower-usage {name} listening on http://{addr}");
        println!("open http://{addr}/v1/usage in a browser and paste the token {DEMO_TOKEN}");
        println!(
            "try: curl -s -X POST http://{addr}/rest/v1/airdrop/ -H 'Authorization: Bearer {DEMO_TOKEN}' \
             -H 'Content-Type: application/json' -d '{{\"airdrops\":[{{\"userId\":\"c4367732ab0c\",\"collectionId\":\"9f46cddbd46f\"}}]}}'"
        );
        println!("then: curl -s http://{addr}/v1/usage -H 'Authorization: Bearer {DEMO_TOKEN}'");
        println!(
            "and:  curl -s 'http://{addr}/v1/usage/summary?interval=hour&groupBy=route,status' \
             -H 'Authorization: Bearer {DEMO_TOKEN}'"
        );
        server.await??;
        return Ok(());
    }

    let (usage, summary) = run_demo(addr, &handle).await?;
    println!("{}", serde_json::to_string_pretty(&usage)?);
    check_against_reference(&usage)?;
    println!("{}", serde_json::to_string_pretty(&summary)?);
    if summary["total"]["requests"] != 3 {
        return Err(format!("expected 3 requests in /v1/usage/summary: {summary}").into());
    }
    eprintln!("demo ok: 3 requests recorded, stats {:?}", handle.stats());
    server.abort();
    Ok(())
}

/// Checks that `/v1/usage` shows the three requests as the reference page
/// does: paths, route params and bodies as sent, only `authorization` masked.
fn check_against_reference(usage: &Value) -> Result<(), Box<dyn Error>> {
    let records = usage["requests"].as_array().map_or(&[][..], Vec::as_slice);
    if records.len() != 3 {
        let n = records.len();
        return Err(format!("expected 3 recorded requests, /v1/usage returned {n}").into());
    }
    let owners = &records[2];
    let expected = [
        (
            &owners["path"],
            json!("/rest/v1/collection/098f868479eb/owners"),
        ),
        (
            &owners["request"]["params"],
            json!({"tokenDefinitionId": "098f868479eb"}),
        ),
        (
            &records[0]["request"]["body"]["airdrops"][1],
            json!({"userId": "c4367732ab0c", "collectionId": "9f46cddbd46f"}),
        ),
        (
            &records[1]["request"]["headers"]["postman-token"],
            json!("7ab5a826-d078-4180-9999-1f0b0590a10a"),
        ),
        (
            &records[1]["request"]["headers"]["authorization"],
            json!("[REDACTED]"),
        ),
    ];
    for (got, want) in expected {
        if *got != want {
            return Err(format!(
                "/v1/usage differs from the reference page: {got} where it shows {want}"
            )
            .into());
        }
    }
    Ok(())
}

/// Sends the reference page's three requests, then reads `/v1/usage` and
/// `/v1/usage/summary` (by hour, per route and status class) from the moment
/// the demo started (a database kept from an earlier run holds older ones).
async fn run_demo(
    addr: std::net::SocketAddr,
    handle: &UsageHandle,
) -> Result<(Value, Value), Box<dyn Error>> {
    use http_body_util::{BodyExt, Full};
    use hyper_util::client::legacy::Client;
    use hyper_util::rt::TokioExecutor;

    let now = time::OffsetDateTime::now_utc();
    let since = now
        .replace_millisecond(now.millisecond())?
        .format(&time::format_description::well_known::Rfc3339)?;
    let client: Client<_, Full<bytes::Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    // The reference page's headers, Postman's per-request token included.
    let send = |method: &str, path: &str, body: Option<Value>, postman: &str| {
        let mut req = http::Request::builder()
            .method(method)
            .uri(format!("http://{addr}{path}"))
            .header("host", "localhost:9000")
            .header("accept", "*/*")
            .header("connection", "keep-alive")
            .header("user-agent", "PostmanRuntime/7.29.2")
            .header("authorization", format!("Bearer {DEMO_TOKEN}"))
            .header("postman-token", postman)
            .header("accept-encoding", "gzip, deflate, br");
        let bytes = match body {
            Some(b) => {
                req = req.header("content-type", "application/json");
                serde_json::to_vec(&b).unwrap_or_default()
            }
            None => Vec::new(),
        };
        let req = req.body(Full::new(bytes::Bytes::from(bytes)));
        let client = client.clone();
        async move {
            let res = client.request(req?).await?;
            let status = res.status();
            let body = res.into_body().collect().await?.to_bytes();
            if !status.is_success() {
                return Err(format!("{status}: {}", String::from_utf8_lossy(&body)).into());
            }
            Ok::<Value, Box<dyn Error>>(serde_json::from_slice(&body)?)
        }
    };

    let created = send(
        "POST",
        "/rest/v1/airdrop/",
        Some(json!({
            "airdrops": [
                {"address": "AXkcPCWrWYGuayYgKp7y6LhugKzq5f3pqeKnrSod9ufy", "collectionId": "9f46cddbd46f"},
                {"userId": "c4367732ab0c", "collectionId": "9f46cddbd46f"}
            ],
            "sequential": false
        })),
        "bb58f535-a047-4a0d-af7b-dbb078d0da0c",
    )
    .await?;
    let batch_id = created["id"].as_str().ok_or("no batch id")?.to_owned();
    send(
        "GET",
        &format!("/rest/v1/airdrop/{batch_id}"),
        None,
        "7ab5a826-d078-4180-9999-1f0b0590a10a",
    )
    .await?;
    send(
        "GET",
        "/rest/v1/collection/098f868479eb/owners",
        None,
        "4d8cfb24-cf03-4a85-b430-e6247823a599",
    )
    .await?;

    handle.flush().await;
    let list = send("GET", &format!("/v1/usage?since={since}"), None, "").await?;
    let summary = send(
        "GET",
        &format!("/v1/usage/summary?since={since}&interval=hour&groupBy=route,status"),
        None,
        "",
    )
    .await?;
    Ok((list, summary))
}

//! The usage page in a real browser: Debian's Chromium, headless, driven
//! over WebDriver (chromedriver on a loopback port) with `fantoccini`,
//! against the quickstart app on 127.0.0.1. Without `chromium` and
//! `chromedriver` this test fails, saying how to install them; it never
//! skips. Screenshots at 1440x900 and 390x844 go to
//! `target/page-screenshots/`.
#![cfg(feature = "page")]

mod common;
#[path = "support/ports.rs"]
mod ports;

#[allow(dead_code)] // the example's command line and demo are not used here
#[path = "../examples/common/app.rs"]
mod app;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use fantoccini::error::CmdError;
use fantoccini::{Client, ClientBuilder, Locator};
use http::Request;
use serde_json::{json, Value};
use tower_usage::{MemorySink, UsageQuery, UsageRecord, UsageSink};

const TOKEN: &str = "IncYP3edd3blm2ypLGFFOYwQsC5vff3n";
const CHROMIUM: &str = "/usr/bin/chromium";
const XSS_BODY: &str = "<img src=x onerror=alert(1)>";
/// A path no URI can carry (`<` must be percent-encoded), as a record from
/// another application on the same sink may hold it.
const XSS_PATH: &str = "/rest/v1/airdrop/<script>alert(2)</script>";
const XSS_ROUTE: &str = "/rest/<b onmouseover=alert(3)>{id}</b>";
/// A consumer id an `IdentifyConsumer` may take from anywhere.
const XSS_CONSUMER: &str = "<svg/onload=alert(4)>";
const INSTALL: &str =
    "install them with `apt-get update && apt-get install -y chromium chromium-driver` \
     (scripts/test does so when it runs as root or with sudo)";

/// chromedriver, stopped when dropped.
struct Driver {
    child: Child,
    port: u16,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn chromedriver() -> PathBuf {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join("chromedriver"))
            .find(|p| p.is_file())
    });
    match found {
        Some(path) if Path::new(CHROMIUM).is_file() => path,
        _ => panic!("the page's browser test needs {CHROMIUM} and chromedriver on PATH: {INSTALL}"),
    }
}

/// Starts chromedriver on a free loopback port (see `support/ports.rs`), and
/// waits until it says it listens there: readiness is read from its own line
/// "started successfully on port N", not from a connect that could reach
/// something else. A port lost to a race anyway (the driver then says "port
/// not available" and exits) is retried on another.
async fn start_driver() -> Driver {
    let binary = chromedriver();
    let mut failures = Vec::new();
    for _ in 0..8 {
        let port = ports::server_port();
        match spawn_driver(&binary, port) {
            Ok(driver) => return driver,
            Err(why) => failures.push(format!("port {port}: {why}")),
        }
    }
    panic!("chromedriver did not start: {failures:?}; {INSTALL}")
}

fn spawn_driver(binary: &Path, port: u16) -> Result<Driver, String> {
    use std::io::BufRead;
    let mut child = Command::new(binary)
        .arg(format!("--port={port}"))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}; {INSTALL}", binary.display()));
    let stdout = child.stdout.take().expect("piped");
    let mut driver = Driver { child, port };
    let (tx, rx) = std::sync::mpsc::channel();
    // Reads every line until chromedriver exits, so its pipe never fills.
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            let _ = tx.send(line);
        }
    });
    let ready = format!("started successfully on port {port}");
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut said = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) if line.contains(&ready) => return Ok(driver),
            Ok(line) => said.push(line),
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                let status = driver.child.wait().map(|s| s.to_string());
                return Err(format!("exited ({status:?}) saying {said:?}"));
            }
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                // Dropping `driver` stops it.
                return Err(format!("not ready within 20 s, saying {said:?}"));
            }
        }
    }
}

/// A headless Chromium; `extra` adds command-line switches.
async fn browser(driver: &Driver, profile: &Path, extra: &[&str]) -> Client {
    let mut args = vec![
        "--headless".to_owned(),
        "--no-sandbox".to_owned(),
        "--disable-gpu".to_owned(),
        "--disable-dev-shm-usage".to_owned(),
        "--no-first-run".to_owned(),
        "--disable-background-networking".to_owned(),
        "--disable-component-update".to_owned(),
        "--disable-sync".to_owned(),
        "--hide-scrollbars".to_owned(),
        "--window-size=1440,900".to_owned(),
        format!("--user-data-dir={}", profile.display()),
    ];
    args.extend(extra.iter().map(|a| (*a).to_owned()));
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".to_owned(),
        json!({
            "binary": CHROMIUM,
            "args": args,
            "prefs": {
                "download.default_directory": profile.join("downloads"),
                "download.prompt_for_download": false,
            },
        }),
    );
    let url = format!("http://127.0.0.1:{}", driver.port);
    // Chromium's start can fail once on a loaded machine; a second try
    // tells a flake from a broken installation.
    let mut failures = Vec::new();
    for _ in 0..3 {
        match ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(caps.clone())
            .connect(&url)
            .await
        {
            Ok(client) => return client,
            Err(e) => failures.push(e.to_string()),
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    panic!("chromedriver could not start Chromium: {failures:?}; {INSTALL}")
}

/// Waits until `check` gives `Some`, or fails saying what was awaited.
async fn until<T, F, Fut>(what: &str, check: F) -> T
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<Option<T>, CmdError>>,
{
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        match check().await {
            Ok(Some(v)) => return v,
            Ok(None) => {}
            // The page redrew between finding an element and reading it.
            Err(e) if e.is_stale_element_reference() => {}
            Err(e) => panic!("waiting for {what}: {e}"),
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn texts(client: &Client, css: &str) -> Result<Vec<String>, CmdError> {
    let mut out = Vec::new();
    for e in client.find_all(Locator::Css(css)).await? {
        out.push(e.text().await?);
    }
    Ok(out)
}

async fn click(client: &Client, css: &str) -> Result<(), CmdError> {
    client.find(Locator::Css(css)).await?.click().await
}

async fn text_of(client: &Client, id: &str) -> Result<String, CmdError> {
    client.find(Locator::Id(id)).await?.text().await
}

async fn enter_token(client: &Client, token: &str) -> Result<(), CmdError> {
    client
        .find(Locator::Id("token"))
        .await?
        .send_keys(token)
        .await?;
    click(client, "#token-form button[type=submit]").await
}

/// Chooses a status class (`any`: none) in the history's filters and applies it.
async fn filter_status(client: &Client, label: &str) -> Result<(), CmdError> {
    client
        .find(Locator::Css("#filters select[name=status]"))
        .await?
        .select_by_label(label)
        .await?;
    click(client, "#filters button[type=submit]").await
}

async fn assert_no_alert(client: &Client) {
    match client.get_alert_text().await {
        Err(e) if e.is_no_such_alert() => {}
        Ok(text) => panic!("an alert is open: {text:?}"),
        Err(e) => panic!("asking for an alert: {e}"),
    }
    let images = client.find_all(Locator::Css("img")).await.unwrap();
    assert!(images.is_empty(), "an img element was made from a record");
}

async fn screenshot(client: &Client, width: u32, height: u32, name: &str) {
    client.set_window_size(width, height).await.unwrap();
    // The layout settles on the next frame.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let png = client.screenshot().await.unwrap();
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/page-screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(name), png).unwrap();
}

/// The quickstart's reference requests, and a request whose body is markup
/// (a 400: not JSON), recorded twice: as it came, and with markup in its
/// path and route too, as a record from anywhere may hold it.
async fn traffic(addr: SocketAddr, sink: &MemorySink, handle: &tower_usage::UsageHandle) {
    let post = |path: &str, content_type: &str, body: &str| {
        Request::post(format!("http://{addr}{path}"))
            .header("authorization", format!("Bearer {TOKEN}"))
            .header("content-type", content_type)
            .body(full(body.to_owned()))
            .unwrap()
    };
    let get = |path: &str| {
        Request::get(format!("http://{addr}{path}"))
            .header("authorization", format!("Bearer {TOKEN}"))
            .body(full(""))
            .unwrap()
    };
    let airdrop = r#"{"airdrops":[{"address":"AXkcPCWrWYGuayYgKp7y6LhugKzq5f3pqeKnrSod9ufy","collectionId":"9f46cddbd46f"},{"userId":"c4367732ab0c","collectionId":"9f46cddbd46f"}],"sequential":false}"#;
    let (status, _, body) = send(post("/rest/v1/airdrop/", "application/json", airdrop)).await;
    assert_eq!(status, 200);
    let batch = serde_json::from_slice::<Value>(&body).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (status, _, _) = send(get(&format!("/rest/v1/airdrop/{batch}"))).await;
    assert_eq!(status, 200);
    let (status, _, _) = send(get("/rest/v1/collection/098f868479eb/owners")).await;
    assert_eq!(status, 200);
    let (status, _, _) = send(post("/rest/v1/airdrop/", "application/json", XSS_BODY)).await;
    assert_eq!(status, 400);
    handle.flush().await;

    let page = sink.query(&UsageQuery::default()).await.unwrap();
    let sent = page.records.iter().find(|r| r.status == 400).unwrap();
    let created_at = sent.created_at + Duration::from_millis(1);
    let literal = UsageRecord {
        id: UsageRecord::new_id(created_at),
        path: XSS_PATH.to_owned(),
        route: Some(XSS_ROUTE.to_owned()),
        created_at,
        ..sent.clone()
    };
    sink.record(&[literal]).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_in_chromium() {
    let driver = start_driver().await;
    let sink = MemorySink::new();
    let (router, handle) = app::app(sink.clone());
    let addr = serve(router).await;
    traffic(addr, &sink, &handle).await;

    // What the chart must show: one bar segment per hour and status class.
    let (_, _, summary) = send(
        Request::get(format!(
            "http://{addr}/v1/usage/summary?interval=hour&groupBy=status"
        ))
        .header("authorization", format!("Bearer {TOKEN}"))
        .body(full(""))
        .unwrap(),
    )
    .await;
    let summary: Value = serde_json::from_slice(&summary).unwrap();
    let segments = summary["buckets"].as_array().unwrap().len();
    assert!(segments >= 2, "2xx and 4xx: {summary}");
    // What the latency chart must show: one point per hour with requests.
    let mut hours: Vec<&str> = summary["buckets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["start"].as_str().unwrap())
        .collect();
    hours.dedup();
    let hours = hours.len();

    let profile = tempfile::tempdir().unwrap();
    let client = browser(&driver, profile.path(), &[]).await;
    let result = run(&client, addr, (segments, hours), profile.path(), &handle).await;
    let _ = client.close().await;
    result.unwrap();
}

async fn run(
    client: &Client,
    addr: SocketAddr,
    (segments, hours): (usize, usize),
    profile: &Path,
    handle: &tower_usage::UsageHandle,
) -> Result<(), CmdError> {
    client.goto(&format!("http://{addr}/v1/usage")).await?;
    assert_eq!(client.title().await?, "API usage");
    // Before a token: what to do.
    let message = text_of(client, "message").await?;
    assert!(message.contains("Enter the bearer token"), "{message}");

    // Another well-formed token is another consumer, with nothing recorded:
    // the empty state says what to do.
    enter_token(client, "someone-else").await?;
    let empty = until("the empty state", || async {
        let e = client.find(Locator::Id("empty")).await?;
        Ok(e.is_displayed().await?.then_some(e))
    })
    .await;
    let text = empty.text().await?;
    assert!(
        text.contains("No requests recorded for this token"),
        "{text}"
    );
    assert!(text.contains("Send a request"), "{text}");
    click(client, "#forget").await?;

    // A malformed token: 401 in words, and the form again.
    enter_token(client, "not a token").await?;
    let message = until("the 401 message", || async {
        let text = text_of(client, "message").await?;
        Ok(text.contains("401").then_some(text))
    })
    .await;
    assert!(message.contains("not accepted"), "{message}");

    // The right token: the three reference requests and the other two.
    // Every request the page makes from here on is counted.
    client
        .execute(
            "window.sent = []; var f = window.fetch; \
             window.fetch = function (u) { window.sent.push(String(u)); return f.apply(this, arguments); };",
            vec![],
        )
        .await?;
    let started = Instant::now();
    enter_token(client, TOKEN).await?;
    let paths = until("five rows in the history", || async {
        let paths = texts(client, "#history tbody tr td:nth-child(3)").await?;
        Ok((paths.len() == 5).then_some(paths))
    })
    .await;
    let drawn = client
        .find(Locator::Css("body"))
        .await?
        .attr("data-drawn-ms")
        .await?;
    eprintln!(
        "first view: drawn {} ms after its requests started (in the page), rows seen by the test {} ms after the token was sent",
        drawn.unwrap_or_default(),
        started.elapsed().as_millis()
    );
    // The first view in three requests: two summaries and the list; then,
    // once per token, whether it is an admin's (it is not), and the reads
    // that make the first view's estimates exact: this period's slots
    // without groups, and the previous period alone when it had requests.
    until("the admin probe", || async {
        let body = client.find(Locator::Css("body")).await?;
        Ok(body.attr("data-admin").await?.filter(|a| a == "no"))
    })
    .await;
    until("the exact latency and p95", || async {
        let body = client.find(Locator::Css("body")).await?;
        body.attr("data-refined").await
    })
    .await;
    let sent = client.execute("return window.sent", vec![]).await?;
    let sent: Vec<&str> = sent
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u.as_str().unwrap())
        .collect();
    assert!(
        !sent[..3].iter().any(|u| u.contains("groupBy=consumer")),
        "{sent:?}"
    );
    let later = &sent[3..];
    assert_eq!(
        later
            .iter()
            .filter(|u| u.contains("groupBy=consumer"))
            .count(),
        1,
        "{sent:?}"
    );
    let refining: Vec<&&str> = later.iter().filter(|u| !u.contains("groupBy=")).collect();
    assert!(
        (1..=2).contains(&refining.len()) && refining.iter().all(|u| u.contains("/summary?")),
        "{sent:?}"
    );
    assert_eq!(later.len(), 1 + refining.len(), "{sent:?}");
    let picker = client.find(Locator::Id("consumer-pick")).await?;
    assert!(!picker.is_displayed().await?, "no picker for a consumer");
    // Newest first.
    assert_eq!(paths[0], XSS_PATH, "markup in a path shows as text");
    assert_eq!(paths[1], "/rest/v1/airdrop/");
    assert_eq!(paths[2], "/rest/v1/collection/098f868479eb/owners");
    assert!(paths[3].starts_with("/rest/v1/airdrop/") && paths[3].len() > 20);
    assert_eq!(paths[4], "/rest/v1/airdrop/");
    let statuses = texts(client, "#history tbody tr td:nth-child(4)").await?;
    assert_eq!(statuses, ["400", "400", "200", "200", "200"]);
    assert_no_alert(client).await;

    // The token: in this tab's sessionStorage only.
    let storage = client
        .execute(
            "return [localStorage.length, sessionStorage.getItem('tower-usage-token'), location.href]",
            vec![],
        )
        .await?;
    assert_eq!(storage[0], 0);
    assert_eq!(storage[1], TOKEN);
    assert!(!storage[2].as_str().unwrap().contains(TOKEN));

    // Headline numbers, the chart, the routes.
    let values = texts(client, "#headline .card .value").await?;
    assert_eq!(values.len(), 4, "{values:?}");
    assert_eq!(values[0], "5");
    assert_eq!(values[1], "40%");
    let bars = client.find_all(Locator::Css("#chart svg rect")).await?;
    assert_eq!(bars.len(), segments, "one rect per hour and status class");
    let classes: Vec<_> = {
        let mut out = Vec::new();
        for bar in &bars {
            out.push(bar.attr("class").await?.unwrap_or_default());
        }
        out
    };
    assert!(classes.contains(&"s2xx".to_owned()) && classes.contains(&"s4xx".to_owned()));
    // The SVG is the page's own: built element by element.
    let svg = client.find(Locator::Css("#chart svg")).await?;
    assert_eq!(svg.attr("role").await?.as_deref(), Some("img"));
    // Latency over time: p50 and p95, one point per hour with requests.
    let lines = client
        .find_all(Locator::Css("#latency svg polyline"))
        .await?;
    assert_eq!(lines.len(), 2);
    for line in &lines {
        let points = line.attr("points").await?.unwrap_or_default();
        assert_eq!(points.split_whitespace().count(), hours, "{points}");
    }
    let dots = client.find_all(Locator::Css("#latency svg circle")).await?;
    assert_eq!(dots.len(), 2 * hours, "a dot per point");
    // Drawn again from the slots' own percentiles, no longer estimates; the
    // p95's comparison with the previous period is not pending.
    let latency = client.find(Locator::Id("latency")).await?;
    assert_eq!(latency.attr("data-exact").await?.as_deref(), Some("yes"));
    assert!(!latency.text().await?.contains("estimates"));
    let p95_delta = text_of(client, "delta-p95").await?;
    assert_ne!(p95_delta, "…");
    // Most requests first; a header sorts by its column, twice reverses.
    let routes = texts(client, "#routes tbody tr td:first-child").await?;
    assert_eq!(routes.len(), 4, "{routes:?}");
    assert_eq!(routes[0], "/rest/v1/airdrop/", "2 requests");
    assert!(routes.contains(&XSS_ROUTE.to_owned()), "{routes:?}");
    click(client, "#routes button[data-sort=route]").await?;
    let by_name = texts(client, "#routes tbody tr td:first-child").await?;
    let mut sorted = routes.clone();
    sorted.sort();
    assert_eq!(by_name, sorted);
    click(client, "#routes button[data-sort=route]").await?;
    sorted.reverse();
    assert_eq!(
        texts(client, "#routes tbody tr td:first-child").await?,
        sorted
    );
    let th = client.find(Locator::Css("#routes th[aria-sort]")).await?;
    assert_eq!(th.attr("aria-sort").await?.as_deref(), Some("descending"));
    click(client, "#routes button[data-sort=requests]").await?;
    let time = client.find(Locator::Css("#history tbody tr time")).await?;
    assert!(time.attr("title").await?.unwrap().ends_with(" UTC"));

    screenshot(client, 1440, 900, "page-1440x900.png").await;
    screenshot(client, 390, 844, "page-390x844.png").await;
    client
        .execute(
            "document.getElementById('filters').scrollIntoView()",
            vec![],
        )
        .await?;
    screenshot(client, 1440, 900, "page-history-1440x900.png").await;
    client.execute("window.scrollTo(0, 0)", vec![]).await?;
    // The label of the token field is hidden with it once a token is in.
    let label = client.find(Locator::Css("#token-form label")).await?;
    assert!(!label.is_displayed().await?);

    // Filter by status: the filter goes into the URL, one row is left.
    filter_status(client, "4xx").await?;
    until("only the 4xx rows", || async {
        let statuses = texts(client, "#history tbody tr td:nth-child(4)").await?;
        Ok((statuses == ["400", "400"]).then_some(()))
    })
    .await;
    assert!(client
        .current_url()
        .await?
        .fragment()
        .unwrap()
        .contains("status=4xx"));

    // Export what is shown: fetched with the token, saved as a file.
    click(client, "#export-csv").await?;
    let downloads = profile.join("downloads");
    let csv = until("the CSV export in the downloads", || async {
        let done = std::fs::read_dir(&downloads).ok().and_then(|dir| {
            dir.filter_map(Result::ok)
                .map(|e| e.path())
                .find(|p| p.extension().is_some_and(|x| x == "csv"))
        });
        Ok(done.and_then(|p| std::fs::read_to_string(p).ok()))
    })
    .await;
    let lines: Vec<&str> = csv.lines().collect();
    assert!(lines[0].starts_with("id,createdAt,"), "{csv}");
    assert_eq!(lines.len(), 3, "a header and the two 4xx records: {csv}");
    assert!(lines[1].contains("<script>alert(2)</script>"), "{csv}");
    let message = text_of(client, "message").await?;
    assert!(message.starts_with("Saved usage-"), "{message}");

    // Open it from the keyboard: the markup of its body and path is text.
    let row = client.find(Locator::Css("#history tbody tr")).await?;
    row.send_keys("\u{E007}").await?; // Enter
    let body = until("the record's request body", || async {
        let text = text_of(client, "req-body").await?;
        Ok((!text.is_empty()).then_some(text))
    })
    .await;
    assert_eq!(body, XSS_BODY);
    let title = text_of(client, "detail-title").await?;
    assert_eq!(title, format!("POST {XSS_PATH}"));
    assert_no_alert(client).await;
    screenshot(client, 390, 844, "page-record-390x844.png").await;
    client.set_window_size(1440, 900).await?;

    // Back, clear the filter, open the reference POST: its JSON body pretty-printed.
    click(client, "#close").await?;
    filter_status(client, "any").await?;
    let rows = until("five rows again", || async {
        let rows = client.find_all(Locator::Css("#history tbody tr")).await?;
        Ok((rows.len() == 5).then_some(rows))
    })
    .await;
    rows[4].click().await?;
    let body = until("the POST's body", || async {
        let text = text_of(client, "req-body").await?;
        Ok((!text.is_empty()).then_some(text))
    })
    .await;
    assert!(body.contains("\"airdrops\": [\n"), "{body}");
    let headers = text_of(client, "req-headers").await?;
    assert!(headers.contains("authorization: [REDACTED]"), "{headers}");
    assert_no_alert(client).await;

    // Live mode: a new request shows on top without a reload.
    click(client, "#close").await?;
    until("the list again", || async {
        let rows = client.find_all(Locator::Css("#history tbody tr")).await?;
        Ok((rows.len() == 5).then_some(()))
    })
    .await;
    click(client, "#live").await?;
    let (status, _, _) = send(
        Request::get(format!("http://{addr}/rest/v1/collection/live/owners"))
            .header("authorization", format!("Bearer {TOKEN}"))
            .body(full(""))
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200);
    handle.flush().await;
    let paths = until("the new request on top", || async {
        let paths = texts(client, "#history tbody tr td:nth-child(3)").await?;
        Ok((paths.len() == 6).then_some(paths))
    })
    .await;
    assert_eq!(paths[0], "/rest/v1/collection/live/owners");
    assert_eq!(paths[1], XSS_PATH, "{paths:?}");
    Ok(())
}

/// A sink that fails: the page says so in words, and shows no data. In a
/// browser that prefers dark pages, the page is dark.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unavailable_sink_is_said_in_words() {
    let driver = start_driver().await;
    let app = axum::Router::new().nest_service(
        "/usage",
        tower_usage::UsageService::new(FailingSink::default()),
    );
    let addr = serve(app).await;
    let profile = tempfile::tempdir().unwrap();
    let client = browser(&driver, profile.path(), &["--force-dark-mode"]).await;
    let result = async {
        client.goto(&format!("http://{addr}/usage/")).await?;
        let dark = client
            .execute(
                "return [matchMedia('(prefers-color-scheme: dark)').matches, \
                 getComputedStyle(document.body).backgroundColor]",
                vec![],
            )
            .await?;
        assert_eq!(dark, json!([true, "rgb(18, 20, 23)"]));
        enter_token(&client, TOKEN).await?;
        let message = until("the 503 message", || async {
            let text = text_of(&client, "message").await?;
            Ok(text.contains("503").then_some(text))
        })
        .await;
        assert_eq!(
            message,
            "Usage storage is unavailable right now (503). Try again in a minute."
        );
        let data = client.find(Locator::Id("data")).await?;
        assert!(!data.is_displayed().await?, "nothing half-drawn");
        screenshot(&client, 390, 844, "page-503-dark-390x844.png").await;
        Ok::<_, CmdError>(())
    }
    .await;
    let _ = client.close().await;
    result.unwrap();
}

/// More records than a page holds: "Load more" follows `nextCursor` until
/// there is none, and the rows are reachable from the keyboard.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paging_by_next_cursor() {
    let driver = start_driver().await;
    let sink = MemorySink::new();
    // `/items/{i}` created 120 - i seconds ago.
    let ago: Vec<Duration> = (0..120).map(|i| Duration::from_secs(120 - i)).collect();
    sink.record(&records_at(&ago)).await.unwrap();
    let (client, _, _profile) = open_page(&driver, tower_usage::UsageService::new(sink)).await;
    let result = async {
        enter_token(&client, TOKEN).await?;
        for (shown, more) in [(50, true), (100, true), (120, false)] {
            let rows = until(&format!("{shown} rows"), || async {
                let rows = client.find_all(Locator::Css("#history tbody tr")).await?;
                Ok((rows.len() == shown).then_some(rows))
            })
            .await;
            // Newest first, no row twice.
            let last = rows[shown - 1]
                .find(Locator::Css("td:nth-child(3)"))
                .await?;
            assert_eq!(last.text().await?, format!("/items/{}", 120 - shown));
            let button = client.find(Locator::Id("more")).await?;
            assert_eq!(button.is_displayed().await?, more, "{shown}");
            if more {
                button.click().await?;
            }
        }
        let tabindex = client
            .find(Locator::Css("#history tbody tr"))
            .await?
            .attr("tabindex")
            .await?;
        assert_eq!(tabindex.as_deref(), Some("0"));
        Ok::<_, CmdError>(())
    }
    .await;
    let _ = client.close().await;
    result.unwrap();
}

/// A record with a binary body: the body can be saved as a file of the bytes
/// that were kept, and the record's id copied (to the clipboard, or shown to
/// copy by hand where the browser refuses).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_binary_body_downloads_and_the_id_copies() {
    let driver = start_driver().await;
    let sink = MemorySink::new();
    let mut record = records_at(&[Duration::from_secs(5)]).remove(0);
    record.method = "POST".into();
    record.request.body = tower_usage::CapturedBody::complete(vec![0u8, 1, 2, 255, 254, 0x80]);
    let id = record.id.clone();
    sink.record(&[record]).await.unwrap();
    let (client, _, _profile) = open_page(&driver, tower_usage::UsageService::new(sink)).await;
    let result = async {
        enter_token(&client, TOKEN).await?;
        rows(&client, 1).await;
        let row = client.find(Locator::Css("#history tbody tr")).await?;
        row.send_keys("\u{E007}").await?; // Enter
        let link = until("the download link", || async {
            let link = client.find(Locator::Id("req-download")).await?;
            Ok(if link.is_displayed().await? {
                Some(link)
            } else {
                None
            })
        })
        .await;
        let href = link.attr("href").await?.unwrap_or_default();
        assert!(href.starts_with("blob:"), "{href}");
        let name = link.attr("download").await?.unwrap_or_default();
        assert_eq!(name, format!("{id}-request.bin"));
        let label = link.text().await?;
        assert!(label.contains("(6 bytes)"), "{label}");
        assert!(
            !displayed(&client, "res-download").await?,
            "a text response has nothing to save as a file"
        );
        assert!(text_of(&client, "req-body")
            .await?
            .contains("00 01 02 ff fe 80"));

        click(&client, "#copy-id").await?;
        let message = until("the copy message", || async {
            let message = text_of(&client, "message").await?;
            Ok(message.contains(&id).then_some(message))
        })
        .await;
        assert!(
            message.starts_with("Copied the record id")
                || message.starts_with("Copy the record id by hand"),
            "{message}"
        );
        Ok::<_, CmdError>(())
    }
    .await;
    let _ = client.close().await;
    result.unwrap();
}

/// `service` nested at `/usage` on 127.0.0.1, and a browser on its page
/// (the profile directory lives as long as the third value).
async fn open_page(
    driver: &Driver,
    service: tower_usage::UsageService<MemorySink>,
) -> (Client, SocketAddr, tempfile::TempDir) {
    let addr = serve(axum::Router::new().nest_service("/usage", service)).await;
    let profile = tempfile::tempdir().unwrap();
    let client = browser(driver, profile.path(), &[]).await;
    client
        .goto(&format!("http://{addr}/usage"))
        .await
        .expect("the page loads");
    (client, addr, profile)
}

async fn displayed(client: &Client, id: &str) -> Result<bool, CmdError> {
    client.find(Locator::Id(id)).await?.is_displayed().await
}

/// Waits for `n` rows in the history.
async fn rows(client: &Client, n: usize) {
    until(&format!("{n} rows in the history"), || async {
        let rows = client.find_all(Locator::Css("#history tbody tr")).await?;
        Ok((rows.len() == n).then_some(()))
    })
    .await
}

/// Waits for the page's `body` to carry `attr="value"`.
async fn body_says(client: &Client, attr: &str, value: &str) {
    until(&format!("{attr}={value}"), || async {
        let body = client.find(Locator::Css("body")).await?;
        Ok(body.attr(attr).await?.filter(|a| a == value))
    })
    .await;
}

/// Records of one consumer at `ago` before now, on one route.
fn records_at(ago: &[Duration]) -> Vec<UsageRecord> {
    let now = time::OffsetDateTime::now_utc();
    ago.iter()
        .enumerate()
        .map(|(i, ago)| {
            let created_at = now - *ago;
            UsageRecord {
                id: UsageRecord::new_id(created_at),
                consumer: Some(tower_usage::hash_token(TOKEN)),
                method: "GET".into(),
                path: format!("/items/{i}"),
                route: Some("/items/{n}".into()),
                status: 200,
                created_at,
                ..UsageRecord::default()
            }
        })
        .collect()
}

/// A custom range (two `datetime-local` inputs) bounds every read, and is
/// kept in the URL: a reload shows the same range.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_custom_range_bounds_every_read_and_stays_in_the_url() {
    let driver = start_driver().await;
    let sink = MemorySink::new();
    let hour = Duration::from_secs(3600);
    // Three requests 3 hours ago, two 30 minutes ago.
    let ago = [hour * 3, hour * 3, hour * 3, hour / 2, hour / 2];
    sink.record(&records_at(&ago)).await.unwrap();
    let (client, addr, _profile) = open_page(&driver, tower_usage::UsageService::new(sink)).await;
    let result = async {
        enter_token(&client, TOKEN).await?;
        until("the five rows of the last day", || async {
            let rows = client.find_all(Locator::Css("#history tbody tr")).await?;
            Ok((rows.len() == 5).then_some(()))
        })
        .await;
        // From 4 hours ago to 2 hours ago, in the browser's local time.
        client
            .execute(
                "function local(ms) { var d = new Date(Date.now() - ms); \
                   return new Date(d.getTime() - d.getTimezoneOffset() * 60e3).toISOString().slice(0, 16); } \
                 document.getElementById('from').value = local(4 * 3600e3); \
                 document.getElementById('to').value = local(2 * 3600e3);",
                vec![],
            )
            .await?;
        click(&client, "#custom button[type=submit]").await?;
        let check = || async {
            until("the three rows of the custom range", || async {
                let rows = client.find_all(Locator::Css("#history tbody tr")).await?;
                let values = texts(&client, "#headline .card .value").await?;
                Ok((rows.len() == 3 && values.first().is_some_and(|v| v == "3")).then_some(()))
            })
            .await;
            let routes = texts(&client, "#routes tbody tr td:nth-child(2)").await?;
            assert_eq!(routes, ["3"], "the routes table is bounded too");
            Ok::<_, CmdError>(())
        };
        check().await?;
        let url = client.current_url().await?;
        let hash = url.fragment().unwrap().to_owned();
        assert!(hash.contains("range=custom"), "{hash}");
        assert!(hash.contains("from=") && hash.contains("to="), "{hash}");
        // The same URL in a fresh load: the same range, the inputs filled.
        client.goto(&format!("http://{addr}/usage/")).await?;
        client.goto(url.as_str()).await?;
        check().await?;
        let from = client.find(Locator::Id("from")).await?.prop("value").await?;
        assert!(from.is_some_and(|v| hash.contains(&v.replace(':', "%3A"))), "{hash}");
        // A named range again: all five.
        click(&client, "#ranges button[data-range=day]").await?;
        until("the five rows again", || async {
            let rows = client.find_all(Locator::Css("#history tbody tr")).await?;
            Ok((rows.len() == 5).then_some(()))
        })
        .await;
        Ok::<_, CmdError>(())
    }
    .await;
    let _ = client.close().await;
    result.unwrap();
}

/// A day of traffic on four routes: a bar per hour in the requests chart and
/// a point per hour on each latency line, the routes by count; the page as
/// the README shows it (`docs/usage-page.png` is a copy of the screenshot).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_day_of_traffic() {
    let driver = start_driver().await;
    let sink = MemorySink::new();
    let mut rng = fastrand::Rng::with_seed(7);
    let routes = [
        ("GET", "/v1/items/{id}", "/v1/items/"),
        ("POST", "/v1/items", "/v1/items"),
        ("GET", "/v1/search", "/v1/search"),
        ("DELETE", "/v1/items/{id}", "/v1/items/"),
    ];
    let ago: Vec<Duration> = (0..600)
        .map(|_| Duration::from_secs(rng.u64(60..23 * 3600)))
        .collect();
    let records: Vec<UsageRecord> = records_at(&ago)
        .into_iter()
        .enumerate()
        .map(|(i, mut r)| {
            let (method, route, path) = routes[(i * 7 + i / 3) % routes.len()];
            r.method = method.into();
            r.route = Some(route.into());
            r.path = if route.ends_with("{id}") {
                format!("{path}{}", rng.u32(1000..9999))
            } else {
                path.into()
            };
            r.status = match rng.u32(0..100) {
                0..=2 => 500,
                3..=9 => 404,
                10..=12 => 429,
                _ if method == "POST" => 201,
                _ => 200,
            };
            r.duration_us = rng.u64(800..4_000) + if route == "/v1/search" { 9_000 } else { 0 };
            r.response.size = rng.u64(200..4_000);
            r.request.body.size = if method == "POST" {
                rng.u64(100..900)
            } else {
                0
            };
            r
        })
        .collect();
    sink.record(&records).await.unwrap();
    let (client, _, _profile) = open_page(&driver, tower_usage::UsageService::new(sink)).await;
    let result = async {
        enter_token(&client, TOKEN).await?;
        until("the day's headline", || async {
            let values = texts(&client, "#headline .card .value").await?;
            Ok((values.first().is_some_and(|v| v == "600")).then_some(()))
        })
        .await;
        let hours = client
            .find_all(Locator::Css("#latency svg circle"))
            .await?
            .len();
        assert!(hours >= 2 * 20, "a point per hour on each line: {hours}");
        let bars = client
            .find_all(Locator::Css("#chart svg rect"))
            .await?
            .len();
        assert!(bars >= 23, "a bar (or more) per hour: {bars}");
        let routes = texts(&client, "#routes tbody tr td:first-child").await?;
        assert_eq!(routes.len(), 3, "{routes:?}");
        client.execute("window.scrollTo(0, 0)", vec![]).await?;
        screenshot(&client, 1440, 900, "page-day-1440x900.png").await;
        Ok::<_, CmdError>(())
    }
    .await;
    let _ = client.close().await;
    result.unwrap();
}

/// An admin (here: the token `ADMIN`) picks a consumer; every read then
/// carries `consumer=`. A consumer's token gets no picker.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_picks_a_consumer() {
    const ADMIN: &str = "the-admin-token-0123456789";
    const OTHER: &str = "another-consumer-token-0123";
    let driver = start_driver().await;
    let sink = MemorySink::new();
    let minute = Duration::from_secs(60);
    let mut records = records_at(&[minute * 5, minute * 4, minute * 3]);
    for mut r in records_at(&[minute * 2, minute]) {
        r.consumer = Some(tower_usage::hash_token(OTHER));
        r.path = format!("/other{}", r.path);
        records.push(r);
    }
    // A record from anywhere, as an admin sees every consumer's: markup in
    // its consumer id, path, route, body and a header.
    let mut hostile = records_at(&[minute * 6]).remove(0);
    hostile.consumer = Some(XSS_CONSUMER.into());
    hostile.method = "POST".into();
    hostile.path = XSS_PATH.into();
    hostile.route = Some(XSS_ROUTE.into());
    hostile.status = 400;
    hostile.request.body = tower_usage::CapturedBody::complete(XSS_BODY.as_bytes().to_vec());
    hostile.request.headers.insert(
        "x-note",
        http::HeaderValue::from_static("<script>alert(5)</script>"),
    );
    records.push(hostile);
    sink.record(&records).await.unwrap();
    let service = tower_usage::UsageService::new(sink)
        .admin(|req| tower_usage::bearer_token(req.headers()) == Some(ADMIN));
    let (client, _, _profile) = open_page(&driver, service).await;
    let result = async {
        enter_token(&client, TOKEN).await?;
        rows(&client, 3).await;
        body_says(&client, "data-admin", "no").await;
        let picker = client.find(Locator::Id("consumer-pick")).await?;
        assert!(!picker.is_displayed().await?);
        click(&client, "#forget").await?;

        enter_token(&client, ADMIN).await?;
        rows(&client, 6).await;
        body_says(&client, "data-admin", "yes").await;
        assert!(picker.is_displayed().await?);
        let mut options = texts(&client, "#consumer option").await?;
        assert_eq!(options.remove(0), "all consumers");
        let mut ids = vec![
            tower_usage::hash_token(TOKEN),
            tower_usage::hash_token(OTHER),
            XSS_CONSUMER.to_owned(),
        ];
        ids.sort();
        assert_eq!(options, ids);
        client
            .find(Locator::Id("consumer"))
            .await?
            .select_by_label(&tower_usage::hash_token(OTHER))
            .await?;
        rows(&client, 2).await;
        let paths = texts(&client, "#history tbody tr td:nth-child(3)").await?;
        assert!(paths.iter().all(|p| p.starts_with("/other/")), "{paths:?}");
        until("the other consumer's headline", || async {
            let values = texts(&client, "#headline .card .value").await?;
            Ok((values.first().is_some_and(|v| v == "2")).then_some(()))
        })
        .await;
        let routes = texts(&client, "#routes tbody tr td:nth-child(2)").await?;
        assert_eq!(routes, ["2"]);
        let hash = client.current_url().await?.fragment().unwrap().to_owned();
        assert!(
            hash.contains(&format!("consumer={}", tower_usage::hash_token(OTHER))),
            "{hash}"
        );
        screenshot(&client, 1440, 900, "page-admin-1440x900.png").await;
        // Back to all consumers: the hostile record's markup is text, in
        // the list and opened, and nothing of it became an element.
        client
            .find(Locator::Id("consumer"))
            .await?
            .select_by_label("all consumers")
            .await?;
        rows(&client, 6).await;
        let paths = texts(&client, "#history tbody tr td:nth-child(3)").await?;
        let at = paths.iter().position(|p| p == XSS_PATH).expect("the hostile row");
        client.find_all(Locator::Css("#history tbody tr")).await?[at]
            .click()
            .await?;
        let body = until("the hostile record's body", || async {
            let text = text_of(&client, "req-body").await?;
            Ok((!text.is_empty()).then_some(text))
        })
        .await;
        assert_eq!(body, XSS_BODY);
        assert_eq!(text_of(&client, "detail-title").await?, format!("POST {XSS_PATH}"));
        let headers = text_of(&client, "req-headers").await?;
        assert!(headers.contains("x-note: <script>alert(5)</script>"), "{headers}");
        let meta = text_of(&client, "detail-meta").await?;
        assert!(meta.contains(XSS_CONSUMER), "{meta}");
        let injected = client
            .execute(
                "return document.querySelectorAll('img, svg [onload], svg[onload], b, \
                 script:not([src]), [onerror], [onmouseover]').length",
                vec![],
            )
            .await?;
        assert_eq!(injected, 0, "markup from a record became elements");
        assert_no_alert(&client).await;
        // Escape closes the record, from the keyboard.
        client.active_element().await?.send_keys("\u{E00C}").await?;
        until("the record closed by Escape", || async {
            Ok((!displayed(&client, "detail").await?).then_some(()))
        })
        .await;
        // At 360 px wide the page fits: no sideways scrolling of the page
        // (a wide table scrolls in its own box).
        client.execute("window.scrollTo(0, 0)", vec![]).await?;
        screenshot(&client, 360, 740, "page-admin-360x740.png").await;
        let overflow = client
            .execute(
                "return document.documentElement.scrollWidth - document.documentElement.clientWidth",
                vec![],
            )
            .await?;
        assert_eq!(overflow, 0, "the page is wider than 360 px");
        Ok::<_, CmdError>(())
    }
    .await;
    let _ = client.close().await;
    result.unwrap();
}

/// Cookie mode: an `IdentifyConsumer` that reads the app's session cookie.
/// Without the cookie the page asks for a token; with it, the page shows the
/// session's records and sends no `Authorization` at all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_apps_session_cookie_needs_no_token() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    let driver = start_driver().await;
    let sink = MemorySink::new();
    let minute = Duration::from_secs(60);
    let mut records = records_at(&[minute * 3, minute * 2]);
    for r in &mut records {
        r.consumer = Some("alice".into());
    }
    sink.record(&records).await.unwrap();
    let authorization = Arc::new(AtomicBool::new(false));
    let seen = authorization.clone();
    let identify = tower_usage::IdentifyConsumer::new(move |req| {
        if req.headers().contains_key(http::header::AUTHORIZATION) {
            seen.store(true, Ordering::SeqCst);
        }
        let cookies = req.headers().get(http::header::COOKIE)?.to_str().ok()?;
        cookies
            .split("; ")
            .any(|c| c == "session=alice-session")
            .then(|| "alice".to_owned())
    });
    let service = tower_usage::UsageService::new(sink).identify_consumer(identify);
    let (client, addr, _profile) = open_page(&driver, service).await;
    let result = async {
        // No session: the token form.
        body_says(&client, "data-cookie", "no").await;
        assert!(displayed(&client, "token").await?);
        assert!(!displayed(&client, "view").await?);

        // The app's session: the records, no token asked for.
        client
            .execute("document.cookie = 'session=alice-session; path=/'", vec![])
            .await?;
        client.goto(&format!("http://{addr}/usage")).await?;
        rows(&client, 2).await;
        assert!(!displayed(&client, "token").await?);
        assert!(!displayed(&client, "forget").await?);
        let values = texts(&client, "#headline .card .value").await?;
        assert_eq!(values[0], "2");
        assert!(
            !authorization.load(Ordering::SeqCst),
            "no Authorization sent"
        );
        Ok::<_, CmdError>(())
    }
    .await;
    let _ = client.close().await;
    result.unwrap();
}

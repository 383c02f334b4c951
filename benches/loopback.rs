//! Throughput on loopback: an axum server with N Tokio workers (default 2) on
//! 127.0.0.1, driven by `wrk`, bare or behind each layer compared. The workload
//! is that of `benches/overhead.rs`: a POST of 1 KiB JSON parsed by the handler,
//! a small JSON reply, 8 request headers with a bearer token.
//!
//! Variants, each in a fresh server process (`benches/common/loopback_server.rs`):
//!
//! * `bare`: the router alone;
//! * `trace`: tower-http's `TraceLayer` (INFO spans, request and response
//!   events) under a `tracing-subscriber` fmt subscriber writing to `io::sink`;
//! * `null`: `UsageLayer` with a sink that stores nothing (capture + writer);
//! * `memory`: `UsageLayer` + `MemorySink`;
//! * `memory-thread`: the same with the writer on a thread of its own (a
//!   current-thread runtime), from `UsageLayer::pair`;
//! * `sqlite`: `UsageLayer` + `SqliteSink` on a file in a temporary directory;
//!
//! each with the system allocator (glibc's malloc) and with mimalloc as the
//! global allocator of the server binary (the `loopback_server` and
//! `loopback_server_mimalloc` examples, which this bench builds first).
//!
//! Rounds of all variants are interleaved, so that a change in the machine's load
//! touches every variant alike; the table gives the medians over the rounds of
//! req/s, of wrk's p50 and p99 latency, and of the server's CPU time per request
//! (user + system, from `/proc/PID/stat`: steadier than req/s on a shared
//! machine). Ratios are to `bare` with the same allocator. After each run the
//! server flushes its writer and the bench checks that no capture was dropped.
//!
//! Not run in CI. Needs `wrk` (Debian: `apt-get install wrk`) and Linux.
//!
//! ```text
//! cargo bench --bench loopback                 # 5 rounds of 6 s per variant, ~9 minutes
//! cargo bench --bench loopback -- bare memory  # only these variants
//! ```
//!
//! Settings (environment): `TOWER_USAGE_LOOPBACK_PIN` (none; `SERVER:WRK`,
//! two CPU lists for `taskset -c`, e.g. `1:0`: the server runs on the first,
//! wrk on the second; on a 2-core machine `1:0` with
//! `TOWER_USAGE_LOOPBACK_THREADS=1` and `TOWER_USAGE_LOOPBACK_CONNECTIONS=32`
//! gives the server one core of its own, so its req/s is about one over its
//! CPU per request and the spread between server processes narrows, for
//! comparing two builds; unlike a real server's setting, so not the
//! default), `TOWER_USAGE_LOOPBACK_ROUNDS` (5),
//! `TOWER_USAGE_LOOPBACK_SECS` (6, per measurement, after a 2 s warm-up),
//! `TOWER_USAGE_LOOPBACK_WORKERS` (2, the server's Tokio workers),
//! `TOWER_USAGE_LOOPBACK_CONNECTIONS` (64), `TOWER_USAGE_LOOPBACK_THREADS` (2,
//! wrk's), `TOWER_USAGE_LOOPBACK_ALLOCATORS` (`system,mimalloc`),
//! `TOWER_USAGE_LOOPBACK_BASELINE_DIR` (none: a directory holding the two
//! server examples built from another commit; every variant but `trace` then
//! runs from both builds in the same rounds, the two builds in turn first, for
//! a before and after measured side by side; the baseline rows' ratios are to
//! the baseline build's own `bare`, since code placement alone moves a bare
//! router by a few percent between builds):
//!
//! ```text
//! git worktree add /tmp/before <commit>
//! (cd /tmp/before && CARGO_TARGET_DIR=/tmp/before/target cargo build --release \
//!     --features sqlite --example loopback_server --example loopback_server_mimalloc)
//! TOWER_USAGE_LOOPBACK_BASELINE_DIR=/tmp/before/target/release/examples \
//!     cargo bench --bench loopback -- bare memory
//! ```

#[path = "common/http_app.rs"]
mod http_app;

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};

/// The server variants, in report order (the names the server takes).
const VARIANTS: &[(&str, &str)] = &[
    ("bare", "bare router"),
    ("trace", "`TraceLayer` + fmt to `io::sink`"),
    ("null", "`UsageLayer` + a sink that stores nothing"),
    ("memory", "`UsageLayer` + `MemorySink`"),
    (
        "memory-thread",
        "`UsageLayer` + `MemorySink`, writer on its own thread (`pair()`)",
    ),
    ("sqlite", "`UsageLayer` + `SqliteSink` (file)"),
];

/// The allocators: the example that has each as its global allocator.
const ALLOCATORS: &[(&str, &str)] = &[
    ("system", "loopback_server"),
    ("mimalloc", "loopback_server_mimalloc"),
];

/// The bearer token and other headers of `http_app::request`.
const TOKEN: &str = "IncYP3edd3blm2ypLGFFOYwQsC5vff3n";

fn setting(name: &str, default: u64) -> u64 {
    std::env::var(format!("TOWER_USAGE_LOOPBACK_{name}"))
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// One measurement of one server process.
#[derive(Debug, Clone, Copy)]
struct Run {
    rps: f64,
    p50_us: f64,
    p99_us: f64,
    /// The server's CPU time (user + system) per request, in microseconds.
    cpu_us: f64,
    /// Captures the writer dropped (its queue was full), of all it captured
    /// (warm-up included).
    dropped: u64,
    captured: u64,
}

fn main() {
    // `cargo bench` passes `--bench`; other arguments name variants to run.
    let filter: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let variants: Vec<_> = VARIANTS
        .iter()
        .filter(|(v, _)| filter.is_empty() || filter.iter().any(|f| f == v))
        .collect();
    let allocators: Vec<_> = {
        let wanted = std::env::var("TOWER_USAGE_LOOPBACK_ALLOCATORS")
            .unwrap_or_else(|_| "system,mimalloc".into());
        ALLOCATORS
            .iter()
            .filter(|(a, _)| wanted.split(',').any(|w| w.trim() == *a))
            .collect()
    };
    let rounds = setting("ROUNDS", 5).max(1);
    let secs = setting("SECS", 6).max(1);
    let connections = setting("CONNECTIONS", 64).max(1);
    let threads = setting("THREADS", 2).max(1);
    let workers = setting("WORKERS", 2).max(1);
    let pin = std::env::var("TOWER_USAGE_LOOPBACK_PIN").ok().map(|pin| {
        let (server, wrk) = pin.split_once(':').unwrap_or_else(|| {
            eprintln!("TOWER_USAGE_LOOPBACK_PIN: {pin:?} is not SERVER:WRK (e.g. 1:0)");
            std::process::exit(1)
        });
        Pin {
            server: server.to_owned(),
            wrk: wrk.to_owned(),
        }
    });

    if Command::new("wrk").arg("--version").output().is_err() {
        eprintln!("the loopback bench needs wrk on PATH (Debian: apt-get install wrk)");
        std::process::exit(1);
    }
    let servers = build_servers();
    let dir = tempfile::tempdir().expect("a temporary directory");
    let script = dir.path().join("post.lua");
    std::fs::write(&script, wrk_script()).expect("write the wrk script");
    let clk_tck = clock_ticks();

    // A build to compare with, measured in the same rounds: every variant but
    // `trace` (which runs none of this crate's code) runs from both builds.
    let baseline = std::env::var_os("TOWER_USAGE_LOOPBACK_BASELINE_DIR").map(PathBuf::from);
    if let Some(dir) = &baseline {
        for (_, example) in &allocators {
            let exe = dir.join(example);
            if !exe.is_file() {
                eprintln!(
                    "TOWER_USAGE_LOOPBACK_BASELINE_DIR: {} is missing (build the baseline's \
                     loopback_server examples first, see the bench's docs)",
                    exe.display()
                );
                std::process::exit(1);
            }
        }
    }
    let builds: Vec<(&Path, bool)> = std::iter::once((servers.as_path(), false))
        .chain(baseline.as_deref().map(|dir| (dir, true)))
        .collect();
    let in_baseline = |variant: &str| variant != "trace";

    let load_before = load_average();
    let mut runs: HashMap<(usize, usize, bool), Vec<Run>> = HashMap::new();
    for round in 1..=rounds {
        for (a, (alloc, example)) in allocators.iter().enumerate() {
            for (v, (variant, _)) in variants.iter().enumerate() {
                // Each build goes first in every other round.
                let order: Vec<&(&Path, bool)> = if round % 2 == 0 {
                    builds.iter().rev().collect()
                } else {
                    builds.iter().collect()
                };
                for &&(dir, is_baseline) in &order {
                    if is_baseline && !in_baseline(variant) {
                        continue;
                    }
                    let run = measure(
                        &dir.join(example),
                        variant,
                        workers,
                        &script,
                        (threads, connections, secs),
                        pin.as_ref(),
                        clk_tck,
                    );
                    let name = if is_baseline {
                        format!("{variant} (baseline)")
                    } else {
                        (*variant).to_owned()
                    };
                    eprintln!(
                        "round {round}/{rounds} {name:<24} {alloc:<9} {:>9.0} req/s  p50 {:>7.0} us  p99 {:>7.0} us  cpu {:>6.2} us/req  dropped {}/{}",
                        run.rps, run.p50_us, run.p99_us, run.cpu_us, run.dropped, run.captured
                    );
                    runs.entry((a, v, is_baseline)).or_default().push(run);
                }
            }
        }
    }
    let load_after = load_average();

    let pinned = pin.as_ref().map_or(String::new(), |p| {
        format!(", server on CPUs {} and wrk on CPUs {}", p.server, p.wrk)
    });
    println!(
        "\nloopback: {workers} Tokio workers, wrk -t{threads} -c{connections} -d{secs}s{pinned}, \
         {rounds} rounds, median per variant; load average before {load_before}, after {load_after}\n"
    );
    if let Some(dir) = &baseline {
        println!("baseline build: {}\n", dir.display());
    }
    println!("| variant | allocator | req/s | ratio to bare | p50 | p99 | server CPU per request | CPU ratio | req/s per round |");
    println!("|---|---|---:|---:|---:|---:|---:|---:|---|");
    for (a, (alloc, _)) in allocators.iter().enumerate() {
        for &(_, is_baseline) in &builds {
            // Each build's rows against its own bare router.
            let bare = variants
                .iter()
                .position(|(v, _)| *v == "bare")
                .and_then(|b| runs.get(&(a, b, is_baseline)));
            let ratio = |row: &[Run], field: fn(&Run) -> f64| {
                bare.map_or("–".to_owned(), |bare| {
                    format!("{:.2}x", median(row, field) / median(bare, field))
                })
            };
            for (v, (_, label)) in variants.iter().enumerate() {
                let Some(row) = runs.get(&(a, v, is_baseline)) else {
                    continue;
                };
                let mut each: Vec<String> = row.iter().map(|r| format!("{:.0}", r.rps)).collect();
                let dropped: u64 = row.iter().map(|r| r.dropped).sum();
                if dropped > 0 {
                    let captured: u64 = row.iter().map(|r| r.captured).sum();
                    each.push(format!("(dropped {dropped} of {captured} captures)"));
                }
                println!(
                    "| {label}{} | {alloc} | {:.0} | {} | {} | {} | {:.1} µs | {} | {} |",
                    if is_baseline { ", baseline build" } else { "" },
                    median(row, |r| r.rps),
                    ratio(row, |r| r.rps),
                    latency(median(row, |r| r.p50_us)),
                    latency(median(row, |r| r.p99_us)),
                    median(row, |r| r.cpu_us),
                    ratio(row, |r| r.cpu_us),
                    each.join(", ")
                );
            }
        }
    }
}

/// The median; of an even number of runs, the mean of the middle two.
fn median(runs: &[Run], field: impl Fn(&Run) -> f64) -> f64 {
    let mut v: Vec<f64> = runs.iter().map(field).collect();
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    if v.len().is_multiple_of(2) {
        (v[mid - 1] + v[mid]) / 2.0
    } else {
        v[mid]
    }
}

fn latency(us: f64) -> String {
    if us >= 1000.0 {
        format!("{:.2} ms", us / 1000.0)
    } else {
        format!("{us:.0} µs")
    }
}

/// Builds the two server examples (release, with the `sqlite` feature for the
/// `sqlite` variant); the directory they are in.
fn build_servers() -> PathBuf {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let status = Command::new(cargo)
        .args(["build", "--release", "--features", "sqlite"])
        .args(["--example", "loopback_server"])
        .args(["--example", "loopback_server_mimalloc"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .status()
        .expect("run cargo build");
    assert!(status.success(), "building the loopback servers failed");
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target"))
        .join("release/examples")
}

/// The wrk script: the request of `http_app::request` (wrk adds `Host` and
/// `Content-Length`, which make 8 headers).
fn wrk_script() -> String {
    let body = String::from_utf8(http_app::payload()).expect("the payload is JSON");
    format!(
        r#"wrk.method = "POST"
wrk.path = "/v1/items/abc123"
wrk.body = [==[{body}]==]
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer {TOKEN}"
wrk.headers["User-Agent"] = "bench/1.0"
wrk.headers["Accept"] = "application/json"
wrk.headers["Accept-Encoding"] = "gzip, deflate, br"
wrk.headers["X-Request-Id"] = "5f0c7a8e-4b1d-4a5e-9d61-0e4f3b2a1c9d"
"#
    )
}

/// Starts a server, warms it up for 2 s, measures for `secs`, stops it and
/// checks its writer kept up.
/// The CPUs the server and wrk run on (`taskset -c` lists).
struct Pin {
    server: String,
    wrk: String,
}

/// `program`, on the CPUs `cpus` when given (`taskset` execs it: the same
/// process id).
fn command(program: impl AsRef<std::ffi::OsStr>, cpus: Option<&str>) -> Command {
    match cpus {
        Some(cpus) => {
            let mut taskset = Command::new("taskset");
            taskset.args(["-c", cpus]).arg(program);
            taskset
        }
        None => Command::new(program),
    }
}

fn measure(
    exe: &Path,
    variant: &str,
    workers: u64,
    script: &Path,
    (threads, connections, secs): (u64, u64, u64),
    pin: Option<&Pin>,
    clk_tck: f64,
) -> Run {
    let mut server = command(exe, pin.map(|p| p.server.as_str()))
        .env("TOWER_USAGE_LOOPBACK_VARIANT", variant)
        .env("TOWER_USAGE_LOOPBACK_WORKERS", workers.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("start {}: {e}", exe.display()));
    let mut out = BufReader::new(server.stdout.take().expect("piped stdout"));
    let mut line = String::new();
    out.read_line(&mut line).expect("the server's first line");
    let addr = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("the {variant} server said {line:?}"))
        .to_owned();
    let url = format!("http://{addr}/v1/items/abc123");
    let wrk = |secs: u64| {
        let output = command("wrk", pin.map(|p| p.wrk.as_str()))
            .args(["-t", &threads.to_string(), "-c", &connections.to_string()])
            .args(["-d", &format!("{secs}s"), "--latency", "-s"])
            .arg(script)
            .arg(&url)
            .output()
            .expect("run wrk");
        assert!(output.status.success(), "wrk failed: {output:?}");
        String::from_utf8_lossy(&output.stdout).into_owned()
    };
    wrk(2);
    let cpu_before = cpu_ticks(server.id());
    let report = wrk(secs);
    let cpu = cpu_ticks(server.id()) - cpu_before;
    let (captured, dropped) = stop(&mut server, out, variant);
    assert!(
        !report.contains("Non-2xx"),
        "the {variant} server answered errors:\n{report}"
    );
    let requests = field(&report, "requests in").expect("wrk's request count");
    Run {
        rps: field(&report, "Requests/sec:").expect("wrk's Requests/sec"),
        p50_us: percentile(&report, "50%"),
        p99_us: percentile(&report, "99%"),
        cpu_us: cpu / clk_tck * 1e6 / requests,
        dropped,
        captured,
    }
}

/// The variants whose writer may fall behind and drop captures (reported in the
/// table): `SqliteSink` is bound by the disk, and a writer on a thread of its
/// own gets only its share of a machine whose cores are all busy (the Tokio
/// workers serving requests, wrk, anything else running).
const MAY_DROP: &[&str] = &["sqlite", "memory-thread"];

/// Closes the server's stdin and reads its writer stats: (captured, dropped).
/// No sink may fail, and no other writer may fall behind ([`MAY_DROP`]):
/// otherwise a variant that skipped work would look cheaper.
fn stop(server: &mut Child, out: BufReader<ChildStdout>, variant: &str) -> (u64, u64) {
    drop(server.stdin.take());
    let (mut captured, mut dropped) = (0, 0);
    for line in out.lines() {
        let line = line.expect("the server's output");
        let Some(stats) = line.strip_prefix("stats ") else {
            continue;
        };
        let stat = |name: &str| -> u64 {
            stats
                .split_whitespace()
                .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("no {name} in {stats:?}"))
        };
        (captured, dropped) = (stat("captured"), stat("dropped"));
        assert_eq!(stat("failed"), 0, "the {variant} sink failed: {stats}");
        assert!(
            dropped == 0 || MAY_DROP.contains(&variant),
            "the {variant} writer did not keep up: {stats}"
        );
    }
    let status = server.wait().expect("wait for the server");
    assert!(status.success(), "the {variant} server failed: {status}");
    (captured, dropped)
}

/// The number on the line of wrk's report that holds `label`: the first
/// number after it (`Requests/sec:  70000.00`), or before it (`700000 requests
/// in 10.00s`).
fn field(report: &str, label: &str) -> Option<f64> {
    let line = report.lines().find(|l| l.contains(label))?;
    let (before, after) = line.split_once(label)?;
    after
        .split_whitespace()
        .next()
        .and_then(|w| w.parse().ok())
        .or_else(|| before.split_whitespace().last()?.parse().ok())
}

/// A latency percentile of wrk's `--latency` report, in microseconds.
fn percentile(report: &str, label: &str) -> f64 {
    let value = report
        .lines()
        .map(str::trim)
        .find_map(|l| l.strip_prefix(label))
        .unwrap_or_else(|| panic!("no {label} latency in wrk's report:\n{report}"))
        .trim();
    let split = value
        .find(|c: char| c.is_ascii_alphabetic())
        .unwrap_or(value.len());
    let (number, unit) = value.split_at(split);
    let number: f64 = number.parse().expect("a latency");
    number
        * match unit {
            "us" => 1.0,
            "ms" => 1e3,
            "s" => 1e6,
            other => panic!("unknown latency unit {other:?}"),
        }
}

/// User + system CPU time of a process so far, in clock ticks.
fn cpu_ticks(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("/proc/PID/stat");
    // The fields after the command name (which may hold spaces) start at 3.
    let rest = &stat[stat.rfind(')').expect("a stat line") + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| fields[i - 3].parse::<f64>().expect("a tick count");
    ticks(14) + ticks(15)
}

/// Clock ticks per second (`getconf CLK_TCK`; 100 on Linux).
fn clock_ticks() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok()?.trim().parse().ok())
        .unwrap_or(100.0)
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

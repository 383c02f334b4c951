//! `SqliteSink` under file faults, through a real axum app on 127.0.0.1 with
//! `GET /usage` mounted: the database file deleted or replaced while running
//! (the sink reopens the path, says so, and `/usage` never answers from the
//! file that is gone), and a volume that fills up (a small tmpfs: the writer
//! retries, and everything is written once space returns; a restart on a
//! nearly full volume works).
#![cfg(feature = "sqlite")]

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use axum::routing::get;
use axum::Router;
use common::*;
use http::{Request, StatusCode};
use tower_usage::{SqliteSink, UsageHandle, UsageLayer, UsageService};

const TOKEN: &str = "Bearer sqlite-faults";

fn app(sink: SqliteSink, layer: UsageLayer<SqliteSink>) -> Router {
    Router::new()
        .route("/ok", get(|| async { "ok" }))
        .layer(layer)
        .route_service("/usage", UsageService::new(sink))
}

async fn get_ok(addr: SocketAddr, n: usize) {
    for _ in 0..n {
        let (status, _, _) = send(
            Request::get(format!("http://{addr}/ok"))
                .header("authorization", TOKEN)
                .body(full(""))
                .unwrap(),
        )
        .await;
        assert_eq!(status, StatusCode::OK);
    }
}

/// `GET /usage?limit=1000` as the test's consumer: the status and how many
/// records the page holds.
async fn usage(addr: SocketAddr) -> (StatusCode, usize) {
    let (status, _, body) = send(
        Request::get(format!("http://{addr}/usage?limit=1000"))
            .header("authorization", TOKEN)
            .body(full(""))
            .unwrap(),
    )
    .await;
    if status != StatusCode::OK {
        return (status, 0);
    }
    let page: serde_json::Value = serde_json::from_slice(&body).unwrap();
    (status, page["requests"].as_array().map_or(0, Vec::len))
}

async fn written(handle: &UsageHandle, n: u64) {
    eventually("every exchange captured", || handle.stats().captured >= n).await;
    assert!(handle
        .flush_timeout(Duration::from_secs(20))
        .await
        .is_complete());
    let s = handle.stats();
    assert_eq!((s.written, s.failed, s.dropped), (n, 0, 0), "{s:?}");
}

fn rows(path: &Path) -> i64 {
    rusqlite::Connection::open(path)
        .unwrap()
        .query_row("SELECT count(*) FROM usage_records", [], |r| r.get(0))
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_database_file_is_noticed_reopened_and_never_read() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("usage.db");
    let sink = SqliteSink::open(&path).unwrap();
    let layer = UsageLayer::new(sink.clone()).max_delay(Duration::from_millis(5));
    let handle = layer.handle();
    let addr = serve(app(sink, layer)).await;

    get_ok(addr, 20).await;
    written(&handle, 20).await;
    assert_eq!(usage(addr).await, (StatusCode::OK, 20));

    std::fs::remove_file(&path).unwrap();
    // The file is gone: /usage does not answer from it.
    let (status, n) = usage(addr).await;
    assert_eq!(
        (status, n),
        (StatusCode::SERVICE_UNAVAILABLE, 0),
        "answered from a deleted file"
    );

    get_ok(addr, 10).await;
    written(&handle, 30).await;
    assert!(path.exists(), "the writer recreated the file");
    assert_eq!(rows(&path), 10, "the new records are in the new file");
    assert_eq!(usage(addr).await, (StatusCode::OK, 10));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replaced_database_file_is_written_and_read_from_then_on() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("usage.db");
    let sink = SqliteSink::open(&path).unwrap();
    let layer = UsageLayer::new(sink.clone()).max_delay(Duration::from_millis(5));
    let handle = layer.handle();
    let addr = serve(app(sink, layer)).await;
    get_ok(addr, 5).await;
    written(&handle, 5).await;
    // Idle for a second: the writer checkpoints and empties its WAL. (SQLite
    // names a WAL after the path, so a file moved over a database whose WAL
    // still holds frames would get them replayed: SQLite does not support
    // replacing a file in use, and neither can the sink.)
    tokio::time::sleep(Duration::from_millis(1500)).await;

    // Another tower-usage database, moved over the path (a restore, say).
    let other = dir.path().join("other.db");
    drop(SqliteSink::open(&other).unwrap());
    std::fs::rename(&other, &path).unwrap();
    assert_eq!(usage(addr).await, (StatusCode::OK, 0), "reads the new file");
    get_ok(addr, 7).await;
    written(&handle, 12).await;
    assert_eq!(rows(&path), 7);
    assert_eq!(usage(addr).await, (StatusCode::OK, 7));
}

/// Mounts a tmpfs of `size` at `dir`; `Err(reason)` when the kernel (or the
/// lack of privilege) refuses.
fn mount_tmpfs(dir: &Path, size: &str) -> Result<(), String> {
    let out = Command::new("mount")
        .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
        .arg(dir)
        .output()
        .map_err(|e| format!("running mount: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_owned())
    }
}

struct Unmount<'a>(&'a Path);

impl Drop for Unmount<'_> {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(self.0).status();
    }
}

/// Fills the volume of `dir` with a file until a write fails; returns its path.
fn fill(dir: &Path, name: &str) -> std::path::PathBuf {
    use std::io::Write;
    let path = dir.join(name);
    let mut f = std::fs::File::create(&path).unwrap();
    let chunk = vec![0u8; 16 * 1024];
    while f.write_all(&chunk).and_then(|_| f.sync_data()).is_ok() {}
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_volume_is_ridden_out_and_a_restart_on_it_works() {
    let mnt = tempfile::tempdir().unwrap();
    if let Err(reason) = mount_tmpfs(mnt.path(), "4m") {
        println!(
            "SKIPPED a_full_volume_is_ridden_out_and_a_restart_on_it_works: cannot mount a tmpfs ({reason})"
        );
        eprintln!("SKIPPED: cannot mount a tmpfs ({reason})");
        return;
    }
    let _unmount = Unmount(mnt.path());
    let path = mnt.path().join("usage.db");
    let sink = SqliteSink::open(&path).unwrap();
    let layer = UsageLayer::new(sink.clone()).max_delay(Duration::from_millis(5));
    let handle = layer.handle();
    let addr = serve(app(sink, layer)).await;
    get_ok(addr, 10).await;
    written(&handle, 10).await;

    // The volume fills up: writes fail, the writer retries, requests are answered.
    let filler = fill(mnt.path(), "filler");
    get_ok(addr, 40).await;
    eventually("a write failed on the full volume", || {
        handle.stats().retried > 0
    })
    .await;
    let s = handle.stats();
    assert_eq!((s.failed, s.dropped), (0, 0), "{s:?}");
    assert!(s.pending() > 0, "{s:?}");

    // Space returns: everything is written.
    std::fs::remove_file(&filler).unwrap();
    written(&handle, 50).await;
    assert_eq!(rows(&path), 50);
    assert_eq!(usage(addr).await, (StatusCode::OK, 50));

    // Idle, the writer checkpoints and cuts the WAL to nothing: the space it
    // held is the volume's again.
    let wal = mnt.path().join("usage.db-wal");
    eventually("the WAL cut to zero bytes", || {
        std::fs::metadata(&wal).map_or(true, |m| m.len() == 0)
    })
    .await;

    // A restart on a nearly full volume (256 KiB free): close, fill, open, write.
    drop(handle);
    let filler = fill(mnt.path(), "filler2");
    let len = std::fs::metadata(&filler).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&filler)
        .unwrap()
        .set_len(len.saturating_sub(256 * 1024))
        .unwrap();
    let sink = SqliteSink::open(&path).expect("opens on a nearly full volume");
    let layer = UsageLayer::new(sink.clone()).max_delay(Duration::from_millis(5));
    let handle = layer.handle();
    let addr = serve(app(sink, layer)).await;
    get_ok(addr, 20).await;
    written(&handle, 20).await;
    assert_eq!(rows(&path), 70);
}

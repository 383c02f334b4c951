//! Fault helpers shared by the writer's and the spool's fault tests: a sink
//! that can be switched down (temporary errors) or to refusing (permanent
//! ones), a captured log to count lines in, and a small volume (a tmpfs) to
//! fill up. Included with `#[path = "support/faults.rs"]` next to `mod
//! common;`.
#![allow(dead_code, unreachable_pub, missing_docs)]

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use tower_usage::{SinkError, UsagePage, UsageQuery, UsageRecord, UsageSink};

use crate::common::{full, send, CollectSink};

/// Fails with a temporary error while `down`, or with a permanent one while
/// `refuse`; stores otherwise.
#[derive(Clone, Default)]
pub struct Switch {
    pub down: Arc<AtomicBool>,
    pub refuse: Arc<AtomicBool>,
    pub inner: CollectSink,
}

#[async_trait::async_trait]
impl UsageSink for Switch {
    async fn record(&self, batch: &[UsageRecord]) -> Result<(), SinkError> {
        if self.down.load(Ordering::SeqCst) {
            return Err(SinkError::unavailable(std::io::Error::other("down")));
        }
        if self.refuse.load(Ordering::SeqCst) {
            return Err(SinkError::message(tower_usage::SinkErrorKind::Config, "no"));
        }
        self.inner.record(batch).await
    }

    async fn query(&self, query: &UsageQuery) -> Result<UsagePage, SinkError> {
        if self.down.load(Ordering::SeqCst) {
            return Err(SinkError::unavailable(std::io::Error::other("down")));
        }
        self.inner.query(query).await
    }
}

/// Every log line, for a test to count (install it as the global
/// subscriber's writer, once per test binary).
#[derive(Clone, Default)]
pub struct Log(Arc<Mutex<Vec<u8>>>);

impl Write for Log {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Log {
    /// Installs a global subscriber (INFO and up, no colours) writing here.
    pub fn install() -> Self {
        let log = Log::default();
        let writer = log.clone();
        tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .with_max_level(tracing::Level::INFO)
            .init();
        log
    }

    /// Lines at `level` that contain `text`.
    pub fn count(&self, level: &str, text: &str) -> usize {
        String::from_utf8_lossy(&self.0.lock().unwrap())
            .lines()
            .filter(|l| l.contains(level) && l.contains(text))
            .count()
    }
}

/// Serves `GET /ok` under `layer` on 127.0.0.1; returns its address.
pub async fn serve_ok<S: UsageSink>(layer: tower_usage::UsageLayer<S>) -> SocketAddr {
    let app = axum::Router::new()
        .route("/ok", axum::routing::get(|| async { "ok" }))
        .layer(layer);
    crate::common::serve(app).await
}

/// `GET http://{addr}{path}`, which must be answered `200`.
pub async fn get_ok(addr: SocketAddr, path: &str) {
    let (status, _, _) = send(
        http::Request::get(format!("http://{addr}{path}"))
            .body(full(""))
            .unwrap(),
    )
    .await;
    assert_eq!(status, http::StatusCode::OK);
}

/// A tmpfs of `size` mounted on a new temporary directory (unmounted when
/// the `Volume` is dropped), or `None`, with a line saying why `test` is
/// skipped, when the kernel (or the lack of privilege) refuses.
pub fn small_volume(test: &str, size: &str) -> Option<Volume> {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new("mount")
        .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
        .arg(dir.path())
        .output();
    let refused = match out {
        Ok(out) if out.status.success() => return Some(Volume(dir)),
        Ok(out) => String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        Err(e) => format!("running mount: {e}"),
    };
    println!("SKIPPED {test}: cannot mount a tmpfs ({refused})");
    eprintln!("SKIPPED {test}: cannot mount a tmpfs ({refused})");
    None
}

/// A mounted tmpfs.
pub struct Volume(tempfile::TempDir);

impl Volume {
    pub fn path(&self) -> &Path {
        self.0.path()
    }

    /// Fills the volume with a file until a write fails; returns its path.
    pub fn fill(&self) -> PathBuf {
        let path = self.path().join("filler");
        let mut f = std::fs::File::create(&path).unwrap();
        let chunk = vec![0u8; 4096];
        while f.write_all(&chunk).and_then(|_| f.sync_data()).is_ok() {}
        path
    }
}

impl Drop for Volume {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(self.0.path()).status();
    }
}

//! Exports (`GET /usage?format=ndjson|csv`): every matching record, read from
//! the sink one page at a time while the body is sent. The CSV form is in
//! `csv.rs`, the watchdog against clients that stop reading in `stall.rs`.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{ready, Context, Poll};
use std::time::{Duration, Instant};

pub(super) use self::csv::{CSV_BODY_COLUMNS, CSV_COLUMNS};
pub(super) use stall::Stall;
use stall::{watchdog, Watched};

mod csv;
mod stall;

use bytes::Bytes;
use http_body::Frame;

use super::params::Format;
use crate::record::{GrpcMessageJsonFn, RecordView};
use crate::sink::{UsagePage, UsageQuery, UsageSink};
use crate::{SinkError, SinkErrorKind, UsageRecord};

/// A frame ends after the record that takes it past this many bytes (256
/// KiB): with the page in hand, what an export holds at once.
const FRAME_BYTES: usize = 256 * 1024;

type PageFuture = Pin<Box<dyn Future<Output = Result<UsagePage, SinkError>> + Send>>;

/// Asks the sink for a page, within the query timeout.
pub(super) type Fetch = Arc<dyn Fn(UsageQuery) -> PageFuture + Send + Sync>;

/// The page fetcher of `sink`, each page within `timeout`.
pub(super) fn fetcher<S: UsageSink + Clone>(sink: S, timeout: Duration) -> Fetch {
    Arc::new(move |query: UsageQuery| {
        let sink = sink.clone();
        Box::pin(async move {
            match tokio::time::timeout(timeout, sink.query(&query)).await {
                Ok(page) => page,
                Err(_elapsed) => Err(SinkError::message(
                    SinkErrorKind::Unavailable,
                    format!(
                        "the sink did not answer within the query timeout ({} ms)",
                        timeout.as_millis()
                    ),
                )),
            }
        })
    })
}

/// How records are written.
pub(super) struct Render {
    pub(super) format: Format,
    pub(super) bodies: bool,
    pub(super) grpc_json: Option<GrpcMessageJsonFn>,
    /// CSV cells that start a formula get a `'` in front
    /// ([`UsageService::csv_formula_guard`](super::UsageService::csv_formula_guard)).
    pub(super) neutralize: bool,
}

/// The state of an export body: the page in hand, or the query for the next
/// one and its future.
pub(crate) struct Export {
    fetch: Fetch,
    /// The next page's query (its cursor moves on).
    query: UsageQuery,
    render: Render,
    /// The records of the page in hand not yet written (a page is taken in
    /// when it arrives: its cursor is noted at once).
    page: std::vec::IntoIter<UsageRecord>,
    /// The fetch of the next page, in flight. In a `Mutex` only so that the
    /// body is `Sync`: it is reached through `&mut self`, never locked.
    fetching: Mutex<Option<PageFuture>>,
    /// What the watchdog may take away from a stalled export: the page in
    /// hand (`page` above is moved in here between two polls) and the slots
    /// the export holds.
    watched: Arc<Mutex<Watched>>,
    /// The CSV header row is written.
    header_written: bool,
    /// No more pages, or the body failed.
    done: bool,
    /// Records written so far.
    written: u64,
}

impl Export {
    /// An export whose first page is already fetched (so that a sink that fails
    /// at once is answered with a status, not a cut body).
    ///
    /// Spawns its watchdog (see [`Stall`]) on the current tokio runtime.
    pub(super) fn new(
        fetch: Fetch,
        query: UsageQuery,
        render: Render,
        first: UsagePage,
        stall: Stall,
    ) -> Self {
        let watched = Arc::new(Mutex::new(Watched {
            page: Vec::new().into_iter(),
            held: Some(stall.held),
            last: Instant::now(),
            fetching: false,
            cut: false,
        }));
        let mut export = Self {
            fetch,
            query,
            render,
            page: Vec::new().into_iter(),
            fetching: Mutex::new(None),
            watched,
            header_written: false,
            done: false,
            written: 0,
        };
        export.take_in(first);
        export.put_back();
        watchdog(Arc::downgrade(&export.watched), stall.timeout);
        export
    }

    /// Moves the page in hand into the watched state, between two polls.
    fn put_back(&mut self) {
        let mut watched = self.watched.lock().unwrap_or_else(PoisonError::into_inner);
        watched.page = std::mem::replace(&mut self.page, Vec::new().into_iter());
    }

    /// Makes `page` the page in hand, and notes where the next one starts.
    fn take_in(&mut self, page: UsagePage) {
        match page.next_cursor {
            Some(cursor) => self.query.cursor = Some(cursor),
            None => self.done = true,
        }
        self.page = page.records.into_iter();
    }

    pub(super) fn is_end_stream(&self) -> bool {
        self.done
            && self
                .watched
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .page
                .len()
                == 0
            && self.header_written_or_not_needed()
    }

    /// Whether nothing is left to write before the records: the CSV header
    /// row is written with the first frame, even when no record matches.
    fn header_written_or_not_needed(&self) -> bool {
        self.header_written || self.render.format != Format::Csv
    }

    pub(super) fn poll_frame(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, SinkError>>> {
        let watched = Arc::clone(&self.watched);
        let mut w = watched.lock().unwrap_or_else(PoisonError::into_inner);
        if w.cut {
            w.cut = false;
            drop(w);
            let err = SinkError::message(
                SinkErrorKind::Unavailable,
                "the client read nothing for longer than the export write timeout",
            );
            return Poll::Ready(Some(Err(self.fail(err))));
        }
        w.last = Instant::now();
        self.page = std::mem::replace(&mut w.page, Vec::new().into_iter());
        let polled = self.poll_inner(cx);
        w.fetching = polled.is_pending();
        w.page = std::mem::replace(&mut self.page, Vec::new().into_iter());
        if matches!(polled, Poll::Ready(None) | Poll::Ready(Some(Err(_)))) {
            // Done: the slots go now, not when the server drops the body.
            w.held = None;
        }
        polled
    }

    fn poll_inner(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, SinkError>>> {
        loop {
            if self.page.len() > 0 || !self.header_written_or_not_needed() {
                match self.write() {
                    Ok(bytes) if bytes.is_empty() => continue,
                    Ok(bytes) => return Poll::Ready(Some(Ok(Frame::data(Bytes::from(bytes))))),
                    Err(err) => return Poll::Ready(Some(Err(self.fail(err)))),
                }
            }
            if self.done {
                return Poll::Ready(None);
            }
            let fetching = self
                .fetching
                .get_mut()
                .unwrap_or_else(PoisonError::into_inner);
            let future = fetching.get_or_insert_with(|| (self.fetch)(self.query.clone()));
            let result = ready!(future.as_mut().poll(cx));
            *fetching = None;
            match result {
                Ok(page) => self.take_in(page),
                Err(err) => return Poll::Ready(Some(Err(self.fail(err)))),
            }
        }
    }

    /// Ends the body with `err`, logged as the list logs a failed query.
    fn fail(&mut self, err: SinkError) -> SinkError {
        self.done = true;
        self.page = Vec::new().into_iter();
        if super::response::FAILURES.fail() {
            tracing::warn!(
                error = %err,
                written = self.written,
                "GET /usage export: a page could not be read or written; the body ends with an error (further failures are not logged until a query succeeds)"
            );
        }
        err
    }

    /// The next frame: records of the page in hand in the export's format
    /// (the CSV header row first), until the frame passes [`FRAME_BYTES`] or
    /// the page ends.
    fn write(&mut self) -> Result<Vec<u8>, SinkError> {
        let mut out = Vec::with_capacity(FRAME_BYTES.min(self.page.len() * 1024) + 256);
        let mut records = 0u64;
        match self.render.format {
            Format::Ndjson => {
                while out.len() < FRAME_BYTES {
                    let Some(record) = self.page.next() else {
                        break;
                    };
                    records += 1;
                    let record = &record;
                    let view = RecordView {
                        record,
                        grpc_json: self.render.grpc_json.as_deref(),
                    };
                    let start = out.len();
                    serde_json::to_writer(&mut out, &view).map_err(SinkError::new)?;
                    one_line(&mut out, start);
                    out.push(b'\n');
                }
            }
            Format::Csv => {
                let mut csv = ::csv::Writer::from_writer(&mut out);
                if !self.header_written {
                    self.header_written = true;
                    let bodies = if self.render.bodies {
                        CSV_BODY_COLUMNS
                    } else {
                        &[]
                    };
                    csv.write_record(CSV_COLUMNS.iter().chain(bodies))
                        .map_err(SinkError::new)?;
                }
                // The writer buffers; count what it took, not what it flushed.
                let mut taken = 0usize;
                while taken < FRAME_BYTES {
                    let Some(record) = self.page.next() else {
                        break;
                    };
                    records += 1;
                    taken += csv::row(&self.render, &mut csv, &record)?;
                }
                csv.flush().map_err(SinkError::new)?;
            }
        }
        self.written += records;
        Ok(out)
    }
}

/// Makes the JSON written from `start` on one line: removes every raw line
/// feed and carriage return. A body stored as JSON is shown as it came,
/// whitespace included, and its text may span lines; in valid JSON (and the
/// wire form only passes a body through when it parses) a raw line break can
/// only be whitespace between tokens, never inside a string (there it is
/// escaped as `\n`), so removing them changes no value. So an NDJSON line is
/// always exactly one record, whatever a body holds.
fn one_line(out: &mut Vec<u8>, start: usize) {
    if memchr::memchr2(b'\n', b'\r', &out[start..]).is_none() {
        return;
    }
    let mut kept = start;
    for i in start..out.len() {
        let b = out[i];
        if b != b'\n' && b != b'\r' {
            out[kept] = b;
            kept += 1;
        }
    }
    out.truncate(kept);
}

impl fmt::Debug for Export {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Export")
            .field("format", &self.render.format)
            .field("written", &self.written)
            .field("done", &self.done)
            .finish_non_exhaustive()
    }
}

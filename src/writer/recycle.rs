//! [`Recycler`]: what written records leave for the next ones. The writer
//! takes back each written record's strings and header maps, so that a
//! record's fields cost no allocation in the steady state.
//!
//! Reusing allocations matters on the writer: it frees what it allocates on
//! its own thread, but each allocation and free is still work for the
//! allocator (with glibc's malloc, in arenas the request threads use too),
//! and a record has a dozen of them otherwise (strings, params, two maps).
//! Everything kept is bounded, outside `queue_bytes`.

use http::HeaderMap;

use super::WAKE_AT;
use crate::record::{RecordedRequest, UsageRecord};

/// Written records whose allocations are kept for the next ones, at most: two
/// runs of [`WAKE_AT`] captures (under a steady load the writer's batches are
/// about one run; a larger batch allocates the rest).
const KEEP_RECORDS: usize = 2 * WAKE_AT;
/// The most bytes of strings one kept record may hold (its id, method, path,
/// route, query, consumer and route params): with [`KEEP_RECORDS`], at most
/// 0.25 MiB in all, outside `queue_bytes`. A record with longer strings is
/// dropped, not kept.
const KEEP_RECORD_BYTES: usize = 2048;
/// Header maps kept for reuse, at most: two per kept record. With
/// [`KEEP_MAP_CAPACITY`], a kept map takes about 6 KiB at most (32 entries
/// and a list of 32 more values of repeated names), so all of them about
/// 1.5 MiB at most, outside `queue_bytes`; typical maps take a quarter of that.
const KEEP_MAPS: usize = 2 * KEEP_RECORDS;
/// A map that grew past this many entries, or held more values (repeated
/// names keep their extra values in a list of their own, which `clear`
/// keeps allocated), is not kept: a hostile record's map should not stay
/// allocated.
const KEEP_MAP_CAPACITY: usize = 32;

/// The allocations written records left, for the next ones. Owned by the
/// writer's [`Assembler`](super::assemble::Assembler).
#[derive(Debug, Default)]
pub(super) struct Recycler {
    maps: Vec<HeaderMap>,
    spares: Vec<Spare>,
}

/// The string allocations of a written record, emptied before each reuse:
/// nothing of the record they came from is read.
#[derive(Debug, Default)]
pub(super) struct Spare {
    pub(super) id: String,
    pub(super) method: String,
    pub(super) path: String,
    pub(super) route: String,
    pub(super) query: String,
    pub(super) consumer: String,
    pub(super) params: Vec<(String, String)>,
}

impl Spare {
    /// The bytes its strings hold ([`KEEP_RECORD_BYTES`] bounds it).
    fn bytes(&self) -> usize {
        let params: usize = self
            .params
            .iter()
            .map(|(k, v)| k.capacity() + v.capacity())
            .sum();
        [
            &self.id,
            &self.method,
            &self.path,
            &self.route,
            &self.query,
            &self.consumer,
        ]
        .iter()
        .map(|s| s.capacity())
        .sum::<usize>()
            + params
            + self.params.capacity() * std::mem::size_of::<(String, String)>()
    }
}

impl Recycler {
    /// Takes back the allocations of a record that is written (its strings and
    /// header maps serve the next records), and drops the rest of it.
    pub(super) fn recycle(&mut self, record: UsageRecord) {
        let UsageRecord {
            id,
            consumer,
            method,
            path,
            route,
            request:
                RecordedRequest {
                    query,
                    params,
                    headers,
                    ..
                },
            response_headers,
            ..
        } = record;
        for map in [headers, response_headers] {
            if self.maps.len() < KEEP_MAPS
                && map.len() <= KEEP_MAP_CAPACITY
                && (1..=KEEP_MAP_CAPACITY).contains(&map.capacity())
            {
                let mut map = map;
                map.clear();
                self.maps.push(map);
            }
        }
        if self.spares.len() < KEEP_RECORDS {
            let spare = Spare {
                id,
                method,
                path,
                route: route.unwrap_or_default(),
                query,
                consumer: consumer.unwrap_or_default(),
                params,
            };
            if spare.bytes() <= KEEP_RECORD_BYTES {
                self.spares.push(spare);
            }
        }
    }

    /// A header map to fill: an emptied one a written record left, or a new one.
    pub(super) fn map(&mut self) -> HeaderMap {
        self.maps.pop().unwrap_or_default()
    }

    /// A written record's strings to write over, or new ones.
    pub(super) fn spare(&mut self) -> Spare {
        self.spares.pop().unwrap_or_default()
    }

    /// How many written records' strings are kept (for tests).
    #[cfg(test)]
    pub(super) fn spares(&self) -> usize {
        self.spares.len()
    }
}

/// `buf`, cleared, holding `text`.
pub(super) fn refill(mut buf: String, text: &str) -> String {
    buf.clear();
    buf.push_str(text);
    buf
}

#[cfg(test)]
mod tests {
    use http::header::{HeaderName, HeaderValue, ACCEPT, HOST};

    use super::*;

    fn record_with(request: HeaderMap) -> UsageRecord {
        let mut record = UsageRecord::default();
        record.request.headers = request;
        record
    }

    #[test]
    fn kept_maps_are_empty_and_bounded_in_number_and_size() {
        let mut recycler = Recycler::default();
        let mut small = HeaderMap::new();
        small.insert(HOST, HeaderValue::from_static("h"));
        small.insert(ACCEPT, HeaderValue::from_static("*/*"));
        recycler.recycle(record_with(small));
        assert_eq!(recycler.maps.len(), 1, "the request's map is kept");
        assert!(recycler.maps[0].is_empty());

        // A name repeated past the limit: its extra values' list would stay
        // allocated in a kept map.
        let mut repeated = HeaderMap::new();
        let name = HeaderName::from_static("x-many");
        for _ in 0..=KEEP_MAP_CAPACITY {
            repeated.append(name.clone(), HeaderValue::from_static("v"));
        }
        recycler.recycle(record_with(repeated));
        // Many names: the map grew past the limit.
        let mut wide = HeaderMap::new();
        for i in 0..=KEEP_MAP_CAPACITY {
            let name = HeaderName::try_from(format!("x-h{i}")).unwrap();
            wide.insert(name, HeaderValue::from_static("v"));
        }
        recycler.recycle(record_with(wide));
        assert_eq!(recycler.maps.len(), 1, "neither large map is kept");

        for _ in 0..KEEP_MAPS * 2 {
            let mut map = HeaderMap::new();
            map.insert(HOST, HeaderValue::from_static("h"));
            recycler.recycle(record_with(map));
        }
        assert_eq!(recycler.maps.len(), KEEP_MAPS);
        assert!(recycler.maps.iter().all(HeaderMap::is_empty));
    }
}

//! tower-usage: a per-consumer API usage log for any tower service.
#![cfg_attr(docsrs, feature(doc_auto_cfg))]

pub mod consumer;
mod error;
pub mod record;
pub mod sink;

pub use consumer::{IdentifyConsumer, RequestInfo};
pub use error::{SinkError, SinkErrorKind};
pub use record::{CapturedBody, GrpcCall, Outcome, RecordedRequest, UsageRecord};
pub use sink::memory::MemorySink;
#[cfg(feature = "postgres")]
pub use sink::postgres::PostgresSink;
pub use sink::{UsagePage, UsageQuery, UsageSink};

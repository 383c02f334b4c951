//! tower-usage: a per-consumer API usage log for any tower service.
#![cfg_attr(docsrs, feature(doc_auto_cfg))]

pub mod consumer;
mod error;
pub mod record;
pub mod sink;
#[cfg(feature = "testing")]
#[cfg_attr(docsrs, doc(cfg(feature = "testing")))]
pub mod testing;

pub use consumer::{IdentifyConsumer, RequestInfo};
pub use error::{SinkError, SinkErrorKind};
pub use record::{CapturedBody, GrpcCall, Outcome, RecordedRequest, UsageRecord};
pub use sink::memory::MemorySink;
pub use sink::{UsagePage, UsageQuery, UsageSink};

//! The `GET /usage` endpoint: [`UsageService`], its [`ResponseFuture`] and its
//! response body, [`UsageBody`].
//!
//! The user-facing reference (parameters, statuses, who sees what) lives on
//! [`UsageService`], which is re-exported at the crate root; the guide below
//! shows real answers.
//!
//! # Example
//!
//! ```
//! use http::{Request, StatusCode};
//! use http_body_util::BodyExt as _;
//! use tower::ServiceExt as _;
//! use tower_usage::{MemorySink, UsageService};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let usage = UsageService::new(MemorySink::new());
//!
//! let req = Request::get("/v1/usage?limit=10&order=desc")
//!     .header("authorization", "Bearer my-token")
//!     .body(())
//!     .unwrap();
//! let res = usage.oneshot(req).await.unwrap_or_else(|never| match never {});
//! assert_eq!(res.status(), StatusCode::OK);
//! assert_eq!(res.headers()["content-type"], "application/json");
//! assert_eq!(res.headers()["cache-control"], "no-store");
//!
//! let body = res.into_body().collect().await.unwrap().to_bytes();
//! assert_eq!(&body[..], br#"{"requests":[],"nextCursor":null}"#);
//! # }
//! ```
//!
#![doc = include_str!("../docs/endpoint.md")]
//!
//! # How it is laid out
//!
//! A request goes through `service.rs` (method and caller checks, and whether
//! it is for the list or the summary; the settings are in `builder.rs`),
//! `params/` (the query string, straight into a [`UsageQuery`](crate::UsageQuery)
//! or a [`SummaryQuery`](crate::sink::SummaryQuery)), `limits.rs` (reads per
//! consumer, exports at once), then the sink, within the query timeout
//! (`future.rs`); `response.rs` renders every answer, errors included, and
//! `export/` streams an export (its CSV form, its watchdog).

mod body;
mod builder;
mod erase;
mod export;
mod future;
mod limits;
mod openapi;
#[cfg(feature = "page")]
pub mod page;
mod params;
mod response;
mod service;
mod target;

pub use body::UsageBody;
pub use builder::DEFAULT_MAX_PAGE_BYTES;
pub use future::ResponseFuture;
pub use service::UsageService;

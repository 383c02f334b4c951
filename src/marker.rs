//! The "served by `UsageService`" marker.
//!
//! The endpoint ([`UsageService`](crate::UsageService)) puts it in the extensions
//! of every response it makes; the capture middleware looks for it and does not
//! record such calls. A leaf: both sides depend on it, it depends on nothing.

/// Marks a response as served by [`UsageService`](crate::UsageService), so that
/// the capture layer does not record calls to the usage endpoint.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ServedByUsageService;

//! Placeholder until the usage endpoint lands.

/// Marks responses produced by the usage endpoint.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ServedByUsageService;

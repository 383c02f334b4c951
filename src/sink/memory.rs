//! [`MemorySink`]: a bounded in-memory sink.

/// A bounded in-memory sink (placeholder).
#[derive(Debug, Clone, Default)]
pub struct MemorySink {}

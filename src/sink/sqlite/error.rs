//! How SQLite's errors become [`SinkError`]s: whether the writer should retry
//! is decided here.

use rusqlite::ErrorCode;

use crate::{SinkError, SinkErrorKind};

/// Maps a SQLite error to a [`SinkError`] of the right kind. Callers add the path.
pub(super) fn sql_error(err: rusqlite::Error) -> SinkError {
    match err.sqlite_error_code() {
        Some(ErrorCode::NotADatabase | ErrorCode::DatabaseCorrupt) => {
            SinkError::with_kind(SinkErrorKind::Corrupt, err)
        }
        Some(
            ErrorCode::DatabaseBusy
            | ErrorCode::DatabaseLocked
            | ErrorCode::CannotOpen
            | ErrorCode::ReadOnly
            | ErrorCode::PermissionDenied
            | ErrorCode::DiskFull
            | ErrorCode::SystemIoFailure
            | ErrorCode::FileLockingProtocolFailed
            | ErrorCode::OutOfMemory,
        ) => SinkError::with_kind(SinkErrorKind::Unavailable, err),
        // Anything else (a constraint, a value too big, a type mismatch) fails the
        // same way again.
        _ => SinkError::with_kind(SinkErrorKind::Other, err).permanent(),
    }
}

/// The context every error about a database carries: its path.
pub(super) fn context(label: &str) -> impl Fn(rusqlite::Error) -> SinkError + '_ {
    move |err| sql_error(err).with_context(format_args!("sqlite database {label}"))
}

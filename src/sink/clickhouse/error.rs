//! From the client's errors to [`SinkError`]s: what a retry may fix.

use crate::{SinkError, SinkErrorKind};

/// Server error codes a retry may get past: a timeout, memory or concurrency
/// limit, too many parts waiting for a merge, a read-only replica, a network
/// error between the servers of a cluster.
const TEMPORARY_CODES: [u32; 9] = [159, 202, 209, 210, 241, 242, 252, 425, 999];

/// The server's `Code: N` at the start of an error response.
fn code(message: &str) -> Option<u32> {
    let rest = message.trim_start().strip_prefix("Code:")?.trim_start();
    let end = rest
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(rest.len());
    rest[..end].parse().ok()
}

/// A client error as a [`SinkError`]: the server unreachable or slow is
/// [`Unavailable`](SinkErrorKind::Unavailable) and temporary; the server
/// refusing the statement is permanent unless its code is one a retry may get
/// past; a row the client cannot read is [`Corrupt`](SinkErrorKind::Corrupt).
pub(super) fn ch(err: clickhouse::error::Error) -> SinkError {
    use clickhouse::error::Error as E;
    match &err {
        E::Network(_) | E::TimedOut => SinkError::unavailable(err),
        E::BadResponse(message) => {
            let temporary = code(message).is_none_or(|c| TEMPORARY_CODES.contains(&c));
            let e = SinkError::with_kind(SinkErrorKind::Other, err);
            if temporary {
                e.temporary()
            } else {
                e.permanent()
            }
        }
        E::NotEnoughData
        | E::InvalidUtf8Encoding(_)
        | E::InvalidTagEncoding(_)
        | E::DataFormat(_)
        | E::Decompression(_) => SinkError::with_kind(SinkErrorKind::Corrupt, err).permanent(),
        _ => SinkError::with_kind(SinkErrorKind::Other, err).permanent(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_servers_code_decides() {
        assert_eq!(
            code("Code: 60, e.displayText() = DB::Exception: no"),
            Some(60)
        );
        assert_eq!(code("Code: 241. DB::Exception: Memory limit"), Some(241));
        assert_eq!(code("<html>bad gateway"), None);
        let refused = ch(clickhouse::error::Error::BadResponse(
            "Code: 60, e.displayText() = DB::Exception: Table x doesn't exist".into(),
        ));
        assert!(!refused.is_temporary());
        let busy = ch(clickhouse::error::Error::BadResponse(
            "Code: 241. DB::Exception: Memory limit (total) exceeded".into(),
        ));
        assert!(busy.is_temporary());
        assert_eq!(
            ch(clickhouse::error::Error::TimedOut).kind(),
            SinkErrorKind::Unavailable
        );
    }
}

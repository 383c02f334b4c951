//! [`FileId`]: which file a path names, to notice that a database file was
//! deleted or replaced under an open connection (a connection keeps the file it
//! opened, so without this check the sink would go on writing to, and `/usage`
//! reading from, a file nobody can see any more); and how much room its volume
//! has left.

use std::path::Path;

/// The `(device, inode)` of a file, on Unix; elsewhere the check is off and
/// every file looks the same.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct FileId(u64, u64);

impl FileId {
    /// The file `path` names now; `None` when there is none (or it cannot be
    /// read: the check errs on the side of reopening).
    pub(super) fn of(path: &Path) -> Option<Self> {
        let meta = std::fs::metadata(path).ok()?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::MetadataExt;
            Some(Self(meta.dev(), meta.ino()))
        }
        #[cfg(not(unix))]
        {
            let _ = meta;
            Some(Self(0, 0))
        }
    }
}

/// Bytes free for an unprivileged writer on the volume holding `path` (its
/// directory); `None` when unknown (not Unix, or the call failed).
pub(super) fn free_bytes(path: &Path) -> Option<u64> {
    #[cfg(unix)]
    {
        let dir = path.parent().filter(|d| !d.as_os_str().is_empty())?;
        let st = rustix::fs::statvfs(dir).ok()?;
        Some(st.f_bavail.saturating_mul(st.f_frsize))
    }
    #[cfg(not(unix))]
    {
        let _ = path;
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_replaced_file_has_another_id() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a");
        std::fs::write(&a, b"1").unwrap();
        let first = FileId::of(&a).unwrap();
        assert_eq!(FileId::of(&a), Some(first));
        let b = dir.path().join("b");
        std::fs::write(&b, b"2").unwrap();
        std::fs::rename(&b, &a).unwrap();
        assert_ne!(FileId::of(&a), Some(first));
        std::fs::remove_file(&a).unwrap();
        assert_eq!(FileId::of(&a), None);
    }
}

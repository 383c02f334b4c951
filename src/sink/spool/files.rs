//! The spool's file primitives: files and a directory for this user alone,
//! deletes that tolerate a file already gone, and directory syncs.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};

/// Options to open a spool file: on unix, made readable and writable by
/// this user alone (records hold request data).
pub(super) fn options() -> OpenOptions {
    #[allow(unused_mut)]
    let mut options = OpenOptions::new();
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options
}

/// Creates `dir` (on unix, for this user alone) unless it exists, and returns
/// it as an absolute path, so that a later change of the working directory
/// does not move the spool.
pub(super) fn create_dir(dir: &Path) -> io::Result<PathBuf> {
    let existed = dir.is_dir();
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir)?;
    let dir = fs::canonicalize(dir)?;
    if !existed {
        if let Some(parent) = dir.parent() {
            sync_dir(parent)?;
        }
    }
    Ok(dir)
}

pub(super) fn remove(path: &Path) -> io::Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// Makes a new or deleted directory entry durable. Not every platform can
/// open or sync a directory for this (Windows cannot open one; some file
/// systems refuse to sync one, `EINVAL`); there it is skipped. Other errors
/// (`EIO`) are returned.
pub(super) fn sync_dir(dir: &Path) -> io::Result<()> {
    let Ok(d) = File::open(dir) else {
        return Ok(());
    };
    match d.sync_all() {
        Err(e)
            if !matches!(
                e.kind(),
                io::ErrorKind::InvalidInput | io::ErrorKind::Unsupported
            ) =>
        {
            Err(e)
        }
        _ => Ok(()),
    }
}

//! Memory maps of object files: the only `unsafe` code in the engine.

use std::fs::File;
use std::path::Path;
use std::sync::Arc;

use milonga_sdk::{Error, Result, SharedBytes};

struct Mapped(memmap2::Mmap);

impl AsRef<[u8]> for Mapped {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

/// Maps the object file at `path` read-only. Empty files (which cannot be mapped) give an empty
/// buffer.
pub(crate) fn map_file(file: &File, path: &Path) -> Result<SharedBytes> {
    let len = file
        .metadata()
        .map_err(|e| Error::io(path.display(), e))?
        .len();
    if len == 0 {
        return Ok(Arc::new(Vec::<u8>::new()));
    }
    // SAFETY: object files are immutable by contract: they are published by an atomic rename of
    // a fully written, fsynced temporary file, made read-only, and never opened for writing by
    // milonga again (garbage collection unlinks, which leaves existing maps intact). If another
    // program truncates or rewrites an object file while it is mapped, reads through the map may
    // see the new bytes (callers verify the content hash right after mapping, so changes before
    // that are caught) or the process may receive SIGBUS for pages past a truncated end; that is
    // outside the contract, as for every mmap-based store.
    let map = unsafe { memmap2::Mmap::map(file) }.map_err(|e| Error::io(path.display(), e))?;
    Ok(Arc::new(Mapped(map)))
}

//! SQLite errors as SDK errors that name the file.

use std::io;

use milonga_sdk::{Error, Result};
use rusqlite::ffi;

/// Maps a SQLite error on `file` to an SDK error that names it.
pub(crate) fn sql_err(file: &str, e: rusqlite::Error) -> Error {
    match e {
        rusqlite::Error::SqliteFailure(err, msg) => {
            let msg = msg.unwrap_or_else(|| err.to_string());
            let io_kind = match err.code {
                ffi::ErrorCode::NotADatabase | ffi::ErrorCode::DatabaseCorrupt => {
                    return Error::corrupt(file, 0, format!("not a valid SQLite database: {msg}"))
                }
                // The SQL is fixed: a table or column it names is missing only from a file
                // that is not laid out as milonga writes them.
                ffi::ErrorCode::Unknown
                    if msg.starts_with("no such table") || msg.starts_with("no such column") =>
                {
                    return Error::corrupt(
                        file,
                        0,
                        format!("not laid out as a milonga SQLite file: {msg}"),
                    )
                }
                ffi::ErrorCode::ConstraintViolation => {
                    return Error::unsupported(format!("{file}: {msg}"))
                }
                ffi::ErrorCode::DatabaseBusy | ffi::ErrorCode::DatabaseLocked => {
                    io::ErrorKind::ResourceBusy
                }
                ffi::ErrorCode::PermissionDenied | ffi::ErrorCode::ReadOnly => {
                    io::ErrorKind::PermissionDenied
                }
                ffi::ErrorCode::CannotOpen => io::ErrorKind::NotFound,
                ffi::ErrorCode::DiskFull => io::ErrorKind::StorageFull,
                _ => io::ErrorKind::Other,
            };
            Error::Io {
                path: file.to_owned(),
                source: io::Error::new(io_kind, format!("SQLite: {msg}")),
            }
        }
        other => Error::corrupt(file, 0, format!("unexpected SQLite content: {other}")),
    }
}

/// Extension to add the file name to SQLite results.
pub(crate) trait SqlResultExt<T> {
    fn in_db(self, file: &str) -> Result<T>;
}

impl<T> SqlResultExt<T> for rusqlite::Result<T> {
    fn in_db(self, file: &str) -> Result<T> {
        self.map_err(|e| sql_err(file, e))
    }
}

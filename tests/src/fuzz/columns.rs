//! The example's columnar table format (`examples/columns_format.rs`), built here from the very
//! same file for the `columns` target (see `formats.rs`).

#[allow(dead_code, missing_docs, clippy::all)]
#[path = "../../../examples/columns_format.rs"]
mod format;

pub use format::{Column, ColumnsFormat, Table, TableReader};

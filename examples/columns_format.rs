//! The columnar table format of the `custom_format` example, written only against
//! `milonga-sdk` (re-exported as `milonga::sdk`): a `schema` file (column names and types, the
//! row count) and one file per column holding its values, little-endian.
//!
//! It lives in its own file so that the fuzz target `columns` (`tests/src/fuzz/columns.rs`)
//! includes the very same code; `examples/custom_format.rs` uses it in steps and tests it with
//! the kit.

use std::io::Write;

use milonga::sdk::{
    open_envelope, ArtifactHandle, ArtifactWriter, Envelope, Error, Format, Result,
};

/// The values of one column.
#[derive(Debug, Clone, PartialEq)]
pub enum Column {
    /// 64-bit floats.
    F64(Vec<f64>),
    /// 64-bit signed integers.
    I64(Vec<i64>),
}

impl Column {
    fn len(&self) -> usize {
        match self {
            Column::F64(v) => v.len(),
            Column::I64(v) => v.len(),
        }
    }

    fn type_tag(&self) -> u8 {
        match self {
            Column::F64(_) => 1,
            Column::I64(_) => 2,
        }
    }
}

/// A table: named columns of equal length.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Table {
    /// (name, values) in order.
    pub columns: Vec<(String, Column)>,
}

/// The columnar table format: id `example.columns`, version 1.
///
/// Files:
/// - `schema`: envelope, row count `u64`, column count `u32`, then per column a name length
///   `u16`, the name (UTF-8), a type byte (1 = f64, 2 = i64);
/// - `col/<i>` for the i-th column: the values, 8 bytes each, little-endian; its length must be
///   exactly row count × 8.
#[derive(Debug, Clone, Copy, Default)]
pub struct ColumnsFormat;

const SCHEMA: &str = "schema";

impl Format<Table> for ColumnsFormat {
    type Output = TableReader;

    fn id(&self) -> &str {
        "example.columns"
    }

    fn version(&self) -> u32 {
        1
    }

    fn write(&self, table: Table, artifact: &dyn ArtifactWriter) -> Result<()> {
        let rows = table.columns.first().map_or(0, |(_, c)| c.len());
        let mut schema = Vec::new();
        Envelope::new(self.id(), self.version()).encode_into(&mut schema)?;
        schema.extend_from_slice(&(rows as u64).to_le_bytes());
        let count = u32::try_from(table.columns.len()).map_err(|_| Error::Encode {
            what: "table".into(),
            reason: "more than 2^32 columns".into(),
        })?;
        schema.extend_from_slice(&count.to_le_bytes());
        for (i, (name, column)) in table.columns.iter().enumerate() {
            if table.columns.iter().take(i).any(|(n, _)| n == name) {
                return Err(Error::Encode {
                    what: format!("column {name:?}"),
                    reason: "two columns with the same name".into(),
                });
            }
            if column.len() != rows {
                return Err(Error::Encode {
                    what: format!("column {name:?}"),
                    reason: format!("{} values, the table has {rows} rows", column.len()),
                });
            }
            let n = u16::try_from(name.len()).map_err(|_| Error::Encode {
                what: format!("column {i}"),
                reason: "name longer than 65535 bytes".into(),
            })?;
            schema.extend_from_slice(&n.to_le_bytes());
            schema.extend_from_slice(name.as_bytes());
            schema.push(column.type_tag());

            // Each column is its own file, streamed out and durable on its own.
            let file_name = format!("col/{i}");
            let mut file = artifact.create(&file_name)?;
            let mut buf = Vec::with_capacity(rows.min(1 << 16) * 8);
            let mut flush = |buf: &mut Vec<u8>, force: bool| -> Result<()> {
                if force || buf.len() >= 1 << 19 {
                    file.write_all(buf).map_err(|e| Error::io(&file_name, e))?;
                    buf.clear();
                }
                Ok(())
            };
            match column {
                Column::F64(v) => {
                    for x in v {
                        buf.extend_from_slice(&x.to_le_bytes());
                        flush(&mut buf, false)?;
                    }
                }
                Column::I64(v) => {
                    for x in v {
                        buf.extend_from_slice(&x.to_le_bytes());
                        flush(&mut buf, false)?;
                    }
                }
            }
            flush(&mut buf, true)?;
            file.finish()?;
        }
        let mut file = artifact.create(SCHEMA)?;
        file.write_all(&schema).map_err(|e| Error::io(SCHEMA, e))?;
        file.finish()?;
        Ok(())
    }

    fn read(&self, artifact: ArtifactHandle) -> Result<TableReader> {
        let bytes = artifact.bytes(SCHEMA)?;
        let (_, p) = open_envelope((*bytes).as_ref(), self.id(), self.version(), SCHEMA)?;
        let header = (*bytes).as_ref().len() - p.len();
        let mut at = 0usize;
        let corrupt = |at: usize, why: String| Error::corrupt(SCHEMA, (header + at) as u64, why);
        // Takes the next `n` bytes of the schema, or reports where it ends too early.
        let take = |at: &mut usize, n: usize| -> Result<&[u8]> {
            let s = p
                .get(*at..)
                .and_then(|rest| rest.get(..n))
                .ok_or_else(|| corrupt(*at, format!("truncated: needs {n} more bytes")))?;
            *at += n;
            Ok(s)
        };
        // `take` returned exactly `n` bytes, so these conversions cannot fail; a decoder still
        // says so with an error rather than a panic.
        let exact = |at: usize| corrupt(at, "internal: a field of the wrong width".into());
        let rows = u64::from_le_bytes(take(&mut at, 8)?.try_into().map_err(|_| exact(0))?);
        let count =
            u32::from_le_bytes(take(&mut at, 4)?.try_into().map_err(|_| exact(8))?) as usize;
        // Every column needs at least 3 schema bytes: refuse a lying count before allocating.
        if count > p.len().saturating_sub(12) / 3 {
            return Err(corrupt(
                8,
                format!("{count} columns cannot fit in the schema"),
            ));
        }
        let mut columns = Vec::with_capacity(count);
        for i in 0..count {
            let n =
                u16::from_le_bytes(take(&mut at, 2)?.try_into().map_err(|_| exact(at))?) as usize;
            let name_at = at;
            let name = std::str::from_utf8(take(&mut at, n)?)
                .map_err(|e| corrupt(name_at, format!("column {i} name: {e}")))?
                .to_owned();
            let [kind] = <[u8; 1]>::try_from(take(&mut at, 1)?).map_err(|_| exact(at))?;
            if kind != 1 && kind != 2 {
                return Err(corrupt(at - 1, format!("unknown column type {kind}")));
            }
            columns.push((name, kind));
        }
        if at != p.len() {
            return Err(corrupt(at, format!("{} trailing bytes", p.len() - at)));
        }
        // Check every column file's length against the row count now, from the manifest alone.
        for (i, _) in columns.iter().enumerate() {
            let name = format!("col/{i}");
            let entry = artifact
                .entry(&name)
                .ok_or_else(|| Error::MissingFile { file: name.clone() })?;
            if Some(entry.len) != rows.checked_mul(8) {
                return Err(Error::corrupt(
                    &name,
                    entry.len,
                    format!("{} bytes for {rows} rows of 8 bytes", entry.len),
                ));
            }
        }
        Ok(TableReader {
            artifact,
            rows,
            columns,
        })
    }
}

/// A stored table, read one column at a time.
pub struct TableReader {
    artifact: ArtifactHandle,
    rows: u64,
    columns: Vec<(String, u8)>,
}

impl TableReader {
    /// The number of rows.
    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// The column names, in order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.columns.iter().map(|(n, _)| n.as_str())
    }

    /// Reads (and verifies) one column.
    ///
    /// # Errors
    /// [`Error::MissingFile`] for an unknown column name; storage errors.
    pub fn column(&self, name: &str) -> Result<Column> {
        let i = self
            .columns
            .iter()
            .position(|(n, _)| n == name)
            .ok_or_else(|| Error::MissingFile {
                file: format!("column {name:?}"),
            })?;
        self.column_at(i)
    }

    fn column_at(&self, i: usize) -> Result<Column> {
        let bytes = self.artifact.bytes(&format!("col/{i}"))?;
        let values = (*bytes).as_ref().chunks_exact(8).map(|c| {
            let mut b = [0u8; 8];
            b.copy_from_slice(c);
            b
        });
        let kind = self.columns.get(i).map(|(_, kind)| *kind);
        Ok(match kind {
            None => {
                return Err(Error::MissingFile {
                    file: format!("col/{i}"),
                })
            }
            Some(1) => Column::F64(values.map(f64::from_le_bytes).collect()),
            Some(_) => Column::I64(values.map(i64::from_le_bytes).collect()),
        })
    }

    /// The whole table.
    ///
    /// # Errors
    /// As [`column`](Self::column).
    pub fn load(&self) -> Result<Table> {
        let mut columns = Vec::with_capacity(self.columns.len());
        for (i, (name, _)) in self.columns.iter().enumerate() {
            columns.push((name.clone(), self.column_at(i)?));
        }
        Ok(Table { columns })
    }
}

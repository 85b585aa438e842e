//! The `columns` target: the example's columnar table format (`examples/columns_format.rs`,
//! built here from the very same file) reading arbitrary files.

use std::sync::OnceLock;

use arbitrary::{Arbitrary, Unstructured};
use milonga::sdk::{Envelope, Format, MemoryArtifact};

#[allow(dead_code, missing_docs, clippy::all)]
#[path = "../../../examples/columns_format.rs"]
mod format;

use format::{Column, ColumnsFormat, Table};

/// A valid table of three columns, as files: the template the fuzzer patches.
fn template() -> &'static Vec<(String, Vec<u8>)> {
    static T: OnceLock<Vec<(String, Vec<u8>)>> = OnceLock::new();
    T.get_or_init(|| {
        let artifact = MemoryArtifact::new();
        let table = Table {
            columns: vec![
                ("t".into(), Column::I64((0..6).collect())),
                (
                    "x".into(),
                    Column::F64(vec![0.5, -1.0, 2.0, 1e9, 0.0, 3.25]),
                ),
                ("y".into(), Column::I64(vec![7; 6])),
            ],
        };
        ColumnsFormat
            .write(table, &artifact)
            .expect("write the template");
        artifact.snapshot()
    })
}

#[derive(Debug, Arbitrary)]
struct FuzzFile {
    /// `schema`, `col/0` … `col/3`, or a name of the fuzzer's own.
    name: Result<u8, String>,
    /// Put a valid envelope of the format in front of the bytes.
    envelope: bool,
    bytes: Vec<u8>,
}

/// Reads `ColumnsFormat` from files. When the first byte is odd, the files are those of a valid
/// table patched by the rest of the input (4 bytes each: a file number, a `u16` offset, a byte
/// to XOR); otherwise the input is a list of arbitrary files. A table that reads must load
/// completely with every column of `rows()` values, and, written again, give the same column
/// files.
pub fn columns(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let artifact = MemoryArtifact::new();
    if mode & 1 == 1 {
        let mut files = template().clone();
        for p in rest.chunks_exact(4) {
            let n = files.len();
            let (_, file) = &mut files[usize::from(p[0]) % n];
            if !file.is_empty() {
                let at = usize::from(u16::from_le_bytes([p[1], p[2]])) % file.len();
                file[at] ^= p[3];
            }
        }
        if mode & 2 == 2 {
            files.remove(usize::from(mode >> 2) % files.len());
        }
        for (name, bytes) in files {
            artifact.set_file(&name, bytes);
        }
    } else {
        let mut u = Unstructured::new(rest);
        let Ok(files) = Vec::<FuzzFile>::arbitrary(&mut u) else {
            return;
        };
        for f in files.into_iter().take(8) {
            let name = match f.name {
                Ok(0) => "schema".to_owned(),
                Ok(i) => format!("col/{}", (i - 1) % 4),
                Err(s) => s,
            };
            let mut bytes = Vec::new();
            if f.envelope {
                Envelope::new(ColumnsFormat.id(), ColumnsFormat.version())
                    .encode_into(&mut bytes)
                    .expect("valid id");
            }
            bytes.extend_from_slice(&f.bytes);
            artifact.set_file(&name, bytes);
        }
    }
    let Ok(reader) = ColumnsFormat.read(artifact.handle()) else {
        return;
    };
    let names: Vec<String> = reader.names().map(str::to_owned).collect();
    for name in &names {
        let _ = reader.column(name);
    }
    let _ = reader.column("no such column");
    let Ok(table) = reader.load() else {
        return;
    };
    let rows = reader.rows();
    for (name, column) in &table.columns {
        let n = match column {
            Column::F64(v) => v.len(),
            Column::I64(v) => v.len(),
        };
        assert_eq!(
            n as u64, rows,
            "column {name:?} has {n} values for {rows} rows"
        );
    }
    // Two columns with one name read fine but are refused by `write`.
    let again = MemoryArtifact::new();
    if ColumnsFormat.write(table, &again).is_ok() {
        for i in 0..names.len() {
            let name = format!("col/{i}");
            assert_eq!(again.file(&name), artifact.file(&name), "{name} differs");
        }
        ColumnsFormat
            .read(again.handle())
            .expect("what was written reads");
    }
}

//! A custom format, written only against `milonga-sdk`: a columnar table of numeric columns.
//!
//! ```text
//! cargo run --release -p milonga --example custom_format -- <workspace-dir>
//! cargo test -p milonga --example custom_format      # the format's property tests (test kit)
//! ```
//!
//! The table is stored as one `schema` file (column names and types, the row count) and one file
//! per column holding its values, little-endian. Reading is lazy per column: a step that needs
//! one column of a wide table reads (and verifies) only that column's file. The format itself is
//! in `examples/columns_format.rs` (the fuzz target `columns` builds the same file); this file
//! uses it in steps and tests it with the kit. The guide in `docs/custom-formats.md` walks
//! through both.

use std::sync::Arc;

use milonga::{Context, PostcardFormat, Step, StepRef, Workspace};
use serde::Serialize;

// The format itself, in its own file so that the fuzz target `columns` builds the same code.
#[path = "columns_format.rs"]
mod columns_format;
pub use columns_format::{Column, ColumnsFormat, Table, TableReader};

/// A step that produces a table of simulated measurements.
#[derive(Serialize)]
struct Measure {
    rows: u64,
}

impl Step for Measure {
    const NAME: &'static str = "example::Measure";
    type Output = Table;
    type Format = ColumnsFormat;

    fn run(&self, _ctx: &mut Context<'_>) -> Result<Table, milonga::BoxError> {
        let t: Vec<i64> = (0..self.rows as i64).collect();
        let temp: Vec<f64> = t.iter().map(|&t| 20.0 + (t as f64 / 100.0).sin()).collect();
        let load: Vec<f64> = t
            .iter()
            .map(|&t| ((t * 7919) % 1000) as f64 / 10.0)
            .collect();
        Ok(Table {
            columns: vec![
                ("t".into(), Column::I64(t)),
                ("temperature".into(), Column::F64(temp)),
                ("load".into(), Column::F64(load)),
            ],
        })
    }
}

/// A downstream step that reads a single column of the table.
#[derive(Serialize)]
struct MeanTemperature {
    table: StepRef<Measure>,
}

impl Step for MeanTemperature {
    const NAME: &'static str = "example::MeanTemperature";
    type Output = f64;
    type Format = PostcardFormat;

    fn run(&self, ctx: &mut Context<'_>) -> Result<f64, milonga::BoxError> {
        let table: Arc<TableReader> = ctx.input(&self.table)?;
        let Column::F64(temp) = table.column("temperature")? else {
            return Err("temperature is not a float column".into());
        };
        Ok(temp.iter().sum::<f64>() / temp.len().max(1) as f64)
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::env::args()
        .nth(1)
        .ok_or("usage: cargo run -p milonga --example custom_format -- <workspace-dir>")?;
    let ws = Workspace::open(dir)?;
    let mean = MeanTemperature {
        table: Measure { rows: 1_000_000 }.into(),
    };
    let table = mean.table.result(&ws)?;
    println!(
        "table {} has {} rows, columns {:?}",
        mean.table.unique_id()?,
        table.rows(),
        table.names().collect::<Vec<_>>()
    );
    println!("mean temperature: {:.4}", mean.result(&ws)?);
    Ok(())
}

// In the tests, count allocations so that the kit can check that no decode allocates memory
// driven by an unchecked length field.
#[cfg(test)]
milonga::sdk::allocation_meter!();

#[cfg(test)]
mod tests {
    use super::*;
    use milonga::sdk::Error;
    use proptest::prelude::*;

    fn column(rows: usize) -> impl Strategy<Value = Column> {
        prop_oneof![
            proptest::collection::vec(
                any::<f64>().prop_filter("NaN != NaN", |x| !x.is_nan()),
                rows
            )
            .prop_map(Column::F64),
            proptest::collection::vec(any::<i64>(), rows).prop_map(Column::I64),
        ]
    }

    fn table() -> impl Strategy<Value = Table> {
        (0usize..40, 0usize..5).prop_flat_map(|(rows, cols)| {
            proptest::collection::btree_map("[a-z]{0,8}", column(rows), cols).prop_map(|columns| {
                Table {
                    columns: columns.into_iter().collect(),
                }
            })
        })
    }

    /// The whole test kit, over the lazy output: round-trip, determinism, never a panic on
    /// truncated, mutated or lying input, version skew.
    #[test]
    fn columns_format_keeps_the_format_contract() {
        milonga::sdk::testing::check_lazy_format(
            &ColumnsFormat,
            table(),
            Table::clone,
            |reader: TableReader| reader.load(),
        );
    }

    #[test]
    fn columns_format_used_as_a_step_format() {
        let ws = Workspace::memory().unwrap();
        let mean = MeanTemperature {
            table: Measure { rows: 1000 }.into(),
        };
        let m = *mean.result(&ws).unwrap();
        assert!((19.0..21.0).contains(&m), "{m}");
        let table = mean.table.result(&ws).unwrap();
        assert_eq!(table.rows(), 1000);
        assert!(matches!(table.column("t").unwrap(), Column::I64(v) if v[999] == 999));
        assert!(matches!(
            table.column("nope"),
            Err(Error::MissingFile { .. })
        ));
    }
}

//! `milonga`: inspect and maintain a workspace from the command line (see [`milonga::cli`]).
//!
//! ```text
//! cargo run --release -p milonga --features cli --bin milonga -- -w /tmp/milonga-demo steps
//! ```
// Test and tool code, not a decoder: a panic here is a failed test or a tool's error.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

fn main() -> std::process::ExitCode {
    milonga::cli::main()
}

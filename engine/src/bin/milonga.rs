//! `milonga`: inspect and maintain a workspace from the command line (see [`milonga::cli`]).
//!
//! ```text
//! cargo run --release -p milonga --features cli --bin milonga -- -w /tmp/milonga-demo steps
//! ```

fn main() -> std::process::ExitCode {
    milonga::cli::main()
}

//! Helpers shared by the end-to-end test files (each includes this with `mod common;`).

use std::process::Output;

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_build-dataset");

/// A command's exit status and both output streams, for assertion messages.
pub fn text(output: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        output.status.code(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

//! Helpers shared by the end-to-end test files (each includes this with `mod common;`).

// Each test file is its own crate and uses only some of these.
#![allow(dead_code)]

use serde_json::Value;
use std::path::Path;
use std::process::{Command, Output};

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

/// Runs a Python `script` (with `dir` as its argument) in the test environment's Python, which
/// has pyarrow (scripts/setup-test-env.sh sets RETINALOGOS_PYTHON), and parses its JSON output.
pub fn python_json(script: &str, dir: &Path) -> Value {
    let python = std::env::var("RETINALOGOS_PYTHON").unwrap_or_else(|_| "python3".into());
    let output = Command::new(python)
        .args(["-c", script])
        .arg(dir)
        .output()
        .expect("python starts");
    assert!(
        output.status.success(),
        "the pyarrow script failed (run scripts/setup-test-env.sh): {}",
        text(&output)
    );
    serde_json::from_slice(&output.stdout).expect("the script prints JSON")
}
